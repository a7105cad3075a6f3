//! Where spilled segments go: the [`SpillStorage`] trait, its default implementation (an
//! unnamed, sparse temporary file), and the memory maps that serve reads of spilled segments.
//!
//! # Safety
//!
//! A spilled segment may be read through a read-only memory map of its own bytes
//! ([`FileStorage::map`]). `memmap2` makes mapping `unsafe` because the bytes behind a map can
//! change or vanish underneath it. It is sound here because of three rules that this file alone
//! upholds, and that every `// SAFETY:` comment below points back to:
//!
//! 1. **The file is private and never shrinks.** It is created by `tempfile::tempfile_in`
//!    (`O_TMPFILE`, or created and unlinked at once), so no other process can open it by name,
//!    and this code never truncates it. A segment is mapped only after its bytes were written,
//!    so the map covers bytes that exist in the file: reading it cannot fault with `SIGBUS`.
//!    (Punching a hole, on eviction, makes bytes read back as zeros, never a fault; and the
//!    index drops a segment's map before its space is released.)
//! 2. **Maps are read-only; bytes reach the file by `pwrite`.** A full disk or a file-size limit
//!    is therefore an `io::Error` from `write_at`, never a fault in a store through a map.
//! 3. **Published bytes never change.** The buffer maps and reads a segment only after
//!    `write_at` for it returned `Ok`, and writes that range again only after the segment was
//!    evicted and its map dropped.
//!
//! A map belongs to the index slot of its segment, so the address space the maps take follows
//! the spilled segments that were read, and goes when they go. When a map cannot be made (an
//! address-space limit, `vm.max_map_count`), the segment is read with `pread` instead.

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

use memmap2::{Mmap, MmapOptions};

use crate::error::invalid_input;
#[cfg(test)]
use crate::sync::Mutex;
use crate::sync::{Arc, AtomicU64, Ordering};

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

/// The default [`SpillStorage`]: an unnamed sparse temp file, written with `pwrite` and read
/// with `pread`; the buffer reads spilled segments through per-segment maps made by
/// [`map`](FileStorage::map) where it can. See the module's `# Safety` section.
pub(crate) struct FileStorage {
    file: File,
    /// The page size: maps start at multiples of it.
    page: u64,
    /// Reserved length; only grows (`fetch_max`).
    reserved: AtomicU64,
    /// Bytes currently mapped by the [`Mapped`] segments of this file.
    mapped: Arc<AtomicU64>,
}

impl FileStorage {
    /// Creates the unnamed temp file in `dir`.
    pub(crate) fn new_in(dir: &Path) -> io::Result<Self> {
        let file = tempfile::tempfile_in(dir)?;
        Ok(FileStorage {
            file,
            page: rustix::param::page_size().max(4096) as u64,
            reserved: AtomicU64::new(0),
            mapped: Arc::new(AtomicU64::new(0)),
        })
    }

