//! Range sources: gap-driven fetching with holes, against a model; fetch counts (never a byte
//! twice, one fetch per gap however many readers want it, at most `max_fetches` at once);
//! failures of the source; unknown and declared lengths.

mod common;

use std::collections::HashMap;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::thread;
use std::time::Duration;

use common::{data, expected, within, Rng};
use proptest::prelude::*;
use sparsebuf::{Location, RangeSource, SeekSource, StreamBuffer};

/// A range source over a model, counting fetches per offset and concurrent calls, with an
/// optional delay, a length it may hide, and failures on demand.
struct Probe {
    data: Vec<u8>,
    hide_len: bool,
    delay: Duration,
    calls: Mutex<HashMap<u64, usize>>,
    running: AtomicUsize,
    max_running: AtomicUsize,
    /// Calls left to fail (with `ConnectionReset`); `usize::MAX` panics instead, once.
    fail_next: AtomicUsize,
    /// Answer `open_at` with streams that give the model in pieces of 1 to this many bytes
    /// (seeded by the offset); `None`: no streams.
    streams: Option<u64>,
    shared: Arc<Vec<u8>>,
}

impl Probe {
    fn new(data: Vec<u8>) -> Self {
        Probe {
            hide_len: false,
            delay: Duration::ZERO,
            calls: Mutex::new(HashMap::new()),
            running: AtomicUsize::new(0),
            max_running: AtomicUsize::new(0),
            fail_next: AtomicUsize::new(0),
            streams: None,
            shared: Arc::new(data.clone()),
            data,
        }
    }
}

/// A stream of a [`Probe`]: the model from `pos` to `end`, in uneven pieces.
struct ProbeStream {
    data: Arc<Vec<u8>>,
    pos: u64,
    end: u64,
    rng: Rng,
    piece: u64,
}

impl Read for ProbeStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let end = self.end.min(self.data.len() as u64);
        let left = end.saturating_sub(self.pos);
        let n = (buf.len() as u64)
            .min(left)
            .min(1 + self.rng.below(self.piece)) as usize;
        if n == 0 {
            return Ok(0);
        }
        let at = self.pos as usize;
        buf[..n].copy_from_slice(&self.data[at..at + n]);
        self.pos += n as u64;
        Ok(n)
    }
}

impl RangeSource for Probe {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_running.fetch_max(now, Ordering::SeqCst);
        if !self.delay.is_zero() {
            thread::sleep(self.delay);
        }
        *self.calls.lock().unwrap().entry(offset).or_default() += 1;
        let result = match self.fail_next.load(Ordering::SeqCst) {
            0 => {
                let at = (offset as usize).min(self.data.len());
                let n = buf.len().min(self.data.len() - at);
                buf[..n].copy_from_slice(&self.data[at..at + n]);
                Ok(n)
            }
            usize::MAX => {
                self.fail_next.store(0, Ordering::SeqCst);
                self.running.fetch_sub(1, Ordering::SeqCst);
                panic!("probe panics once");
            }
            _ => {
                self.fail_next.fetch_sub(1, Ordering::SeqCst);
                Err(io::Error::new(
                    io::ErrorKind::ConnectionReset,
                    "probe fails",
                ))
            }
        };
        self.running.fetch_sub(1, Ordering::SeqCst);
        result
    }

    fn open_at(&self, offset: u64, len: Option<u64>) -> io::Result<Option<Box<dyn Read + Send>>> {
        let Some(piece) = self.streams else {
            return Ok(None);
        };
        *self.calls.lock().unwrap().entry(offset).or_default() += 1;
        Ok(Some(Box::new(ProbeStream {
            data: self.shared.clone(),
            pos: offset,
            end: len.map_or(u64::MAX, |len| offset.saturating_add(len)),
            rng: Rng(offset ^ piece),
            piece,
        })))
    }

    fn len(&self) -> Option<u64> {
        (!self.hide_len).then_some(self.data.len() as u64)
    }
}

/// A sparse buffer over `model` through a source that does not tell its length.
fn of_unknown_length(model: &[u8], segment: usize) -> StreamBuffer {
    let mut probe = Probe::new(model.to_vec());
    probe.hide_len = true;
    StreamBuffer::builder()
        .segment_size(segment)
        .build_ranged(probe)
        .unwrap()
}

