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

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::path::Path;

use crate::error::invalid_input;
use crate::store::spill::{FileStorage, Mapped, SpillStorage};
use crate::sync::{Arc, AtomicU64, Mutex, Ordering};

/// A spill file shared by the buffers of a cache, cut into slots of one segment each.
pub(crate) struct SpillArena {
    file: FileStorage,
    shift: u32,
    slots: Mutex<Slots>,
    /// Slots in use: the cache's disk usage, read without the lock.
    used: AtomicU64,
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
        })
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

/// One buffer's view of an arena: its segment `i` lives in whichever slot it was given when
/// first written. Dropped with the buffer, it gives all its slots back.
pub(crate) struct Region {
    arena: Arc<SpillArena>,
    /// Segment → slot.
    table: Mutex<HashMap<u64, u64>>,
    /// Bytes mapped for this buffer's reads.
    mapped: std::sync::Arc<AtomicU64>,
}

impl Region {
    pub(crate) fn new(arena: Arc<SpillArena>) -> Self {
        Region {
            arena,
            table: Mutex::new(HashMap::new()),
            mapped: std::sync::Arc::new(AtomicU64::new(0)),
        }
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
            if let Err(error) = written {
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
        for (_, slot) in self.table.lock().drain() {
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
