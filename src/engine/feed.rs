//! The feed: how a fan-out consumer cuts the stream into chunks ([`Cut`]s, which the fan-out
//! layer hands over as `Chunk`s), and the bin their buffers are recycled in.
//!
//! Engine code shared by every kind of consumer: a consumer thread polls its feed and waits
//! for more bytes ([`Shared::wait_more`]); an inline consumer's feed is polled by the producer
//! after each publish. A poll takes, under one read lock, every published byte of the chunk
//! under way into the chunk's buffer (or, for a whole chunk inside one full RAM segment, a
//! shared slice of it), so the bytes may go from the buffer as soon as the poll returns: the
//! consumer's hold moves with what it took, and a chunk larger than the budgets or the window
//! still completes.

use std::io;
use std::time::Instant;

use bytes::Bytes;

use crate::engine::holds::HoldId;
use crate::engine::shared::{Filler, Shared, State};
use crate::sync::Arc;
use crate::sync::Mutex;

/// A chunk cut by a feed, for the fan-out layer to hand over as a `Chunk`.
pub(crate) struct Cut {
    pub(crate) bytes: CutBytes,
    /// The stream offset of its first byte.
    pub(crate) offset: u64,
    /// When its first byte arrived.
    pub(crate) received_at: Instant,
    /// It ends the stream.
    pub(crate) last: bool,
}

/// A cut's bytes.
pub(crate) enum CutBytes {
    /// A slice of a full RAM segment.
    Shared(Bytes),
    /// Assembled in a buffer that goes back to the bin when the chunk is done with.
    Owned(Vec<u8>, Arc<Bin>),
}

/// A consumer's spare chunk buffers.
pub(crate) struct Bin {
    spare: Mutex<Vec<Vec<u8>>>,
    /// How many buffers to keep (the chunks a consumer may have in flight, plus one).
    keep: usize,
}

impl Bin {
    pub(crate) fn new(keep: usize) -> Self {
        Bin {
            spare: Mutex::new(Vec::new()),
            keep,
        }
    }

    /// An empty buffer, with room kept from an earlier chunk if there is one.
    pub(crate) fn take(&self) -> Vec<u8> {
        self.spare.lock().pop().unwrap_or_default()
    }

    /// Takes a buffer back (emptied), unless enough are kept already.
    pub(crate) fn give(&self, mut vec: Vec<u8>) {
        if vec.capacity() == 0 {
            return;
        }
        vec.clear();
        let mut spare = self.spare.lock();
        if spare.len() < self.keep {
            spare.push(vec);
        }
    }
}

/// What a poll found.
pub(crate) enum Polled {
    /// A chunk is complete.
    Chunk(Cut),
    /// Every published byte is taken: wait for more.
    More,
    /// The stream failed before the chunk under way was complete.
    Failed(io::Error),
    /// The last chunk went out already.
    Done,
}

/// One consumer's position and the chunk it is assembling.
///
/// Invariants: `start <= pos`; the bytes `[start, pos)` are in `whole` or `buf`; the bytes
/// before `start` were delivered or counted in `skipped`.
pub(crate) struct Feed {
    chunk_size: u64,
    clip: bool,
    /// The stream records where writes end (a forward-only stream; a range source does not).
    marked: bool,
    start: u64,
    pos: u64,
    /// The chunk, when it is a slice of one RAM segment.
    whole: Option<Bytes>,
    buf: Vec<u8>,
    received: Option<Instant>,
    bin: Arc<Bin>,
    /// The consumer's pinned hold (see `holds.rs`), and where it is; `None` if it holds nothing.
    hold: Option<HoldId>,
    held_at: u64,
    /// Hold from `released` (the first chunk not yet delivered), not from `pos`.
    keep: bool,
    released: u64,
    done: bool,
    closed: bool,
    pub(crate) chunks: u64,
    pub(crate) bytes: u64,
    pub(crate) skipped: u64,
}

impl Feed {
    /// A consumer starting at the window start (0 for a stream without a window), holding its
    /// position there if `pin` and the stream has a window. The bytes before the start count as
    /// skipped. `keep`: chunk buffers to recycle.
    pub(crate) fn start(
        shared: &Shared,
        chunk_size: u64,
        clip: bool,
        pin: bool,
        keep: usize,
    ) -> Self {
        let (start, hold) = {
            // Under the tiers lock, so no slide of the window passes the new hold (see
            // `Appender::slide_window`).
            let _tiers = shared.tiers.lock();
            let start = shared.state.read().window_start;
            let pin = pin && shared.window.is_some();
            (start, pin.then(|| shared.holds.add_pinned(start)))
        };
        shared.taps.count(true);
        Feed {
            chunk_size,
            clip,
            marked: !matches!(shared.filler, Filler::Ranged(_)),
            start,
            pos: start,
            whole: None,
            buf: Vec::new(),
            received: None,
            bin: Arc::new(Bin::new(keep)),
            hold,
            held_at: start,
            keep: false,
            released: start,
            done: false,
            closed: false,
            chunks: 0,
            bytes: 0,
            skipped: start,
        }
    }

    /// `true`: the hold stays at the first chunk not yet [released](Feed::release) (a sink's
    /// consumer releases a chunk once its sink took it).
    pub(crate) fn keep_until_released(&mut self, keep: bool) {
        self.keep = keep;
    }

    /// Every chunk cut so far was delivered: the hold may move on.
    pub(crate) fn release(&mut self, shared: &Shared) {
        self.released = self.start;
        self.move_hold(shared);
    }

    /// The consumer's hold, if it has one (for its `Consumer` to release when dropped).
    pub(crate) fn hold(&self) -> Option<HoldId> {
        self.hold
    }