fn file_with(model: &[u8]) -> std::fs::File {
    let mut f = tempfile::tempfile().unwrap();
    f.write_all(model).unwrap();
    f
}

#[test]
fn scattered_reads_of_a_file_fetch_only_their_segments() {
    const SEGMENT: u64 = 4096;
    let model = data(10 << 20, 1);
    let buf = StreamBuffer::builder()
        .segment_size(SEGMENT as usize)
        .memory_budget(64 << 10)
        .build_ranged(file_with(&model))
        .unwrap();
    assert_eq!(buf.len(), Some(10 << 20));
    let mut rng = Rng(9);
    let mut segments = std::collections::BTreeSet::new();
    for _ in 0..300 {
        let offset = rng.below(model.len() as u64);
        let len = 1 + rng.below(20_000) as usize;
        let mut dst = vec![0u8; len];
        let n = buf.read_at(offset, &mut dst).unwrap();
        assert_eq!(&dst[..n], expected(&model, offset, len));
        let end = offset + n as u64;
        segments.extend(offset / SEGMENT..end.div_ceil(SEGMENT));
        // Reading it all again fetches nothing.
        let before = buf.stats().source_bytes;
        buf.read_exact_at(offset, &mut dst[..n]).unwrap();
        assert_eq!(buf.stats().source_bytes, before);
    }
    let requested_rounded = segments.len() as u64 * SEGMENT;
    let st = buf.stats();
    assert!(
        st.source_bytes <= requested_rounded,
        "{st:?} vs {requested_rounded}"
    );
    assert_eq!(
        st.source_bytes, st.filled_bytes,
        "a byte was fetched twice: {st:?}"
    );
    assert!(st.holes > 100, "{st:?}");
    assert!(st.segments_spilled > 0, "{st:?}");
    assert_eq!(
        buf.location(0, 1) == Location::BeforeIndex,
        segments.contains(&0)
    );
}

#[test]
fn readers_of_the_same_gap_share_one_fetch() {
    within(Duration::from_secs(60), || {
        let model = data(1 << 20, 2);
        let mut probe = Probe::new(model.clone());
        probe.delay = Duration::from_millis(20);
        let probe = Arc::new(probe);
        let buf = StreamBuffer::builder()
            .segment_size(16 << 10)
            .build_ranged(ProbeRef(probe.clone()))
            .unwrap();
        let barrier = Barrier::new(16);
        thread::scope(|s| {
            for t in 0..16u64 {
                let (buf, model, barrier) = (buf.clone(), &model, &barrier);
                s.spawn(move || {
                    barrier.wait();
                    let offset = 500_000 + t * 7;
                    let got = buf.read_range(offset..offset + 40_000).unwrap();
                    assert_eq!(got, expected(model, offset, 40_000));
                });
            }
        });
        let calls = probe.calls.lock().unwrap();
        assert!(
            calls.values().all(|&n| n == 1),
            "a segment was fetched twice: {calls:?}"
        );
        assert_eq!(buf.stats().source_bytes, buf.stats().filled_bytes);
    });
}

#[test]
fn fetches_of_different_gaps_run_concurrently_up_to_max_fetches() {
    within(Duration::from_secs(60), || {
        let model = data(4 << 20, 3);
        let mut probe = Probe::new(model.clone());
        probe.delay = Duration::from_millis(5);
        let probe = Arc::new(probe);
        let buf = StreamBuffer::builder()
            .segment_size(4096)
            .max_fetches(3)
            .build_ranged(ProbeRef(probe.clone()))
            .unwrap();
        thread::scope(|s| {
            for t in 0..12u64 {
                let (buf, model) = (buf.clone(), &model);
                s.spawn(move || {
                    let mut rng = Rng(t + 50);
                    for _ in 0..10 {
                        let offset = rng.below(4 << 20);
                        let got = buf.read_range(offset..offset + 5000).unwrap();
                        assert_eq!(got, expected(model, offset, 5000));
                    }
                });
            }
        });
        let max = probe.max_running.load(Ordering::SeqCst);
        assert!((2..=3).contains(&max), "max concurrent fetches {max}");
        assert_eq!(buf.stats().fetches_in_flight, 0);
    });
}

