//! A fixed set of worker threads shared by the buffers of a cache: their background work
//! (read-ahead steps, async pulls, streams opened ahead, the reaping of idle streams and of idle
//! buffers) runs as jobs here, so threads do not grow with buffers.
//!
//! Threads start on demand, up to the limit, and live as long as the pool. A job is queued
//! ([`Workers::submit`]), or handed over only if a thread will take it at once
//! ([`Workers::submit_now`], for work that another job may wait for: queued behind that job, it
//! could never run), or run after a delay ([`Workers::after`]). A job must not wait for a job
//! queued after it; the jobs of this crate wait only for sources, the disk and other threads'
//! publishes. A panicking job is caught: the thread lives on.

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
#[cfg(not(loom))]
use std::time::{Duration, Instant};

use crate::sync::{Arc, Condvar, Mutex};

/// A job for a worker.
pub(crate) type Job = Box<dyn FnOnce() + Send + 'static>;

/// The pool's handle: dropping it ends the threads once their jobs in progress return.
pub(crate) struct Workers {
    inner: Arc<Inner>,
}

struct Inner {
    max: usize,
    queue: Mutex<Queue>,
    wake: Condvar,
    /// In a loom model, the threads, for the model to join.
    #[cfg(loom)]
    started: Mutex<Vec<crate::sync::JoinHandle<()>>>,
}

#[derive(Default)]
struct Queue {
    jobs: VecDeque<Job>,
    /// Delayed jobs, soonest first.
    #[cfg(not(loom))]
    timers: Vec<(Instant, Job)>,
    threads: usize,
    /// Threads waiting for a job.
    idle: usize,
    closed: bool,
}

impl Workers {
    /// A pool of at most `threads` threads (at least one).
    pub(crate) fn new(threads: usize) -> Self {
        Workers {
            inner: Arc::new(Inner {
                max: threads.max(1),
                queue: Mutex::new(Queue::default()),
                wake: Condvar::new(),
                #[cfg(loom)]
                started: Mutex::new(Vec::new()),
            }),
        }
    }

    /// The most threads the pool runs.
    pub(crate) fn max_threads(&self) -> usize {
        self.inner.max
    }

    /// Threads started so far.
    pub(crate) fn threads(&self) -> usize {
        self.inner.queue.lock().threads
    }

    /// Queues `job`; it runs when a thread is free. `Err` only if the pool has no thread and
    /// none could be started.
    pub(crate) fn submit(&self, job: Job) -> Result<(), Job> {
        let mut queue = self.inner.queue.lock();
        if queue.closed {
            return Err(job);
        }
        queue.jobs.push_back(job);
        self.dispatch(queue)
    }

    /// Hands `job` to a thread only if one takes it without waiting for a job in progress: an
    /// idle thread, or one that can be started. Otherwise gives it back.
    pub(crate) fn submit_now(&self, job: Job) -> Result<(), Job> {
        let mut queue = self.inner.queue.lock();
        if queue.closed || (queue.idle <= queue.jobs.len() && queue.threads >= self.inner.max) {
            return Err(job);
        }
        queue.jobs.push_back(job);
        self.dispatch(queue)
    }

    /// Runs `job` after `delay` (on a worker, which sleeps until then between other jobs).
    #[cfg(not(loom))]
    pub(crate) fn after(&self, delay: Duration, job: Job) {
        let mut queue = self.inner.queue.lock();
        if queue.closed {
            return;
        }
        let at = Instant::now() + delay;
        let i = queue.timers.partition_point(|(t, _)| *t <= at);
        queue.timers.insert(i, (at, job));
        if queue.threads == 0 {
            // Something must sleep until then.
            let _ = self.start(&mut queue);
        }
        drop(queue);
        self.inner.wake.notify_all();
    }

