//! [`Chunk`]: what a fan-out consumer's callback gets.

use std::fmt;
use std::ops::Deref;
use std::time::Instant;

use bytes::Bytes;

use crate::engine::feed::{Cut, CutBytes};

/// One piece of the stream, delivered to a consumer started with
/// [`StreamBuffer::emit`](crate::StreamBuffer::emit).
///
/// Dereferences to its bytes. A chunk inside one full segment in RAM shares that segment's
/// buffer (no copy); any other is assembled in a buffer of the consumer's own, which goes back
/// to the consumer for reuse when the chunk is dropped. Either way the bytes stay valid for as
/// long as the chunk lives, whatever the buffer does meanwhile.
///
/// # Examples
///
/// ```
/// use std::io::Write;
/// use sparsebuf::StreamBuffer;
///
/// let (mut writer, buf) = StreamBuffer::builder().build_push()?;
/// let consumer = buf.emit(4).start(|chunk| {
///     // Offsets count from the start of the stream; the last chunk carries the remainder.
///     assert_eq!(chunk.len(), if chunk.is_last() { 2 } else { 4 });
///     assert!(chunk.received_at() <= std::time::Instant::now());
///     Ok((chunk.offset(), chunk.to_vec()))
/// })?;
/// writer.write_all(b"abcdefghij")?;
/// writer.finish()?;
/// let report = consumer.join()?;
/// assert_eq!((report.chunks, report.bytes), (3, 10));
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct Chunk(Cut);

impl Chunk {
    /// The chunk a consumer's feed cut.
    pub(crate) fn new(cut: Cut) -> Self {
        Chunk(cut)
    }

    /// The stream offset of the chunk's first byte.
    pub fn offset(&self) -> u64 {
        self.0.offset
    }

    /// When the chunk's first byte arrived in the buffer: the time of the `write` (or source
    /// read) that brought it. For a range source, when the consumer first took the chunk's
    /// bytes.
    pub fn received_at(&self) -> Instant {
        self.0.received_at
    }

    /// Whether this is the consumer's last chunk: it ends the stream (it may be short, or
    /// empty when the stream ended right after a full chunk). Exactly one chunk of a consumer
    /// that runs to the end of its stream is the last.
    pub fn is_last(&self) -> bool {
        self.0.last
    }

    /// The bytes as [`Bytes`], without a copy when the chunk shares a segment's buffer.
    pub fn into_bytes(mut self) -> Bytes {
        match &mut self.0.bytes {
            CutBytes::Shared(bytes) => std::mem::take(bytes),
            CutBytes::Owned(vec, _) => Bytes::from(std::mem::take(vec)),
        }
    }
}

impl Deref for Chunk {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match &self.0.bytes {
            CutBytes::Shared(bytes) => bytes,
            CutBytes::Owned(vec, _) => vec,
        }
    }
}

impl AsRef<[u8]> for Chunk {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl Drop for Chunk {
    fn drop(&mut self) {
        if let CutBytes::Owned(vec, bin) = &mut self.0.bytes {
            bin.give(std::mem::take(vec));
        }
    }
}

impl fmt::Debug for Chunk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Chunk")
            .field("offset", &self.0.offset)
            .field("len", &self.len())
            .field("is_last", &self.0.last)
            .finish()
    }
}
