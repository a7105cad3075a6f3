//! [`StreamBuffer`]: the public handle, at the bottom of the public face. The engine it drives
//! lives below it (`engine/`, `store/`); nothing there imports this file. Each of its
//! constructors lives with what it makes: `new`, `from_chunks` and `builder` in `builder.rs`,
//! `reader` in `reader.rs`, `emit` in `fanout/emit.rs`, `async_reader` in `async_reader.rs`.

use std::fmt;
use std::fs::Permissions;
use std::io;
use std::ops::Range;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::engine::settings::Config;
use crate::engine::shared::{Filler, Shared, Want};
use crate::error::{context, invalid_input};
use crate::stats::Stats;
use crate::store::index::Location;
use crate::store::spill::{check_file_size, SpillStorage};
use crate::sync::Arc;
use crate::validators::Validators;

/// A shared, seekable, random-access buffer over a forward-only byte stream.
///
/// `StreamBuffer` is a cheap handle (`Clone` shares the same buffer) that is `Send + Sync`: any
/// number of threads may call [`read_at`](StreamBuffer::read_at) and friends at once, at any
/// offsets, with `&self`. Bytes already pulled from the source are served in parallel; a read
/// that needs bytes the source has not produced yet makes its thread pull them (if no other
/// thread is pulling) or wait until they are published.
///
/// Bytes are kept in fixed-size segments: in RAM up to the memory budget, then the coldest full
/// segments move to an unnamed, sparse temp file that readers access through a memory map.
/// See [`Builder`](crate::Builder) for the settings.
///
/// # Locking
///
/// One reader-writer lock guards the index. It is sharded: a reader locks only the shard of its
/// thread (each shard on a cache line of its own), so reads of filled data on different cores
/// run in parallel without writing any cache line the others write; a writer locks every shard.
/// Reads hold their shard for the lookup and the copy. The writer holds the lock exclusively
/// only to publish (an O(1) append for a forward-only stream) and to point a spilled segment at
/// the file. Each shard is task-fair (a waiting writer holds back new readers), so a stream of
/// readers cannot starve publishing. Pulling from the source, range-source fetches and writing
/// spill data happen with no index lock held: a slow source never stalls readers of filled
/// data. If the source panics, the panic is caught and becomes [`Error::SourcePanicked`](crate::Error::SourcePanicked)
/// (sticky for a stream; for a [`RangeSource`](crate::RangeSource), reported to the read that
/// met it).
///
/// # Examples
///
/// ```
/// use std::io::{Cursor, Read, Seek, SeekFrom};
/// use sparsebuf::StreamBuffer;
///
/// let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
/// let buf = StreamBuffer::new(Cursor::new(data.clone()));
///
/// // Random access from any thread...
/// let mut dst = [0u8; 16];
/// buf.read_exact_at(150_000, &mut dst)?;
/// assert_eq!(dst, data[150_000..150_016]);
///
/// // ...and independent cursors.
/// let mut r = buf.reader();
/// r.seek(SeekFrom::End(-4))?;
/// let mut tail = Vec::new();
/// r.read_to_end(&mut tail)?;
/// assert_eq!(tail, data[199_996..]);
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Clone)]
pub struct StreamBuffer {
    shared: Arc<Shared>,
}

impl StreamBuffer {
    pub(crate) fn from_parts(
        config: Config,
        filler: Filler,
        storage: Option<Arc<dyn SpillStorage>>,
    ) -> Self {
        StreamBuffer {
            shared: Shared::new(config, filler, storage),
        }
    }

