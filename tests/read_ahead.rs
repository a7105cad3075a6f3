//! Read-ahead and prefetch: a background worker fills after the latest read (or a requested
//! range), for streams and range sources; a far seek moves it; dropping the buffer ends it.

mod common;

use std::io::{self, Read, Seek, SeekFrom, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::{data, expected, Scripted};
use sparsebuf::{Location, RangeSource, StreamBuffer};

/// Polls `done` for up to 20 s.
fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "never happened: {what}"
        );
        thread::sleep(Duration::from_millis(2));
    }
}

/// A file-backed range source with a delay per call, that records being dropped.
struct Slow {
    file: std::fs::File,
    delay: Duration,
    dropped: Arc<AtomicBool>,
}

impl RangeSource for Slow {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        thread::sleep(self.delay);
        std::os::unix::fs::FileExt::read_at(&self.file, buf, offset)
    }
    fn len(&self) -> Option<u64> {
        self.file.metadata().ok().map(|m| m.len())
    }
}

impl Drop for Slow {
    fn drop(&mut self) {
        self.dropped.store(true, Ordering::SeqCst);
    }
}

fn slow_file(model: &[u8], delay: Duration) -> (Slow, Arc<AtomicBool>) {
    let mut file = tempfile::tempfile().unwrap();
    file.write_all(model).unwrap();
    let dropped = Arc::new(AtomicBool::new(false));
    (
        Slow {
            file,
            delay,
            dropped: dropped.clone(),
        },
        dropped,
    )
}

#[test]
fn a_range_source_fills_ahead_of_sequential_reads() {
    let model = data(4 << 20, 1);
    let (source, _) = slow_file(&model, Duration::from_millis(1));
    let buf = StreamBuffer::builder()
        .segment_size(16 << 10)
        .read_ahead(256 << 10)
        .build_ranged(source)
        .unwrap();
    let mut r = buf.reader();
    let mut chunk = vec![0u8; 32 << 10];
    let mut pos = 0;
    while pos < (2 << 20) {
        let n = r.read(&mut chunk).unwrap();
        assert_eq!(&chunk[..n], &model[pos..pos + n]);
        pos += n;
    }
    eventually("read-ahead past the reader", || {
        buf.location(2 << 20, 200 << 10) == Location::BeforeIndex
    });
    let st = buf.stats();
    assert!(st.read_ahead_hits > 0, "{st:?}");
    assert_eq!(st.source_bytes, st.filled_bytes, "{st:?}");
}

#[test]
fn a_far_seek_restarts_read_ahead_there() {
    let model = data(8 << 20, 2);
    let (source, _) = slow_file(&model, Duration::ZERO);
    let buf = StreamBuffer::builder()
        .segment_size(16 << 10)
        .read_ahead(128 << 10)
        .build_ranged(source)
        .unwrap();
    let mut r = buf.reader();
    r.seek(SeekFrom::Start(6 << 20)).unwrap();
    let mut b = [0u8; 100];
    r.read_exact(&mut b).unwrap();
    assert_eq!(b, model[6 << 20..(6 << 20) + 100]);
    eventually("read-ahead at the new position", || {
        buf.location((6 << 20) + 100, 100 << 10) == Location::BeforeIndex
    });
    assert_eq!(
        buf.location(0, 1),
        Location::AtIndex,
        "nothing fetched at the start"
    );
}

#[test]
fn a_stream_buffers_ahead_of_its_readers() {
    let model = data(1 << 20, 3);
    let buf = StreamBuffer::builder()
        .segment_size(16 << 10)
        .read_ahead(300_000)
        .build(Scripted::new(model.clone(), 8192).delay(Duration::from_micros(100)))
        .unwrap();
    let mut first = [0u8; 1000];
    buf.read_exact_at(0, &mut first).unwrap();
    assert_eq!(first, model[..1000]);
    eventually("the writer pulls ahead", || {
        buf.stats().filled_bytes >= 301_000
    });
    let got = buf.read_range(0..u64::MAX).unwrap();
    assert_eq!(got, model);
}

#[test]
fn prefetch_fills_in_the_background() {
    let model = data(2 << 20, 4);
    let (source, _) = slow_file(&model, Duration::ZERO);
    let buf = StreamBuffer::builder()
        .segment_size(16 << 10)
        .build_ranged(source)
        .unwrap();
    buf.prefetch(1 << 20..(1 << 20) + (256 << 10));
    eventually("prefetched", || {
        buf.location(1 << 20, 256 << 10) == Location::BeforeIndex
    });
    assert_eq!(buf.stats().source_bytes, 256 << 10);
    assert_eq!(
        buf.read_range(1 << 20..(1 << 20) + 1000).unwrap(),
        expected(&model, 1 << 20, 1000)
    );
    assert!(buf.stats().read_ahead_hits >= 1);
    // An empty or reversed range is nothing to do.
    #[allow(clippy::reversed_empty_ranges)]
    buf.prefetch(10..5);
}

#[test]
fn dropping_the_buffer_ends_the_worker_and_frees_the_source() {
    let model = data(1 << 20, 5);
    let (source, dropped) = slow_file(&model, Duration::from_millis(1));
    let buf = StreamBuffer::builder()
        .segment_size(16 << 10)
        .read_ahead(512 << 10)
        .build_ranged(source)
        .unwrap();
    buf.read_exact_at(0, &mut [0u8; 10]).unwrap();
    drop(buf);
    eventually("the source is dropped", || dropped.load(Ordering::SeqCst));
}

