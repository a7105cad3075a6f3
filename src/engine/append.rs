//! The appender: the one place where bytes enter the store. It reserves a segment (making
//! room within the budgets first on a windowed stream), takes bytes written into the segment's
//! unpublished tail, publishes them, seals full segments, slides the window, and ends the stream
//! cleanly or with a sticky error. A producer (the pull driver or a push `Writer`) owns one and
//! calls it. After each publish it feeds the inline consumers (`taps.rs`).

use std::time::Instant;

use bytes::BytesMut;

use crate::engine::holds::Blocked;
use crate::engine::shared::Shared;
use crate::error::Error;
use crate::store::slots::Slot;
use crate::store::tiers::Tiers;
use crate::sync::Ordering;

/// The producer's side of the index.
///
/// Invariants: `frontier` is the end of the published bytes; `pending`, if any, is the segment
/// containing `frontier`, and its `tail` the part of that segment's buffer not yet published.
/// After `finish` or `fail`, the index's state says which, and nothing more is appended.
pub(crate) struct Appender {
    frontier: u64,
    pending: Option<Pending>,
    /// Bytes of the write under way are published (its end is not marked yet).
    writing: bool,
}

/// The segment being filled, and the unpublished rest of its buffer: `left` bytes, initialised
/// (`tail.len() == left`, for [`Appender::room`]) or to be appended (`tail` empty with room for
/// `left`, for [`Appender::append`]).
struct Pending {
    segment: u64,
    tail: BytesMut,
    left: usize,
}

impl Appender {
    pub(crate) fn new() -> Self {
        Appender {
            frontier: 0,
            pending: None,
            writing: false,
        }
    }

    /// The end of the published bytes.
    pub(crate) fn frontier(&self) -> u64 {
        self.frontier
    }

    /// The unpublished rest of the segment being filled, taking a new segment if needed, cut
    /// to what a declared length leaves. `Ok(None)`: the declared length is reached. `Err`: a
    /// windowed stream has no room for another segment until a reader moves on.
    pub(crate) fn room(&mut self, shared: &Shared) -> Result<Option<&mut [u8]>, Blocked> {
        let Some(want) = self.open(shared, false)? else {
            return Ok(None);
        };
        Ok(self.pending.as_mut().map(|p| &mut p.tail[..want]))
    }

    /// Copies as much of `src` as the segment being filled (or a new one) takes, and commits it;
    /// returns how much. `Ok(None)` and `Err` as for [`room`](Appender::room).
    pub(crate) fn append(
        &mut self,
        shared: &Shared,
        src: &[u8],
        write_end: bool,
    ) -> Result<Option<usize>, Blocked> {
        let Some(want) = self.open(shared, true)? else {
            return Ok(None);
        };
        let n = want.min(src.len());
        if let Some(pending) = self.pending.as_mut() {
            // Within the room the buffer was taken with: no reallocation.
            pending.tail.extend_from_slice(&src[..n]);
        }
        self.commit(shared, n, write_end && n == src.len());
        Ok(Some(n))
    }

    /// Makes sure a segment is being filled (`empty`: with a buffer to append to); returns how
    /// many bytes it takes, cut to a declared length (`None`: that length is reached).
    fn open(&mut self, shared: &Shared, empty: bool) -> Result<Option<usize>, Blocked> {
        let cfg = &shared.config;
        let declared_left = cfg
            .declared_len
            .map(|len| len.saturating_sub(self.frontier));
        if declared_left == Some(0) {
            return Ok(None);
        }
        if let (None, Some(window)) = (&self.pending, shared.window) {
            // A new segment needs room within the budgets before its buffer is taken, and must
            // not slide the window past a consumer when it completes.
            let mut tiers = shared.tiers.lock();
            let size = cfg.segment_size as u64;
            let slides_to =
                ((self.frontier + size).saturating_sub(window) >> cfg.shift) << cfg.shift;
            let start = shared.state.read().window_start;
            if slides_to > start {
                shared.holds.check_pins(start, slides_to)?;
            }
            tiers.enforce_budget(shared, true, false)?;
        }
        if let (None, Some(account)) = (&self.pending, shared.account()) {
            // In a cache, a new segment needs room in the cache's RAM (the writer waits for it
            // while other members in use hold everything).
            account.reserve(shared);
        }
        let frontier = self.frontier;
        let pending = self.pending.get_or_insert_with(|| Pending {
            segment: frontier >> cfg.shift,
            tail: shared.tiers.lock().take(empty),
            left: cfg.segment_size,
        });
        let left = pending.left;
        Ok(Some(declared_left.map_or(left, |d| {
            usize::try_from(d).map_or(left, |d| d.min(left))
        })))
    }

    /// Publishes the first `n` bytes of [`room`](Appender::room): an O(1) append under the
    /// write lock; readers see them when this returns. `write_end`: they end a write (a push
    /// `write`, one read of a pulled source), which the marks record for consumers. Then feeds
    /// the inline consumers.
    pub(crate) fn commit(&mut self, shared: &Shared, n: usize, write_end: bool) {
        let completed = self.publish(shared, n, write_end);
        // The inline consumers take the new bytes before anything can be dropped.
        shared.taps.deliver(shared);
        if let Some(segment) = completed {
            self.settle(shared, segment);
        }
    }

