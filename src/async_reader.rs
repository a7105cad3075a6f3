//! [`AsyncReader`]: a tokio cursor over a [`StreamBuffer`], and
//! [`StreamBuffer::read_at_async`] (feature `tokio`).

use std::fmt;
use std::future::poll_fn;
use std::io::{self, SeekFrom};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncBufRead, AsyncRead, AsyncSeek, ReadBuf};

use crate::buffer::StreamBuffer;
use crate::engine::blocking::Blocking;
use crate::engine::holds::CursorHold;
use crate::engine::poll::Polled;
use crate::engine::shared::Want;
use crate::error::{invalid_input, range_end};
use crate::reader::in_chunk;

/// The most a cursor asks the buffer for at once (its chunk for `AsyncBufRead`).
const CAPACITY: usize = 64 * 1024;

/// An independent async cursor over a [`StreamBuffer`]: tokio's [`AsyncRead`], [`AsyncSeek`]
/// and [`AsyncBufRead`], made by [`StreamBuffer::async_reader`].
///
/// It reads the same store as the buffer's other handles, sync or async, and never blocks the
/// thread that polls it:
/// - filled bytes are copied at once;
/// - bytes a forward-only stream has not produced yet are pulled by a background thread (one
///   per buffer, for all its async cursors), while the task waits on a waker woken by the next
///   publish; a push stream's cursor waits for its [`Writer`](crate::Writer) the same way;
/// - bytes of a range source are fetched on tokio's blocking pool (or a thread of their own
///   outside a runtime).
///
/// Every future and poll is cancellation-safe: dropping one loses no bytes and leaves no
/// registration behind that matters (a fetch under way completes for the buffer's other
/// readers). On a windowed stream the cursor holds the bytes it will read next, as a
/// [`Reader`](crate::Reader) does; the hold belongs to the cursor, not to a thread, since tasks
/// move between threads.
///
/// `SeekFrom::End` on a stream of unknown length waits (on a blocking thread) for the stream to
/// end, as [`Reader`](crate::Reader)'s seek does.
///
/// ```
/// use sparsebuf::StreamBuffer;
/// use tokio::io::{AsyncReadExt, AsyncSeekExt};
/// use std::io::SeekFrom;
///
/// # let runtime = tokio::runtime::Builder::new_current_thread().build()?;
/// # runtime.block_on(async {
/// let buffer = StreamBuffer::new(std::io::Cursor::new(b"hello, async world".to_vec()));
/// let mut cursor = buffer.async_reader();
/// cursor.seek(SeekFrom::Start(7)).await?;
/// let mut word = [0u8; 5];
/// cursor.read_exact(&mut word).await?;
/// assert_eq!(&word, b"async");
///
/// let mut rest = Vec::new();
/// cursor.read_to_end(&mut rest).await?;
/// assert_eq!(rest, b" world");
/// # Ok::<(), std::io::Error>(())
/// # })?;
/// # Ok::<(), std::io::Error>(())
/// ```
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
pub struct AsyncReader {
    buffer: StreamBuffer,
    /// Our hold, on a windowed stream: the next byte we will ask the buffer for.
    hold: CursorHold,
    pos: u64,
    /// Bytes read ahead of `pos` for `AsyncBufRead`: `chunk[start..end]` are those at `pos`.
    chunk: Vec<u8>,
    start: usize,
    end: usize,
    /// A range source's fetch under way, for the bytes at the offset given.
    fetch: Option<(u64, Blocking<Vec<u8>>)>,
    /// A seek under way: `SeekFrom::End` waiting for the length, with the offset from it.
    seek: Option<Seeking>,
    /// This cursor's key for its waker (see `Publish::register`), taken out when it is dropped.
    key: u64,
}

enum Seeking {
    /// Resolved in `start_seek`.
    Done(io::Result<u64>),
    /// Waiting for the stream to end, to seek this far from it.
    FromEnd(Blocking<u64>, i64),
}

impl AsyncReader {
    pub(crate) fn new(buffer: StreamBuffer, pos: u64) -> Self {
        let shared = buffer.shared();
        let hold = CursorHold::new(shared.holds(), shared.is_windowed(), pos, false);
        let key = shared.publish().key();
        AsyncReader {
            buffer,
            hold,
            pos,
            chunk: Vec::new(),
            start: 0,
            end: 0,
            fetch: None,
            seek: None,
            key,
        }
    }

