//! The spiller: a background thread that writes a forward-only stream's spilled segments to
//! the spill storage while the writer goes on pulling, so the copy out of the source and the
//! `pwrite` overlap on two cores instead of taking turns on one.
//!
//! The thread only writes: the writer hands it one segment at a time (`submit`) and does all
//! the bookkeeping itself, under the tiers lock it already holds, when it takes the result back
//! (`finish`): before it hands over the next segment, and before it gives up the writer role. So
//! at most one segment is in flight, and when a read that pulled returns, the budgets and the
//! stats are settled as if spilling were synchronous. The thread holds the buffer only while it
//! writes (a `Weak` reference otherwise), and ends when the buffer is dropped. If it cannot be
//! started, the writer spills inline.

use std::io;
use std::sync::Weak;

use bytes::Bytes;

use crate::shared::Shared;
use crate::sync::{Arc, Condvar, Mutex, MutexGuard};

/// The spiller's mailbox, shared by the buffer and its thread (not part of `Shared`, so the
/// thread can wait on it without keeping the buffer alive).
pub(crate) struct Spiller {
    state: Mutex<Slot>,
    /// Wakes the thread (a job, or the buffer is gone) and the writer (a job done).
    changed: Condvar,
}

/// One job at a time: `job` is set by `submit` and taken by the thread, which then sets `done`;
/// `busy` from `submit` until `finish` takes `done`.
#[derive(Default)]
struct Slot {
    job: Option<u64>,
    done: Option<(u64, Written)>,
    busy: bool,
    started: bool,
    closed: bool,
}

/// What writing a segment out gave: its RAM buffer (to release once the slot points at the
/// storage), `None` if it was not in RAM any more, or the storage's error.
pub(crate) type Written = io::Result<Option<Bytes>>;

impl Spiller {
    pub(crate) fn new() -> Self {
        Spiller {
            state: Mutex::new(Slot::default()),
            changed: Condvar::new(),
        }
    }

    /// Hands `segment` to the thread, starting it if needed. `false`: the writer must spill it
    /// itself (a job is still in flight: `finish` it first; or no thread could be started).
    /// `write` is what the thread runs for each job.
    pub(crate) fn submit(
        self: &Arc<Self>,
        shared: &Weak<Shared>,
        segment: u64,
        write: fn(&Shared, u64) -> Written,
    ) -> bool {
        let mut state = self.state.lock();
        if state.busy || state.closed {
            return false;
        }
        if !state.started {
            let (spiller, weak) = (self.clone(), shared.clone());
            let spawned = crate::sync::spawn("sparsebuf-spill", move || spiller.run(weak, write));
            if spawned.is_err() {
                return false;
            }
            state.started = true;
        }
        state.job = Some(segment);
        state.busy = true;
        drop(state);
        self.changed.notify_all();
        true
    }

    /// Waits for the job in flight, if any, and returns its segment and result.
    pub(crate) fn finish(&self) -> Option<(u64, Written)> {
        let mut state = self.state.lock();
        if !state.busy {
            return None;
        }
        spin_until(&mut state, |s| s.done.is_some());
        loop {
            if let Some(done) = state.done.take() {
                state.busy = false;
                return Some(done);
            }
            self.changed.wait(&mut state);
        }
    }

    /// Ends the thread (called when the buffer is dropped).
    pub(crate) fn close(&self) {
        self.state.lock().closed = true;
        self.changed.notify_all();
    }

    fn run(&self, buffer: Weak<Shared>, write: fn(&Shared, u64) -> Written) {
        loop {
            let segment = {
                let mut state = self.state.lock();
                loop {
                    if state.closed {
                        return;
                    }
                    if let Some(segment) = state.job.take() {
                        break segment;
                    }
                    if spin_until(&mut state, |s| s.job.is_some() || s.closed) {
                        continue;
                    }
                    self.changed.wait(&mut state);
                }
            };
            // A buffer that is gone has nobody to report to.
            let Some(shared) = buffer.upgrade() else {
                return;
            };
            let written = write(&shared, segment);
            // Released before reporting: if it was the last handle, the buffer is dropped here,
            // which closes the mailbox.
            drop(shared);
            self.state.lock().done = Some((segment, written));
            self.changed.notify_all();
        }
    }
}

/// Spins for a short while (about the time of one segment's `pwrite`), releasing the lock
/// between looks, until `ready`; whether it became ready. Waking a sleeping thread costs tens of
/// microseconds on a busy or virtual machine, as much as the handover it would wait for: with
/// it, spilling in the background was slower than spilling inline.
#[cfg(not(loom))]
fn spin_until(state: &mut MutexGuard<'_, Slot>, ready: impl Fn(&Slot) -> bool) -> bool {
    let start = std::time::Instant::now();
    while !ready(state) {
        if start.elapsed() > SPIN {
            return false;
        }
        MutexGuard::unlocked(state, || {
            for _ in 0..32 {
                std::hint::spin_loop();
            }
        });
    }
    true
}

/// In a model, waiting is what loom explores: no spinning.
#[cfg(loom)]
fn spin_until(state: &mut MutexGuard<'_, Slot>, ready: impl Fn(&Slot) -> bool) -> bool {
    ready(state)
}

/// How long a thread spins before it sleeps.
#[cfg(not(loom))]
const SPIN: std::time::Duration = std::time::Duration::from_micros(50);
