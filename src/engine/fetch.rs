//! Gap-driven filling from a [`RangeSource`]: a read that meets a hole claims the missing
//! segments (so no other reader fetches them too), fetches them without any index lock, and
//! publishes each as it arrives. Readers that need a segment someone else is fetching wait for
//! its publish. A source that streams is read from a response kept open between fetches (see
//! `streams.rs`, which sizes new requests); any other with one vectored read per run.

use std::io::{self, Read};
use std::ops::Range;
use std::sync::Weak;
use std::time::Instant;

use crate::engine::account::Account;
use crate::engine::shared::{Ranged, Shared, SourceStream, State};
use crate::engine::streams::{Open, Streams, Take, Ticket};
use crate::error::Error;
use crate::source::{call, call_with, RangeSource};
use crate::store::slots::Slot;
use crate::sync::Arc;

/// The most segments one fetch claims: a long read becomes several fetches, which can run in
/// parallel and publish early.
const MAX_RUN: u64 = 16;

/// What a reader that needs `[offset, end)` should do next.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Claim {
    /// Fetch these segments: they are now claimed for this reader.
    Fetch(Range<u64>),
    /// Every missing segment is being fetched by someone else, or too many fetches are running.
    Wait,
    /// Nothing is missing any more: look again.
    Retry,
}

/// The most segments one fetch of `shared` claims: [`MAX_RUN`], or fewer if the memory budget
/// is smaller (a run's buffers are taken before its one read).
pub(crate) fn max_run(shared: &Shared) -> u64 {
    let budget = shared.config.memory_budget / shared.config.segment_size;
    (budget as u64).clamp(1, MAX_RUN)
}

/// Claims the first run (of at most `max_run` segments) of absent segments of `[offset, end)`,
/// under the index write lock.
pub(crate) fn claim(
    state: &mut State,
    shift: u32,
    (offset, end): (u64, u64),
    max_fetches: usize,
    max_run: u64,
) -> Claim {
    let last = (end - 1) >> shift;
    let mut others_fetching = false;
    for segment in offset >> shift..=last {
        match state.index.slot(segment) {
            None | Some(Slot::Absent) => {
                if state.fetches_in_flight >= max_fetches {
                    return Claim::Wait;
                }
                let mut run_end = segment + 1;
                while run_end <= last
                    && run_end - segment < max_run
                    && matches!(state.index.slot(run_end), None | Some(Slot::Absent))
                {
                    run_end += 1;
                }
                for s in segment..run_end {
                    state.index.claim(s);
                }
                state.fetches_in_flight += 1;
                return Claim::Fetch(segment..run_end);
            }
            Some(Slot::Fetching) => others_fetching = true,
            Some(_) => {}
        }
    }
    if others_fetching {
        Claim::Wait
    } else {
        Claim::Retry
    }
}

/// Fetches the claimed `segments`, publishing each as its bytes arrive; gives back what it could
/// not fetch. A source with streams (see [`RangeSource::open_at`]) is read from a response kept
/// open between fetches (or a new one, sized by `streams.rs`); any other with one vectored read
/// of the run (one request, for a source whose requests are costly). The error, if any, goes to
/// this reader only: the segments it left become holes again and the next read that needs them
/// asks the source again (the segments read before it are published). Returns the first
/// segment's bytes, so the reader that fetched them can copy them even if they are evicted
/// right after publishing.
pub(crate) fn fetch(
    shared: &Shared,
    ranged: &Ranged,
    segments: Range<u64>,
    ahead: bool,
) -> io::Result<Option<bytes::Bytes>> {
    let plan = Plan::new(shared, segments);
    let mut progress = Progress {
        result: Ok(()),
        ended: false,
        first: None,
    };
    if plan.fetched == 0 || ranged.no_streams.load(crate::sync::Ordering::Relaxed) {
        fetch_run(shared, ranged, &plan, ahead, &mut progress);
    } else {
        fetch_streamed(shared, ranged, &plan, ahead, &mut progress);
    }
    shared.state.write().fetches_in_flight -= 1;
    shared.publish.notify();
    if let Some(error) = progress
        .result
        .as_ref()
        .err()
        .and_then(|e| e.get_ref()?.downcast_ref::<Error>())
    {
        shared.log_source_failure(error);
    }
    progress.result.map(|()| progress.first)
}

