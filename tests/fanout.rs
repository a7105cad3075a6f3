//! Fan-out consumers (`StreamBuffer::emit`): every test compares what consumers got with the
//! bytes that were pushed (or the source's bytes), chunk by chunk.

mod common;

use std::io::{self, Cursor, Read, Write};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::{data, within, Rng};
use sparsebuf::{Chunk, Error, Pool, StreamBuffer, Writer};

const SEGMENT: usize = 4096;

/// What a consumer saw of one chunk.
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    offset: u64,
    bytes: Vec<u8>,
    last: bool,
}

type Log = Arc<Mutex<Vec<Seen>>>;

/// A callback that records every chunk in `log`.
fn recorder(log: &Log) -> impl FnMut(Chunk) -> io::Result<()> + Send + 'static {
    let log = log.clone();
    move |chunk| {
        log.lock().unwrap().push(Seen {
            offset: chunk.offset(),
            bytes: chunk.to_vec(),
            last: chunk.is_last(),
        });
        Ok(())
    }
}

fn log() -> Log {
    Arc::new(Mutex::new(Vec::new()))
}

/// A push stream of `SEGMENT`-byte segments with `ram` segments of RAM, no disk and a window
/// of `window` segments.
fn live(ram: usize, window: u64) -> (Writer, StreamBuffer) {
    StreamBuffer::builder()
        .segment_size(SEGMENT)
        .memory_budget(ram * SEGMENT)
        .disk_budget(0)
        .window(window * SEGMENT as u64)
        .build_push()
        .unwrap()
}

/// Pushes `model` in writes of the given sizes, cycling through them; returns the write ends.
fn push(writer: &mut Writer, model: &[u8], sizes: &[usize]) -> Vec<u64> {
    let mut ends = Vec::new();
    let mut at = 0;
    for &n in sizes.iter().cycle() {
        if at == model.len() {
            break;
        }
        let n = n.min(model.len() - at);
        writer.write_all(&model[at..at + n]).unwrap();
        at += n;
        ends.push(at as u64);
    }
    ends
}

/// Checks a consumer's chunks against the model: contiguous from `start`, each equal to the
/// model's bytes at its offset, exactly one last chunk (the final one) reaching the end.
fn check_contiguous(seen: &[Seen], model: &[u8], start: u64) {
    let mut at = start;
    for (i, s) in seen.iter().enumerate() {
        assert_eq!(s.offset, at, "chunk {i}");
        assert!(
            s.bytes == model[at as usize..][..s.bytes.len()],
            "chunk {i} at {at}: bytes differ"
        );
        assert_eq!(
            s.last,
            i == seen.len() - 1,
            "chunk {i}: only the final chunk is last"
        );
        at += s.bytes.len() as u64;
    }
    assert_eq!(
        at,
        model.len() as u64,
        "the chunks reach the end of the stream"
    );
}

/// Checks chunks that may skip: each equals the model at its offset, offsets grow, the last
/// one ends the stream.
fn check_with_gaps(seen: &[Seen], model: &[u8]) -> u64 {
    let mut at = 0;
    let mut delivered = 0;
    for (i, s) in seen.iter().enumerate() {
        assert!(s.offset >= at, "chunk {i} goes back");
        assert!(
            s.bytes == model[s.offset as usize..][..s.bytes.len()],
            "chunk {i}: bytes differ"
        );
        assert_eq!(s.last, i == seen.len() - 1);
        at = s.offset + s.bytes.len() as u64;
        delivered += s.bytes.len() as u64;
    }
    assert_eq!(at, model.len() as u64);
    delivered
}

