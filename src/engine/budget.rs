//! The budget policy: which segments move between the RAM tier, the spill storage and
//! nowhere, so that RAM and disk stay within their budgets (see `store/tiers.rs` for the lists
//! it works on). Spilling is CLOCK over the RAM list; a range source evicts what it can fetch
//! again; a windowed stream drops its oldest segment unless a reader still needs it; a stream
//! that has outgrown its budget has the spiller write its oldest segments ahead of need.

use std::collections::VecDeque;
use std::io;
use std::ops::Range;

use bytes::Bytes;

use crate::engine::account::{identity, Member};
use crate::engine::holds::Blocked;
use crate::engine::shared::{Filler, Shared, State};
use crate::engine::spiller::Written;
use crate::error::Error;
use crate::store::slots::{Evicted, Slot};
use crate::store::tiers::Tiers;
use crate::sync::{Arc, Ordering};

/// The most segments cleaned ahead of need: half the budget, up to 32 (2 MiB of the default
/// segments); below 2, spilling is inline. Cleaning starts once the stream has outgrown the
/// budget (a stream that fits is never written), so the depth costs no wasted writes.
const CLEAN_AHEAD: usize = 32;

/// [`CLEAN_AHEAD`]'s rule for a memory budget and segment size.
fn clean_ahead_depth(memory_budget: usize, segment_size: usize) -> usize {
    let depth = (memory_budget / segment_size / 2).min(CLEAN_AHEAD);
    if depth < 2 {
        0
    } else {
        depth
    }
}

impl Tiers {
    /// How many segments a stream cleans ahead of need (0: it spills inline).
    fn depth(shared: &Shared) -> usize {
        clean_ahead_depth(shared.config.memory_budget, shared.config.segment_size)
    }

    /// Takes back what the spiller wrote: each written segment is clean (if still in RAM); a
    /// failed write is recorded and pauses cleaning (a full disk is not hammered).
    fn collect(&mut self, shared: &Shared, results: Vec<(u64, Written)>) {
        for (segment, written) in results {
            // A result for a segment no longer awaited (spilled inline meanwhile) is not clean;
            // a failed write is counted all the same.
            let awaited = self.cleaning.remove(&segment);
            match written {
                Ok(Some(_written)) if awaited => {
                    self.clean.insert(segment);
                }
                Ok(_) => {}
                Err(error) => {
                    self.cleaning_paused = true;
                    shared.spill_failed(Error::Spill {
                        offset: segment << shared.config.shift,
                        error: Arc::new(error),
                    });
                }
            }
        }
    }

    /// Waits for the spiller's writes in flight and takes their results back, so that the
    /// counters (spill errors above all) are exact when they are read.
    pub(crate) fn settle_spiller(&mut self, shared: &Shared) {
        if !self.cleaning.is_empty() {
            let done = shared.spiller.drain_to(0);
            self.collect(shared, done);
        }
    }

    /// Once RAM is within the clean-ahead depth of the budget and the spiller is down to half
    /// its depth, hands it the oldest segments that are neither clean nor queued, up to the
    /// depth, while the disk budget has room for them: one hand-off (and at most one wake-up)
    /// per half a depth of segments.
    fn clean_ahead(&mut self, shared: &Shared, filling: usize, depth: usize) {
        let cfg = &shared.config;
        let near = cfg.memory_budget.saturating_sub(depth * cfg.segment_size);
        // Only a stream that outgrew the budget once: one that fits is never written.
        if self.cleaning_paused
            || self.disk_clock.is_empty()
            || self.cleaning.len() > depth / 2
            || (self.clock.len() + filling) * cfg.segment_size <= near
        {
            return;
        }
        let capacity = cfg.disk_budget / cfg.segment_size as u64;
        let on_disk = self.on_disk();
        let room =
            (capacity.saturating_sub(on_disk as u64) as usize).min(depth - self.cleaning.len());
        let batch: Vec<u64> = self
            .clock
            .iter()
            .copied()
            .filter(|s| !self.clean.contains(s) && !self.cleaning.contains(s))
            .take(room)
            .collect();
        if batch.is_empty() {
            return;
        }
        if !shared.spiller.submit(&shared.me, &batch, write_run) {
            self.cleaning_paused = true;
            return;
        }
        self.cleaning.extend(batch);
    }

