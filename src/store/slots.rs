//! Where each segment's bytes live ([`Slot`]), and the table of slots: sparse, in pages, so its size follows the segments that hold
//! something rather than the furthest offset ever touched.
//!
//! A plain `Vec` indexed by segment number grew to the largest segment read: a live stream's
//! table grew forever (about 40 bytes per segment streamed, long after the window dropped them),
//! and a read far into a range source of unknown length asked for a table of petabytes. Here
//! slots live in pages of [`PAGE`] consecutive segments; a page is allocated when one of its
//! slots first holds something and freed when all are [`Slot::Absent`] again. The first
//! [`DENSE_PAGES`] pages (256 GiB of stream with 64 KiB segments) are found by index in a `Vec`
//! of page pointers (at most 512 KiB), so the read path's lookup stays two loads; pages beyond
//! are kept in a `BTreeMap` by page number.

use std::collections::BTreeMap;

use bytes::{Bytes, BytesMut};

use crate::store::spill::Mapped;
use crate::sync::{AtomicBool, OnceLock};

/// A segment buffer in RAM, with the reference bit of the CLOCK eviction policy.
pub(crate) struct Resident {
    pub(crate) data: Bytes,
    /// Fetched by read-ahead and not read since; the first read counts a read-ahead hit.
    pub(crate) prefetched: AtomicBool,
    /// Set by readers (relaxed, only if clear, to keep the cache line shared); cleared by the
    /// writer when it passes the segment over for spilling.
    pub(crate) referenced: AtomicBool,
}

/// Where one segment's bytes live.
pub(crate) enum Slot {
    /// Nothing of the segment is filled.
    Absent,
    /// A range-source fetch has claimed the segment; its bytes are not there yet.
    Fetching,
    /// The segment is being filled: this is its published prefix. The writer owns the rest of
    /// the same allocation and appends to this prefix in O(1) (`BytesMut::unsplit`).
    Filling(BytesMut),
    /// The segment is complete and in RAM. Full segments are immutable.
    Memory(Resident),
    /// The segment is complete and in the spill storage at `segment * segment_size`.
    Disk {
        /// Bytes in the segment (the last one may be short).
        len: usize,
        /// The CLOCK reference bit, as for [`Resident`].
        referenced: AtomicBool,
        /// Fetched by read-ahead and not read since, as for [`Resident`].
        prefetched: AtomicBool,
        /// A map of the segment's bytes, made by its first read; `None` inside if it could not
        /// be made (then reads use the storage's `read_at`). Dropped with the slot, so the
        /// address space of maps follows the spilled segments.
        map: OnceLock<Option<Mapped>>,
    },
}

/// Where an evicted segment's bytes were. A spilled segment's map comes along, to be unmapped
/// after the index lock is released.
pub(crate) enum Evicted {
    Ram(Bytes),
    Disk { len: usize, map: Option<Mapped> },
}

/// Segments per page (a power of two). 64 slots are about 2.5 KiB, and cover 4 MiB of stream
/// with the default 64 KiB segments.
pub(crate) const PAGE: usize = 64;
const PAGE_SHIFT: u32 = PAGE.trailing_zeros();

/// Pages found by index; the rest are in the map.
const DENSE_PAGES: u64 = 1 << 16;

/// Invariant: every page present (in `dense` or `sparse`) has at least one slot that is not
/// `Absent`, and its `used` counts them.
#[derive(Default)]
pub(crate) struct SlotTable {
    dense: Vec<Option<Box<Page>>>,
    sparse: BTreeMap<u64, Box<Page>>,
}

struct Page {
    slots: [Slot; PAGE],
    used: usize,
}

fn split(segment: u64) -> (u64, usize) {
    (segment >> PAGE_SHIFT, (segment as usize) & (PAGE - 1))
}

impl SlotTable {
    /// The slot of `segment`; `None` if its page holds nothing (the slot is `Absent`).
    #[inline]
    pub(crate) fn get(&self, segment: u64) -> Option<&Slot> {
        let (key, i) = split(segment);
        let page = if key < DENSE_PAGES {
            self.dense.get(key as usize)?.as_deref()
        } else {
            self.sparse.get(&key).map(|p| &**p)
        };
        page.map(|p| &p.slots[i])
    }

    /// Changes the slot of `segment` through `f`, allocating its page if needed and freeing it
    /// if it ends up holding nothing.
    pub(crate) fn update<R>(&mut self, segment: u64, f: impl FnOnce(&mut Slot) -> R) -> R {
        let (key, i) = split(segment);
        let new_page = || {
            Box::new(Page {
                slots: std::array::from_fn(|_| Slot::Absent),
                used: 0,
            })
        };
        let page = if key < DENSE_PAGES {
            let at = key as usize;
            if self.dense.len() <= at {
                self.dense.resize_with(at + 1, || None);
            }
            self.dense[at].get_or_insert_with(new_page)
        } else {
            self.sparse.entry(key).or_insert_with(new_page)
        };
        let was = !matches!(page.slots[i], Slot::Absent);
        let out = f(&mut page.slots[i]);
        let now = !matches!(page.slots[i], Slot::Absent);
        page.used = page.used + usize::from(now) - usize::from(was);
        if page.used == 0 {
            if key < DENSE_PAGES {
                self.dense[key as usize] = None;
            } else {
                self.sparse.remove(&key);
            }
        }
        out
    }

    /// Pages allocated (for tests of the table's size).
    #[cfg(test)]
    pub(crate) fn pages(&self) -> usize {
        self.dense.iter().flatten().count() + self.sparse.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_come_and_go_with_their_slots() {
        let mut t = SlotTable::default();
        assert!(t.get(5).is_none());
        t.update(5, |s| *s = Slot::Fetching);
        t.update(6, |s| *s = Slot::Fetching);
        assert_eq!(t.pages(), 1);
        assert!(matches!(t.get(5), Some(Slot::Fetching)));
        assert!(matches!(t.get(7), Some(Slot::Absent)));
        // Far away: one more page, not a table up to there.
        t.update(u64::MAX, |s| *s = Slot::Fetching);
        assert_eq!(t.pages(), 2);
        assert!(matches!(t.get(u64::MAX), Some(Slot::Fetching)));
        t.update(5, |s| *s = Slot::Absent);
        assert_eq!(t.pages(), 2);
        t.update(6, |s| *s = Slot::Absent);
        assert_eq!(t.pages(), 1);
        // Looking at an absent slot through `update` leaves nothing behind.
        t.update(1000, |s| assert!(matches!(s, Slot::Absent)));
        assert_eq!(t.pages(), 1);
        t.update(u64::MAX, |s| *s = Slot::Absent);
        assert_eq!(t.pages(), 0);
    }
}