    /// Publishes; returns the segment the bytes completed, if any.
    fn publish(&mut self, shared: &Shared, n: usize, write_end: bool) -> Option<u64> {
        let Some(pending) = self.pending.as_mut().filter(|_| n > 0) else {
            if write_end && self.writing {
                self.writing = false;
                shared.state.write().marks.record(self.frontier);
            }
            return None;
        };
        let piece = pending.tail.split_to(n);
        pending.left -= n;
        let complete = pending.left == 0;
        let segment = pending.segment;
        let range = self.frontier..self.frontier + n as u64;
        // With a consumer registered, every write is marked; otherwise only full segments (a
        // clock read per write would cost more than the copy of a small one).
        let exact = shared.taps.any_consumer();
        let began = if exact {
            (!self.writing).then(Instant::now)
        } else {
            complete.then(Instant::now)
        };
        {
            let mut state = shared.state.write();
            state.index.append(segment, range.clone(), piece);
            if complete {
                state.index.seal(segment);
            }
            if let Some(at) = began {
                state.marks.begin(at);
            }
            if (exact && write_end) || (!exact && complete) {
                state.marks.record(range.end);
            }
        }
        self.writing = !write_end;
        self.frontier = range.end;
        shared.source_bytes.fetch_add(n as u64, Ordering::Relaxed);
        shared.publish.notify();
        complete.then(|| {
            self.pending = None;
            segment
        })
    }

    /// A full segment joins the RAM tier; the window slides and the budgets are enforced.
    fn settle(&mut self, shared: &Shared, segment: u64) {
        let mut tiers = shared.tiers.lock();
        tiers.admit(segment);
        if let Some(window) = shared.window {
            self.slide_window(shared, &mut tiers, window);
        }
        // A windowed stream that finds no room here waits before its next segment. Other
        // streams have the spiller clean segments ahead of need (see `spiller.rs`).
        let unbounded = shared.window.is_none();
        let _ = tiers.enforce_budget(shared, unbounded, unbounded);
    }

    /// Drops the whole segments that fell out of the last `window` bytes, but none a
    /// consumer's pinned hold is in (`room` waits for those; a consumer started since then
    /// may hold one). Readers that start before the new window start get
    /// [`Error::BehindWindow`]; the window start is raised before the segments go, under the
    /// same write lock as each removal.
    fn slide_window(&mut self, shared: &Shared, tiers: &mut Tiers, window: u64) {
        let shift = shared.config.shift;
        let mut first_kept = self.frontier.saturating_sub(window) >> shift;
        let start = shared.state.read().window_start;
        if first_kept << shift <= start {
            return;
        }
        if let Some(pin) = shared.holds.first_pin(start) {
            first_kept = first_kept.min(pin >> shift);
        }
        let first_dropped = {
            let mut state = shared.state.write();
            if first_kept << shift <= state.window_start {
                return;
            }
            let first_dropped = state.window_start >> shift;
            state.raise_window_start(first_kept << shift);
            first_dropped
        };
        tiers.drop_segments(shared, first_dropped..first_kept);
    }

    /// The stream ended: seal the last segment and record the length (an error if a declared
    /// length says more was due).
    pub(crate) fn finish(&mut self, shared: &Shared) {
        if let Some(declared) = shared.config.declared_len {
            if self.frontier < declared {
                let actual = self.frontier;
                return self.fail(shared, Error::EndedEarly { declared, actual });
            }
        }
        let last = self.pending.take().map(|p| p.segment);
        let sealed = {
            let mut state = shared.state.write();
            // The end is a write's end; with no mark open, it closes the last coarse one.
            state.marks.begin(Instant::now());
            state.marks.record(self.frontier);
            self.writing = false;
            state.len = Some(self.frontier);
            state.complete = true;
            last.map(|segment| (segment, state.index.seal(segment)))
        };
        shared.publish.notify();
        shared.taps.deliver(shared);
        let mut tiers = shared.tiers.lock();
        match sealed {
            Some((segment, true)) => tiers.admit(segment),
            Some((_, false)) => tiers.forget(),
            None => {}
        }
        let unbounded = shared.window.is_none();
        let _ = tiers.enforce_budget(shared, false, unbounded);
    }

    /// The stream failed: record the sticky error (and log it, once). Published bytes stay
    /// readable.
    pub(crate) fn fail(&mut self, shared: &Shared, err: Error) {
        shared.log_source_failure(&err);
        let pending = self.pending.take();
        let unused_buffer = {
            let mut state = shared.state.write();
            let published = pending
                .as_ref()
                .and_then(|p| state.index.slot(p.segment))
                .is_some_and(|slot| matches!(slot, Slot::Filling(_)));
            state.error = Some(err);
            pending.is_some() && !published
        };
        if unused_buffer {
            shared.tiers.lock().forget();
        }
        shared.publish.notify();
        shared.taps.deliver(shared);
    }
}
