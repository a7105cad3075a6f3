//! The state every handle of a buffer shares ([`Shared`]), what its index lock guards
//! ([`State`]), where its bytes come from ([`Filler`]), and the lock order.

use std::fmt;
use std::io;
use std::ops::Range;
use std::sync::Weak;

use crate::engine::account::Account;
use crate::engine::ahead::Ahead;
#[cfg(feature = "tokio")]
use crate::engine::drive::Drive;
use crate::engine::holds::{Blocked, Holds};
use crate::engine::publish::Publish;
use crate::engine::settings::Config;
use crate::engine::spiller::Spiller;
use crate::engine::streams::{Limits, Streams};
use crate::engine::taps::Taps;
use crate::engine::workers::Workers;
use crate::error::{context, Error};
use crate::source::RangeSource;
use crate::stats::Stats;
use crate::store::arena::Region;
use crate::store::buffers::{BufferCounts, Pool};
use crate::store::index::{Index, Location};
use crate::store::marks::Marks;
use crate::store::spill::{FileStorage, SpillStorage};
use crate::store::storage::Spill;
use crate::store::tiers::Tiers;
use crate::sync::{Arc, AtomicBool, AtomicU64, IndexLock, Mutex, OnceLock, Ordering};
use crate::validators::Validators;

/// Everything the handles share.
///
/// Lock order: the producer (a pulled stream's writer role), then `tiers`, then `state`, then
/// `holds`; `state` is never held while waiting for another lock, while reading the source or
/// while writing spill data. `publish`, `last_spill_error`, the tap list and the background
/// workers' mailboxes are only taken alone. An inline consumer's own lock is taken by the
/// producer with no lock of the buffer held (its role aside), and it takes `state` inside.
pub(crate) struct Shared {
    pub(in crate::engine) config: Config,
    /// The index and the stream's fate; see [`State`].
    pub(in crate::engine) state: IndexLock<State>,
    /// Where new bytes come from: a forward-only stream and its writer role, or a range source.
    pub(in crate::engine) filler: Filler,
    /// The RAM tier's pool and CLOCK list; see [`Tiers`].
    pub(in crate::engine) tiers: Mutex<Tiers>,
    /// Wakes readers waiting for a publish.
    pub(in crate::engine) publish: Publish,
    /// The spill storage: supplied by the builder, or created on the first spill. Set once.
    pub(in crate::engine) storage: OnceLock<Spill>,
    /// Counters maintained by the writer with relaxed atomics; they may race with `stats`.
    pub(in crate::engine) buffers: Arc<BufferCounts>,
    pub(in crate::engine) source_bytes: AtomicU64,
    pub(in crate::engine) refetched_bytes: AtomicU64,
    pub(in crate::engine) evictions: AtomicU64,
    pub(in crate::engine) spill_errors: AtomicU64,
    /// The last spill failure, for `StreamBuffer::spill_error`.
    pub(in crate::engine) last_spill_error: Mutex<Option<Error>>,
    /// The last source failure logged (see `log_source_failure`).
    last_logged: Mutex<String>,
    /// The read-ahead worker's mailbox.
    pub(in crate::engine) ahead: Arc<Ahead>,
    /// Segments fetched by read-ahead and then read.
    pub(in crate::engine) read_ahead_hits: AtomicU64,
    /// Bytes the read-ahead worker pulled or fetched.
    pub(in crate::engine) read_ahead_bytes: AtomicU64,
    /// A forward-only stream's window (`None` for range sources, which ignore it): it drops
    /// its oldest bytes, and tracks `holds`.
    pub(in crate::engine) window: Option<u64>,
    /// Where the readers of a windowed stream still need bytes (see `holds.rs`).
    pub(in crate::engine) holds: Holds,
    /// Times a windowed stream's writer found no room and waited for readers.
    pub(in crate::engine) writer_waits: AtomicU64,
    /// The background thread that writes a stream's spilled segments (see `spiller.rs`).
    pub(in crate::engine) spiller: Arc<Spiller>,
    /// Inline consumers, fed by the producer, and the count of all consumers (see `taps.rs`).
    pub(in crate::engine) taps: Taps<Shared>,
    /// The thread that pulls a forward-only stream for async cursors (see `drive.rs`).
    #[cfg(feature = "tokio")]
    pub(in crate::engine) drive: Arc<Drive>,
    /// What identifies the resource: the range source's, or the builder's.
    pub(in crate::engine) validators: Validators,
    /// The media type: the range source's, or the builder's.
    pub(in crate::engine) content_type: Option<String>,
    /// This very `Shared`, for the background threads to hold weakly.
    pub(in crate::engine) me: Weak<Shared>,
    /// In a cache: when the buffer was last looked up or seen in use, in the account's clock.
    pub(in crate::engine) last_used_ms: AtomicU64,
    /// In a persistent cache, a forward-only stream's key: kept under it once complete.
    pub(in crate::engine) stream_key: OnceLock<String>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        if let Some(account) = &self.config.account {
            // Its RAM goes with it; the account stops counting it.
            let live = self.buffers.live.load(Ordering::Relaxed);
            account.ram.live.fetch_sub(live, Ordering::Relaxed);
        }
        self.ahead.close();
        self.spiller.close();
        if let Filler::Ranged(ranged) = &self.filler {
            // Closes the idle responses now; those a fetch still reads close when it is done.
            drop(ranged.streams.close());
        }
    }
}

