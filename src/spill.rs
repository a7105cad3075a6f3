//! Where spilled segments go: the [`SpillStorage`] trait and its default implementation, an
//! unnamed, sparse, memory-mapped temporary file.
//!
//! # Safety
//!
//! [`FileStorage`] maps its file with `memmap2`, which is `unsafe` because the bytes behind a map
//! can change or vanish underneath it. It is sound here because of three rules that this file
//! alone upholds, and that every `// SAFETY:` comment below points back to:
//!
//! 1. **The file is private and never shrinks.** It is created by `tempfile::tempfile_in`
//!    (`O_TMPFILE`, or created and unlinked at once), so no other process can open it by name,
//!    and this code only ever grows it with `set_len`. A map therefore always covers bytes that
//!    exist in the file: reading it cannot fault with `SIGBUS`.
//! 2. **Maps are read-only and never removed.** They are created once per region and dropped
//!    only with the storage. Bytes reach the file by `pwrite`, never through a map, so a full
//!    disk is an `io::Error` from `write_at`, not a fault in a mapped write.
//! 3. **Published bytes never change.** The buffer reads a range through the map only after
//!    `write_at` for that range returned `Ok`, and never writes that range again.

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

use memmap2::{Mmap, MmapOptions};

use crate::error::invalid_input;
use crate::sync::{AtomicU64, Mutex, OnceLock, Ordering};

