//! The index: which byte ranges are filled, and where each segment's bytes live.
//!
//! "What is filled" (a `RangeSet` of byte ranges) and "where the bytes are" (one [`Slot`] per
//! segment) are kept apart: the first answers [`Location`] questions, the second serves copies.

use std::io;
use std::ops::Range;

use bytes::{Bytes, BytesMut};
use rangemap::RangeSet;

use crate::store::slots::{Evicted, Resident, Slot, SlotTable};
use crate::store::storage::Spill;
use crate::sync::{AtomicBool, OnceLock, Ordering};

/// Where a requested byte range stands against what is filled, the four cases of the read path.
///
/// Returned by [`StreamBuffer::location`](crate::StreamBuffer::location), mainly for diagnostics
/// and tests. For a range `[offset, offset + len)`:
///
/// # Examples
///
/// ```
/// use sparsebuf::{Location, StreamBuffer};
///
/// let buf = StreamBuffer::from_chunks(vec![Ok::<_, std::io::Error>(vec![7u8; 100])]);
/// assert_eq!(buf.location(0, 10), Location::AtIndex);
/// buf.read_range(0..50)?; // pulls at least the first 50 bytes
/// assert_eq!(buf.location(0, 10), Location::BeforeIndex);
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Location {
    /// Every byte of the range is filled: the read is served at once, in parallel with others.
    /// An empty range is always `BeforeIndex`.
    BeforeIndex,
    /// The range starts in filled data and ends past it.
    Bisected,
    /// The range starts exactly at a fill frontier (the end of filled data, or offset 0 of an
    /// empty buffer).
    AtIndex,
    /// The range starts past a fill frontier, in bytes nobody has fetched yet.
    AfterIndex,
}

/// Filled ranges plus the per-segment table. Guarded by the buffer's index `RwLock`.
///
/// Invariants: every byte in `filled` is readable from its segment's slot (a `Filling` prefix,
/// a `Memory` buffer or a `Disk` region), and no slot holds bytes outside `filled`.
/// `filled_bytes`, `in_memory` and `spilled` are sums over `filled` and the slots, kept in step.
pub(crate) struct Index {
    shift: u32,
    /// The filled runs, except that the run starting at 0 may end short of `prefix_end` (it is
    /// brought up to date only when something else changes the set): a forward-only stream's
    /// publishes then extend `prefix_end` in O(1) instead of rewriting the set's first entry.
    filled: RangeSet<u64>,
    /// End of the filled run that starts at 0 (0 if byte 0 is not filled): an O(1) answer for
    /// the common case, a forward-only stream read behind its frontier. When it is above 0,
    /// `filled` has a run starting at 0 (its end may lag), and no run of `filled` starts at or
    /// before `prefix_end` other than that one.
    prefix_end: u64,
    /// Start of the first run of `filled` after the prefix (`u64::MAX` if none): where an
    /// appending prefix meets it and the two must be merged.
    next_run: u64,
    slots: SlotTable,
    pub(crate) filled_bytes: u64,
    pub(crate) in_memory: u64,
    pub(crate) spilled: u64,
    pub(crate) spilled_bytes: u64,
    /// Segments evicted and not fetched again since: fetching one is a re-fetch. Runs of
    /// segment numbers, so a scan that evicts in order costs one entry.
    evicted: RangeSet<u64>,
}

impl Index {
    pub(crate) fn new(segment_shift: u32) -> Self {
        Index {
            shift: segment_shift,
            filled: RangeSet::new(),
            prefix_end: 0,
            next_run: u64::MAX,
            slots: SlotTable::default(),
            filled_bytes: 0,
            in_memory: 0,
            spilled: 0,
            spilled_bytes: 0,
            evicted: RangeSet::new(),
        }
    }

    /// The four-case [`Location`] of the `len` bytes at `offset` (which may reach past
    /// `u64::MAX`: such a range is simply not filled).
    pub(crate) fn location(&self, offset: u64, len: u64) -> Location {
        if len == 0 {
            return Location::BeforeIndex;
        }
        if offset < self.prefix_end {
            return if self.prefix_end - offset >= len {
                Location::BeforeIndex
            } else {
                Location::Bisected
            };
        }
        if offset > 0 && offset == self.prefix_end {
            return Location::AtIndex;
        }
        // Past the prefix: the set is up to date there.
        match self.filled.get(&offset) {
            // `r` contains `offset`, so `r.end > offset`: no overflow.
            Some(r) if r.end - offset >= len => Location::BeforeIndex,
            Some(_) => Location::Bisected,
            None if offset == 0 || self.filled.contains(&(offset - 1)) => Location::AtIndex,
            None => Location::AfterIndex,
        }
    }