/// What a fetch of a run of segments should bring.
struct Plan {
    segments: Range<u64>,
    shift: u32,
    known_len: Option<u64>,
    /// What each segment should hold: a whole segment, less at a known end.
    wants: Vec<usize>,
    /// How many segments have anything to fetch (those past a known end have not).
    fetched: usize,
}

impl Plan {
    fn new(shared: &Shared, segments: Range<u64>) -> Plan {
        let shift = shared.config.shift;
        let size = shared.config.segment_size as u64;
        let known_len = shared.state.read().len;
        let wants: Vec<usize> = segments
            .clone()
            .map(|segment| {
                let start = segment << shift;
                known_len.map_or(size, |len| len.saturating_sub(start).min(size)) as usize
            })
            .collect();
        let fetched = wants.iter().take_while(|&&w| w > 0).count();
        Plan {
            segments,
            shift,
            known_len,
            wants,
            fetched,
        }
    }

    fn start(&self) -> u64 {
        self.segments.start << self.shift
    }

    /// The bytes of the segments to fetch.
    fn total(&self) -> u64 {
        self.wants[..self.fetched].iter().map(|&w| w as u64).sum()
    }
}

/// How a fetch is going: its error, whether the source ended, and its first segment's bytes.
struct Progress {
    result: io::Result<()>,
    ended: bool,
    first: Option<bytes::Bytes>,
}

/// The run with one vectored read, then each segment published.
fn fetch_run(shared: &Shared, ranged: &Ranged, plan: &Plan, ahead: bool, progress: &mut Progress) {
    let mut bufs: Vec<_> = match shared.account() {
        // In a cache, each buffer needs room in the cache's RAM first. Only the first waits
        // for it: the run is cut where the room ends (its other segments stay holes for the
        // next claim), as buffers reserved for it and not yet published cannot be reclaimed.
        Some(account) => {
            let mut bufs = Vec::with_capacity(plan.fetched);
            for i in 0..plan.fetched {
                if i == 0 {
                    account.reserve(shared);
                } else if !account.try_reserve() {
                    break;
                }
                bufs.push(shared.tiers.lock().take(false));
            }
            bufs
        }
        None => {
            let mut tiers = shared.tiers.lock();
            plan.wants[..plan.fetched]
                .iter()
                .map(|_| tiers.take(false))
                .collect()
        }
    };
    let mut got = {
        let mut dsts: Vec<&mut [u8]> = bufs
            .iter_mut()
            .zip(&plan.wants)
            .map(|(buf, &want)| &mut buf[..want])
            .collect();
        let (n, error) = read_run(&*ranged.source, plan.start(), &mut dsts);
        if let Some(error) = error {
            progress.result = Err(io::Error::from(error));
        }
        n
    };
    let mut bufs = bufs.into_iter();
    for (i, segment) in plan.segments.clone().enumerate() {
        let n = got.min(plan.wants[i]);
        got -= n;
        let buf = if i < plan.fetched { bufs.next() } else { None };
        publish_segment(shared, plan, i, segment, buf, n, ahead, progress);
    }
}

