//! The RAM tier's data: the buffer pool, the CLOCK lists of the segments in RAM and in the
//! spill storage, and which segments in RAM the spiller wrote ahead. Plain data with list
//! operations; the policy that moves segments between the tiers is the engine's `budget.rs`.

use std::collections::{HashSet, VecDeque};

use bytes::BytesMut;

use crate::store::buffers::Pool;

/// Owned by the buffer's tiers mutex; taken by whoever completes a segment.
///
/// Invariant: `clock` lists exactly the segments whose slot is `Memory`, and `disk_clock` those
/// whose slot is `Disk`, each in the order they arrived (rotated by the CLOCK hand). Of the
/// `Memory` segments of a stream without a window, `cleaning` were handed to the spiller and
/// `clean` were written to the spill storage already (see `spiller.rs`); both count against
/// the disk budget. Lock order: the writer role, then this, then the index.
pub(crate) struct Tiers {
    pub(crate) pool: Pool,
    pub(crate) clock: VecDeque<u64>,
    /// The segments in the spill storage, in the same way.
    pub(crate) disk_clock: VecDeque<u64>,
    /// In RAM and written to the spill storage too: evicted with no I/O.
    pub(crate) clean: HashSet<u64>,
    /// In RAM, queued for the spiller to write.
    pub(crate) cleaning: HashSet<u64>,
    /// The spiller failed a write: no more cleaning ahead until an inline spill succeeds.
    pub(crate) cleaning_paused: bool,
}

impl Tiers {
    pub(crate) fn new(pool: Pool) -> Self {
        Tiers {
            pool,
            clock: VecDeque::new(),
            disk_clock: VecDeque::new(),
            clean: HashSet::new(),
            cleaning: HashSet::new(),
            cleaning_paused: false,
        }
    }

    /// A segment buffer, recycled if one is spare: `size` initialised bytes, or (`empty`) none
    /// and room for `size`.
    pub(crate) fn take(&mut self, empty: bool) -> BytesMut {
        if empty {
            self.pool.take_empty()
        } else {
            self.pool.take()
        }
    }

    /// Releases a buffer taken with `take` that never reached the index.
    pub(crate) fn forget(&mut self) {
        self.pool.forget();
    }

    /// Records a segment that just became `Memory`.
    pub(crate) fn admit(&mut self, segment: u64) {
        self.clock.push_back(segment);
    }

    /// The clean segment that arrived first, taken out of the CLOCK list.
    pub(crate) fn take_oldest_clean(&mut self) -> Option<u64> {
        let at = self.clock.iter().position(|s| self.clean.contains(s))?;
        let segment = self.clock.remove(at)?;
        self.clean.remove(&segment);
        Some(segment)
    }

    /// Removes `segment` from the CLOCK list it is in (RAM first, where the oldest segments of
    /// a stream mostly are); whether it was in one.
    pub(crate) fn remove(&mut self, segment: u64) -> bool {
        remove(&mut self.clock, segment) || remove(&mut self.disk_clock, segment)
    }

    /// Segments that take room in the spill storage: spilled, written ahead, queued to be.
    pub(crate) fn on_disk(&self) -> usize {
        self.disk_clock.len() + self.clean.len() + self.cleaning.len()
    }
}

/// Removes `segment` from a CLOCK list, looking from the front; whether it was there.
fn remove(list: &mut VecDeque<u64>, segment: u64) -> bool {
    match list.iter().position(|&s| s == segment) {
        Some(at) => list.remove(at).is_some(),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::buffers::BufferCounts;
    use crate::sync::Arc;

    fn tiers() -> Tiers {
        Tiers::new(Pool::new(64, Arc::new(BufferCounts::default())))
    }

    #[test]
    fn segments_are_admitted_in_order_and_removed_from_either_list() {
        let mut t = tiers();
        for s in [3, 4, 5] {
            t.admit(s);
        }
        t.disk_clock.push_back(1);
        assert!(t.remove(4));
        assert!(t.remove(1));
        assert!(!t.remove(9));
        assert_eq!(t.clock, [3, 5]);
        assert!(t.disk_clock.is_empty());
    }

    #[test]
    fn the_oldest_clean_segment_is_taken_out_of_the_clock() {
        let mut t = tiers();
        for s in [7, 8, 9] {
            t.admit(s);
        }
        t.clean.extend([9, 8]);
        t.cleaning.insert(7);
        assert_eq!(t.on_disk(), 3);
        assert_eq!(t.take_oldest_clean(), Some(8));
        assert_eq!(t.clock, [7, 9]);
        assert_eq!(t.take_oldest_clean(), Some(9));
        assert_eq!(t.take_oldest_clean(), None);
        assert_eq!(t.on_disk(), 1);
    }

    #[test]
    fn buffers_taken_and_forgotten_are_counted() {
        let counts = Arc::new(BufferCounts::default());
        let mut t = Tiers::new(Pool::new(64, counts.clone()));
        let a = t.take(false);
        let b = t.take(true);
        assert_eq!((a.len(), b.len(), b.capacity() >= 64), (64, 0, true));
        t.forget();
        t.forget();
        assert_eq!(counts.live.load(crate::sync::Ordering::Relaxed), 0);
    }
}