    /// The filled byte ranges (a copy, with the prefix brought up to date).
    pub(crate) fn filled_ranges(&self) -> RangeSet<u64> {
        let mut ranges = self.filled.clone();
        if self.prefix_end > 0 {
            ranges.insert(0..self.prefix_end);
        }
        ranges
    }

    /// Brings the set's first run up to `prefix_end`, before the set is changed elsewhere.
    fn settle_prefix(&mut self) {
        if self.prefix_end > 0 {
            self.filled.insert(0..self.prefix_end);
        }
    }

    /// Recomputes `prefix_end` and `next_run` from the set (after `settle_prefix` and a change).
    fn reload_prefix(&mut self) {
        self.prefix_end = self.filled.get(&0).map_or(0, |r| r.end);
        let after = self.prefix_end.saturating_add(1);
        self.next_run = self
            .filled
            .overlapping(&(after..u64::MAX))
            .next()
            .map_or(u64::MAX, |r| r.start.max(after));
    }

    /// The end of the filled run that contains `offset`, if any.
    #[inline]
    pub(crate) fn filled_end(&self, offset: u64) -> Option<u64> {
        if offset < self.prefix_end {
            return Some(self.prefix_end);
        }
        self.filled.get(&offset).map(|r| r.end)
    }

    /// The filled bytes `range` as a slice of a full segment in RAM, without a copy; `None` if
    /// they are elsewhere or span segments. The slice keeps the segment's buffer alive, wherever
    /// the segment goes meanwhile.
    pub(crate) fn shared_bytes(&self, range: Range<u64>) -> Option<Bytes> {
        let segment = range.start >> self.shift;
        if range.is_empty() || (range.end - 1) >> self.shift != segment {
            return None;
        }
        let Some(Slot::Memory(r)) = self.slot(segment) else {
            return None;
        };
        let at = (range.start - (segment << self.shift)) as usize;
        let end = at + (range.end - range.start) as usize;
        (end <= r.data.len()).then(|| {
            touch(&r.referenced, &r.prefetched);
            r.data.slice(at..end)
        })
    }

    /// Pages of the slot table in use (for tests of its size).
    #[cfg(test)]
    pub(crate) fn slot_pages(&self) -> usize {
        self.slots.pages()
    }

    /// The start of the first segment in `[from, to)` (byte offsets; `from` a segment's start)
    /// that is not absent: filled, filling, or claimed by a fetch. `to` if there is none.
    pub(crate) fn first_taken(&self, from: u64, to: u64) -> u64 {
        let (first, last) = (from >> self.shift, to.saturating_sub(1) >> self.shift);
        (first..=last)
            .take_while(|_| from < to)
            .find(|&s| !matches!(self.slot(s), None | Some(Slot::Absent)))
            .map_or(to, |s| (s << self.shift).max(from))
    }

    /// The slot of `segment` (`None`: absent).
    #[inline]
    pub(crate) fn slot(&self, segment: u64) -> Option<&Slot> {
        self.slots.get(segment)
    }

    /// Publishes `piece`, the bytes `range` of `segment`, appending them to its filling prefix.
    pub(crate) fn append(&mut self, segment: u64, range: Range<u64>, piece: BytesMut) {
        if range.is_empty() {
            return;
        }
        let new = self.slots.update(segment, |slot| match slot {
            Slot::Filling(prefix) => {
                prefix.unsplit(piece);
                false
            }
            _ => {
                *slot = Slot::Filling(piece);
                true
            }
        });
        self.in_memory += u64::from(new);
        self.mark_filled(range);
    }

    /// Adds `range` to the filled set.
    fn mark_filled(&mut self, range: Range<u64>) {
        self.filled_bytes += range.end - range.start;
        if range.start == self.prefix_end && self.prefix_end > 0 && range.end < self.next_run {
            // The forward-only stream's publish: O(1).
            self.prefix_end = range.end;
            return;
        }
        self.settle_prefix();
        self.filled.insert(range);
        self.reload_prefix();
    }

    /// Claims an absent segment for a range-source fetch.
    pub(crate) fn claim(&mut self, segment: u64) {
        self.slots.update(segment, |slot| *slot = Slot::Fetching);
    }

