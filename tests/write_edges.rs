//! The write side at its edges: a reader whose own cursor blocks a push stream's writer, a
//! dropped consumer whose callback or sink is stuck, marks under millions of tiny writes, a sink
//! whose `abort` panics, dropping an inline consumer from another thread, a sampler asking for
//! `Duration::MAX`. Each could hang or kill the process, so each runs in a child process
//! (`common/child.rs`) with a time limit.

mod common;

use std::io::{self, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use common::child::{memory_is_measurable, parent, rss_anon};
use common::data;
use sparsebuf::{Error, Pool, RetryPolicy, Sink, StreamBuffer, Writer};

const LIMIT: Duration = Duration::from_secs(60);

/// A windowed push stream whose budgets hold four 4 KiB segments: a writer that gets 64 KiB
/// ahead of the slowest hold must wait.
fn tight() -> (Writer, StreamBuffer) {
    StreamBuffer::builder()
        .segment_size(4096)
        .memory_budget(4 * 4096)
        .disk_budget(0)
        .window(1 << 30)
        .build_push()
        .unwrap()
}

/// Pushes `model` on a thread of its own; the thread returns the writer's result.
fn push(mut writer: Writer, model: Vec<u8>) -> std::thread::JoinHandle<io::Result<u64>> {
    std::thread::spawn(move || {
        writer.write_all(&model)?;
        writer.finish()
    })
}

fn wait_until(what: &str, done: impl Fn() -> bool) {
    let start = std::time::Instant::now();
    while !done() {
        assert!(start.elapsed() < LIMIT, "{what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn window_full(error: &io::Error) -> bool {
    matches!(
        error.get_ref().and_then(|e| e.downcast_ref::<Error>()),
        Some(Error::WindowFull { .. })
    )
}

/// Pins "a thread never waits for itself" on a push stream: the writer waits for this thread's
/// cursor, and this thread's `read_at` far ahead waits for the writer; it waited forever.
#[test]
fn a_push_reader_whose_own_cursor_blocks_the_writer_gets_window_full() {
    if parent(
        "a_push_reader_whose_own_cursor_blocks_the_writer_gets_window_full",
        LIMIT,
    ) {
        return;
    }
    let model = data(1 << 20, 1);
    let (writer, buf) = tight();
    let cursor = buf.reader(); // holds offset 0, owned by this thread
    let writing = push(writer, model.clone());
    wait_until("the writer waits", || buf.stats().writer_waits > 0);
    let mut far = [0u8; 100];
    let error = buf.read_at(500_000, &mut far).unwrap_err();
    assert!(window_full(&error), "{error}");
    assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
    drop(cursor);
    assert_eq!(writing.join().unwrap().unwrap(), model.len() as u64);
    buf.read_exact_at(model.len() as u64 - 100, &mut far)
        .unwrap();
    assert_eq!(far[..], model[model.len() - 100..]);
}

/// The same from a consumer's callback: its own (pinned) hold blocks the writer.
#[test]
fn a_consumer_reading_far_ahead_from_its_callback_gets_window_full() {
    if parent(
        "a_consumer_reading_far_ahead_from_its_callback_gets_window_full",
        LIMIT,
    ) {
        return;
    }
    let model = data(1 << 20, 2);
    let (writer, buf) = tight();
    let reader = buf.clone();
    let (errors, got) = mpsc::channel();
    let consumer = buf
        .emit(4096)
        .start(move |chunk| {
            if chunk.offset() == 8192 {
                let mut far = [0u8; 10];
                let _ = errors.send(reader.read_at(900_000, &mut far).map(drop));
            }
            Ok(())
        })
        .unwrap();
    let writing = push(writer, model.clone());
    let error = got.recv().unwrap().unwrap_err();
    assert!(window_full(&error), "{error}");
    writing.join().unwrap().unwrap();
    let report = consumer.join().unwrap();
    assert_eq!(report.bytes, model.len() as u64);
}

/// A consumer whose delivery is stuck for good, in each of the ways it can be.
enum Stuck {
    Thread,
    Pool,
    Parallel,
    /// A sink waiting an hour before its next retry.
    SinkBackoff,
}

/// A sink that fails every chunk with a transient error.
struct Flaky;

impl Sink for Flaky {
    fn write_chunk(&mut self, _: u64, _: &[u8]) -> io::Result<()> {
        Err(io::Error::new(io::ErrorKind::ConnectionReset, "down"))
    }
    fn finish(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Pins "a dropped consumer's hold goes at once": the writer of a windowed stream, blocked by a
/// consumer whose callback never returns (or whose sink sleeps before a retry), goes on as soon
/// as the `Consumer` is dropped. It was blocked for ever.
fn a_dropped_stuck_consumer_frees_the_writer(stuck: Stuck) {
    let model = data(1 << 20, 3);
    let (writer, buf) = tight();
    let (release, never) = mpsc::channel::<()>();
    let never = std::sync::Mutex::new(never);
    let block = move |_: sparsebuf::Chunk| {
        let _ = never.lock().unwrap().recv();
        Ok(())
    };
    let pool = Pool::new(2).unwrap();
    let consumer = match stuck {
        Stuck::Thread => buf.emit(4096).start(block),
        Stuck::Pool => buf.emit(4096).run_on_pool(&pool).start(block),
        Stuck::Parallel => buf.emit(4096).parallel(2).start(block),
        Stuck::SinkBackoff => buf
            .emit(4096)
            .retry(
                RetryPolicy::new(100).backoff(Duration::from_secs(3600), Duration::from_secs(3600)),
            )
            .sink(Flaky),
    }
    .unwrap();
    let writing = push(writer, model.clone());
    wait_until("the writer waits for the consumer", || {
        buf.stats().writer_waits > 0
    });
    drop(consumer);
    assert_eq!(writing.join().unwrap().unwrap(), model.len() as u64);
    drop(release);
}

#[test]
fn a_dropped_consumer_stuck_in_its_callback_frees_the_writer() {
    if parent(
        "a_dropped_consumer_stuck_in_its_callback_frees_the_writer",
        LIMIT,
    ) {
        return;
    }
    a_dropped_stuck_consumer_frees_the_writer(Stuck::Thread);
}

#[test]
fn a_dropped_pool_consumer_stuck_in_its_callback_frees_the_writer() {
    if parent(
        "a_dropped_pool_consumer_stuck_in_its_callback_frees_the_writer",
        LIMIT,
    ) {
        return;
    }
    a_dropped_stuck_consumer_frees_the_writer(Stuck::Pool);
}

#[test]
fn a_dropped_parallel_consumer_stuck_in_its_callbacks_frees_the_writer() {
    if parent(
        "a_dropped_parallel_consumer_stuck_in_its_callbacks_frees_the_writer",
        LIMIT,
    ) {
        return;
    }
    a_dropped_stuck_consumer_frees_the_writer(Stuck::Parallel);
}

#[test]
fn a_dropped_sink_consumer_waiting_to_retry_frees_the_writer() {
    if parent(
        "a_dropped_sink_consumer_waiting_to_retry_frees_the_writer",
        LIMIT,
    ) {
        return;
    }
    a_dropped_stuck_consumer_frees_the_writer(Stuck::SinkBackoff);
}

/// A `Retry-After` of eleven days is capped by the policy's longest wait (it was obeyed).
#[test]
fn retry_after_is_capped_by_the_longest_wait() {
    if parent("retry_after_is_capped_by_the_longest_wait", LIMIT) {
        return;
    }
    let policy = RetryPolicy::new(3).backoff(Duration::from_millis(1), Duration::from_millis(20));
    let mut calls = 0;
    let result: io::Result<()> = policy.run(|| {
        calls += 1;
        Err(sparsebuf::HttpStatus {
            status: 503,
            retry_after: Some(Duration::from_secs(1_000_000)),
            message: "busy".into(),
        }
        .into_io())
    });
    assert!(result.is_err());
    assert_eq!(calls, 3);
}

/// Pins the bound on marks: with a consumer registered every write was marked, 24 bytes each,
/// outside the budgets (10 million 1-byte writes with a 1 MiB budget grew the process by
/// 230 MiB). Here 4 million: about 100 MiB before, a few KiB now.
#[test]
fn millions_of_tiny_writes_keep_their_marks_within_the_budget() {
    if parent(
        "millions_of_tiny_writes_keep_their_marks_within_the_budget",
        Duration::from_secs(300),
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (mut writer, buf) = StreamBuffer::builder()
        .memory_budget(1 << 20)
        .spill_dir(dir.path())
        .build_push()
        .unwrap();
    let seen = Arc::new(AtomicU64::new(0));
    let counted = seen.clone();
    let consumer = buf
        .emit(1 << 20)
        .clip(false)
        .start(move |chunk| {
            counted.fetch_add(chunk.len() as u64, Ordering::Relaxed);
            Ok(())
        })
        .unwrap();
    let before = rss_anon();
    let n = 4_000_000u64;
    for i in 0..n {
        writer.write_all(&[i as u8]).unwrap();
    }
    let grown = rss_anon().saturating_sub(before);
    writer.finish().unwrap();
    consumer.join().unwrap();
    assert_eq!(seen.load(Ordering::Relaxed), n);
    eprintln!("4 million 1-byte writes with a consumer: RssAnon grew {grown} bytes");
    if memory_is_measurable() {
        assert!(grown < 16 << 20, "the process grew by {grown} bytes");
    }
}

/// A sink that fails for good on its second chunk, and whose `abort` panics.
struct PanickyAbort(u32);

impl Sink for PanickyAbort {
    fn write_chunk(&mut self, _: u64, _: &[u8]) -> io::Result<()> {
        self.0 += 1;
        if self.0 == 2 {
            return Err(io::Error::new(io::ErrorKind::PermissionDenied, "the cause"));
        }
        Ok(())
    }
    fn finish(&mut self) -> io::Result<()> {
        Ok(())
    }
    fn abort(&mut self) {
        panic!("abort panicked");
    }
}

/// Pins panics in `Sink::abort`: caught. A thread sink's `join` gives the cause (it gave
/// "callback panicked"); an inline sink's panic no longer comes out of `Writer::write` and
/// fails the stream.
#[test]
fn a_panic_in_abort_is_caught_and_the_cause_is_reported() {
    if parent(
        "a_panic_in_abort_is_caught_and_the_cause_is_reported",
        LIMIT,
    ) {
        return;
    }
    let model = data(100_000, 4);
    for inline in [false, true] {
        let (mut writer, buf) = StreamBuffer::builder().build_push().unwrap();
        let emit = buf.emit(1000).retry(RetryPolicy::none());
        let emit = if inline { emit.run_inline() } else { emit };
        let consumer = emit.sink(PanickyAbort(0)).unwrap();
        writer.write_all(&model).unwrap();
        assert_eq!(writer.finish().unwrap(), model.len() as u64);
        let error = consumer.join().unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::PermissionDenied, "{error}");
        assert!(error.to_string().contains("the cause"), "{error}");
        assert!(buf.read_range(0..u64::MAX).unwrap() == model);
    }
}

/// Pins "dropping an inline consumer never waits": its callback runs on the writer's thread
/// and waits for a signal sent only after the drop returns; the drop used to wait for the
/// callback, so neither ever moved.
#[test]
fn dropping_an_inline_consumer_from_another_thread_never_waits() {
    if parent(
        "dropping_an_inline_consumer_from_another_thread_never_waits",
        LIMIT,
    ) {
        return;
    }
    let (mut writer, buf) = StreamBuffer::builder().build_push().unwrap();
    let (entered, in_callback) = mpsc::channel::<()>();
    let (go, gate) = mpsc::channel::<()>();
    let gate = std::sync::Mutex::new(gate);
    let calls = Arc::new(AtomicU64::new(0));
    let counted = calls.clone();
    let consumer = buf
        .emit(10)
        .run_inline()
        .start(move |_| {
            if counted.fetch_add(1, Ordering::SeqCst) == 0 {
                let _ = entered.send(());
                let _ = gate.lock().unwrap().recv();
            }
            Ok(())
        })
        .unwrap();
    let writing = std::thread::spawn(move || {
        writer.write_all(&[1u8; 100])?;
        writer.write_all(&[2u8; 100])?;
        writer.finish()
    });
    in_callback.recv().unwrap();
    drop(consumer); // from this thread, while the callback runs on the writer's
    go.send(()).unwrap();
    assert_eq!(writing.join().unwrap().unwrap(), 200);
    // Stopped after the chunk in flight: nothing more was delivered.
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

/// Pins "any sampler duration is a pause": `Duration::MAX` made thread and pool consumers
/// fail ("overflow when adding duration to instant"). A pause ends with the stream.
#[test]
fn a_sampler_asking_for_duration_max_pauses_until_the_end() {
    if parent(
        "a_sampler_asking_for_duration_max_pauses_until_the_end",
        LIMIT,
    ) {
        return;
    }
    let model = data(100_000, 5);
    let pool = Pool::new(2).unwrap();
    for place in 0..3 {
        let (mut writer, buf) = StreamBuffer::builder().build_push().unwrap();
        let emit = buf.emit(1000).sampler(|| Duration::MAX);
        let emit = match place {
            0 => emit,
            1 => emit.run_on_pool(&pool),
            _ => emit.run_inline(),
        };
        let consumer = emit.start(|chunk| Ok(chunk.len())).unwrap();
        for piece in model.chunks(1000) {
            writer.write_all(piece).unwrap();
        }
        writer.finish().unwrap();
        let report = consumer.join().unwrap();
        // The first chunk, then a pause to the end, then the (empty) last chunk.
        assert_eq!(report.bytes + report.skipped, model.len() as u64, "{place}");
        assert!(report.skipped > 0, "{place}: {report:?}");
    }
}

/// The same with an `HttpSink` whose server asks it to come back in eleven days
/// (`Retry-After: 1000000`): dropping the consumer frees the writer at once.
#[cfg(feature = "client")]
#[test]
fn a_dropped_http_sink_told_to_retry_after_eleven_days_frees_the_writer() {
    if parent(
        "a_dropped_http_sink_told_to_retry_after_eleven_days_frees_the_writer",
        LIMIT,
    ) {
        return;
    }
    let server =
        common::http_server::Recording::start(&["--status", "1:503", "--retry-after", "1000000"]);
    let model = data(1 << 20, 6);
    let (writer, buf) = tight();
    let sink = sparsebuf::HttpSink::put(format!("{}/up", server.url));
    let consumer = buf
        .emit(4096)
        .retry(RetryPolicy::new(5).backoff(Duration::from_secs(3600), Duration::from_secs(3600)))
        .sink(sink)
        .unwrap();
    let writing = push(writer, model.clone());
    wait_until("the server was asked once", || !server.log().is_empty());
    wait_until("the writer waits for the sink", || {
        buf.stats().writer_waits > 0
    });
    drop(consumer);
    assert_eq!(writing.join().unwrap().unwrap(), model.len() as u64);
}