/// A range source over a model that counts its calls and records being dropped.
struct Counted {
    data: Vec<u8>,
    delay: Duration,
    calls: Arc<std::sync::atomic::AtomicUsize>,
    dropped: Arc<AtomicBool>,
}

impl RangeSource for Counted {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        thread::sleep(self.delay);
        let got = expected(&self.data, offset, buf.len());
        buf[..got.len()].copy_from_slice(got);
        Ok(got.len())
    }
    fn len(&self) -> Option<u64> {
        Some(self.data.len() as u64)
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.dropped.store(true, Ordering::SeqCst);
    }
}

/// After the last handle was dropped, the worker went on pulling its whole range (3.5 s for
/// 1 MiB at 300 KB/s), holding the source. Now it stops within the segment it is fetching.
#[test]
fn the_worker_lets_go_of_the_source_within_a_segment_of_the_last_drop() {
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let dropped = Arc::new(AtomicBool::new(false));
    let source = Counted {
        data: data(4 << 20, 6),
        delay: Duration::from_millis(20),
        calls: calls.clone(),
        dropped: dropped.clone(),
    };
    let buf = StreamBuffer::builder()
        .segment_size(16 << 10)
        .read_ahead(2 << 20)
        .build_ranged(source)
        .unwrap();
    let mut r = buf.reader();
    r.read_exact(&mut [0u8; 10]).unwrap();
    drop(buf);
    eventually("read-ahead under way", || calls.load(Ordering::SeqCst) >= 3);
    drop(r);
    let at_drop = calls.load(Ordering::SeqCst);
    eventually("the source is dropped", || dropped.load(Ordering::SeqCst));
    let after = calls.load(Ordering::SeqCst) - at_drop;
    // One segment is one call here: at most the one that was running.
    assert!(
        after <= 1,
        "{after} source calls after the last handle went"
    );
}

/// A stream whose reads count, and which records being dropped.
struct Trickle {
    inner: Scripted,
    reads: Arc<std::sync::atomic::AtomicUsize>,
    dropped: Arc<AtomicBool>,
}

impl Read for Trickle {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        self.inner.read(buf)
    }
}

impl Drop for Trickle {
    fn drop(&mut self) {
        self.dropped.store(true, Ordering::SeqCst);
    }
}

#[test]
fn a_streams_worker_stops_pulling_within_a_segment_of_the_last_drop() {
    let reads = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let dropped = Arc::new(AtomicBool::new(false));
    let source = Trickle {
        inner: Scripted::new(data(4 << 20, 7), 4096).delay(Duration::from_millis(5)),
        reads: reads.clone(),
        dropped: dropped.clone(),
    };
    let buf = StreamBuffer::builder()
        .segment_size(16 << 10)
        .read_ahead(2 << 20)
        .build(source)
        .unwrap();
    buf.read_exact_at(0, &mut [0u8; 10]).unwrap();
    eventually("read-ahead under way", || reads.load(Ordering::SeqCst) >= 8);
    let at_drop = reads.load(Ordering::SeqCst);
    drop(buf);
    eventually("the source is dropped", || dropped.load(Ordering::SeqCst));
    let after = reads.load(Ordering::SeqCst) - at_drop;
    // A segment is four reads of 4 KiB; the one under way may end after the drop.
    assert!(
        after <= 5,
        "{after} source reads after the last handle went"
    );
}

/// Read-ahead larger than the budgets fetched, evicted and fetched again: 7.9 GB pulled from a
/// 16 MiB file in 6 s. Now it reaches only as far as the budgets keep, never evicts what it
/// fetched before it was read, and a sequential reader fetches nothing twice.
#[test]
fn read_ahead_past_tiny_budgets_fetches_nothing_twice() {
    let model = data(2 << 20, 8);
    for (ram, disk, piece) in [(2, 2, 1000), (5, 0, 4096), (0, 5, 700), (1, 1, 5000)] {
        // Slow enough that the worker, not the reader, fetches most segments.
        let (source, _) = slow_file(&model, Duration::from_micros(200));
        let segment = 4096;
        let buf = StreamBuffer::builder()
            .segment_size(segment)
            .memory_budget(ram * segment)
            .disk_budget((disk * segment) as u64)
            .read_ahead(1 << 20)
            .build_ranged(source)
            .unwrap();
        let mut r = buf.reader();
        let mut chunk = vec![0u8; piece];
        let mut pos = 0;
        loop {
            let n = r.read(&mut chunk).unwrap();
            if n == 0 {
                break;
            }
            assert_eq!(chunk[..n], model[pos..pos + n]);
            pos += n;
            if pos == n && ram + disk > 3 {
                // However busy the machine, let the worker get ahead once.
                eventually("read-ahead under way", || buf.stats().read_ahead_bytes > 0);
            }
        }
        assert_eq!(pos, model.len());
        let st = buf.stats();
        let setup = format!("ram {ram} disk {disk} piece {piece}: {st:?}");
        assert_eq!(st.refetched_bytes, 0, "{setup}");
        assert!(st.source_bytes <= model.len() as u64, "{setup}");
        if ram + disk > 3 {
            assert!(st.read_ahead_bytes > 0 && st.read_ahead_hits > 0, "{setup}");
        } else {
            // Budgets of two segments keep nothing beyond the reader's: no read-ahead.
            assert_eq!(st.read_ahead_bytes, 0, "{setup}");
        }
    }
}