    /// Wakes an idle thread for the job just queued, or starts one.
    fn dispatch(&self, mut queue: crate::sync::MutexGuard<'_, Queue>) -> Result<(), Job> {
        if queue.idle >= queue.jobs.len() {
            drop(queue);
            self.inner.wake.notify_one();
            return Ok(());
        }
        if queue.threads < self.inner.max && self.start(&mut queue).is_err() && queue.threads == 0 {
            // Nobody will ever run it.
            return Err(queue.jobs.pop_back().expect("the job just queued"));
        }
        Ok(())
    }

    fn start(&self, queue: &mut Queue) -> std::io::Result<()> {
        let inner = self.inner.clone();
        let run = move || inner.run();
        #[cfg(not(loom))]
        let started = crate::sync::spawn("sparsebuf-worker", run);
        #[cfg(loom)]
        let started = crate::sync::spawn_joinable("sparsebuf-worker", run)
            .map(|handle| self.inner.started.lock().push(handle));
        if started.is_ok() {
            queue.threads += 1;
        }
        started
    }

    /// Ends the threads and joins them (a loom model's last step).
    #[cfg(all(loom, test))]
    pub(crate) fn close_and_join(self) {
        let inner = self.inner.clone();
        drop(self);
        let started = std::mem::take(&mut *inner.started.lock());
        for handle in started {
            let _ = handle.join();
        }
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        let mut queue = self.inner.queue.lock();
        queue.closed = true;
        // Jobs not started are dropped here, outside the lock.
        let jobs = std::mem::take(&mut queue.jobs);
        #[cfg(not(loom))]
        let timers = std::mem::take(&mut queue.timers);
        drop(queue);
        self.inner.wake.notify_all();
        drop(jobs);
        #[cfg(not(loom))]
        drop(timers);
    }
}

impl Inner {
    fn run(&self) {
        while let Some(job) = self.next() {
            // A job's panic is its own; the worker goes on with the next one.
            let _ = catch_unwind(AssertUnwindSafe(job));
        }
    }

