//! The [`Builder`]: the public way to choose a buffer's settings (checked into a `Config`,
//! see `settings.rs`) and its source.

use std::fmt;
use std::io::{self, Read};
use std::path::PathBuf;

use crate::buffer::StreamBuffer;
use crate::engine::account::Account;
use crate::engine::pull::Puller;
use crate::engine::settings::{
    Config, DEFAULT_MAX_FETCHES, DEFAULT_MAX_REQUEST, DEFAULT_MEMORY_BUDGET,
    DEFAULT_REQUESTS_IN_FLIGHT, DEFAULT_SEGMENT_SIZE, MAX_SEGMENT_SIZE, MIN_SEGMENT_SIZE,
};
use crate::engine::shared::{Filler, Ranged};
use crate::engine::streams::Limits;
use crate::error::invalid_input;
use crate::source::{ChunkSource, Fill, RangeSource, ReadSource};
use crate::store::spill::SpillStorage;
use crate::sync::Mutex;
use crate::validators::Validators;
use crate::writer::Writer;

/// Configures and builds a [`StreamBuffer`]; made by [`StreamBuffer::builder`].
///
/// Every setting has a default: 64 KiB segments, a 5 MiB memory budget, spilling to
/// [`std::env::temp_dir`], and a length learned when the source ends.
///
/// # Examples
///
/// ```
/// use std::io::Cursor;
/// use sparsebuf::StreamBuffer;
///
/// let dir = tempfile::tempdir()?;
/// let buf = StreamBuffer::builder()
///     .segment_size(16 * 1024)
///     .memory_budget(64 * 1024)
///     .spill_dir(dir.path())
///     .len(1_000_000)
///     .build(Cursor::new(vec![42u8; 1_000_000]))?;
/// assert_eq!(buf.len(), Some(1_000_000));
/// assert_eq!(buf.read_range(999_990..1_000_000)?, vec![42u8; 10]);
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Clone)]
#[must_use = "a Builder does nothing until `build` or `build_chunks` is called"]
pub struct Builder {
    segment_size: usize,
    memory_budget: usize,
    spill_dir: Option<PathBuf>,
    len: Option<u64>,
    disk_budget: u64,
    read_ahead: u64,
    window: Option<u64>,
    max_fetches: usize,
    max_request: u64,
    requests_in_flight: usize,
    storage: Option<std::sync::Arc<dyn SpillStorage>>,
    validators: Validators,
    content_type: Option<String>,
    stale: Option<std::sync::Arc<std::sync::OnceLock<String>>>,
    /// Set by a `Cache` for the buffers it builds.
    account: Option<std::sync::Arc<Account>>,
}

impl Default for Builder {
    fn default() -> Self {
        Builder {
            segment_size: DEFAULT_SEGMENT_SIZE,
            memory_budget: DEFAULT_MEMORY_BUDGET,
            spill_dir: None,
            len: None,
            disk_budget: u64::MAX,
            read_ahead: 0,
            window: None,
            max_fetches: DEFAULT_MAX_FETCHES,
            max_request: DEFAULT_MAX_REQUEST,
            requests_in_flight: DEFAULT_REQUESTS_IN_FLIGHT,
            storage: None,
            validators: Validators::default(),
            content_type: None,
            stale: None,
            account: None,
        }
    }
}

impl fmt::Debug for Builder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("segment_size", &self.segment_size)
            .field("memory_budget", &self.memory_budget)
            .field("spill_dir", &self.spill_dir)
            .field("len", &self.len)
            .field("max_fetches", &self.max_fetches)
            .field("max_request", &self.max_request)
            .field("requests_in_flight", &self.requests_in_flight)
            .field("disk_budget", &self.disk_budget)
            .field("read_ahead", &self.read_ahead)
            .field("window", &self.window)
            .field("custom_storage", &self.storage.is_some())
            .finish()
    }
}