    /// Reads bytes at `offset` into `buf`, like [`std::os::unix::fs::FileExt::read_at`].
    ///
    /// Fills all of `buf` unless the stream ends first: a short count (or `Ok(0)` at or past the
    /// end) means end of stream, never "try again". Bytes not pulled yet are pulled by this
    /// thread, or by whichever thread is already pulling while this one waits.
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::InvalidInput`] if `offset + buf.len()` overflows `u64`. If the source
    /// fails before the range is filled, the source's error (see [`Error`](crate::Error)); the same error
    /// reaches every later read that needs bytes past that point.
    ///
    /// # Examples
    ///
    /// ```
    /// let buf = sparsebuf::StreamBuffer::new(&b"0123456789"[..]);
    /// let mut dst = [0u8; 4];
    /// assert_eq!(buf.read_at(8, &mut dst)?, 2); // short only at the end
    /// assert_eq!(&dst[..2], b"89");
    /// assert_eq!(buf.read_at(10, &mut dst)?, 0);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    #[inline]
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        self.shared.read_inner(offset, buf, Want::All)
    }

    /// Reads exactly `buf.len()` bytes at `offset`.
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::UnexpectedEof`] if the stream ends first, and the errors of
    /// [`read_at`](StreamBuffer::read_at).
    pub fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let n = self.read_at(offset, buf)?;
        if n < buf.len() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "stream ends at offset {}, {} bytes short of the requested range",
                    offset + n as u64,
                    buf.len() - n
                ),
            ));
        }
        Ok(())
    }

    /// The bytes of `range` as a new `Vec`, clipped at the end of the stream (the original
    /// design's `buf[a:b]`).
    ///
    /// Memory is allocated only for bytes that exist, so `read_range(0..u64::MAX)` returns the
    /// whole stream (after pulling it all) rather than failing to allocate.
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::InvalidInput`] if `range.start > range.end`;
    /// [`io::ErrorKind::OutOfMemory`] if the bytes do not fit in memory; the errors of
    /// [`read_at`](StreamBuffer::read_at).
    ///
    /// # Examples
    ///
    /// ```
    /// let buf = sparsebuf::StreamBuffer::new(&b"0123456789"[..]);
    /// assert_eq!(buf.read_range(7..100)?, b"789");
    /// assert!(buf.read_range(5..3).is_err());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn read_range(&self, range: Range<u64>) -> io::Result<Vec<u8>> {
        if range.start > range.end {
            return Err(invalid_input(format!(
                "range start {} is after its end {}",
                range.start, range.end
            )));
        }
        let end = self.shared.wait_held(range.start, range.end)?;
        let len = usize::try_from(end - range.start).map_err(|_| {
            io::Error::new(io::ErrorKind::OutOfMemory, "range too large for memory")
        })?;
        let mut out = Vec::new();
        out.try_reserve_exact(len).map_err(|e| {
            io::Error::new(io::ErrorKind::OutOfMemory, format!("{len}-byte range: {e}"))
        })?;
        out.resize(len, 0);
        let n = self.read_at(range.start, &mut out)?;
        out.truncate(n);
        Ok(out)
    }

    /// Waits until every byte of `range` that exists is filled, pulling or fetching as needed,
    /// and returns the end of what is there: `range.end` clipped at the end of the stream. Use
    /// it to prebuffer before playback, or to fetch a region of a range source ahead of time.
    ///
    /// A range that starts at or past the end of the stream returns the stream's length, which
    /// may mean pulling the stream to its end to learn it. An empty range `a..a` waits for the
    /// byte at `a` to exist (or for the stream to end first) and returns `a` clipped the same
    /// way, so `wait_for(n..n)` tells whether the stream reaches `n`. (A range source that
    /// does not report its length is clipped where its fetches found the end: at the end of
    /// the stream, or at the first offset found to lie past it.)
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::InvalidInput`] if `range.start > range.end`; the source's errors.
    ///
    /// # Examples
    ///
    /// ```
    /// let buf = sparsebuf::StreamBuffer::new(std::io::Cursor::new(vec![1u8; 10_000]));
    /// assert_eq!(buf.wait_for(0..4096)?, 4096);
    /// assert_eq!(buf.location(0, 4096), sparsebuf::Location::BeforeIndex);
    /// assert_eq!(buf.wait_for(9_000..20_000)?, 10_000);
    /// assert_eq!(buf.wait_for(20_000..30_000)?, 10_000);
    /// assert_eq!(buf.wait_for(u64::MAX..u64::MAX)?, 10_000);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn wait_for(&self, range: Range<u64>) -> io::Result<u64> {
        if range.start > range.end {
            return Err(invalid_input(format!(
                "range start {} is after its end {}",
                range.start, range.end
            )));
        }
        // An empty range asks whether the stream reaches its start: wait for that byte (for
        // `u64::MAX`, the last addressable one).
        let (from, to) = match range.start {
            start if start < range.end => (start, range.end),
            u64::MAX => (u64::MAX - 1, u64::MAX),
            start => (start, start + 1),
        };
        let reached = self.shared.wait_held(from, to)?;
        Ok(reached.min(self.shared.clip(range.end)))
    }

    /// The first byte still kept: 0 unless a live stream's [`window`](crate::Builder::window) has
    /// moved past the start (bytes before it are gone, and reads there get
    /// [`Error::BehindWindow`](crate::Error::BehindWindow)). It only grows.
    pub fn window_start(&self) -> u64 {
        self.shared.window_start()
    }

    /// Pulls the rest of the stream and returns its total length.
    ///
    /// # Errors
    ///
    /// The source's error, if it fails (sticky: see [`Error`](crate::Error)), including
    /// [`Error::EndedEarly`](crate::Error::EndedEarly) and [`Error::RanLong`](crate::Error::RanLong) against a declared length.
    pub fn fill_to_end(&self) -> io::Result<u64> {
        self.shared.fill_to_end()
    }

    /// Pulls the rest of the stream and writes the whole resource to `path`, atomically: the
    /// bytes go to a temporary file in the same directory, which is synced and then renamed over
    /// `path`. Spilled regions are copied by the kernel (`copy_file_range`) where it can.
    /// Returns the number of bytes written.
    ///
    /// # Errors
    ///
    /// The errors of [`fill_to_end`](StreamBuffer::fill_to_end), and I/O errors creating,
    /// writing, syncing or renaming the file, with the path in the message. A resource larger
    /// than the process's file-size limit (`RLIMIT_FSIZE`) is an error of kind
    /// [`FileTooLarge`](io::ErrorKind::FileTooLarge), found before anything is written (the
    /// kernel would otherwise kill the process with `SIGXFSZ`). On any error, `path` is left as
    /// it was and the temporary file is removed.
    ///
    /// # Examples
    ///
    /// ```
    /// let dir = tempfile::tempdir()?;
    /// let path = dir.path().join("resource.bin");
    /// let buf = sparsebuf::StreamBuffer::new(&b"a whole resource"[..]);
    /// assert_eq!(buf.save(&path)?, 16);
    /// assert_eq!(std::fs::read(&path)?, b"a whole resource");
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn save(&self, path: impl AsRef<Path>) -> io::Result<u64> {
        let path = path.as_ref();
        // A range source of known length is copied in one pass, fetching its holes on the
        // way; anything else is filled first (a stream must be pulled to its end anyway).
        let total = match (self.shared.is_ranged(), self.len()) {
            (true, Some(len)) => len,
            _ => self.fill_to_end()?,
        };
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        let at = |what: &str| format!("{what} {}", path.display());
        check_file_size(total).map_err(|e| context(e, at("saving")))?;
        let mut tmp = tempfile::Builder::new()
            .prefix(".sparsebuf-")
            .permissions(Permissions::from_mode(0o666))
            .tempfile_in(dir)
            .map_err(|e| context(e, at("creating a temporary file to save")))?;
        self.shared
            .write_all_to(tmp.as_file_mut(), total)
            .and_then(|()| tmp.as_file().sync_all())
            .map_err(|e| context(e, at("writing")))?;
        tmp.persist(path)
            .map_err(|e| context(e.error, at("renaming the saved file to")))?;
        Ok(total)
    }

    /// The stream's length, if known: declared with [`Builder::len`](crate::Builder::len), or reached.
    pub fn len(&self) -> Option<u64> {
        self.shared.len()
    }

    /// What identifies the version of the resource this buffer holds, if its source said: a
    /// [`RangeSource`](crate::RangeSource)'s [`validators`](crate::RangeSource::validators) (a
    /// file's length, modification time and inode), or a URL's `ETag` and `Last-Modified`.
    pub fn validators(&self) -> &Validators {
        self.shared.validators()
    }

    /// The media type of the resource (`video/mp4`), if its source said: a URL's
    /// `Content-Type`, or a [`RangeSource`](crate::RangeSource)'s
    /// [`content_type`](crate::RangeSource::content_type).
    pub fn content_type(&self) -> Option<&str> {
        self.shared.content_type()
    }

    /// Whether the stream is known to be empty (`None` while its length is unknown).
    pub fn is_empty(&self) -> Option<bool> {
        self.len().map(|len| len == 0)
    }

    /// Where `[offset, offset + len)` stands against the filled bytes: the read path's four
    /// cases (see [`Location`]). A range reaching past `u64::MAX` is never filled.
    pub fn location(&self, offset: u64, len: u64) -> Location {
        self.shared.location(offset, len)
    }

    /// A snapshot of the buffer's counters.
    pub fn stats(&self) -> Stats {
        self.shared.stats()
    }

    /// The most recent spill failure, if any (its kind, and a message with the segment's
    /// offset). Spill failures never lose data: the segment stays in RAM.
    pub fn spill_error(&self) -> Option<io::Error> {
        self.shared.spill_error()
    }

    /// Starts filling `range` in the background and returns at once: pulls a stream up to its
    /// end, or fetches a range source's holes in it. Use [`wait_for`](StreamBuffer::wait_for)
    /// to wait. A later `prefetch` (or, with [`Builder::read_ahead`](crate::Builder::read_ahead), a later read) replaces
    /// the range the background worker is filling next. Like read-ahead, a prefetch reaches
    /// only as far as the budgets can keep (see [`Builder::read_ahead`](crate::Builder::read_ahead)).
    ///
    /// # Examples
    ///
    /// ```
    /// let buf = sparsebuf::StreamBuffer::new(std::io::Cursor::new(vec![5u8; 100_000]));
    /// buf.prefetch(0..50_000);
    /// assert_eq!(buf.wait_for(0..50_000)?, 50_000);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn prefetch(&self, range: Range<u64>) {
        if range.start < range.end {
            self.shared.request_ahead(range);
        }
    }

    /// For loom models only: how many fan-out consumers are registered (each ended one is
    /// unregistered).
    #[cfg(loom)]
    #[doc(hidden)]
    pub fn registered_consumers(&self) -> u64 {
        self.shared.taps().consumers()
    }

    pub(crate) fn from_shared(shared: Arc<Shared>) -> Self {
        StreamBuffer { shared }
    }

    pub(crate) fn shared_arc(&self) -> Arc<Shared> {
        self.shared.clone()
    }

    pub(crate) fn shared(&self) -> &Shared {
        &self.shared
    }
}

