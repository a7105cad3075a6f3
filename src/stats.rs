//! A plain snapshot of a buffer's counters.

/// Counters of a [`StreamBuffer`](crate::StreamBuffer), taken by
/// [`StreamBuffer::stats`](crate::StreamBuffer::stats).
///
/// Every field is a plain `u64`. The snapshot is taken under the index's read lock, so the
/// segment counts and byte counts agree with each other; the memory and source counters are
/// maintained by the writer with atomics and may be one publish ahead of or behind the rest.
/// Taking it first waits for the spill writes in flight (the background spiller's, at most
/// half the memory budget and 2 MiB), so that every failed write is counted.
///
/// # Examples
///
/// ```
/// use sparsebuf::StreamBuffer;
///
/// let buf = StreamBuffer::from_chunks(vec![Ok::<_, std::io::Error>(vec![0u8; 1000])]);
/// buf.fill_to_end()?;
/// let s = buf.stats();
/// assert_eq!((s.filled_bytes, s.source_bytes, s.spilled_bytes), (1000, 1000, 0));
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Bytes of the stream that are filled (readable without touching the source).
    pub filled_bytes: u64,
    /// Bytes of RAM held by segment buffers: segments in memory, the segment being filled and
    /// recycled buffers kept for reuse. Counted in whole segments.
    pub memory_bytes: u64,
    /// The largest `memory_bytes` seen so far.
    pub peak_memory_bytes: u64,
    /// Bytes of the stream that live in the spill file.
    pub spilled_bytes: u64,
    /// Segments whose bytes live in RAM (full ones and the one being filled).
    pub segments_in_memory: u64,
    /// Segments whose bytes live in the spill file.
    pub segments_spilled: u64,
    /// Bytes read from the source so far (fetched, for a range source).
    pub source_bytes: u64,
    /// Unfilled gaps between filled ranges (only a range source leaves holes).
    pub holes: u64,
    /// Range-source fetches under way.
    pub fetches_in_flight: u64,
    /// Bytes fetched again after their segment was evicted (range sources under a disk budget).
    pub refetched_bytes: u64,
    /// Segments evicted: dropped from RAM or the spill file, to be fetched again if read.
    pub evictions: u64,
    /// Segments fetched by read-ahead ([`Builder::read_ahead`](crate::Builder::read_ahead),
    /// [`StreamBuffer::prefetch`](crate::StreamBuffer::prefetch)) and then read.
    pub read_ahead_hits: u64,
    /// Bytes the read-ahead worker pulled from a stream or fetched from a range source
    /// ([`Builder::read_ahead`](crate::Builder::read_ahead),
    /// [`StreamBuffer::prefetch`](crate::StreamBuffer::prefetch)).
    pub read_ahead_bytes: u64,
    /// Spills that failed (for example on a full disk, or past the process's file-size limit).
    /// The segment stayed in RAM, so the memory budget was exceeded, but no data was lost.
    pub spill_errors: u64,
    /// Address space of the memory maps through which spilled segments are read: one map per
    /// spilled segment that was read, released when the segment leaves the spill file. Where
    /// a map cannot be made, the segment is read with `pread` instead and adds nothing here.
    pub mapped_bytes: u64,
    /// Times the writer of a windowed stream found its budgets full of bytes a reader still
    /// needs, and waited for a reader to move on ([`Builder::window`](crate::Builder::window)).
    pub writer_waits: u64,
    /// The segment size in bytes.
    pub segment_size: u64,
    /// The memory budget in bytes.
    pub memory_budget: u64,
}

impl Stats {
    /// Adds `other`'s counters to these (for a cache's totals).
    pub(crate) fn add(&mut self, other: &Stats) {
        self.filled_bytes += other.filled_bytes;
        self.memory_bytes += other.memory_bytes;
        self.peak_memory_bytes += other.peak_memory_bytes;
        self.spilled_bytes += other.spilled_bytes;
        self.segments_in_memory += other.segments_in_memory;
        self.segments_spilled += other.segments_spilled;
        self.source_bytes += other.source_bytes;
        self.holes += other.holes;
        self.fetches_in_flight += other.fetches_in_flight;
        self.refetched_bytes += other.refetched_bytes;
        self.evictions += other.evictions;
        self.read_ahead_hits += other.read_ahead_hits;
        self.read_ahead_bytes += other.read_ahead_bytes;
        self.spill_errors += other.spill_errors;
        self.mapped_bytes += other.mapped_bytes;
        self.writer_waits += other.writer_waits;
    }
}
