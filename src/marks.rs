//! Marks: where a stream's writes ended, and when they arrived.
//!
//! Fan-out consumers need two facts the index does not keep: with `clip(false)` a chunk ends
//! where a write ended, and every chunk carries the time its first byte arrived. The producer
//! records one mark per write (a push `Writer::write`, or one read of a pulled source) under the
//! index's write lock, in the same critical section that publishes the write's last bytes.
//!
//! Memory: a mark is 24 bytes. While a consumer is registered, every write is marked; with no
//! consumer, writes closer than [`COARSE`] bytes to the previous mark extend it instead (so a
//! stream of tiny writes costs at most one mark per 4 KiB). Marks behind the window start are
//! dropped with the bytes, and a mark that cannot be allocated extends the previous one.

use std::collections::VecDeque;
use std::time::Instant;

/// With no consumer registered, writes are merged into marks at least this many bytes apart.
pub(crate) const COARSE: u64 = 4096;

/// One write (or run of merged writes): its end offset and the time its first byte arrived.
#[derive(Clone, Copy, Debug)]
struct Mark {
    end: u64,
    at: Instant,
}

/// The marks of one stream, in offset order. Guarded by the index lock.
#[derive(Default)]
pub(crate) struct Marks {
    marks: VecDeque<Mark>,
    /// When the first byte of the write under way (published, not yet ended) arrived.
    open: Option<Instant>,
}

impl Marks {
    /// A write's first bytes, which arrived `at`, are being published.
    pub(crate) fn begin(&mut self, at: Instant) {
        self.open.get_or_insert(at);
    }

    /// A write that arrived `at` ended at `end`. `exact`: keep it as a write of its own (a
    /// consumer is registered); otherwise it may be merged into the previous mark.
    pub(crate) fn record(&mut self, end: u64, exact: bool) {
        let Some(at) = self.open.take() else {
            return;
        };
        let n = self.marks.len();
        if let Some(last) = n.checked_sub(1).map(|i| self.marks[i].end) {
            if end <= last {
                return;
            }
            let previous = n.checked_sub(2).map_or(0, |i| self.marks[i].end);
            let close = end - previous < COARSE;
            if (!exact && close) || self.marks.try_reserve(1).is_err() {
                self.marks[n - 1].end = end;
                return;
            }
        }
        self.marks.push_back(Mark { end, at });
    }

    /// Forgets the marks of writes that ended at or before `start` (the window moved past them).
    pub(crate) fn drop_before(&mut self, start: u64) {
        while self.marks.front().is_some_and(|m| m.end <= start) {
            self.marks.pop_front();
        }
    }

    /// The end of the first write that ends at or after `offset`, if it ended already.
    pub(crate) fn end_at_least(&self, offset: u64) -> Option<u64> {
        let i = self.marks.partition_point(|m| m.end < offset);
        self.marks.get(i).map(|m| m.end)
    }

    /// When the published byte at `offset` arrived (`None` if the marks before it were
    /// dropped, or it was published without marks).
    pub(crate) fn arrival(&self, offset: u64) -> Option<Instant> {
        let i = self.marks.partition_point(|m| m.end <= offset);
        self.marks.get(i).map(|m| m.at).or(self.open)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn exact_marks_answer_boundaries_and_times() {
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_millis(1);
        let mut m = Marks::default();
        m.record(5, true); // no write begun: ignored
        m.begin(t0);
        m.record(10, true);
        m.begin(t1);
        assert_eq!(m.arrival(10), Some(t1)); // the write under way
        m.begin(t1 + Duration::from_millis(1)); // its second piece: still the first time
        m.record(30, true);
        m.begin(t1);
        m.record(30, true); // no bytes: ignored
        assert_eq!(m.end_at_least(0), Some(10));
        assert_eq!(m.end_at_least(10), Some(10));
        assert_eq!(m.end_at_least(11), Some(30));
        assert_eq!(m.end_at_least(31), None);
        assert_eq!(m.arrival(9), Some(t0));
        assert_eq!(m.arrival(10), Some(t1));
        assert_eq!(m.arrival(30), None);
        m.drop_before(30);
        assert_eq!(m.arrival(0), None);
    }

    #[test]
    fn dropping_keeps_the_marks_after_the_start() {
        let mut m = Marks::default();
        for end in [10, 20, 30] {
            m.begin(Instant::now());
            m.record(end, true);
        }
        m.drop_before(20);
        assert_eq!(m.end_at_least(0), Some(30));
    }

    #[test]
    fn without_consumers_close_writes_merge() {
        let t = Instant::now();
        let mut m = Marks::default();
        for end in 1..=10_000u64 {
            m.begin(t);
            m.record(end, false);
        }
        // At most one mark per COARSE bytes, and the last write's end is still a mark.
        assert!(m.marks.len() as u64 <= 10_000 / COARSE + 1);
        assert_eq!(m.end_at_least(9_999), Some(10_000));
    }
}
