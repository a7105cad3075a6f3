//! Push mode: a `Writer` produces, readers only wait. Every test compares with the bytes that
//! were pushed.

mod common;

use std::io::{self, Read, Seek, SeekFrom, Write};
use std::thread;
use std::time::Duration;

use common::{data, expected, within, Rng};
use sparsebuf::{Error, StreamBuffer};

const SEGMENT: usize = 4096;

/// Pushes `model` in writes of random sizes (up to `max_write`).
fn push_all(writer: &mut sparsebuf::Writer, model: &[u8], seed: u64, max_write: u64) {
    let mut rng = Rng(seed);
    let mut at = 0;
    while at < model.len() {
        let n = (1 + rng.below(max_write) as usize).min(model.len() - at);
        writer.write_all(&model[at..at + n]).unwrap();
        at += n;
    }
}

#[test]
fn pushed_bytes_read_back_exactly_from_many_threads_while_spilling() {
    let model = data(3 << 20, 101);
    let dir = tempfile::tempdir().unwrap();
    let (mut writer, buf) = StreamBuffer::builder()
        .segment_size(SEGMENT)
        .memory_budget(8 * SEGMENT)
        .spill_dir(dir.path())
        .build_push()
        .unwrap();
    let total = model.len() as u64;
    within(Duration::from_secs(120), move || {
        thread::scope(|s| {
            for t in 0..3u64 {
                let (buf, model) = (buf.clone(), &model);
                s.spawn(move || {
                    let mut rng = Rng(t);
                    for _ in 0..200 {
                        let offset = rng.below(total + 1000);
                        let len = rng.below(30_000) as usize;
                        let mut dst = vec![0u8; len];
                        // Waits for the writer (or the end) as needed.
                        let n = buf.read_at(offset, &mut dst).unwrap();
                        assert_eq!(&dst[..n], expected(model, offset, len));
                    }
                });
            }
            let cursor = {
                let buf = buf.clone();
                s.spawn(move || {
                    let mut all = Vec::new();
                    buf.reader().read_to_end(&mut all).unwrap();
                    all
                })
            };
            push_all(&mut writer, &model, 7, 20_000);
            assert_eq!(writer.position(), total);
            assert_eq!(writer.finish().unwrap(), total);
            assert!(cursor.join().unwrap() == model);
        });
        let st = buf.stats();
        assert_eq!(st.source_bytes, total, "{st:?}");
        assert!(st.segments_spilled > 0, "{st:?}");
        assert!(st.memory_bytes <= 10 * SEGMENT as u64, "{st:?}");
        assert_eq!(buf.len(), Some(total));
        let path = dir.path().join("pushed.bin");
        assert_eq!(buf.save(&path).unwrap(), total);
        assert!(std::fs::read(&path).unwrap() == model);
    });
}

#[test]
fn readers_wait_for_slow_writes_and_see_each_write_when_it_returns() {
    let model = data(100_000, 102);
    let (mut writer, buf) = StreamBuffer::builder()
        .segment_size(SEGMENT)
        .build_push()
        .unwrap();
    let reader = {
        let buf = buf.clone();
        thread::spawn(move || {
            let mut r = buf.reader();
            let mut all = Vec::new();
            r.read_to_end(&mut all).unwrap();
            all
        })
    };
    for (i, chunk) in model.chunks(7_000).enumerate() {
        writer.write_all(chunk).unwrap();
        let end = ((i + 1) * 7_000).min(model.len()) as u64;
        // Published when `write` returns: readable at once, without waiting.
        assert_eq!(
            buf.read_range(end - 10..end).unwrap(),
            &model[end as usize - 10..end as usize]
        );
        thread::sleep(Duration::from_millis(2));
    }
    writer.finish().unwrap();
    assert!(within(Duration::from_secs(20), move || reader.join().unwrap()) == model);
}