/// The run from a stream, segment by segment: each is published as soon as its bytes came out
/// of the response, and the response is kept for the next fetch where this one stops. A source
/// that turns out to have no streams is read as one run.
fn fetch_streamed(
    shared: &Shared,
    ranged: &Ranged,
    plan: &Plan,
    ahead: bool,
    progress: &mut Progress,
) {
    let run_end = plan.start().saturating_add(plan.total());
    let mut stream = match take_stream(shared, ranged, plan.start(), plan.total()) {
        Ok(Some(open)) => Some(open),
        Ok(None) => return fetch_run(shared, ranged, plan, ahead, progress),
        Err(error) => {
            progress.result = Err(error.into());
            None
        }
    };
    let (began, mut read) = (Instant::now(), 0u64);
    for (i, segment) in plan.segments.clone().enumerate() {
        if i >= plan.fetched || progress.ended || progress.result.is_err() {
            publish_segment(shared, plan, i, segment, None, 0, ahead, progress);
            continue;
        }
        let (want, start) = (plan.wants[i], segment << plan.shift);
        if let Some(account) = shared.account() {
            account.reserve(shared);
        }
        let mut buf = shared.tiers.lock().take(false);
        let mut n = 0;
        while n < want {
            let pos = start + n as u64;
            let mut open = match stream.take() {
                Some(open) if open.pos < open.end => open,
                used_up => {
                    // Its request is read to its end: the next one goes on from there.
                    if let Some(open) = used_up {
                        retire(ranged, open, false);
                    }
                    match take_stream(shared, ranged, pos, run_end - pos) {
                        Ok(Some(open)) => open,
                        Ok(None) => {
                            progress.result = Err(Error::Source {
                                offset: pos,
                                error: Arc::new(io::Error::other(
                                    "the source stopped opening streams in the middle of a fetch",
                                )),
                            }
                            .into());
                            break;
                        }
                        Err(error) => {
                            progress.result = Err(error.into());
                            break;
                        }
                    }
                }
            };
            let room = (want - n).min(open.end.saturating_sub(open.pos) as usize);
            let dst = &mut buf[n..n + room];
            match call(pos, room, || open.reader.read(dst)) {
                Ok(0) => {
                    // The response ended before its request did: the end of the data.
                    retire(ranged, open, false);
                    break;
                }
                Ok(k) => {
                    n += k;
                    read += k as u64;
                    open.pos += k as u64;
                    stream = Some(open);
                }
                Err(error) => {
                    retire(ranged, open, false);
                    progress.result = Err(error.into());
                    break;
                }
            }
        }
        publish_segment(shared, plan, i, segment, Some(buf), n, ahead, progress);
    }
    ranged.streams.note_rate(read, began.elapsed());
    if let Some(open) = stream {
        // Kept for the next fetch at its position, unless the source ended or the bytes there
        // are filled already. A segment there being fetched is no reason to drop it: this run
        // filled the segment before it, so whoever claimed that one started its run there and
        // is on its way to take a stream at this position (a claim comes before the take; this
        // stream was once dropped in between, and a new chain began one step later). If that
        // fetch opened a request of its own, this one is swept once the bytes are filled.
        let next = open.pos >> plan.shift;
        let aligned = open.pos & ((1 << plan.shift) - 1) == 0;
        let taken = aligned
            && !matches!(
                shared.state.read().index.slot(next),
                None | Some(Slot::Absent | Slot::Fetching)
            );
        let wanted = !taken || ranged.streams.waited_at(open.pos);
        let keep = progress.result.is_ok() && !progress.ended && wanted;
        let rest = open.pos..open.end;
        retire(ranged, open, keep);
        if keep && rest.end != u64::MAX && shared.is_persisted() {
            // A persistent cache keeps what the upstream sends: the rest of this response and
            // of those opened after it (already on their way) is read into the cache in the
            // background, not dropped with the connections.
            let end = ranged.streams.reach(rest.start);
            shared.request_ahead(rest.start..end.max(rest.end));
        }
    }
}