    /// A storage over `file`, a named file of a persistent cache directory, whose first
    /// `len` bytes are addressable. Never mapped (see `arena.rs`): another process could
    /// shrink a named file under a map.
    pub(crate) fn from_named(file: File, len: u64) -> Self {
        FileStorage {
            file,
            page: rustix::param::page_size().max(4096) as u64,
            reserved: AtomicU64::new(len),
            mapped: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Forces the written bytes to the disk.
    pub(crate) fn sync_data(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    /// A read-only map of the `len` bytes at `offset`, which `write_at` stored; `None` if the
    /// range does not start on a page or the kernel will not map it (then read with `pread`).
    pub(crate) fn map(&self, offset: u64, len: usize) -> Option<Mapped> {
        self.map_counted(offset, len, &self.mapped)
    }

    /// As [`map`](FileStorage::map), counting the map in `live` instead of this file's total
    /// (a region of a shared file counts its own).
    pub(crate) fn map_counted(
        &self,
        offset: u64,
        len: usize,
        live: &Arc<AtomicU64>,
    ) -> Option<Mapped> {
        if offset % self.page != 0 || len == 0 {
            return None;
        }
        self.check_range(offset, len).ok()?;
        // SAFETY: rule 1 of the module docs: the file is private and never shrinks, and the
        // caller maps only a range whose `write_at` succeeded, so every mapped byte exists in
        // the file. Rule 2: the map is read-only. Rule 3: the range is not written again while
        // the map exists (it is dropped with the segment's slot).
        let map = unsafe { MmapOptions::new().offset(offset).len(len).map(&self.file) }.ok()?;
        live.fetch_add(len as u64, Ordering::Relaxed);
        Some(Mapped {
            map,
            live: live.clone(),
        })
    }

    /// Bytes currently mapped.
    pub(crate) fn mapped_bytes(&self) -> u64 {
        self.mapped.load(Ordering::Relaxed)
    }

    /// `parts` one after the other at `offset`, with one `pwritev` (repeated for what a short
    /// write leaves): how many bytes were written, and the error that stopped it, if any.
    pub(crate) fn write_parts(&self, offset: u64, parts: &[&[u8]]) -> (usize, Option<io::Error>) {
        let total: usize = parts.iter().map(|p| p.len()).sum();
        if let Err(error) = self
            .check_range(offset, total)
            .and_then(|()| check_file_size(offset + total as u64))
        {
            return (0, Some(error));
        }
        let mut done = 0;
        while done < total {
            // The parts not written yet.
            let mut skip = done;
            let rest: Vec<io::IoSlice<'_>> = parts
                .iter()
                .filter_map(|part| {
                    if skip >= part.len() {
                        skip -= part.len();
                        return None;
                    }
                    let slice = io::IoSlice::new(&part[skip..]);
                    skip = 0;
                    Some(slice)
                })
                .collect();
            match rustix::io::pwritev(&self.file, &rest, offset + done as u64) {
                Ok(0) => return (done, Some(io::ErrorKind::WriteZero.into())),
                Ok(n) => done += n,
                Err(rustix::io::Errno::INTR) => {}
                Err(errno) => return (done, Some(errno.into())),
            }
        }
        (done, None)
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
        // Nothing to allocate: `pwrite` extends the sparse file (and checks the file-size
        // limit first).
        self.reserved.fetch_max(end, Ordering::AcqRel);
        Ok(())
    }

    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.check_range(offset, data.len())?;
        // A file may not grow past the process's file-size limit, or the kernel kills the
        // process with `SIGXFSZ`. Checked at each write: the limit can change at any time.
        check_file_size(offset + data.len() as u64)?;
        // pwrite, never a store through a map: ENOSPC and EIO come back as errors (rule 2).
        self.file.write_all_at(data, offset)
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.check_range(offset, buf.len())?;
        self.file.read_exact_at(buf, offset)
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

/// A read-only map of one spilled segment, counted in its storage's mapped bytes while it
/// lives. Owned by the segment's index slot: dropped (unmapped) when the segment leaves the
/// spill file.
pub(crate) struct Mapped {
    map: Mmap,
    live: Arc<AtomicU64>,
}

impl std::ops::Deref for Mapped {
    type Target = [u8];
    #[inline]
    fn deref(&self) -> &[u8] {
        &self.map
    }
}

impl Drop for Mapped {
    fn drop(&mut self) {
        self.live
            .fetch_sub(self.map.len() as u64, Ordering::Relaxed);
    }
}

/// `Err` (kind `FileTooLarge`) if a file may not grow to `end` bytes under the process's
/// `RLIMIT_FSIZE`. Writing past that limit raises `SIGXFSZ`, whose default action kills the
/// process; checking first turns it into an error without touching the signal's disposition.
pub(crate) fn check_file_size(end: u64) -> io::Result<()> {
    use rustix::process::{getrlimit, Resource};
    match getrlimit(Resource::Fsize).current {
        Some(limit) if end > limit => Err(io::Error::new(
            // `FileTooLarge` (EFBIG) by way of the OS code, for Rust versions before the
            // variant was stable.
            io::Error::from(rustix::io::Errno::FBIG).kind(),
            format!("{end} bytes would exceed the file-size limit (RLIMIT_FSIZE) of {limit}"),
        )),
        _ => Ok(()),
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
    fn file_storage_round_trips_and_maps_written_segments() {
        let s = FileStorage::new_in(&std::env::temp_dir()).unwrap();
        let page = s.page;
        // A write over several pages, and one far away in the sparse file.
        let a = pattern(3 * page as usize, 1);
        let far = 1000 * page;
        let b = pattern(5000, 2);
        s.reserve(page + a.len() as u64).unwrap();
        s.write_at(page, &a).unwrap();
        s.reserve(far + b.len() as u64).unwrap();
        s.write_at(far, &b).unwrap();
        assert_eq!(s.len(), far + b.len() as u64);

        let mut got = vec![0u8; a.len()];
        s.read_at(page, &mut got).unwrap();
        assert_eq!(got, a);
        let mut got = vec![0u8; b.len()];
        s.read_at(far, &mut got).unwrap();
        assert_eq!(got, b);

        // Maps: page-aligned written ranges only; counted while they live.
        let map = s.map(far, b.len()).unwrap();
        assert_eq!(&map[..], &b[..]);
        let map2 = s.map(page, a.len()).unwrap();
        assert_eq!(&map2[..], &a[..]);
        assert_eq!(s.mapped_bytes(), (a.len() + b.len()) as u64);
        assert!(s.map(page + 1, 10).is_none());
        assert!(s.map(far, b.len() + 1).is_none());
        drop(map);
        assert_eq!(s.mapped_bytes(), a.len() as u64);
        drop(map2);
        assert_eq!(s.mapped_bytes(), 0);

        let mut out = tempfile::tempfile().unwrap();
        s.copy_to(page + 10, 2 * page, &mut out).unwrap();
        s.copy_to(far, b.len() as u64, &mut out).unwrap();
        let mut written = Vec::new();
        out.seek(SeekFrom::Start(0)).unwrap();
        out.read_to_end(&mut written).unwrap();
        let mut want = a[10..10 + 2 * page as usize].to_vec();
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
        assert_eq!(s.len(), 0);
    }
}
