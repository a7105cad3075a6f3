//! [`Report`]: what a fan-out consumer delivered.

use crate::engine::feed::Feed;

/// What a consumer delivered, returned by [`Consumer::join`](crate::Consumer::join).
///
/// For a consumer that ran to the end of its stream, `bytes + skipped` is the stream's length.
///
/// # Examples
///
/// ```
/// use std::io::Write;
/// use sparsebuf::{Report, StreamBuffer};
///
/// let (mut writer, buf) = StreamBuffer::builder().build_push()?;
/// writer.write_all(&[1u8; 2500])?;
/// // Started late on a stream without a window: it still starts at byte 0.
/// let consumer = buf.emit(1000).start(|chunk| Ok(chunk.len()))?;
/// writer.finish()?;
/// let report = consumer.join()?;
/// assert_eq!(report, Report { chunks: 3, bytes: 2500, skipped: 0 });
/// # Ok::<(), std::io::Error>(())
/// ```
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
