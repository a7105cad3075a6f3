//! One spill file for many buffers: a [`SpillArena`] hands out segment-sized slots of a single
//! unnamed sparse file, and each buffer of a cache sees its own [`Region`], which maps the
//! buffer's segment offsets to the slots it was given. However many buffers spill, the process
//! holds one descriptor for them.
//!
//! The rules of `spill.rs` (the file is private and never shrinks; maps are read-only and bytes
//! arrive by `pwrite`; published bytes never change) hold slot by slot: a slot is written only
//! while it belongs to one region, and goes back to the free list only when that region
//! discards the segment (after the index dropped the segment's map) or is dropped itself (after
//! its buffer's index, and so every map of it, is gone). A slot handed to another region is
//! therefore never under a live map of its previous owner.
//!
//! # Persistence
//!
//! A persistent arena ([`SpillArena::persistent`]) lives in a directory: the slots in a named
//! file `data`, and a [`Journal`] of which key's segment each durable slot holds, with the
//! key's version and the segment's checksum. A region of a key whose source has validators gets
//! an id in the journal ([`SpillArena::adopt`]); each segment it writes becomes durable (the
//! data synced, then the record appended), each it discards is recorded as dropped before its
//! slot is reused, and when the region is dropped its segments stay in the directory for the
//! next open of the key (or are forgotten, when the cache purged it). A named file is never
//! mapped: another process could shrink it under a map. The directory is locked (`flock`) for
//! as long as the arena lives: a second arena on it is refused.

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::path::Path;

use crate::error::invalid_input;
use crate::store::journal::{Durable, Identity, Journal, Record, State};
use crate::store::spill::{FileStorage, Mapped, SpillStorage};
use crate::sync::{Arc, AtomicBool, AtomicU64, Mutex, Ordering};

/// A spill file shared by the buffers of a cache, cut into slots of one segment each.
pub(crate) struct SpillArena {
    file: FileStorage,
    shift: u32,
    slots: Mutex<Slots>,
    /// Slots in use: the cache's disk usage, read without the lock.
    used: AtomicU64,
    /// A persistent directory's journal and lock.
    persist: Option<Persisted>,
}

/// A persistent arena's directory: its journal, what the journal says, and the lock.
struct Persisted {
    book: Mutex<Book>,
    /// Held by a flush from taking the pending records to recording them (with the data sync
    /// between), and by whoever needs the pending records settled: a drop of a segment, a
    /// region closing.
    flushing: Mutex<()>,
    /// Holds the directory's `flock` for as long as the arena lives.
    _lock: File,
}

struct Book {
    journal: Journal,
    state: State,
    /// Records of segments written and not yet synced (see `flush`).
    pending: Vec<Record>,
    /// Key ids with a region now (the others are dormant: on disk, not open).
    live: HashSet<u64>,
}

/// What [`SpillArena::adopt`] found for a key: its id in the journal, and the segments stored
/// at the same version (to be checked before they are served).
pub(crate) struct Adopted {
    pub(crate) id: u64,
    pub(crate) segments: Vec<(u64, Durable)>,
}

/// Which slots are free: those below `next` that were given back, and every one from `next` on.
#[derive(Default)]
struct Slots {
    next: u64,
    free: Vec<u64>,
}

impl SpillArena {
    /// An arena of `segment_size`-byte slots in a new unnamed file in `dir`.
    pub(crate) fn new_in(dir: &Path, segment_size: usize) -> io::Result<Self> {
        Ok(SpillArena {
            file: FileStorage::new_in(dir)?,
            shift: segment_size.trailing_zeros(),
            slots: Mutex::new(Slots::default()),
            used: AtomicU64::new(0),
            persist: None,
        })
    }