#[test]
fn fail_reaches_every_reader_past_the_last_write() {
    let model = data(20_000, 103);
    let (mut writer, buf) = StreamBuffer::builder()
        .segment_size(SEGMENT)
        .build_push()
        .unwrap();
    let waiting = {
        let buf = buf.clone();
        thread::spawn(move || buf.read_range(15_000..25_000))
    };
    writer.write_all(&model[..12_345]).unwrap();
    writer.fail(io::Error::new(
        io::ErrorKind::ConnectionReset,
        "microphone unplugged",
    ));
    let err = within(Duration::from_secs(20), move || waiting.join().unwrap()).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::ConnectionReset);
    assert!(err.to_string().contains("microphone unplugged"), "{err}");
    // Sticky, for later readers too; the bytes written stay readable.
    let again = buf.read_at(12_000, &mut [0u8; 1000]).unwrap_err();
    assert_eq!(again.kind(), io::ErrorKind::ConnectionReset);
    assert_eq!(again.to_string(), err.to_string());
    assert_eq!(buf.read_range(0..12_345).unwrap(), &model[..12_345]);
    assert!(matches!(
        err.get_ref().and_then(|e| e.downcast_ref::<Error>()),
        Some(Error::Source { offset: 12_345, .. })
    ));
    assert_eq!(buf.len(), None);
}

#[test]
fn dropping_the_writer_is_unexpected_eof_never_a_clean_end() {
    let (mut writer, buf) = StreamBuffer::builder().build_push().unwrap();
    writer.write_all(b"half a frame").unwrap();
    let waiting = {
        let buf = buf.clone();
        thread::spawn(move || {
            let mut all = Vec::new();
            buf.reader().read_to_end(&mut all).map(|_| all)
        })
    };
    thread::sleep(Duration::from_millis(20));
    drop(writer);
    let err = within(Duration::from_secs(20), move || waiting.join().unwrap()).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof, "{err}");
    assert_eq!(
        buf.fill_to_end().unwrap_err().kind(),
        io::ErrorKind::UnexpectedEof
    );
    assert_eq!(buf.read_range(0..12).unwrap(), b"half a frame");
}

#[test]
fn a_declared_length_is_checked_both_ways() {
    // Running long: the write that crosses the length takes what fits, then the stream fails.
    let (mut writer, buf) = StreamBuffer::builder().len(10).build_push().unwrap();
    assert_eq!(writer.write(b"0123456789abc").unwrap(), 10);
    let err = writer.write(b"x").unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
    assert_eq!(buf.read_range(0..10).unwrap(), b"0123456789");
    assert_eq!(
        writer.finish().unwrap_err().kind(),
        io::ErrorKind::InvalidData
    );
    assert_eq!(
        buf.fill_to_end().unwrap_err().kind(),
        io::ErrorKind::InvalidData
    );

    // Ending early: `finish` says so, and so do the readers.
    let (mut writer, buf) = StreamBuffer::builder().len(10).build_push().unwrap();
    writer.write_all(b"01234").unwrap();
    let err = writer.finish().unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof, "{err}");
    assert_eq!(
        buf.read_at(3, &mut [0u8; 5]).unwrap_err().kind(),
        io::ErrorKind::UnexpectedEof
    );

    // Exactly right.
    let (mut writer, buf) = StreamBuffer::builder().len(10).build_push().unwrap();
    writer.write_all(b"0123456789").unwrap();
    assert_eq!(writer.finish().unwrap(), 10);
    assert_eq!(buf.read_range(0..100).unwrap(), b"0123456789");
}

#[test]
fn an_empty_push_stream_ends_empty() {
    let (writer, buf) = StreamBuffer::builder().build_push().unwrap();
    assert_eq!(writer.finish().unwrap(), 0);
    assert_eq!(buf.len(), Some(0));
    assert_eq!(buf.read_at(0, &mut [0u8; 10]).unwrap(), 0);
}