#[test]
fn source_failures_leave_holes_that_later_reads_retry() {
    let model = data(200_000, 4);
    let probe = Arc::new(Probe::new(model.clone()));
    let buf = StreamBuffer::builder()
        .segment_size(4096)
        .build_ranged(ProbeRef(probe.clone()))
        .unwrap();
    buf.read_range(0..10_000).unwrap();
    probe.fail_next.store(2, Ordering::SeqCst);
    let err = buf.read_range(100_000..110_000).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::ConnectionReset);
    assert_eq!(buf.location(100_000, 1), Location::AfterIndex);
    // Filled bytes are unaffected; the second failure is used up by the next try.
    assert_eq!(buf.read_range(0..10_000).unwrap(), model[..10_000]);
    assert!(buf.read_range(100_000..110_000).is_err());
    assert_eq!(
        buf.read_range(100_000..110_000).unwrap(),
        model[100_000..110_000]
    );
    // A panicking source is an error for that read, then a hole.
    probe.fail_next.store(usize::MAX, Ordering::SeqCst);
    let err = buf.read_range(150_000..150_010).unwrap_err();
    assert!(err.to_string().contains("panicked"), "{err}");
    assert_eq!(
        buf.read_range(150_000..150_010).unwrap(),
        model[150_000..150_010]
    );
    assert_eq!(buf.stats().fetches_in_flight, 0);
}

#[test]
fn an_unknown_length_is_found_at_the_end() {
    let model = data(100_000, 5);
    let buf = of_unknown_length(&model, 4096);
    assert_eq!(buf.len(), None);
    let mut dst = [0u8; 100];
    assert_eq!(buf.read_at(99_950, &mut dst).unwrap(), 50);
    assert_eq!(&dst[..50], &model[99_950..]);
    assert_eq!(buf.len(), Some(100_000));
    assert_eq!(buf.read_at(200_000, &mut dst).unwrap(), 0);
    assert_eq!(buf.fill_to_end().unwrap(), 100_000);
    assert_eq!(buf.read_range(0..u64::MAX).unwrap(), model);
    assert_eq!(buf.stats().holes, 0);
}

#[test]
fn far_reads_of_an_unknown_length_only_find_the_end() {
    // Once a panic: the slot table was a Vec grown up to the segment read.
    let model = data(10_000, 6);
    for far in [1u64 << 50, u64::MAX - 10, u64::MAX - 300_000] {
        let buf = of_unknown_length(&model, 256);
        let mut dst = [0u8; 10];
        assert_eq!(buf.read_at(far, &mut dst).unwrap(), 0, "at {far}");
        assert_eq!(buf.read_at(9_995, &mut dst).unwrap(), 5);
        assert_eq!(&dst[..5], &model[9_995..]);
        assert_eq!(buf.len(), Some(10_000));
        assert_eq!(buf.read_range(0..u64::MAX).unwrap(), model);
    }
}

#[test]
fn a_declared_length_beyond_the_source_is_an_error() {
    let model = data(10_000, 6);
    let mut probe = Probe::new(model.clone());
    probe.hide_len = true;
    let buf = StreamBuffer::builder()
        .segment_size(4096)
        .len(20_000)
        .build_ranged(probe)
        .unwrap();
    assert_eq!(buf.read_range(0..8192).unwrap(), model[..8192]);
    let err = buf.read_range(9_000..12_000).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
}

#[test]
fn seek_source_adapter_and_cursors() {
    let model = data(300_000, 7);
    let buf = StreamBuffer::builder()
        .segment_size(8192)
        .memory_budget(16 << 10)
        .build_ranged(SeekSource::new(io::Cursor::new(model.clone())))
        .unwrap();
    let mut r = buf.reader();
    r.seek(SeekFrom::Start(250_000)).unwrap();
    let mut tail = Vec::new();
    r.read_to_end(&mut tail).unwrap();
    assert_eq!(tail, model[250_000..]);
    assert_eq!(buf.stats().source_bytes, 300_000 - 245_760);
    assert_eq!(buf.wait_for(0..1000).unwrap(), 1000);
    assert_eq!(buf.stats().holes, 1);
    let dir = tempfile::tempdir().unwrap();
    buf.save(dir.path().join("all")).unwrap();
    assert_eq!(std::fs::read(dir.path().join("all")).unwrap(), model);
}

#[test]
fn max_fetches_zero_is_invalid_input() {
    let err = StreamBuffer::builder()
        .max_fetches(0)
        .build_ranged(Probe::new(vec![1, 2, 3]))
        .unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
}

