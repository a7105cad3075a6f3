//! The read path: the four cases of a read against the index (`Location`), waiting for or
//! becoming the writer of a stream, walking a range source's holes, and read-ahead requests.
//!
//! Engine code: methods of [`Shared`], used by the public handles (`StreamBuffer`, `Reader`) and
//! by the read-ahead worker. It never imports the public face.

use std::io;
use std::ops::Range;

use crate::engine::fetch::{claim, fetch, max_run, Claim};
use crate::engine::holds::{Blocked, Held};
use crate::engine::pull::Role;
use crate::engine::shared::{Filler, Ranged, Shared, State, Want};
use crate::error::{range_end, Error};
use crate::store::index::Location;
use crate::store::slots::Slot;
use crate::sync::{IndexReadGuard, Ordering};

impl Shared {
    /// Reads for `read_at` (`Want::All`) and for cursors (`Want::Some`).
    #[inline]
    pub(crate) fn read_inner(&self, offset: u64, buf: &mut [u8], want: Want) -> io::Result<usize> {
        let end = range_end(offset, buf.len())?;
        let n = match self.read_filled(offset, end, buf, want) {
            Some(done) => done?,
            None => self.read_slow(offset, end, buf, want)?,
        };
        self.after_read(offset, n);
        Ok(n)
    }

    /// After a read of `n` bytes at `offset`: asks for read-ahead past them, if configured.
    #[inline]
    pub(crate) fn after_read(&self, offset: u64, n: usize) {
        let ahead = self.config.read_ahead;
        if ahead > 0 && n > 0 {
            let from = offset + n as u64;
            self.request_ahead(from..from.saturating_add(ahead));
        }
    }

    /// The fast path: one read lock, one lookup, one copy; `None` if the source must be asked.
    #[inline]
    pub(crate) fn read_filled(
        &self,
        offset: u64,
        end: u64,
        buf: &mut [u8],
        want: Want,
    ) -> Option<io::Result<usize>> {
        let state = self.state.read();
        let end = state.clip(end);
        if offset >= end {
            return Some(Ok(0));
        }
        let filled = state.index.filled_end(offset)?.min(end);
        if filled < end && want == Want::All {
            return None;
        }
        Some(self.copy_locked(&state, offset, filled, buf))
    }

    #[cold]
    fn read_slow(&self, offset: u64, end: u64, buf: &mut [u8], want: Want) -> io::Result<usize> {
        if let Filler::Ranged(ranged) = &self.filler {
            let reached = self.walk_ranged(ranged, offset, end, Some(buf), want, None)?;
            return Ok((reached - offset) as usize);
        }
        if self.window.is_some() && want == Want::All {
            return self.read_windowed(offset, end, buf);
        }
        loop {
            let ready = self.wait_filled(offset, end, want)?;
            // Look again under the lock the copy holds: bytes may have been evicted in between.
            let state = self.state.read();
            let filled = state.index.filled_end(offset).unwrap_or(offset).min(ready);
            if offset >= ready || filled == ready || (want == Want::Some && filled > offset) {
                return self.copy_locked(&state, offset, filled.max(offset), buf);
            }
        }
    }

    fn copy_locked(
        &self,
        state: &IndexReadGuard<'_, State>,
        offset: u64,
        end: u64,
        buf: &mut [u8],
    ) -> io::Result<usize> {
        let n = (end - offset) as usize;
        self.copy(state, offset, &mut buf[..n])?;
        Ok(n)
    }

