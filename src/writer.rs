//! [`Writer`]: the producer of a push stream, made by [`Builder::build_push`](crate::Builder::build_push).

use std::fmt;
use std::io;

use crate::buffer::StreamBuffer;
use crate::engine::append::Appender;
use crate::engine::holds::Blocked;
use crate::engine::shared::Shared;
use crate::error::Error;
use crate::sync::Arc;

/// The only producer of a push stream: an [`io::Write`] whose bytes readers of the paired
/// [`StreamBuffer`] see as soon as each `write` returns.
///
/// Made by [`Builder::build_push`](crate::Builder::build_push). Everything else works as for a pulled stream: budgets and
/// spilling, [`save`](StreamBuffer::save), cursors, `read_at` from any thread. Readers that need
/// bytes past what was written wait for the `Writer` (they never produce anything themselves).
///
/// The stream ends with [`finish`](Writer::finish), which makes its length known. It fails with
/// [`fail`](Writer::fail), or when the `Writer` is dropped without `finish` (an error of kind
/// [`UnexpectedEof`](io::ErrorKind::UnexpectedEof)), never a silent clean end: like a source
/// error, the failure is sticky and reaches every reader that needs bytes past the last write,
/// while the bytes written stay readable.
///
/// # Windows and backpressure
///
/// With a [`window`](crate::Builder::window) that the budgets cannot hold, a `write` that finds no room
/// **waits** for readers to move on (or go away) instead of dropping bytes they have yet to
/// read; so it does for fan-out consumers ([`StreamBuffer::emit`]), which also hold the window
/// itself: a write never slides it past a consumer that has not taken its bytes. If a cursor in the way belongs to the writing thread, waiting would never end: the
/// `write` then returns what it took so far (a short count), or, if it took nothing,
/// [`Error::WindowFull`] (kind [`InvalidInput`](io::ErrorKind::InvalidInput)). The `Writer`
/// stays usable.
///
/// # Examples
///
/// ```
/// use std::io::{Read, Write};
/// use sparsebuf::StreamBuffer;
///
/// let (mut writer, buf) = StreamBuffer::builder().build_push()?;
/// let reader = {
///     let buf = buf.clone();
///     std::thread::spawn(move || {
///         let mut all = Vec::new();
///         buf.reader().read_to_end(&mut all).map(|_| all) // waits for `finish`
///     })
/// };
/// for frame in 0..100u8 {
///     writer.write_all(&[frame; 480])?;
/// }
/// assert_eq!(writer.finish()?, 48_000);
/// let all = reader.join().unwrap()?;
/// assert_eq!(all.len(), 48_000);
/// assert_eq!(all[47_999], 99);
/// assert_eq!(buf.len(), Some(48_000));
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct Writer {
    shared: Arc<Shared>,
    appender: Appender,
    fate: Fate,
}

/// Whether the stream is still being written.
enum Fate {
    Open,
    Finished,
    /// Failed (by `fail`, or by a write past a declared length): the stream's error.
    Failed(Error),
}

impl Writer {
    /// The writer of a push buffer's shared state (made by `Builder::build_push`).
    pub(crate) fn new(buffer: &StreamBuffer) -> Self {
        Writer {
            shared: buffer.shared_arc(),
            appender: Appender::new(),
            fate: Fate::Open,
        }
    }

    /// Ends the stream: its length becomes known, and readers waiting past it get `Ok(0)` or
    /// a short count. Returns the length.
    ///
    /// # Errors
    ///
    /// [`Error::EndedEarly`] if a declared length is longer than what was written (the stream
    /// then fails with it); the stream's error if it had already failed (a write past a
    /// declared length).
    pub fn finish(mut self) -> io::Result<u64> {
        self.finish_in_place()
    }

    /// Ends the stream with `error`: every reader that needs bytes past what was written, now
    /// or later, gets an error of the same kind and message (see [`Error::Source`]). The bytes
    /// written stay readable.
    pub fn fail(mut self, error: io::Error) {
        self.fail_with(Error::Source {
            offset: self.appender.frontier(),
            error: Arc::new(error),
        });
    }

    /// How many bytes were written so far.
    pub fn position(&self) -> u64 {
        self.appender.frontier()
    }

    /// The buffer this writer fills.
    pub fn buffer(&self) -> StreamBuffer {
        StreamBuffer::from_shared(self.shared.clone())
    }

