//! [`Served`]: what a server has served, and the counts behind it.

use std::sync::atomic::{AtomicU64, Ordering};

/// What a [`Server`](crate::Server) has served so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
#[cfg_attr(docsrs, doc(cfg(feature = "server")))]
pub struct Served {
    /// Requests answered (their headers sent).
    pub requests: u64,
    /// Connections accepted.
    pub connections: u64,
    /// Connections open now.
    pub open: u64,
    /// Bytes of bodies sent.
    pub bytes: u64,
    /// Connections dropped because their client took nothing for the send timeout.
    pub stalled: u64,
    /// Connections closed to make room for new ones at the connection limit.
    pub evicted: u64,
}

/// The live counts behind [`Served`], shared by a server's clones and its bodies.
#[derive(Default)]
pub(crate) struct Counts {
    pub(crate) requests: AtomicU64,
    pub(crate) connections: AtomicU64,
    pub(crate) open: AtomicU64,
    pub(crate) bytes: AtomicU64,
    pub(crate) stalled: AtomicU64,
    pub(crate) evicted: AtomicU64,
}

impl Counts {
    /// A snapshot.
    pub(crate) fn served(&self) -> Served {
        Served {
            requests: self.requests.load(Ordering::Relaxed),
            connections: self.connections.load(Ordering::Relaxed),
            open: self.open.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            stalled: self.stalled.load(Ordering::Relaxed),
            evicted: self.evicted.load(Ordering::Relaxed),
        }
    }
}