#[test]
fn clipped_chunks_are_exact_and_the_remainder_comes_last() {
    for (len, size) in [
        (10_000usize, 1000usize),
        (10_001, 1000),
        (999, 1000),
        (1, 1),
        (50_000, 4096),
    ] {
        let model = data(len, len as u64);
        let (mut writer, buf) = StreamBuffer::builder()
            .segment_size(SEGMENT)
            .build_push()
            .unwrap();
        let seen = log();
        let consumer = buf.emit(size).start(recorder(&seen)).unwrap();
        push(&mut writer, &model, &[333, 1, 5000, 77]);
        writer.finish().unwrap();
        let report = consumer.join().unwrap();
        let seen = seen.lock().unwrap();
        check_contiguous(&seen, &model, 0);
        for s in &seen[..seen.len() - 1] {
            assert_eq!(s.bytes.len(), size);
        }
        let tail = len % size;
        let last = &seen[seen.len() - 1];
        // A stream that ends on a chunk boundary may end with an empty last chunk.
        assert!(
            last.bytes.len() == tail || (tail == 0 && last.bytes.len() <= size),
            "{len} {size}"
        );
        assert_eq!(report.bytes, len as u64);
        assert_eq!(report.chunks, seen.len() as u64);
        assert_eq!(report.skipped, 0);
    }
}

#[test]
fn unclipped_chunks_are_the_fewest_whole_writes_that_reach_the_size() {
    let model = data(20_000, 3);
    let sizes = [10usize, 300, 7, 2500, 1, 64];
    let (mut writer, buf) = StreamBuffer::builder()
        .segment_size(SEGMENT)
        .build_push()
        .unwrap();
    let (seen, seen_inline) = (log(), log());
    let consumer = buf.emit(1000).clip(false).start(recorder(&seen)).unwrap();
    let inline = buf
        .emit(1000)
        .clip(false)
        .run_inline()
        .start(recorder(&seen_inline))
        .unwrap();
    let ends = push(&mut writer, &model, &sizes);
    writer.finish().unwrap();
    consumer.join().unwrap();
    inline.join().unwrap();
    // The expected cut: from each chunk start, the first write end at least 1000 bytes on.
    let mut cuts = Vec::new();
    let mut start = 0u64;
    while start < model.len() as u64 {
        let end = *ends
            .iter()
            .find(|&&e| e >= start + 1000)
            .unwrap_or(ends.last().unwrap());
        cuts.push((start, end));
        start = end;
    }
    for seen in [seen, seen_inline] {
        let seen = seen.lock().unwrap();
        check_contiguous(&seen, &model, 0);
        let got: Vec<(u64, u64)> = seen
            .iter()
            .filter(|s| !s.bytes.is_empty())
            .map(|s| (s.offset, s.offset + s.bytes.len() as u64))
            .collect();
        assert_eq!(got, cuts);
    }
}

#[test]
fn an_empty_stream_delivers_one_empty_last_chunk() {
    let (writer, buf) = StreamBuffer::builder().build_push().unwrap();
    let (seen, seen_inline) = (log(), log());
    let consumer = buf.emit(100).start(recorder(&seen)).unwrap();
    let inline = buf
        .emit(100)
        .run_inline()
        .start(recorder(&seen_inline))
        .unwrap();
    writer.finish().unwrap();
    for (consumer, seen) in [(consumer, seen), (inline, seen_inline)] {
        let report = consumer.join().unwrap();
        assert_eq!((report.chunks, report.bytes, report.skipped), (1, 0, 0));
        let seen = seen.lock().unwrap();
        assert_eq!(
            *seen,
            vec![Seen {
                offset: 0,
                bytes: vec![],
                last: true
            }]
        );
    }
}

#[test]
fn a_full_chunk_at_a_known_end_is_the_last_one() {
    // The stream is complete before the consumer starts: no empty chunk follows.
    let model = data(3000, 4);
    let (mut writer, buf) = StreamBuffer::builder().build_push().unwrap();
    writer.write_all(&model).unwrap();
    writer.finish().unwrap();
    let seen = log();
    let report = buf
        .emit(1000)
        .start(recorder(&seen))
        .unwrap()
        .join()
        .unwrap();
    assert_eq!(report.chunks, 3);
    let seen = seen.lock().unwrap();
    check_contiguous(&seen, &model, 0);
    assert!(seen.iter().all(|s| s.bytes.len() == 1000));
}