    /// Gives a claimed segment back, unfilled.
    pub(crate) fn abandon(&mut self, segment: u64) {
        self.slots.update(segment, |slot| {
            if matches!(slot, Slot::Fetching) {
                *slot = Slot::Absent;
            }
        });
    }

    /// Publishes a whole fetched segment (`range` are its bytes) straight into memory; returns
    /// whether it had been evicted before (a re-fetch).
    pub(crate) fn insert_full(
        &mut self,
        segment: u64,
        range: Range<u64>,
        data: Bytes,
        prefetched: bool,
    ) -> bool {
        if range.is_empty() {
            self.abandon(segment);
            return false;
        }
        // Referenced from the start: the reader that fetched it is about to copy from it, and
        // CLOCK must not evict it before (a fresh fetch gets one pass of the hand).
        self.slots.update(segment, |slot| {
            *slot = Slot::Memory(Resident {
                data,
                prefetched: AtomicBool::new(prefetched),
                referenced: AtomicBool::new(true),
            })
        });
        self.in_memory += 1;
        self.mark_filled(range);
        let refetched = self.evicted.contains(&segment);
        if refetched {
            self.evicted.remove(segment..segment + 1);
        }
        refetched
    }

    /// Unfilled gaps between filled runs that start at or after `start`, where the kept bytes
    /// begin (0, or a windowed stream's window start): a stream filled from there on has none.
    pub(crate) fn holes(&self, start: u64) -> u64 {
        let runs = self.filled.iter().count() as u64;
        let from_start = self.filled.first().is_some_and(|r| r.start <= start);
        runs - u64::from(from_start)
    }

    /// Marks a filling segment complete: its bytes become an immutable [`Resident`].
    /// Returns whether there was anything to seal.
    pub(crate) fn seal(&mut self, segment: u64) -> bool {
        self.slots.update(segment, |slot| {
            match std::mem::replace(slot, Slot::Absent) {
                Slot::Filling(prefix) => {
                    *slot = Slot::Memory(Resident {
                        data: prefix.freeze(),
                        prefetched: AtomicBool::new(false),
                        referenced: AtomicBool::new(false),
                    });
                    true
                }
                other => {
                    *slot = other;
                    false
                }
            }
        })
    }

    /// Publishes an absent segment whose `len` bytes are in the spill storage already (a
    /// persistent cache's stored segment): it is filled, on disk. `false` if the slot was not
    /// absent.
    pub(crate) fn insert_spilled(&mut self, segment: u64, len: usize) -> bool {
        let inserted = self.slots.update(segment, |slot| {
            if !matches!(slot, Slot::Absent) {
                return false;
            }
            *slot = Slot::Disk {
                len,
                referenced: AtomicBool::new(false),
                prefetched: AtomicBool::new(false),
                map: OnceLock::new(),
            };
            true
        });
        if !inserted || len == 0 {
            return inserted;
        }
        self.spilled += 1;
        self.spilled_bytes += len as u64;
        let start = segment << self.shift;
        self.mark_filled(start..start + len as u64);
        true
    }

    /// Records that `segment` now lives in the spill storage; returns its RAM buffer.
    pub(crate) fn move_to_disk(&mut self, segment: u64) -> Option<Bytes> {
        let resident = self.slots.update(segment, |slot| {
            match std::mem::replace(slot, Slot::Absent) {
                Slot::Memory(resident) => {
                    *slot = Slot::Disk {
                        len: resident.data.len(),
                        referenced: AtomicBool::new(false),
                        prefetched: AtomicBool::new(resident.prefetched.load(Ordering::Relaxed)),
                        map: OnceLock::new(),
                    };
                    Some(resident)
                }
                other => {
                    *slot = other;
                    None
                }
            }
        })?;
        let len = resident.data.len();
        self.in_memory -= 1;
        self.spilled += 1;
        self.spilled_bytes += len as u64;
        Some(resident.data)
    }

    /// The reference bit of a full segment (in RAM or on disk), cleared; `None` for others.
    pub(crate) fn take_referenced(&self, segment: u64) -> Option<bool> {
        match self.slot(segment)? {
            Slot::Memory(Resident { referenced, .. }) | Slot::Disk { referenced, .. } => {
                Some(referenced.swap(false, Ordering::Relaxed))
            }
            _ => None,
        }
    }