/// Storage for segments that no longer fit in the memory budget.
///
/// The buffer writes each spilled segment `i` at offset `i * segment_size`, so the storage is
/// sparse: regions never spilled are never written. The default storage is a memory-mapped,
/// unnamed temporary file in [`Builder::spill_dir`](crate::Builder::spill_dir); supply another
/// with [`Builder::spill_storage`](crate::Builder::spill_storage), for example to keep spilled
/// data somewhere else, or to inject faults in tests.
///
/// # Contract
///
/// - `reserve(end)` makes `[0, end)` addressable. It never shrinks the storage.
/// - `write_at(offset, data)` writes all of `data` or returns an error. The buffer calls it only
///   inside the reserved length, and only for ranges no reader is reading. A failed write may
///   leave the range in any state: the buffer never reads a range whose write failed.
/// - `read_at(offset, buf)` fills all of `buf` with bytes an earlier successful `write_at` stored.
///   It is called from many threads at once, on the hot path of every read of spilled data.
/// - Errors are returned, never panicked; a full disk must be an `Err`, not a signal.
///
/// # Examples
///
/// A store that keeps spilled segments on the heap:
///
/// ```
/// use std::io;
/// use std::sync::Mutex;
/// use sparsebuf::{SpillStorage, StreamBuffer};
///
/// #[derive(Default)]
/// struct Heap(Mutex<Vec<u8>>);
///
/// impl SpillStorage for Heap {
///     fn reserve(&self, end: u64) -> io::Result<()> {
///         let mut v = self.0.lock().unwrap();
///         let end = usize::try_from(end).map_err(|_| io::ErrorKind::OutOfMemory)?;
///         if v.len() < end { v.resize(end, 0) }
///         Ok(())
///     }
///     fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
///         let start = offset as usize;
///         self.0.lock().unwrap()[start..start + data.len()].copy_from_slice(data);
///         Ok(())
///     }
///     fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
///         let start = offset as usize;
///         buf.copy_from_slice(&self.0.lock().unwrap()[start..start + buf.len()]);
///         Ok(())
///     }
///     fn len(&self) -> u64 {
///         self.0.lock().unwrap().len() as u64
///     }
/// }
///
/// let data: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
/// let buf = StreamBuffer::builder()
///     .segment_size(4096)
///     .memory_budget(8192)
///     .spill_storage(Heap::default())
///     .build(io::Cursor::new(data.clone()))?;
/// buf.fill_to_end()?;
/// assert!(buf.stats().segments_spilled > 0);
/// assert_eq!(buf.read_range(0..100_000)?, data);
/// # Ok::<(), io::Error>(())
/// ```
pub trait SpillStorage: Send + Sync + 'static {
    /// Makes `[0, end)` addressable by `write_at` and `read_at`. Never shrinks.
    ///
    /// # Errors
    ///
    /// Whatever growing the storage fails with; the storage stays as it was.
    fn reserve(&self, end: u64) -> io::Result<()>;

    /// Writes all of `data` at `offset`.
    ///
    /// # Errors
    ///
    /// Any I/O error, for example [`io::ErrorKind::StorageFull`] on a full disk.
    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()>;

    /// Fills `buf` with the bytes stored at `offset`.
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::InvalidInput`] for a range outside the reserved length; any I/O error.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()>;

    /// The reserved length in bytes.
    fn len(&self) -> u64;

    /// Whether nothing is reserved yet.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Releases the space of `[offset, offset + len)`, whose bytes the buffer no longer needs
    /// (an evicted segment); they may read back as anything until written again. The default
    /// does nothing; the file storage punches a hole, so the disk budget counts allocated bytes.
    ///
    /// # Errors
    ///
    /// Whatever releasing fails with. The buffer counts it and carries on: the bytes are
    /// already out of its index.
    fn discard(&self, offset: u64, len: u64) -> io::Result<()> {
        let _ = (offset, len);
        Ok(())
    }

    /// Appends `len` bytes stored at `offset` to `dst` at its current position.
    ///
    /// The default reads through [`read_at`](SpillStorage::read_at) in 64 KiB pieces; the file
    /// storage overrides it to let the kernel copy (`copy_file_range`).
    ///
    /// # Errors
    ///
    /// Errors of `read_at` or of writing to `dst`.
    fn copy_to(&self, offset: u64, len: u64, dst: &mut File) -> io::Result<()> {
        copy_through_buffer(self, offset, len, dst)
    }
}

/// A shared storage is a storage: keep an `Arc` to inspect or reuse it after handing it over.
impl<S: SpillStorage + ?Sized> SpillStorage for std::sync::Arc<S> {
    fn reserve(&self, end: u64) -> io::Result<()> {
        (**self).reserve(end)
    }
    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        (**self).write_at(offset, data)
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        (**self).read_at(offset, buf)
    }
    fn len(&self) -> u64 {
        (**self).len()
    }
    fn copy_to(&self, offset: u64, len: u64, dst: &mut File) -> io::Result<()> {
        (**self).copy_to(offset, len, dst)
    }
    fn discard(&self, offset: u64, len: u64) -> io::Result<()> {
        (**self).discard(offset, len)
    }
}

/// The default body of [`SpillStorage::copy_to`].
fn copy_through_buffer<S: SpillStorage + ?Sized>(
    storage: &S,
    mut offset: u64,
    len: u64,
    dst: &mut File,
) -> io::Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    let end = offset
        .checked_add(len)
        .ok_or_else(|| invalid_input("copy range overflows u64"))?;
    while offset < end {
        let n = buf
            .len()
            .min(usize::try_from(end - offset).unwrap_or(usize::MAX));
        storage.read_at(offset, &mut buf[..n])?;
        dst.write_all(&buf[..n])?;
        offset += n as u64;
    }
    Ok(())
}

/// Number of map regions: region `k` covers `[unit << (k - 1), unit << k)` (region 0 covers
/// `[0, unit)`), so 64 regions cover every offset a `u64` can hold.
const REGIONS: usize = 64;

/// The default [`SpillStorage`]: an unnamed sparse temp file, read through memory maps.
///
/// The file grows in regions that double in size, each mapped once, read-only, when it is first
/// reserved. Readers find the region of an offset with a few bit operations and copy from its map
/// without any lock. See the module's `# Safety` section for why the maps are sound.
pub(crate) struct FileStorage {
    file: File,
    /// log2 of the smallest region, the page size (map offsets must be page-aligned).
    unit_shift: u32,
    /// Region maps, each set once by `reserve` and never replaced.
    maps: [OnceLock<Mmap>; REGIONS],
    /// Reserved length: always the end of a region; only grows. Written under `grow`.
    reserved: AtomicU64,
    /// Serialises `reserve`, so a region is mapped once and the file grows monotonically.
    grow: Mutex<()>,
}

impl FileStorage {
    /// Creates the unnamed temp file in `dir`.
    pub(crate) fn new_in(dir: &Path) -> io::Result<Self> {
        let file = tempfile::tempfile_in(dir)?;
        let page = rustix::param::page_size().max(4096);
        Ok(FileStorage {
            file,
            unit_shift: page.trailing_zeros(),
            maps: std::array::from_fn(|_| OnceLock::new()),
            reserved: AtomicU64::new(0),
            grow: Mutex::new(()),
        })
    }

    /// The region holding `offset`.
    #[inline]
    fn region_of(&self, offset: u64) -> usize {
        let units = offset >> self.unit_shift;
        (u64::BITS - units.leading_zeros()) as usize
    }

