//! The open responses of a range source (see `RangeSource::open_at`): which one a fetch reads,
//! how large a new request should be, and which are kept between fetches.
//!
//! A fetch of the run starting at `at` asks [`Streams::take`]. It gets:
//! - a stream left idle exactly at `at` by an earlier fetch (the same response goes on serving a
//!   sequential reader: no new request);
//! - or, if a fetch in progress is reading a stream whose run ends at `at` (or one is being
//!   opened there ahead of need), it waits for that stream to come back and takes it;
//! - or a [`Ticket`] to open a new one, sized by the pattern: a request that starts where a
//!   recent one ended continues a sequential read and is twice as large (up to `max_request`,
//!   or open-ended); any other is the run alone (a scattered read fetches what it needs).
//!
//! Once a chain of requests has been sequential twice, taking one also books its successor (a
//! request starting where it ends) if fewer than `in_flight` streams are open: the caller opens
//! it in the background, so the round trip of the next request is paid while this one is read.
//!
//! A fetch gives its stream back where it stopped ([`Streams::give_back`]) unless it ended, failed
//! or ran into filled bytes; idle streams are dropped after [`IDLE`], when the pool is closed (the
//! buffer is dropped), when a fetch finds the bytes at their position filled already, or when
//! more than `in_flight` are idle (the least recently returned first).
//!
//! Data only, generic over the stream type: no I/O happens under the pool's lock (opening and
//! dropping a response are the caller's, outside it), and the hand-off is modelled under loom.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::sync::{Condvar, Mutex};

/// How long a stream may stay idle before it is dropped (its connection closed).
pub(crate) const IDLE: Duration = Duration::from_secs(10);

/// How many recent requests are remembered to recognise a sequential one: a few readers reading
/// sequentially at once each keep their chain.
const RECENT: usize = 8;

/// Request sizes and how many responses may be open.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// The largest request; `u64::MAX`: a sequential chain's requests become open-ended.
    pub(crate) max_request: u64,
    /// The most streams open at once (read, idle or being opened) before successors are booked.
    pub(crate) in_flight: usize,
    /// Request sizes are whole segments.
    pub(crate) segment_size: u64,
}

/// An open stream and where it is: it gives the bytes `[pos, end)` (`end` is `u64::MAX` for an
/// open-ended response).
pub(crate) struct Open<R> {
    pub(crate) reader: R,
    pub(crate) pos: u64,
    pub(crate) end: u64,
    /// The request it came from, for the next request's size.
    size: u64,
    seq: u32,
    /// Its entry among the busy ones while a fetch holds it.
    id: u64,
}

/// The right to open a stream at `at` of `len` bytes (`None`: to the end).
#[derive(Debug)]
pub(crate) struct Ticket {
    pub(crate) at: u64,
    pub(crate) len: Option<u64>,
    size: u64,
    seq: u32,
    id: u64,
}

impl<R> Open<R> {
    /// Its entry among the busy streams, for [`Streams::forget`].
    pub(crate) fn id(&self) -> u64 {
        self.id
    }
}

impl Ticket {
    /// Its entry among the busy streams, for [`Streams::forget`].
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// The stream this ticket opened.
    pub(crate) fn opened<R>(self, reader: R) -> Open<R> {
        Open {
            reader,
            pos: self.at,
            end: self.len.map_or(u64::MAX, |len| self.at.saturating_add(len)),
            size: self.size,
            seq: self.seq,
            id: self.id,
        }
    }
}

/// What [`Streams::take`] gives.
pub(crate) enum Take<R> {
    /// A stream at the position asked for.
    Stream(Open<R>),
    /// None there: open one.
    Open(Ticket),
}

struct Idle<R> {
    open: Open<R>,
    since: Instant,
}

/// A stream a fetch holds, or one being opened ahead: where the fetch's run ends (where it will
/// be given back), and where the stream ends.
struct Busy {
    id: u64,
    /// Where its request (or the fetch's run with it) starts.
    start: u64,
    run_end: u64,
    end: u64,
    /// Sequential steps of its chain.
    seq: u32,
}

struct Pool<R> {
    idle: Vec<Idle<R>>,
    busy: Vec<Busy>,
    /// Where recent requests end, their size and how many sequential steps led to them.
    recent: VecDeque<(u64, u64, u32)>,
    next_id: u64,
    /// Where fetches wait for a busy stream to come back.
    waiting: Vec<u64>,
    closed: bool,
    /// A thread is dropping the idle streams that time out (see `reap`).
    reaper: bool,
}