/// Where a buffer's bytes come from.
pub(crate) enum Filler {
    /// A forward-only stream that readers pull. Whoever holds the writer role may read it: held
    /// for as long as one reader's need takes to pull, never by a thread that waits for anything
    /// but the source or the disk.
    Pull(Mutex<Box<dyn Producer>>),
    /// A source that reads at any offset; fetches are claimed in the index (see `fetch.rs`).
    Ranged(Ranged),
    /// A stream pushed by its `Writer`, which owns the appender: readers past the frontier
    /// only wait.
    Push,
}

/// A range source, how many fetches of it may run at once, and its open streams.
pub(crate) struct Ranged {
    pub(in crate::engine) source: Arc<dyn RangeSource>,
    pub(in crate::engine) max_fetches: usize,
    /// The responses kept open between fetches (see `streams.rs`).
    pub(in crate::engine) streams: Arc<Streams<SourceStream>>,
    /// The source answered `open_at` with `None`: it has no streams, every fetch is one
    /// `read_vectored_at` of its run.
    pub(in crate::engine) no_streams: AtomicBool,
    /// The cache whose workers open streams ahead and reap idle ones (`None`: threads of
    /// their own).
    pub(in crate::engine) cache: Option<Weak<Account>>,
}

/// A stream opened by a range source.
pub(crate) type SourceStream = Box<dyn std::io::Read + Send>;

impl Ranged {
    pub(crate) fn new(
        source: Arc<dyn RangeSource>,
        max_fetches: usize,
        limits: Limits,
        cache: Option<&Arc<Account>>,
    ) -> Self {
        Ranged {
            source,
            max_fetches,
            streams: Arc::new(Streams::new(limits)),
            no_streams: AtomicBool::new(false),
            cache: cache.map(Arc::downgrade),
        }
    }
}

/// The producer of a forward-only stream that readers make produce (the pull driver,
/// `pull.rs`): owned by whoever holds the writer role.
pub(crate) trait Producer: Send {
    /// The end of the published bytes.
    fn frontier(&self) -> u64;
    /// Produces until the published frontier reaches `need`, or the source ends or fails; `Err`
    /// if a windowed stream has no room for another segment until a reader moves on.
    fn pull_until(&mut self, shared: &Shared, need: u64) -> Result<(), Blocked>;
}

/// The part of the shared state guarded by the index lock.
///
/// Invariants: `len`, once `Some`, never changes (declared up front, or set when the source
/// ended); `complete` means the source ended where `len` says; `error`, once set (stream sources
/// only), stays set and no byte is added to the index after it. Bytes in the index never change.
pub(crate) struct State {
    pub(in crate::engine) index: Index,
    pub(in crate::engine) len: Option<u64>,
    pub(in crate::engine) complete: bool,
    pub(in crate::engine) error: Option<Error>,
    /// Range-source fetches under way (each holds its claimed segments as `Slot::Fetching`).
    pub(in crate::engine) fetches_in_flight: usize,
    /// A range source without a known length: the stream ends at or before this offset (a
    /// fetch there read nothing). Becomes `len` once the bytes just before it are filled.
    pub(in crate::engine) end_at_most: Option<u64>,
    /// A stream with a window: the bytes before this offset were dropped. Only grows.
    pub(in crate::engine) window_start: u64,
    /// Where a stream's writes ended and when they arrived, for consumers (see `marks.rs`).
    pub(in crate::engine) marks: Marks,
    /// Runs of segments that `save` is copying out of the spill storage: eviction passes over
    /// them (see `tiers.rs`), so their space is not released under the copy.
    pub(in crate::engine) pins: Vec<Range<u64>>,
}