/// Lets a test keep an `Arc` to the probe it hands over.
struct ProbeRef(Arc<Probe>);

impl RangeSource for ProbeRef {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read_at(offset, buf)
    }
    fn len(&self) -> Option<u64> {
        self.0.len()
    }
}

#[derive(Debug, Clone)]
enum Op {
    ReadAt(u64, usize),
    ReadRange(u64, u64),
    WaitFor(u64, u64),
    Cursor(u64, usize),
}

fn op(len: u64) -> impl Strategy<Value = Op> {
    let off = 0..len + 20_000;
    prop_oneof![
        (off.clone(), 0usize..70_000).prop_map(|(o, n)| Op::ReadAt(o, n)),
        (off.clone(), 0u64..70_000).prop_map(|(o, n)| Op::ReadRange(o, o + n)),
        (off.clone(), 0u64..70_000).prop_map(|(o, n)| Op::WaitFor(o, o + n)),
        (off, 1usize..70_000).prop_map(|(o, n)| Op::Cursor(o, n)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// Random reads with holes, tiny segments and budgets: exact bytes, no byte fetched twice.
    #[test]
    fn ranged_reads_match_the_model(
        (len, seed, shift, budget, fetches, hide, disk, streams, ops) in (0u64..400_000).prop_flat_map(|len| (
            Just(len), any::<u64>(), 8u32..=14, 0usize..4, 1usize..4, any::<bool>(),
            prop::option::of(0u64..6),
            // Streams: pieces of up to this many bytes, requests of up to this many segments
            // (0: open-ended), this many in flight.
            prop::option::of((1u64..5000, 0u64..6, 1usize..4)),
            prop::collection::vec(op(len), 1..20),
        ))
    ) {
        let model = data(len as usize, seed);
        let mut probe = Probe::new(model.clone());
        probe.hide_len = hide;
        probe.streams = streams.map(|(piece, _, _)| piece);
        let segment = 1usize << shift;
        let mut builder = StreamBuffer::builder()
            .segment_size(segment)
            .memory_budget(budget * segment)
            .max_fetches(fetches);
        if let Some((_, request, in_flight)) = streams {
            let max = if request == 0 { u64::MAX } else { request * segment as u64 };
            builder = builder.max_request(max).requests_in_flight(in_flight);
        }
        if let Some(disk) = disk {
            builder = builder.disk_budget(disk * segment as u64);
        }
        let buf = builder.build_ranged(probe).unwrap();
        for op in ops {
            match op {
                Op::ReadAt(o, n) => {
                    let mut dst = vec![0u8; n];
                    let got = buf.read_at(o, &mut dst).unwrap();
                    prop_assert_eq!(&dst[..got], expected(&model, o, n));
                }
                Op::ReadRange(a, b) => {
                    let got = buf.read_range(a..b).unwrap();
                    prop_assert_eq!(&got[..], expected(&model, a, (b - a) as usize));
                }
                Op::WaitFor(a, b) => {
                    let end = buf.wait_for(a..b).unwrap();
                    // A hidden length is known only as far as the fetches found it.
                    if buf.len() == Some(len) {
                        prop_assert_eq!(end, b.min(len));
                    } else {
                        prop_assert!(hide && end >= b.min(len) && end <= b);
                    }
                    // Without eviction, everything waited for stays.
                    if a < end && disk.is_none() {
                        prop_assert_eq!(buf.location(a, end - a), Location::BeforeIndex);
                    }
                }
                Op::Cursor(o, n) => {
                    let mut r = buf.reader();
                    r.seek(SeekFrom::Start(o)).unwrap();
                    let mut got = Vec::new();
                    (&mut r).take(n as u64).read_to_end(&mut got).unwrap();
                    prop_assert_eq!(&got[..], expected(&model, o, n));
                }
            }
            let st = buf.stats();
            if disk.is_none() {
                prop_assert_eq!(st.source_bytes, st.filled_bytes, "fetched twice: {:?}", st);
            } else {
                prop_assert!(st.spilled_bytes <= disk.unwrap_or(0) * segment as u64, "{:?}", st);
                prop_assert!(st.source_bytes <= st.filled_bytes + st.refetched_bytes + st.evictions * segment as u64);
            }
            prop_assert_eq!(st.fetches_in_flight, 0);
            // The budget (at least one segment), plus a spare buffer and, while they run, one
            // buffer per fetch (single-threaded here: at most one).
            prop_assert!(st.memory_bytes <= (budget * segment).max(segment) as u64 + 2 * segment as u64, "{:?}", st);
        }
        prop_assert_eq!(buf.read_range(0..u64::MAX).unwrap(), model);
    }
}

/// Regression (model test): a read far past the end of a source with no known length read
/// nothing at its segment, and that segment's offset was taken for the length, so later reads
/// below it failed with "ended early". Reading nothing only bounds the length.
#[test]
fn reading_nothing_past_the_end_only_bounds_the_length() {
    let model = data(13_142, 8);
    let buf = of_unknown_length(&model, 256);
    let mut dst = [0u8; 100];
    assert_eq!(buf.read_at(18_809, &mut dst).unwrap(), 0);
    assert_eq!(buf.len(), None);
    assert_eq!(buf.read_at(13_100, &mut dst).unwrap(), 42);
    assert_eq!(&dst[..42], &model[13_100..]);
    assert_eq!(buf.len(), Some(13_142));
    assert_eq!(buf.read_range(0..20_000).unwrap(), model);
}

/// A source that answers a run of segments with one vectored read, and logs each call.
struct Runs {
    data: Vec<u8>,
    calls: Mutex<Vec<(u64, usize)>>,
}

impl RangeSource for Runs {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        self.read_vectored_at(offset, &mut [buf])
    }
    fn read_vectored_at(&self, offset: u64, bufs: &mut [&mut [u8]]) -> io::Result<usize> {
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        self.calls.lock().unwrap().push((offset, total));
        let mut at = (offset as usize).min(self.data.len());
        let start = at;
        for buf in bufs.iter_mut() {
            let n = buf.len().min(self.data.len() - at);
            buf[..n].copy_from_slice(&self.data[at..at + n]);
            at += n;
        }
        Ok(at - start)
    }
    fn len(&self) -> Option<u64> {
        Some(self.data.len() as u64)
    }
}

struct RunsRef(Arc<Runs>);

impl RangeSource for RunsRef {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read_at(offset, buf)
    }
    fn read_vectored_at(&self, offset: u64, bufs: &mut [&mut [u8]]) -> io::Result<usize> {
        self.0.read_vectored_at(offset, bufs)
    }
    fn len(&self) -> Option<u64> {
        self.0.len()
    }
}

