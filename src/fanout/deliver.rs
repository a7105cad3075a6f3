//! What a serial consumer does with each chunk (the callback, `on_done`, the sampler), with the
//! panics of user code caught; shared by consumer threads and inline consumers.

use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Duration;

use crate::error::panic_message;
use crate::fanout::chunk::Chunk;
use crate::sync::Arc;

pub(crate) type Callback<T> = Box<dyn FnMut(Chunk) -> io::Result<T> + Send>;
pub(crate) type SharedCallback<T> = Arc<dyn Fn(Chunk) -> io::Result<T> + Send + Sync>;
pub(crate) type OnDone<T> = Option<Box<dyn FnMut(T) + Send>>;
pub(crate) type Sampler = Option<Box<dyn FnMut() -> Duration + Send>>;

/// The per-chunk work of a serial consumer: the callback, `on_done` and the sampler, with
/// their panics caught.
pub(crate) struct Deliver<T> {
    pub(crate) callback: Callback<T>,
    pub(crate) on_done: OnDone<T>,
    pub(crate) sampler: Sampler,
}

impl<T> Deliver<T> {
    /// Delivers `chunk`; returns the pause the sampler asks for after it.
    pub(crate) fn deliver(&mut self, chunk: Chunk) -> io::Result<Option<Duration>> {
        let last = chunk.is_last();
        let value = guard(|| (self.callback)(chunk))??;
        finished(&mut self.on_done, value)?;
        if last {
            return Ok(None);
        }
        ask(&mut self.sampler)
    }
}

pub(crate) fn finished<T>(on_done: &mut OnDone<T>, value: T) -> io::Result<()> {
    match on_done {
        Some(on_done) => guard(|| on_done(value)),
        None => Ok(()),
    }
}

pub(crate) fn ask(sampler: &mut Sampler) -> io::Result<Option<Duration>> {
    match sampler {
        Some(sampler) => guard(sampler).map(|pause| (!pause.is_zero()).then_some(pause)),
        None => Ok(None),
    }
}

/// Runs user code; a panic becomes an error.
pub(crate) fn guard<R>(f: impl FnOnce() -> R) -> io::Result<R> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|panic| panicked(panic.as_ref()))
}

/// A callback's panic as an error.
pub(crate) fn panicked(panic: &(dyn std::any::Any + Send)) -> io::Error {
    let message = panic_message(panic);
    io::Error::other(format!("a consumer's callback panicked: {message}"))
}