impl StreamBuffer {
    /// A buffer with the default settings over `reader`.
    ///
    /// # Examples
    ///
    /// ```
    /// let buf = sparsebuf::StreamBuffer::new(&b"hello world"[..]);
    /// assert_eq!(buf.read_range(6..11)?, b"world");
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn new<R: Read + Send + 'static>(reader: R) -> Self {
        Self::with_defaults(Box::new(ReadSource(reader)))
    }

    /// A buffer with the default settings over an iterator of chunks, such as the body of an
    /// HTTP response. An `Err` item is the source's failure (see [`Error`](crate::Error)).
    ///
    /// # Examples
    ///
    /// ```
    /// use sparsebuf::StreamBuffer;
    ///
    /// let chunks = vec![Ok::<_, std::io::Error>(b"abc".to_vec()), Ok(b"def".to_vec())];
    /// let buf = StreamBuffer::from_chunks(chunks);
    /// assert_eq!(buf.read_range(2..5)?, b"cde");
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn from_chunks<I, B>(chunks: I) -> Self
    where
        I: IntoIterator<Item = io::Result<B>>,
        I::IntoIter: Send + 'static,
        B: AsRef<[u8]> + Send + 'static,
    {
        Self::with_defaults(Box::new(ChunkSource::new(chunks.into_iter())))
    }

    fn with_defaults(source: Box<dyn Fill>) -> Self {
        let filler = Filler::Pull(Mutex::new(Box::new(Puller::new(source))));
        Self::from_parts(Builder::new().unchecked(), filler, None)
    }

    /// A [`Builder`] to choose segment size, memory budget, spill directory and length.
    pub fn builder() -> Builder {
        Builder::new()
    }
}

impl Builder {
    /// A builder with the default settings; the same as [`StreamBuffer::builder`].
    pub fn new() -> Self {
        Self::default()
    }

    /// Size of a segment, the unit of allocation and spilling: a power of two from 256 bytes to
    /// 1 GiB. Default 64 KiB. Checked by [`build`](Builder::build).
    pub fn segment_size(mut self, bytes: usize) -> Self {
        self.segment_size = bytes;
        self
    }

    /// Bytes of RAM that full segments may use before the coldest are spilled. Default 5 MiB.
    ///
    /// The segment being filled is always in RAM, so a budget below one segment still holds
    /// one. A spill that fails (for example on a full disk) keeps its segment in RAM: the
    /// budget is then exceeded, and [`Stats::spill_errors`](crate::Stats::spill_errors) says so.
    pub fn memory_budget(mut self, bytes: usize) -> Self {
        self.memory_budget = bytes;
        self
    }