impl State {
    /// A stream with nothing filled yet, over `index`; `len` if declared up front.
    pub(crate) fn new(index: Index, len: Option<u64>, memory_budget: usize) -> Self {
        State {
            index,
            len,
            complete: false,
            error: None,
            fetches_in_flight: 0,
            end_at_most: None,
            window_start: 0,
            marks: Marks::for_budget(memory_budget),
            pins: Vec::new(),
        }
    }

    /// `end` clipped to the known length, or to where the stream is known to end at the latest.
    #[inline]
    pub(crate) fn clip(&self, end: u64) -> u64 {
        let end = self.len.map_or(end, |len| end.min(len));
        self.end_at_most.map_or(end, |at_most| end.min(at_most))
    }

    /// A range source read nothing at `offset`, or (`exact`) ended exactly there after
    /// producing bytes. Records what that says about the length.
    pub(crate) fn found_end(&mut self, offset: u64, exact: bool) {
        if self.len.is_some() {
            return;
        }
        let bound = self.end_at_most.map_or(offset, |b| b.min(offset));
        self.end_at_most = Some(bound);
        if exact || bound == 0 || self.index.filled_end(bound - 1).is_some() {
            self.len = Some(bound);
            self.end_at_most = None;
            self.complete = true;
        }
    }

    /// A windowed stream drops the bytes before `start` (the caller drops their segments).
    pub(crate) fn raise_window_start(&mut self, start: u64) {
        self.window_start = start;
        self.marks.drop_before(start);
    }

    /// Whether `save` holds `segment` (see `pins`).
    #[inline]
    pub(crate) fn pinned(&self, segment: u64) -> bool {
        self.pins.iter().any(|run| run.contains(&segment))
    }

    /// After a publish: a bound right behind filled bytes is the length.
    pub(crate) fn settle_end(&mut self) {
        if let Some(bound) = self.end_at_most {
            self.found_end(bound, false);
        }
    }
}

/// How much a read waits for.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Want {
    /// The whole range (or up to the end of the stream): `read_at` semantics.
    All,
    /// At least one byte: `Read::read` semantics for cursors.
    Some,
    /// As `All`, for the read-ahead worker: what it pulls counts as read-ahead.
    Ahead,
}

/// What the handles above the engine ask of it: read-only views and snapshots (the fields stay
/// the engine's own).
impl Shared {
    /// The cache the buffer belongs to.
    pub(crate) fn account(&self) -> Option<&Arc<Account>> {
        self.config.account.as_ref()
    }

    /// The workers background jobs run on: the cache's, or `None` (a thread each).
    pub(crate) fn workers(&self) -> Option<&Workers> {
        self.config.account.as_ref().map(|a| &a.workers)
    }

    /// Marks a cache's member as used now (a lookup).
    pub(crate) fn mark_used(&self) {
        if let Some(account) = &self.config.account {
            self.last_used_ms.store(account.now_ms(), Ordering::Relaxed);
        }
    }

    /// The settings the buffer runs with.
    pub(crate) fn config(&self) -> &Config {
        &self.config
    }

    /// Whether the stream has a window (a live forward-only stream).
    pub(crate) fn is_windowed(&self) -> bool {
        self.window.is_some()
    }

    /// The stream's window (`None` for a range source, which ignores it).
    pub(crate) fn window(&self) -> Option<u64> {
        self.window
    }

    /// Whether the buffer is over a range source.
    pub(crate) fn is_ranged(&self) -> bool {
        matches!(self.filler, Filler::Ranged(_))
    }

    /// The holds of a windowed stream's readers.
    pub(crate) fn holds(&self) -> &Holds {
        &self.holds
    }

    /// The publish/wait protocol.
    pub(crate) fn publish(&self) -> &Publish {
        &self.publish
    }

    /// The inline consumers and the count of all consumers.
    pub(crate) fn taps(&self) -> &Taps<Shared> {
        &self.taps
    }

    /// What identifies the resource.
    pub(crate) fn validators(&self) -> &Validators {
        &self.validators
    }

