//! The spiller: a background thread that writes a stream's segments to the spill storage ahead
//! of need ("cleans" them) while they are still in RAM, so that the writer, when RAM passes the
//! budget, evicts a segment already on disk with no I/O of its own: the copy out of the source
//! and the `pwrite` overlap on two cores.
//!
//! The writer decides everything, under the tiers lock it already holds (see `tiers.rs`): it
//! hands the thread the oldest segments once RAM comes within the clean-ahead depth of the
//! budget, and takes the results back when it needs a victim. Slots change only in the writer,
//! so the budgets and the stats read as if spilling were synchronous. Nobody spins: the thread
//! sleeps when it has no job, and the writer sleeps only when its victim is still queued, until
//! the queue is down to half its depth (so one wake-up of the writer covers half a queue of
//! segments, and the thread never runs dry while the writer is ahead). On a busy machine the
//! sleeping writer leaves the core to the thread instead of competing with it.
//!
//! The thread holds the buffer only while it writes (a `Weak` reference otherwise) and ends
//! when the buffer is dropped. If it cannot be started, the writer spills inline.

use std::collections::VecDeque;
use std::io;
use std::sync::Weak;

use bytes::Bytes;

use crate::sync::{Arc, Condvar, Mutex};

/// The spiller's mailbox, shared by the buffer and its thread (not part of `Shared`, so the
/// thread can wait on it without keeping the buffer alive).
pub(crate) struct Spiller {
    state: Mutex<Queue>,
    /// Wakes the thread (a job, or the buffer is gone).
    jobs: Condvar,
    /// Wakes the writer (the queue went down to its low mark).
    drained: Condvar,
    /// In a loom model, the thread, for the model to join before it ends.
    #[cfg(loom)]
    thread: Mutex<Option<crate::sync::JoinHandle<()>>>,
}

/// Jobs in order; `in_flight` counts those queued and the one being written, whose results are
/// in `done` once written.
#[derive(Default)]
struct Queue {
    jobs: VecDeque<u64>,
    done: Vec<(u64, Written)>,
    in_flight: usize,
    /// The writer sleeps until `in_flight` is at most this.
    low: Option<usize>,
    started: bool,
    closed: bool,
}

/// What writing a segment out gave: its RAM buffer (a clone, dropped by the writer), `None` if
/// it was not in RAM any more, or the storage's error.
pub(crate) type Written = io::Result<Option<Bytes>>;

/// What the thread runs for a run of adjacent segments of its owner `T` (a buffer's shared
/// state): each one's result.
pub(crate) type WriteRun<T> = fn(&T, &[u64]) -> Vec<(u64, Written)>;

/// The most segments the thread writes with one call.
const MAX_RUN: usize = 16;

impl Spiller {
    pub(crate) fn new() -> Self {
        Spiller {
            state: Mutex::new(Queue::default()),
            jobs: Condvar::new(),
            drained: Condvar::new(),
            #[cfg(loom)]
            thread: Mutex::new(None),
        }
    }