    /// Turns a full segment back into a hole. `refetch`: a range source will fetch it again
    /// when read (and count a re-fetch); a stream's window drops it for good.
    pub(crate) fn evict(&mut self, segment: u64, refetch: bool) -> Option<Evicted> {
        let start = segment << self.shift;
        let evicted = self.slots.update(segment, |slot| {
            match std::mem::replace(slot, Slot::Absent) {
                Slot::Memory(resident) => Some(Evicted::Ram(resident.data)),
                Slot::Disk { len, map, .. } => Some(Evicted::Disk {
                    len,
                    map: map.into_inner().flatten(),
                }),
                other => {
                    *slot = other;
                    None
                }
            }
        })?;
        let len = match &evicted {
            Evicted::Ram(data) => {
                self.in_memory -= 1;
                data.len()
            }
            Evicted::Disk { len, .. } => {
                self.spilled -= 1;
                self.spilled_bytes -= *len as u64;
                *len
            }
        };
        if len > 0 {
            self.settle_prefix();
            self.filled.remove(start..start + len as u64);
            self.filled_bytes -= len as u64;
            self.reload_prefix();
        }
        if refetch {
            self.evicted.insert(segment..segment + 1);
        }
        Some(evicted)
    }

    /// Copies `dst.len()` filled bytes starting at `offset` into `dst`.
    ///
    /// The caller has checked that the range is filled; a slot that cannot serve it is reported
    /// as an error rather than a panic.
    #[inline]
    pub(crate) fn copy_out(
        &self,
        storage: Option<&Spill>,
        mut offset: u64,
        mut dst: &mut [u8],
    ) -> io::Result<u64> {
        let mut hits = 0;
        let mask = (1u64 << self.shift) - 1;
        while !dst.is_empty() {
            let segment = offset >> self.shift;
            let at = (offset & mask) as usize;
            let n = match self.slot(segment) {
                Some(Slot::Memory(r)) => {
                    hits += touch(&r.referenced, &r.prefetched);
                    copy_prefix(&r.data, at, dst)
                }
                Some(Slot::Filling(prefix)) => copy_prefix(prefix, at, dst),
                Some(Slot::Disk {
                    len,
                    referenced,
                    prefetched,
                    map,
                }) => {
                    hits += touch(referenced, prefetched);
                    let Some(storage) = storage else {
                        return Err(unfilled(offset));
                    };
                    let map = map.get_or_init(|| storage.map(offset - at as u64, *len));
                    match map {
                        Some(map) => copy_prefix(map, at, dst),
                        None => {
                            let n = dst.len().min(len.saturating_sub(at));
                            if n > 0 {
                                storage.read_at(offset, &mut dst[..n])?;
                            }
                            n
                        }
                    }
                }
                Some(Slot::Absent | Slot::Fetching) | None => 0,
            };
            if n == 0 {
                return Err(unfilled(offset));
            }
            dst = &mut dst[n..];
            offset += n as u64;
        }
        Ok(hits)
    }
}

/// A read of a full segment: sets its CLOCK bit and clears its read-ahead mark, each only if
/// needed (a store to a line other readers share would bounce it between cores). Returns 1 for
/// the first read of a segment read-ahead fetched.
#[inline]
fn touch(referenced: &AtomicBool, prefetched: &AtomicBool) -> u64 {
    if !referenced.load(Ordering::Relaxed) {
        referenced.store(true, Ordering::Relaxed);
    }
    u64::from(prefetched.load(Ordering::Relaxed) && prefetched.swap(false, Ordering::Relaxed))
}

/// Copies what `src[at..]` has of `dst`'s length; returns the count (0 if `at` is past `src`).
#[inline]
fn copy_prefix(src: &[u8], at: usize, dst: &mut [u8]) -> usize {
    let Some(src) = src.get(at..) else { return 0 };
    let n = src.len().min(dst.len());
    dst[..n].copy_from_slice(&src[..n]);
    n
}

