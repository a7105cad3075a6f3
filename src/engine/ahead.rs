//! Read-ahead: one background worker per buffer keeps the bytes after the latest read (or a
//! range asked for with `prefetch`) filling, so sequential readers find them ready.
//!
//! The worker works one segment at a time and holds the buffer (a strong reference) only for
//! that step; between steps it holds a `Weak` one. So dropping the last handle ends it within
//! one segment's source read, and releases the source. Targets are overwritten, not queued: a
//! far seek restarts read-ahead at the new position, and a worker busy with an old target moves
//! on as soon as it finishes its step. How far ahead a target reaches is clamped by the buffer
//! to what its budgets can keep (see `StreamBuffer::request_ahead`).

use std::ops::Range;
use std::sync::Weak;

use crate::engine::workers::Workers;
use crate::sync::{Arc, AtomicU64, Condvar, Mutex, Ordering};

/// The worker's step for its owner `S` (a buffer's shared state): fill up to the end of the
/// segment holding the target's start, for the request numbered so; where the step ended.
pub(crate) type Step<S> = fn(&S, Range<u64>, u64) -> std::io::Result<u64>;

/// What the worker should fill next, and whether the buffer is gone.
#[derive(Default)]
struct Want {
    target: Option<Range<u64>>,
    closed: bool,
    started: bool,
}

/// Shared by the buffer and its worker (not part of `Shared`, so the worker can wait on it
/// without keeping the buffer alive).
pub(crate) struct Ahead {
    want: Mutex<Want>,
    wake: Condvar,
    /// Requests made so far (bumped under `want`): a step whose target is older than the
    /// latest request gives way to it before fetching (see `requests`).
    requests: AtomicU64,
    /// The latest target, `[start, end)` (equal when there is none): the bytes a reader is
    /// about to read, which eviction passes over (see `protected`).
    latest_start: AtomicU64,
    latest_end: AtomicU64,
}

impl Ahead {
    pub(crate) fn new() -> Self {
        Ahead {
            want: Mutex::new(Want::default()),
            wake: Condvar::new(),
            requests: AtomicU64::new(0),
            latest_start: AtomicU64::new(0),
            latest_end: AtomicU64::new(0),
        }
    }