    /// Queues `segments` to be written, starting the thread if needed, with one wake-up.
    /// `false`: no thread could be started (the writer spills inline). `write` is what the
    /// thread runs for each job.
    pub(crate) fn submit<T: Send + Sync + 'static>(
        self: &Arc<Self>,
        shared: &Weak<T>,
        segments: &[u64],
        write: WriteRun<T>,
    ) -> bool {
        let mut state = self.state.lock();
        if state.closed {
            return false;
        }
        if !state.started {
            let (spiller, weak) = (self.clone(), shared.clone());
            let run = move || spiller.run(weak, write);
            #[cfg(not(loom))]
            let spawned = crate::sync::spawn("sparsebuf-spill", run);
            #[cfg(loom)]
            let spawned = crate::sync::spawn_joinable("sparsebuf-spill", run)
                .map(|handle| *self.thread.lock() = Some(handle));
            if spawned.is_err() {
                return false;
            }
            state.started = true;
        }
        let idle = state.jobs.is_empty();
        state.jobs.extend(segments);
        state.in_flight += segments.len();
        drop(state);
        if idle {
            self.jobs.notify_all();
        }
        true
    }

    /// The results written so far (without waiting).
    pub(crate) fn take_done(&self) -> Vec<(u64, Written)> {
        std::mem::take(&mut self.state.lock().done)
    }

    /// Waits until at most `low` jobs are in flight, and returns the results written so far.
    pub(crate) fn drain_to(&self, low: usize) -> Vec<(u64, Written)> {
        let mut state = self.state.lock();
        while state.in_flight > low && !state.closed {
            state.low = Some(low);
            self.drained.wait(&mut state);
        }
        state.low = None;
        std::mem::take(&mut state.done)
    }

    /// Joins the thread once closed (a loom model's last step).
    #[cfg(all(loom, test))]
    pub(crate) fn join_thread(&self) {
        if let Some(handle) = self.thread.lock().take() {
            let _ = handle.join();
        }
    }

    /// Ends the thread (called when the buffer is dropped).
    pub(crate) fn close(&self) {
        self.state.lock().closed = true;
        self.jobs.notify_all();
        self.drained.notify_all();
    }

    fn run<T>(&self, buffer: Weak<T>, write: WriteRun<T>) {
        let mut run = Vec::with_capacity(MAX_RUN);
        loop {
            {
                let mut state = self.state.lock();
                loop {
                    if state.closed {
                        return;
                    }
                    // The jobs at the front that follow each other, as one run.
                    while let Some(&next) = state.jobs.front() {
                        let follows = run.last().is_none_or(|&last: &u64| last + 1 == next);
                        if !follows || run.len() == MAX_RUN {
                            break;
                        }
                        run.push(next);
                        state.jobs.pop_front();
                    }
                    if !run.is_empty() {
                        break;
                    }
                    self.jobs.wait(&mut state);
                }
            }
            // A buffer that is gone has nobody to report to.
            let Some(shared) = buffer.upgrade() else {
                return;
            };
            let written = write(&shared, &run);
            // Released before reporting: if it was the last handle, the buffer is dropped here,
            // which closes the mailbox.
            drop(shared);
            let mut state = self.state.lock();
            state.in_flight -= run.len();
            state.done.extend(written);
            run.clear();
            let wake = state.low.is_some_and(|low| state.in_flight <= low);
            drop(state);
            if wake {
                self.drained.notify_all();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes nothing; answers each segment with its number as bytes.
    fn echo(_: &(), run: &[u64]) -> Vec<(u64, Written)> {
        run.iter()
            .map(|&s| (s, Ok(Some(Bytes::from(s.to_le_bytes().to_vec())))))
            .collect()
    }

    #[test]
    fn jobs_come_back_in_runs_and_the_writer_sleeps_until_the_low_mark() {
        let owner = std::sync::Arc::new(());
        let spiller = Arc::new(Spiller::new());
        let weak = std::sync::Arc::downgrade(&owner);
        assert!(spiller.submit(&weak, &[1, 2, 3, 7, 8], echo));
        assert!(spiller.submit(&weak, &[9], echo));
        let mut done = spiller.drain_to(0);
        done.sort_by_key(|(s, _)| *s);
        let got: Vec<u64> = done.iter().map(|(s, _)| *s).collect();
        assert_eq!(got, [1, 2, 3, 7, 8, 9]);
        assert!(spiller.take_done().is_empty());
        spiller.close();
        assert!(!spiller.submit(&weak, &[10], echo));
    }
}

/// The hand-off under loom: a writer that queues jobs and sleeps until they are written is
/// always woken (no lost wake-up between the thread's report and the writer's sleep), and a
/// close while it sleeps wakes it too.
/// `RUSTFLAGS="--cfg loom" cargo test --release --lib loom_ --target-dir target/loom`
#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;

    fn echo(_: &(), run: &[u64]) -> Vec<(u64, Written)> {
        run.iter().map(|&s| (s, Ok(None))).collect()
    }

    #[test]
    fn loom_a_writer_waiting_for_the_spiller_is_always_woken() {
        loom::model(|| {
            let owner = std::sync::Arc::new(());
            let spiller = Arc::new(Spiller::new());
            let weak = std::sync::Arc::downgrade(&owner);
            assert!(spiller.submit(&weak, &[1, 2], echo));
            let mut got = spiller.drain_to(1).len();
            assert!(spiller.submit(&weak, &[5], echo));
            got += spiller.drain_to(0).len();
            got += spiller.take_done().len();
            assert_eq!(got, 3);
            spiller.close();
            spiller.join_thread();
        });
    }
}
