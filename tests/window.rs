//! A bounded window for live streams: old segments are dropped as the stream advances, reads
//! behind the window are a clear error, reads inside it return the right bytes.

mod common;

use std::io::{self, BufRead, Read, Seek, SeekFrom};
use std::thread;
use std::time::{Duration, Instant};

use common::window_model::inner_error;
use common::{check_generated, data, expected, within, Generated, Rng};
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

// ---- Budgets smaller than the window: the window shrinks, but never under a reader ----

const BIG_WINDOW: u64 = 1 << 40;

/// A live stream whose window is larger than its budgets: `ram` segments of RAM, `disk` on disk.
fn squeezed(len: u64, ram: usize, disk: u64) -> StreamBuffer {
    StreamBuffer::builder()
        .segment_size(SEGMENT)
        .memory_budget(ram * SEGMENT)
        .disk_budget(disk * SEGMENT as u64)
        .window(BIG_WINDOW)
        .build(Generated {
            seed: 11,
            pos: 0,
            len,
            max_read: 7_000,
        })
        .unwrap()
}

/// The budgets hold: at most the RAM budget plus the segment being filled and one spare buffer,
/// and never more than the disk budget in the spill file.
fn assert_within_budgets(buf: &StreamBuffer, ram: usize, disk: u64) {
    let st = buf.stats();
    assert!(
        st.memory_bytes <= (ram + 2) as u64 * SEGMENT as u64,
        "RAM over budget: {st:?}"
    );
    assert!(
        st.spilled_bytes <= disk * SEGMENT as u64,
        "disk over budget: {st:?}"
    );
}

#[test]
fn without_readers_full_budgets_shrink_the_window() {
    let (ram, disk) = (3, 5);
    let buf = squeezed(4 << 20, ram, disk);
    let mut dst = vec![0u8; 40_000];
    let mut offset = 0;
    while offset < 4 << 20 {
        let n = buf.read_at(offset, &mut dst).unwrap();
        check_generated(11, offset, &dst[..n]);
        assert_within_budgets(&buf, ram, disk);
        offset += n as u64;
    }
    let st = buf.stats();
    assert_eq!(st.writer_waits, 0, "nobody held anything: {st:?}");
    assert!(st.evictions > 200, "{st:?}");
    // What the budgets could not keep is behind the window now.
    let err = buf.read_at(0, &mut [0u8; 1]).unwrap_err();
    assert!(
        matches!(
            inner_error(&err),
            Some(Error::BehindWindow { offset: 0, .. })
        ),
        "{err}"
    );
    // The last few segments are still there.
    let mut tail = vec![0u8; 2 * SEGMENT];
    buf.read_exact_at((4 << 20) - tail.len() as u64, &mut tail)
        .unwrap();
    check_generated(11, (4 << 20) - tail.len() as u64, &tail);
}

#[test]
fn a_slow_cursor_makes_the_writer_wait_instead_of_losing_its_bytes() {
    let (ram, disk) = (2, 3);
    let len = 3 << 20;
    let buf = squeezed(len, ram, disk);
    let cursor = buf.reader();
    let watched = buf.clone();
    within(Duration::from_secs(60), move || {
        thread::scope(|s| {
            // A reader far ahead: it drives the writer, which must wait for the cursor.
            let ahead = watched.clone();
            s.spawn(move || {
                let mut dst = vec![0u8; 30_000];
                let mut offset = len / 2;
                while offset < len {
                    let n = ahead.read_at(offset, &mut dst).unwrap();
                    check_generated(11, offset, &dst[..n]);
                    offset += n as u64;
                }
            });
            // The cursor reads every byte, slowly, and never finds one dropped.
            s.spawn(move || {
                let mut cursor = cursor;
                let mut chunk = vec![0u8; 20_000];
                let mut pos = 0;
                loop {
                    let n = cursor.read(&mut chunk).unwrap();
                    if n == 0 {
                        break;
                    }
                    check_generated(11, pos, &chunk[..n]);
                    pos += n as u64;
                    thread::sleep(Duration::from_micros(200));
                }
                assert_eq!(pos, len);
            });
            // Meanwhile the budgets hold.
            while watched.len().is_none() {
                assert_within_budgets(&watched, ram, disk);
                thread::sleep(Duration::from_millis(1));
            }
        });
        let st = watched.stats();
        assert!(st.writer_waits > 0, "the writer never waited: {st:?}");
        assert_within_budgets(&watched, ram, disk);
    });
}

