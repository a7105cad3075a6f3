//! [`Emit`]: the builder of one fan-out consumer, made by
//! [`StreamBuffer::emit`](crate::StreamBuffer::emit).

use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::time::Duration;

use crate::buffer::StreamBuffer;
use crate::error::invalid_input;
use crate::fanout::chunk::Chunk;
use crate::fanout::consumer::{self, Consumer, Plan, Where};
use crate::fanout::pool::Pool;
use crate::fanout::retry::RetryPolicy;
use crate::fanout::sink::{self, Sink};
use crate::fanout::stop::Stop;

/// Marker of an [`Emit`] whose callback gets one chunk at a time (`FnMut`).
#[derive(Debug)]
pub enum Serial {}

/// Marker of an [`Emit`] whose callback may get several chunks at once (`Fn + Sync`); see
/// [`Emit::parallel`].
#[derive(Debug)]
pub enum Parallel {}

/// One consumer of a buffer, to be started: it gets the stream in chunks of its own size, at
/// its own pace, through a callback.
///
/// Made by [`StreamBuffer::emit`](crate::StreamBuffer::emit); [`start`](Emit::start) starts
/// it. Any number of consumers may read one buffer, each with its own chunk size and options.
/// `T` is what the callback returns on success (handed to [`on_done`](Emit::on_done)).
///
/// **Where a consumer starts.** At [`window_start`](StreamBuffer::window_start), the oldest
/// byte still there (0 without a window), when `start` is called. The bytes before it count as
/// skipped in its [`Report`](crate::Report).
///
/// **Chunks.** With [`clip(true)`](Emit::clip) (the default) every chunk but the last has
/// exactly `chunk_size` bytes; with `clip(false)` a chunk is the fewest whole writes that reach
/// `chunk_size`. The rest of the stream always comes as a last, shorter chunk
/// ([`Chunk::is_last`](crate::Chunk::is_last)); if the stream ends right after a full chunk
/// that was sent before the end was known, the last chunk is empty. A failed stream delivers
/// every complete chunk before the failure, and the consumer ends with the stream's error.
///
/// **Backpressure.** A consumer holds the bytes it has not taken yet: a buffer's budgets do not
/// drop them and a window does not slide past them, so the writer of a windowed stream waits
/// for its slowest consumer and memory stays within the budgets. A [`lagging`](Emit::lagging)
/// consumer holds nothing: it skips to the window start when it falls behind it.
///
/// **Errors.** A callback's `Err` or panic stops that consumer only: its hold goes, the others
/// go on, and [`Consumer::join`] returns the error.
///
/// # Examples
///
/// A level meter every 480 bytes and a writer of 1000-byte pieces, on one pushed stream:
///
/// ```
/// use std::io::Write;
/// use sparsebuf::StreamBuffer;
///
/// let (mut writer, buf) = StreamBuffer::builder().build_push()?;
/// let meter = buf
///     .emit(480)
///     .run_inline() // on the writing thread, which pays for it
///     .start(|chunk| Ok(chunk.iter().copied().max().unwrap_or(0)))?;
/// let pieces = buf.emit(1000).start(|chunk| Ok(chunk.to_vec()))?;
///
/// for frame in 0..50u8 {
///     writer.write_all(&[frame; 96])?;
/// }
/// writer.finish()?;
///
/// let report = meter.join()?;
/// assert_eq!((report.chunks, report.bytes, report.skipped), (11, 4800, 0)); // 10 full, 1 empty last
/// assert_eq!(pieces.join()?.chunks, 5);
/// # Ok::<(), std::io::Error>(())
/// ```
#[must_use = "an Emit does nothing until it is started"]
pub struct Emit<T = (), M = Serial> {
    buffer: StreamBuffer,
    chunk_size: usize,
    clip: bool,
    place: Where,
    parallel: usize,
    lagging: bool,
    on_done: Option<Box<dyn FnMut(T) + Send>>,
    sampler: Option<Box<dyn FnMut() -> Duration + Send>>,
    retry: RetryPolicy,
    mode: PhantomData<M>,
}

impl StreamBuffer {
    /// A fan-out consumer of this buffer, to be configured and started: it gets the stream in
    /// chunks of `chunk_size` bytes, from [`window_start`](StreamBuffer::window_start) on, at
    /// its own pace. See [`Emit`] for the options and the guarantees. `T`, what the callback
    /// returns, is usually inferred from the callback.
    ///
    /// Works on every kind of buffer: a push stream's consumers wait for its
    /// [`Writer`](crate::Writer); a consumer of a pulled stream pulls, as a reader would; a
    /// range source's consumer fetches what it needs.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::io::Cursor;
    /// use std::sync::{Arc, Mutex};
    /// use sparsebuf::StreamBuffer;
    ///
    /// let data: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
    /// let buf = StreamBuffer::new(Cursor::new(data.clone()));
    /// let got = Arc::new(Mutex::new(Vec::new()));
    /// let sink = got.clone();
    /// let consumer = buf
    ///     .emit(4096)
    ///     .on_done(move |piece: Vec<u8>| sink.lock().unwrap().extend(piece))
    ///     .start(|chunk| Ok(chunk.to_vec()))?;
    /// let report = consumer.join()?; // the consumer pulled the whole stream
    /// assert_eq!((report.chunks, report.bytes), (3, 10_000));
    /// assert_eq!(*got.lock().unwrap(), data);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn emit<T>(&self, chunk_size: usize) -> Emit<T> {
        Emit::new(self.clone(), chunk_size)
    }
}

