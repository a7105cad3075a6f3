//! Segment buffers and the pool that recycles them.

use bytes::{Bytes, BytesMut};

use crate::sync::{Arc, AtomicU64, Ordering};

/// How many spare buffers the pool keeps. The writer frees at most one buffer per segment it
/// fills, so one spare already avoids every allocation in the steady state.
const SPARES: usize = 1;

/// Hands out segment buffers of `size` bytes (zero-initialised, or empty with that capacity)
/// and takes spilled ones back.
///
/// Owned by the writer (under the writer mutex), so it needs no lock of its own. `live` counts
/// buffers allocated and not yet freed (in the index, in the writer, or spare here); it is read
/// without a lock by `stats`, so it may be momentarily behind.
pub(crate) struct Pool {
    size: usize,
    spare: Vec<BytesMut>,
    /// How many spare buffers it keeps: [`SPARES`], or none for a buffer of a cache (thousands
    /// of idle buffers would each keep one).
    spares: usize,
    counts: Arc<BufferCounts>,
    /// The cache's counts, which every member's buffers add to.
    also: Option<Arc<BufferCounts>>,
}

/// Live and peak numbers of segment buffers, shared with `stats`. Relaxed atomics: they are
/// counters for reporting, nothing synchronises through them.
#[derive(Default)]
pub(crate) struct BufferCounts {
    pub(crate) live: AtomicU64,
    pub(crate) peak: AtomicU64,
}

impl Pool {
    pub(crate) fn new(size: usize, counts: Arc<BufferCounts>) -> Self {
        Pool {
            size,
            spare: Vec::with_capacity(SPARES),
            spares: SPARES,
            counts,
            also: None,
        }
    }

    /// A pool of a cache's member: no spares, and every buffer counted in `cache` too (raised
    /// by the cache when it reserves room for the buffer, lowered here when it is freed).
    pub(crate) fn in_cache(
        size: usize,
        counts: Arc<BufferCounts>,
        cache: Arc<BufferCounts>,
    ) -> Self {
        Pool {
            size,
            spare: Vec::new(),
            spares: 0,
            counts,
            also: Some(cache),
        }
    }

    /// A buffer of exactly `size` initialised bytes (for reading a source into).
    pub(crate) fn take(&mut self) -> BytesMut {
        if let Some(buf) = self.spare.pop() {
            return buf;
        }
        self.count_new();
        BytesMut::zeroed(self.size)
    }

    /// An empty buffer with room for `size` bytes, for a writer that appends what it copies:
    /// no bytes are initialised only to be overwritten.
    pub(crate) fn take_empty(&mut self) -> BytesMut {
        if let Some(mut buf) = self.spare.pop() {
            buf.clear();
            return buf;
        }
        self.count_new();
        BytesMut::with_capacity(self.size)
    }

    /// Counts a new buffer (a cache's count was raised already, when the room for it was
    /// reserved).
    fn count_new(&self) {
        let live = self.counts.live.fetch_add(1, Ordering::Relaxed) + 1;
        self.counts.peak.fetch_max(live, Ordering::Relaxed);
    }

    fn count_freed(&self) {
        for counts in std::iter::once(&self.counts).chain(&self.also) {
            counts.live.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Takes back a segment's buffer. It is kept for reuse if nobody else holds it and it is a
    /// whole segment; otherwise it is released (a clone held elsewhere frees it when dropped).
    pub(crate) fn give(&mut self, data: Bytes) {
        if self.spare.len() < self.spares {
            if let Ok(buf) = data.try_into_mut() {
                if buf.len() == self.size {
                    self.spare.push(buf);
                    return;
                }
            }
        }
        self.count_freed();
    }

    /// Releases a buffer that never reached the index (a dropped partial segment).
    pub(crate) fn forget(&mut self) {
        self.count_freed();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recycles_unique_whole_buffers_and_counts_the_rest() {
        let counts = Arc::new(BufferCounts::default());
        let mut pool = Pool::new(64, counts.clone());
        let a = pool.take();
        let b = pool.take();
        assert_eq!((a.len(), counts.live.load(Ordering::Relaxed)), (64, 2));
        pool.give(a.freeze());
        let shared = b.freeze();
        let clone = shared.clone();
        pool.give(shared); // spare slot is taken: released
        assert_eq!(counts.live.load(Ordering::Relaxed), 1);
        drop(clone);
        let c = pool.take(); // the spare comes back without allocating
        assert_eq!((c.len(), counts.live.load(Ordering::Relaxed)), (64, 1));
        let mut short = c;
        short.truncate(10);
        pool.give(short.freeze()); // not a whole segment: released
        assert_eq!(counts.live.load(Ordering::Relaxed), 0);
        assert_eq!(counts.peak.load(Ordering::Relaxed), 2);
    }
}
