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