/// A stream at `pos` for a run of `run` bytes: an open one, or a new request. `None`: the
/// source has no streams.
fn take_stream(
    shared: &Shared,
    ranged: &Ranged,
    pos: u64,
    run: u64,
) -> Result<Option<Open<SourceStream>>, Error> {
    let shift = shared.config.shift;
    let stale = |at: u64| {
        let state = shared.state.read();
        at & ((1 << shift) - 1) == 0
            && !matches!(
                state.index.slot(at >> shift),
                None | Some(Slot::Absent | Slot::Fetching)
            )
    };
    // A request stops where bytes are filled or on their way already (a far reader's fetch).
    let free = |from: u64, to: u64| shared.state.read().index.first_taken(from, to);
    let (taken, dropped, successor) =
        ranged
            .streams
            .take_within(pos, run, Instant::now(), stale, free);
    drop(dropped);
    if let Some(ticket) = successor {
        open_ahead(ranged, ticket);
    }
    let ticket = match taken {
        Take::Stream(open) => return Ok(Some(open)),
        Take::Open(ticket) => ticket,
    };
    let id = ticket.id();
    match call_with(pos, || ranged.source.open_at(ticket.at, ticket.len)) {
        Ok(Some(reader)) => Ok(Some(ticket.opened(reader))),
        Ok(None) => {
            ranged
                .no_streams
                .store(true, crate::sync::Ordering::Relaxed);
            ranged.streams.forget(id);
            Ok(None)
        }
        Err(error) => {
            ranged.streams.forget(id);
            Err(error)
        }
    }
}

/// Opens the successor of a sequential chain on a thread of its own, and leaves it for the
/// fetch that comes to its position.
fn open_ahead(ranged: &Ranged, ticket: Ticket) {
    let (source, streams) = (ranged.source.clone(), ranged.streams.clone());
    let cache = ranged.cache.clone();
    let id = ticket.id();
    let run = move || {
        let opened = call_with(ticket.at, || source.open_at(ticket.at, ticket.len));
        match opened {
            Ok(Some(reader)) => {
                let (dropped, reaper) = streams.give_back(ticket.opened(reader), Instant::now());
                drop(dropped);
                if reaper {
                    start_reaper(&streams, cache.as_ref());
                }
            }
            // A failed open is not an error of any read: the fetch that comes here opens its
            // own and meets the error, if it lasts.
            _ => streams.forget(id),
        }
    };
    let started = match ranged.cache.as_ref() {
        // A cache's worker, only if one takes it at once: a fetch will wait for this stream,
        // and that fetch may itself be a job of the same workers.
        Some(cache) => cache
            .upgrade()
            .is_some_and(|account| account.workers.submit_now(Box::new(run)).is_ok()),
        None => crate::sync::spawn("sparsebuf-open", run).is_ok(),
    };
    if !started {
        ranged.streams.forget(id);
    }
}

/// Done with a stream: kept for the next fetch at its position (`keep`), or dropped (its
/// connection closed).
fn retire(ranged: &Ranged, open: Open<SourceStream>, keep: bool) {
    if !keep {
        ranged.streams.forget(open.id());
        drop(open);
        return;
    }
    let (dropped, reaper) = ranged.streams.give_back(open, Instant::now());
    drop(dropped);
    if reaper {
        start_reaper(&ranged.streams, ranged.cache.as_ref());
    }
}

/// A thread that closes the responses nobody read for a while (see `Streams::start_reaper`),
/// or, in a cache, rounds of the same on its workers.
fn start_reaper(streams: &Arc<Streams<SourceStream>>, cache: Option<&Weak<Account>>) {
    #[cfg(not(loom))]
    match cache {
        Some(cache) => reap_later(streams.clone(), cache.clone()),
        None => streams.start_reaper(),
    }
    #[cfg(loom)]
    let _ = (streams, cache);
}

/// A reaper's round on the cache's workers in a quarter of the idle time, and the next round
/// after it while streams stay idle.
#[cfg(not(loom))]
fn reap_later(streams: Arc<Streams<SourceStream>>, cache: Weak<Account>) {
    let Some(account) = cache.upgrade() else {
        // The cache is gone: the idle streams close with their buffer.
        return;
    };
    let round = move || {
        let (dropped, left) = streams.reap(Instant::now());
        drop(dropped);
        if left {
            reap_later(streams, cache);
        }
    };
    account
        .workers
        .after(crate::engine::streams::IDLE / 4, Box::new(round));
}

