//! Sink consumers (`Emit::sink`): every test compares what the sink took with the bytes pushed.

mod common;

use std::io::{self, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use common::{data, within};
use sparsebuf::{RetryPolicy, Sink, StreamBuffer, WriteSink};

const SEGMENT: usize = 4096;

/// What a test sink saw.
#[derive(Default)]
struct Seen {
    chunks: Vec<(u64, Vec<u8>)>,
    calls: usize,
    finished: bool,
    aborted: bool,
}

/// A sink that records, and fails the calls `fail(call)` says.
struct Recording<F> {
    seen: Arc<Mutex<Seen>>,
    fail: F,
    /// Checked in `write_chunk`: the buffer must still hold the chunk.
    check: Option<StreamBuffer>,
}

impl<F: FnMut(usize) -> Option<io::ErrorKind> + Send> Sink for Recording<F> {
    fn write_chunk(&mut self, offset: u64, chunk: &[u8]) -> io::Result<()> {
        let call = {
            let mut seen = self.seen.lock().unwrap();
            seen.calls += 1;
            seen.calls
        };
        if let Some(buf) = &self.check {
            // Held until accepted: the window has not moved past this chunk.
            let mut again = vec![0u8; chunk.len()];
            buf.read_exact_at(offset, &mut again)
                .expect("a chunk not yet accepted was dropped");
            assert!(again == chunk);
            thread::sleep(Duration::from_micros(200));
        }
        if let Some(kind) = (self.fail)(call) {
            return Err(io::Error::new(kind, format!("call {call} failed")));
        }
        self.seen
            .lock()
            .unwrap()
            .chunks
            .push((offset, chunk.to_vec()));
        Ok(())
    }

    fn finish(&mut self) -> io::Result<()> {
        self.seen.lock().unwrap().finished = true;
        Ok(())
    }

    fn abort(&mut self) {
        self.seen.lock().unwrap().aborted = true;
    }
}

fn recording<F>(fail: F) -> (Recording<F>, Arc<Mutex<Seen>>) {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let sink = Recording {
        seen: seen.clone(),
        fail,
        check: None,
    };
    (sink, seen)
}

/// The chunks, joined, must be `model`, each at its offset, each byte once.
fn assert_whole(seen: &Seen, model: &[u8], chunk: usize) {
    let mut at = 0u64;
    for (offset, bytes) in &seen.chunks {
        assert_eq!(*offset, at);
        assert!(bytes.len() == chunk || at + bytes.len() as u64 == model.len() as u64);
        assert!(
            *bytes == model[at as usize..][..bytes.len()],
            "bytes at {at}"
        );
        at += bytes.len() as u64;
    }
    assert_eq!(at, model.len() as u64);
}

#[test]
fn transient_failures_are_retried_and_every_byte_arrives_once_in_order() {
    let model = data(300_000, 1);
    let (mut writer, buf) = StreamBuffer::builder()
        .segment_size(SEGMENT)
        .build_push()
        .unwrap();
    // Every third call fails with a transient error, before taking anything.
    let (sink, seen) = recording(|call| (call % 3 == 0).then_some(io::ErrorKind::ConnectionReset));
    let policy = RetryPolicy::new(3).backoff(Duration::from_millis(1), Duration::from_millis(2));
    let consumer = buf.emit(10_000).retry(policy.clone()).sink(sink).unwrap();
    for piece in model.chunks(7777) {
        writer.write_all(piece).unwrap();
    }
    writer.finish().unwrap();
    let report = consumer.join().unwrap();
    let seen = seen.lock().unwrap();
    assert_whole(&seen, &model, 10_000);
    assert!(seen.finished && !seen.aborted);
    assert_eq!(report.bytes, model.len() as u64);
    assert_eq!(policy.retries() as usize, seen.calls - seen.chunks.len());
    assert!(policy.retries() >= 10, "{}", policy.retries());
}

#[test]
fn a_permanent_failure_aborts_the_sink_and_join_returns_the_cause() {
    let model = data(100_000, 2);
    let (mut writer, buf) = StreamBuffer::builder().build_push().unwrap();
    let (sink, seen) = recording(|call| (call == 4).then_some(io::ErrorKind::PermissionDenied));
    let consumer = buf.emit(10_000).sink(sink).unwrap();
    writer.write_all(&model).unwrap();
    writer.finish().unwrap();
    let err = consumer.join().unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::PermissionDenied);
    assert_eq!(err.to_string(), "call 4 failed");
    let seen = seen.lock().unwrap();
    assert_eq!(seen.chunks.len(), 3);
    assert!(seen.aborted && !seen.finished);
    assert_eq!(seen.calls, 4, "a permanent error is not retried");
}

