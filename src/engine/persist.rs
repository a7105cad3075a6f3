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
use crate::store::slots::Slot;
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
        if !self.is_ranged() {
            // A forward-only stream is kept once read to its end (see `stream_ended`).
            let _ = self.stream_key.set(key.to_owned());
            return Ok(());
        }
        match self.identity() {
            Some(identity) => self.adopt_stored_as(key, identity),
            None => Ok(()),
        }
    }

    /// [`adopt_stored`](Shared::adopt_stored) at the version `identity`.
    pub(crate) fn adopt_stored_as(&self, key: &str, identity: Identity) -> io::Result<()> {
        let Some(account) = self.account() else {
            return Ok(());
        };
        let arena = account.arena()?;
        if !arena.is_persistent() {
            return Ok(());
        }
        let Some(len) = self.len() else {
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
        region.check_stored(first..last + 1, |segment, durable| {
            if !region.check(durable) {
                log::info!(
                    "sparsebuf: a stored segment (offset {}) failed its checksum: fetched again",
                    segment << shift
                );
                region.reject_slot(segment, durable.slot);
                return;
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
        });
        self.state.write().settle_end();
    }

    /// A forward-only stream of a persistent cache ended: kept in the directory as its key,
    /// on a worker (its spilled segments are read back for their checksums). Not a windowed
    /// stream (its start is gone), nor one that failed.
    pub(crate) fn stream_ended(&self) {
        let Some(account) = self.account() else {
            return;
        };
        if self.stream_key.get().is_none() || self.window.is_some() {
            return;
        }
        if !account.arena().is_ok_and(|a| a.is_persistent()) {
            return;
        }
        let me = self.me.clone();
        let job = move || {
            if let Some(shared) = me.upgrade() {
                if let Err(error) = shared.store_complete() {
                    log::warn!("sparsebuf: keeping a finished stream failed: {error}");
                }
            }
        };
        let _ = account.workers.submit(Box::new(job));
    }

    /// Keeps this complete forward-only stream in the persistent directory, as its key.
    fn store_complete(&self) -> io::Result<()> {
        let (Some(key), Some(account)) = (self.stream_key.get(), self.account()) else {
            return Ok(());
        };
        let (len, complete) = {
            let state = self.state.read();
            (state.len, state.complete && state.error.is_none())
        };
        let (Some(len), true) = (len, complete) else {
            return Ok(());
        };
        let arena = account.arena()?;
        let Spill::Region(region) = self.storage()? else {
            return Ok(());
        };
        let identity = Identity {
            etag: None,
            last_modified: None,
            len,
            segment_size: self.config.segment_size as u32,
        };
        let adopted = arena.adopt(key, identity)?;
        region.persist_as(adopted.id);
        // An older copy of the same length goes: this one replaces it.
        for (segment, durable) in adopted.segments {
            region.reject_slot(segment, durable.slot);
        }
        let shift = self.config.shift;
        let segments = len.div_ceil(1 << shift);
        for segment in 0..segments {
            let mut tiers = self.tiers.lock();
            let on_disk = match self.state.read().index.slot(segment) {
                Some(Slot::Memory(_)) => None,
                Some(Slot::Disk { len, .. }) => Some(*len),
                // Not all there (dropped): not kept.
                _ => {
                    region.forget_on_drop();
                    return Ok(());
                }
            };
            match on_disk {
                Some(len) => region.record_spilled(segment, len)?,
                None => tiers.write_through(self, segment),
            }
        }
        account.flush_soon();
        Ok(())
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