#[test]
fn inline_callbacks_run_on_the_writing_thread_before_the_write_returns() {
    let model = data(10_000, 5);
    let (mut writer, buf) = StreamBuffer::builder().build_push().unwrap();
    let seen = log();
    let me = thread::current().id();
    let mut record = recorder(&seen);
    let consumer = buf
        .emit(100)
        .run_inline()
        .start(move |chunk| {
            assert_eq!(thread::current().id(), me);
            record(chunk)
        })
        .unwrap();
    for (i, piece) in model.chunks(250).enumerate() {
        writer.write_all(piece).unwrap();
        // Every complete chunk of what was written is delivered already.
        let delivered: usize = seen.lock().unwrap().iter().map(|s| s.bytes.len()).sum();
        assert_eq!(delivered, (i + 1) * 250 / 100 * 100);
    }
    writer.finish().unwrap();
    consumer.join().unwrap();
    check_contiguous(&seen.lock().unwrap(), &model, 0);
}

#[test]
fn consumers_started_after_writes_begin_at_the_window_start() {
    let model = data(200_000, 6);
    let (mut writer, buf) = StreamBuffer::builder()
        .segment_size(SEGMENT)
        .window(10 * SEGMENT as u64)
        .build_push()
        .unwrap();
    writer.write_all(&model[..100_000]).unwrap();
    let start = buf.window_start();
    assert!(start > 0);
    let (seen, seen_inline) = (log(), log());
    let consumer = buf.emit(3000).start(recorder(&seen)).unwrap();
    let inline = buf
        .emit(3000)
        .run_inline()
        .start(recorder(&seen_inline))
        .unwrap();
    writer.write_all(&model[100_000..]).unwrap();
    writer.finish().unwrap();
    for (consumer, seen) in [(consumer, seen), (inline, seen_inline)] {
        let report = consumer.join().unwrap();
        assert_eq!(report.skipped, start);
        assert_eq!(report.bytes + report.skipped, model.len() as u64);
        check_contiguous(&seen.lock().unwrap(), &model, start);
    }
}

#[test]
fn a_windowed_writer_waits_for_its_slowest_consumer_within_the_budgets() {
    let model = data(1 << 20, 7);
    let (mut writer, buf) = StreamBuffer::builder()
        .segment_size(SEGMENT)
        .memory_budget(4 * SEGMENT)
        .disk_budget(4 * SEGMENT as u64)
        .window(16 * SEGMENT as u64)
        .build_push()
        .unwrap();
    let (fast, slow) = (log(), log());
    let fast_consumer = buf.emit(5000).start(recorder(&fast)).unwrap();
    let mut record = recorder(&slow);
    let mut n = 0u32;
    // Chunks larger than the budgets and the window still complete.
    let slow_consumer = buf
        .emit(100_000)
        .clip(false)
        .start(move |chunk| {
            n += 1;
            if n % 3 == 0 {
                thread::sleep(Duration::from_millis(2));
            }
            record(chunk)
        })
        .unwrap();
    let pool = Pool::new(2).unwrap();
    let pooled = log();
    let pooled_consumer = buf
        .emit(7777)
        .run_on_pool(&pool)
        .start(recorder(&pooled))
        .unwrap();
    let peak = within(Duration::from_secs(120), move || {
        let mut peak = 0;
        for piece in model.chunks(3001) {
            writer.write_all(piece).unwrap();
            peak = peak.max(buf.stats().memory_bytes);
        }
        writer.finish().unwrap();
        for c in [fast_consumer, slow_consumer, pooled_consumer] {
            let report = c.join().unwrap();
            assert_eq!((report.bytes, report.skipped), (1 << 20, 0));
        }
        let st = buf.stats();
        assert!(st.writer_waits > 0, "{st:?}");
        (peak, model)
    });
    let (peak, model) = peak;
    // RAM: the budget, the segment being filled and a spare buffer.
    assert!(peak <= 6 * SEGMENT as u64, "peak {peak}");
    for seen in [fast, slow, pooled] {
        check_contiguous(&seen.lock().unwrap(), &model, 0);
    }
}