    /// The arena of the persistent directory `dir` (created if needed): locks it, replays and
    /// compacts its journal, and counts the slots its durable segments hold as used.
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::WouldBlock`] if another arena (in this process or another) holds the
    /// directory, naming that process; any I/O error.
    pub(crate) fn persistent(dir: &Path, segment_size: usize) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let lock = lock_dir(dir)?;
        let data = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.join("data"))?;
        let (journal, mut state) = Journal::open(&dir.join("journal"))?;
        let shift = segment_size.trailing_zeros();
        // Keys stored with another segment size cannot be adopted: forgotten now.
        let other_size: Vec<u64> = state
            .keys
            .iter()
            .filter(|(_, k)| k.identity.segment_size as usize != segment_size)
            .map(|(&id, _)| id)
            .collect();
        for id in other_size {
            state.apply(&Record::Forget { id });
        }
        let used: HashSet<u64> = state
            .keys
            .values()
            .flat_map(|k| k.segments.values().map(|d| d.slot))
            .collect();
        let next = used.iter().max().map_or(0, |m| m + 1);
        let free: Vec<u64> = (0..next).rev().filter(|s| !used.contains(s)).collect();
        // Slots past what the journal knows hold nothing: the file's length covers `next`.
        let len = data.metadata()?.len().max(next << shift);
        let mut journal = journal;
        journal.compact(&state)?;
        Ok(SpillArena {
            file: FileStorage::from_named(data, len),
            shift,
            slots: Mutex::new(Slots { next, free }),
            used: AtomicU64::new(used.len() as u64),
            persist: Some(Persisted {
                flushing: Mutex::new(()),
                book: Mutex::new(Book {
                    journal,
                    state,
                    pending: Vec::new(),
                    live: HashSet::new(),
                }),
                _lock: lock,
            }),
        })
    }

    /// Whether the arena lives in a persistent directory.
    pub(crate) fn is_persistent(&self) -> bool {
        self.persist.is_some()
    }

    /// The id of `key` at version `identity`, and the segments stored at that version (not
    /// yet checked). A key stored at another version is forgotten and its slots released; a
    /// key not stored (or open in another region) gets a new id.
    pub(crate) fn adopt(&self, key: &str, identity: Identity) -> io::Result<Adopted> {
        let Some(persist) = &self.persist else {
            return Err(invalid_input("not a persistent cache"));
        };
        let mut book = persist.book.lock();
        let found = book
            .state
            .keys
            .iter()
            .find(|(_, k)| k.key == key)
            .map(|(&id, k)| (id, k.identity == identity));
        let mut released = Vec::new();
        let adopted = match found {
            Some((id, true)) if !book.live.contains(&id) => {
                let segments = book.state.keys[&id]
                    .segments
                    .iter()
                    .map(|(&s, &d)| (s, d))
                    .collect();
                Adopted { id, segments }
            }
            other => {
                if let Some((id, _)) = other {
                    if !book.live.contains(&id) {
                        released.extend(book.state.keys[&id].segments.values().map(|d| d.slot));
                        book.record(Record::Forget { id })?;
                    }
                }
                let id = book.state.next_id;
                book.record(Record::Key {
                    id,
                    key: key.to_owned(),
                    identity,
                })?;
                Adopted {
                    id,
                    segments: Vec::new(),
                }
            }
        };
        book.live.insert(adopted.id);
        drop(book);
        for slot in released {
            let _ = self.release(slot);
        }
        Ok(adopted)
    }

    /// Whether the durable segment `d` still holds the bytes it was stored with.
    pub(crate) fn check(&self, d: Durable) -> bool {
        let mut buf = vec![0u8; d.len as usize];
        d.len as u64 <= 1 << self.shift
            && self.file.read_at(d.slot << self.shift, &mut buf).is_ok()
            && crc32c::crc32c(&buf) == d.crc
    }

    /// The segment `segment` of key `id` was just written to `slot`: its record waits for the
    /// next [`flush`](SpillArena::flush), which syncs the data first (one sync covers every
    /// segment written since the last).
    fn made_durable(&self, id: u64, segment: u64, slot: u64, data: &[u8]) -> io::Result<()> {
        let Some(persist) = &self.persist else {
            return Ok(());
        };
        let record = Record::Segment {
            id,
            segment,
            slot,
            len: data.len() as u32,
            crc: crc32c::crc32c(data),
        };
        persist.book.lock().pending.push(record);
        Ok(())
    }

    /// Makes the segments written since the last flush durable: the data file synced, then
    /// their records appended.
    pub(crate) fn flush(&self) -> io::Result<()> {
        let Some(persist) = &self.persist else {
            return Ok(());
        };
        let _flushing = persist.flushing.lock();
        let mut book = persist.book.lock();
        if book.pending.is_empty() {
            return Ok(());
        }
        let pending = std::mem::take(&mut book.pending);
        drop(book);
        self.file.sync_data()?;
        let mut book = persist.book.lock();
        for record in pending {
            // A segment dropped meanwhile was taken out of the pending ones (`dropping`); one
            // of a key forgotten meanwhile is ignored by the state.
            book.record(record)?;
        }
        Ok(())
    }

    /// A stored copy of segment `segment` of key `id`, in `slot`, is given up (found bad, or a
    /// newer copy came): recorded if the journal holds that copy, then released.
    fn give_up_stored(&self, id: u64, segment: u64, slot: u64) {
        if let Some(persist) = &self.persist {
            let _flushing = persist.flushing.lock();
            let mut book = persist.book.lock();
            let current = book
                .state
                .keys
                .get(&id)
                .and_then(|k| k.segments.get(&segment))
                .is_some_and(|d| d.slot == slot);
            if current {
                let _ = book.record(Record::Drop { id, segment });
            }
        }
        let _ = self.release(slot);
    }

    /// Segment `segment` of key `id` is about to leave its slot: recorded first (or, if its
    /// own record still waits for a flush, that record is taken back).
    fn dropping(&self, id: u64, segment: u64) -> io::Result<()> {
        let Some(persist) = &self.persist else {
            return Ok(());
        };
        // Not while a flush is recording: its records would come after this one.
        let _flushing = persist.flushing.lock();
        let mut book = persist.book.lock();
        let pending = book.pending.len();
        book.pending.retain(
            |r| !matches!(r, Record::Segment { id: i, segment: s, .. } if *i == id && *s == segment),
        );
        if book.pending.len() < pending {
            return Ok(());
        }
        book.record(Record::Drop { id, segment })
    }

    /// Key `id`'s region is gone: `forget` it (its slots are released by the caller), or keep
    /// it in the directory, dormant; the slots that must go back either way (those the journal
    /// does not hold for it).
    fn closed(&self, id: u64, forget: bool, slots: Vec<(u64, u64)>) -> Vec<u64> {
        let Some(persist) = &self.persist else {
            return slots.into_iter().map(|(_, slot)| slot).collect();
        };
        if !forget {
            // What it wrote is kept: made durable now.
            let _ = self.flush();
        }
        let mut book = persist.book.lock();
        book.live.remove(&id);
        if forget || !book.state.keys.contains_key(&id) {
            if book.state.keys.contains_key(&id) {
                let _ = book.record(Record::Forget { id });
            }
            return slots.into_iter().map(|(_, slot)| slot).collect();
        }
        let kept = &book.state.keys[&id].segments;
        slots
            .into_iter()
            .filter(|(segment, slot)| kept.get(segment).is_none_or(|d| d.slot != *slot))
            .map(|(_, slot)| slot)
            .collect()
    }

    /// The version stored for `key` if it is a complete forward-only stream (no validators: its
    /// key is what identifies it), not open in a region now.
    pub(crate) fn stored_stream(&self, key: &str) -> Option<Identity> {
        let book = self.persist.as_ref()?.book.lock();
        book.state
            .keys
            .iter()
            .find(|(id, k)| {
                k.key == key
                    && !book.live.contains(id)
                    && k.identity.etag.is_none()
                    && k.identity.last_modified.is_none()
            })
            .map(|(_, k)| k.identity.clone())
    }

    /// Forgets a dormant key (stored, not open), the one stored first, releasing its slots:
    /// room on a full disk. Whether there was one.
    pub(crate) fn forget_dormant(&self) -> bool {
        let Some(persist) = &self.persist else {
            return false;
        };
        let mut book = persist.book.lock();
        let dormant = book
            .state
            .keys
            .iter()
            .filter(|(id, k)| !book.live.contains(id) && !k.segments.is_empty())
            .map(|(&id, _)| id)
            .min();
        let Some(id) = dormant else {
            return false;
        };
        let slots: Vec<u64> = book.state.keys[&id]
            .segments
            .values()
            .map(|d| d.slot)
            .collect();
        let _ = book.record(Record::Forget { id });
        drop(book);
        for slot in slots {
            let _ = self.release(slot);
        }
        true
    }

    /// Slots in use (each one segment of the spill file).
    pub(crate) fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// The file's length: the high-water mark of the slots ever used.
    pub(crate) fn file_len(&self) -> u64 {
        self.file.len()
    }

    fn allocate(&self) -> io::Result<u64> {
        let mut slots = self.slots.lock();
        let slot = match slots.free.pop() {
            Some(slot) => slot,
            None => {
                let slot = slots.next;
                let end = (slot + 1)
                    .checked_mul(1 << self.shift)
                    .ok_or_else(|| invalid_input("spill arena is full"))?;
                self.file.reserve(end)?;
                slots.next += 1;
                slot
            }
        };
        self.used.fetch_add(1, Ordering::Relaxed);
        Ok(slot)
    }

    /// Gives `slot` back, releasing its space. Its bytes are no longer read by anyone.
    fn release(&self, slot: u64) -> io::Result<()> {
        let released = self.file.discard(slot << self.shift, 1 << self.shift);
        self.slots.lock().free.push(slot);
        self.used.fetch_sub(1, Ordering::Relaxed);
        released
    }
}

impl Drop for SpillArena {
    fn drop(&mut self) {
        let _ = self.flush();
    }
}

impl Book {
    /// Appends `record` and applies it; compacts the journal when it has grown.
    fn record(&mut self, record: Record) -> io::Result<()> {
        self.state.apply(&record);
        self.journal.append(&record)?;
        if self.journal.wants_compaction() {
            self.journal.compact(&self.state)?;
        }
        Ok(())
    }
}

/// Locks `dir` for this process (`flock` on `dir/lock`, which names the process).
fn lock_dir(dir: &Path) -> io::Result<File> {
    use rustix::fs::{flock, FlockOperation};
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(dir.join("lock"))?;
    // A cache of this process that was just dropped may hold the lock a moment longer (a
    // background job finishing with it): waited for, up to 2 s. Another process is refused
    // at once.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    while flock(&file, FlockOperation::NonBlockingLockExclusive).is_err() {
        let mut pid = String::new();
        let _ = file.seek(io::SeekFrom::Start(0));
        let _ = file.read_to_string(&mut pid);
        let ours = pid.trim() == std::process::id().to_string();
        if ours && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
            continue;
        }
        return Err(io::Error::new(
            io::ErrorKind::WouldBlock,
            format!(
                "{} is in use by pid {} (one process per cache directory)",
                dir.display(),
                pid.trim()
            ),
        ));
    }
    file.set_len(0)?;
    file.seek(io::SeekFrom::Start(0))?;
    write!(file, "{}", std::process::id())?;
    Ok(file)
}

/// One buffer's view of an arena: its segment `i` lives in whichever slot it was given when
/// first written. Dropped with the buffer, it gives all its slots back.
pub(crate) struct Region {
    arena: Arc<SpillArena>,
    /// Segment → slot.
    table: Mutex<HashMap<u64, u64>>,
    /// Bytes mapped for this buffer's reads.
    mapped: std::sync::Arc<AtomicU64>,
    /// In a persistent arena, the key's id in the journal (`u64::MAX`: not persisted).
    id: AtomicU64,
    /// The cache purged the buffer: its segments leave the directory with it.
    forget: AtomicBool,
    /// Stored copies not checked yet, by segment (see `stash`), and how many there are or are
    /// being checked.
    stored: Mutex<std::collections::BTreeMap<u64, Durable>>,
    stashed: AtomicU64,
    /// Held while stored copies are checked (see `check_stored`).
    checking: Mutex<()>,
}

const NOT_PERSISTED: u64 = u64::MAX;

impl Region {
    pub(crate) fn new(arena: Arc<SpillArena>) -> Self {
        Region {
            arena,
            table: Mutex::new(HashMap::new()),
            mapped: std::sync::Arc::new(AtomicU64::new(0)),
            id: AtomicU64::new(NOT_PERSISTED),
            forget: AtomicBool::new(false),
            stored: Mutex::new(std::collections::BTreeMap::new()),
            stashed: AtomicU64::new(0),
            checking: Mutex::new(()),
        }
    }

    /// Persists this region's segments as key `id`'s (from [`SpillArena::adopt`]).
    pub(crate) fn persist_as(&self, id: u64) {
        self.id.store(id, Ordering::Relaxed);
    }

    /// Whether its segments are persisted.
    pub(crate) fn is_persisted(&self) -> bool {
        self.id.load(Ordering::Relaxed) != NOT_PERSISTED
    }

    /// Keeps `segment`'s stored copy `durable` aside until a reader needs it ([`take_stored`]
    /// then checks it): checked when first read after a restart, not all at open.
    ///
    /// [`take_stored`]: Region::take_stored
    pub(crate) fn stash(&self, segment: u64, durable: Durable) {
        if self.stored.lock().insert(segment, durable).is_none() {
            self.stashed.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// Whether stored copies wait to be checked, or are being checked.
    pub(crate) fn has_stored(&self) -> bool {
        self.stashed.load(Ordering::Acquire) > 0
    }

    /// Checks the stored copies of the segments in `segments` with `check` (which serves or
    /// drops each), one reader at a time: a reader that comes meanwhile waits, and then finds
    /// those segments served instead of fetching them.
    pub(crate) fn check_stored(
        &self,
        segments: std::ops::Range<u64>,
        mut check: impl FnMut(u64, Durable),
    ) {
        let _checking = self.checking.lock();
        let taken: Vec<(u64, Durable)> = {
            let mut stored = self.stored.lock();
            let taken: Vec<(u64, Durable)> =
                stored.range(segments).map(|(&s, &d)| (s, d)).collect();
            for (segment, _) in &taken {
                stored.remove(segment);
            }
            taken
        };
        for &(segment, durable) in &taken {
            check(segment, durable);
        }
        self.stashed.fetch_sub(taken.len() as u64, Ordering::AcqRel);
    }

    /// One stored copy waiting to be checked, taken out (room on a full disk).
    pub(crate) fn take_any_stored(&self) -> Option<(u64, Durable)> {
        let first = self.stored.lock().pop_first();
        if first.is_some() {
            self.stashed.fetch_sub(1, Ordering::AcqRel);
        }
        first
    }

    /// Records a segment already in its slot (spilled before the region was persisted) as
    /// durable: its bytes are read back for their checksum.
    pub(crate) fn record_spilled(&self, segment: u64, len: usize) -> io::Result<()> {
        let id = self.id.load(Ordering::Relaxed);
        let Some(slot) = self.table.lock().get(&segment).copied() else {
            return Err(invalid_input("segment not in the region"));
        };
        if id == NOT_PERSISTED {
            return Ok(());
        }
        let mut data = vec![0u8; len];
        self.arena
            .file
            .read_at(slot << self.arena.shift, &mut data)?;
        self.arena.made_durable(id, segment, slot, &data)
    }

    /// Whether a stored copy holds the bytes it was stored with (its checksum).
    pub(crate) fn check(&self, durable: Durable) -> bool {
        self.arena.check(durable)
    }

    /// Takes over a stored copy that passed its check, as segment `segment`'s.
    pub(crate) fn adopt_slot(&self, segment: u64, slot: u64) {
        self.table.lock().insert(segment, slot);
    }

    /// Gives up a stored copy (found bad, or the segment was fetched meanwhile).
    pub(crate) fn reject_slot(&self, segment: u64, slot: u64) {
        match self.id.load(Ordering::Relaxed) {
            NOT_PERSISTED => {
                let _ = self.arena.release(slot);
            }
            id => self.arena.give_up_stored(id, segment, slot),
        }
    }

    /// When dropped, its segments leave the directory (the cache purged the buffer).
    pub(crate) fn forget_on_drop(&self) {
        self.forget.store(true, Ordering::Relaxed);
    }

    /// The pieces of `[offset, offset + len)`, one per segment: (segment, offset in it, length).
    fn pieces(&self, offset: u64, len: u64) -> io::Result<Vec<(u64, u64, u64)>> {
        let end = offset
            .checked_add(len)
            .ok_or_else(|| invalid_input("spill range overflows u64"))?;
        let size = 1u64 << self.arena.shift;
        let mut pieces = Vec::with_capacity(1);
        let mut at = offset;
        while at < end {
            let within = at & (size - 1);
            let n = (size - within).min(end - at);
            pieces.push((at >> self.arena.shift, within, n));
            at += n;
        }
        Ok(pieces)
    }

    /// Where `segment`'s slot starts in the file, if it has one.
    fn slot_start(&self, segment: u64) -> io::Result<u64> {
        match self.table.lock().get(&segment) {
            Some(&slot) => Ok(slot << self.arena.shift),
            None => Err(invalid_input(format!(
                "segment {segment} was never spilled to this region"
            ))),
        }
    }

    /// Where `segment`'s slot starts, giving it one if it has none (`true`: a new one).
    fn slot_for_write(&self, segment: u64) -> io::Result<(u64, bool)> {
        let mut table = self.table.lock();
        if let Some(&slot) = table.get(&segment) {
            return Ok((slot << self.arena.shift, false));
        }
        let slot = self.arena.allocate()?;
        table.insert(segment, slot);
        Ok((slot << self.arena.shift, true))
    }

    /// A read-only map of the `len` bytes at `offset` (within one segment), as
    /// [`FileStorage::map`] makes them.
    pub(crate) fn map(&self, offset: u64, len: usize) -> Option<Mapped> {
        if self.arena.is_persistent() {
            return None;
        }
        let pieces = self.pieces(offset, len as u64).ok()?;
        let [(segment, within, _)] = pieces[..] else {
            return None;
        };
        let start = self.slot_start(segment).ok()?;
        self.arena
            .file
            .map_counted(start + within, len, &self.mapped)
    }

    /// Bytes mapped for this region's reads.
    pub(crate) fn mapped_bytes(&self) -> u64 {
        self.mapped.load(Ordering::Relaxed)
    }

    /// Slots this region holds.
    #[cfg(test)]
    pub(crate) fn slots(&self) -> usize {
        self.table.lock().len()
    }
}

impl SpillStorage for Region {
    fn reserve(&self, _end: u64) -> io::Result<()> {
        // Slots are reserved as segments are first written.
        Ok(())
    }

    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        let mut done = 0usize;
        for (segment, within, n) in self.pieces(offset, data.len() as u64)? {
            let (start, new) = self.slot_for_write(segment)?;
            let n = n as usize;
            let written = self
                .arena
                .file
                .write_at(start + within, &data[done..done + n]);
            let id = self.id.load(Ordering::Relaxed);
            let durable = match written {
                // A whole segment (from its start) of a persisted key becomes durable.
                Ok(()) if id != NOT_PERSISTED && within == 0 => {
                    let slot = start >> self.arena.shift;
                    self.arena
                        .made_durable(id, segment, slot, &data[done..done + n])
                }
                other => other,
            };
            if let Err(error) = durable {
                // A slot given for a write that failed (a full disk) goes back: the segment
                // stays in RAM, and the slot must not count as the cache's disk.
                if new {
                    if let Some(slot) = self.table.lock().remove(&segment) {
                        let _ = self.arena.release(slot);
                    }
                }
                return Err(error);
            }
            done += n;
        }
        Ok(())
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let mut done = 0usize;
        for (segment, within, n) in self.pieces(offset, buf.len() as u64)? {
            let start = self.slot_start(segment)?;
            let n = n as usize;
            self.arena
                .file
                .read_at(start + within, &mut buf[done..done + n])?;
            done += n;
        }
        Ok(())
    }

    fn len(&self) -> u64 {
        self.arena.file_len()
    }

    /// Gives back the slot of every segment the range starts (an evicted segment is discarded
    /// whole, from its start, even when it is the stream's short last one).
    fn discard(&self, offset: u64, len: u64) -> io::Result<()> {
        let mut result = Ok(());
        for (segment, within, _) in self.pieces(offset, len)? {
            if within != 0 {
                continue;
            }
            let slot = self.table.lock().remove(&segment);
            if let Some(slot) = slot {
                let id = self.id.load(Ordering::Relaxed);
                if id != NOT_PERSISTED {
                    // Recorded before the slot can be reused.
                    let _ = self.arena.dropping(id, segment);
                }
                let released = self.arena.release(slot);
                if result.is_ok() {
                    result = released;
                }
            }
        }
        result
    }

    fn copy_to(&self, offset: u64, len: u64, dst: &mut File) -> io::Result<()> {
        for (segment, within, n) in self.pieces(offset, len)? {
            let start = self.slot_start(segment)?;
            self.arena.file.copy_to(start + within, n, dst)?;
        }
        Ok(())
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        let mut slots: Vec<(u64, u64)> = self.table.lock().drain().collect();
        // Stored copies never checked are the key's all the same.
        let stored = std::mem::take(&mut *self.stored.lock());
        slots.extend(stored.into_iter().map(|(segment, d)| (segment, d.slot)));
        let id = self.id.load(Ordering::Relaxed);
        let released = if id == NOT_PERSISTED {
            slots.into_iter().map(|(_, slot)| slot).collect()
        } else {
            // A persisted key's durable segments stay for the next open, unless purged.
            self.arena
                .closed(id, self.forget.load(Ordering::Relaxed), slots)
        };
        for slot in released {
            // A failed hole punch only leaves the space allocated; the slot is free all the same.
            let _ = self.arena.release(slot);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(13).wrapping_add(seed))
            .collect()
    }

    #[test]
    #[cfg_attr(miri, ignore = "needs a file-backed memory map")]
    fn regions_share_one_file_and_reuse_released_slots() {
        let arena = Arc::new(SpillArena::new_in(&std::env::temp_dir(), 4096).unwrap());
        let a = Region::new(arena.clone());
        let b = Region::new(arena.clone());
        // Segment 1000 of a, segment 0 of b: two slots, whatever the offsets.
        let (x, y) = (bytes(4096, 1), bytes(4096, 2));
        a.write_at(1000 * 4096, &x).unwrap();
        b.write_at(0, &y).unwrap();
        assert_eq!((arena.used(), arena.file_len()), (2, 2 * 4096));
        let mut got = vec![0; 4096];
        a.read_at(1000 * 4096, &mut got).unwrap();
        assert_eq!(got, x);
        b.read_at(0, &mut got).unwrap();
        assert_eq!(got, y);
        let map = a.map(1000 * 4096, 4096).unwrap();
        assert_eq!(&map[..], &x[..]);
        assert_eq!((a.mapped_bytes(), b.mapped_bytes()), (4096, 0));
        drop(map);
        // A short last segment, discarded whole; its slot is reused by the next write.
        a.write_at(5 * 4096, &x[..100]).unwrap();
        assert_eq!(arena.used(), 3);
        a.discard(5 * 4096, 100).unwrap();
        assert_eq!((arena.used(), a.slots()), (2, 1));
        b.write_at(7 * 4096, &x).unwrap();
        assert_eq!(arena.file_len(), 3 * 4096);
        // An unspilled segment is an error, never someone else's bytes.
        let kind = a.read_at(0, &mut got).unwrap_err().kind();
        assert_eq!(kind, io::ErrorKind::InvalidInput);
        // Writes across segments land in two slots, and read back across them.
        let z = bytes(6000, 3);
        a.write_at(2 * 4096 + 1000, &z).unwrap();
        let mut got = vec![0; 6000];
        a.read_at(2 * 4096 + 1000, &mut got).unwrap();
        assert_eq!(got, z);
        let mut out = tempfile::tempfile().unwrap();
        a.copy_to(2 * 4096 + 1000, 6000, &mut out).unwrap();
        let mut copied = Vec::new();
        use std::io::{Read, Seek};
        out.seek(io::SeekFrom::Start(0)).unwrap();
        out.read_to_end(&mut copied).unwrap();
        assert_eq!(copied, z);
        // A dropped region gives every slot back.
        drop(a);
        assert_eq!(arena.used(), 2);
        drop(b);
        assert_eq!(arena.used(), 0);
    }
}