/// The streams of one range source. See the module docs.
pub(crate) struct Streams<R> {
    pool: Mutex<Pool<R>>,
    /// Notified when a busy stream comes back or is dropped.
    returned: Condvar,
    /// Wakes the reaper when the pool closes.
    closing: Condvar,
    /// The reaper thread last started, joined when the pool closes.
    #[cfg(not(loom))]
    reaper: Mutex<Option<std::thread::JoinHandle<()>>>,
    limits: Limits,
    /// How fast one response brings its bytes, in bytes per second (a moving average of the
    /// fetches' reads; 0 until one is measured).
    rate: std::sync::atomic::AtomicU64,
}

/// How long a reader may read on through an open response to reach its bytes (see
/// [`Streams::lead_in`]): about what a new request's round trip would cost it.
const LEAD_TIME: Duration = Duration::from_millis(100);

impl<R> Streams<R> {
    pub(crate) fn new(limits: Limits) -> Self {
        Streams {
            pool: Mutex::new(Pool {
                idle: Vec::new(),
                busy: Vec::new(),
                recent: VecDeque::new(),
                next_id: 0,
                waiting: Vec::new(),
                closed: false,
                reaper: false,
            }),
            returned: Condvar::new(),
            closing: Condvar::new(),
            #[cfg(not(loom))]
            reaper: Mutex::new(None),
            limits,
            rate: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// A fetch read `bytes` from a response in `elapsed`: the rate's moving average.
    pub(crate) fn note_rate(&self, bytes: u64, elapsed: Duration) {
        use std::sync::atomic::Ordering::Relaxed;
        if bytes < self.limits.segment_size || elapsed.is_zero() {
            return;
        }
        let sample = (bytes as f64 / elapsed.as_secs_f64()).min(u64::MAX as f64 / 4.0) as u64;
        let old = self.rate.load(Relaxed);
        let new = if old == 0 {
            sample
        } else {
            (old / 4) * 3 + sample / 4
        };
        self.rate.store(new, Relaxed);
    }

    /// How far before a reader's position an open response may be for the reader to read on
    /// through it: what one response brings in [`LEAD_TIME`], at most one request.
    pub(crate) fn lead_limit(&self) -> u64 {
        let rate = self.rate.load(std::sync::atomic::Ordering::Relaxed);
        let reach = (rate as f64 * LEAD_TIME.as_secs_f64()) as u64;
        reach.min(self.limits.max_request)
    }

    /// A stream for the run `[at, at + run)`: one at `at`, waited for if a busy one is coming
    /// there, else a ticket to open one. `stale(pos)` says whether the bytes at an idle stream's
    /// position are filled already (such a stream can serve nobody: it is dropped). Also returns
    /// the streams dropped meanwhile (to be dropped by the caller, outside the lock) and, for a
    /// sequential chain with room in flight, a ticket for its successor.
    #[cfg(test)]
    pub(crate) fn take(
        &self,
        at: u64,
        run: u64,
        now: Instant,
        stale: impl Fn(u64) -> bool,
    ) -> (Take<R>, Vec<R>, Option<Ticket>) {
        self.take_within(at, run, now, stale, |_, to| to)
    }

    /// [`take`](Streams::take), where `free(from, to)` says where the first byte of
    /// `[from, to)` that is filled or being fetched already lies (`to` if none): a new request
    /// (or a successor) ends there, so that no response brings bytes the buffer has, or will
    /// have from another request (a far reader's, say).
    pub(crate) fn take_within(
        &self,
        at: u64,
        run: u64,
        now: Instant,
        stale: impl Fn(u64) -> bool,
        free: impl Fn(u64, u64) -> u64,
    ) -> (Take<R>, Vec<R>, Option<Ticket>) {
        let mut dropped = Vec::new();
        let mut pool = self.pool.lock();
        loop {
            pool.sweep(now, &stale, &mut dropped);
            if let Some(i) = pool.idle.iter().position(|s| s.open.pos == at) {
                let mut open = pool.idle.swap_remove(i).open;
                open.id = pool.book(at, at.saturating_add(run), open.end, open.seq);
                let ahead = self.successor(&mut pool, open.end, open.size, open.seq, &free);
                return (Take::Stream(open), dropped, ahead);
            }
            let coming = pool.busy.iter().any(|b| b.run_end == at && b.end > at);
            if coming && !pool.closed {
                pool.waiting.push(at);
                self.returned.wait(&mut pool);
                if let Some(i) = pool.waiting.iter().position(|&w| w == at) {
                    pool.waiting.swap_remove(i);
                }
                continue;
            }
            let ticket = self.ticket(&mut pool, at, run, &free);
            let end = ticket.len.map_or(u64::MAX, |len| at.saturating_add(len));
            let ahead = self.successor(&mut pool, end, ticket.size, ticket.seq, &free);
            return (Take::Open(ticket), dropped, ahead);
        }
    }

    /// A new request at `at` for a run of `run` bytes, booked as busy.
    fn ticket(
        &self,
        pool: &mut Pool<R>,
        at: u64,
        run: u64,
        free: &impl Fn(u64, u64) -> u64,
    ) -> Ticket {
        let seg = self.limits.segment_size.max(1);
        let previous = pool.recent.iter().find(|(end, _, _)| *end == at).copied();
        let (size, seq) = match previous {
            Some((_, size, seq)) => (
                size.saturating_mul(2).min(self.limits.max_request).max(run),
                seq.saturating_add(1),
            ),
            None => (run, 0),
        };
        let size = size.div_ceil(seg).saturating_mul(seg).max(seg);
        let bounded = seq == 0 || self.limits.max_request != u64::MAX;
        // Past the run, only as far as nothing is there or on its way.
        let size = if bounded && size > run {
            let reach = free(at.saturating_add(run), at.saturating_add(size));
            let size = reach.saturating_sub(at).max(run);
            size.div_ceil(seg).saturating_mul(seg).max(seg)
        } else {
            size
        };
        let len = bounded.then_some(size);
        let end = len.map_or(u64::MAX, |len| at.saturating_add(len));
        let id = pool.book(at, at.saturating_add(run).min(end), end, seq);
        pool.remember(end, size, seq);
        Ticket {
            at,
            len,
            size,
            seq,
            id,
        }
    }

    /// The successor of a sequential chain's request ending at `end`: booked if the chain is
    /// sequential twice over, nothing is open or coming there, and fewer than `in_flight`
    /// streams are open.
    fn successor(
        &self,
        pool: &mut Pool<R>,
        end: u64,
        size: u64,
        seq: u32,
        free: &impl Fn(u64, u64) -> u64,
    ) -> Option<Ticket> {
        let open = pool.idle.len() + pool.busy.len();
        if seq < 2 || end == u64::MAX || pool.closed || open >= self.limits.in_flight {
            return None;
        }
        // None where a response open or coming will bring the byte at `end` already: a fetch
        // that opened its own request there before the chain came to it (its run ends past
        // `end`) once got a successor at its own start, and the bytes came twice.
        let there = pool
            .idle
            .iter()
            .any(|s| s.open.pos <= end && end < s.open.end)
            || pool.busy.iter().any(|b| b.start <= end && end < b.end);
        if there {
            return None;
        }
        // Booked as a busy stream that will be given back at `end`, so a fetch there waits for
        // it instead of opening another; not where the bytes are there or coming already.
        self.ticket_after(pool, end, size, seq, free)
    }

    fn ticket_after(
        &self,
        pool: &mut Pool<R>,
        at: u64,
        size: u64,
        seq: u32,
        free: &impl Fn(u64, u64) -> u64,
    ) -> Option<Ticket> {
        let size = size.saturating_mul(2).min(self.limits.max_request);
        let seg = self.limits.segment_size.max(1);
        let size = size.div_ceil(seg).saturating_mul(seg).max(seg);
        let bounded = self.limits.max_request != u64::MAX;
        let size = if bounded {
            let reach = free(at, at.saturating_add(size));
            // Whole segments only; none free at `at`: no successor.
            let size = reach.saturating_sub(at) / seg * seg;
            if size == 0 {
                return None;
            }
            size
        } else {
            size
        };
        let len = bounded.then_some(size);
        let end = len.map_or(u64::MAX, |len| at.saturating_add(len));
        let id = pool.book(at, at, end, seq + 1);
        pool.remember(end, size, seq + 1);
        Some(Ticket {
            at,
            len,
            size,
            seq: seq + 1,
            id,
        })
    }

    /// A fetch is done with `open`, which is at `open.pos` now: kept for the next fetch there
    /// unless it is used up or the pool is closed (then it comes back to be dropped). At most
    /// `in_flight` streams stay idle: past that the one idle longest comes back instead (one
    /// nobody waits for, if there is one), so readers that each read on a little and stop do
    /// not each keep a connection open. `true` in the second place: no thread drops idle
    /// streams that time out, and the caller must start one (see [`reap`](Streams::reap)).
    pub(crate) fn give_back(&self, open: Open<R>, now: Instant) -> (Option<R>, bool) {
        let mut pool = self.pool.lock();
        pool.unbook(open.id);
        self.returned.notify_all();
        if pool.closed || open.pos >= open.end {
            return (Some(open.reader), false);
        }
        let mut evicted = None;
        if pool.idle.len() >= self.limits.in_flight.max(1) {
            // The least useful stream goes, which may be `open` itself: one nobody waits for
            // before one somebody does, then the one with the fewest bytes left to give (the
            // herd once saw the last segments of far readers' responses push out a chain's
            // successor, which was then requested again), then the oldest.
            let waiting = &pool.waiting;
            let rank =
                |s: &Open<R>, since: Instant| (waiting.contains(&s.pos), s.end - s.pos, since);
            let worst = pool
                .idle
                .iter()
                .enumerate()
                .map(|(i, s)| (rank(&s.open, s.since), i))
                .min();
            match worst {
                Some((worst, i)) if worst <= rank(&open, now) => {
                    evicted = Some(pool.idle.swap_remove(i).open.reader);
                }
                _ => return (Some(open.reader), false),
            }
        }
        pool.idle.push(Idle { open, since: now });
        let start_reaper = !pool.reaper;
        pool.reaper = true;
        (evicted, start_reaper)
    }

    /// A stream booked by `take` (or a ticket) will not come back: it failed, ended or was not
    /// opened.
    pub(crate) fn forget(&self, id: u64) {
        self.pool.lock().unbook(id);
        self.returned.notify_all();
    }

    /// How far the responses open or coming at `at` reach, one after the other (bounded
    /// responses only): where a reader that went on from `at` would stop finding bytes already
    /// on their way. `at` itself if none is there.
    pub(crate) fn reach(&self, mut at: u64) -> u64 {
        let pool = self.pool.lock();
        for _ in 0..=pool.idle.len() + pool.busy.len() {
            let next = pool
                .idle
                .iter()
                .find(|i| i.open.pos == at)
                .map(|i| i.open.end)
                .or_else(|| pool.busy.iter().find(|b| b.run_end == at).map(|b| b.end));
            match next {
                Some(end) if end != u64::MAX && end > at => at = end,
                _ => break,
            }
        }
        at
    }

    /// Where a sequential reader's response, already open (or coming), will bring the byte at
    /// `pos`: the position `p` of the nearest stream of a chain sequential twice over, idle at
    /// `p` or to be given back there, whose bytes run past `pos`, with `p < pos` no more than
    /// `limit` bytes before it. A reader that needs `pos` may read on from `p` (publishing what
    /// is in between, which the sequential reader will want) instead of asking for `pos` with
    /// a request of its own, which that response would then bring a second time. Responses of
    /// scattered reads are not read through: nobody may want the bytes in between.
    pub(crate) fn lead_in(&self, pos: u64, limit: u64) -> Option<u64> {
        let pool = self.pool.lock();
        let idle = pool
            .idle
            .iter()
            .map(|s| (s.open.pos, s.open.end, s.open.seq));
        let busy = pool.busy.iter().map(|b| (b.run_end, b.end, b.seq));
        idle.chain(busy)
            .filter(|&(p, end, seq)| seq >= 2 && p < pos && pos < end && pos - p <= limit)
            .map(|(p, _, _)| p)
            .max()
    }

    /// Whether a fetch waits for a stream to come back at `pos`.
    pub(crate) fn waited_at(&self, pos: u64) -> bool {
        self.pool.lock().waiting.contains(&pos)
    }

    /// The reaper's round: takes out the streams idle for [`IDLE`] (for the caller to drop);
    /// `false` in the second place once no stream is idle or the pool is closed, and then the
    /// reaper must end (the next stream given back starts another).
    pub(crate) fn reap(&self, now: Instant) -> (Vec<R>, bool) {
        let mut dropped = Vec::new();
        let mut pool = self.pool.lock();
        pool.sweep(now, &|_| false, &mut dropped);
        let left = !pool.idle.is_empty() && !pool.closed;
        pool.reaper = left;
        (dropped, left)
    }

    /// Starts the reaper thread (see [`run_reaper`](Streams::run_reaper)) when
    /// [`give_back`](Streams::give_back) asks for one.
    #[cfg(not(loom))]
    pub(crate) fn start_reaper(self: &std::sync::Arc<Self>)
    where
        R: Send + 'static,
    {
        let streams = self.clone();
        let started = std::thread::Builder::new()
            .name("sparsebuf-reaper".into())
            .spawn(move || streams.run_reaper());
        match started {
            Ok(handle) => {
                let previous = self.reaper.lock().replace(handle);
                // A previous reaper ended before this one was asked for.
                if let Some(previous) = previous {
                    let _ = previous.join();
                }
            }
            // No reaper: idle streams are dropped by the next fetch that looks, or with the
            // pool.
            Err(_) => self.pool.lock().reaper = false,
        }
    }

    /// The reaper thread's life: every quarter of [`IDLE`], drops the streams idle for that
    /// long, until none is idle or the pool closes (which wakes it at once, so a dropped
    /// buffer leaves no thread behind).
    #[cfg(not(loom))]
    fn run_reaper(&self) {
        loop {
            {
                let mut pool = self.pool.lock();
                if !pool.closed {
                    self.closing.wait_for(&mut pool, IDLE / 4);
                }
            }
            let (dropped, left) = self.reap(Instant::now());
            drop(dropped);
            if !left {
                return;
            }
        }
    }

    /// The buffer is gone: every idle stream is given to the caller to drop, later ones are
    /// dropped when they come back, waiters stop waiting, and the reaper ends (joined here,
    /// unless this is its own thread).
    pub(crate) fn close(&self) -> Vec<R> {
        let idle = {
            let mut pool = self.pool.lock();
            pool.closed = true;
            self.returned.notify_all();
            self.closing.notify_all();
            pool.idle.drain(..).map(|s| s.open.reader).collect()
        };
        #[cfg(not(loom))]
        if let Some(reaper) = self.reaper.lock().take() {
            if reaper.thread().id() != std::thread::current().id() {
                let _ = reaper.join();
            }
        }
        idle
    }

    /// How many streams are open: idle, read by a fetch, or being opened.
    #[cfg(test)]
    pub(crate) fn open_count(&self) -> usize {
        let pool = self.pool.lock();
        pool.idle.len() + pool.busy.len()
    }
}

impl<R> Pool<R> {
    fn book(&mut self, start: u64, run_end: u64, end: u64, seq: u32) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.busy.push(Busy {
            id,
            start,
            run_end,
            end,
            seq,
        });
        id
    }

    fn unbook(&mut self, id: u64) {
        self.busy.retain(|b| b.id != id);
    }

    fn remember(&mut self, end: u64, size: u64, seq: u32) {
        if end == u64::MAX {
            return;
        }
        if self.recent.len() == RECENT {
            self.recent.pop_front();
        }
        self.recent.push_back((end, size, seq));
    }

    /// Moves the idle streams that timed out or whose position is filled into `dropped`.
    fn sweep(&mut self, now: Instant, stale: &impl Fn(u64) -> bool, dropped: &mut Vec<R>) {
        let mut i = 0;
        while i < self.idle.len() {
            let idle = &self.idle[i];
            let old = now.saturating_duration_since(idle.since) >= IDLE;
            if old || stale(idle.open.pos) {
                dropped.push(self.idle.swap_remove(i).open.reader);
            } else {
                i += 1;
            }
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    const SEG: u64 = 64 * 1024;
    const MIB: u64 = 1 << 20;

    fn streams(in_flight: usize) -> Streams<&'static str> {
        Streams::new(Limits {
            max_request: 16 * MIB,
            in_flight,
            segment_size: SEG,
        })
    }

    fn open(s: &Streams<&'static str>, at: u64, run: u64) -> (Open<&'static str>, Option<Ticket>) {
        let now = Instant::now();
        match s.take(at, run, now, |_| false) {
            (Take::Open(t), _, ahead) => (t.opened("response"), ahead),
            (Take::Stream(_), _, _) => panic!("expected a ticket at {at}"),
        }
    }

    #[test]
    fn a_scattered_request_is_its_run_and_a_sequential_one_doubles() {
        let s = streams(1);
        let (first, _) = open(&s, 0, SEG);
        assert_eq!((first.pos, first.end), (0, SEG));
        // Used up where it ends: the next request starts there, twice as large.
        let mut first = first;
        first.pos = SEG;
        assert!(s.give_back(first, Instant::now()).0.is_some());
        let (second, _) = open(&s, SEG, SEG);
        assert_eq!(second.end - second.pos, 2 * SEG);
        s.forget(second.id());
        let (third, _) = open(&s, 3 * SEG, SEG);
        assert_eq!(third.end - third.pos, 4 * SEG);
        s.forget(third.id());
        // Elsewhere: the run alone.
        let (far, _) = open(&s, 100 * SEG, 2 * SEG);
        assert_eq!(far.end - far.pos, 2 * SEG);
    }

    #[test]
    fn sizes_stop_at_max_request_or_become_open_ended() {
        let s = streams(1);
        let mut at = 0;
        let mut sizes = Vec::new();
        for _ in 0..12 {
            let (o, _) = open(&s, at, SEG);
            sizes.push(o.end - o.pos);
            at = o.end;
            s.forget(o.id());
        }
        assert_eq!(sizes[..3], [SEG, 2 * SEG, 4 * SEG]);
        assert_eq!(*sizes.last().unwrap(), 16 * MIB);
        let open_ended = Streams::<()>::new(Limits {
            max_request: u64::MAX,
            in_flight: 1,
            segment_size: SEG,
        });
        match open_ended.take(0, SEG, Instant::now(), |_| false).0 {
            Take::Open(t) => {
                assert_eq!(t.len, Some(SEG));
                let o = t.opened(());
                assert_eq!(o.end, SEG);
                open_ended.forget(o.id());
            }
            Take::Stream(_) => panic!(),
        }
        match open_ended.take(SEG, SEG, Instant::now(), |_| false).0 {
            Take::Open(t) => assert_eq!(t.len, None),
            Take::Stream(_) => panic!(),
        }
    }

    #[test]
    fn requests_and_successors_stop_where_bytes_are_taken() {
        let s = streams(4);
        // Bytes from 10 segments on are filled or being fetched (a far reader's).
        let filled_from = 10 * SEG;
        let free = |from: u64, to: u64| {
            if to > filled_from {
                filled_from.max(from)
            } else {
                to
            }
        };
        let mut at = 0;
        let mut ends = Vec::new();
        let mut successors = Vec::new();
        for _ in 0..4 {
            let (got, _, ahead) = s.take_within(at, SEG, Instant::now(), |_| false, free);
            let Take::Open(t) = got else { panic!() };
            let o = t.opened("r");
            ends.push(o.end);
            successors.push(ahead.map(|t| (t.at, t.len)));
            at = o.end;
            s.forget(o.id());
            if let Some(Some((a, len))) = successors.last() {
                at = a + len.unwrap();
            }
            if at >= filled_from {
                break;
            }
        }
        // Doubling (1, 2, 4 segments), then the successor of the 4-segment request stops at
        // the taken bytes: no response brings a byte past 10 segments.
        assert!(ends.iter().all(|&e| e <= filled_from), "{ends:?}");
        let reaches: Vec<u64> = successors
            .iter()
            .flatten()
            .map(|(a, l)| a + l.unwrap())
            .collect();
        assert!(reaches.iter().all(|&e| e <= filled_from), "{reaches:?}");
        assert_eq!(at, filled_from, "{ends:?} {successors:?}");
        // Nothing free where a successor would start: none is booked.
        let s = streams(4);
        let none_free = |from: u64, _: u64| from;
        let mut at = 0;
        for _ in 0..3 {
            let (got, _, ahead) = s.take_within(at, SEG, Instant::now(), |_| false, none_free);
            assert!(ahead.is_none());
            let Take::Open(t) = got else { panic!() };
            assert_eq!(t.len, Some(SEG), "only the run itself");
            let o = t.opened("r");
            at = o.end;
            s.forget(o.id());
        }
    }

    #[test]
    fn a_reader_ahead_of_an_open_response_reads_on_through_it_within_the_lead() {
        let s = streams(4);
        // No rate measured yet: no lead.
        assert_eq!(s.lead_limit(), 0);
        s.note_rate(SEG / 2, Duration::from_millis(1));
        assert_eq!(s.lead_limit(), 0, "a sample under a segment is noise");
        s.note_rate(10 * MIB, Duration::from_secs(1));
        assert_eq!(s.lead_limit(), MIB);
        s.note_rate(1000 * MIB, Duration::from_secs(1));
        assert!(s.lead_limit() > MIB && s.lead_limit() <= 16 * MIB);
        // A sequential chain: 1, 2, then 4 segments from 3 on, held by a fetch of its first
        // segment (given back at 4, read on to 7).
        for at in [0, SEG] {
            let (o, _) = open(&s, at, SEG);
            s.forget(o.id());
        }
        let (mut o, _) = open(&s, 3 * SEG, SEG);
        assert_eq!((o.pos, o.end), (3 * SEG, 7 * SEG));
        assert_eq!(
            s.lead_in(5 * SEG, MIB),
            Some(4 * SEG),
            "given back at its run's end"
        );
        assert_eq!(
            s.lead_in(4 * SEG, MIB),
            None,
            "at the position itself: the usual take"
        );
        assert_eq!(s.lead_in(6 * SEG, SEG), None, "too far ahead of it");
        assert_eq!(s.lead_in(7 * SEG, MIB), None, "past its end");
        // Idle at 5 segments: the nearest position counts.
        o.pos = 5 * SEG;
        assert_eq!(s.give_back(o, Instant::now()).0, None);
        assert_eq!(s.lead_in(6 * SEG, MIB), Some(5 * SEG));
    }

    #[test]
    fn a_stream_given_back_serves_the_next_fetch_where_it_stopped() {
        let s = streams(4);
        let (mut o, _) = open(&s, 0, SEG);
        o.end = 10 * SEG; // as if a larger request
        o.pos = SEG;
        assert_eq!(s.give_back(o, Instant::now()), (None, true));
        assert_eq!(s.open_count(), 1);
        match s.take(SEG, SEG, Instant::now(), |_| false).0 {
            Take::Stream(o) => assert_eq!(o.pos, SEG),
            Take::Open(_) => panic!("the idle stream was not reused"),
        }
    }

    #[test]
    fn idle_streams_go_after_the_timeout_or_once_their_bytes_are_filled() {
        let s = streams(4);
        let t0 = Instant::now();
        for at in [0, 50 * SEG] {
            let (mut o, _) = open(&s, at, SEG);
            o.end = at + 10 * SEG;
            assert!(s.give_back(o, t0).0.is_none());
        }
        // The bytes at 50 segments were filled by someone else: that stream is dropped.
        let (taken, dropped, _) = s.take(7 * SEG, SEG, t0, |pos| pos == 50 * SEG);
        assert_eq!(dropped.len(), 1);
        if let Take::Open(t) = taken {
            s.forget(t.id());
        }
        let (dropped, left) = s.reap(t0 + IDLE);
        assert_eq!((dropped.len(), left), (1, false));
        assert_eq!(s.open_count(), 0);
    }

    #[test]
    fn a_sequential_chain_books_its_successor_within_the_in_flight_limit() {
        let s = streams(2);
        let mut at = 0;
        let mut booked = None;
        for _ in 0..3 {
            let (o, ahead) = open(&s, at, SEG);
            at = o.end;
            booked = booked.or(ahead);
            s.forget(o.id());
        }
        let ahead = booked.expect("a successor after two sequential steps");
        assert_eq!(ahead.at, 7 * SEG);
        assert_eq!(ahead.len, Some(8 * SEG));
        // A fetch at the successor's start waits for it rather than opening another: give it
        // back from another thread.
        let s = std::sync::Arc::new(s);
        let (s2, opened) = (s.clone(), ahead.opened("early"));
        let handle = std::thread::spawn(move || s2.give_back(opened, Instant::now()).0);
        let (taken, _, _) = s.take(7 * SEG, SEG, Instant::now(), |_| false);
        assert!(handle.join().unwrap().is_none());
        match taken {
            Take::Stream(o) => assert_eq!((o.reader, o.pos), ("early", 7 * SEG)),
            Take::Open(_) => panic!("opened a second request where one was coming"),
        }
    }

    #[test]
    fn at_most_in_flight_streams_stay_idle_and_the_least_recent_goes_first() {
        // Many readers that each read on a little and stop must not each keep a response (a
        // connection) open for the idle timeout.
        let s = streams(2);
        let t0 = Instant::now();
        let mut dropped = Vec::new();
        for (i, name) in ["a", "b", "c", "d"].into_iter().enumerate() {
            let at = i as u64 * 100 * SEG;
            let (mut o, _) = open(&s, at, SEG);
            o.reader = name;
            o.end = at + 10 * SEG;
            o.pos = at + SEG;
            let now = t0 + Duration::from_millis(i as u64);
            dropped.extend(s.give_back(o, now).0);
        }
        assert_eq!(dropped, ["a", "b"]);
        assert_eq!(s.open_count(), 2);
        for (at, name) in [(200 * SEG + SEG, "c"), (300 * SEG + SEG, "d")] {
            match s.take(at, SEG, t0, |_| false).0 {
                Take::Stream(o) => assert_eq!(o.reader, name),
                Take::Open(_) => panic!("{name} was dropped instead of an older one"),
            }
        }
    }

    #[test]
    fn a_full_pool_keeps_the_streams_with_the_most_left_to_give() {
        // The herd: a chain's successor (16 MiB to give) was pushed out by the last segments
        // of far readers' responses given back after it, and was requested a second time.
        let s = streams(2);
        let t0 = Instant::now();
        let give = |name: &'static str, at: u64, left: u64, ms: u64| {
            let (mut o, _) = open(&s, at, SEG);
            o.reader = name;
            o.pos = at + SEG;
            o.end = o.pos + left;
            s.give_back(o, t0 + Duration::from_millis(ms)).0
        };
        assert_eq!(give("successor", 0, 256 * SEG, 0), None);
        assert_eq!(give("far 1", 1000 * SEG, SEG, 1), None);
        // Full: the newcomer with one segment left goes before the older successor...
        assert_eq!(give("far 2", 2000 * SEG, SEG, 2), Some("far 1"));
        // ...and a newcomer with less to give than everything kept is not kept itself.
        let (mut o, _) = open(&s, 3000 * SEG, SEG);
        o.reader = "far 3";
        o.pos = 3001 * SEG;
        o.end = o.pos + SEG / 2;
        assert_eq!(
            s.give_back(o, t0 + Duration::from_millis(3)).0,
            Some("far 3")
        );
        match s.take(SEG, SEG, t0, |_| false).0 {
            Take::Stream(o) => assert_eq!(o.reader, "successor"),
            Take::Open(_) => panic!("the successor was dropped"),
        }
    }

    #[test]
    fn no_successor_is_booked_where_a_response_on_its_way_brings_the_bytes() {
        let s = streams(4);
        // A chain sequential twice over: [0, 1), [1, 3), then [3, 7) segments.
        for (at, run) in [(0, SEG), (SEG, SEG)] {
            let (o, _) = open(&s, at, run);
            s.forget(o.id());
        }
        let (mut chain, ahead) = open(&s, 3 * SEG, SEG);
        assert_eq!((chain.end, chain.seq), (7 * SEG, 2));
        s.forget(ahead.expect("a successor at 7").id());
        chain.pos = 4 * SEG;
        assert!(s.give_back(chain, Instant::now()).0.is_none());
        // A fetch opened its own request at 7 for a run of 4 segments before the chain came
        // to it (it is busy, given back at 11, not at 7).
        let (own, _) = open(&s, 7 * SEG, 4 * SEG);
        // The chain's stream is taken at 4: a successor at 7 would bring [7, 11) twice.
        let (taken, _, ahead) = s.take(4 * SEG, SEG, Instant::now(), |_| false);
        assert!(matches!(taken, Take::Stream(_)));
        if let Some(t) = ahead {
            panic!(
                "a successor at {} while a response brings its bytes",
                t.at / SEG
            );
        }
        s.forget(own.id());
    }

    #[test]
    fn closing_hands_over_idle_streams_and_refuses_later_ones() {
        let s = streams(4);
        let (mut o, _) = open(&s, 0, SEG);
        o.end = 4 * SEG;
        let (mut p, _) = open(&s, 9 * SEG, SEG);
        p.end = 12 * SEG;
        assert!(s.give_back(o, Instant::now()).0.is_none());
        assert_eq!(s.close().len(), 1);
        assert!(s.give_back(p, Instant::now()).0.is_some());
        assert_eq!(s.open_count(), 0);
    }
}

/// The hand-off under loom: a fetch that waits for a busy stream to come back where its run
/// starts is always woken, whether the stream comes back, is forgotten (it failed), or the pool
/// closes; and it never opens a second request while the first is coming.
/// `RUSTFLAGS="--cfg loom" cargo test --release --lib loom_ --target-dir target/loom`
#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use crate::sync::Arc;

