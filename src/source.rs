//! Sources the writer pulls from. The writer is a "filler" role that asks a [`Fill`] for bytes;
//! it is not tied to `Read`, so later sources (push-mode writers, range sources) plug in here.

use std::io::{self, Read};
use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::error::{panic_message, Error};
use crate::sync::Arc;
use crate::validators::Validators;

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

/// Calls a source for at most `len` bytes at `offset`: retries `Interrupted`, and turns errors,
/// counts larger than asked for, and panics into [`Error`]s. The caller drops a source that
/// panicked or, for a stream, that failed.
pub(crate) fn call(
    offset: u64,
    len: usize,
    read: impl FnMut() -> io::Result<usize>,
) -> Result<usize, Error> {
    match call_with(offset, read)? {
        n if n <= len => Ok(n),
        n => Err(Error::Source {
            offset,
            error: Arc::new(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("source claimed {n} bytes read into a {len}-byte buffer"),
            )),
        }),
    }
}

/// Calls a source about `offset`: retries `Interrupted`, and turns errors and panics into
/// [`Error`]s.
pub(crate) fn call_with<T>(
    offset: u64,
    mut call: impl FnMut() -> io::Result<T>,
) -> Result<T, Error> {
    loop {
        let error = match catch_unwind(AssertUnwindSafe(&mut call)) {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
            Ok(Err(e)) => e,
            Err(payload) => {
                return Err(Error::SourcePanicked {
                    offset,
                    message: panic_message(payload.as_ref()),
                })
            }
        };
        return Err(Error::Source {
            offset,
            error: Arc::new(error),
        });
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

    /// Reads at `offset` into `bufs`, in order, as one read of their total length would; returns
    /// how many bytes it read (filling the buffers front to back). Like `read_at`, it may read
    /// less than asked; `Ok(0)` means `offset` is at or past the end.
    ///
    /// A fetch of several adjacent segments calls this once for the run, so a source whose
    /// requests are costly (a ranged `GET`) should answer with one request. The default reads
    /// into the first non-empty buffer only.
    ///
    /// # Errors
    ///
    /// As [`read_at`](RangeSource::read_at).
    fn read_vectored_at(&self, offset: u64, bufs: &mut [&mut [u8]]) -> io::Result<usize> {
        match bufs.iter_mut().find(|b| !b.is_empty()) {
            Some(buf) => self.read_at(offset, buf),
            None => Ok(0),
        }
    }

    /// Opens a forward stream of the bytes from `offset`: `len` of them, or (`None`) up to the
    /// end. Over a network this is one response read as it arrives (a `GET` with
    /// `Range: bytes=offset-`), so a buffer reading sequentially pays one round trip per
    /// response instead of one per fetch.
    ///
    /// The buffer publishes each segment as soon as its bytes came out of the stream, keeps the
    /// stream open while reads stay ahead of it (the next fetch that starts where it is goes on
    /// reading it), and drops it when it runs into bytes already filled, when it is not read for
    /// a while, or on an error. The stream must give exactly the bytes `read_at` would; it may
    /// end early only at the end of the data (the buffer never reads past `len`).
    ///
    /// `Ok(None)`, the default: the source has no streams of its own, and each fetch is one
    /// [`read_vectored_at`](RangeSource::read_vectored_at) of the missing run, as before. A file
    /// answers with a descriptor of its own read with `pread`; URL sources and `ObjectSource`
    /// (feature `object-store`) with one streamed response.
    ///
    /// # Errors
    ///
    /// As [`read_at`](RangeSource::read_at): the fetch that opened the stream fails with it.
    fn open_at(&self, offset: u64, len: Option<u64>) -> io::Result<Option<Box<dyn Read + Send>>> {
        let _ = (offset, len);
        Ok(None)
    }

    /// The total length, if the source knows it. `None` means "found out when `read_at`
    /// returns 0".
    fn len(&self) -> Option<u64>;

    /// Whether the source is known to be empty.
    fn is_empty(&self) -> Option<bool> {
        self.len().map(|len| len == 0)
    }

    /// What identifies the version of the resource this source reads (an entity tag, a
    /// modification time), if it knows: [`StreamBuffer::validators`](crate::StreamBuffer::validators)
    /// gives it back, and the Range server sends it as `ETag` and `Last-Modified`. The default
    /// knows nothing. A file's are its length, modification time and inode.
    fn validators(&self) -> Validators {
        Validators::default()
    }

    /// The media type of the resource (`video/mp4`), if the source knows it: a URL's
    /// `Content-Type`. [`StreamBuffer::content_type`](crate::StreamBuffer::content_type) gives
    /// it back, and the Range server sends it. The default knows nothing.
    fn content_type(&self) -> Option<String> {
        None
    }
}

impl RangeSource for std::fs::File {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        std::os::unix::fs::FileExt::read_at(self, buf, offset)
    }

    /// One `preadv`.
    fn read_vectored_at(&self, offset: u64, bufs: &mut [&mut [u8]]) -> io::Result<usize> {
        let mut slices: Vec<io::IoSliceMut<'_>> =
            bufs.iter_mut().map(|b| io::IoSliceMut::new(b)).collect();
        Ok(rustix::io::preadv(self, &mut slices, offset)?)
    }

    /// A descriptor of its own (`dup`), read from `offset` with `pread`.
    fn open_at(&self, offset: u64, len: Option<u64>) -> io::Result<Option<Box<dyn Read + Send>>> {
        let file = self.try_clone()?;
        let end = len.map_or(u64::MAX, |len| offset.saturating_add(len));
        Ok(Some(Box::new(FileStream {
            file,
            pos: offset,
            end,
        })))
    }

    fn len(&self) -> Option<u64> {
        self.metadata().ok().map(|m| m.len())
    }

    fn validators(&self) -> Validators {
        self.metadata()
            .map(|m| Validators::of_file(&m))
            .unwrap_or_default()
    }
}

