//! A bounded window for live streams: old segments are dropped as the stream advances, reads
//! behind the window are a clear error, reads inside it return the right bytes.

mod common;

use std::io::{self, Read};

use common::{check_generated, data, expected, Generated, Rng};
use sparsebuf::{Error, StreamBuffer};

const SEGMENT: usize = 16 << 10;
const WINDOW: u64 = 512 << 10;

fn live(len: u64) -> StreamBuffer {
    StreamBuffer::builder()
        .segment_size(SEGMENT)
        .memory_budget(4 * SEGMENT)
        .window(WINDOW)
        .build(Generated {
            seed: 7,
            pos: 0,
            len,
            max_read: 10_000,
        })
        .unwrap()
}

#[test]
fn a_long_stream_keeps_only_its_window() {
    let buf = live(8 << 20);
    let mut r = buf.reader();
    let mut chunk = vec![0u8; 50_000];
    let mut pos = 0u64;
    loop {
        let n = r.read(&mut chunk).unwrap();
        if n == 0 {
            break;
        }
        check_generated(7, pos, &chunk[..n]);
        pos += n as u64;
        let st = buf.stats();
        assert!(
            st.filled_bytes <= WINDOW + 2 * SEGMENT as u64,
            "at {pos}: {st:?}"
        );
        assert!(st.spilled_bytes <= WINDOW, "at {pos}: {st:?}");
        assert!(st.memory_bytes <= 6 * SEGMENT as u64, "at {pos}: {st:?}");
    }
    assert_eq!(pos, 8 << 20);
    assert!(buf.stats().evictions > 400);
}

#[test]
fn reads_behind_the_window_are_an_error_and_inside_it_work() {
    let buf = live(4 << 20);
    buf.read_exact_at((2 << 20) - 10, &mut [0u8; 10]).unwrap();
    let err = buf.read_at(0, &mut [0u8; 10]).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    let inner = err.get_ref().and_then(|e| e.downcast_ref::<Error>());
    assert!(
        matches!(inner, Some(Error::BehindWindow { offset: 0, window_start }) if *window_start > 1 << 20),
        "{err}"
    );
    // Inside the window, from any thread, at random.
    let mut rng = Rng(3);
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut dst = vec![0u8; 5000];
            for _ in 0..100 {
                let offset = (2 << 20) - 400_000 + rng.below(300_000);
                buf.read_exact_at(offset, &mut dst).unwrap();
                check_generated(7, offset, &dst);
            }
        });
    });
    // A cursor behind the window fails the same way.
    let mut r = buf.reader();
    assert_eq!(
        r.read(&mut [0u8; 4]).unwrap_err().kind(),
        io::ErrorKind::InvalidInput
    );
    // Saving needs the start.
    let dir = tempfile::tempdir().unwrap();
    let err = buf.save(dir.path().join("x")).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    assert!(!dir.path().join("x").exists());
}

#[test]
fn a_window_larger_than_the_stream_changes_nothing() {
    let model = data(300_000, 9);
    let buf = StreamBuffer::builder()
        .segment_size(SEGMENT)
        .window(1 << 30)
        .build(io::Cursor::new(model.clone()))
        .unwrap();
    assert_eq!(buf.read_range(0..u64::MAX).unwrap(), model);
    assert_eq!(buf.stats().evictions, 0);
    assert_eq!(&buf.read_range(5..10).unwrap()[..], expected(&model, 5, 5));
}