    /// The media type, if known.
    pub(crate) fn content_type(&self) -> Option<&str> {
        self.content_type.as_deref()
    }

    /// The stream's length, if known.
    pub(crate) fn len(&self) -> Option<u64> {
        self.state.read().len
    }

    /// The first byte still kept.
    pub(crate) fn window_start(&self) -> u64 {
        self.state.read().window_start
    }

    /// Where `[offset, offset + len)` stands against the filled bytes.
    pub(crate) fn location(&self, offset: u64, len: u64) -> Location {
        self.state.read().index.location(offset, len)
    }

    /// Whether the stream ended or failed: nothing more will be published.
    pub(crate) fn is_over(&self) -> bool {
        let state = self.state.read();
        state.complete || state.error.is_some()
    }

    /// Whether the buffer should not be served again: its stream failed for good, or its
    /// source found that the resource changed under it. (Asked by the proxy only.)
    #[cfg_attr(not(all(feature = "server", feature = "client")), allow(dead_code))]
    pub(crate) fn is_stale(&self) -> bool {
        let changed = self
            .config
            .stale
            .as_ref()
            .is_some_and(|s| s.get().is_some());
        changed || self.state.read().error.is_some()
    }

    /// The stream's sticky failure, if it failed.
    pub(crate) fn failure(&self) -> Option<io::Error> {
        self.state.read().error.clone().map(Into::into)
    }

    /// The most recent spill failure (once the spill writes in flight are done).
    pub(crate) fn spill_error(&self) -> Option<io::Error> {
        self.tiers.lock().settle_spiller(self);
        self.last_spill_error.lock().clone().map(Into::into)
    }

    /// A writer found no room and waits (counted in `Stats::writer_waits`).
    #[cfg(feature = "tokio")]
    pub(crate) fn count_writer_wait(&self) {
        self.writer_waits.fetch_add(1, Ordering::Relaxed);
    }

    /// A snapshot of the counters, once the spill writes in flight are done (at most the
    /// clean-ahead depth, 2 MiB), so that spill errors are all counted.
    pub(crate) fn stats(&self) -> Stats {
        self.tiers.lock().settle_spiller(self);
        let size = self.config.segment_size as u64;
        let state = self.state.read();
        Stats {
            filled_bytes: state.index.filled_bytes,
            memory_bytes: self.buffers.live.load(Ordering::Relaxed) * size,
            peak_memory_bytes: self.buffers.peak.load(Ordering::Relaxed) * size,
            spilled_bytes: state.index.spilled_bytes,
            segments_in_memory: state.index.in_memory,
            segments_spilled: state.index.spilled,
            source_bytes: self.source_bytes.load(Ordering::Relaxed),
            holes: state.index.holes(state.window_start),
            refetched_bytes: self.refetched_bytes.load(Ordering::Relaxed),
            read_ahead_hits: self.read_ahead_hits.load(Ordering::Relaxed),
            read_ahead_bytes: self.read_ahead_bytes.load(Ordering::Relaxed),
            evictions: self.evictions.load(Ordering::Relaxed),
            fetches_in_flight: state.fetches_in_flight as u64,
            spill_errors: self.spill_errors.load(Ordering::Relaxed),
            mapped_bytes: self.storage.get().map_or(0, Spill::mapped_bytes),
            writer_waits: self.writer_waits.load(Ordering::Relaxed),
            segment_size: size,
            memory_budget: self.config.memory_budget as u64,
        }
    }

    /// Whether the spill storage exists yet (for tests).
    #[cfg(test)]
    pub(crate) fn has_storage(&self) -> bool {
        self.storage.get().is_some()
    }

    /// Pages of the slot table in use (for tests of its size).
    #[cfg(test)]
    pub(crate) fn slot_pages(&self) -> usize {
        self.state.read().index.slot_pages()
    }
}

impl Shared {
    /// The filled ranges, the length and where the segments live, for the handle's `Debug`.
    pub(crate) fn describe(&self, f: &mut fmt::DebugStruct<'_, '_>) {
        let state = self.state.read();
        f.field("filled", &state.index.filled_ranges())
            .field("len", &state.len)
            .field("complete", &state.complete)
            .field("segment_size", &self.config.segment_size)
            .field("segments_in_memory", &state.index.in_memory)
            .field("segments_spilled", &state.index.spilled)
            .field("error", &state.error.as_ref().map(ToString::to_string));
    }
}

