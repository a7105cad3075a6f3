//! Pulling for async cursors: a task never reads a forward-only source itself (that would block
//! its runtime thread), so a background thread pulls on its behalf while the task waits on a
//! waker (see `poll.rs`, which holds the pulling step).
//!
//! One thread at a time per buffer, started on demand and ended as soon as no task wants more:
//! tasks raise `need` (the farthest byte any of them waits for) and start the thread if none
//! runs. The thread runs its owner's step (a pull, as any reader pulls), whose publishes wake the
//! tasks. Errors are not its to return: a failed source is recorded in the index's state, where
//! every waiting task finds it.

use std::sync::Weak;

use crate::engine::workers::Workers;
use crate::sync::{Arc, AtomicBool, AtomicU64, Ordering};

/// The pulling thread's mailbox: what it is asked for, and whether it runs. Shared by the
/// buffer and the thread (not part of the buffer's state, so the thread holds the buffer only
/// while it pulls).
pub(crate) struct Drive {
    need: AtomicU64,
    running: AtomicBool,
    /// In a loom model, the threads started, for the model to join before it ends (loom does
    /// not let a thread outlive the model's main thread).
    #[cfg(loom)]
    started: crate::sync::Mutex<Vec<crate::sync::JoinHandle<()>>>,
}

/// The thread's step for its owner `S`: pull up to the byte before `need`.
pub(crate) type Step<S> = fn(&S, u64);

impl Drive {
    pub(crate) fn new() -> Self {
        Drive {
            need: AtomicU64::new(0),
            running: AtomicBool::new(false),
            #[cfg(loom)]
            started: crate::sync::Mutex::new(Vec::new()),
        }
    }

    /// Asks for the stream to be pulled up to `need` by a background thread running `step`;
    /// returns at once. `Err` if no thread could be started.
    pub(crate) fn request<S: Send + Sync + 'static>(
        self: &Arc<Self>,
        owner: &Weak<S>,
        need: u64,
        step: Step<S>,
        workers: Option<&Workers>,
    ) -> std::io::Result<()> {
        self.need.fetch_max(need, Ordering::SeqCst);
        if self.running.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        let (drive, owner) = (self.clone(), owner.clone());
        let run = move || drive.run(owner, step);
        #[cfg(not(loom))]
        let started = match workers {
            // The thread ends when no task wants more, so it is a job like any other.
            Some(workers) => workers
                .submit(Box::new(run))
                .map_err(|_| std::io::Error::other("no worker thread could be started")),
            None => crate::sync::spawn("sparsebuf-pull", run),
        };
        #[cfg(loom)]
        let _ = workers;
        #[cfg(loom)]
        let started = crate::sync::spawn_joinable("sparsebuf-pull", run)
            .map(|handle| self.started.lock().push(handle));
        if started.is_err() {
            self.running.store(false, Ordering::SeqCst);
        }
        started
    }

    /// Joins the pulling threads started so far (a loom model's last step).
    #[cfg(loom)]
    pub(crate) fn join(&self) {
        let started = std::mem::take(&mut *self.started.lock());
        for handle in started {
            let _ = handle.join();
        }
    }

    /// The thread: runs `step` to the latest `need` until no task asks for more (or the owner
    /// is gone).
    fn run<S>(&self, owner: Weak<S>, step: Step<S>) {
        loop {
            let need = self.need.load(Ordering::SeqCst);
            match owner.upgrade() {
                Some(owner) => step(&owner, need),
                None => {
                    self.running.store(false, Ordering::SeqCst);
                    return;
                }
            }
            self.running.store(false, Ordering::SeqCst);
            // A task that raised `need` after the load above may have seen `running` still set
            // and left the work to this thread: take it back, unless another thread did.
            if self.need.load(Ordering::SeqCst) <= need || self.running.swap(true, Ordering::SeqCst)
            {
                return;
            }
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use std::sync::atomic::AtomicBool as StdBool;
    use std::sync::mpsc::{channel, Receiver};

    use super::*;
    use crate::sync::eventually;

    /// Records each step's `need`; the first step waits for a message after it began.
    struct Owner {
        needs: std::sync::Mutex<Vec<u64>>,
        hold: std::sync::Mutex<Receiver<()>>,
        began: StdBool,
    }

    fn step(owner: &Owner, need: u64) {
        if !owner.began.swap(true, std::sync::atomic::Ordering::SeqCst) {
            owner.hold.lock().unwrap().recv().unwrap();
        }
        owner.needs.lock().unwrap().push(need);
    }

    #[test]
    fn a_need_raised_while_the_thread_pulls_is_pulled_by_that_thread() {
        let (tx, rx) = channel();
        let owner = std::sync::Arc::new(Owner {
            needs: std::sync::Mutex::new(Vec::new()),
            hold: std::sync::Mutex::new(rx),
            began: StdBool::new(false),
        });
        let weak = std::sync::Arc::downgrade(&owner);
        let drive = Arc::new(Drive::new());
        drive.request(&weak, 100, step, None).unwrap();
        eventually("the thread", || {
            owner.began.load(std::sync::atomic::Ordering::SeqCst)
        });
        // The thread is pulling: a task that needs more leaves it to that thread.
        drive.request(&weak, 250, step, None).unwrap();
        drive.request(&weak, 200, step, None).unwrap();
        tx.send(()).unwrap();
        eventually("the thread", || {
            !drive.running.load(Ordering::SeqCst) && Arc::strong_count(&drive) == 1
        });
        assert_eq!(*owner.needs.lock().unwrap(), [100, 250]);
        // Idle, the next request starts a thread again.
        drive.request(&weak, 300, step, None).unwrap();
        eventually("the thread", || owner.needs.lock().unwrap().len() == 3);
        assert_eq!(owner.needs.lock().unwrap()[2], 300);
    }

    #[test]
    fn the_thread_ends_without_a_step_once_the_owner_is_gone() {
        let (_tx, rx) = channel();
        let owner = std::sync::Arc::new(Owner {
            needs: std::sync::Mutex::new(Vec::new()),
            hold: std::sync::Mutex::new(rx),
            began: StdBool::new(true),
        });
        let weak = std::sync::Arc::downgrade(&owner);
        drop(owner);
        let drive = Arc::new(Drive::new());
        drive.request(&weak, 100, step, None).unwrap();
        eventually("the thread", || {
            !drive.running.load(Ordering::SeqCst) && Arc::strong_count(&drive) == 1
        });
    }
}