#[test]
fn a_thread_never_waits_for_its_own_cursor() {
    let (ram, disk) = (2, 2);
    let buf = squeezed(2 << 20, ram, disk);
    within(Duration::from_secs(30), move || {
        let mut idle = buf.reader();
        let mut head = [0u8; 100];
        idle.read_exact(&mut head).unwrap();
        check_generated(11, 0, &head);
        // The cursor buffered its first 8 KiB: it needs the buffer again from there.
        let held_at = idle.position() + idle.fill_buf().unwrap().len() as u64;
        let far = 20 * SEGMENT as u64;
        let err = buf.read_at(far, &mut [0u8; 10]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        match inner_error(&err) {
            Some(Error::WindowFull { needed, held }) => {
                assert_eq!(*held, held_at, "{err}");
                assert!(*needed > far, "{err}");
            }
            other => panic!("expected WindowFull, got {other:?}: {err}"),
        }
        // The cursor itself may go anywhere: its hold moves with it.
        idle.seek(SeekFrom::Start(far)).unwrap();
        let mut dst = [0u8; 10];
        idle.read_exact(&mut dst).unwrap();
        check_generated(11, far, &dst);
        // Once the cursor is gone, nothing holds the window back.
        drop(idle);
        let mut dst = vec![0u8; 3 * SEGMENT];
        buf.read_exact_at(2 * far, &mut dst).unwrap();
        check_generated(11, 2 * far, &dst);
        assert_within_budgets(&buf, ram, disk);
    });
}

#[test]
fn dropping_a_cursor_releases_a_waiting_writer() {
    let (ram, disk) = (2, 0);
    let buf = squeezed(1 << 20, ram, disk);
    let cursor = buf.reader(); // held at 0, by this thread
    let reader = buf.clone();
    let far = thread::spawn(move || {
        let mut dst = vec![0u8; 1000];
        reader.read_exact_at(10 * SEGMENT as u64, &mut dst).unwrap();
        check_generated(11, 10 * SEGMENT as u64, &dst);
    });
    // Wait (bounded) until the other thread's writer is stuck behind the cursor.
    let deadline = Instant::now() + Duration::from_secs(30);
    while buf.stats().writer_waits == 0 {
        assert!(Instant::now() < deadline, "the writer never waited");
        thread::sleep(Duration::from_millis(1));
    }
    assert!(!far.is_finished());
    drop(cursor);
    within(Duration::from_secs(30), move || far.join().unwrap());
    assert_within_budgets(&buf, ram, disk);
}

#[test]
fn a_read_larger_than_the_budgets_completes_piece_by_piece() {
    let (ram, disk) = (2, 2);
    let buf = squeezed(2 << 20, ram, disk);
    let mut dst = vec![0u8; 30 * SEGMENT];
    within(Duration::from_secs(30), move || {
        buf.read_exact_at(5000, &mut dst).unwrap();
        check_generated(11, 5000, &dst);
        assert_within_budgets(&buf, ram, disk);
        // Waiting for such a range cannot work: it must all be kept at once.
        let err = buf
            .wait_for(1 << 20..(1 << 20) + 30 * SEGMENT as u64)
            .unwrap_err();
        assert!(
            matches!(inner_error(&err), Some(Error::WindowFull { held, .. }) if *held == 1 << 20),
            "{err}"
        );
        // A range that fits is fine.
        let got = buf
            .read_range(1 << 20..(1 << 20) + 2 * SEGMENT as u64)
            .unwrap();
        check_generated(11, 1 << 20, &got);
    });
}

// ---- Model test: random windows, budgets and operations, single-threaded ----

mod model {
    use super::common::window_model::{run_window_model, WindowOp, WindowSetup};
    use proptest::prelude::*;

    fn setup() -> impl Strategy<Value = WindowSetup> {
        (
            0u64..200_000,
            any::<u64>(),
            8u32..=12,
            0usize..=4,
            0u64..=4,
            prop::option::of(0u64..=12),
            1usize..20_000,
            any::<bool>(),
        )
            .prop_map(
                |(len, seed, segment_shift, ram, disk, window, max_read, push)| WindowSetup {
                    len,
                    seed,
                    segment_shift,
                    ram,
                    disk,
                    window,
                    max_read,
                    push,
                },
            )
    }

    fn op(len: u64) -> impl Strategy<Value = WindowOp> {
        let offset = 0..=len + 5_000;
        prop_oneof![
            3 => (offset.clone(), 0usize..30_000).prop_map(|(offset, len)| WindowOp::ReadAt { offset, len }),
            1 => (offset.clone(), 0u64..20_000).prop_map(|(offset, len)| WindowOp::WaitFor { offset, len }),
            6 => (0usize..4, 0usize..20_000).prop_map(|(cursor, len)| WindowOp::CursorRead { cursor, len }),
            1 => (0usize..4, offset).prop_map(|(cursor, to)| WindowOp::Seek { cursor, to }),
            1 => Just(WindowOp::NewCursor),
            1 => (0usize..4).prop_map(|cursor| WindowOp::DropCursor { cursor }),
            4 => (0usize..30_000).prop_map(|len| WindowOp::Push { len }),
            1 => (1usize..20_000, any::<bool>(), any::<bool>(), any::<bool>()).prop_map(
                |(chunk, clip, inline, lagging)| WindowOp::StartConsumer { chunk, clip, inline, lagging }
            ),
            1 => (0usize..3).prop_map(|consumer| WindowOp::StopConsumer { consumer }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 384, ..ProptestConfig::default() })]

        #[test]
        fn windowed_operations_match_the_model(
            (s, ops) in setup().prop_flat_map(|s| {
                let ops = prop::collection::vec(op(s.len), 1..24);
                (Just(s), ops)
            })
        ) {
            run_window_model(&s, &ops);
        }
    }
}