    /// Waits until `[offset, end)` is filled (for `Want::Some`, until `offset` is), pulling from
    /// the source as needed. Returns the end of what may be copied: `end` clipped to the stream.
    pub(crate) fn wait_filled(&self, offset: u64, end: u64, want: Want) -> io::Result<u64> {
        if let Filler::Ranged(ranged) = &self.filler {
            return self.walk_ranged(ranged, offset, end, None, want, None);
        }
        loop {
            // Read the generation before looking: a publish after this point wakes the wait.
            let seen = self.publish.generation();
            let need = {
                let state = self.state.read();
                let end = state.clip(end);
                if offset >= end {
                    return Ok(offset);
                }
                if offset < state.window_start {
                    let window_start = state.window_start;
                    return Err(Error::BehindWindow {
                        offset,
                        window_start,
                    }
                    .into());
                }
                match state.index.location(offset, end - offset) {
                    // Every byte is there: nothing to pull.
                    Location::BeforeIndex => return Ok(end),
                    // Starts in filled data: a cursor takes what is there now.
                    Location::Bisected if want == Want::Some => {
                        return Ok(state.index.filled_end(offset).unwrap_or(offset).min(end))
                    }
                    // Ends past the frontier, starts at it, or starts beyond it: the source must
                    // produce up to the needed byte. A forward-only source streams through any
                    // gap before `offset` on the way.
                    Location::Bisected | Location::AtIndex | Location::AfterIndex => {
                        if let Some(error) = &state.error {
                            return Err(error.clone().into());
                        }
                        match want {
                            Want::All | Want::Ahead => end,
                            Want::Some => offset + 1,
                        }
                    }
                }
            };
            self.fill_or_wait(need, seen, want == Want::Ahead)?;
        }
    }

    /// `wait_filled` for the whole range, which a windowed stream keeps whole meanwhile (or
    /// fails with [`Error::WindowFull`] if its budgets cannot).
    pub(crate) fn wait_held(&self, offset: u64, end: u64) -> io::Result<u64> {
        let _held = self
            .window
            .is_some()
            .then(|| Held::new(&self.holds, offset));
        self.wait_filled(offset, end, Want::All)
    }

    /// For a consumer that took every byte published at `pos` (see `feed.rs`): waits until more
    /// is published after generation `seen`, or the stream ends or fails, producing bytes
    /// toward `goal` as a reader would (pulling, or fetching from a range source). A windowed
    /// stream is pulled one read at a time, so the consumer's own hold never blocks its pull.
    pub(crate) fn wait_more(&self, pos: u64, goal: u64, seen: u64) -> io::Result<()> {
        let goal = goal.max(pos.saturating_add(1));
        match &self.filler {
            Filler::Ranged(ranged) => self
                .walk_ranged(ranged, pos, goal, None, Want::Some, None)
                .map(drop),
            Filler::Pull(_) if self.window.is_some() => self.fill_or_wait(pos + 1, seen, false),
            Filler::Pull(_) | Filler::Push => self.fill_or_wait(goal, seen, false),
        }
    }

    /// Makes a stream produce bytes up to `need`: becomes the writer and pulls, or, if another
    /// thread is the writer, waits for its next publish (or its release of the role) after
    /// generation `seen`. A windowed stream's writer that finds no room gives up the role and
    /// waits for a reader to move on. (Range sources are read by `walk_ranged`.) `ahead`: the
    /// read-ahead worker asks, and what it pulls counts in `Stats::read_ahead_bytes`.
    fn fill_or_wait(&self, need: u64, seen: u64, ahead: bool) -> io::Result<()> {
        let shared = self;
        let writer = match &shared.filler {
            Filler::Pull(writer) => writer,
            // A push stream's readers only wait: its `Writer` is the only producer. Unless the
            // writer waits for room that a hold of this very thread keeps, and nothing was
            // published since this thread looked (it has what there is): then neither would
            // ever move. (If something was, look again.)
            Filler::Push => {
                if let Some(held) = shared.holds.blocking_own() {
                    if shared.publish.generation() == seen {
                        return Err(Error::WindowFull { needed: need, held }.into());
                    }
                    return Ok(());
                }
                shared.publish.wait(seen);
                return Ok(());
            }
            Filler::Ranged(_) => return Ok(()),
        };
        let Some(writer) = writer.try_lock() else {
            shared.publish.wait(seen);
            return Ok(());
        };
        let from = writer.frontier();
        let mut role = Role::new(writer, &shared.publish);
        let pulled = role.pull_until(shared, need);
        if ahead {
            let pulled_bytes = role.frontier().saturating_sub(from);
            shared
                .read_ahead_bytes
                .fetch_add(pulled_bytes, Ordering::Relaxed);
        }
        // The role is released here, before any wait.
        drop(role);
        match pulled {
            Ok(()) => Ok(()),
            Err(blocked) => shared.wait_for_room(blocked, need, false),
        }
    }

