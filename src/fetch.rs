//! Gap-driven filling from a [`RangeSource`]: a read that meets a hole claims the missing
//! segments (so no other reader fetches them too), fetches them without any index lock, and
//! publishes each as it arrives. Readers that need a segment someone else is fetching wait for
//! its publish.

use std::io;
use std::ops::Range;

use crate::error::Error;
use crate::index::Slot;
use crate::shared::{Shared, State};
use crate::source::{call, RangeSource};

/// The most segments one fetch claims: a long read becomes several fetches, which can run in
/// parallel and publish early.
const MAX_RUN: u64 = 16;

/// A range source and how many fetches of it may run at once.
pub(crate) struct Ranged {
    pub(crate) source: Box<dyn RangeSource>,
    pub(crate) max_fetches: usize,
}

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

/// Claims the first run of absent segments of `[offset, end)`, under the index write lock.
pub(crate) fn claim(
    state: &mut State,
    shift: u32,
    offset: u64,
    end: u64,
    max_fetches: usize,
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
                    && run_end - segment < MAX_RUN
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

/// Fetches the claimed `segments`, publishing each; gives back what it could not fetch. The
/// error, if any, goes to this reader only: the segments become holes again and the next read
/// that needs them asks the source again. Returns the first segment's bytes, so the reader that
/// fetched them can copy them even if they are evicted right after publishing.
pub(crate) fn fetch(
    shared: &Shared,
    ranged: &Ranged,
    segments: Range<u64>,
    ahead: bool,
) -> io::Result<Option<bytes::Bytes>> {
    let shift = shared.config.shift;
    let mut result = Ok(());
    let mut ended = false;
    let mut first = None;
    for segment in segments.clone() {
        let start = segment << shift;
        let known_len = shared.state.read().len;
        let want = known_len.map_or(shared.config.segment_size as u64, |len| {
            len.saturating_sub(start)
                .min(shared.config.segment_size as u64)
        }) as usize;
        if ended || result.is_err() || want == 0 {
            shared.state.write().index.abandon(segment);
            continue;
        }
        let mut buf = shared.tiers.lock().take(false);
        match read_fully(&*ranged.source, start, &mut buf[..want]) {
            Ok(n) if n < want && known_len.is_some() => {
                shared.tiers.lock().forget();
                shared.state.write().index.abandon(segment);
                let declared = known_len.unwrap_or(0);
                result = Err(Error::EndedEarly {
                    declared,
                    actual: start + n as u64,
                }
                .into());
            }
            Ok(n) => {
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
                        // Bytes up to `end` and nothing after: the end, exactly. Nothing at all
                        // at `start`: the end is at `start` or before.
                        state.found_end(end, n > 0);
                    }
                    state.settle_end();
                }
                // Within budget after every segment, not only after the run: RAM never holds
                // more than one unpublished buffer per fetch in flight beyond the budget.
                let mut tiers = shared.tiers.lock();
                if n > 0 {
                    tiers.admit(segment);
                } else {
                    tiers.forget();
                }
                // A range source evicts to make room: it never has to wait.
                let _ = tiers.enforce_budget(shared, false, false);
                shared
                    .source_bytes
                    .fetch_add(n as u64, crate::sync::Ordering::Relaxed);
                if ahead {
                    shared
                        .read_ahead_bytes
                        .fetch_add(n as u64, crate::sync::Ordering::Relaxed);
                }
            }
            Err(error) => {
                shared.tiers.lock().forget();
                shared.state.write().index.abandon(segment);
                result = Err(error.into());
            }
        }
        shared.publish.notify();
    }
    shared.state.write().fetches_in_flight -= 1;
    shared.publish.notify();
    result.map(|()| first)
}

/// Reads `buf.len()` bytes at `offset` unless the source ends first; returns the count.
fn read_fully(source: &dyn RangeSource, offset: u64, buf: &mut [u8]) -> Result<usize, Error> {
    let mut done = 0;
    while done < buf.len() {
        let at = offset + done as u64;
        let dst = &mut buf[done..];
        let len = dst.len();
        match call(at, len, || source.read_at(at, dst))? {
            0 => break,
            n => done += n,
        }
    }
    Ok(done)
}