    /// The offset of the next byte this cursor reads.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// The buffer this cursor reads.
    pub fn get_ref(&self) -> &StreamBuffer {
        &self.buffer
    }

    fn buffered(&self) -> usize {
        self.end - self.start
    }

    fn update_hold(&self) {
        let next = self.pos + self.buffered() as u64;
        self.hold.set(self.buffer.shared().holds(), next);
    }

    /// Reads at `self.pos` into `dst` (at least one byte, or 0 at the end), without moving.
    fn poll_at(&mut self, cx: &mut Context<'_>, dst: &mut [u8]) -> Poll<io::Result<usize>> {
        let room = usize::try_from(u64::MAX - self.pos).unwrap_or(usize::MAX);
        let dst_len = dst.len().min(room);
        let dst = &mut dst[..dst_len];
        loop {
            if let Some((at, fetch)) = &mut self.fetch {
                let (at, fetched) = (*at, ready!(fetch.poll(cx)));
                self.fetch = None;
                // A fetch for where the cursor was before a seek: its bytes are in the buffer
                // now (if the budgets kept them); read from there.
                if at != self.pos {
                    continue;
                }
                let data = fetched?;
                let n = data.len().min(dst.len());
                dst[..n].copy_from_slice(&data[..n]);
                return Poll::Ready(Ok(n));
            }
            let shared = self.buffer.shared();
            match shared.poll_some(self.pos, dst, self.key, cx.waker()) {
                Polled::Ready(done) => return Poll::Ready(done),
                Polled::Pending => return Poll::Pending,
                Polled::Blocking => {
                    let (shared, pos) = (self.buffer.shared_arc(), self.pos);
                    let len = dst.len().min(CAPACITY);
                    let fetch = Blocking::spawn(move || {
                        let mut data = vec![0u8; len];
                        let n = shared.read_inner(pos, &mut data, Want::Some)?;
                        data.truncate(n);
                        Ok(data)
                    })?;
                    self.fetch = Some((pos, fetch));
                }
            }
        }
    }

    /// Moves to `target`, keeping the chunk if the target is in it.
    fn move_to(&mut self, target: u64) {
        let kept = in_chunk(self.pos, self.start, self.end, target);
        self.pos = target;
        match kept {
            Some(at) => self.start = at,
            None => {
                (self.start, self.end) = (0, 0);
                self.update_hold();
            }
        }
    }

    fn seek_target(&self, from: u64, delta: i64, to: SeekFrom) -> io::Result<u64> {
        from.checked_add_signed(delta).ok_or_else(|| {
            invalid_input(format!(
                "seek from position {} by {to:?} leaves 0..=u64::MAX",
                self.pos
            ))
        })
    }
}

impl AsyncRead for AsyncReader {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        if this.buffered() == 0 && buf.remaining() >= CAPACITY {
            // Straight into the caller's buffer.
            let n = ready!(this.poll_at(cx, buf.initialize_unfilled()))?;
            buf.advance(n);
            (this.start, this.end) = (0, 0);
            this.pos += n as u64;
            this.update_hold();
            return Poll::Ready(Ok(()));
        }
        let available = ready!(Pin::new(&mut *this).poll_fill_buf(cx))?;
        let n = available.len().min(buf.remaining());
        buf.put_slice(&available[..n]);
        Pin::new(this).consume(n);
        Poll::Ready(Ok(()))
    }
}

impl AsyncBufRead for AsyncReader {
    fn poll_fill_buf(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<&[u8]>> {
        let this = self.get_mut();
        if this.buffered() == 0 {
            let mut chunk = std::mem::take(&mut this.chunk);
            chunk.resize(CAPACITY, 0);
            let polled = this.poll_at(cx, &mut chunk);
            this.chunk = chunk;
            let n = ready!(polled)?;
            (this.start, this.end) = (0, n);
            this.update_hold();
        }
        Poll::Ready(Ok(&this.chunk[this.start..this.end]))
    }

    fn consume(self: Pin<&mut Self>, amt: usize) {
        let this = self.get_mut();
        let amt = amt.min(this.buffered());
        this.start += amt;
        this.pos += amt as u64;
    }
}

impl AsyncSeek for AsyncReader {
    fn start_seek(self: Pin<&mut Self>, to: SeekFrom) -> io::Result<()> {
        let this = self.get_mut();
        if this.seek.is_some() {
            return Err(io::Error::other(
                "a seek is already under way on this cursor",
            ));
        }
        let target = match to {
            SeekFrom::Start(n) => Ok(n),
            SeekFrom::Current(delta) => this.seek_target(this.pos, delta, to),
            SeekFrom::End(delta) => match this.buffer.len() {
                Some(len) => this.seek_target(len, delta, to),
                None => {
                    let buffer = this.buffer.clone();
                    let end = Blocking::spawn(move || buffer.fill_to_end())?;
                    this.seek = Some(Seeking::FromEnd(end, delta));
                    return Ok(());
                }
            },
        };
        this.seek = Some(Seeking::Done(target));
        Ok(())
    }

