//! The read path for async cursors: a read that never blocks. It copies what is filled, and
//! otherwise arranges for the bytes to come (a pull on a background thread, see `drive.rs`) and
//! leaves the task's waker beside the condition variable that threads sleep on (see
//! `publish.rs`), or says that the read needs a blocking thread (a range source's fetch).
//!
//! The protocol is the threads' one: read the publish generation, look at the index, then
//! register the waker only if the generation has not moved since; so a publish between the look
//! and the registration is never missed.

use std::io;
use std::task::Waker;

use crate::engine::shared::{Filler, Shared, Want};
use crate::error::{range_end, Error};

/// The outcome of [`Shared::poll_some`].
pub(crate) enum Polled {
    /// Done: bytes copied (0 at the end of the stream), or an error.
    Ready(io::Result<usize>),
    /// The waker will be woken by the next publish; poll again then.
    Pending,
    /// The bytes must be fetched by a blocking read (a range source): run
    /// `read_inner(offset, buf, Want::Some)` off the task, on a thread that may block.
    Blocking,
}

impl Shared {
    /// A cursor's read (`Want::Some`: at least one byte, or the end) that never blocks.
    /// `key`: the cursor's, under which its waker waits (see `Publish::register`).
    pub(crate) fn poll_some(&self, offset: u64, buf: &mut [u8], key: u64, waker: &Waker) -> Polled {
        let end = match range_end(offset, buf.len()) {
            Ok(end) => end,
            Err(error) => return Polled::Ready(Err(error)),
        };
        loop {
            let seen = self.publish.generation();
            if let Some(done) = self.read_filled(offset, end, buf, Want::Some) {
                if let Ok(n) = done {
                    self.after_read(offset, n);
                }
                return Polled::Ready(done);
            }
            {
                let state = self.state.read();
                if let Some(error) = &state.error {
                    return Polled::Ready(Err(error.clone().into()));
                }
                if offset < state.window_start {
                    let window_start = state.window_start;
                    let error = Error::BehindWindow {
                        offset,
                        window_start,
                    };
                    return Polled::Ready(Err(error.into()));
                }
            }
            match &self.filler {
                Filler::Ranged(_) => return Polled::Blocking,
                // As far as the task asked: a cursor's chunk at a time, not byte by byte.
                Filler::Pull(_) => {
                    if let Err(error) = self.pull_in_background(end.max(offset + 1)) {
                        return Polled::Ready(Err(error));
                    }
                }
                // Its `Writer` will publish.
                Filler::Push => {}
            }
            if self.publish.register(seen, key, waker) {
                return Polled::Pending;
            }
        }
    }
}

impl Shared {
    /// Asks for the stream to be pulled up to `need` by a background thread (see `drive.rs`);
    /// returns at once. `Err` if no thread could be started.
    pub(crate) fn pull_in_background(&self, need: u64) -> io::Result<()> {
        self.drive
            .request(&self.me, need, Shared::pull_to, self.workers())
    }

    /// The pulling thread's step: pulls to `need`, clipped to a known end (a task's read may
    /// reach past it; the last byte asked for would be past the end, and waiting for it would
    /// return at once). Errors are recorded in the state (or, behind a window, met by the
    /// asking task).
    fn pull_to(&self, need: u64) {
        let end = self.clip(need);
        let _ = self.wait_filled(end.saturating_sub(1), end, Want::All);
    }

    /// Joins the pulling threads started so far (a loom model's last step).
    #[cfg(loom)]
    pub(crate) fn join_pulling(&self) {
        self.drive.join();
    }
}
