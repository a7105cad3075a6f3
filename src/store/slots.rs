//! The per-segment slot table: sparse, in pages, so its size follows the segments that hold
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

use crate::store::index::Slot;

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