#[test]
fn a_cursor_moved_to_another_thread_belongs_to_it_once_used_there() {
    let (ram, disk) = (2, 1);
    let buf = squeezed(1 << 20, ram, disk);
    let cursor = buf.reader(); // created here: this thread's until used elsewhere
    let (used, used_rx) = std::sync::mpsc::channel();
    let watched = buf.clone();
    let reader = thread::spawn(move || {
        let mut cursor = cursor;
        let mut dst = vec![0u8; 1000];
        cursor.read_exact(&mut dst).unwrap();
        check_generated(11, 0, &dst);
        used.send(()).unwrap();
        // Let the main thread block behind this cursor, then read on.
        let deadline = Instant::now() + Duration::from_secs(30);
        while watched.stats().writer_waits == 0 {
            assert!(Instant::now() < deadline, "the writer never waited");
            thread::sleep(Duration::from_millis(1));
        }
        let mut rest = Vec::new();
        cursor.read_to_end(&mut rest).unwrap();
        check_generated(11, 1000, &rest);
        assert_eq!(rest.len(), (1 << 20) - 1000);
    });
    used_rx.recv().unwrap();
    within(Duration::from_secs(30), move || {
        // Not this thread's cursor any more: this read waits for it instead of failing.
        let mut dst = vec![0u8; 100];
        let far = 10 * SEGMENT as u64;
        buf.read_exact_at(far, &mut dst).unwrap();
        check_generated(11, far, &dst);
        reader.join().unwrap();
        let st = buf.stats();
        assert!(st.writer_waits > 0, "{st:?}");
        assert_eq!(st.holes, 0, "the dropped start is not a hole: {st:?}");
    });
}