    fn fail_with(&mut self, error: Error) {
        if let Fate::Open = self.fate {
            self.appender.fail(&self.shared, error.clone());
            self.fate = Fate::Failed(error);
        }
    }

    /// The stream's error, once the `Writer` failed it.
    fn failure(&self) -> Option<io::Error> {
        match &self.fate {
            Fate::Failed(error) => Some(error.clone().into()),
            _ => None,
        }
    }

    /// Appends as much of `buf` as the budgets allow; see [`Write::write`](io::Write::write).
    /// Appends `buf` (or a prefix of it). A full window makes a thread wait for readers to move
    /// on; with `wait` false it returns what it appended instead, and `Err(blocked)` if that
    /// is nothing yet (for [`Holds::register`](crate::engine::holds::Holds)).
    pub(crate) fn append(&mut self, buf: &[u8], wait: bool) -> Result<io::Result<usize>, Blocked> {
        let shared = &*self.shared;
        let mut written = 0;
        while written < buf.len() {
            match self.appender.append(shared, &buf[written..], true) {
                Ok(Some(n)) => written += n,
                Ok(None) => {
                    // Past a declared length: the stream runs long, which fails it.
                    let declared = self.appender.frontier();
                    self.fail_with(Error::RanLong { declared });
                    break;
                }
                Err(blocked) if !wait && blocked.own.is_none() => {
                    if written == 0 {
                        return Err(blocked);
                    }
                    break;
                }
                Err(blocked) => {
                    let needed = self.appender.frontier() + 1;
                    if let Err(full) = shared.wait_for_room(blocked, needed, true) {
                        // This thread's own cursor is in the way: what was taken, or the error.
                        if written == 0 {
                            return Ok(Err(full));
                        }
                        break;
                    }
                }
            }
        }
        if written < buf.len() {
            // A short write still ends a write where it stopped.
            self.appender.commit(&self.shared, 0, true);
        }
        Ok(Ok(written))
    }

    /// `io::Write::write` with `wait` as for [`append`](Writer::append).
    pub(crate) fn write_some(
        &mut self,
        buf: &[u8],
        wait: bool,
    ) -> Result<io::Result<usize>, Blocked> {
        if let Some(error) = self.failure() {
            return Ok(Err(error));
        }
        if let Fate::Finished = self.fate {
            return Ok(Err(crate::error::invalid_input(
                "write to a push Writer after its stream was finished",
            )));
        }
        let written = self.append(buf, wait);
        Ok(match written? {
            Ok(0) if !buf.is_empty() => self.failure().map_or(Ok(0), Err),
            other => other,
        })
    }

    /// [`finish`](Writer::finish) in place (for `AsyncWrite::poll_shutdown`): the length, or
    /// the stream's error. Finishing again returns the same.
    pub(crate) fn finish_in_place(&mut self) -> io::Result<u64> {
        if let Fate::Failed(error) = &self.fate {
            return Err(error.clone().into());
        }
        if let Fate::Open = self.fate {
            self.fate = Fate::Finished;
            self.appender.finish(&self.shared);
        }
        match self.shared.failure() {
            Some(error) => Err(error),
            None => Ok(self.shared.len().unwrap_or(0)),
        }
    }

    #[cfg(feature = "tokio")]
    pub(crate) fn shared(&self) -> &Shared {
        &self.shared
    }
}

impl io::Write for Writer {
    /// Copies `buf` into the buffer and publishes it: readers see the bytes when this returns.
    /// Accepts all of `buf` unless a window's budgets are full of bytes a cursor of this very
    /// thread still needs, or `buf` runs past a declared length (then a short count, or an
    /// error if nothing was taken).
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self.write_some(buf, true) {
            Ok(written) => written,
            // Unreachable: a waiting write never gives up for a full window.
            Err(_) => Ok(0),
        }
    }

    /// Nothing to do: every `write` publishes at once.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for Writer {
    /// Dropping a `Writer` without [`finish`](Writer::finish) fails the stream (kind
    /// [`UnexpectedEof`](io::ErrorKind::UnexpectedEof)): readers never mistake it for a clean
    /// end.
    fn drop(&mut self) {
        let offset = self.appender.frontier();
        self.fail_with(Error::Source {
            offset,
            error: Arc::new(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the push Writer was dropped without finish",
            )),
        });
    }
}

impl fmt::Debug for Writer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Writer")
            .field("position", &self.appender.frontier())
            .field("open", &matches!(self.fate, Fate::Open))
            .finish()
    }
}
