//! Marks: where a stream's writes ended, and when they arrived.
//!
//! Fan-out consumers need two facts the index does not keep: with `clip(false)` a chunk ends
//! where a write ended, and every chunk carries the time its first byte arrived. While a consumer
//! is registered, the producer marks every write (a push `Writer::write`, or one read of a pulled
//! source) under the index's write lock, in the same critical section that publishes the
//! write's last bytes. With no consumer, only full segments and the end are marked (a clock read
//! per write would cost more than copying a small one): a consumer started later then cuts
//! `clip(false)` chunks of those bytes at segment ends, and dates them per segment.
//!
//! Memory: a mark is 24 bytes, one per write while consumers are registered, one per segment
//! otherwise. Marks behind the window start go with the bytes, and a mark that cannot be
//! allocated extends the previous one.

use std::collections::VecDeque;
use std::time::Instant;

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

    /// The write begun with [`begin`](Marks::begin) ended at `end`.
    pub(crate) fn record(&mut self, end: u64) {
        let Some(at) = self.open.take() else {
            return;
        };
        if self.marks.back().is_some_and(|last| end <= last.end) {
            return;
        }
        if self.marks.try_reserve(1).is_err() {
            if let Some(last) = self.marks.back_mut() {
                last.end = end;
            }
            return;
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
        m.record(5); // no write begun: ignored
        m.begin(t0);
        m.record(10);
        m.begin(t1);
        assert_eq!(m.arrival(10), Some(t1)); // the write under way
        m.begin(t1 + Duration::from_millis(1)); // its second piece: still the first time
        m.record(30);
        m.begin(t1);
        m.record(30); // no bytes: ignored
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
            m.record(end);
        }
        m.drop_before(20);
        assert_eq!(m.end_at_least(0), Some(30));
    }
}
