//! Errors: the crate's sticky failure type, and helpers that build `io::Error`s with context.

use std::error::Error as StdError;
use std::sync::Arc;
use std::{fmt, io};

/// Why a [`StreamBuffer`](crate::StreamBuffer) cannot serve bytes past its fill frontier.
///
/// Every fallible call of this crate returns [`std::io::Error`]. When the stream itself has
/// failed, that `io::Error` carries one of these values: get it back with
/// [`io::Error::get_ref`] and `downcast_ref`. For a forward-only stream the failure is
/// *sticky*: once recorded, every reader that needs bytes past the frontier receives a copy with
/// the same [`kind`](Error::kind) and message, while bytes before the frontier stay readable.
/// A [`RangeSource`](crate::RangeSource) can be asked again, so its failures go to the read that
/// met them and leave a hole that the next read retries.
///
/// # Examples
///
/// ```
/// use std::io;
/// use sparsebuf::StreamBuffer;
///
/// let chunks = vec![Ok(vec![1u8; 10]), Err(io::Error::new(io::ErrorKind::ConnectionReset, "peer left"))];
/// let buf = StreamBuffer::from_chunks(chunks);
///
/// let err = buf.fill_to_end().unwrap_err();
/// assert_eq!(err.kind(), io::ErrorKind::ConnectionReset);
/// let inner = err.get_ref().and_then(|e| e.downcast_ref::<sparsebuf::Error>());
/// assert!(matches!(inner, Some(sparsebuf::Error::Source { offset: 10, .. })));
///
/// // The ten bytes before the failure are still there.
/// assert_eq!(buf.read_range(0..10)?, vec![1u8; 10]);
/// # Ok::<(), io::Error>(())
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Error {
    /// The source returned an error other than [`io::ErrorKind::Interrupted`].
    Source {
        /// Stream offset the source was asked to produce when it failed.
        offset: u64,
        /// The source's own error; also available as [`std::error::Error::source`].
        error: Arc<io::Error>,
    },
    /// The source panicked while it was being read.
    SourcePanicked {
        /// Stream offset the source was asked to produce when it panicked.
        offset: u64,
        /// The panic payload, if it was a string.
        message: String,
    },
    /// The source ended before the length declared with
    /// [`Builder::len`](crate::Builder::len).
    EndedEarly {
        /// The declared length.
        declared: u64,
        /// Where the source actually ended.
        actual: u64,
    },
    /// The source produced more bytes than the length declared with
    /// [`Builder::len`](crate::Builder::len).
    RanLong {
        /// The declared length.
        declared: u64,
    },
    /// The read starts before the window of a live stream
    /// ([`Builder::window`](crate::Builder::window)): those bytes were dropped. Its kind is
    /// [`InvalidInput`](io::ErrorKind::InvalidInput).
    BehindWindow {
        /// Where the read started.
        offset: u64,
        /// The first byte still kept.
        window_start: u64,
    },
    /// A read of a live stream ([`Builder::window`](crate::Builder::window)) needs bytes the
    /// source has not produced yet, the budgets are full, and the oldest kept bytes are still
    /// needed by a [`Reader`](crate::Reader) (or a read in progress) of the calling thread:
    /// last read or seeked there, or, if never used, created there. The writer would wait for
    /// that reader to move on, and it never would: the thread is busy here. Its kind is
    /// [`InvalidInput`](io::ErrorKind::InvalidInput). Read on from that cursor, drop it, or
    /// give the buffer larger budgets. (A `wait_for` or `read_range` range larger than the
    /// budgets can hold at once also gets it.)
    WindowFull {
        /// The offset the read needed the source to reach.
        needed: u64,
        /// The offset the calling thread's own reader holds.
        held: u64,
    },
    /// Writing a segment to the spill storage failed. Reported by
    /// [`StreamBuffer::spill_error`](crate::StreamBuffer::spill_error); reads are not affected,
    /// because the segment stays in memory.
    Spill {
        /// Stream offset of the segment that could not be spilled.
        offset: u64,
        /// The storage's own error.
        error: Arc<io::Error>,
    },
}

