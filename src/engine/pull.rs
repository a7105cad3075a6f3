//! The pull driver: a forward-only source (a `Read` or an iterator of chunks) that readers
//! make produce. Whoever holds the writer role reads the source straight into the appender's
//! unpublished tail and publishes each read.

use crate::engine::append::Appender;
use crate::engine::holds::Blocked;
use crate::engine::publish::Publish;
use crate::engine::shared::{Producer, Shared};
use crate::error::Error;
use crate::source::{call, Fill};
use crate::sync::{MutexGuard, Ordering};

/// State owned by whoever holds the writer role (the buffer's writer mutex).
///
/// Invariants: everything the source produced is published before the writer releases the role
/// or reads the source again; `source` is `None` once the stream has ended or failed, and then
/// the index's state says which.
pub(crate) struct Puller {
    source: Option<Box<dyn Fill>>,
    appender: Appender,
}

impl Producer for Puller {
    fn frontier(&self) -> u64 {
        self.appender.frontier()
    }

    fn pull_until(&mut self, shared: &Shared, need: u64) -> Result<(), Blocked> {
        while self.appender.frontier() < need && self.source.is_some() {
            self.pull_once(shared)?;
        }
        Ok(())
    }
}

impl Puller {
    pub(crate) fn new(source: Box<dyn Fill>) -> Self {
        Puller {
            source: Some(source),
            appender: Appender::new(),
        }
    }

    /// One read from the source, published at once.
    fn pull_once(&mut self, shared: &Shared) -> Result<(), Blocked> {
        let offset = self.appender.frontier();
        let Some(source) = self.source.as_mut() else {
            return Ok(());
        };
        let read = match self.appender.room(shared)? {
            Some(dst) => read_source(source.as_mut(), dst, offset),
            None => {
                self.probe_end(shared);
                return Ok(());
            }
        };
        match read {
            Ok(0) => self.end(shared, None),
            Ok(n) => self.appender.commit(shared, n, true),
            Err(err) => self.end(shared, Some(err)),
        }
        Ok(())
    }

    /// At the declared length: the source must end here. One more read tells.
    fn probe_end(&mut self, shared: &Shared) {
        let Some(source) = self.source.as_mut() else {
            return;
        };
        let declared = self.appender.frontier();
        match read_source(source.as_mut(), &mut [0u8; 1], declared) {
            Ok(0) => self.end(shared, None),
            Ok(_) => {
                shared.source_bytes.fetch_add(1, Ordering::Relaxed);
                self.end(shared, Some(Error::RanLong { declared }));
            }
            Err(err) => self.end(shared, Some(err)),
        }
    }

    /// The source ended (`None`) or failed: the appender records it, and the source goes.
    fn end(&mut self, shared: &Shared, error: Option<Error>) {
        match error {
            None => {
                self.appender.finish(shared);
                shared.stream_ended();
            }
            Some(error) => self.appender.fail(shared, error),
        }
        // Dropped outside any lock: a source's destructor may block (closing a connection).
        self.source = None;
    }
}

/// Reads from the stream into `dst`; see [`call`].
fn read_source(source: &mut dyn Fill, dst: &mut [u8], offset: u64) -> Result<usize, Error> {
    let len = dst.len();
    call(offset, len, || source.fill(dst))
}

/// The writer role, held by one thread: releases the writer mutex and then notifies waiters
/// when dropped (also while unwinding), so one of them can take the role over.
pub(crate) struct Role<'a> {
    writer: Option<MutexGuard<'a, Box<dyn Producer>>>,
    publish: &'a Publish,
}

impl<'a> Role<'a> {
    pub(crate) fn new(writer: MutexGuard<'a, Box<dyn Producer>>, publish: &'a Publish) -> Self {
        Role {
            writer: Some(writer),
            publish,
        }
    }

    /// Pulls until `need` (see [`Producer::pull_until`]).
    pub(crate) fn pull_until(&mut self, shared: &Shared, need: u64) -> Result<(), Blocked> {
        match self.writer.as_mut() {
            Some(writer) => writer.pull_until(shared, need),
            None => Ok(()),
        }
    }

    /// The writer's published frontier.
    pub(crate) fn frontier(&self) -> u64 {
        self.writer.as_ref().map_or(0, |w| w.frontier())
    }
}

impl Drop for Role<'_> {
    fn drop(&mut self) {
        self.writer = None;
        self.publish.notify();
    }
}