    /// Brings RAM within the budget: spills the coldest full segments, making room on disk
    /// (or, with no room, dropping them) if the source can be read again. When a stream's disk
    /// budget is full, a windowed stream drops its oldest segment, unless a reader still needs
    /// it: then nothing is dropped and the writer must wait (`Err`). Any other stream keeps its
    /// bytes in RAM, over the budget, because they cannot be fetched again; so does a failed
    /// spill.
    ///
    /// `background`: the caller is the writer of a stream without a window, whose segments the
    /// spiller cleans ahead of need (see `spiller.rs`): a clean victim moves to the spill
    /// storage with no I/O here, and a victim still queued is waited for.
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
        // A cache's members spill inline: their workers are shared, and a writer waiting for
        // a queued job on a busy pool could wait for ever.
        let depth = if background && shared.config.account.is_none() {
            Self::depth(shared)
        } else {
            0
        };
        if depth > 0 {
            let done = shared.spiller.take_done();
            self.collect(shared, done);
            self.clean_ahead(shared, filling, depth);
        }
        loop {
            let over =
                (self.clock.len() + filling).saturating_mul(cfg.segment_size) > cfg.memory_budget;
            if !over {
                // Within its own budget; in a cache, the sum over the members must be too, and
                // the global hand finds who gives a segment up.
                match &cfg.account {
                    Some(account) if account.memory_over(filling) => {
                        let me = identity(shared);
                        if account.reclaim(me, &mut |disk| self.give_up(shared, disk), false) {
                            continue;
                        }
                        return Ok(());
                    }
                    _ => return Ok(()),
                }
            }
            let Some(victim) = pick(&mut self.clock, shared) else {
                return Ok(());
            };
            if self.clean.remove(&victim) {
                self.settle_clean(shared, victim);
                continue;
            }
            if depth > 0 {
                // Any clean segment will do: CLOCK's choice is a heuristic, waiting is a cost.
                if let Some(clean) = self.take_oldest_clean() {
                    self.clock.push_front(victim);
                    self.settle_clean(shared, clean);
                    continue;
                }
                if !self.cleaning.is_empty() {
                    // Ahead of the spiller: sleep until it has written half its queue (one
                    // wake-up per half a queue of segments), then look again.
                    let done = shared.spiller.drain_to(depth / 2);
                    self.collect(shared, done);
                    self.clock.push_front(victim);
                    if self.clean.is_empty() {
                        // Nothing came back clean (the writes failed, or the spiller is gone
                        // because the buffer is being dropped): spill inline.
                        self.cleaning.clear();
                        self.cleaning_paused = true;
                    }
                    continue;
                }
            }
            let spilling = cfg.account.as_ref().map(|a| a.spilling.lock());
            if !self.make_disk_room(shared, refetchable, true) {
                drop(spilling);
                if self.evict_or_keep(shared, victim, refetchable) {
                    continue;
                }
                if shared.window.is_some() && self.drop_oldest(shared)? {
                    continue;
                }
                return Ok(());
            }
            let spilled = self.spill(shared, victim);
            drop(spilling);
            match spilled {
                Ok(()) => {
                    self.disk_clock.push_back(victim);
                    self.cleaning_paused = false;
                }
                Err(error) => {
                    shared.spill_failed(Error::Spill {
                        offset: victim << cfg.shift,
                        error: Arc::new(error),
                    });
                    if self.evict_or_keep(shared, victim, refetchable) {
                        continue;
                    }
                    return Ok(());
                }
            }
        }
    }

    /// Writes `segment`, in RAM, to a persistent cache's directory (see `persist.rs`); it is
    /// then clean: it leaves RAM with no write. Nothing happens if it left RAM already, or if
    /// the disk has no room (it is then fetched again after a restart).
    pub(crate) fn write_through(&mut self, shared: &Shared, segment: u64) {
        if self.clean.contains(&segment) {
            return;
        }
        let data = match shared.state.read().index.slot(segment) {
            Some(Slot::Memory(resident)) => resident.data.clone(),
            _ => return,
        };
        let Some(account) = &shared.config.account else {
            return;
        };
        let spilling = account.spilling.lock();
        if !self.make_disk_room(shared, true, true) {
            return;
        }
        let offset = segment << shared.config.shift;
        let written = shared.storage().and_then(|s| s.write_at(offset, &data));
        drop(spilling);
        match written {
            Ok(()) => {
                self.clean.insert(segment);
                account.flush_soon();
            }
            Err(error) => shared.spill_failed(Error::Spill {
                offset,
                error: Arc::new(error),
            }),
        }
    }

    /// One step of the cache's global hand in this buffer (see `account.rs`): gives up its
    /// coldest RAM segment (spilled, or dropped if the source can be read again and the disk
    /// has no room), or (`disk`) the coldest spilled segment of a source that can be read
    /// again. Whether a segment was freed.
    pub(crate) fn give_up(&mut self, shared: &Shared, disk: bool) -> bool {
        let refetchable = matches!(shared.filler, Filler::Ranged(_));
        if disk {
            if !refetchable {
                return false;
            }
            if let Some(crate::store::storage::Spill::Region(region)) = shared.storage.get() {
                // A stored copy nobody read since the restart goes first.
                if let Some((segment, durable)) = region.take_any_stored() {
                    region.reject_slot(segment, durable.slot);
                    return true;
                }
            }
            let Some(victim) = pick(&mut self.disk_clock, shared) else {
                return false;
            };
            self.evict(shared, victim);
            return true;
        }
        let Some(victim) = pick(&mut self.clock, shared) else {
            return false;
        };
        if self.clean.remove(&victim) {
            self.settle_clean(shared, victim);
            return true;
        }
        let spilling = shared.config.account.as_ref().map(|a| a.spilling.lock());
        if !self.make_disk_room(shared, refetchable, false) {
            drop(spilling);
            return self.evict_or_keep(shared, victim, refetchable);
        }
        let spilled = self.spill(shared, victim);
        drop(spilling);
        match spilled {
            Ok(()) => {
                self.disk_clock.push_back(victim);
                true
            }
            Err(error) => {
                shared.spill_failed(Error::Spill {
                    offset: victim << shared.config.shift,
                    error: Arc::new(error),
                });
                self.evict_or_keep(shared, victim, refetchable)
            }
        }
    }

    /// A victim with no room on disk: a range source drops it (and fetches it again if read),
    /// `true`; a stream's bytes exist nowhere else, so it stays in RAM, over the budget, at the
    /// front of the CLOCK list, `false`.
    fn evict_or_keep(&mut self, shared: &Shared, victim: u64, refetchable: bool) -> bool {
        if refetchable {
            self.evict(shared, victim);
        } else {
            self.clock.push_front(victim);
        }
        refetchable
    }

    /// A clean victim: its slot points at the copy the spiller wrote, and its buffer is
    /// recycled.
    fn settle_clean(&mut self, shared: &Shared, segment: u64) {
        let freed = shared.state.write().index.move_to_disk(segment);
        if let Some(freed) = freed {
            self.pool.give(freed);
            self.disk_clock.push_back(segment);
        }
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
    ///
    /// In a cache, the disk is the cache's: this buffer's coldest spilled segment goes if it
    /// can be fetched again, else (`global`) the global hand's choice; a step of the global
    /// hand itself (`give_up`) looks no further than its own buffer.
    fn make_disk_room(&mut self, shared: &Shared, refetchable: bool, global: bool) -> bool {
        if let Some(account) = &shared.config.account {
            while account.disk_full() {
                if refetchable {
                    if let Some(victim) = pick(&mut self.disk_clock, shared) {
                        self.evict(shared, victim);
                        continue;
                    }
                }
                let me = identity(shared);
                if !global || !account.reclaim(me, &mut |disk| self.give_up(shared, disk), true) {
                    return false;
                }
            }
            return true;
        }
        let capacity = shared.config.disk_budget / shared.config.segment_size as u64;
        while (self.disk_clock.len() + self.clean.len() + self.cleaning.len()) as u64 >= capacity {
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
            self.remove(segment);
            self.drop_segment(shared, segment, false);
        }
    }
    fn drop_segment(&mut self, shared: &Shared, segment: u64, refetch: bool) {
        let evicted = shared.state.write().index.evict(segment, refetch);
        match evicted {
            Some(Evicted::Ram(data)) => {
                self.pool.give(data);
                if self.clean.remove(&segment) {
                    // Its copy in the spill storage goes too.
                    let offset = segment << shared.config.shift;
                    let len = shared.config.segment_size as u64;
                    if let Ok(storage) = shared.storage() {
                        let _ = storage.discard(offset, len);
                    }
                }
            }
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
}

/// A buffer as a member of a cache's account: the global hand's steps in it.
impl Member for Shared {
    fn give_up(&self, disk: bool, wait: bool) -> bool {
        let tiers = if wait {
            Some(self.tiers.lock())
        } else {
            self.tiers.try_lock()
        };
        tiers.is_some_and(|mut tiers| tiers.give_up(self, disk))
    }

    fn last_used_ms(&self) -> &crate::sync::AtomicU64 {
        &self.last_used_ms
    }

    fn holds_ram(&self) -> bool {
        self.buffers.live.load(Ordering::Relaxed) > 0
    }

    fn could_give_up(&self, disk: bool) -> bool {
        if disk {
            matches!(self.filler, Filler::Ranged(_)) && self.storage.get().is_some()
        } else {
            self.holds_ram()
        }
    }

    fn forget_stored(&self) {
        if let Some(crate::store::storage::Spill::Region(region)) = self.storage.get() {
            region.forget_on_drop();
        }
    }

    fn into_any(self: Arc<Self>) -> Arc<dyn std::any::Any + Send + Sync> {
        self
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

/// Writes a run of adjacent full RAM segments to the spill storage with one call (the
/// spiller's job), with no lock held; each segment's result as [`write_out`] gives it. Segments
/// no longer in RAM are left out of the write.
fn write_run(shared: &Shared, segments: &[u64]) -> Vec<(u64, Written)> {
    let datas: Vec<Option<Bytes>> = {
        let state = shared.state.read();
        segments
            .iter()
            .map(|&s| match state.index.slot(s) {
                Some(Slot::Memory(resident)) => Some(resident.data.clone()),
                _ => None,
            })
            .collect()
    };
    let shift = shared.config.shift;
    let mut results = Vec::with_capacity(segments.len());
    let mut at = 0;
    while at < segments.len() {
        // The next stretch of segments in RAM (a segment that left RAM ends it).
        if datas[at].is_none() {
            results.push((segments[at], Ok(None)));
            at += 1;
            continue;
        }
        let mut end = at;
        while end < segments.len() && datas[end].is_some() {
            end += 1;
        }
        let parts: Vec<&[u8]> = datas[at..end].iter().flatten().map(|d| &d[..]).collect();
        let offset = segments[at] << shift;
        let len: u64 = parts.iter().map(|p| p.len() as u64).sum();
        let (mut written, mut error) = match shared.storage() {
            Ok(storage) => match storage.reserve(offset + len) {
                Ok(()) => storage.write_parts(offset, &parts),
                Err(error) => (0, Some(error)),
            },
            Err(error) => (0, Some(error)),
        };
        // The parts written whole are clean; the one the error cut is the failure (counted
        // once); the rest were not tried.
        for i in at..end {
            let n = parts[i - at].len();
            let result = if written >= n {
                written -= n;
                Ok(datas[i].clone())
            } else {
                written = 0;
                error.take().map_or(Ok(None), Err)
            };
            results.push((segments[i], result));
        }
        at = end;
    }
    results
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
    clock_hand(clock, &shared.state.read(), kept)
}

/// The hand of [`pick`] over `clock`, with the reference bits and pins of `state`: a segment
/// read since the hand last passed (its bit, cleared as the hand passes) or `kept` goes to the
/// back of the list; two turns without a victim take the oldest unpinned segment anyway.
/// Entries that are no longer full segments drop out of the list.
fn clock_hand(clock: &mut VecDeque<u64>, state: &State, kept: impl Fn(u64) -> bool) -> Option<u64> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::buffers::{BufferCounts, Pool};
    use crate::store::index::Index;

    const SHIFT: u32 = 4;

    /// A bare RAM tier of `segments` full 16-byte segments, each arrived in order and so far
    /// read once by the reader that fetched it (a fresh segment's reference bit is set).
    fn tier(segments: u64) -> (Tiers, State) {
        let mut state = State::new(Index::new(SHIFT), None, 1 << 20);
        let mut tiers = Tiers::new(Pool::new(16, Arc::new(BufferCounts::default())));
        for s in 0..segments {
            let start = s << SHIFT;
            state
                .index
                .insert_full(s, start..start + 16, Bytes::from(vec![s as u8; 16]), false);
            tiers.admit(s);
        }
        (tiers, state)
    }

    fn read(state: &State, segment: u64) {
        let mut byte = [0u8];
        state
            .index
            .copy_out(None, segment << SHIFT, &mut byte)
            .unwrap();
        assert_eq!(byte[0], segment as u8);
    }

    #[test]
    fn clock_gives_a_second_chance_to_what_was_read_since_the_hand_passed() {
        let (mut tiers, state) = tier(4);
        // Every bit is set: the hand clears them all in one turn and takes the oldest.
        assert_eq!(clock_hand(&mut tiers.clock, &state, |_| false), Some(0));
        // 1 is read again before the hand comes back: it is passed over, 2 goes.
        read(&state, 1);
        assert_eq!(clock_hand(&mut tiers.clock, &state, |_| false), Some(2));
        assert_eq!(clock_hand(&mut tiers.clock, &state, |_| false), Some(3));
        assert_eq!(clock_hand(&mut tiers.clock, &state, |_| false), Some(1));
        assert_eq!(clock_hand(&mut tiers.clock, &state, |_| false), None);
    }

    #[test]
    fn clock_passes_over_what_read_ahead_keeps_until_nothing_else_is_left() {
        let (mut tiers, state) = tier(3);
        let kept = |s: u64| s == 0 || s == 1;
        assert_eq!(clock_hand(&mut tiers.clock, &state, kept), Some(2));
        // Only kept segments remain: after two turns the one under the hand goes anyway (room
        // must be made), and the other stays listed.
        let victim = clock_hand(&mut tiers.clock, &state, kept).unwrap();
        assert!(kept(victim));
        assert_eq!(tiers.clock, [1 - victim]);
    }

    #[test]
    fn clock_never_picks_a_pinned_segment_and_drops_stale_entries() {
        let (mut tiers, mut state) = tier(3);
        state.pins.push(0..2);
        // 7 is not a full segment (evicted through another path): it leaves the list.
        tiers.clock.push_front(7);
        assert_eq!(clock_hand(&mut tiers.clock, &state, |_| false), Some(2));
        assert_eq!(clock_hand(&mut tiers.clock, &state, |_| false), None);
        let mut left: Vec<u64> = tiers.clock.iter().copied().collect();
        left.sort_unstable();
        assert_eq!(left, [0, 1]);
        // Unpinned, the one under the hand goes.
        state.pins.clear();
        let under_hand = tiers.clock[0];
        assert_eq!(
            clock_hand(&mut tiers.clock, &state, |_| false),
            Some(under_hand)
        );
    }

    #[test]
    fn clean_ahead_is_half_the_budget_capped_and_off_for_tiny_budgets() {
        const SEG: usize = 64 * 1024;
        assert_eq!(clean_ahead_depth(3 * SEG, SEG), 0);
        assert_eq!(clean_ahead_depth(4 * SEG, SEG), 2);
        assert_eq!(clean_ahead_depth(20 * SEG, SEG), 10);
        assert_eq!(clean_ahead_depth(64 * SEG, SEG), CLEAN_AHEAD);
        assert_eq!(clean_ahead_depth(1 << 30, SEG), CLEAN_AHEAD);
    }
}