    /// A writer found no room for the bytes up to `needed` (`blocked`): it waits until a hold
    /// changes, or, if a hold of the calling thread is in the way, fails with
    /// [`Error::WindowFull`] (waiting would never end). `park`: a push writer, which readers
    /// only wait for, announces that it waits (see `Holds::blocking_own`).
    pub(crate) fn wait_for_room(
        &self,
        blocked: Blocked,
        needed: u64,
        park: bool,
    ) -> io::Result<()> {
        if let Some(held) = blocked.own {
            return Err(Error::WindowFull { needed, held }.into());
        }
        self.writer_waits.fetch_add(1, Ordering::Relaxed);
        if park {
            self.holds.park(&blocked);
            self.publish.notify();
        }
        self.holds.wait(blocked.generation);
        Ok(())
    }

    /// A windowed stream's `read_at`: piece by piece, holding the position reached, so that a
    /// read larger than the budgets can keep at once still completes and the writer never
    /// drops bytes it has yet to copy.
    fn read_windowed(&self, offset: u64, end: u64, buf: &mut [u8]) -> io::Result<usize> {
        let held = Held::new(&self.holds, offset);
        let mut pos = offset;
        while pos < end {
            let at = (pos - offset) as usize;
            let n = self.read_slow(pos, end, &mut buf[at..], Want::Some)?;
            if n == 0 {
                break;
            }
            pos += n as u64;
            held.set(pos);
        }
        Ok((pos - offset) as usize)
    }

    /// A read of (or, without `buf`, a wait for) `[offset, end)` from a range source: one pass
    /// from `offset`, copying whatever is filled at the position under one lock, then fetching
    /// the next hole (or waiting for whoever fetches it). Returns the position reached: `end`
    /// clipped to the stream, or for `Want::Some` the end of the first piece.
    ///
    /// A pass, not "until everything is filled at once": segments may be evicted once passed,
    /// so budgets smaller than the range cannot starve it, and the reader that fetches a segment
    /// copies from the buffer it fetched. `ahead`: the read-ahead worker's walk for the request
    /// numbered so (see `Ahead::requests`), whose fetched segments count toward
    /// `Stats::read_ahead_hits` when read; it stops before a fetch once a newer request came.
    fn walk_ranged(
        &self,
        ranged: &Ranged,
        offset: u64,
        end: u64,
        mut buf: Option<&mut [u8]>,
        want: Want,
        ahead: Option<u64>,
    ) -> io::Result<u64> {
        let shared = self;
        let mut pos = offset;
        let shift = shared.config.shift;
        loop {
            // A persistent cache's stored copies are checked and served before any fetch.
            shared.take_stored(pos, end, max_run(shared));
            // A response that will bring `pos` (a sequential reader's, open or coming) is read
            // on up to it rather than asked for twice; only a reader's own walk does this, and
            // only where every segment in between is absent (so nothing is fetched twice).
            let lead = match ahead {
                None => ranged
                    .streams
                    .lead_in(pos, ranged.streams.lead_limit())
                    .filter(|p| p & ((1 << shift) - 1) == 0),
                Some(_) => None,
            };
            let seen = shared.publish.generation();
            let claimed = {
                let mut state = shared.state.write();
                let end = state.clip(end);
                if pos >= end {
                    return Ok(pos.max(offset).min(end.max(offset)));
                }
                if let Some(filled) = state.index.filled_end(pos) {
                    let upto = filled.min(end);
                    if let Some(buf) = buf.as_deref_mut() {
                        let dst = &mut buf[(pos - offset) as usize..(upto - offset) as usize];
                        shared.copy(&state, pos, dst)?;
                    }
                    pos = upto;
                    if pos == end || want == Want::Some {
                        return Ok(pos);
                    }
                    continue;
                }
                if let Some(request) = ahead {
                    // A newer request: this step may be for bytes its reader already passed.
                    if shared.ahead.requests() != request {
                        return Ok(pos);
                    }
                    // A reader is fetching this segment itself: read-ahead goes on past it.
                    let segment = pos >> shared.config.shift;
                    if matches!(state.index.slot(segment), Some(Slot::Fetching)) {
                        return Ok(end);
                    }
                }
                let from = lead
                    .filter(|&p| p >= state.window_start && state.index.first_taken(p, pos) == pos)
                    .unwrap_or(pos);
                claim(
                    &mut state,
                    shift,
                    (from, end),
                    ranged.max_fetches,
                    max_run(shared),
                )
            };
            match claimed {
                Claim::Fetch(segments) => {
                    let start = segments.start << shared.config.shift;
                    // The run may start past `pos` (whose segment someone else is fetching).
                    let covers_pos = start <= pos;
                    if let Some(data) =
                        fetch(shared, ranged, segments, ahead.is_some())?.filter(|_| covers_pos)
                    {
                        // Straight from the fetched buffer: evicting it cannot undo this read.
                        let have = (start + data.len() as u64).min(shared.clip(end));
                        let n = have.saturating_sub(pos) as usize;
                        // n == 0: the segment ends before `pos` (the end of the stream).
                        if let Some(buf) = buf.as_deref_mut().filter(|_| n > 0) {
                            let (from, at) = ((pos - start) as usize, (pos - offset) as usize);
                            buf[at..at + n].copy_from_slice(&data[from..from + n]);
                        }
                        pos += n as u64;
                        if n > 0 && want == Want::Some {
                            return Ok(pos);
                        }
                    }
                }
                Claim::Wait => shared.publish.wait(seen),
                Claim::Retry => {}
            }
        }
    }