impl<T> Emit<T, Serial> {
    pub(crate) fn new(buffer: StreamBuffer, chunk_size: usize) -> Self {
        Emit {
            buffer,
            chunk_size,
            clip: true,
            place: Where::Thread,
            parallel: 1,
            lagging: false,
            on_done: None,
            sampler: None,
            retry: RetryPolicy::default(),
            mode: PhantomData,
        }
    }

    /// Lets up to `n` callbacks run at once (on the pool, or on `n` threads of the consumer's
    /// own), for callbacks that can share their state (`Fn + Sync`). Chunks are still cut in
    /// order, and their results reach [`on_done`](Emit::on_done) in chunk order. An inline
    /// consumer cannot run callbacks in parallel; `n == 0` is invalid
    /// ([`start`](Emit::start) then fails with [`InvalidInput`](io::ErrorKind::InvalidInput)).
    pub fn parallel(self, n: usize) -> Emit<T, Parallel> {
        Emit {
            buffer: self.buffer,
            chunk_size: self.chunk_size,
            clip: self.clip,
            place: self.place,
            parallel: n,
            lagging: self.lagging,
            on_done: self.on_done,
            sampler: self.sampler,
            retry: self.retry,
            mode: PhantomData,
        }
    }

    /// Starts the consumer: `callback` gets each chunk, in order, one at a time.
    ///
    /// # Errors
    ///
    /// [`InvalidInput`](io::ErrorKind::InvalidInput) for a `chunk_size` of 0, or for
    /// [`run_inline`](Emit::run_inline) on a buffer over a range source (whose bytes have no
    /// single producing thread); the error of [`std::thread::Builder::spawn`] if the consumer's
    /// thread cannot be started.
    pub fn start<F>(self, callback: F) -> io::Result<Consumer>
    where
        F: FnMut(Chunk) -> io::Result<T> + Send + 'static,
        T: Send + 'static,
    {
        let (plan, on_done, sampler) = self.plan(false)?;
        consumer::start_serial(plan, Box::new(callback), on_done, sampler)
    }
}

impl Emit<(), Serial> {
    /// Starts a consumer that hands its chunks to `sink`: each chunk with
    /// [`Sink::write_chunk`], retried as [`retry`](Emit::retry) says (by default
    /// [`RetryPolicy::default`]), then [`Sink::finish`] after the last. A chunk stays held in
    /// the buffer until the sink took it. If the stream fails, a chunk fails for good, `finish`
    /// fails or the consumer is dropped, the sink is aborted ([`Sink::abort`]) and
    /// [`Consumer::join`] returns the cause. [`on_done`](Emit::on_done) gets `()` per chunk.
    ///
    /// # Errors
    ///
    /// As for [`start`](Emit::start); also [`InvalidInput`](io::ErrorKind::InvalidInput) on a
    /// windowed stream whose window or budgets cannot hold a chunk and two more segments (the
    /// writer could then never complete a chunk the sink holds back).
    ///
    /// # Examples
    ///
    /// See [`Sink`].
    pub fn sink<S: Sink + 'static>(self, sink: S) -> io::Result<Consumer> {
        let retry = self.retry.clone();
        let (plan, on_done, sampler) = self.plan(true)?;
        let callback = sink::callback(sink, retry, plan.stop.clone());
        consumer::start_serial(plan, callback, on_done, sampler)
    }
}

impl<T> Emit<T, Parallel> {
    /// Starts the consumer: `callback` gets each chunk, up to [`parallel`](Emit::parallel)
    /// of them at once.
    ///
    /// # Errors
    ///
    /// As for the serial [`start`](Emit::start); also
    /// [`InvalidInput`](io::ErrorKind::InvalidInput) for `parallel(0)` or an inline consumer.
    pub fn start<F>(self, callback: F) -> io::Result<Consumer>
    where
        F: Fn(Chunk) -> io::Result<T> + Send + Sync + 'static,
        T: Send + 'static,
    {
        if self.parallel == 0 {
            return Err(invalid_input(
                "parallel(0): a consumer needs at least one callback at a time",
            ));
        }
        if matches!(self.place, Where::Inline) {
            return Err(invalid_input(
                "an inline consumer runs its callbacks one at a time, on the producing thread",
            ));
        }
        let (plan, on_done, sampler) = self.plan(false)?;
        consumer::start_parallel(plan, crate::sync::Arc::new(callback), on_done, sampler)
    }
}

