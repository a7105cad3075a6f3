//! A persistent cache's side of a buffer over a range source: adopting what the directory
//! stored for its key, once the source's version and each segment's checksum are checked, and
//! writing each fetched segment through to the directory, so that it survives a restart or a
//! kill (see `store/arena.rs` and `store/journal.rs`).
//!
//! Only range sources with validators (a strong `ETag` or a `Last-Modified`) and a known length
//! are persisted: without them a stored copy could not be told from a changed resource.

use std::io;
use std::time::UNIX_EPOCH;

use crate::engine::shared::Shared;
use crate::store::journal::Identity;
use crate::store::storage::Spill;

impl Shared {
    /// The version of the resource, as the journal stores it; `None` if it cannot be told.
    fn identity(&self) -> Option<Identity> {
        if !self.is_ranged() {
            return None;
        }
        let validators = self.validators();
        let len = self.len()?;
        let etag = validators.strong_etag().map(str::to_owned);
        let last_modified = validators
            .last_modified
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| (d.as_secs(), d.subsec_nanos()));
        if etag.is_none() && last_modified.is_none() {
            return None;
        }
        Some(Identity {
            etag,
            last_modified,
            len,
            segment_size: self.config.segment_size as u32,
        })
    }

    /// In a persistent cache, makes this new buffer the keeper of `key`: the segments the
    /// directory holds for the same version whose checksums still match are served from it;
    /// the others (another version, a bad checksum) are dropped, and fetched when read.
    pub(crate) fn adopt_stored(&self, key: &str) -> io::Result<()> {
        let Some(account) = self.account() else {
            return Ok(());
        };
        let arena = account.arena()?;
        if !arena.is_persistent() {
            return Ok(());
        }
        let (Some(identity), Some(len)) = (self.identity(), self.len()) else {
            return Ok(());
        };
        let Spill::Region(region) = self.storage()? else {
            return Ok(());
        };
        let adopted = arena.adopt(key, identity)?;
        region.persist_as(adopted.id);
        let shift = self.config.shift;
        for (segment, durable) in adopted.segments {
            let start = segment << shift;
            let expected = len.saturating_sub(start).min(1 << shift);
            if start < len && u64::from(durable.len) == expected {
                // Checked when first read (see `take_stored`).
                region.stash(segment, durable);
            } else {
                region.reject_slot(segment, durable.slot);
            }
        }
        Ok(())
    }

    /// Before a reader claims the segments of `[pos, end)` to fetch them: the stored copies
    /// among them (a persistent cache's, after a restart) are checked now, and those whose
    /// checksum matches are served from the directory instead; a bad one is dropped (and
    /// fetched). At most `max` segments from `pos` on.
    pub(crate) fn take_stored(&self, pos: u64, end: u64, max: u64) {
        let Some(Spill::Region(region)) = self.storage.get() else {
            return;
        };
        if !region.has_stored() || pos >= end {
            return;
        }
        let shift = self.config.shift;
        let first = pos >> shift;
        let last = ((end - 1) >> shift).min(first.saturating_add(max - 1));
        for (segment, durable) in region.take_stored(first..last + 1) {
            if !region.check(durable) {
                log::info!(
                    "sparsebuf: a stored segment (offset {}) failed its checksum: fetched again",
                    segment << shift
                );
                region.reject_slot(segment, durable.slot);
                continue;
            }
            let mut tiers = self.tiers.lock();
            if self
                .state
                .write()
                .index
                .insert_spilled(segment, durable.len as usize)
            {
                region.adopt_slot(segment, durable.slot);
                tiers.disk_clock.push_back(segment);
            } else {
                // Fetched meanwhile: the newer copy stands.
                region.reject_slot(segment, durable.slot);
            }
        }
        self.state.write().settle_end();
    }

    /// Whether this buffer's segments are kept in a persistent directory.
    pub(crate) fn is_persisted(&self) -> bool {
        matches!(self.storage.get(), Some(Spill::Region(region)) if region.is_persisted())
    }

    /// In a persistent cache, writes a fetched segment through to the directory (once, while
    /// it is in RAM): it becomes durable, and leaves RAM later with no write.
    pub(crate) fn write_through(&self, segment: u64) {
        let Some(Spill::Region(region)) = self.storage.get() else {
            return;
        };
        if region.is_persisted() {
            self.tiers.lock().write_through(self, segment);
        }
    }
}