impl Error {
    /// The [`io::ErrorKind`] this error carries when it is turned into an [`io::Error`].
    ///
    /// Source and spill failures keep the kind of the underlying error; a panicking source is
    /// [`Other`](io::ErrorKind::Other), a short source [`UnexpectedEof`](io::ErrorKind::UnexpectedEof)
    /// and a long one [`InvalidData`](io::ErrorKind::InvalidData).
    pub fn kind(&self) -> io::ErrorKind {
        match self {
            Error::Source { error, .. } | Error::Spill { error, .. } => error.kind(),
            Error::SourcePanicked { .. } => io::ErrorKind::Other,
            Error::EndedEarly { .. } => io::ErrorKind::UnexpectedEof,
            Error::RanLong { .. } => io::ErrorKind::InvalidData,
            Error::BehindWindow { .. } | Error::WindowFull { .. } => io::ErrorKind::InvalidInput,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Source { offset, error } => {
                write!(f, "stream source failed at offset {offset}: {error}")
            }
            Error::SourcePanicked { offset, message } => {
                write!(f, "stream source panicked at offset {offset}: {message}")
            }
            Error::EndedEarly { declared, actual } => write!(
                f,
                "stream source ended at offset {actual}, before its declared length {declared}"
            ),
            Error::RanLong { declared } => {
                write!(
                    f,
                    "stream source produced more than its declared length {declared}"
                )
            }
            Error::Spill { offset, error } => {
                write!(f, "spilling the segment at offset {offset} failed: {error}")
            }
            Error::WindowFull { needed, held } => write!(
                f,
                "the window's budgets are full and a reader on this thread still needs offset \
                 {held}: pulling the stream to offset {needed} would wait for this thread forever"
            ),
            Error::BehindWindow {
                offset,
                window_start,
            } => write!(
                f,
                "offset {offset} is behind the window: bytes before {window_start} were dropped"
            ),
        }
    }
}

impl StdError for Error {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match self {
            Error::Source { error, .. } | Error::Spill { error, .. } => Some(&**error),
            _ => None,
        }
    }
}

impl From<Error> for io::Error {
    fn from(err: Error) -> io::Error {
        io::Error::new(err.kind(), err)
    }
}

/// An `InvalidInput` error for misuse of the API.
pub(crate) fn invalid_input(message: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message.into())
}

/// Wraps `error` with a sentence of context, keeping its kind and its chain of sources.
pub(crate) fn context(error: io::Error, message: impl Into<String>) -> io::Error {
    io::Error::new(
        error.kind(),
        Context {
            message: message.into(),
            source: error,
        },
    )
}

#[derive(Debug)]
struct Context {
    message: String,
    source: io::Error,
}

impl fmt::Display for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.message, self.source)
    }
}

impl StdError for Context {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(&self.source)
    }
}

/// The message of a panic's payload (a `&str` or a `String`, as `panic!` makes them).
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}

/// `offset + len` as the end of a byte range, or `InvalidInput` if it overflows `u64`.
pub(crate) fn range_end(offset: u64, len: usize) -> io::Result<u64> {
    u64::try_from(len)
        .ok()
        .and_then(|len| offset.checked_add(len))
        .ok_or_else(|| invalid_input(format!("offset {offset} + length {len} overflows u64")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_and_source_survive_conversion() {
        let inner = io::Error::new(io::ErrorKind::TimedOut, "slow peer");
        let err: io::Error = Error::Source {
            offset: 7,
            error: Arc::new(inner),
        }
        .into();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(
            err.to_string(),
            "stream source failed at offset 7: slow peer"
        );
        let source = err
            .get_ref()
            .and_then(|e| e.source())
            .map(|e| e.to_string());
        assert_eq!(source.as_deref(), Some("slow peer"));
    }

    #[test]
    fn context_keeps_kind() {
        let err = context(io::Error::from(io::ErrorKind::TimedOut), "saving out.bin");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(err.to_string().starts_with("saving out.bin: "));
    }

    #[test]
    fn range_end_rejects_overflow() {
        assert_eq!(range_end(u64::MAX - 1, 1).unwrap(), u64::MAX);
        let err = range_end(u64::MAX, 1).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }
}