#[test]
fn adjacent_missing_segments_of_one_read_are_fetched_with_one_call() {
    const SEGMENT: usize = 4096;
    let model = data(1 << 20, 77);
    let runs = Arc::new(Runs {
        data: model.clone(),
        calls: Mutex::new(Vec::new()),
    });
    let buf = StreamBuffer::builder()
        .segment_size(SEGMENT)
        .memory_budget(64 * SEGMENT)
        .build_ranged(RunsRef(runs.clone()))
        .unwrap();
    // Eight missing segments, then a read that straddles a filled one and two holes.
    let mut dst = vec![0u8; 8 * SEGMENT];
    buf.read_exact_at(3 * SEGMENT as u64 + 10, &mut dst[..7 * SEGMENT])
        .unwrap();
    assert!(dst[..7 * SEGMENT] == model[3 * SEGMENT + 10..][..7 * SEGMENT]);
    assert_eq!(
        *runs.calls.lock().unwrap(),
        vec![(3 * SEGMENT as u64, 8 * SEGMENT)]
    );
    runs.calls.lock().unwrap().clear();
    buf.read_exact_at(SEGMENT as u64, &mut dst[..3 * SEGMENT])
        .unwrap();
    assert!(dst[..3 * SEGMENT] == model[SEGMENT..][..3 * SEGMENT]);
    assert_eq!(
        *runs.calls.lock().unwrap(),
        vec![(SEGMENT as u64, 2 * SEGMENT)]
    );
    // A file source reads its runs with preadv: the same bytes.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f");
    std::fs::write(&path, &model).unwrap();
    let file = StreamBuffer::builder()
        .segment_size(SEGMENT)
        .build_ranged(std::fs::File::open(&path).unwrap())
        .unwrap();
    let mut all = vec![0u8; model.len() + 10];
    assert_eq!(file.read_at(5, &mut all).unwrap(), model.len() - 5);
    assert!(all[..model.len() - 5] == model[5..]);
}