fn unfilled(offset: u64) -> io::Error {
    io::Error::other(format!(
        "sparsebuf internal error: offset {offset} is indexed as filled but no segment holds it"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index_with(ranges: &[(u64, u64)]) -> Index {
        let mut ix = Index::new(4);
        for &(start, end) in ranges {
            ix.filled.insert(start..end);
        }
        ix.reload_prefix();
        ix
    }

    #[test]
    fn four_cases() {
        let ix = index_with(&[(0, 100)]);
        assert_eq!(ix.location(0, 100), Location::BeforeIndex);
        assert_eq!(ix.location(50, 10), Location::BeforeIndex);
        assert_eq!(ix.location(99, 2), Location::Bisected);
        assert_eq!(ix.location(100, 1), Location::AtIndex);
        assert_eq!(ix.location(101, 99), Location::AfterIndex);
        assert_eq!(ix.location(500, 0), Location::BeforeIndex);
        let empty = index_with(&[]);
        assert_eq!(empty.location(0, 1), Location::AtIndex);
        assert_eq!(empty.location(1, 1), Location::AfterIndex);
        // Holes: the end of any filled run is a frontier.
        let holes = index_with(&[(0, 10), (20, 30)]);
        assert_eq!(holes.location(10, 5), Location::AtIndex);
        assert_eq!(holes.location(30, 1), Location::AtIndex);
        assert_eq!(holes.location(12, 13), Location::AfterIndex);
        assert_eq!(holes.location(25, 10), Location::Bisected);
        // Ranges running past u64::MAX are never filled.
        let top = index_with(&[(u64::MAX - 10, u64::MAX)]);
        assert_eq!(top.location(u64::MAX - 5, 5), Location::BeforeIndex);
        assert_eq!(top.location(u64::MAX - 5, 6), Location::Bisected);
        assert_eq!(top.location(u64::MAX, u64::MAX), Location::AtIndex);
        assert_eq!(ix.location(u64::MAX, 5), Location::AfterIndex);
    }

    #[test]
    fn first_taken_finds_claimed_and_filled_segments() {
        let mut ix = Index::new(4); // 16-byte segments
        assert_eq!(ix.first_taken(0, 160), 160);
        ix.claim(5);
        assert_eq!(ix.first_taken(0, 160), 80);
        assert_eq!(ix.first_taken(96, 160), 160);
        assert_eq!(ix.first_taken(80, 160), 80);
        let mut piece = BytesMut::zeroed(16);
        piece[0] = 1;
        ix.append(2, 32..48, piece);
        assert_eq!(ix.first_taken(0, 160), 32);
        assert_eq!(ix.first_taken(0, 32), 32);
        assert_eq!(ix.first_taken(48, 48), 48);
        ix.abandon(5);
        assert_eq!(ix.first_taken(48, 160), 160);
    }

    #[test]
    fn append_seal_and_spill_keep_counts_and_bytes() {
        let mut ix = Index::new(4); // 16-byte segments
        let mut tail = BytesMut::zeroed(16);
        tail[..16].copy_from_slice(&(0u8..16).collect::<Vec<_>>());
        let first = tail.split_to(5);
        ix.append(0, 0..5, first);
        ix.append(0, 5..5, BytesMut::new());
        assert_eq!((ix.in_memory, ix.filled_bytes), (1, 5));
        let mut got = [0u8; 5];
        assert_eq!(ix.copy_out(None, 0, &mut got).unwrap(), 0);
        assert_eq!(got, [0, 1, 2, 3, 4]);
        // Reading past the published prefix is an error, not a panic.
        assert!(ix.copy_out(None, 3, &mut [0u8; 4]).is_err());

        let rest = tail.split_to(11);
        ix.append(0, 5..16, rest);
        assert!(ix.seal(0));
        assert!(!ix.seal(1));
        let mut all = [0u8; 16];
        ix.copy_out(None, 0, &mut all).unwrap();
        assert_eq!(all.to_vec(), (0u8..16).collect::<Vec<_>>());
        assert_eq!(ix.take_referenced(0), Some(true));
        assert_eq!(ix.take_referenced(0), Some(false));

        let storage = Spill::Custom(std::sync::Arc::new(
            crate::store::spill::HeapStorage::default(),
        ));
        storage.reserve(16).unwrap();
        storage.write_at(0, &all).unwrap();
        let freed = ix.move_to_disk(0).unwrap();
        assert_eq!(&freed[..], &all[..]);
        assert_eq!((ix.in_memory, ix.spilled, ix.spilled_bytes), (0, 1, 16));
        let mut again = [0u8; 10];
        ix.copy_out(Some(&storage), 6, &mut again).unwrap();
        assert_eq!(again.to_vec(), (6u8..16).collect::<Vec<_>>());
        // Without storage, a spilled segment cannot be served: an error, not a panic.
        assert!(ix.copy_out(None, 0, &mut again).is_err());
    }
}
