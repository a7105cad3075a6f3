//! [`Cache`]: many buffers under one memory budget and one disk budget, keyed by name, with
//! LRU and TTL purges of idle buffers and a fixed set of worker threads.

use std::fmt;
use std::io::{self, Read};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::buffer::StreamBuffer;
use crate::builder::Builder;
use crate::engine::account::{Account, Limits, Member};
use crate::engine::settings::{DEFAULT_SEGMENT_SIZE, MAX_SEGMENT_SIZE, MIN_SEGMENT_SIZE};
use crate::engine::shared::Shared;
use crate::error::invalid_input;
use crate::source::RangeSource;
use crate::stats::Stats;
use crate::sync::Ordering;

/// Default memory budget of a cache: 256 MiB.
const DEFAULT_CACHE_MEMORY: usize = 256 << 20;
/// How long a writer waits for room by default (see [`CacheBuilder::max_wait`]).
const DEFAULT_MAX_WAIT: Duration = Duration::from_secs(5);

/// A keyed set of [`StreamBuffer`]s that share one memory budget, one disk budget, one spill
/// file and a fixed set of worker threads.
///
/// Open a buffer by key with [`open_stream`](Cache::open_stream) (a forward-only stream),
/// [`open_ranged`](Cache::open_ranged) (a [`RangeSource`]) or `open_url` (feature `client`):
/// the first open of a key builds its buffer, the others share it, and concurrent opens of one
/// key build it once ("single flight"). What you get is an ordinary `StreamBuffer`: reads,
/// cursors, consumers and `save` work as on any other.
///
/// # Budgets
///
/// The memory and disk budgets bound the sum over all buffers. When RAM is full, the coldest
/// segments across the buffers are spilled to the shared file (idle buffers give theirs up
/// first); segments of a range source are dropped instead when the disk is full too, and
/// fetched again if read. Bytes of a forward-only stream exist nowhere else, so when the disk
/// is full of them the least recently used *idle* buffer is purged whole. If no buffer is idle,
/// the writer that needs room waits until a handle is dropped (it never drops bytes), for up
/// to [`max_wait`](CacheBuilder::max_wait): the handle may be held by the waiting thread
/// itself, so past that it goes over the budget rather than hang. A stream that alone holds
/// more than both budgets goes over them at once, as a standalone buffer does.
///
/// # Idle buffers: LRU and TTL
///
/// A buffer is *idle* when the cache holds its only handle: no `StreamBuffer`, cursor or
/// consumer of it is left outside. An idle buffer stays cached (the next open of its key finds
/// its bytes) until it is purged: under pressure, least recently used first, or once idle for
/// [`idle_ttl`](CacheBuilder::idle_ttl) (checked by a timer every quarter of the TTL, and on
/// [`purge_idle`](Cache::purge_idle)). A buffer with a live handle is never purged. A buffer's
/// idle time counts from its last lookup (`open_*`, [`get`](Cache::get)) or the last time the
/// cache saw it in use.
///
/// # Threads and descriptors
///
/// Background work of every buffer (read-ahead, pulls for async cursors, streams opened ahead,
/// the closing of idle responses, the TTL timer) runs on at most
/// [`threads`](CacheBuilder::threads) worker threads; buffers spill inline and into one shared
/// file. Neither threads nor descriptors grow with the number of buffers. A buffer costs a few
/// KiB of RAM besides its bytes (BENCHMARKS.md has the figure).
///
/// `Cache` is a cheap handle (`Clone + Send + Sync`). Dropping the last handle purges the idle
/// buffers; buffers with live handles live on, in the shared budget, until those are dropped.
///
/// # Examples
///
/// ```
/// use std::io::{Cursor, Read};
/// use sparsebuf::Cache;
///
/// let cache = Cache::builder()
///     .memory_budget(8 << 20)
///     .disk_budget(64 << 20)
///     .idle_ttl(std::time::Duration::from_secs(60))
///     .build()?;
///
/// let song: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
/// let data = song.clone();
/// let buf = cache.open_stream("song.mp3", move || Ok(Cursor::new(data)))?;
/// assert_eq!(buf.read_range(1000..1010)?, song[1000..1010]);
///
/// // Another open of the key shares the buffer: `make` does not run again.
/// let again = cache.open_stream("song.mp3", || -> std::io::Result<Cursor<Vec<u8>>> {
///     unreachable!("already cached")
/// })?;
/// let mut all = Vec::new();
/// again.reader().read_to_end(&mut all)?;
/// assert_eq!(all, song);
///
/// let stats = cache.stats();
/// assert_eq!(stats.streams, 1);
/// assert!(stats.memory_bytes <= 8 << 20);
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Clone)]
pub struct Cache {
    inner: Arc<Inner>,
}