/// A windowed push stream whose budgets hold less than the window: the writer waits for a
/// slow cursor on another thread instead of dropping what it has not read.
#[test]
fn a_windowed_writer_waits_for_a_slow_cursor_and_drops_nothing_it_needs() {
    let model = data(2 << 20, 104);
    let (mut writer, buf) = StreamBuffer::builder()
        .segment_size(SEGMENT)
        .memory_budget(4 * SEGMENT)
        .disk_budget(4 * SEGMENT as u64)
        .window(1 << 30)
        .build_push()
        .unwrap();
    let cursor = {
        let buf = buf.clone();
        thread::spawn(move || {
            let mut r = buf.reader();
            let mut all = Vec::new();
            let mut chunk = [0u8; 3000];
            loop {
                let n = r.read(&mut chunk).unwrap();
                if n == 0 {
                    break all;
                }
                all.extend_from_slice(&chunk[..n]);
                if all.len() % 50 == 0 {
                    thread::sleep(Duration::from_micros(200));
                }
            }
        })
    };
    // The cursor exists before the writer races ahead (it holds offset 0 from the start).
    thread::sleep(Duration::from_millis(20));
    let model2 = model.clone();
    let writer_side = thread::spawn(move || {
        push_all(&mut writer, &model2, 9, 10_000);
        writer.finish().unwrap()
    });
    let got = within(Duration::from_secs(60), move || cursor.join().unwrap());
    assert_eq!(writer_side.join().unwrap(), model.len() as u64);
    assert!(got == model);
    let st = buf.stats();
    assert!(st.writer_waits > 0, "{st:?}");
    assert!(st.memory_bytes <= 6 * SEGMENT as u64, "{st:?}");
    assert!(st.spilled_bytes <= 4 * SEGMENT as u64, "{st:?}");
}

/// A thread whose own cursor holds the oldest bytes cannot wait for itself: its write takes
/// what fits (a short count), then reports `WindowFull`; once the cursor moves on, writing
/// goes on.
#[test]
fn a_writer_blocked_by_its_own_cursor_gets_a_short_count_then_window_full() {
    let model = data(200_000, 105);
    let (mut writer, buf) = StreamBuffer::builder()
        .segment_size(SEGMENT)
        .memory_budget(4 * SEGMENT)
        .disk_budget(0)
        .window(1 << 30)
        .build_push()
        .unwrap();
    let mut cursor = buf.reader();
    let mut first = [0u8; 100];
    let took = writer.write(&model).unwrap();
    assert!(took > 0 && took < model.len(), "{took}");
    let err = writer.write(&model[took..]).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
    assert!(matches!(
        err.get_ref().and_then(|e| e.downcast_ref::<Error>()),
        Some(Error::WindowFull { held: 0, .. })
    ));
    // Nothing the cursor needs was dropped.
    cursor.read_exact(&mut first).unwrap();
    assert_eq!(first[..], model[..100]);
    // Reading on frees room: the writer goes on, and the cursor sees every byte.
    // One thread, both sides: write what fits, read some, until all is through. (A read at the
    // frontier would wait for this very thread, so it only reads what was written.)
    let mut at = took;
    let mut got = first.to_vec();
    let mut chunk = vec![0u8; 7000];
    while at < model.len() || got.len() < model.len() {
        if at < model.len() {
            match writer.write(&model[at..]) {
                Ok(n) => at += n,
                Err(e) => assert_eq!(e.kind(), io::ErrorKind::InvalidInput),
            }
        }
        let n = cursor.read(&mut chunk).unwrap();
        got.extend_from_slice(&chunk[..n]);
        if at == model.len() && got.len() == model.len() {
            break;
        }
    }
    assert_eq!(writer.finish().unwrap(), model.len() as u64);
    assert!(got == model);
    cursor.seek(SeekFrom::Start(model.len() as u64)).unwrap();
    assert_eq!(cursor.read(&mut chunk).unwrap(), 0);
}