#[test]
fn a_window_smaller_than_the_budgets_bounds_how_far_the_writer_runs_ahead_of_a_consumer() {
    let model = data(400_000, 19);
    let window = 4 * SEGMENT as u64;
    let (mut writer, buf) = StreamBuffer::builder()
        .segment_size(SEGMENT)
        .memory_budget(64 * SEGMENT)
        .window(window)
        .build_push()
        .unwrap();
    let seen = log();
    let mut record = recorder(&seen);
    let consumer = buf
        .emit(1000)
        .start(move |chunk| {
            thread::sleep(Duration::from_micros(100));
            record(chunk)
        })
        .unwrap();
    let model = within(Duration::from_secs(60), move || {
        for piece in model.chunks(700) {
            writer.write_all(piece).unwrap();
            // The window is kept: the writer waits instead of letting it grow.
            let kept = writer.position() - buf.window_start();
            assert!(kept <= window + SEGMENT as u64, "{kept}");
        }
        writer.finish().unwrap();
        assert!(buf.stats().writer_waits > 0);
        model
    });
    assert_eq!(consumer.join().unwrap().bytes, model.len() as u64);
    check_contiguous(&seen.lock().unwrap(), &model, 0);
}

#[test]
fn a_lagging_consumer_skips_instead_of_holding_the_writer() {
    let model = data(2 << 20, 8);
    let (mut writer, buf) = live(8, 8);
    let seen = log();
    let mut record = recorder(&seen);
    let consumer = buf
        .emit(1000)
        .lagging(true)
        .start(move |chunk| {
            thread::sleep(Duration::from_micros(300));
            record(chunk)
        })
        .unwrap();
    let model = within(Duration::from_secs(60), move || {
        for piece in model.chunks(SEGMENT) {
            writer.write_all(piece).unwrap();
        }
        writer.finish().unwrap();
        assert_eq!(buf.stats().writer_waits, 0);
        model
    });
    let report = consumer.join().unwrap();
    assert!(report.skipped > 0, "{report:?}");
    assert_eq!(report.bytes + report.skipped, model.len() as u64);
    let delivered = check_with_gaps(&seen.lock().unwrap(), &model);
    assert_eq!(delivered, report.bytes);
}

#[test]
fn a_sampler_pauses_the_consumer_and_counts_what_it_skipped() {
    let model = data(600_000, 9);
    let (mut writer, buf) = StreamBuffer::builder()
        .segment_size(SEGMENT)
        .window(64 * SEGMENT as u64)
        .build_push()
        .unwrap();
    let (seen, seen_inline) = (log(), log());
    let asked = Arc::new(Mutex::new(0u32));
    let asked_by_sampler = asked.clone();
    let consumer = buf
        .emit(2000)
        .sampler(move || {
            *asked_by_sampler.lock().unwrap() += 1;
            Duration::from_millis(3)
        })
        .start(recorder(&seen))
        .unwrap();
    let inline = buf
        .emit(2000)
        .run_inline()
        .sampler(|| Duration::from_millis(3))
        .start(recorder(&seen_inline))
        .unwrap();
    for piece in model.chunks(1000) {
        writer.write_all(piece).unwrap();
        thread::sleep(Duration::from_micros(50));
    }
    writer.finish().unwrap();
    for (consumer, seen) in [(consumer, seen.clone()), (inline, seen_inline)] {
        let report = consumer.join().unwrap();
        assert!(report.skipped > 0, "{report:?}");
        assert_eq!(report.bytes + report.skipped, model.len() as u64);
        let seen = seen.lock().unwrap();
        assert_eq!(check_with_gaps(&seen, &model), report.bytes);
    }
    // Asked after every chunk but the last.
    assert_eq!(
        *asked.lock().unwrap() as usize,
        seen.lock().unwrap().len() - 1
    );
}

#[test]
fn a_failing_or_panicking_callback_stops_only_its_consumer_and_lets_go_of_the_window() {
    let model = data(1 << 20, 10);
    let (mut writer, buf) = live(4, 8);
    let healthy = log();
    let good = buf.emit(4096).start(recorder(&healthy)).unwrap();
    let failing = buf
        .emit(4096)
        .start(|chunk| {
            if chunk.offset() >= 40_960 {
                Err(io::Error::new(io::ErrorKind::BrokenPipe, "sink gone"))
            } else {
                Ok(())
            }
        })
        .unwrap();
    let panicking = buf
        .emit(4096)
        .start(|chunk| {
            assert!(chunk.offset() < 81_920, "boom");
            Ok(())
        })
        .unwrap();
    let inline_failing = buf
        .emit(100)
        .run_inline()
        .start(|chunk| {
            if chunk.offset() > 500 {
                Err(io::Error::other("inline"))
            } else {
                Ok(())
            }
        })
        .unwrap();
    let model = within(Duration::from_secs(60), move || {
        // Would wait forever if a stopped consumer still held the window.
        for piece in model.chunks(1500) {
            writer.write_all(piece).unwrap();
        }
        writer.finish().unwrap();
        model
    });
    assert_eq!(
        failing.join().unwrap_err().kind(),
        io::ErrorKind::BrokenPipe
    );
    let panic = panicking.join().unwrap_err();
    assert!(panic.to_string().contains("boom"), "{panic}");
    assert_eq!(inline_failing.join().unwrap_err().to_string(), "inline");
    assert_eq!(good.join().unwrap().bytes, model.len() as u64);
    check_contiguous(&healthy.lock().unwrap(), &model, 0);
}