#[test]
fn retries_give_up_after_the_last_attempt_with_the_last_error() {
    let (mut writer, buf) = StreamBuffer::builder().build_push().unwrap();
    let (sink, seen) = recording(|_| Some(io::ErrorKind::TimedOut));
    let policy = RetryPolicy::new(4).backoff(Duration::ZERO, Duration::ZERO);
    let consumer = buf.emit(10).retry(policy.clone()).sink(sink).unwrap();
    writer.write_all(&[1u8; 25]).unwrap();
    writer.finish().unwrap();
    assert_eq!(consumer.join().unwrap_err().kind(), io::ErrorKind::TimedOut);
    assert_eq!(seen.lock().unwrap().calls, 4);
    assert_eq!(policy.retries(), 3);
    assert!(seen.lock().unwrap().aborted);
}

#[test]
fn a_failed_stream_or_a_dropped_consumer_aborts_the_sink() {
    let (mut writer, buf) = StreamBuffer::builder().build_push().unwrap();
    let (sink, seen) = recording(|_| None);
    let consumer = buf.emit(100).sink(sink).unwrap();
    writer.write_all(&[7u8; 250]).unwrap();
    writer.fail(io::Error::new(
        io::ErrorKind::ConnectionAborted,
        "camera gone",
    ));
    assert_eq!(
        consumer.join().unwrap_err().kind(),
        io::ErrorKind::ConnectionAborted
    );
    {
        let seen = seen.lock().unwrap();
        assert_eq!(seen.chunks.len(), 2);
        assert!(seen.aborted && !seen.finished);
    }

    let (mut writer, buf) = StreamBuffer::builder().build_push().unwrap();
    let (sink, seen) = recording(|_| None);
    let consumer = buf.emit(100).sink(sink).unwrap();
    writer.write_all(&[7u8; 250]).unwrap();
    drop(consumer);
    within(Duration::from_secs(10), move || {
        while !seen.lock().unwrap().aborted {
            thread::sleep(Duration::from_millis(1));
        }
        assert!(!seen.lock().unwrap().finished);
    });
    writer.finish().unwrap();
}

#[test]
fn a_windowed_stream_keeps_each_chunk_until_its_sink_took_it() {
    let model = data(1 << 20, 3);
    let (mut writer, buf) = StreamBuffer::builder()
        .segment_size(SEGMENT)
        .memory_budget(8 * SEGMENT)
        .disk_budget(0)
        .window(6 * SEGMENT as u64)
        .build_push()
        .unwrap();
    let failures = Arc::new(AtomicUsize::new(0));
    let count = failures.clone();
    let (mut sink, seen) = recording(move |call| {
        // Fails now and then: the retried chunk must still be in the buffer.
        (call % 5 == 0).then(|| {
            count.fetch_add(1, Ordering::Relaxed);
            io::ErrorKind::Interrupted
        })
    });
    sink.check = Some(buf.clone());
    let policy = RetryPolicy::new(3).backoff(Duration::ZERO, Duration::ZERO);
    let consumer = buf.emit(3 * SEGMENT).retry(policy).sink(sink).unwrap();
    let model = within(Duration::from_secs(60), move || {
        for piece in model.chunks(1000) {
            writer.write_all(piece).unwrap();
        }
        writer.finish().unwrap();
        assert!(buf.stats().writer_waits > 0);
        model
    });
    consumer.join().unwrap();
    assert!(failures.load(Ordering::Relaxed) > 0);
    assert_whole(&seen.lock().unwrap(), &model, 3 * SEGMENT);
}

#[test]
fn a_chunk_the_window_cannot_hold_is_refused_at_start() {
    let (_writer, buf) = StreamBuffer::builder()
        .segment_size(SEGMENT)
        .window(8 * SEGMENT as u64)
        .build_push()
        .unwrap();
    let (sink, _) = recording(|_| None);
    let err = buf.emit(7 * SEGMENT).sink(sink).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    let (sink, _) = recording(|_| None);
    assert!(buf.emit(6 * SEGMENT).sink(sink).is_ok());
}

#[test]
fn a_write_sink_copies_the_stream_and_flushes_at_the_end() {
    let model = data(200_000, 4);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("copy");
    let (mut writer, buf) = StreamBuffer::builder().build_push().unwrap();
    let file = io::BufWriter::new(std::fs::File::create(&path).unwrap());
    let consumer = buf
        .emit(65_536)
        .retry(RetryPolicy::none())
        .sink(WriteSink::new(file))
        .unwrap();
    writer.write_all(&model).unwrap();
    writer.finish().unwrap();
    consumer.join().unwrap();
    assert!(std::fs::read(&path).unwrap() == model);
}
