//! Read-ahead: one background worker per buffer keeps the bytes after the latest read (or a
//! range asked for with `prefetch`) filling, so sequential readers find them ready.
//!
//! The worker holds only a `Weak` reference to the buffer while it waits, so dropping the last
//! handle ends it. Targets are overwritten, not queued: a far seek restarts read-ahead at the new
//! position, and a worker busy with an old target moves on as soon as it finishes a step.

use std::ops::Range;
use std::sync::Weak;
use std::thread;

use crate::buffer::{Shared, StreamBuffer};
use crate::sync::{Arc, Condvar, Mutex};

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
}

impl Ahead {
    pub(crate) fn new() -> Self {
        Ahead {
            want: Mutex::new(Want::default()),
            wake: Condvar::new(),
        }
    }

    /// Asks the worker to fill `range`, starting it if needed.
    pub(crate) fn request(self: &Arc<Self>, shared: &Arc<Shared>, range: Range<u64>) {
        let mut want = self.want.lock();
        want.target = Some(range);
        if !want.started {
            want.started = true;
            let (ahead, weak) = (self.clone(), Arc::downgrade(shared));
            // A worker that cannot be started only means no read-ahead; reads work without it.
            let spawned = thread::Builder::new()
                .name("sparsebuf-read-ahead".into())
                .spawn(move || ahead.run(weak));
            if spawned.is_err() {
                want.started = false;
                want.target = None;
            }
        }
        drop(want);
        self.wake.notify_one();
    }

    /// Ends the worker (called when the buffer is dropped).
    pub(crate) fn close(&self) {
        self.want.lock().closed = true;
        self.wake.notify_one();
    }

    fn run(&self, buffer: Weak<Shared>) {
        loop {
            let target = {
                let mut want = self.want.lock();
                loop {
                    if want.closed {
                        return;
                    }
                    if let Some(target) = want.target.take() {
                        break target;
                    }
                    self.wake.wait(&mut want);
                }
            };
            let Some(shared) = buffer.upgrade() else {
                return;
            };
            // Errors are the readers' to see when they get there.
            let _ = StreamBuffer::from_shared(shared).fill_ahead(target);
        }
    }
}