    /// Directory of the spill file. Default: [`std::env::temp_dir`].
    ///
    /// The file is created on the first spill, unnamed (nothing is left behind, even after a
    /// crash). Note that `/tmp` is RAM-backed `tmpfs` on many distributions, where spilled
    /// bytes still occupy memory: point this at a disk-backed directory to really save RAM.
    pub fn spill_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.spill_dir = Some(dir.into());
        self
    }

    /// The stream's length, if known in advance. Reads are then clipped to it without waiting
    /// for the source to end, and a source that ends early or runs long is an error
    /// ([`Error::EndedEarly`](crate::Error::EndedEarly), [`Error::RanLong`](crate::Error::RanLong)).
    pub fn len(mut self, total: u64) -> Self {
        self.len = Some(total);
        self
    }

    /// For a live (forward-only) stream: keep only about the last `bytes` of it. Whole segments
    /// that fall out of the window as the stream advances are dropped from RAM and the spill
    /// file, so an endless stream needs bounded memory and disk. A read that starts before the
    /// window gets [`Error::BehindWindow`](crate::Error::BehindWindow) (kind
    /// [`InvalidInput`](io::ErrorKind::InvalidInput)); `save` fails the same way once the start
    /// is gone. Ignored for range sources, which evict under
    /// [`disk_budget`](Builder::disk_budget). A window smaller than one segment (`window(0)`)
    /// could not keep a single byte readable: [`build`](Builder::build) refuses it with
    /// [`InvalidInput`](io::ErrorKind::InvalidInput). A player joins a live stream at
    /// [`StreamBuffer::window_start`](crate::StreamBuffer::window_start) with
    /// [`reader_at`](crate::StreamBuffer::reader_at).
    ///
    /// # When the budgets cannot hold the window
    ///
    /// With a [`disk_budget`](Builder::disk_budget), the memory and disk budgets may hold less
    /// than the window. The budgets win: the writer drops the oldest segment to make room, so
    /// the window shrinks. But it never drops bytes a [`Reader`](crate::Reader) has not read
    /// yet (from its position on), nor those a `read_at` in progress has yet to copy: when every
    /// segment it could drop is still needed, the writer **waits** until a reader moves on (or
    /// is dropped), and so do the reads that need new bytes. That is backpressure, as with a
    /// bounded channel: a cursor nobody reads stalls the stream.
    /// [`Stats::writer_waits`](crate::Stats::writer_waits) counts the waits.
    ///
    /// A thread never waits for itself: a cursor belongs to the thread that last read from it
    /// or seeked it (until then, the thread that created or cloned it), and if a cursor in the
    /// way belongs to the calling thread, the read fails with
    /// [`Error::WindowFull`](crate::Error::WindowFull) instead. So create a cursor on the
    /// thread that will read it (or use it there before others read ahead).
    /// Likewise [`wait_for`](crate::StreamBuffer::wait_for) and
    /// [`read_range`](crate::StreamBuffer::read_range) of more than the budgets can hold at
    /// once (a plain `read_at` of any size works: it copies piece by piece).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::io::Read;
    /// use sparsebuf::StreamBuffer;
    ///
    /// let live = std::io::repeat(7).take(10 << 20); // stands in for an endless stream
    /// let buf = StreamBuffer::builder()
    ///     .segment_size(64 << 10)
    ///     .memory_budget(256 << 10)
    ///     .disk_budget(1 << 20)
    ///     .window(4 << 20) // more than the budgets hold: they decide
    ///     .build(live)?;
    ///
    /// let mut player = buf.reader();
    /// let mut frame = vec![0u8; 100_000];
    /// player.read_exact(&mut frame)?;
    ///
    /// // Another thread reading far ahead waits for `player` rather than drop its bytes; this
    /// // thread, which owns `player`, is told instead of waiting for itself.
    /// let err = buf.read_at(8 << 20, &mut frame).unwrap_err();
    /// assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    /// assert!(matches!(
    ///     err.get_ref().and_then(|e| e.downcast_ref()),
    ///     Some(sparsebuf::Error::WindowFull { .. })
    /// ));
    ///
    /// // Once the player is gone, the window simply slides.
    /// drop(player);
    /// buf.read_exact_at(8 << 20, &mut frame)?;
    /// assert!(buf.stats().memory_bytes <= (256 << 10) + 2 * (64 << 10));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn window(mut self, bytes: u64) -> Self {
        self.window = Some(bytes);
        self
    }

    /// Bytes to keep filling in the background after each read. Default 0 (off).
    ///
    /// After a read ending at `e`, a background worker (one per buffer, started on first use)
    /// fills `[e, e + bytes)`: it pulls a stream ahead of its readers ("buffering"), or fetches a
    /// range source's holes there. Sequential readers then find their next bytes ready; a far
    /// seek restarts read-ahead at the new position, because the latest read's range replaces
    /// the worker's target. [`Stats::read_ahead_hits`](crate::Stats::read_ahead_hits) counts
    /// prefetched segments that were read, and
    /// [`Stats::read_ahead_bytes`](crate::Stats::read_ahead_bytes) what the worker fetched.
    ///
    /// Read-ahead reaches only as far as the budgets can keep: with memory and disk budgets of
    /// `n` segments together, the segment being read and `n - 3` more (none at all for `n <= 2`),
    /// and eviction passes over the segments from the latest read to there. So read-ahead never
    /// evicts what it fetched before it is read, and a sequential reader fetches nothing twice,
    /// however small the budgets. The worker works a segment at a time: it moves to a newer
    /// target (and stops, releasing the source, once the last handle is dropped) within one
    /// segment's source read.
    pub fn read_ahead(mut self, bytes: u64) -> Self {
        self.read_ahead = bytes;
        self
    }

    /// Bytes the spill storage may hold (whole segments). Default: no limit.
    ///
    /// With a range source, the coldest spilled segments are then evicted (their space released,
    /// see [`SpillStorage::discard`]) and fetched again if read; with a budget below one segment,
    /// segments past the memory budget are dropped instead of spilled. A forward-only stream
    /// cannot fetch bytes again: with a [`window`](Builder::window) it drops its oldest bytes
    /// (waiting for readers that still need them); without one, once its disk budget is full
    /// its segments stay in RAM (over the memory budget) rather than being lost.
    pub fn disk_budget(mut self, bytes: u64) -> Self {
        self.disk_budget = bytes;
        self
    }

    /// For [`build_ranged`](Builder::build_ranged): how many fetches of different gaps may run
    /// at once. Default 4; readers that need the same gap always share one fetch.
    pub fn max_fetches(mut self, fetches: usize) -> Self {
        self.max_fetches = fetches;
        self
    }

    /// For [`build_ranged`](Builder::build_ranged) over a source that streams (see
    /// [`RangeSource::open_at`]): the largest request. Default 16 MiB.
    ///
    /// A read that does not continue an earlier request opens one for the segments it needs
    /// (scattered reads fetch no more than that); a request that starts where the previous one
    /// ended is twice as large as it, up to this size, so a sequential reader's requests grow
    /// from one run to 16 MiB in a few steps. `u64::MAX`: sequential requests become
    /// open-ended (`bytes=X-`), kept open as long as reads follow them. Either way a response
    /// is read only as fast as reads (and read-ahead) need it, so the budgets hold whatever
    /// its size.
    pub fn max_request(mut self, bytes: u64) -> Self {
        self.max_request = bytes;
        self
    }

    /// For [`build_ranged`](Builder::build_ranged) over a source that streams: how many
    /// responses may be open at once. Default 4.
    ///
    /// Once requests have followed each other twice, the next one is opened while the current
    /// one is still being read (if fewer than this many are open), so a link with latency
    /// stays busy between requests. Between fetches at most this many responses are kept
    /// open (the least recently used is closed first), and those that nobody reads for 10 s
    /// are closed. With `0`, `build_ranged` fails with `InvalidInput`.
    pub fn requests_in_flight(mut self, requests: usize) -> Self {
        self.requests_in_flight = requests;
        self
    }

    /// Spill to `storage` instead of a temp file in [`spill_dir`](Builder::spill_dir).
    pub fn spill_storage(mut self, storage: impl SpillStorage) -> Self {
        self.storage = Some(std::sync::Arc::new(storage));
        self
    }

    /// What identifies the resource a stream carries (a URL's `ETag` and `Last-Modified`), for
    /// [`StreamBuffer::validators`]. A range source reports its own.
    #[cfg(feature = "client")]
    pub(crate) fn with_validators(mut self, validators: Validators) -> Self {
        self.validators = validators;
        self
    }

    /// The media type of the stream (a URL's `Content-Type`), for
    /// [`StreamBuffer::content_type`]. A range source reports its own.
    #[cfg(feature = "client")]
    pub(crate) fn with_content_type(mut self, content_type: Option<String>) -> Self {
        self.content_type = content_type;
        self
    }

    /// A verdict the source sets when the resource changed under the buffer (a URL's): a
    /// cache opens such a buffer anew rather than serve it again.
    #[cfg(feature = "client")]
    pub(crate) fn with_stale(mut self, stale: std::sync::Arc<std::sync::OnceLock<String>>) -> Self {
        self.stale = Some(stale);
        self
    }

    /// The builder of a cache's member: the cache's budgets, spill file and workers.
    pub(crate) fn in_cache(mut self, account: std::sync::Arc<Account>) -> Self {
        self.segment_size = account.limits.segment_size;
        self.memory_budget = account.limits.memory_budget;
        self.disk_budget = account.limits.disk_budget;
        self.spill_dir = Some(account.limits.spill_dir.clone());
        self.account = Some(account);
        self
    }

    /// The length declared with [`len`](Builder::len), if any.
    #[cfg(feature = "client")]
    pub(crate) fn declared_len(&self) -> Option<u64> {
        self.len
    }

    /// Builds a buffer that pulls from `reader`.
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::InvalidInput`] if the segment size is not a power of two between 256
    /// bytes and 1 GiB, if a [`window`](Builder::window) is smaller than one segment, or if an
    /// explicit spill directory is not a directory.
    pub fn build<R: Read + Send + 'static>(self, reader: R) -> io::Result<StreamBuffer> {
        self.build_with(Box::new(ReadSource(reader)))
    }

    /// Builds a buffer that pulls from an iterator of chunks.
    ///
    /// # Errors
    ///
    /// As for [`build`](Builder::build).
    pub fn build_chunks<I, B>(self, chunks: I) -> io::Result<StreamBuffer>
    where
        I: IntoIterator<Item = io::Result<B>>,
        I::IntoIter: Send + 'static,
        B: AsRef<[u8]> + Send + 'static,
    {
        self.build_with(Box::new(ChunkSource::new(chunks.into_iter())))
    }

    /// Builds a sparse buffer over a source that can read at any offset: reads fetch only the
    /// segments they need (see [`RangeSource`]). The length comes from [`Builder::len`], else
    /// from [`RangeSource::len`], else from where the source ends.
    ///
    /// # Errors
    ///
    /// As for [`build`](Builder::build), and [`io::ErrorKind::InvalidInput`] for
    /// `max_fetches(0)`, `requests_in_flight(0)` or a `max_request` below one segment.
    pub fn build_ranged(self, source: impl RangeSource) -> io::Result<StreamBuffer> {
        if self.max_fetches == 0 {
            return Err(invalid_input("max_fetches must be at least 1"));
        }
        if self.requests_in_flight == 0 {
            return Err(invalid_input("requests_in_flight must be at least 1"));
        }
        if self.max_request < self.segment_size as u64 {
            return Err(invalid_input(format!(
                "max_request ({}) must be at least one segment ({})",
                self.max_request, self.segment_size
            )));
        }
        let limits = Limits {
            max_request: self.max_request,
            in_flight: self.requests_in_flight,
            segment_size: self.segment_size as u64,
        };
        let ranged = Ranged::new(
            std::sync::Arc::new(source),
            self.max_fetches,
            limits,
            self.account.as_ref(),
        );
        let storage = self.storage.clone();
        Ok(StreamBuffer::from_parts(
            self.config()?,
            Filler::Ranged(ranged),
            storage,
        ))
    }

    /// Builds a buffer whose bytes are pushed by the returned [`Writer`] instead of pulled from
    /// a source: see [`Writer`] for how it ends, fails and waits.
    ///
    /// A declared [`len`](Builder::len) is checked: writing past it fails the stream with
    /// [`Error::RanLong`](crate::Error::RanLong), and `finish` short of it with
    /// [`Error::EndedEarly`](crate::Error::EndedEarly).
    ///
    /// # Errors
    ///
    /// As for [`build`](Builder::build).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::io::Write;
    ///
    /// let (mut writer, buf) = sparsebuf::StreamBuffer::builder().build_push()?;
    /// writer.write_all(b"pushed, not pulled")?;
    /// assert_eq!(buf.read_range(0..6)?, b"pushed"); // there as soon as `write` returns
    /// assert_eq!(buf.len(), None);
    /// writer.finish()?;
    /// assert_eq!(buf.len(), Some(18));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn build_push(self) -> io::Result<(Writer, StreamBuffer)> {
        let storage = self.storage.clone();
        let buffer = StreamBuffer::from_parts(self.config()?, Filler::Push, storage);
        Ok((Writer::new(&buffer), buffer))
    }

    fn build_with(self, source: Box<dyn Fill>) -> io::Result<StreamBuffer> {
        let storage = self.storage.clone();
        let filler = Filler::Pull(Mutex::new(Box::new(Puller::new(source))));
        Ok(StreamBuffer::from_parts(self.config()?, filler, storage))
    }

    /// The settings as they are, unchecked (see [`config`](Builder::config)); the defaults need
    /// no check.
    pub(crate) fn unchecked(self) -> Config {
        Config {
            shift: self.segment_size.trailing_zeros(),
            segment_size: self.segment_size,
            memory_budget: self.memory_budget,
            spill_dir: self.spill_dir.unwrap_or_else(std::env::temp_dir),
            declared_len: self.len,
            disk_budget: self.disk_budget,
            read_ahead: self.read_ahead,
            window: self.window,
            validators: self.validators,
            content_type: self.content_type,
            stale: self.stale,
            account: self.account,
        }
    }

    /// Checks the settings.
    pub(crate) fn config(self) -> io::Result<Config> {
        let size = self.segment_size;
        if !size.is_power_of_two() || !(MIN_SEGMENT_SIZE..=MAX_SEGMENT_SIZE).contains(&size) {
            return Err(invalid_input(format!(
                "segment size {size} is not a power of two between {MIN_SEGMENT_SIZE} and {MAX_SEGMENT_SIZE}"
            )));
        }
        if let Some(window) = self.window.filter(|&w| w < size as u64) {
            return Err(invalid_input(format!(
                "window of {window} bytes is smaller than one segment ({size} bytes): \
                 no byte could be read before it is dropped"
            )));
        }
        if let Some(dir) = self.spill_dir.as_ref().filter(|dir| !dir.is_dir()) {
            return Err(invalid_input(format!(
                "spill directory {} is not a directory",
                dir.display()
            )));
        }
        Ok(self.unchecked())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_bad_segment_sizes() {
        for size in [0, 1, 255, 3000, 4097, MAX_SEGMENT_SIZE * 2, usize::MAX] {
            let err = Builder::new().segment_size(size).config().err().unwrap();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "size {size}");
        }
        for size in [256, 4096, 65536, MAX_SEGMENT_SIZE] {
            let cfg = Builder::new().segment_size(size).config().unwrap();
            assert_eq!(1usize << cfg.shift, size);
        }
    }

    #[test]
    fn rejects_missing_spill_dir() {
        let err = Builder::new()
            .spill_dir("/nonexistent/sparsebuf")
            .config()
            .err()
            .unwrap();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert!(err.to_string().contains("/nonexistent/sparsebuf"));
    }
}
