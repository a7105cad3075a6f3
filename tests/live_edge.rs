//! Joining a live stream at its live edge: `window_start` says where the kept bytes begin and
//! `reader_at` opens a cursor there.

mod common;

use std::io::{self, Read, Seek, SeekFrom};

use common::{check_generated, Generated};
use sparsebuf::{Error, StreamBuffer};

const SEGMENT: usize = 4096;
const WINDOW: u64 = 16 * 4096;

fn live(seed: u64, len: u64) -> StreamBuffer {
    StreamBuffer::builder()
        .segment_size(SEGMENT)
        .memory_budget(4 * SEGMENT)
        .window(WINDOW)
        .build(Generated {
            seed,
            pos: 0,
            len,
            max_read: 1000,
        })
        .unwrap()
}

#[test]
fn a_late_cursor_joins_at_the_window_start() {
    let (seed, len) = (71, 1 << 20);
    let buf = live(seed, len);
    assert_eq!(buf.window_start(), 0);
    // Move the stream on: the window drops its oldest segments.
    assert_eq!(buf.wait_for(299_000..300_000).unwrap(), 300_000);
    let start = buf.window_start();
    assert!(start > 0 && start % SEGMENT as u64 == 0, "{start}");
    assert!(start + WINDOW >= 300_000 - SEGMENT as u64, "{start}");

    // A cursor from 0 finds its bytes gone, and says where the kept ones begin.
    let err = buf.reader().read(&mut [0u8; 10]).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    match err.get_ref().and_then(|e| e.downcast_ref::<Error>()) {
        Some(Error::BehindWindow { window_start, .. }) => assert!(*window_start >= start),
        other => panic!("{other:?}"),
    }

    // A cursor at the window start reads on to the end of the stream, every byte right.
    let mut late = buf.reader_at(buf.window_start());
    let from = late.position();
    assert!(from >= start);
    let mut rest = Vec::new();
    late.read_to_end(&mut rest).unwrap();
    assert_eq!(from + rest.len() as u64, len);
    check_generated(seed, from, &rest);
    assert!(buf.window_start() > start);
}

#[test]
fn reader_at_is_a_cursor_at_that_offset() {
    let (seed, len) = (72, 100_000);
    let buf = live(seed, len);
    let mut r = buf.reader_at(12_345);
    assert_eq!(r.position(), 12_345);
    assert_eq!(r.stream_position().unwrap(), 12_345);
    let mut got = [0u8; 5000];
    r.read_exact(&mut got).unwrap();
    check_generated(seed, 12_345, &got);
    // It seeks like any cursor.
    r.seek(SeekFrom::Start(20_000)).unwrap();
    r.read_exact(&mut got).unwrap();
    check_generated(seed, 20_000, &got);
    // Past the end: reads return 0, as for files.
    let mut past = buf.reader_at(len + 10);
    assert_eq!(past.read(&mut got).unwrap(), 0);
}

/// The writer of a windowed stream waits for a cursor that `reader_at` made: it holds its
/// offset from the start, not offset 0.
#[test]
fn a_cursor_made_at_an_offset_holds_that_offset() {
    let (seed, len) = (73, 400_000);
    let buf = StreamBuffer::builder()
        .segment_size(SEGMENT)
        .memory_budget(2 * SEGMENT)
        .disk_budget(2 * SEGMENT as u64)
        .window(1 << 30)
        .build(Generated {
            seed,
            pos: 0,
            len,
            max_read: 1000,
        })
        .unwrap();
    let at = 100_000;
    let cursor = buf.reader_at(at);
    // Another thread pulls past the budgets: the segments before the cursor may go, its own not.
    let other = buf.clone();
    let far = std::thread::spawn(move || {
        let mut dst = [0u8; 100];
        other
            .read_exact_at(at + 2 * SEGMENT as u64, &mut dst)
            .map(|()| dst)
    });
    let got = far.join().unwrap().unwrap();
    check_generated(seed, at + 2 * SEGMENT as u64, &got);
    assert!(buf.window_start() <= at, "{}", buf.window_start());
    let mut cursor = cursor;
    let mut first = [0u8; 4096];
    cursor.read_exact(&mut first).unwrap();
    check_generated(seed, at, &first);
}

#[test]
fn without_a_window_the_start_is_zero() {
    let buf = StreamBuffer::new(io::repeat(3).take(100_000));
    buf.fill_to_end().unwrap();
    assert_eq!(buf.window_start(), 0);
    let mut r = buf.reader_at(99_990);
    let mut tail = Vec::new();
    r.read_to_end(&mut tail).unwrap();
    assert_eq!(tail, vec![3u8; 10]);
}