/// A file's stream: `pread`s from `pos`, up to `end`, on a descriptor of its own (no shared
/// file offset to race over).
struct FileStream {
    file: std::fs::File,
    pos: u64,
    end: u64,
}

impl Read for FileStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.read_vectored(&mut [io::IoSliceMut::new(buf)])
    }

    /// One `preadv`, cut at `end`.
    fn read_vectored(&mut self, bufs: &mut [io::IoSliceMut<'_>]) -> io::Result<usize> {
        let mut room = self.end.saturating_sub(self.pos);
        let mut slices: Vec<io::IoSliceMut<'_>> = Vec::with_capacity(bufs.len());
        for buf in bufs.iter_mut() {
            if room == 0 {
                break;
            }
            let take = (buf.len() as u64).min(room) as usize;
            room -= take as u64;
            slices.push(io::IoSliceMut::new(&mut buf[..take]));
        }
        if slices.iter().all(|s| s.is_empty()) {
            return Ok(0);
        }
        let n = rustix::io::preadv(&self.file, &mut slices, self.pos)?;
        self.pos += n as u64;
        Ok(n)
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
    use std::any::Any;

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
    fn call_retries_interrupted_and_reports_panics_and_bad_counts() {
        let mut tries = 0;
        let n = call(0, 8, || {
            tries += 1;
            if tries < 3 {
                Err(io::ErrorKind::Interrupted.into())
            } else {
                Ok(5)
            }
        });
        assert_eq!((n.unwrap(), tries), (5, 3));
        assert!(matches!(
            call(7, 4, || Ok(5)),
            Err(Error::Source { offset: 7, .. })
        ));
        for (payload, want) in [
            (Box::new("plain") as Box<dyn Any + Send>, "plain"),
            (Box::new(String::from("formatted 7")), "formatted 7"),
            (Box::new(5u8), "non-string panic payload"),
        ] {
            let mut payload = Some(payload);
            let got = call(9, 1, || std::panic::resume_unwind(payload.take().unwrap()));
            assert!(
                matches!(got, Err(Error::SourcePanicked { offset: 9, ref message }) if message == want),
                "{got:?}"
            );
        }
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