/// Publishes segment `i` of the run (`segment`) with the `n` bytes fetched into `buf`, or gives
/// it back as a hole: past the end, after the end or an error, or short of a known end (which
/// is an error).
#[allow(clippy::too_many_arguments)]
fn publish_segment(
    shared: &Shared,
    plan: &Plan,
    i: usize,
    segment: u64,
    buf: Option<bytes::BytesMut>,
    n: usize,
    ahead: bool,
    progress: &mut Progress,
) {
    let start = segment << plan.shift;
    let want = plan.wants[i];
    let taken = buf.is_some();
    let Some(mut buf) = buf.filter(|_| !progress.ended && (n == want || progress.result.is_ok()))
    else {
        if taken {
            shared.tiers.lock().forget();
        }
        shared.state.write().index.abandon(segment);
        return;
    };
    if n < want && plan.known_len.is_some() {
        shared.tiers.lock().forget();
        shared.state.write().index.abandon(segment);
        let declared = plan.known_len.unwrap_or(0);
        progress.result = Err(Error::EndedEarly {
            declared,
            actual: start + n as u64,
        }
        .into());
        progress.ended = true;
        return;
    }
    progress.ended = n < want;
    buf.truncate(n);
    let end = start + n as u64;
    let data = buf.freeze();
    if segment == plan.segments.start && n > 0 {
        progress.first = Some(data.clone());
    }
    {
        let mut state = shared.state.write();
        if state.index.insert_full(segment, start..end, data, ahead) {
            shared
                .refetched_bytes
                .fetch_add(n as u64, crate::sync::Ordering::Relaxed);
        }
        if progress.ended {
            // Bytes up to `end` and nothing after: the end, exactly. Nothing at all at
            // `start`: the end is at `start` or before.
            state.found_end(end, n > 0);
        }
        state.settle_end();
    }
    // Within budget after every segment: RAM never holds more than one run of unpublished
    // buffers per fetch in flight beyond the budget.
    let mut tiers = shared.tiers.lock();
    if n > 0 {
        tiers.admit(segment);
    } else {
        tiers.forget();
    }
    // A range source evicts to make room: it never has to wait.
    let _ = tiers.enforce_budget(shared, false, false);
    drop(tiers);
    shared
        .source_bytes
        .fetch_add(n as u64, crate::sync::Ordering::Relaxed);
    if ahead {
        shared
            .read_ahead_bytes
            .fetch_add(n as u64, crate::sync::Ordering::Relaxed);
    }
    shared.publish.notify();
    if n > 0 {
        // A persistent cache keeps it (after the readers were woken).
        shared.write_through(segment);
    }
}