/// The last `Cache` handle closes the account (which holds its members, whose settings hold it).
struct Inner {
    account: Arc<Account>,
    template: Builder,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.account.close();
    }
}

/// Settings of a [`Cache`], from [`Cache::builder`].
///
/// # Examples
///
/// ```
/// use std::time::Duration;
///
/// let cache = sparsebuf::Cache::builder()
///     .memory_budget(256 << 20)
///     .disk_budget(4 << 30)
///     .spill_dir(std::env::temp_dir())
///     .segment_size(64 * 1024)
///     .read_ahead(1 << 20)
///     .idle_ttl(Duration::from_secs(300))
///     .threads(4)
///     .build()?;
/// assert_eq!(cache.stats().memory_budget, 256 << 20);
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Clone, Debug)]
#[must_use = "a CacheBuilder does nothing until `build` is called"]
pub struct CacheBuilder {
    memory_budget: usize,
    disk_budget: u64,
    spill_dir: Option<PathBuf>,
    segment_size: usize,
    read_ahead: u64,
    idle_ttl: Option<Duration>,
    threads: Option<usize>,
    max_wait: Duration,
    persist: Option<PathBuf>,
    template: Builder,
}

impl Default for CacheBuilder {
    fn default() -> Self {
        CacheBuilder {
            memory_budget: DEFAULT_CACHE_MEMORY,
            disk_budget: u64::MAX,
            spill_dir: None,
            segment_size: DEFAULT_SEGMENT_SIZE,
            read_ahead: 0,
            idle_ttl: None,
            threads: None,
            max_wait: DEFAULT_MAX_WAIT,
            persist: None,
            template: Builder::new(),
        }
    }
}

impl CacheBuilder {
    /// RAM for the segments of all buffers together (default 256 MiB); at least one segment.
    pub fn memory_budget(mut self, bytes: usize) -> Self {
        self.memory_budget = bytes;
        self
    }

    /// Disk for the spilled segments of all buffers together (default: unbounded).
    pub fn disk_budget(mut self, bytes: u64) -> Self {
        self.disk_budget = bytes;
        self
    }