impl fmt::Debug for StreamBuffer {
    /// Shows the filled ranges, the length and where the segments live.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut fields = f.debug_struct("StreamBuffer");
        self.shared.describe(&mut fields);
        fields.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::spill::HeapStorage;
    use std::io::Read;

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 13 % 256) as u8).collect()
    }

    #[test]
    fn small_streams_never_create_a_spill_file() {
        // Two default segments (64 KiB); just over one under miri.
        let n = if cfg!(miri) { 66_000 } else { 100_000 };
        let buf = StreamBuffer::new(io::Cursor::new(pattern(n)));
        buf.fill_to_end().unwrap();
        assert!(!buf.shared.has_storage());
        assert_eq!(buf.stats().segments_in_memory, 2);
    }

    #[test]
    fn the_fast_path_declines_unfilled_ranges() {
        let buf = StreamBuffer::new(io::Cursor::new(pattern(1000)));
        let mut dst = [0u8; 10];
        assert!(buf.shared.read_filled(0, 10, &mut dst, Want::All).is_none());
        assert_eq!(buf.read_at(0, &mut dst).unwrap(), 10);
        assert!(matches!(
            buf.shared.read_filled(990, 1000, &mut dst, Want::All),
            Some(Ok(10))
        ));
        // Past the known end: answered without the source.
        buf.fill_to_end().unwrap();
        assert!(matches!(
            buf.shared.read_filled(5000, 5010, &mut dst, Want::All),
            Some(Ok(0))
        ));
    }

    #[test]
    fn spills_to_a_supplied_storage_and_reads_back() {
        // Smaller under miri (interpreted, every byte checked).
        let n = if cfg!(miri) { 8_000 } else { 50_000 };
        let data = pattern(n);
        let buf = StreamBuffer::builder()
            .segment_size(1024)
            .memory_budget(2048)
            .spill_storage(HeapStorage::default())
            .build(io::Cursor::new(data.clone()))
            .unwrap();
        assert_eq!(buf.read_range(0..n as u64).unwrap(), data);
        let st = buf.stats();
        assert!(st.segments_spilled as usize >= n / 1024 - 3, "{st:?}");
        assert!(st.memory_bytes <= 3 * 1024, "{st:?}");
    }

    /// Readers copy published prefixes while the writer splits and re-joins the same
    /// allocation; small enough for miri, which checks those accesses for data races.
    #[test]
    fn concurrent_readers_while_publishing_and_spilling() {
        let data = pattern(3000);
        let chunks: Vec<io::Result<Vec<u8>>> = data.chunks(97).map(|c| Ok(c.to_vec())).collect();
        let buf = StreamBuffer::builder()
            .segment_size(256)
            .memory_budget(512)
            .spill_storage(HeapStorage::default())
            .build_chunks(chunks)
            .unwrap();
        std::thread::scope(|s| {
            for t in 0..3u64 {
                let (buf, data) = (buf.clone(), &data);
                s.spawn(move || {
                    for i in 0..8u64 {
                        let offset = (t * 997 + i * 331) % 3000;
                        let mut dst = [0u8; 300];
                        let n = buf.read_at(offset, &mut dst).unwrap();
                        let end = (offset as usize + 300).min(3000);
                        assert_eq!(&dst[..n], &data[offset as usize..end]);
                    }
                });
            }
        });
        assert_eq!(buf.read_range(0..3000).unwrap(), data);
    }

    /// The slot table follows the kept segments: a live stream's stays small however far it
    /// runs (it once grew by a slot per segment streamed).
    #[test]
    #[cfg_attr(
        miri,
        ignore = "minutes under miri; slots::tests checks the paging there"
    )]
    fn a_windowed_streams_slot_table_stays_bounded() {
        // 512 pages' worth of 256-byte segments.
        let len = 8 << 20;
        let buf = StreamBuffer::builder()
            .segment_size(256)
            .memory_budget(4096)
            .window(16 << 10)
            .spill_storage(HeapStorage::default())
            .build(io::Cursor::new(pattern(len)))
            .unwrap();
        let mut r = buf.reader();
        let mut chunk = vec![0u8; 10_000];
        let mut most = 0;
        while r.read(&mut chunk).unwrap() > 0 {
            most = most.max(buf.shared.slot_pages());
        }
        // 16 KiB of 256-byte segments is 64 slots: one page, two where it straddles.
        assert!(most <= 3, "{most} pages for {} segments", len / 256);
    }

    #[test]
    fn debug_shows_the_frontier_length_and_tiers() {
        let buf = StreamBuffer::builder()
            .segment_size(256)
            .memory_budget(256)
            .spill_storage(HeapStorage::default())
            .build(io::Cursor::new(pattern(1000)))
            .unwrap();
        buf.read_at(0, &mut [0u8; 600]).unwrap();
        let shown = format!("{buf:?}");
        assert!(shown.contains("filled: {0..768}"), "{shown}");
        assert!(shown.contains("len: None"), "{shown}");
        // A one-segment budget leaves no room for full segments: all three are spilled.
        assert!(shown.contains("segments_spilled: 3"), "{shown}");
        assert!(shown.contains("segments_in_memory: 0"), "{shown}");
        buf.fill_to_end().unwrap();
        assert!(format!("{buf:?}").contains("len: Some(1000)"));
    }
}
