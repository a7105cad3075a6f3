//! [`Sink`]: where a consumer's chunks go (a file, a web server, an object store), and
//! [`WriteSink`], the adapter for any `io::Write`.

use std::io::{self, Write};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Duration;

use crate::error::panic_message;
use crate::fanout::chunk::Chunk;
use crate::fanout::deliver::Callback;
use crate::fanout::retry::RetryPolicy;
use crate::fanout::stop::Stop;
use crate::sync::Arc;

/// The receiving end of a sink consumer, started with [`Emit::sink`](crate::Emit::sink).
///
/// The consumer calls [`write_chunk`](Sink::write_chunk) with each chunk in order, then
/// [`finish`](Sink::finish) after the last, retrying either as its [`RetryPolicy`] says (so a
/// failed call must leave the sink able to take the same call again). If the
/// stream fails, a chunk fails for good, `finish` fails, or the consumer is dropped, it calls
/// [`abort`](Sink::abort) instead (best effort: its own failure is not reported, the cause is).
///
/// A chunk stays held in the buffer until `write_chunk` returned `Ok` for it, so a windowed
/// stream never drops bytes a sink has yet to take.
///
/// # Examples
///
/// A sink that keeps what it gets (a stand-in for a server):
///
/// ```
/// use std::io::{self, Write};
/// use std::sync::{Arc, Mutex};
/// use sparsebuf::{Sink, StreamBuffer};
///
/// struct Collect(Arc<Mutex<Vec<(u64, usize)>>>);
///
/// impl Sink for Collect {
///     fn write_chunk(&mut self, offset: u64, chunk: &[u8]) -> io::Result<()> {
///         self.0.lock().unwrap().push((offset, chunk.len()));
///         Ok(())
///     }
///     fn finish(&mut self) -> io::Result<()> {
///         Ok(())
///     }
/// }
///
/// let got = Arc::new(Mutex::new(Vec::new()));
/// let (mut writer, buf) = StreamBuffer::builder().build_push()?;
/// let consumer = buf.emit(8192).sink(Collect(got.clone()))?;
/// for _ in 0..5 {
///     writer.write_all(&[0u8; 5000])?;
/// }
/// writer.finish()?;
/// consumer.join()?;
/// // Three full pieces, and the rest when the stream ends.
/// assert_eq!(*got.lock().unwrap(), vec![(0, 8192), (8192, 8192), (16384, 8192), (24576, 424)]);
/// # Ok::<(), io::Error>(())
/// ```
pub trait Sink: Send {
    /// Takes the chunk at `offset` of the stream. Called in order, each byte once, unless an
    /// earlier call for the same chunk failed (then the same chunk comes again).
    fn write_chunk(&mut self, offset: u64, chunk: &[u8]) -> io::Result<()>;

    /// Every chunk was taken: make the result whole (close the upload, send the final
    /// request).
    fn finish(&mut self) -> io::Result<()>;

    /// The delivery failed or was stopped: undo what can be undone (abort a multipart upload).
    /// Best effort; by default nothing.
    fn abort(&mut self) {}
}

impl<S: Sink + ?Sized> Sink for Box<S> {
    fn write_chunk(&mut self, offset: u64, chunk: &[u8]) -> io::Result<()> {
        (**self).write_chunk(offset, chunk)
    }
    fn finish(&mut self) -> io::Result<()> {
        (**self).finish()
    }
    fn abort(&mut self) {
        (**self).abort()
    }
}

/// Any [`Write`] as a [`Sink`]: `write_chunk` is `write_all`, `finish` is `flush`.
///
/// A failed `write_all` may have written part of its chunk, so a retry could repeat bytes: give
/// a sink of this kind a [`RetryPolicy::none`] unless the writer is known to take all or
/// nothing.
///
/// # Examples
///
/// ```
/// use std::io::Write;
/// use sparsebuf::{RetryPolicy, StreamBuffer, WriteSink};
///
/// let dir = tempfile::tempdir()?;
/// let path = dir.path().join("copy.bin");
/// let (mut writer, buf) = StreamBuffer::builder().build_push()?;
/// let file = std::fs::File::create(&path)?;
/// let consumer = buf.emit(4096).retry(RetryPolicy::none()).sink(WriteSink::new(file))?;
/// writer.write_all(b"every byte, once")?;
/// writer.finish()?;
/// consumer.join()?;
/// assert_eq!(std::fs::read(&path)?, b"every byte, once");
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug)]
pub struct WriteSink<W> {
    inner: W,
}

impl<W> WriteSink<W> {
    /// Wraps `inner`.
    pub fn new(inner: W) -> Self {
        WriteSink { inner }
    }

    /// The writer inside.
    pub fn into_inner(self) -> W {
        self.inner
    }
}

impl<W: Write + Send> Sink for WriteSink<W> {
    fn write_chunk(&mut self, _offset: u64, chunk: &[u8]) -> io::Result<()> {
        self.inner.write_all(chunk)
    }

    fn finish(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A sink being fed: aborted when dropped before it finished. A panic in `abort` is caught
/// (and logged): the cause of the abort is what the consumer reports, and an inline consumer's
/// producer must not unwind.
struct Feeding<S: Sink> {
    sink: S,
    finished: bool,
}

impl<S: Sink> Drop for Feeding<S> {
    fn drop(&mut self) {
        if !self.finished {
            let aborted = catch_unwind(AssertUnwindSafe(|| self.sink.abort()));
            if let Err(panic) = aborted {
                let message = panic_message(panic.as_ref());
                log::warn!("sparsebuf: a sink's abort panicked: {message}");
            }
        }
    }
}

/// The serial callback that feeds `sink`: each chunk retried by `policy`, `finish` after the
/// last, `abort` if it is dropped before (a failure, a stop). The waits between retries end
/// early when the consumer is stopped (`stop`), which ends the retries.
pub(crate) fn callback<S: Sink + 'static>(
    sink: S,
    policy: RetryPolicy,
    stop: Arc<Stop>,
) -> Callback<()> {
    let mut feeding = Feeding {
        sink,
        finished: false,
    };
    let pause = move |wait: Duration| !stop.sleep(wait, || false);
    Box::new(move |chunk: Chunk| {
        if !chunk.is_empty() {
            let mut write = || feeding.sink.write_chunk(chunk.offset(), &chunk);
            policy.run_pausing(&mut write, &pause)?;
        }
        if chunk.is_last() {
            policy.run_pausing(&mut || feeding.sink.finish(), &pause)?;
            feeding.finished = true;
        }
        Ok(())
    })
}