#[test]
fn dropping_a_consumer_stops_it_and_releases_its_hold() {
    let model = data(1 << 20, 11);
    let (mut writer, buf) = live(4, 8);
    let count = Arc::new(Mutex::new(0u64));
    let counted = count.clone();
    let consumer = buf
        .emit(4096)
        .start(move |chunk| {
            *counted.lock().unwrap() += chunk.len() as u64;
            thread::sleep(Duration::from_millis(1));
            Ok(())
        })
        .unwrap();
    let inline = buf.emit(10).run_inline().start(|_| Ok(())).unwrap();
    writer.write_all(&model[..100_000]).unwrap();
    drop(consumer);
    drop(inline);
    within(Duration::from_secs(60), move || {
        // Would wait forever if the dropped consumer still held the window.
        writer.write_all(&model[100_000..]).unwrap();
        writer.finish().unwrap();
    });
    assert!(*count.lock().unwrap() < 1 << 20);
}

#[test]
fn a_failed_stream_delivers_its_complete_chunks_and_join_returns_its_error() {
    let model = data(10_500, 12);
    for drop_writer in [false, true] {
        let (mut writer, buf) = StreamBuffer::builder().build_push().unwrap();
        let (seen, seen_inline) = (log(), log());
        let consumer = buf.emit(1000).start(recorder(&seen)).unwrap();
        let inline = buf
            .emit(1000)
            .run_inline()
            .start(recorder(&seen_inline))
            .unwrap();
        writer.write_all(&model).unwrap();
        let kind = if drop_writer {
            drop(writer);
            io::ErrorKind::UnexpectedEof
        } else {
            writer.fail(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "camera unplugged",
            ));
            io::ErrorKind::ConnectionReset
        };
        for (consumer, seen) in [(consumer, seen), (inline, seen_inline)] {
            assert_eq!(consumer.join().unwrap_err().kind(), kind);
            let seen = seen.lock().unwrap();
            assert_eq!(seen.len(), 10);
            for (i, s) in seen.iter().enumerate() {
                assert_eq!(s.offset, i as u64 * 1000);
                assert!(s.bytes == model[i * 1000..][..1000]);
                assert!(!s.last);
            }
        }
    }
}

#[test]
fn on_done_gets_results_in_chunk_order_even_from_parallel_callbacks() {
    let model = data(300_000, 13);
    let (mut writer, buf) = StreamBuffer::builder().build_push().unwrap();
    let pool = Pool::new(4).unwrap();
    let mut consumers = Vec::new();
    let mut outputs = Vec::new();
    for (place, n) in [(0, 4), (1, 3), (2, 1)] {
        let out = Arc::new(Mutex::new(Vec::<(u64, Vec<u8>)>::new()));
        let sink = out.clone();
        let emit = buf
            .emit(1234)
            .on_done(move |r| sink.lock().unwrap().push(r));
        let emit = match place {
            0 => emit.run_on_pool(&pool),
            _ => emit.run_on_thread(),
        };
        let c = emit
            .parallel(n)
            .start(|chunk: Chunk| {
                // Later chunks often finish first.
                let mut rng = Rng(chunk.offset());
                thread::sleep(Duration::from_micros(rng.below(500)));
                Ok((chunk.offset(), chunk.to_vec()))
            })
            .unwrap();
        consumers.push(c);
        outputs.push(out);
    }
    push(&mut writer, &model, &[10_000, 17, 3000]);
    writer.finish().unwrap();
    for (c, out) in consumers.into_iter().zip(outputs) {
        let report = c.join().unwrap();
        let out = out.lock().unwrap();
        assert_eq!(out.len() as u64, report.chunks);
        let mut at = 0;
        for (offset, bytes) in out.iter() {
            assert_eq!(*offset, at);
            assert!(*bytes == model[at as usize..][..bytes.len()]);
            at += bytes.len() as u64;
        }
        assert_eq!(at, model.len() as u64);
    }
}