    /// The next byte to take.
    pub(crate) fn position(&self) -> u64 {
        self.pos
    }

    /// Where the chunk under way ends at the least.
    pub(crate) fn least_end(&self) -> u64 {
        self.start.saturating_add(self.chunk_size)
    }

    /// Takes what is published of the chunk under way; returns the chunk once it is complete.
    pub(crate) fn poll(&mut self, shared: &Shared) -> Polled {
        if self.done {
            return Polled::Done;
        }
        let polled = {
            let state = shared.state.read();
            if self.pos < state.window_start {
                // A consumer that does not hold the window fell behind it: it resumes at the
                // window start, and the chunk it had begun is skipped.
                self.skip(state.window_start);
            }
            self.take(shared, &state)
        };
        self.move_hold(shared);
        polled
    }

    fn take(&mut self, shared: &Shared, state: &State) -> Polled {
        let goal = self.goal(state);
        let filled = state.index.filled_end(self.pos).unwrap_or(self.pos);
        let to = goal.map_or(filled, |goal| goal.min(filled)).max(self.pos);
        if to > self.pos {
            if self.pos == self.start {
                self.received = state.marks.arrival(self.start);
            }
            if let Err(error) = self.copy(shared, state, to, goal == Some(to)) {
                return Polled::Failed(error);
            }
        }
        if goal == Some(self.pos) {
            let last = state.len.is_some_and(|len| len <= self.pos);
            return Polled::Chunk(self.cut(last, state));
        }
        match &state.error {
            // Every published byte is taken and no more will come.
            Some(error) => Polled::Failed(error.clone().into()),
            None => Polled::More,
        }
    }

    /// Where the chunk under way ends, if that is known yet: `chunk_size` bytes on, or with
    /// `clip(false)` the end of the first write that reaches that far; at the latest the end of
    /// the stream.
    fn goal(&self, state: &State) -> Option<u64> {
        let least = self.least_end();
        let end = if self.clip || !self.marked {
            Some(least)
        } else {
            state.marks.end_at_least(least)
        };
        match state.len {
            Some(len) => Some(end.map_or(len, |end| end.min(len)).max(self.start)),
            None => end,
        }
    }

    /// Takes the filled bytes `[pos, to)`; `whole`: they complete the chunk.
    fn copy(&mut self, shared: &Shared, state: &State, to: u64, whole: bool) -> io::Result<()> {
        if whole && self.pos == self.start {
            if let Some(bytes) = state.index.shared_bytes(self.pos..to) {
                self.whole = Some(bytes);
                self.pos = to;
                return Ok(());
            }
        }
        if self.buf.capacity() == 0 {
            self.buf = self.bin.take();
        }
        let n = usize::try_from(to - self.pos).map_err(|_| io::ErrorKind::OutOfMemory)?;
        let old = self.buf.len();
        self.buf
            .try_reserve(n)
            .map_err(|_| io::ErrorKind::OutOfMemory)?;
        self.buf.resize(old + n, 0);
        shared.copy(state, self.pos, &mut self.buf[old..])?;
        self.pos = to;
        Ok(())
    }

    /// The chunk `[start, pos)`, complete.
    fn cut(&mut self, last: bool, state: &State) -> Cut {
        let received = self
            .received
            .take()
            .or_else(|| state.marks.arrival(self.start))
            .unwrap_or_else(Instant::now);
        let bytes = match self.whole.take() {
            Some(bytes) => CutBytes::Shared(bytes),
            None => CutBytes::Owned(std::mem::take(&mut self.buf), self.bin.clone()),
        };
        let cut = Cut {
            bytes,
            offset: self.start,
            received_at: received,
            last,
        };
        self.chunks += 1;
        self.bytes += self.pos - self.start;
        self.done = last;
        self.start = self.pos;
        cut
    }

    /// Skips to `to` (at or past `pos`): the chunk under way and the bytes up to `to` count as
    /// skipped.
    fn skip(&mut self, to: u64) {
        let to = to.max(self.pos);
        self.skipped += to - self.start;
        self.whole = None;
        self.buf.clear();
        self.received = None;
        self.start = to;
        self.pos = to;
        self.released = to;
    }

    /// A pause (`sampler`): the hold lets the writer go on meanwhile.
    pub(crate) fn pause(&mut self, shared: &Shared) {
        if let Some(id) = self.hold {
            self.held_at = u64::MAX;
            shared.holds.set(id, u64::MAX);
        }
    }

    /// The end of a pause: skips to the live edge (the end of the published bytes) and holds
    /// there again.
    pub(crate) fn resume(&mut self, shared: &Shared) {
        let _tiers = shared.tiers.lock();
        let edge = {
            let state = shared.state.read();
            let from = self.pos.max(state.window_start);
            state.index.filled_end(from).unwrap_or(from)
        };
        self.skip(edge);
        self.move_hold(shared);
    }

    /// Lets go of the hold (an inline consumer once it caught up: the producer feeds it before
    /// it moves on).
    pub(crate) fn unpin(&mut self, shared: &Shared) {
        if let Some(id) = self.hold.take() {
            shared.holds.remove(id);
        }
    }

    fn move_hold(&mut self, shared: &Shared) {
        let at = if self.keep { self.released } else { self.pos };
        if let Some(id) = self.hold.filter(|_| self.held_at != at) {
            self.held_at = at;
            shared.holds.set(id, at);
        }
    }

    /// The consumer ended: its hold and its registration go. Idempotent.
    pub(crate) fn close(&mut self, shared: &Shared) {
        if !std::mem::replace(&mut self.closed, true) {
            self.unpin(shared);
            shared.taps.count(false);
        }
    }
}