/// Reads `dsts` in full at `offset`, as one run, unless the source ends or fails first; returns
/// the bytes read and the error, if any.
fn read_run(
    source: &dyn RangeSource,
    offset: u64,
    dsts: &mut [&mut [u8]],
) -> (usize, Option<Error>) {
    let total: usize = dsts.iter().map(|d| d.len()).sum();
    let mut done = 0;
    while done < total {
        // The part of the run not read yet.
        let mut skip = done;
        let mut rest: Vec<&mut [u8]> = Vec::with_capacity(dsts.len());
        for dst in dsts.iter_mut() {
            if skip >= dst.len() {
                skip -= dst.len();
                continue;
            }
            rest.push(&mut dst[skip..]);
            skip = 0;
        }
        let at = offset + done as u64;
        match call(at, total - done, || source.read_vectored_at(at, &mut rest)) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(error) => return (done, Some(error)),
        }
    }
    (done, None)
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::store::index::Index;

    /// 16-byte segments: segment `s` holds `[16 s, 16 s + 16)`.
    const SHIFT: u32 = 4;

    fn state() -> State {
        State::new(Index::new(SHIFT), Some(16 * 64), 1 << 20)
    }

    fn fill(state: &mut State, segment: u64) {
        let start = segment << SHIFT;
        state
            .index
            .insert_full(segment, start..start + 16, Bytes::from(vec![0; 16]), false);
    }

    fn fetching(state: &State, segments: Range<u64>) -> bool {
        segments
            .into_iter()
            .all(|s| matches!(state.index.slot(s), Some(Slot::Fetching)))
    }

    #[test]
    fn a_claim_takes_the_first_run_of_holes_and_stops_at_a_filled_segment() {
        let mut st = state();
        fill(&mut st, 3);
        // [8, 100) spans segments 0..=6; 0, 1, 2 are holes, 3 is filled.
        assert_eq!(claim(&mut st, SHIFT, (8, 100), 4, 16), Claim::Fetch(0..3));
        assert!(fetching(&st, 0..3));
        assert_eq!(st.fetches_in_flight, 1);
        // The next reader of the same bytes skips what is claimed and takes the run after 3.
        assert_eq!(claim(&mut st, SHIFT, (8, 100), 4, 16), Claim::Fetch(4..7));
        assert_eq!(st.fetches_in_flight, 2);
        // A third finds nothing left to claim, but others fetching: it waits for them.
        assert_eq!(claim(&mut st, SHIFT, (8, 100), 4, 16), Claim::Wait);
        assert_eq!(st.fetches_in_flight, 2);
    }

    #[test]
    fn a_run_is_cut_at_max_run_and_the_rest_is_left_for_the_next_claim() {
        let mut st = state();
        assert_eq!(
            claim(&mut st, SHIFT, (0, 16 * 10), 8, 4),
            Claim::Fetch(0..4)
        );
        assert_eq!(
            claim(&mut st, SHIFT, (0, 16 * 10), 8, 4),
            Claim::Fetch(4..8)
        );
        assert_eq!(
            claim(&mut st, SHIFT, (0, 16 * 10), 8, 4),
            Claim::Fetch(8..10)
        );
        assert!(fetching(&st, 0..10));
        assert!(matches!(st.index.slot(10), None | Some(Slot::Absent)));
    }

    #[test]
    fn too_many_fetches_in_flight_waits_without_claiming() {
        let mut st = state();
        st.fetches_in_flight = 2;
        assert_eq!(claim(&mut st, SHIFT, (0, 16), 2, 16), Claim::Wait);
        assert!(!fetching(&st, 0..1));
        assert_eq!(st.fetches_in_flight, 2);
    }

    #[test]
    fn nothing_missing_asks_for_a_retry_and_an_abandoned_claim_is_a_hole_again() {
        let mut st = state();
        fill(&mut st, 0);
        fill(&mut st, 1);
        assert_eq!(claim(&mut st, SHIFT, (0, 32), 4, 16), Claim::Retry);
        // A failed fetch gives its segments back: the next reader claims them again.
        assert_eq!(claim(&mut st, SHIFT, (32, 64), 4, 16), Claim::Fetch(2..4));
        st.index.abandon(2);
        st.index.abandon(3);
        st.fetches_in_flight -= 1;
        assert_eq!(claim(&mut st, SHIFT, (32, 64), 4, 16), Claim::Fetch(2..4));
    }

    #[test]
    fn the_last_byte_of_a_range_decides_its_last_segment() {
        let mut st = state();
        // [15, 17) touches segments 0 and 1; [16, 32) only 1.
        assert_eq!(claim(&mut st, SHIFT, (16, 32), 4, 16), Claim::Fetch(1..2));
        assert_eq!(claim(&mut st, SHIFT, (15, 17), 4, 16), Claim::Fetch(0..1));
    }
}
