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
//! allocated extends the previous one. The marks are bounded by the memory budget: past one
//! mark per 384 bytes of it (1/16 of the budget in marks, at least 64 marks), neighbouring marks
//! are merged in pairs, keeping the later end and the earlier time. A merged mark still ends
//! where a write ended, so a `clip(false)` chunk still ends at a write's end; it may then hold
//! more writes than the fewest that reach its size.

use std::collections::VecDeque;
use std::time::Instant;

/// One write (or run of merged writes): its end offset and the time its first byte arrived.
#[derive(Clone, Copy, Debug)]
struct Mark {
    end: u64,
    at: Instant,
}

/// The marks of one stream, in offset order. Guarded by the index lock.
pub(crate) struct Marks {
    marks: VecDeque<Mark>,
    /// When the first byte of the write under way (published, not yet ended) arrived.
    open: Option<Instant>,
    /// The most marks kept before neighbours are merged.
    limit: usize,
}

impl Default for Marks {
    fn default() -> Self {
        Marks::for_budget(0)
    }
}

impl Marks {
    /// Marks for a buffer with `memory_budget` bytes of RAM: at most 1/16 of it (at least 64).
    pub(crate) fn for_budget(memory_budget: usize) -> Self {
        let limit = (memory_budget / (16 * std::mem::size_of::<Mark>())).max(64);
        Marks {
            marks: VecDeque::new(),
            open: None,
            limit,
        }
    }

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
        if self.marks.len() > self.limit {
            self.merge_pairs();
        }
    }

    /// Halves the marks: each pair becomes one mark with the later end and the earlier time.
    fn merge_pairs(&mut self) {
        let old = std::mem::take(&mut self.marks);
        let mut merged = VecDeque::with_capacity(old.len() / 2 + 1);
        let mut pairs = old.into_iter();
        while let Some(first) = pairs.next() {
            let end = pairs.next().map_or(first.end, |second| second.end);
            merged.push_back(Mark { end, at: first.at });
        }
        self.marks = merged;
    }

    /// How many marks are kept (for tests of their bound).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.marks.len()
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

    /// Pins the bound: with a consumer registered, 10 million 1-byte writes once kept 10 million
    /// marks (230 MiB with a 1 MiB budget).
    #[test]
    fn marks_stay_within_the_budget_and_still_end_at_writes() {
        let mut m = Marks::for_budget(64 * 1024);
        let t0 = Instant::now();
        let writes = if cfg!(miri) { 2_000 } else { 100_000u64 };
        for end in 1..=writes {
            m.begin(t0 + Duration::from_nanos(end));
            m.record(end * 3);
        }
        assert!(m.len() <= 64 * 1024 / 384, "{}", m.len());
        assert!(m.len() >= 64 * 1024 / 384 / 2, "{}", m.len());
        // Every kept end is a write's end, and the ends still cover the stream in order.
        let mut at = 0;
        while let Some(end) = m.end_at_least(at + 1) {
            assert_eq!(end % 3, 0, "{end} is not where a write ended");
            assert!(end > at);
            at = end;
        }
        assert_eq!(at, writes * 3);
        assert_eq!(m.arrival(0), Some(t0 + Duration::from_nanos(1)));
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
