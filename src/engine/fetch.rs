//! Gap-driven filling from a [`RangeSource`]: a read that meets a hole claims the missing
//! segments (so no other reader fetches them too), fetches them without any index lock, and
//! publishes each as it arrives. Readers that need a segment someone else is fetching wait for
//! its publish.

use std::io;
use std::ops::Range;

use crate::engine::shared::{Ranged, Shared, State};
use crate::error::Error;
use crate::source::{call, RangeSource};
use crate::store::slots::Slot;

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

/// Fetches the claimed `segments` with one vectored read of the run (one request, for a source
/// whose requests are costly), publishing each; gives back what it could not fetch. The error,
/// if any, goes to this reader only: the segments it left become holes again and the next read
/// that needs them asks the source again (the segments read before it are published). Returns
/// the first segment's bytes, so the reader that fetched them can copy them even if they are
/// evicted right after publishing.
pub(crate) fn fetch(
    shared: &Shared,
    ranged: &Ranged,
    segments: Range<u64>,
    ahead: bool,
) -> io::Result<Option<bytes::Bytes>> {
    let shift = shared.config.shift;
    let size = shared.config.segment_size as u64;
    let known_len = shared.state.read().len;
    let run_start = segments.start << shift;
    // What each segment should hold: a whole segment, less at a known end.
    let wants: Vec<usize> = segments
        .clone()
        .map(|segment| {
            let start = segment << shift;
            known_len.map_or(size, |len| len.saturating_sub(start).min(size)) as usize
        })
        .collect();
    let fetched = wants.iter().take_while(|&&w| w > 0).count();
    let mut bufs: Vec<_> = {
        let mut tiers = shared.tiers.lock();
        wants[..fetched].iter().map(|_| tiers.take(false)).collect()
    };
    let (mut got, mut result) = {
        let mut dsts: Vec<&mut [u8]> = bufs
            .iter_mut()
            .zip(&wants)
            .map(|(buf, &want)| &mut buf[..want])
            .collect();
        match read_run(&*ranged.source, run_start, &mut dsts) {
            (n, None) => (n, Ok(())),
            (n, Some(error)) => (n, Err(io::Error::from(error))),
        }
    };
    let mut ended = false;
    let mut first = None;
    let mut bufs = bufs.into_iter();
    for (i, segment) in segments.clone().enumerate() {
        let start = segment << shift;
        let want = wants[i];
        let buf = if i < fetched { bufs.next() } else { None };
        let n = got.min(want);
        got -= n;
        let Some(mut buf) = buf.filter(|_| !ended && (n == want || result.is_ok())) else {
            // Past the end, after the end or an error: nothing to publish.
            if i < fetched {
                shared.tiers.lock().forget();
            }
            shared.state.write().index.abandon(segment);
            continue;
        };
        if n < want && known_len.is_some() {
            shared.tiers.lock().forget();
            shared.state.write().index.abandon(segment);
            let declared = known_len.unwrap_or(0);
            result = Err(Error::EndedEarly {
                declared,
                actual: start + n as u64,
            }
            .into());
            ended = true;
            continue;
        }
        ended = n < want;
        buf.truncate(n);
        let end = start + n as u64;
        let data = buf.freeze();
        if segment == segments.start && n > 0 {
            first = Some(data.clone());
        }
        {
            let mut state = shared.state.write();
            if state.index.insert_full(segment, start..end, data, ahead) {
                shared
                    .refetched_bytes
                    .fetch_add(n as u64, crate::sync::Ordering::Relaxed);
            }
            if ended {
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
    }
    shared.state.write().fetches_in_flight -= 1;
    shared.publish.notify();
    if let Some(error) = result
        .as_ref()
        .err()
        .and_then(|e| e.get_ref()?.downcast_ref::<Error>())
    {
        shared.log_source_failure(error);
    }
    result.map(|()| first)
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
