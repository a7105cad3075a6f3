//! Sources the writer pulls from. The writer is a "filler" role that asks a [`Fill`] for bytes;
//! it is not tied to `Read`, so later sources (push-mode writers, range sources) plug in here.

use std::io::{self, Read};

/// Something that produces the next bytes of the stream.
pub(crate) trait Fill: Send {
    /// Writes the next bytes of the stream into the start of `dst` and returns how many;
    /// `Ok(0)` means the stream has ended (`dst` is never empty).
    fn fill(&mut self, dst: &mut [u8]) -> io::Result<usize>;
}

/// A [`Read`] as a source.
pub(crate) struct ReadSource<R>(pub(crate) R);

impl<R: Read + Send> Fill for ReadSource<R> {
    #[inline]
    fn fill(&mut self, dst: &mut [u8]) -> io::Result<usize> {
        self.0.read(dst)
    }
}

/// An iterator of chunks as a source. A chunk larger than `dst` is handed out over several
/// calls; empty chunks are skipped.
pub(crate) struct ChunkSource<I, B> {
    chunks: I,
    current: Option<B>,
    at: usize,
}

impl<I, B> ChunkSource<I, B> {
    pub(crate) fn new(chunks: I) -> Self {
        ChunkSource {
            chunks,
            current: None,
            at: 0,
        }
    }
}

impl<I, B> Fill for ChunkSource<I, B>
where
    I: Iterator<Item = io::Result<B>> + Send,
    B: AsRef<[u8]> + Send,
{
    fn fill(&mut self, dst: &mut [u8]) -> io::Result<usize> {
        loop {
            if let Some(chunk) = &self.current {
                let rest = chunk.as_ref().get(self.at..).unwrap_or_default();
                if !rest.is_empty() {
                    let n = rest.len().min(dst.len());
                    dst[..n].copy_from_slice(&rest[..n]);
                    self.at += n;
                    return Ok(n);
                }
            }
            self.at = 0;
            match self.chunks.next() {
                Some(Ok(chunk)) => self.current = Some(chunk),
                Some(Err(e)) => {
                    self.current = None;
                    return Err(e);
                }
                None => {
                    self.current = None;
                    return Ok(0);
                }
            }
        }
    }
}

/// A source that can read at any offset, from several threads at once: a file, an HTTP server
/// honouring `Range`, an object store's ranged GET.
///
/// A buffer built over one with [`Builder::build_ranged`](crate::Builder::build_ranged) fetches
/// only the segments a read needs, leaving holes elsewhere, and never fetches a byte twice (until
/// it has been evicted). Fetches of different gaps run concurrently, up to
/// [`Builder::max_fetches`](crate::Builder::max_fetches).
///
/// The shape follows [`std::os::unix::fs::FileExt::read_at`]: `&self`, so fetches need no lock
/// around the source, and a short count only at the end of the data.
///
/// # Examples
///
/// ```
/// use std::io::Write;
/// use sparsebuf::StreamBuffer;
///
/// let mut file = tempfile::tempfile()?;
/// file.write_all(&vec![7u8; 1 << 20])?;
/// let buf = StreamBuffer::builder().segment_size(4096).build_ranged(file)?;
/// assert_eq!(buf.len(), Some(1 << 20));
/// assert_eq!(buf.read_range(900_000..900_004)?, [7, 7, 7, 7]);
/// assert_eq!(buf.stats().source_bytes, 4096); // one segment, not the 900 KB before it
/// # Ok::<(), std::io::Error>(())
/// ```
pub trait RangeSource: Send + Sync + 'static {
    /// Reads up to `buf.len()` bytes at `offset`; returns how many. `Ok(0)` for a non-empty
    /// `buf` means `offset` is at or past the end. `Interrupted` is retried by the caller.
    ///
    /// # Errors
    ///
    /// Any I/O error. A failed fetch is reported to the read that needed it and leaves a hole;
    /// a later read of the same bytes asks the source again.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize>;

    /// The total length, if the source knows it. `None` means "found out when `read_at`
    /// returns 0".
    fn len(&self) -> Option<u64>;

    /// Whether the source is known to be empty.
    fn is_empty(&self) -> Option<bool> {
        self.len().map(|len| len == 0)
    }
}

impl RangeSource for std::fs::File {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        std::os::unix::fs::FileExt::read_at(self, buf, offset)
    }

    fn len(&self) -> Option<u64> {
        self.metadata().ok().map(|m| m.len())
    }
}

/// Any [`Read`] + [`Seek`](std::io::Seek) as a [`RangeSource`]: one cursor behind a mutex, so
/// fetches through it take turns (seek, then read).
///
/// # Examples
///
/// ```
/// use std::io::Cursor;
/// use sparsebuf::{SeekSource, StreamBuffer};
///
/// let data: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
/// let buf = StreamBuffer::builder().build_ranged(SeekSource::new(Cursor::new(data.clone())))?;
/// assert_eq!(buf.read_range(70_000..70_010)?, data[70_000..70_010]);
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct SeekSource<R>(crate::sync::Mutex<R>);

impl<R> std::fmt::Debug for SeekSource<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SeekSource").finish_non_exhaustive()
    }
}

impl<R> SeekSource<R> {
    /// Wraps `inner`.
    pub fn new(inner: R) -> Self {
        SeekSource(crate::sync::Mutex::new(inner))
    }

    /// Gives the wrapped reader back.
    pub fn into_inner(self) -> R {
        self.0.into_inner()
    }
}

impl<R: Read + std::io::Seek + Send + 'static> RangeSource for SeekSource<R> {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let mut inner = self.0.lock();
        inner.seek(io::SeekFrom::Start(offset))?;
        inner.read(buf)
    }

    fn len(&self) -> Option<u64> {
        self.0.lock().seek(io::SeekFrom::End(0)).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_are_split_and_empty_ones_skipped() {
        let chunks: Vec<io::Result<Vec<u8>>> =
            vec![Ok(vec![1, 2, 3, 4, 5]), Ok(vec![]), Ok(vec![6])];
        let mut src = ChunkSource::new(chunks.into_iter());
        let mut out = Vec::new();
        let mut buf = [0u8; 2];
        loop {
            let n = src.fill(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        assert_eq!(out, [1, 2, 3, 4, 5, 6]);
    }

    #[test]
    fn chunk_errors_pass_through() {
        let chunks: Vec<io::Result<&[u8]>> =
            vec![Ok(b"ab"), Err(io::Error::from(io::ErrorKind::BrokenPipe))];
        let mut src = ChunkSource::new(chunks.into_iter());
        let mut buf = [0u8; 8];
        assert_eq!(src.fill(&mut buf).unwrap(), 2);
        assert_eq!(
            src.fill(&mut buf).unwrap_err().kind(),
            io::ErrorKind::BrokenPipe
        );
    }
}