impl<T, M> Emit<T, M> {
    /// `true` (the default): every chunk but the last has exactly `chunk_size` bytes. `false`:
    /// chunks are whole writes, the fewest that reach `chunk_size` (a write is one `write` of
    /// a push [`Writer`](crate::Writer), one read of a pulled source). A range source has no
    /// writes: its chunks are cut as with `true`.
    pub fn clip(mut self, clip: bool) -> Self {
        self.clip = clip;
        self
    }

    /// Runs the callbacks on the thread that publishes the bytes: a push
    /// [`Writer`](crate::Writer)'s `write`, or the reader that pulls a pulled stream (the
    /// consumer then drives nothing itself). The producer pays for each callback before its
    /// write returns, and the consumer is never behind, so it holds nothing and
    /// [`lagging`](Emit::lagging) does not apply; a [`sampler`](Emit::sampler) pause skips the
    /// bytes published meanwhile instead of sleeping. The bytes already there when it starts
    /// are delivered by `start`, on the calling thread. Not for a range source.
    ///
    /// An inline callback must not wait for bytes the producer has yet to publish.
    pub fn run_inline(mut self) -> Self {
        self.place = Where::Inline;
        self
    }

    /// Runs the callbacks on a thread of the consumer's own (the default), which also waits for
    /// the bytes (and, on a pulled stream, pulls them).
    pub fn run_on_thread(mut self) -> Self {
        self.place = Where::Thread;
        self
    }

    /// Runs the callbacks on `pool`'s threads, shared with other consumers. The consumer still
    /// waits for its bytes on a small thread of its own; the pool bounds how many callbacks run
    /// at once.
    pub fn run_on_pool(mut self, pool: &Pool) -> Self {
        self.place = Where::Pool(pool.clone());
        self
    }

    /// Hands each successful callback result to `on_done`, in chunk order, on the consumer's
    /// thread (the producer's, for an inline consumer).
    pub fn on_done<D>(mut self, on_done: D) -> Self
    where
        D: FnMut(T) + Send + 'static,
    {
        self.on_done = Some(Box::new(on_done));
        self
    }

    /// After each chunk but the last, asks `sampler` how long to pause: the consumer then lets
    /// go of its hold, sleeps that long, and resumes at the live edge (the end of the published
    /// bytes). The bytes published meanwhile are skipped for it and counted in
    /// [`Report::skipped`](crate::Report::skipped). `Duration::ZERO` does not pause.
    pub fn sampler<S>(mut self, sampler: S) -> Self
    where
        S: FnMut() -> Duration + Send + 'static,
    {
        self.sampler = Some(Box::new(sampler));
        self
    }

    /// How a sink consumer ([`sink`](Emit::sink)) retries a chunk its sink failed to take.
    /// Callback consumers ignore it.
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// `true`: the consumer holds nothing, so the writer of a windowed stream never waits for
    /// it; when the window moves past it, it resumes at the window start, and the bytes it
    /// missed (with the chunk it had begun) count as skipped. Default `false`.
    pub fn lagging(mut self, lagging: bool) -> Self {
        self.lagging = lagging;
        self
    }

    /// The checked settings; `keep`: the consumer holds each chunk until it is accepted (a
    /// sink's).
    #[allow(clippy::type_complexity)]
    fn plan(
        self,
        keep: bool,
    ) -> io::Result<(
        Plan,
        Option<Box<dyn FnMut(T) + Send>>,
        Option<Box<dyn FnMut() -> Duration + Send>>,
    )> {
        if self.chunk_size == 0 {
            return Err(invalid_input("a consumer's chunk_size must be at least 1"));
        }
        let ranged = self.buffer.shared().is_ranged();
        if ranged && matches!(self.place, Where::Inline) {
            return Err(invalid_input(
                "run_inline needs a stream's producer: a range source has none",
            ));
        }
        let shared = self.buffer.shared();
        let keep = keep && !self.lagging && !matches!(self.place, Where::Inline);
        if let (true, Some(window)) = (keep, shared.window()) {
            let segment = shared.config().segment_size as u64;
            let kept =
                (shared.config().memory_budget as u64).saturating_add(shared.config().disk_budget);
            let needed = (self.chunk_size as u64).saturating_add(2 * segment);
            if needed > window || needed > kept {
                return Err(invalid_input(format!(
                    "a sink holds a whole chunk: chunk_size {} and two segments of {segment} \
                     must fit the window ({window}) and the budgets ({kept})",
                    self.chunk_size
                )));
            }
        }
        let plan = Plan {
            stop: crate::sync::Arc::new(Stop::new()),
            keep,
            shared: self.buffer.shared_arc(),
            chunk_size: self.chunk_size as u64,
            clip: self.clip,
            place: self.place,
            parallel: self.parallel.max(1),
            lagging: self.lagging,
        };
        Ok((plan, self.on_done, self.sampler))
    }
}

impl<T, M> fmt::Debug for Emit<T, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Emit")
            .field("chunk_size", &self.chunk_size)
            .field("clip", &self.clip)
            .field("place", &self.place)
            .field("parallel", &self.parallel)
            .field("lagging", &self.lagging)
            .finish_non_exhaustive()
    }
}