#[test]
fn a_parallel_error_is_returned_and_only_earlier_results_are_handed_on() {
    let (mut writer, buf) = StreamBuffer::builder().build_push().unwrap();
    let done = Arc::new(Mutex::new(Vec::new()));
    let sink = done.clone();
    let consumer = buf
        .emit(100)
        .on_done(move |offset| sink.lock().unwrap().push(offset))
        .parallel(4)
        .start(|chunk: Chunk| {
            if chunk.offset() == 1000 {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "bad chunk"));
            }
            Ok(chunk.offset())
        })
        .unwrap();
    writer.write_all(&data(5000, 14)).unwrap();
    writer.finish().unwrap();
    assert_eq!(
        consumer.join().unwrap_err().kind(),
        io::ErrorKind::InvalidData
    );
    let done = done.lock().unwrap();
    assert_eq!(*done, (0..10).map(|i| i * 100).collect::<Vec<u64>>());
}

/// A reader whose first read waits for a word on `gate`.
struct Gated<R> {
    inner: R,
    gate: Option<std::sync::mpsc::Receiver<()>>,
}

impl<R: Read> Read for Gated<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(gate) = self.gate.take() {
            let _ = gate.recv();
        }
        self.inner.read(buf)
    }
}

#[test]
fn consumers_of_pulled_and_ranged_buffers_produce_what_they_need() {
    let model = data(500_000, 15);
    let pulled = StreamBuffer::builder()
        .segment_size(SEGMENT)
        .memory_budget(8 * SEGMENT)
        .build(Cursor::new(model.clone()))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("source.bin");
    std::fs::write(&path, &model).unwrap();
    let ranged = StreamBuffer::builder()
        .segment_size(SEGMENT)
        .memory_budget(8 * SEGMENT)
        .disk_budget(8 * SEGMENT as u64)
        .build_ranged(std::fs::File::open(&path).unwrap())
        .unwrap();
    // The windowed stream's source waits until both consumers started: a consumer starts at the
    // window start, so one started after the other had pulled the stream through would
    // rightly skip what the window let go (a race this test once lost).
    let (open, gate) = std::sync::mpsc::channel();
    let windowed = StreamBuffer::builder()
        .segment_size(SEGMENT)
        .memory_budget(4 * SEGMENT)
        .window(8 * SEGMENT as u64)
        .build(Gated {
            inner: Cursor::new(model.clone()),
            gate: Some(gate),
        })
        .unwrap();
    let mut open = Some(open);
    for (name, buf) in [
        ("pulled", pulled),
        ("ranged", ranged),
        ("windowed", windowed),
    ] {
        let (a, b) = (log(), log());
        let ca = buf.emit(3333).start(recorder(&a)).unwrap();
        // Larger than the window: the consumer pulls piece by piece.
        let cb = buf.emit(100_000).clip(false).start(recorder(&b)).unwrap();
        if name == "windowed" {
            open.take().unwrap().send(()).unwrap();
        }
        within(Duration::from_secs(60), move || {
            let (ra, rb) = (ca.join().unwrap(), cb.join().unwrap());
            assert_eq!(ra.bytes, 500_000, "{name}, 3333-byte chunks: {ra:?}");
            assert_eq!(rb.bytes, 500_000, "{name}, unclipped: {rb:?}");
        });
        for seen in [a, b] {
            let seen = seen.lock().unwrap();
            check_contiguous(&seen, &model, 0);
            assert!(seen.len() > 1, "{name}");
        }
    }
}

