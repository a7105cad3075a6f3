//! The RAM tier's bookkeeping: the buffer pool, the CLOCK list of segments in memory, and
//! spilling the coldest of them when RAM exceeds the budget.

use std::collections::VecDeque;
use std::io;

use bytes::BytesMut;

use crate::buffer::Shared;
use crate::error::Error;
use crate::index::Slot;
use crate::segment::Pool;
use crate::sync::Arc;

/// Owned by the buffer's tiers mutex; taken by whoever completes a segment.
///
/// Invariant: `clock` lists exactly the segments whose slot is `Memory`, in the order they were
/// admitted (rotated by the CLOCK hand). Lock order: the writer role, then this, then the index.
pub(crate) struct Tiers {
    pool: Pool,
    clock: VecDeque<u64>,
}

impl Tiers {
    pub(crate) fn new(pool: Pool) -> Self {
        Tiers {
            pool,
            clock: VecDeque::new(),
        }
    }

    /// A segment buffer, recycled if one is spare.
    pub(crate) fn take(&mut self) -> BytesMut {
        self.pool.take()
    }

    /// Releases a buffer taken with `take` that never reached the index.
    pub(crate) fn forget(&mut self) {
        self.pool.forget();
    }

    /// Records a segment that just became `Memory`.
    pub(crate) fn admit(&mut self, segment: u64) {
        self.clock.push_back(segment);
    }

    /// Spills the coldest full segments until RAM fits the budget, or a spill fails.
    pub(crate) fn enforce_budget(&mut self, shared: &Shared, filling: bool) {
        let cfg = &shared.config;
        // The segment being filled (a stream writer's, while its source lasts) needs a buffer too.
        let filling = usize::from(filling);
        while (self.clock.len() + filling).saturating_mul(cfg.segment_size) > cfg.memory_budget {
            let Some(victim) = self.pick_victim(shared) else {
                return;
            };
            if let Err(error) = self.spill(shared, victim) {
                self.clock.push_front(victim);
                shared.spill_failed(Error::Spill {
                    offset: victim << cfg.shift,
                    error: Arc::new(error),
                });
                return;
            }
        }
    }

    /// CLOCK: the oldest resident segment not read since the hand last passed it.
    fn pick_victim(&mut self, shared: &Shared) -> Option<u64> {
        let state = shared.state.read();
        for _ in 0..=2 * self.clock.len() {
            let segment = self.clock.pop_front()?;
            match state.index.take_referenced(segment) {
                Some(true) => self.clock.push_back(segment),
                Some(false) => return Some(segment),
                None => {}
            }
        }
        self.clock.pop_front()
    }

    /// Writes a full segment to the spill storage outside the index lock, then points its slot
    /// at the storage under a short write lock. Readers copy under the read lock, so none is
    /// copying from the RAM buffer when it is released.
    fn spill(&mut self, shared: &Shared, segment: u64) -> io::Result<()> {
        let data = match shared.state.read().index.slot(segment) {
            Some(Slot::Memory(resident)) => resident.data.clone(),
            _ => return Ok(()),
        };
        let offset = segment << shared.config.shift;
        let end = offset + data.len() as u64;
        let storage = shared.storage()?;
        storage.reserve(end)?;
        storage.write_at(offset, &data)?;
        let freed = shared.state.write().index.move_to_disk(segment);
        drop(data);
        if let Some(freed) = freed {
            self.pool.give(freed);
        }
        Ok(())
    }
}