    fn limits() -> Limits {
        Limits {
            max_request: 1 << 20,
            in_flight: 4,
            segment_size: 1,
        }
    }

    #[test]
    fn loom_a_fetch_waiting_for_a_busy_stream_is_woken_by_its_return() {
        loom::model(|| {
            let s = Arc::new(Streams::<u8>::new(limits()));
            // A first request [0, 4), used up; the next continues it and is twice as large:
            // a fetch reads [4, 8) of the response [4, 12).
            let Take::Open(t) = s.take(0, 4, Instant::now(), |_| false).0 else {
                panic!()
            };
            s.forget(t.id());
            let Take::Open(t) = s.take(4, 4, Instant::now(), |_| false).0 else {
                panic!()
            };
            assert_eq!(t.len, Some(8));
            let mut open = t.opened(7u8);
            let s2 = s.clone();
            let fetch = loom::thread::spawn(move || {
                open.pos = 8;
                s2.give_back(open, Instant::now()).0
            });
            // A second fetch starts at 8: it must get that stream, never a ticket.
            let got = match s.take(8, 4, Instant::now(), |_| false).0 {
                Take::Stream(o) => o.reader,
                Take::Open(_) => 0,
            };
            assert!(fetch.join().unwrap().is_none());
            assert_eq!(got, 7);
        });
    }

    #[test]
    fn loom_a_fetch_waiting_for_a_busy_stream_is_woken_if_it_fails_or_the_pool_closes() {
        loom::model(|| {
            let s = Arc::new(Streams::<u8>::new(limits()));
            let Take::Open(t) = s.take(0, 4, Instant::now(), |_| false).0 else {
                panic!()
            };
            s.forget(t.id());
            let Take::Open(t) = s.take(4, 4, Instant::now(), |_| false).0 else {
                panic!()
            };
            let open = t.opened(7u8);
            let id = open.id();
            let s2 = s.clone();
            let failing = loom::thread::spawn(move || {
                drop(open);
                s2.forget(id);
            });
            let s3 = s.clone();
            let closing = loom::thread::spawn(move || drop(s3.close()));
            // Woken either way: a ticket (the stream failed) after the failure, or anything
            // once closed; never stuck.
            let (taken, _, _) = s.take(8, 4, Instant::now(), |_| false);
            if let Take::Open(t) = taken {
                s.forget(t.id());
            }
            failing.join().unwrap();
            closing.join().unwrap();
        });
    }
}