    /// `(start, len)` of region `k`, or `None` past what a `u64` offset can address.
    fn region_span(&self, k: usize) -> Option<(u64, u64)> {
        if k == 0 {
            return Some((0, 1 << self.unit_shift));
        }
        let start = 1u64.checked_shl(self.unit_shift + k as u32 - 1)?;
        Some((start, start))
    }

    /// Maps region `k` of the file, which must already be at least as long as the region's end.
    fn map_region(&self, k: usize) -> io::Result<()> {
        let (start, len) = self
            .region_span(k)
            .ok_or_else(|| invalid_input("spill offset too large"))?;
        let len = usize::try_from(len).map_err(|_| invalid_input("spill region too large"))?;
        // SAFETY: rule 1 of the module docs: the file is private to this storage and only grows;
        // the caller (`reserve`) has already grown it to cover `start + len`, so every mapped
        // byte exists in the file. Rule 2: the map is read-only and lives as long as `self`.
        let map = unsafe { MmapOptions::new().offset(start).len(len).map(&self.file)? };
        // Only `reserve`, under `grow`, sets maps; a region is mapped once.
        let _ = self.maps[k].set(map);
        Ok(())
    }

    /// Checks that `[offset, offset + len)` lies inside the reserved length.
    fn check_range(&self, offset: u64, len: usize) -> io::Result<()> {
        let reserved = self.reserved.load(Ordering::Acquire);
        match crate::error::range_end(offset, len) {
            Ok(end) if end <= reserved => Ok(()),
            _ => Err(invalid_input(format!(
                "spill range {offset}+{len} is outside the reserved {reserved} bytes"
            ))),
        }
    }
}

impl SpillStorage for FileStorage {
    fn reserve(&self, end: u64) -> io::Result<()> {
        let _grow = self.grow.lock();
        let reserved = self.reserved.load(Ordering::Acquire);
        if end <= reserved {
            return Ok(());
        }
        let first = self.region_of(reserved);
        let last = self.region_of(end - 1);
        let (start, len) = self
            .region_span(last)
            .ok_or_else(|| invalid_input("spill offset too large"))?;
        let new_end = start
            .checked_add(len)
            .ok_or_else(|| invalid_input("spill offset too large"))?;
        // Grow first, so no map ever covers bytes past the end of the file (rule 1).
        self.file.set_len(new_end)?;
        for k in first..=last {
            self.map_region(k)?;
            let (start, len) = self.region_span(k).unwrap_or((0, 0));
            self.reserved.store(start + len, Ordering::Release);
        }
        Ok(())
    }

    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.check_range(offset, data.len())?;
        // pwrite, never a store through the map: ENOSPC and EIO come back as errors (rule 2).
        self.file.write_all_at(data, offset)
    }

    fn read_at(&self, mut offset: u64, mut buf: &mut [u8]) -> io::Result<()> {
        self.check_range(offset, buf.len())?;
        while !buf.is_empty() {
            let k = self.region_of(offset);
            let (start, len) = self.region_span(k).unwrap_or((0, 0));
            let map = self.maps[k]
                .get()
                .ok_or_else(|| invalid_input("spill region is not mapped"))?;
            let at = (offset - start) as usize;
            let n = buf.len().min(len as usize - at);
            let (head, rest) = buf.split_at_mut(n);
            head.copy_from_slice(&map[at..at + n]);
            buf = rest;
            offset += n as u64;
        }
        Ok(())
    }

    fn len(&self) -> u64 {
        self.reserved.load(Ordering::Acquire)
    }

    fn discard(&self, offset: u64, len: u64) -> io::Result<()> {
        use rustix::fs::{fallocate, FallocateFlags};
        match fallocate(
            &self.file,
            FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE,
            offset,
            len,
        ) {
            // A filesystem that cannot punch holes keeps the space; nothing is wrong with data.
            Err(rustix::io::Errno::OPNOTSUPP) => Ok(()),
            other => other.map_err(io::Error::from),
        }
    }

    fn copy_to(&self, offset: u64, len: u64, dst: &mut File) -> io::Result<()> {
        self.check_range(offset, usize::try_from(len).unwrap_or(usize::MAX))?;
        let mut at = offset;
        let end = offset + len;
        while at < end {
            let want = usize::try_from(end - at).unwrap_or(usize::MAX).min(1 << 30);
            match rustix::fs::copy_file_range(&self.file, Some(&mut at), &*dst, None, want) {
                Ok(0) => break,
                Ok(_) => {}
                Err(rustix::io::Errno::INTR) => {}
                // Different filesystems, old kernels, special files: copy through user space.
                Err(_) => break,
            }
        }
        copy_through_buffer(self, at, end - at, dst)
    }
}