#[test]
fn inline_consumers_of_a_pulled_stream_are_fed_by_whoever_pulls() {
    let model = data(100_000, 16);
    let buf = StreamBuffer::builder()
        .segment_size(SEGMENT)
        .build_chunks(common::chunked(&model, &[999, 1, 5000]))
        .unwrap();
    let (seen, unclipped) = (log(), log());
    let inline = buf.emit(2048).run_inline().start(recorder(&seen)).unwrap();
    let by_read = buf
        .emit(2048)
        .clip(false)
        .run_inline()
        .start(recorder(&unclipped))
        .unwrap();
    buf.fill_to_end().unwrap();
    inline.join().unwrap();
    by_read.join().unwrap();
    check_contiguous(&seen.lock().unwrap(), &model, 0);
    let unclipped = unclipped.lock().unwrap();
    check_contiguous(&unclipped, &model, 0);
    // Chunks end where source reads ended.
    let mut ends = Vec::new();
    let mut at = 0;
    for &n in [999usize, 1, 5000].iter().cycle() {
        if at >= model.len() {
            break;
        }
        at = (at + n).min(model.len());
        ends.push(at as u64);
    }
    // A read ends where a source chunk ends, or where a segment is full.
    for s in unclipped.iter().filter(|s| !s.bytes.is_empty()) {
        let end = s.offset + s.bytes.len() as u64;
        assert!(
            ends.contains(&end) || end % SEGMENT as u64 == 0,
            "{}",
            s.offset
        );
        assert!(s.bytes.len() >= 2048 || s.last);
    }
}