    /// Asks the worker to fill `range`, starting it if needed.
    pub(crate) fn request<S: Send + Sync + 'static>(
        self: &Arc<Self>,
        owner: &Weak<S>,
        range: Range<u64>,
        step: Step<S>,
        workers: Option<&Workers>,
    ) {
        let mut want = self.want.lock();
        self.latest_start.store(range.start, Ordering::Relaxed);
        self.latest_end.store(range.end, Ordering::Relaxed);
        want.target = Some(range);
        self.requests.fetch_add(1, Ordering::Release);
        if !want.started {
            want.started = true;
            let (ahead, weak) = (self.clone(), owner.clone());
            let pooled = workers.is_some();
            let run = move || ahead.run(weak, step, pooled);
            // A worker that cannot be started only means no read-ahead; reads work without it.
            let spawned = match workers {
                // A shared worker runs the targets there are and leaves (see `next`).
                Some(workers) => workers.submit(Box::new(run)).map_err(drop),
                None => crate::sync::spawn("sparsebuf-read-ahead", run).map_err(drop),
            };
            if spawned.is_err() {
                want.started = false;
                want.target = None;
            }
        }
        drop(want);
        self.wake.notify_one();
    }

    /// How many requests were made so far. A reader moves on as soon as its read is done, so a
    /// step of an older target may be for bytes that reader already passed (and that may have
    /// been evicted since): the worker checks this, under the index lock, before each fetch.
    pub(crate) fn requests(&self) -> u64 {
        self.requests.load(Ordering::Acquire)
    }

    /// The bytes of the latest target: from where a reader will read next to where read-ahead
    /// should reach. CLOCK passes over segments there, so neither the segment a reader is in
    /// nor what read-ahead fetched for it is evicted before it is read. (Relaxed: a heuristic
    /// for choosing victims; any value is safe.)
    pub(crate) fn protected(&self) -> Range<u64> {
        self.latest_start.load(Ordering::Relaxed)..self.latest_end.load(Ordering::Relaxed)
    }

    /// Ends the worker (called when the buffer is dropped).
    pub(crate) fn close(&self) {
        self.want.lock().closed = true;
        self.wake.notify_one();
    }

    /// The next target and the request count it stands for: a new one if it came (replacing
    /// `current`), else what is left of `current`; sleeps while there is neither. `None`: the
    /// buffer is gone.
    /// A `pooled` worker (a cache's shared thread) does not sleep: with nothing to do, it
    /// leaves, and the next request queues it again (decided under the lock, so a request
    /// never finds it gone without queueing another).
    fn next(&self, current: Option<(Range<u64>, u64)>, pooled: bool) -> Option<(Range<u64>, u64)> {
        let mut want = self.want.lock();
        loop {
            if want.closed {
                return None;
            }
            if let Some(target) = want.target.take() {
                return Some((target, self.requests.load(Ordering::Acquire)));
            }
            if let Some(current) = current.clone() {
                return Some(current);
            }
            if pooled {
                want.started = false;
                return None;
            }
            self.wake.wait(&mut want);
        }
    }

    fn run<S>(&self, buffer: Weak<S>, step: Step<S>, pooled: bool) {
        let mut current = None;
        while let Some((target, request)) = self.next(current.take(), pooled) {
            let Some(shared) = buffer.upgrade() else {
                return;
            };
            // One segment's worth; errors are the readers' to see when they get there.
            let stepped = step(&shared, target.clone(), request);
            current = match stepped {
                Ok(at) if at < target.end && at > target.start => Some((at..target.end, request)),
                _ => None,
            };
            // The strong reference is gone here: if it was the last, the buffer is dropped now,
            // which closes the mailbox, and `next` returns `None`.
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use std::sync::mpsc::{channel, Receiver, Sender};
    use std::time::Duration;

    use super::*;
    use crate::sync::eventually;

    /// An owner that records each step; a step for a target starting at `HOLD` waits for a
    /// message first (so the test can send a new request while the worker is busy).
    struct Owner {
        steps: std::sync::Mutex<Vec<(Range<u64>, u64)>>,
        hold: std::sync::Mutex<Receiver<()>>,
        /// Set when a step holding at `HOLD` has begun.
        holding: std::sync::atomic::AtomicBool,
    }

    const HOLD: u64 = 1000;

    /// 16 bytes at a time, like a 16-byte segment.
    fn step(owner: &Owner, target: Range<u64>, request: u64) -> std::io::Result<u64> {
        if target.start == HOLD {
            owner
                .holding
                .store(true, std::sync::atomic::Ordering::SeqCst);
            owner.hold.lock().unwrap().recv().unwrap();
        }
        owner.steps.lock().unwrap().push((target.clone(), request));
        Ok((target.start + 16).min(target.end))
    }

    fn owner() -> (std::sync::Arc<Owner>, Sender<()>) {
        let (tx, rx) = channel();
        let owner = Owner {
            steps: std::sync::Mutex::new(Vec::new()),
            hold: std::sync::Mutex::new(rx),
            holding: std::sync::atomic::AtomicBool::new(false),
        };
        (std::sync::Arc::new(owner), tx)
    }

    fn steps(owner: &Owner) -> Vec<(Range<u64>, u64)> {
        owner.steps.lock().unwrap().clone()
    }

    #[test]
    fn the_worker_steps_through_a_target_then_sleeps() {
        let (owner, _tx) = owner();
        let ahead = Arc::new(Ahead::new());
        ahead.request(&std::sync::Arc::downgrade(&owner), 0..40, step, None);
        assert_eq!(ahead.protected(), 0..40);
        eventually("the worker", || steps(&owner).len() == 3);
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(steps(&owner), [(0..40, 1), (16..40, 1), (32..40, 1)]);
        ahead.close();
    }

    #[test]
    fn a_new_target_replaces_the_one_in_progress() {
        let (owner, tx) = owner();
        let ahead = Arc::new(Ahead::new());
        let weak = std::sync::Arc::downgrade(&owner);
        ahead.request(&weak, HOLD..HOLD + 64, step, None);
        // The worker is inside its first step; a far seek asks for another target meanwhile.
        eventually("the worker", || {
            owner.holding.load(std::sync::atomic::Ordering::SeqCst)
        });
        ahead.request(&weak, 5000..5032, step, None);
        assert_eq!(ahead.requests(), 2);
        tx.send(()).unwrap();
        eventually("the worker", || steps(&owner).len() == 3);
        std::thread::sleep(Duration::from_millis(20));
        // The old target's rest is never fetched.
        assert_eq!(
            steps(&owner),
            [(HOLD..HOLD + 64, 1), (5000..5032, 2), (5016..5032, 2)]
        );
        ahead.close();
    }

    #[test]
    fn the_worker_ends_when_the_owner_is_gone_and_never_keeps_it_alive() {
        let (owner, tx) = owner();
        let ahead = Arc::new(Ahead::new());
        ahead.request(
            &std::sync::Arc::downgrade(&owner),
            HOLD..HOLD + 64,
            step,
            None,
        );
        eventually("the worker", || {
            owner.holding.load(std::sync::atomic::Ordering::SeqCst)
        });
        // The worker holds the owner during its step only: dropped now, it goes after it.
        let weak = std::sync::Arc::downgrade(&owner);
        drop(owner);
        tx.send(()).unwrap();
        eventually("the worker", || {
            weak.strong_count() == 0 && Arc::strong_count(&ahead) == 1
        });
    }

    #[test]
    fn a_closed_mailbox_ends_a_sleeping_worker() {
        let (owner, _tx) = owner();
        let ahead = Arc::new(Ahead::new());
        ahead.request(&std::sync::Arc::downgrade(&owner), 0..16, step, None);
        eventually("the worker", || steps(&owner).len() == 1);
        ahead.close();
        eventually("the worker", || Arc::strong_count(&ahead) == 1);
        assert_eq!(std::sync::Arc::strong_count(&owner), 1);
    }
}

/// The shared workers' hand-off under loom: a request that comes while a pooled worker is
/// leaving (no target left) is never lost: the worker either takes it or has left and the
/// request queues another.
/// `RUSTFLAGS="--cfg loom" cargo test --release --lib loom_ --target-dir target/loom`
#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use crate::engine::workers::Workers;

    /// Records the start of each target stepped; each target takes one step.
    struct Owner(Mutex<Vec<u64>>);

    fn step(owner: &Owner, target: Range<u64>, _request: u64) -> std::io::Result<u64> {
        owner.0.lock().push(target.start);
        Ok(target.end)
    }

    #[test]
    fn loom_a_request_while_the_pooled_worker_leaves_is_run() {
        loom::model(|| {
            let workers = Arc::new(Workers::new(1));
            let owner = std::sync::Arc::new(Owner(Mutex::new(Vec::new())));
            let weak = std::sync::Arc::downgrade(&owner);
            let ahead = Arc::new(Ahead::new());
            ahead.request(&weak, 0..16, step, Some(&workers));
            let other = {
                let (ahead, weak, workers) = (ahead.clone(), weak.clone(), workers.clone());
                loom::thread::spawn(move || ahead.request(&weak, 100..116, step, Some(&workers)))
            };
            other.join().unwrap();
            // The later target is stepped, whatever happened to the first.
            while !owner.0.lock().contains(&100) {
                loom::thread::yield_now();
            }
            ahead.close();
            drop(weak);
            match Arc::try_unwrap(workers) {
                Ok(workers) => workers.close_and_join(),
                Err(_) => unreachable!("the model holds the only handle"),
            }
        });
    }
}