/// A [`SpillStorage`] on the heap, for unit tests and for builds without a file-backed map.
#[cfg(test)]
#[derive(Default)]
pub(crate) struct HeapStorage(Mutex<Vec<u8>>);

#[cfg(test)]
impl SpillStorage for HeapStorage {
    fn reserve(&self, end: u64) -> io::Result<()> {
        let end = usize::try_from(end).map_err(|_| invalid_input("too large"))?;
        let mut v = self.0.lock();
        if v.len() < end {
            v.resize(end, 0);
        }
        Ok(())
    }

    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        let mut v = self.0.lock();
        let at = offset as usize;
        v.get_mut(at..at + data.len())
            .ok_or_else(|| invalid_input("outside reserved"))?
            .copy_from_slice(data);
        Ok(())
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let v = self.0.lock();
        let at = offset as usize;
        buf.copy_from_slice(
            v.get(at..at + buf.len())
                .ok_or_else(|| invalid_input("outside reserved"))?,
        );
        Ok(())
    }

    fn len(&self) -> u64 {
        self.0.lock().len() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Seek, SeekFrom};

    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31) ^ seed)
            .collect()
    }

    #[test]
    #[cfg_attr(miri, ignore = "needs a file-backed memory map")]
    fn regions_double_and_cover_every_offset() {
        let s = FileStorage::new_in(&std::env::temp_dir()).unwrap();
        let unit = 1u64 << s.unit_shift;
        assert_eq!(s.region_of(0), 0);
        assert_eq!(s.region_of(unit - 1), 0);
        assert_eq!(s.region_of(unit), 1);
        assert_eq!(s.region_of(2 * unit), 2);
        assert_eq!(s.region_of(4 * unit - 1), 2);
        for k in 0..REGIONS {
            if let Some((start, len)) = s.region_span(k) {
                assert_eq!(s.region_of(start), k);
                assert_eq!(s.region_of(start + (len - 1)), k);
            }
        }
        assert_eq!(s.region_of(u64::MAX), 64 - s.unit_shift as usize);
    }

    #[test]
    #[cfg_attr(miri, ignore = "needs a file-backed memory map")]
    fn file_storage_round_trips_across_regions() {
        let s = FileStorage::new_in(&std::env::temp_dir()).unwrap();
        let unit = 1u64 << s.unit_shift;
        // A write straddling regions 1 and 2, and one far away in a sparse region.
        let a = pattern(3 * unit as usize, 1);
        let far = 1000 * unit;
        let b = pattern(5000, 2);
        s.reserve(unit + a.len() as u64).unwrap();
        s.write_at(unit, &a).unwrap();
        s.reserve(far + b.len() as u64).unwrap();
        s.write_at(far, &b).unwrap();
        assert!(s.len() >= far + b.len() as u64);

        let mut got = vec![0u8; a.len()];
        s.read_at(unit, &mut got).unwrap();
        assert_eq!(got, a);
        let mut got = vec![0u8; b.len()];
        s.read_at(far, &mut got).unwrap();
        assert_eq!(got, b);

        let mut out = tempfile::tempfile().unwrap();
        s.copy_to(unit + 10, 2 * unit, &mut out).unwrap();
        s.copy_to(far, b.len() as u64, &mut out).unwrap();
        let mut written = Vec::new();
        out.seek(SeekFrom::Start(0)).unwrap();
        out.read_to_end(&mut written).unwrap();
        let mut want = a[10..10 + 2 * unit as usize].to_vec();
        want.extend_from_slice(&b);
        assert_eq!(written, want);
    }

    #[test]
    #[cfg_attr(miri, ignore = "needs a file-backed memory map")]
    fn file_storage_rejects_ranges_outside_reserved() {
        let s = FileStorage::new_in(&std::env::temp_dir()).unwrap();
        let kind = |r: io::Result<()>| r.unwrap_err().kind();
        assert_eq!(kind(s.write_at(0, &[1])), io::ErrorKind::InvalidInput);
        assert_eq!(kind(s.read_at(0, &mut [0])), io::ErrorKind::InvalidInput);
        assert_eq!(
            kind(s.read_at(u64::MAX, &mut [0])),
            io::ErrorKind::InvalidInput
        );
        assert_eq!(kind(s.reserve(u64::MAX)), io::ErrorKind::InvalidInput);
        assert_eq!(s.len(), 0);
    }
}