impl Shared {
    /// The shared state of a new buffer.
    pub(crate) fn new(
        config: Config,
        filler: Filler,
        storage: Option<Arc<dyn SpillStorage>>,
    ) -> Arc<Shared> {
        let buffers = Arc::new(BufferCounts::default());
        let pool = match &config.account {
            Some(account) => {
                Pool::in_cache(config.segment_size, buffers.clone(), account.ram.clone())
            }
            None => Pool::new(config.segment_size, buffers.clone()),
        };
        let last_used_ms = AtomicU64::new(config.account.as_ref().map_or(0, |a| a.now_ms()));
        let storage_cell = OnceLock::new();
        if let Some(storage) = storage {
            let _ = storage_cell.set(Spill::Custom(storage));
        }
        let (len, window, validators, content_type) = match &filler {
            Filler::Ranged(r) => (
                config.declared_len.or_else(|| r.source.len()),
                None,
                r.source.validators(),
                r.source.content_type(),
            ),
            Filler::Pull(_) | Filler::Push => (
                config.declared_len,
                config.window,
                config.validators.clone(),
                config.content_type.clone(),
            ),
        };
        let state = State::new(Index::new(config.shift), len, config.memory_budget);
        Arc::new_cyclic(|me| Shared {
            config,
            state: IndexLock::new(state),
            filler,
            tiers: Mutex::new(Tiers::new(pool)),
            publish: Publish::new(),
            storage: storage_cell,
            buffers,
            source_bytes: AtomicU64::new(0),
            refetched_bytes: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
            spill_errors: AtomicU64::new(0),
            last_spill_error: Mutex::new(None),
            last_logged: Mutex::new(String::new()),
            ahead: Arc::new(Ahead::new()),
            read_ahead_hits: AtomicU64::new(0),
            read_ahead_bytes: AtomicU64::new(0),
            window,
            holds: Holds::new(),
            writer_waits: AtomicU64::new(0),
            spiller: Arc::new(Spiller::new()),
            taps: Taps::new(),
            #[cfg(feature = "tokio")]
            drive: Arc::new(Drive::new()),
            validators,
            content_type,
            me: me.clone(),
            last_used_ms,
            stream_key: OnceLock::new(),
        })
    }

    /// The spill storage, created on first use.
    pub(crate) fn storage(&self) -> io::Result<&Spill> {
        if let Some(storage) = self.storage.get() {
            return Ok(storage);
        }
        if let Some(account) = &self.config.account {
            let region = Region::new(account.arena()?);
            return Ok(self.storage.get_or_init(|| Spill::Region(region)));
        }
        let dir = &self.config.spill_dir;
        let created = FileStorage::new_in(dir)
            .map_err(|e| context(e, format!("creating a spill file in {}", dir.display())))?;
        Ok(self.storage.get_or_init(|| Spill::File(created)))
    }

    /// `end` clipped to what is known of the stream's length, under a fresh read lock.
    pub(crate) fn clip(&self, end: u64) -> u64 {
        self.state.read().clip(end)
    }

    /// Records a failed spill: counted, logged, and kept for `StreamBuffer::spill_error`.
    pub(crate) fn spill_failed(&self, error: Error) {
        self.spill_errors.fetch_add(1, Ordering::Relaxed);
        log::warn!("sparsebuf: {error} (the segment stays in memory)");
        *self.last_spill_error.lock() = Some(error);
    }

    /// Logs a source failure, unless the source failed the same way last time (a range
    /// source that keeps failing is logged once, not once per read, whatever the offset).
    pub(crate) fn log_source_failure(&self, error: &Error) {
        let cause = match error {
            Error::Source { error, .. } => error.to_string(),
            other => other.to_string(),
        };
        let mut last = self.last_logged.lock();
        if *last != cause {
            log::warn!("sparsebuf: {error}");
            *last = cause;
        }
    }

    /// Copies `dst.len()` bytes at `offset`, which the caller found filled under `state`.
    #[inline]
    pub(crate) fn copy(&self, state: &State, offset: u64, dst: &mut [u8]) -> io::Result<()> {
        let storage = self.storage.get();
        let hits = state.index.copy_out(storage, offset, dst)?;
        if hits > 0 {
            self.read_ahead_hits.fetch_add(hits, Ordering::Relaxed);
        }
        Ok(())
    }
}