#[test]
fn misuse_is_invalid_input() {
    let (_writer, buf) = StreamBuffer::builder().build_push().unwrap();
    let kind = |r: io::Result<sparsebuf::Consumer>| r.unwrap_err().kind();
    assert_eq!(
        kind(buf.emit(0).start(|_| Ok(()))),
        io::ErrorKind::InvalidInput
    );
    assert_eq!(
        kind(buf.emit(1).parallel(0).start(|_| Ok(()))),
        io::ErrorKind::InvalidInput
    );
    assert_eq!(
        kind(buf.emit(1).run_inline().parallel(2).start(|_| Ok(()))),
        io::ErrorKind::InvalidInput
    );
    assert_eq!(
        Pool::new(0).unwrap_err().kind(),
        io::ErrorKind::InvalidInput
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f");
    std::fs::write(&path, b"abc").unwrap();
    let ranged = StreamBuffer::builder()
        .build_ranged(std::fs::File::open(&path).unwrap())
        .unwrap();
    assert_eq!(
        kind(ranged.emit(1).run_inline().start(|_| Ok(()))),
        io::ErrorKind::InvalidInput
    );
}

#[test]
fn chunks_carry_arrival_times_and_share_ram_segments_when_they_can() {
    let model = data(64 * 1024, 17);
    let (mut writer, buf) = StreamBuffer::builder()
        .segment_size(SEGMENT)
        .build_push()
        .unwrap();
    let before = Instant::now();
    writer.write_all(&model[..32 * 1024]).unwrap();
    thread::sleep(Duration::from_millis(20));
    let middle = Instant::now();
    writer.write_all(&model[32 * 1024..]).unwrap();
    writer.finish().unwrap();
    let times = Arc::new(Mutex::new(Vec::new()));
    let sink = times.clone();
    let report = buf
        .emit(1024)
        .start(move |chunk| {
            assert!(*chunk == model[chunk.offset() as usize..][..chunk.len()]);
            sink.lock()
                .unwrap()
                .push((chunk.offset(), chunk.received_at()));
            // Handed on without the consumer: the bytes stay valid.
            Ok(chunk.into_bytes())
        })
        .unwrap()
        .join()
        .unwrap();
    assert_eq!(report.chunks, 64);
    for (offset, at) in times.lock().unwrap().iter() {
        assert!(*at >= before);
        if *offset < 32 * 1024 {
            assert!(*at < middle, "{offset}");
        } else {
            assert!(*at >= middle, "{offset}");
        }
    }
}

#[test]
fn a_window_full_short_write_keeps_the_writer_usable_with_a_consumer_on_its_thread() {
    // A Reader of the writing thread blocks the window: the write comes back short or with
    // WindowFull, never hangs; a consumer still gets every byte once the reader moves on.
    let model = data(200_000, 18);
    let (mut writer, buf) = live(2, 4);
    let seen = log();
    let consumer = buf.emit(500).run_inline().start(recorder(&seen)).unwrap();
    let mut reader = buf.reader();
    let mut first = [0u8; 1];
    writer.write_all(&model[..10]).unwrap();
    io::Read::read_exact(&mut reader, &mut first).unwrap();
    let err = writer.write_all(&model[10..]).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    assert!(
        matches!(
            err.get_ref().and_then(|e| e.downcast_ref::<Error>()),
            Some(Error::WindowFull { .. })
        ),
        "{err}"
    );
    drop(reader);
    let at = writer.position() as usize;
    writer.write_all(&model[at..]).unwrap();
    writer.finish().unwrap();
    consumer.join().unwrap();
    check_contiguous(&seen.lock().unwrap(), &model, 0);
}

#[test]
fn many_consumers_join_and_leave_under_tiny_budgets_and_each_gets_its_bytes() {
    for seed in 0..6u64 {
        within(Duration::from_secs(120), move || join_and_leave(seed));
    }
}

/// One run of the model: consumers of random kinds and sizes start while the stream is pushed
/// in random writes; some are dropped midway. Each one that stays gets every byte from where it
/// started, in order, cut as its options say.
fn join_and_leave(seed: u64) {
    let mut rng = Rng(seed);
    let model = data(300_000 + rng.below(100_000) as usize, seed);
    let window = [None, Some(6 * SEGMENT as u64), Some(20 * SEGMENT as u64)][seed as usize % 3];
    let mut builder = StreamBuffer::builder()
        .segment_size(SEGMENT)
        .memory_budget(3 * SEGMENT)
        .disk_budget(3 * SEGMENT as u64);
    if let Some(window) = window {
        builder = builder.window(window);
    }
    let (mut writer, buf) = builder.build_push().unwrap();
    let pool = Pool::new(2).unwrap();
    struct Running {
        consumer: sparsebuf::Consumer,
        seen: Log,
        start: u64,
        size: usize,
        clip: bool,
    }
    let mut running: Vec<Running> = Vec::new();
    let mut ends = Vec::new();
    let mut at = 0usize;
    let mut step = 0;
    while at < model.len() {
        if step % 7 == 0 && running.len() < 6 {
            let size = 1 + rng.below(20_000) as usize;
            let clip = rng.below(2) == 0;
            let seen = log();
            let start = buf.window_start();
            let emit = buf.emit(size).clip(clip);
            let emit = match rng.below(3) {
                0 => emit.run_inline(),
                1 => emit.run_on_pool(&pool),
                _ => emit,
            };
            let consumer = emit.start(recorder(&seen)).unwrap();
            // A consumer starts at the window start of the moment it is started.
            running.push(Running {
                consumer,
                seen,
                start,
                size,
                clip,
            });
        }
        if step % 11 == 5 && running.len() > 1 {
            let i = rng.below(running.len() as u64) as usize;
            drop(running.swap_remove(i));
        }
        let n = (1 + rng.below(9000) as usize).min(model.len() - at);
        writer.write_all(&model[at..at + n]).unwrap();
        at += n;
        ends.push(at as u64);
        step += 1;
    }
    writer.finish().unwrap();
    for r in running {
        let report = r.consumer.join().unwrap();
        let seen = r.seen.lock().unwrap();
        let first = seen.first().map_or(model.len() as u64, |s| s.offset);
        // Without a window nothing is dropped, so the start is exact; with one it may have
        // moved on before `start` looked (never behind what the consumer then got).
        assert!(first >= r.start, "seed {seed}");
        assert_eq!(report.skipped, first, "seed {seed}");
        assert_eq!(
            report.bytes + report.skipped,
            model.len() as u64,
            "seed {seed}"
        );
        check_contiguous(&seen, &model, first);
        for s in &seen[..seen.len() - 1] {
            let end = s.offset + s.bytes.len() as u64;
            if r.clip {
                assert_eq!(s.bytes.len(), r.size, "seed {seed}");
            } else {
                assert!(s.bytes.len() >= r.size, "seed {seed}");
                assert!(
                    ends.contains(&end),
                    "seed {seed}: a chunk ends inside a write"
                );
            }
        }
    }
}
