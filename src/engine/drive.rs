//! Pulling for async cursors: a task never reads a forward-only source itself (that would block
//! its runtime thread), so a background thread pulls on its behalf while the task waits on a
//! waker (see `poll.rs`).
//!
//! One thread at a time per buffer, started on demand and ended as soon as no task wants more:
//! tasks raise `need` (the farthest byte any of them waits for) and start the thread if none
//! runs. The thread pulls as any reader does (taking the writer role, or waiting for whoever has
//! it), and its publishes wake the tasks. Errors are not its to return: a failed source is
//! recorded in the index's state, where every waiting task finds it.

use crate::engine::shared::{Shared, Want};
use crate::sync::{AtomicBool, AtomicU64, Ordering};

/// What the pulling thread is asked for, and whether it runs.
pub(crate) struct Drive {
    need: AtomicU64,
    running: AtomicBool,
    /// In a loom model, the threads started, for the model to join before it ends (loom does
    /// not let a thread outlive the model's main thread).
    #[cfg(loom)]
    started: crate::sync::Mutex<Vec<crate::sync::JoinHandle<()>>>,
}

impl Drive {
    pub(crate) fn new() -> Self {
        Drive {
            need: AtomicU64::new(0),
            running: AtomicBool::new(false),
            #[cfg(loom)]
            started: crate::sync::Mutex::new(Vec::new()),
        }
    }
}

impl Shared {
    /// Asks for the stream to be pulled up to `need` by a background thread; returns at once.
    /// `Err` if no thread could be started.
    pub(crate) fn pull_in_background(&self, need: u64) -> std::io::Result<()> {
        let drive = &self.drive;
        drive.need.fetch_max(need, Ordering::SeqCst);
        if drive.running.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        let Some(me) = self.me.upgrade() else {
            drive.running.store(false, Ordering::SeqCst);
            return Ok(());
        };
        #[cfg(not(loom))]
        let started = crate::sync::spawn("sparsebuf-pull", move || me.drive());
        #[cfg(loom)]
        let started = crate::sync::spawn_joinable("sparsebuf-pull", move || me.drive())
            .map(|handle| self.drive.started.lock().push(handle));
        if started.is_err() {
            drive.running.store(false, Ordering::SeqCst);
        }
        started
    }

    /// Joins the pulling threads started so far (a loom model's last step).
    #[cfg(loom)]
    pub(crate) fn join_pulling(&self) {
        let started = std::mem::take(&mut *self.drive.started.lock());
        for handle in started {
            let _ = handle.join();
        }
    }

    /// The thread: pulls to the latest `need` until no task asks for more.
    fn drive(&self) {
        let drive = &self.drive;
        loop {
            let need = drive.need.load(Ordering::SeqCst);
            // A task's read may reach past a known end: pull to the end, not past it (the last
            // byte asked for would be past the end, and waiting for it would return at once).
            let end = self.clip(need);
            // Errors are recorded in the state (or, behind a window, met by the asking task).
            let _ = self.wait_filled(end.saturating_sub(1), end, Want::All);
            drive.running.store(false, Ordering::SeqCst);
            // A task that raised `need` after the load above may have seen `running` still set
            // and left the work to this thread: take it back, unless another thread did.
            if drive.need.load(Ordering::SeqCst) <= need
                || drive.running.swap(true, Ordering::SeqCst)
            {
                return;
            }
        }
    }
}