    fn poll_complete(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<u64>> {
        let this = self.get_mut();
        let target = match this.seek.take() {
            None => return Poll::Ready(Ok(this.pos)),
            Some(Seeking::Done(target)) => target,
            Some(Seeking::FromEnd(mut end, delta)) => match end.poll(cx) {
                Poll::Pending => {
                    this.seek = Some(Seeking::FromEnd(end, delta));
                    return Poll::Pending;
                }
                Poll::Ready(len) => {
                    len.and_then(|len| this.seek_target(len, delta, SeekFrom::End(delta)))
                }
            },
        };
        let target = target?;
        this.move_to(target);
        Poll::Ready(Ok(target))
    }
}

impl Drop for AsyncReader {
    fn drop(&mut self) {
        let shared = self.buffer.shared();
        shared.publish().forget(self.key);
        self.hold.release(shared.holds());
    }
}

impl fmt::Debug for AsyncReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncReader")
            .field("pos", &self.pos)
            .field("buffered", &self.buffered())
            .finish_non_exhaustive()
    }
}

impl StreamBuffer {
    /// An async cursor at offset 0 (feature `tokio`); see [`AsyncReader`].
    #[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
    pub fn async_reader(&self) -> AsyncReader {
        AsyncReader::new(self.clone(), 0)
    }

    /// For loom models only: joins the threads that pulled for async cursors.
    #[cfg(loom)]
    #[doc(hidden)]
    pub fn join_pulling_threads(&self) {
        self.shared().join_pulling();
    }

    /// An async cursor at `offset` (feature `tokio`).
    #[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
    pub fn async_reader_at(&self, offset: u64) -> AsyncReader {
        AsyncReader::new(self.clone(), offset)
    }

    /// [`read_at`](StreamBuffer::read_at) for async code (feature `tokio`): fills `buf` with
    /// the bytes at `offset`, short only at the end of the stream, without blocking the thread
    /// that polls it. Filled bytes are copied at once, as by `read_at`; for the others it waits
    /// as an [`AsyncReader`] does. Cancellation-safe: dropping the future loses nothing.
    ///
    /// ```
    /// use sparsebuf::StreamBuffer;
    ///
    /// # let runtime = tokio::runtime::Builder::new_current_thread().build()?;
    /// # runtime.block_on(async {
    /// let (mut writer, buffer) = StreamBuffer::builder().build_push()?;
    /// let producer = tokio::spawn(async move {
    ///     use tokio::io::AsyncWriteExt;
    ///     writer.write_all(b"pushed from a task").await?;
    ///     writer.shutdown().await // finishes the stream
    /// });
    /// let mut word = [0u8; 4];
    /// assert_eq!(buffer.read_at_async(7, &mut word).await?, 4);
    /// assert_eq!(&word, b"from");
    /// producer.await??;
    /// assert_eq!(buffer.len(), Some(18));
    /// # Ok::<(), std::io::Error>(())
    /// # })?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    #[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
    pub async fn read_at_async(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let end = range_end(offset, buf.len())?;
        let shared = self.shared();
        if let Some(done) = shared.read_filled(offset, end, buf, Want::All) {
            if let Ok(n) = done {
                shared.after_read(offset, n);
            }
            return done;
        }
        // Piece by piece, holding the position reached (as a windowed `read_at` does).
        let mut cursor = self.async_reader_at(offset);
        let mut filled = 0;
        while filled < buf.len() {
            let n = poll_fn(|cx| cursor.poll_at(cx, &mut buf[filled..])).await?;
            if n == 0 {
                break;
            }
            filled += n;
            cursor.pos += n as u64;
            cursor.update_hold();
        }
        Ok(filled)
    }
}