    /// Where the shared spill file is created (default: the system's temp directory, which is
    /// RAM-backed `tmpfs` on many systems).
    pub fn spill_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.spill_dir = Some(dir.into());
        self
    }

    /// The segment size of every buffer: a power of two from 256 bytes to 1 GiB (default
    /// 64 KiB).
    pub fn segment_size(mut self, bytes: usize) -> Self {
        self.segment_size = bytes;
        self
    }

    /// How far ahead of the latest read each buffer fills (default 0: no read-ahead), as
    /// [`Builder::read_ahead`].
    pub fn read_ahead(mut self, bytes: u64) -> Self {
        self.read_ahead = bytes;
        self
    }

    /// Purge a buffer once it has been idle (no handle outside the cache) for this long
    /// (default: never; idle buffers then go only under pressure or by
    /// [`purge_idle`](Cache::purge_idle)).
    pub fn idle_ttl(mut self, ttl: Duration) -> Self {
        self.idle_ttl = Some(ttl);
        self
    }

    /// The most worker threads the cache's background work runs on (default: the number of
    /// cores, from 2 to 8). Started on demand.
    pub fn threads(mut self, threads: usize) -> Self {
        self.threads = Some(threads);
        self
    }

    /// How long a writer that needs room waits for a handle to be dropped when every buffer
    /// holding bytes is in use (default 5 s). Past it, the writer goes over the budget (counted
    /// in [`CacheStats::overcommits`] and logged) and does not wait again until a buffer
    /// leaves the cache: the handle it waits for may be held by its own thread.
    pub fn max_wait(mut self, wait: Duration) -> Self {
        self.max_wait = wait;
        self
    }

    /// Keeps the cache in the directory `dir` (created if needed), across restarts and
    /// crashes: the segments of range sources with validators are written through to one
    /// sparse file there, each recorded in a journal with the resource's version and the
    /// segment's checksum once its bytes are synced. The next open of a key, in this process or
    /// a later one, serves the stored segments whose version still matches the source's (an
    /// `ETag`, a `Last-Modified`, the length) and whose checksum is still right; anything else
    /// is fetched again, never served. A forward-only stream is kept once read to its end (not
    /// a windowed one): the next open of its key serves it without calling `make`; a partial
    /// one is not kept, as it could not be resumed (its source only goes forward). A kept
    /// stream's segment that fails its checksum cannot be fetched again: reading it is an error
    /// of kind `InvalidData`, and removing the key lets the next open make the stream anew.
    /// BENCHMARKS.md has what persistence costs. The disk budget bounds
    /// the directory; keys stored and not open go first when it is full. One cache at a time:
    /// [`build`](CacheBuilder::build) fails with [`io::ErrorKind::WouldBlock`] ("DIR is in use
    /// by pid N") while another cache holds the directory (one of this process that was just
    /// dropped, and whose background jobs are finishing, is waited for up to 2 s).
    pub fn persist(mut self, dir: impl Into<PathBuf>) -> Self {
        self.persist = Some(dir.into());
        self
    }

    /// The settings of each buffer's source that the cache does not decide: fetch limits and
    /// request sizes of range sources ([`Builder::max_fetches`], [`Builder::max_request`],
    /// [`Builder::requests_in_flight`]). Budgets, spill directory, segment size and read-ahead
    /// are the cache's, whatever `template` says.
    pub fn buffer_settings(mut self, template: Builder) -> Self {
        self.template = template;
        self
    }

    /// Makes the cache. No thread starts and no file is created until needed.
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::InvalidInput`] if the segment size is not a power of two between 256
    /// bytes and 1 GiB, if the memory budget is smaller than one segment, if `threads` is 0, or
    /// if an explicit spill directory is not a directory. With [`persist`](CacheBuilder::persist),
    /// [`io::ErrorKind::WouldBlock`] if another cache holds the directory, and the errors of
    /// opening it.
    pub fn build(self) -> io::Result<Cache> {
        let size = self.segment_size;
        if !size.is_power_of_two() || !(MIN_SEGMENT_SIZE..=MAX_SEGMENT_SIZE).contains(&size) {
            return Err(invalid_input(format!(
                "segment size {size} is not a power of two between {MIN_SEGMENT_SIZE} and {MAX_SEGMENT_SIZE}"
            )));
        }
        if self.memory_budget < size {
            return Err(invalid_input(format!(
                "memory budget of {} bytes is smaller than one segment ({size} bytes)",
                self.memory_budget
            )));
        }
        if self.threads == Some(0) {
            return Err(invalid_input("a cache needs at least one worker thread"));
        }
        let spill_dir = match self.spill_dir {
            Some(dir) if !dir.is_dir() => {
                return Err(invalid_input(format!(
                    "spill directory {} is not a directory",
                    dir.display()
                )))
            }
            Some(dir) => dir,
            None => std::env::temp_dir(),
        };
        let threads = self.threads.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(2, |n| n.get().clamp(2, 8))
        });
        let account = Account::new(Limits {
            persist: self.persist,
            memory_budget: self.memory_budget,
            disk_budget: self.disk_budget,
            segment_size: size,
            spill_dir,
            idle_ttl: self.idle_ttl,
            threads,
            max_wait: self.max_wait,
        })?;
        Account::start_sweeps(&account);
        let template = self.template.read_ahead(self.read_ahead);
        // Checked once here, so that the buffers' own checks cannot fail later.
        template.clone().in_cache(account.clone()).config()?;
        Ok(Cache {
            inner: Arc::new(Inner { account, template }),
        })
    }
}

impl Cache {
    /// The settings of a new cache.
    pub fn builder() -> CacheBuilder {
        CacheBuilder::default()
    }

    /// The buffer of `key`, built from the forward-only stream that `make` returns if the key
    /// is not cached. Concurrent opens of one key run `make` once; the others wait and share
    /// its buffer (as long as `make` takes: the cache puts no time limit on it, so a `make`
    /// that connects somewhere should have its own timeouts). Other keys are not held up.
    ///
    /// # Errors
    ///
    /// `make`'s error, for the caller that ran it and for every open that waited for it (as an
    /// error of the same kind and message); a panicking `make` is an error of kind `Other`.
    /// The key is then free: the next open runs its own `make`.
    pub fn open_stream<R, F>(&self, key: &str, make: F) -> io::Result<StreamBuffer>
    where
        R: Read + Send + 'static,
        F: FnOnce() -> io::Result<R>,
    {
        let account = &self.inner.account;
        self.open_with(key, |builder| {
            // A persistent cache serves a stream it kept whole without making it again.
            if let Some(stored) = account.stored_stream(key) {
                let len = stored.len;
                let source = StoredStream {
                    key: key.to_owned(),
                    len,
                };
                let buffer = builder.build_ranged(source)?;
                buffer.shared().adopt_stored_as(key, stored)?;
                return Ok(buffer);
            }
            builder.build(make()?)
        })
    }

    /// The buffer of `key`, built over the [`RangeSource`] that `make` returns if the key is
    /// not cached: reads fetch only what they need, and the cache may drop fetched segments
    /// under pressure (they are fetched again if read). Single flight as for
    /// [`open_stream`](Cache::open_stream).
    ///
    /// # Errors
    ///
    /// As for [`open_stream`](Cache::open_stream).
    pub fn open_ranged<S, F>(&self, key: &str, make: F) -> io::Result<StreamBuffer>
    where
        S: RangeSource,
        F: FnOnce() -> io::Result<S>,
    {
        self.open_with(key, |builder| builder.build_ranged(make()?))
    }

    /// The single-flight open of `key`, building with `build` from the cache's settings (and,
    /// in a persistent cache, adopting what the directory holds for it).
    pub(crate) fn open_with(
        &self,
        key: &str,
        build: impl FnOnce(Builder) -> io::Result<StreamBuffer>,
    ) -> io::Result<StreamBuffer> {
        let account = &self.inner.account;
        let template = &self.inner.template;
        let member = account.members.open(key, || {
            let builder = template.clone().in_cache(account.clone());
            let shared = build(builder)?.shared_arc();
            shared.adopt_stored(key)?;
            let member: Arc<dyn Member> = shared;
            Ok(member)
        })?;
        Ok(handle(member))
    }

    /// The buffer of `key` if it is cached (a lookup: it counts as a use).
    pub fn get(&self, key: &str) -> Option<StreamBuffer> {
        Some(handle(self.inner.account.members.get(key)?))
    }

    /// Takes `key` out of the cache; whether it was there. Handles of its buffer keep working
    /// (its bytes count in the budgets until they are dropped); the next open builds anew.
    pub fn remove(&self, key: &str) -> bool {
        let account = &self.inner.account;
        match account.members.remove(key) {
            Some(member) => {
                account.purges.removed.fetch_add(1, Ordering::Relaxed);
                member.forget_stored();
                account.detach(member);
                true
            }
            None => false,
        }
    }

    /// Purges the buffers idle for the [`idle_ttl`](CacheBuilder::idle_ttl) now, without
    /// waiting for the timer; with no TTL set, every idle buffer. Returns how many.
    pub fn purge_idle(&self) -> usize {
        let all = self.inner.account.limits.idle_ttl.is_none();
        self.inner.account.sweep(all)
    }

    /// Buffers in the cache.
    pub fn len(&self) -> usize {
        self.inner.account.members.lock().len()
    }

    /// Whether the cache holds no buffer.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A snapshot of the cache's counters and the totals of its buffers' [`Stats`].
    pub fn stats(&self) -> CacheStats {
        let account = &self.inner.account;
        let members: Vec<_> = {
            let entries = account.members.lock();
            entries.slab.iter().map(|e| e.value.clone()).collect()
        };
        let streams = members.len() as u64;
        let mut totals = Stats::default();
        for member in members {
            totals.add(&handle(member).stats());
        }
        totals.segment_size = account.limits.segment_size as u64;
        totals.memory_budget = account.limits.memory_budget as u64;
        totals.peak_memory_bytes =
            account.ram.peak.load(Ordering::Relaxed) * account.limits.segment_size as u64;
        CacheStats {
            streams,
            memory_bytes: account.memory_bytes(),
            disk_bytes: account.disk_bytes(),
            memory_budget: account.limits.memory_budget as u64,
            disk_budget: account.limits.disk_budget,
            purged_idle: account.purges.ttl.load(Ordering::Relaxed),
            purged_for_room: account.purges.pressure.load(Ordering::Relaxed),
            removed: account.purges.removed.load(Ordering::Relaxed),
            evictions: account.taken.load(Ordering::Relaxed),
            writer_waits: account.waits.load(Ordering::Relaxed),
            overcommits: account.overcommits.load(Ordering::Relaxed),
            threads: account.workers.threads() as u64,
            max_threads: account.workers.max_threads() as u64,
            totals,
        }
    }
}

/// The source of a forward-only stream a persistent cache kept whole: its bytes are all in
/// the directory, read from there (each segment's checksum checked first). A segment that fails
/// its check cannot be fetched again: reading it is an error, and the key must be removed (the
/// next open makes the stream anew).
struct StoredStream {
    key: String,
    len: u64,
}

impl RangeSource for StoredStream {
    fn read_at(&self, _offset: u64, _buf: &mut [u8]) -> io::Result<usize> {
        Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "the stored copy of the stream {:?} is damaged (a segment failed its checksum); \
                 remove the key to make the stream again",
                self.key
            ),
        ))
    }

    fn len(&self) -> Option<u64> {
        Some(self.len)
    }
}

/// A handle of a member, marked as used now.
fn handle(member: Arc<dyn Member>) -> StreamBuffer {
    let shared = Arc::downcast::<Shared>(member.into_any())
        .unwrap_or_else(|_| unreachable!("a cache's members are buffers"));
    shared.mark_used();
    StreamBuffer::from_shared(shared)
}

impl fmt::Debug for Cache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let account = &self.inner.account;
        f.debug_struct("Cache")
            .field("streams", &self.len())
            .field("memory_bytes", &account.memory_bytes())
            .field("memory_budget", &account.limits.memory_budget)
            .field("disk_bytes", &account.disk_bytes())
            .field("disk_budget", &account.limits.disk_budget)
            .finish_non_exhaustive()
    }
}

/// Counters of a [`Cache`], from [`Cache::stats`].
///
/// `memory_bytes` and `disk_bytes` are the cache's own counts (segment buffers and slots of
/// the shared spill file, in whole segments); `totals` sums the [`Stats`] of the buffers cached
/// now (a purged buffer's counters leave with it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CacheStats {
    /// Buffers in the cache.
    pub streams: u64,
    /// Bytes of RAM held by the segments of all buffers (also those removed from the cache
    /// whose handles are still alive).
    pub memory_bytes: u64,
    /// Bytes of the shared spill file in use.
    pub disk_bytes: u64,
    /// The memory budget.
    pub memory_budget: u64,
    /// The disk budget.
    pub disk_budget: u64,
    /// Buffers purged after being idle for the TTL (or by `purge_idle`).
    pub purged_idle: u64,
    /// Idle buffers purged, least recently used first, to make room on a full disk.
    pub purged_for_room: u64,
    /// Buffers taken out with [`Cache::remove`].
    pub removed: u64,
    /// Segments a buffer gave up (spilled or dropped) to make room for another.
    pub evictions: u64,
    /// Times a writer waited for a handle to be dropped because the budgets were full of
    /// buffers in use.
    pub writer_waits: u64,
    /// Times a writer waited [`max_wait`](CacheBuilder::max_wait) in vain and went over the
    /// memory budget.
    pub overcommits: u64,
    /// Worker threads started so far.
    pub threads: u64,
    /// The most worker threads the cache runs.
    pub max_threads: u64,
    /// The sums of the buffers' counters (`peak_memory_bytes` is the cache's peak).
    pub totals: Stats,
}
