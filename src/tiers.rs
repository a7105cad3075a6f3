//! The RAM tier's bookkeeping: the buffer pool, the CLOCK list of segments in memory, and
//! spilling the coldest of them when RAM exceeds the budget.

use std::collections::VecDeque;
use std::io;
use std::ops::Range;

use bytes::{Bytes, BytesMut};

use crate::error::Error;
use crate::holds::Blocked;
use crate::index::{Evicted, Slot};
use crate::segment::Pool;
use crate::shared::{Filler, Shared};
use crate::spiller::Written;
use crate::sync::{Arc, Ordering};

/// Owned by the buffer's tiers mutex; taken by whoever completes a segment.
///
/// Invariant: `clock` lists exactly the segments whose slot is `Memory`, except the ones handed
/// to the spiller (`spilling` of them, which are in neither list), and `disk_clock` those whose
/// slot is `Disk`, each in the order they arrived (rotated by the CLOCK hand). Lock order: the
/// writer role, then this, then the index.
pub(crate) struct Tiers {
    pool: Pool,
    clock: VecDeque<u64>,
    /// The segments in the spill storage, in the same way.
    disk_clock: VecDeque<u64>,
    /// Segments the spiller is writing: still in RAM, and counted against the disk budget.
    spilling: usize,
}

impl Tiers {
    pub(crate) fn new(pool: Pool) -> Self {
        Tiers {
            pool,
            clock: VecDeque::new(),
            disk_clock: VecDeque::new(),
            spilling: 0,
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

    /// Brings RAM within the budget: spills the coldest full segments, making room on disk
    /// (or, with no room, dropping them) if the source can be read again. When a stream's disk
    /// budget is full, a windowed stream drops its oldest segment, unless a reader still needs
    /// it: then nothing is dropped and the writer must wait (`Err`). Any other stream keeps its
    /// bytes in RAM, over the budget, because they cannot be fetched again; so does a failed
    /// spill.
    ///
    /// `background`: the caller is a stream's writer, which waits for the spiller before it
    /// gives up its role (see `spiller.rs`); a victim may then be written by the spiller.
    pub(crate) fn enforce_budget(
        &mut self,
        shared: &Shared,
        filling: bool,
        background: bool,
    ) -> Result<(), Blocked> {
        let cfg = &shared.config;
        let refetchable = matches!(shared.filler, Filler::Ranged(_));
        // The segment being filled (a stream writer's, while its source lasts) needs a buffer too.
        let filling = usize::from(filling);
        while (self.clock.len() + filling).saturating_mul(cfg.segment_size) > cfg.memory_budget {
            let Some(victim) = pick(&mut self.clock, shared) else {
                return Ok(());
            };
            if !self.make_disk_room(shared, refetchable) {
                if refetchable {
                    self.evict(shared, victim);
                    continue;
                }
                self.clock.push_front(victim);
                if shared.window.is_some() && self.drop_oldest(shared)? {
                    continue;
                }
                return Ok(());
            }
            if background {
                // One in flight: take the previous one back, hand this one over, and settle the
                // previous one while the spiller writes this one.
                let previous = shared.spiller.finish();
                let submitted = shared.spiller.submit(&shared.me, victim, write_out);
                let failed = previous.is_some_and(|done| !self.settle_background(shared, done));
                if submitted {
                    self.spilling += 1;
                }
                if failed {
                    // As inline: a failed spill stays in RAM, over the budget, until the next
                    // segment tries again (retrying now would spin on a full disk).
                    return Ok(());
                }
                if submitted {
                    continue;
                }
            }
            match self.spill(shared, victim) {
                Ok(()) => self.disk_clock.push_back(victim),
                Err(error) => {
                    shared.spill_failed(Error::Spill {
                        offset: victim << cfg.shift,
                        error: Arc::new(error),
                    });
                    if refetchable {
                        // No room on disk after all: a range source can drop it and fetch again.
                        self.evict(shared, victim);
                        continue;
                    }
                    // A stream's bytes exist nowhere else: keep them in RAM, over the budget.
                    self.clock.push_front(victim);
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// A windowed stream over its budgets: drops the oldest kept segment, shrinking the window
    /// by one segment, if no reader holds a byte of it. `Ok(false)` if there is no full segment
    /// to drop.
    fn drop_oldest(&mut self, shared: &Shared) -> Result<bool, Blocked> {
        let shift = shared.config.shift;
        let (from, oldest) = {
            let state = shared.state.read();
            let from = state.window_start;
            let oldest = from >> shift;
            match state.index.slot(oldest) {
                Some(Slot::Memory(_) | Slot::Disk { .. }) => (from, oldest),
                _ => return Ok(false),
            }
        };
        let to = (oldest + 1) << shift;
        shared.holds.check(from, to)?;
        // Only the writer moves the window start, and it holds the tiers lock (as this does).
        {
            // The last segment may be short: the window never starts past the stream's end.
            let mut state = shared.state.write();
            let to = state.clip(to);
            state.raise_window_start(to);
        }
        self.drop_segments(shared, oldest..oldest + 1);
        Ok(true)
    }

    /// Whether one more segment fits the disk budget; for a source that can be read again,
    /// evicts the coldest spilled segments to make it fit.
    fn make_disk_room(&mut self, shared: &Shared, refetchable: bool) -> bool {
        let capacity = shared.config.disk_budget / shared.config.segment_size as u64;
        while (self.disk_clock.len() + self.spilling) as u64 >= capacity {
            if !refetchable {
                return false;
            }
            let Some(victim) = pick(&mut self.disk_clock, shared) else {
                return false;
            };
            self.evict(shared, victim);
        }
        true
    }

    /// Drops a full segment from the index (under the write lock, so no reader is copying it),
    /// then releases its RAM buffer or its space in the spill file.
    fn evict(&mut self, shared: &Shared, segment: u64) {
        self.drop_segment(shared, segment, true);
    }

    /// Drops `segments` for good: a stream's window moved past them. Each is looked up from the
    /// front of its CLOCK list, where the oldest segments mostly are (the hand rotates the lists,
    /// so they can be anywhere), instead of scanning both whole lists per dropped segment.
    pub(crate) fn drop_segments(&mut self, shared: &Shared, segments: Range<u64>) {
        for segment in segments {
            if !remove(&mut self.clock, segment) {
                remove(&mut self.disk_clock, segment);
            }
            self.drop_segment(shared, segment, false);
        }
    }

    fn drop_segment(&mut self, shared: &Shared, segment: u64, refetch: bool) {
        let evicted = shared.state.write().index.evict(segment, refetch);
        match evicted {
            Some(Evicted::Ram(data)) => self.pool.give(data),
            Some(Evicted::Disk { len, map }) => {
                // Unmapped (outside the index lock) before its space is released.
                drop(map);
                let offset = segment << shared.config.shift;
                let released = shared.storage().and_then(|s| s.discard(offset, len as u64));
                if let Err(error) = released {
                    shared.spill_failed(Error::Spill {
                        offset,
                        error: Arc::new(error),
                    });
                }
            }
            None => return,
        }
        shared.evictions.fetch_add(1, Ordering::Relaxed);
    }

    /// Writes a full segment to the spill storage outside the index lock, then points its slot
    /// at the storage under a short write lock. Readers copy under the read lock, so none is
    /// copying from the RAM buffer when it is released.
    fn spill(&mut self, shared: &Shared, segment: u64) -> io::Result<()> {
        match write_out(shared, segment)? {
            Some(data) => self.settle_spill(shared, segment, data),
            None => Ok(()),
        }
    }

    /// Points a written segment's slot at the storage and recycles its buffer; if the segment
    /// was dropped while it was being written (a window moved past it), releases the space.
    fn settle_spill(&mut self, shared: &Shared, segment: u64, data: Bytes) -> io::Result<()> {
        let len = data.len() as u64;
        let freed = shared.state.write().index.move_to_disk(segment);
        drop(data);
        match freed {
            Some(freed) => {
                self.pool.give(freed);
                Ok(())
            }
            None => {
                let offset = segment << shared.config.shift;
                shared.storage()?.discard(offset, len)
            }
        }
    }

    /// Takes back the segment the spiller was writing, if any (waiting for it), and settles it
    /// as `enforce_budget` would have: its slot points at the storage, or after a failure it
    /// stays in RAM, back in the CLOCK list, and the failure is recorded.
    pub(crate) fn finish_background(&mut self, shared: &Shared) {
        if let Some(done) = shared.spiller.finish() {
            self.settle_background(shared, done);
        }
    }

    /// Settles a segment the spiller wrote (or failed to): see `finish_background`. Returns
    /// `false` if the spill failed.
    fn settle_background(&mut self, shared: &Shared, (segment, written): (u64, Written)) -> bool {
        self.spilling -= 1;
        let settled = match written {
            Ok(Some(data)) => self.settle_spill(shared, segment, data).map(|()| true),
            Ok(None) => Ok(false),
            Err(error) => Err(error),
        };
        match settled {
            Ok(true) => self.disk_clock.push_back(segment),
            Ok(false) => {}
            Err(error) => {
                shared.spill_failed(Error::Spill {
                    offset: segment << shared.config.shift,
                    error: Arc::new(error),
                });
                let in_ram = matches!(
                    shared.state.read().index.slot(segment),
                    Some(Slot::Memory(_))
                );
                if in_ram {
                    self.clock.push_front(segment);
                }
                return false;
            }
        }
        true
    }
}

/// Writes a full RAM segment to the spill storage, with no lock held; returns its buffer (to
/// be released once the slot points at the storage), or `None` if the segment is not in RAM
/// any more.
fn write_out(shared: &Shared, segment: u64) -> Written {
    let data = match shared.state.read().index.slot(segment) {
        Some(Slot::Memory(resident)) => resident.data.clone(),
        _ => return Ok(None),
    };
    let offset = segment << shared.config.shift;
    let end = offset + data.len() as u64;
    let storage = shared.storage()?;
    storage.reserve(end)?;
    storage.write_at(offset, &data)?;
    Ok(Some(data))
}

/// Removes `segment` from a CLOCK list; whether it was there.
fn remove(list: &mut VecDeque<u64>, segment: u64) -> bool {
    match list.iter().position(|&s| s == segment) {
        Some(at) => list.remove(at).is_some(),
        None => false,
    }
}

/// CLOCK over one tier's list: the oldest segment not read since the hand last passed it,
/// passing over those that read-ahead keeps for the latest reader (see `Ahead::protected`).
/// Segments that `save` is copying are never chosen; `None` if they are all there is.
fn pick(clock: &mut VecDeque<u64>, shared: &Shared) -> Option<u64> {
    let protected = shared.ahead.protected();
    let shift = shared.config.shift;
    let kept = |segment: u64| {
        let start = segment << shift;
        start < protected.end && protected.start < start.saturating_add(1 << shift)
    };
    let state = shared.state.read();
    for _ in 0..=2 * clock.len() {
        let segment = clock.pop_front()?;
        match state.index.take_referenced(segment) {
            Some(false) if !kept(segment) && !state.pinned(segment) => return Some(segment),
            Some(_) => clock.push_back(segment),
            None => {}
        }
    }
    let at = clock.iter().position(|&s| !state.pinned(s))?;
    clock.remove(at)
}
