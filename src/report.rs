//! [`Report`]: what a fan-out consumer delivered.

use crate::feed::Feed;

/// What a consumer delivered, returned by [`Consumer::join`](crate::Consumer::join).
///
/// For a consumer that ran to the end of its stream, `bytes + skipped` is the stream's length.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Report {
    /// Chunks handed to the callback, the last (possibly empty) one included.
    pub chunks: u64,
    /// Bytes in those chunks.
    pub bytes: u64,
    /// Bytes the consumer did not get: those before where it started, those published while a
    /// [`sampler`](crate::Emit::sampler) paused it, and those a
    /// [`lagging`](crate::Emit::lagging) consumer fell behind on.
    pub skipped: u64,
}

impl Report {
    pub(crate) fn of(feed: &Feed) -> Report {
        Report {
            chunks: feed.chunks,
            bytes: feed.bytes,
            skipped: feed.skipped,
        }
    }
}