    /// The next job due, sleeping until there is one; `None` once the pool is closed.
    fn next(&self) -> Option<Job> {
        let mut queue = self.queue.lock();
        loop {
            if queue.closed {
                queue.threads -= 1;
                return None;
            }
            #[cfg(not(loom))]
            let now = Instant::now();
            #[cfg(not(loom))]
            if queue.timers.first().is_some_and(|(at, _)| *at <= now) {
                return Some(queue.timers.remove(0).1);
            }
            if let Some(job) = queue.jobs.pop_front() {
                return Some(job);
            }
            queue.idle += 1;
            #[cfg(not(loom))]
            match queue.timers.first().map(|(at, _)| *at) {
                Some(at) => {
                    self.wake
                        .wait_for(&mut queue, at.saturating_duration_since(now));
                }
                None => self.wake.wait(&mut queue),
            }
            #[cfg(loom)]
            self.wake.wait(&mut queue);
            queue.idle -= 1;
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use std::sync::mpsc::channel;

    use super::*;
    use crate::sync::eventually;

    #[test]
    fn jobs_run_on_at_most_the_limit_of_threads() {
        let workers = Workers::new(2);
        let (tx, rx) = channel();
        let n = if cfg!(miri) { 20 } else { 100 };
        for i in 0..n {
            let tx = tx.clone();
            let job: Job = Box::new(move || {
                tx.send((i, std::thread::current().id())).unwrap();
            });
            assert!(workers.submit(job).is_ok());
        }
        let mut got: Vec<_> = (0..n).map(|_| rx.recv().unwrap()).collect();
        got.sort_by_key(|(i, _)| *i);
        assert!(got.iter().enumerate().all(|(i, (j, _))| i == *j));
        let mut threads: Vec<_> = got.iter().map(|(_, t)| *t).collect();
        threads.sort_by_key(|t| format!("{t:?}"));
        threads.dedup();
        assert!(threads.len() <= 2, "{} threads", threads.len());
        assert!(workers.threads() <= 2);
    }

    #[test]
    fn submit_now_refuses_what_would_wait_behind_a_busy_job() {
        let workers = Workers::new(1);
        let (hold_tx, hold_rx) = channel::<()>();
        let (began_tx, began_rx) = channel();
        let busy: Job = Box::new(move || {
            began_tx.send(()).unwrap();
            hold_rx.recv().unwrap();
        });
        assert!(workers.submit_now(busy).is_ok());
        began_rx.recv().unwrap();
        // The only thread is busy: a job that must run at once is given back.
        let (tx, rx) = channel();
        let tx2 = tx.clone();
        let refused = workers.submit_now(Box::new(move || tx2.send(1).unwrap()));
        assert!(refused.is_err());
        hold_tx.send(()).unwrap();
        eventually("the worker to be idle", || {
            workers.inner.queue.lock().idle == 1
        });
        assert!(workers
            .submit_now(Box::new(move || tx.send(2).unwrap()))
            .is_ok());
        assert_eq!(rx.recv().unwrap(), 2);
    }

    #[test]
    fn delayed_jobs_run_after_their_delay_in_order_and_a_panic_spares_the_thread() {
        let workers = Workers::new(1);
        let (tx, rx) = channel();
        let start = Instant::now();
        // The later one is set first: the earlier is put in front of it. Far apart, so that a
        // slow run (miri's interpreter took longer than 40 ms between the two calls) keeps the
        // order.
        for (ms, tag) in [(500, "late"), (20, "early")] {
            let tx = tx.clone();
            workers.after(
                Duration::from_millis(ms),
                Box::new(move || tx.send((tag, start.elapsed())).unwrap()),
            );
        }
        assert!(workers.submit(Box::new(|| panic!("a job's own"))).is_ok());
        let (first, at) = rx.recv().unwrap();
        assert_eq!(first, "early");
        assert!(at >= Duration::from_millis(20));
        let (second, at) = rx.recv().unwrap();
        assert_eq!(second, "late");
        assert!(at >= Duration::from_millis(500));
        assert_eq!(workers.threads(), 1);
    }

    #[test]
    fn dropping_the_pool_ends_its_threads() {
        let workers = Workers::new(3);
        for _ in 0..3 {
            assert!(workers.submit(Box::new(|| {})).is_ok());
        }
        let inner = workers.inner.clone();
        eventually("the threads to start", || inner.queue.lock().threads > 0);
        drop(workers);
        eventually("the threads to end", || inner.queue.lock().threads == 0);
    }
}

/// The hand-off under loom: a job queued while the only worker goes to sleep is always run,
/// and a pool dropped while its worker sleeps ends it.
/// `RUSTFLAGS="--cfg loom" cargo test --release --lib loom_ --target-dir target/loom`
#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use crate::sync::AtomicU64;
    use crate::sync::Ordering;

    #[test]
    fn loom_a_job_queued_while_the_worker_sleeps_is_run() {
        loom::model(|| {
            let workers = Workers::new(1);
            let ran = Arc::new(AtomicU64::new(0));
            let (a, b) = (ran.clone(), ran.clone());
            assert!(workers
                .submit(Box::new(move || {
                    a.fetch_add(1, Ordering::SeqCst);
                }))
                .is_ok());
            let other = {
                let ran = ran.clone();
                loom::thread::spawn(move || {
                    // Waits (as a reader would) for the first job, then queues the second.
                    while ran.load(Ordering::SeqCst) == 0 {
                        loom::thread::yield_now();
                    }
                })
            };
            other.join().unwrap();
            assert!(workers
                .submit(Box::new(move || {
                    b.fetch_add(1, Ordering::SeqCst);
                }))
                .is_ok());
            while ran.load(Ordering::SeqCst) < 2 {
                loom::thread::yield_now();
            }
            workers.close_and_join();
        });
    }
}