    /// A range source's `fill_to_end`: one pass over the stream, fetching each hole, until the
    /// end is known and passed. One pass, not "until everything is filled": under a disk
    /// budget smaller than the stream, early segments are evicted while later ones arrive.
    fn fetch_all(&self) -> io::Result<u64> {
        self.wait_filled(0, u64::MAX, Want::All)
    }

    #[cold]
    pub(crate) fn request_ahead(&self, range: Range<u64>) {
        // Nothing to fetch ahead of a push stream's readers: its writer decides.
        if let Filler::Push = self.filler {
            return;
        }
        if let Some(range) = self.clamp_ahead(range) {
            self.ahead
                .request(&self.me, range, Shared::fill_ahead_step, self.workers());
        }
    }

    /// `range` cut to what the budgets can keep besides the segments a reader is in and is
    /// leaving: the segment that holds its start and `kept - 3` more, where `kept` is how many
    /// segments the memory and disk budgets hold together. `None` if that leaves nothing
    /// (budgets of two segments or less). Reading further ahead would evict what was fetched
    /// before the reader got there, and fetch it again.
    fn clamp_ahead(&self, range: Range<u64>) -> Option<Range<u64>> {
        let cfg = &self.config;
        let size = cfg.segment_size as u64;
        let kept = (cfg.memory_budget as u64 / size).saturating_add(cfg.disk_budget / size);
        let ahead = kept.checked_sub(3)?;
        let first = range.start >> cfg.shift;
        let limit = first.saturating_add(ahead + 1).saturating_mul(size);
        let end = range.end.min(limit);
        (range.start < end).then_some(range.start..end)
    }

    /// The worker's step: fill `range` up to the end of the segment holding its start; returns
    /// where the step ended (errors are left for readers to meet).
    pub(crate) fn fill_ahead_step(&self, range: Range<u64>, request: u64) -> io::Result<u64> {
        let shared = self;
        let size = shared.config.segment_size as u64;
        let segment_end = (range.start >> shared.config.shift)
            .saturating_add(1)
            .saturating_mul(size);
        let end = range.end.min(segment_end);
        match &shared.filler {
            Filler::Ranged(ranged) => {
                self.walk_ranged(ranged, range.start, end, None, Want::Ahead, Some(request))
            }
            Filler::Pull(_) => self.wait_filled(range.start, end, Want::Ahead),
            Filler::Push => Ok(end),
        }
    }

    /// Pulls the rest of the stream (a range source: fetches every hole once); its length.
    pub(crate) fn fill_to_end(&self) -> io::Result<u64> {
        if let Filler::Ranged(_) = self.filler {
            return self.fetch_all();
        }
        loop {
            let seen = self.publish.generation();
            {
                let state = self.state.read();
                if let Some(error) = &state.error {
                    return Err(error.clone().into());
                }
                if state.complete {
                    return Ok(state.len.unwrap_or(0));
                }
            }
            self.fill_or_wait(u64::MAX, seen, false)?;
        }
    }
}
