//! Async cursors (feature `tokio`): `AsyncReader`, `read_at_async` and `AsyncWrite` for the push
//! `Writer`, on pulled, pushed and ranged buffers, against the exact bytes.
//!
//! Most tests run on a current-thread runtime: a task that blocked its thread (on the source, a
//! condition variable or a window) would stall every other task there, and the timeout would
//! turn that into a failure.
#![cfg(feature = "tokio")]

mod common;

use std::io::{self, Cursor, SeekFrom};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{data, Rng, Scripted};
use sparsebuf::{RangeSource, StreamBuffer};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use tokio::time::timeout;

const LIMIT: Duration = Duration::from_secs(60);

fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A range source over a `Vec` that sleeps per read and counts its reads.
struct SlowRanges {
    data: Vec<u8>,
    delay: Duration,
    reads: AtomicUsize,
    fail_from: Option<u64>,
}

impl RangeSource for SlowRanges {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        std::thread::sleep(self.delay);
        if self
            .fail_from
            .is_some_and(|at| offset + buf.len() as u64 > at)
        {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "scripted fetch failure",
            ));
        }
        let start = (offset as usize).min(self.data.len());
        let n = buf.len().min(self.data.len() - start);
        buf[..n].copy_from_slice(&self.data[start..start + n]);
        Ok(n)
    }

    fn len(&self) -> Option<u64> {
        Some(self.data.len() as u64)
    }
}

#[test]
fn many_tasks_on_one_thread_read_a_slow_pulled_stream_whole() {
    let model = data(3 << 20, 1);
    // 4 KiB reads with a pause every read: the stream arrives over about a second.
    let source = Scripted::new(model.clone(), 16 * 1024).delay(Duration::from_millis(5));
    let buffer = StreamBuffer::builder()
        .segment_size(64 * 1024)
        .memory_budget(1 << 20)
        .build(source)
        .unwrap();
    current_thread().block_on(async {
        let tasks: Vec<_> = (0..32)
            .map(|i| {
                let buffer = buffer.clone();
                tokio::spawn(async move {
                    let mut cursor = buffer.async_reader();
                    let mut got = Vec::new();
                    if i % 2 == 0 {
                        cursor.read_to_end(&mut got).await?;
                    } else {
                        // Through AsyncBufRead, in the cursor's own chunks.
                        loop {
                            let piece = cursor.fill_buf().await?;
                            if piece.is_empty() {
                                break;
                            }
                            let n = piece.len();
                            got.extend_from_slice(piece);
                            cursor.consume(n);
                        }
                    }
                    io::Result::Ok(got)
                })
            })
            .collect();
        for task in tasks {
            let got = timeout(LIMIT, task)
                .await
                .expect("no hang")
                .unwrap()
                .unwrap();
            assert!(got == model, "a task read different bytes");
        }
    });
    assert_eq!(buffer.len(), Some(model.len() as u64));
    // Pulled once, whatever the number of tasks.
    assert_eq!(buffer.stats().source_bytes, model.len() as u64);
}

#[test]
fn sync_readers_and_async_tasks_share_one_buffer() {
    let model = data(2 << 20, 2);
    let source = Scripted::new(model.clone(), 8 * 1024).delay(Duration::from_millis(1));
    let buffer = StreamBuffer::builder()
        .segment_size(32 * 1024)
        .memory_budget(256 * 1024)
        .build(source)
        .unwrap();
    let threads: Vec<_> = (0..3u64)
        .map(|seed| {
            let (buffer, model) = (buffer.clone(), model.clone());
            std::thread::spawn(move || {
                let mut rng = Rng(seed + 10);
                for _ in 0..200 {
                    let at = rng.below(model.len() as u64);
                    let mut buf = vec![0u8; 1 + rng.below(40_000) as usize];
                    let n = buffer.read_at(at, &mut buf).unwrap();
                    assert_eq!(buf[..n], model[at as usize..at as usize + n]);
                }
            })
        })
        .collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let tasks: Vec<_> = (0..16u64)
            .map(|seed| {
                let (buffer, model) = (buffer.clone(), model.clone());
                tokio::spawn(async move {
                    let mut rng = Rng(seed);
                    let mut cursor = buffer.async_reader();
                    for _ in 0..50 {
                        let at = rng.below(model.len() as u64);
                        let mut buf = vec![0u8; 1 + rng.below(100_000) as usize];
                        if rng.below(2) == 0 {
                            cursor.seek(SeekFrom::Start(at)).await.unwrap();
                            let n = cursor.read(&mut buf).await.unwrap();
                            assert!(n > 0);
                            assert_eq!(buf[..n], model[at as usize..at as usize + n]);
                        } else {
                            let n = buffer.read_at_async(at, &mut buf).await.unwrap();
                            let want = buf.len().min(model.len() - at as usize);
                            assert_eq!(n, want, "read_at_async is short only at the end");
                            assert_eq!(buf[..n], model[at as usize..at as usize + n]);
                        }
                    }
                })
            })
            .collect();
        for task in tasks {
            timeout(LIMIT, task).await.expect("no hang").unwrap();
        }
    });
    for t in threads {
        t.join().unwrap();
    }
}

#[test]
fn a_push_writer_task_waits_on_a_waker_for_reader_tasks_holding_the_budgets() {
    // 8 MiB through budgets of 512 KiB, with a window larger than the stream: the writer may drop
    // only segments no reader holds, so it must wait for the reader tasks, on a waker, since
    // they all share one thread.
    let model = data(8 << 20, 3);
    let (writer, buffer) = StreamBuffer::builder()
        .segment_size(64 * 1024)
        .memory_budget(256 * 1024)
        .disk_budget(256 * 1024)
        .window(64 << 20)
        .build_push()
        .unwrap();
    current_thread().block_on(async {
        let readers: Vec<_> = (0..4)
            .map(|_| buffer.async_reader())
            .map(|mut cursor| {
                tokio::spawn(async move {
                    let mut got = Vec::new();
                    cursor.read_to_end(&mut got).await.map(|_| got)
                })
            })
            .collect();
        let source = model.clone();
        let producer = tokio::spawn(async move {
            let mut writer = writer;
            for piece in source.chunks(10_007) {
                writer.write_all(piece).await?;
            }
            writer.shutdown().await
        });
        timeout(LIMIT, producer)
            .await
            .expect("no hang")
            .unwrap()
            .unwrap();
        for reader in readers {
            let got = timeout(LIMIT, reader)
                .await
                .expect("no hang")
                .unwrap()
                .unwrap();
            assert!(got == model, "a reader task read different bytes");
        }
    });
    let stats = buffer.stats();
    assert!(
        stats.writer_waits > 0,
        "the window must have held the writer back"
    );
    assert_eq!(buffer.len(), Some(model.len() as u64));
}

#[test]
fn a_ranged_source_is_fetched_off_the_task_and_sought_around() {
    let model = data(4 << 20, 4);
    let source = SlowRanges {
        data: model.clone(),
        delay: Duration::from_millis(2),
        reads: AtomicUsize::new(0),
        fail_from: None,
    };
    let buffer = StreamBuffer::builder()
        .segment_size(64 * 1024)
        .memory_budget(512 * 1024)
        .build_ranged(source)
        .unwrap();
    current_thread().block_on(async {
        let tasks: Vec<_> = (0..8u64)
            .map(|seed| {
                let (buffer, model) = (buffer.clone(), model.clone());
                tokio::spawn(async move {
                    let mut rng = Rng(seed + 100);
                    let mut cursor = buffer.async_reader();
                    for _ in 0..40 {
                        let at = rng.below(model.len() as u64 + 10);
                        let mut buf = vec![0u8; 1 + rng.below(70_000) as usize];
                        cursor.seek(SeekFrom::Start(at)).await.unwrap();
                        let n = cursor.read(&mut buf).await.unwrap();
                        let end = (at as usize + n).min(model.len());
                        if at as usize >= model.len() {
                            assert_eq!(n, 0, "past the end");
                        } else {
                            assert!(n > 0);
                            assert_eq!(buf[..n], model[at as usize..end]);
                        }
                    }
                    let mut tail = vec![0u8; 1000];
                    let at = cursor.seek(SeekFrom::End(-1000)).await.unwrap();
                    assert_eq!(at, model.len() as u64 - 1000);
                    cursor.read_exact(&mut tail).await.unwrap();
                    assert_eq!(tail, model[model.len() - 1000..]);
                })
            })
            .collect();
        for task in tasks {
            timeout(LIMIT, task).await.expect("no hang").unwrap();
        }
    });
}

#[test]
fn a_failing_source_fails_every_waiting_task() {
    let model = data(1 << 20, 5);
    let fail_at = 700_000;
    let source = Scripted::new(model.clone(), 4096)
        .delay(Duration::from_millis(1))
        .fail_at(fail_at, io::ErrorKind::ConnectionAborted);
    let buffer = StreamBuffer::builder()
        .segment_size(64 * 1024)
        .build(source)
        .unwrap();
    current_thread().block_on(async {
        let tasks: Vec<_> = (0..10u64)
            .map(|i| {
                let buffer = buffer.clone();
                tokio::spawn(async move {
                    let mut cursor = buffer.async_reader_at(i * 50_000);
                    let mut got = Vec::new();
                    let err = cursor.read_to_end(&mut got).await.unwrap_err();
                    (i * 50_000, got, err)
                })
            })
            .collect();
        for task in tasks {
            let (start, got, err) = timeout(LIMIT, task).await.expect("no hang").unwrap();
            assert_eq!(err.kind(), io::ErrorKind::ConnectionAborted, "{err}");
            assert_eq!(got, model[start as usize..fail_at]);
        }
    });
    let ranged = StreamBuffer::builder()
        .segment_size(64 * 1024)
        .build_ranged(SlowRanges {
            data: model.clone(),
            delay: Duration::ZERO,
            reads: AtomicUsize::new(0),
            fail_from: Some(fail_at as u64),
        })
        .unwrap();
    current_thread().block_on(async {
        let mut buf = vec![0u8; 100_000];
        let err = ranged.read_at_async(650_000, &mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionReset);
        let n = ranged.read_at_async(0, &mut buf).await.unwrap();
        assert_eq!(buf[..n], model[..100_000]);
    });
}

#[test]
fn a_dropped_read_loses_nothing_and_the_next_one_completes() {
    let model = data(600_000, 6);
    let (mut writer, buffer) = StreamBuffer::builder().build_push().unwrap();
    current_thread().block_on(async {
        let mut cursor = buffer.async_reader();
        let mut buf = vec![0u8; 1000];
        // Nothing written yet: the read waits, and is dropped by the timeout.
        let waited = timeout(Duration::from_millis(50), cursor.read(&mut buf)).await;
        assert!(
            waited.is_err(),
            "no bytes yet, so the read must still be waiting"
        );
        // Cancelled `read_at_async` too.
        let waited = timeout(Duration::from_millis(20), buffer.read_at_async(0, &mut buf)).await;
        assert!(waited.is_err());
        let source = model.clone();
        let producer = tokio::spawn(async move {
            for piece in source.chunks(7_000) {
                writer.write_all(piece).await?;
                tokio::task::yield_now().await;
            }
            writer.shutdown().await?;
            // Finished: a later write is misuse.
            let late = writer.write(b"late").await.unwrap_err();
            assert_eq!(late.kind(), io::ErrorKind::InvalidInput);
            io::Result::Ok(())
        });
        let mut got = Vec::new();
        timeout(LIMIT, cursor.read_to_end(&mut got))
            .await
            .expect("no hang")
            .unwrap();
        assert!(got == model);
        producer.await.unwrap().unwrap();
        // From the end of a finished stream.
        let at = cursor.seek(SeekFrom::End(-10)).await.unwrap();
        assert_eq!(at, model.len() as u64 - 10);
        let mut tail = Vec::new();
        cursor.read_to_end(&mut tail).await.unwrap();
        assert_eq!(tail, model[model.len() - 10..]);
    });
}

#[test]
fn seeking_from_the_end_of_an_unknown_length_waits_for_the_end_off_the_task() {
    let model = data(300_000, 7);
    let source = Scripted::new(model.clone(), 1000).delay(Duration::from_micros(200));
    let buffer = StreamBuffer::new(source);
    current_thread().block_on(async {
        // A ticking task on the same thread proves the seek does not block it.
        let ticks = tokio::spawn(async {
            let mut n = 0u32;
            for _ in 0..20 {
                tokio::time::sleep(Duration::from_millis(5)).await;
                n += 1;
            }
            n
        });
        let mut cursor = buffer.async_reader();
        let at = timeout(LIMIT, cursor.seek(SeekFrom::End(-100)))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(at, model.len() as u64 - 100);
        let mut tail = Vec::new();
        cursor.read_to_end(&mut tail).await.unwrap();
        assert_eq!(tail, model[model.len() - 100..]);
        assert_eq!(ticks.await.unwrap(), 20);
        let err = cursor
            .seek(SeekFrom::Current(-1_000_000))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert_eq!(cursor.position(), model.len() as u64);
    });
}

#[test]
fn a_read_reaching_past_a_declared_end_is_pulled_to_the_end() {
    // A read near the end asks for more than is left: the pulling thread must stop at the end
    // rather than wait for bytes past it (it once waited for nothing, and the task hung).
    let model = data(1_000_000, 10);
    let source = Scripted::new(model.clone(), 50_000).delay(Duration::from_millis(1));
    let buffer = StreamBuffer::builder()
        .len(model.len() as u64)
        .build(source)
        .unwrap();
    current_thread().block_on(async {
        let mut tail = vec![0u8; 200_000];
        let at = model.len() as u64 - 1000;
        let n = timeout(LIMIT, buffer.read_at_async(at, &mut tail))
            .await
            .expect("no hang")
            .unwrap();
        assert_eq!(tail[..n], model[at as usize..]);
        let mut cursor = buffer.async_reader_at(at - 10);
        let mut rest = Vec::new();
        cursor.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, model[at as usize - 10..]);
    });
}

#[test]
fn read_at_async_at_odd_offsets_matches_read_at() {
    let model = data(200_000, 8);
    let buffer = StreamBuffer::new(Cursor::new(model.clone()));
    current_thread().block_on(async {
        for (at, len) in [
            (0u64, 0usize),
            (0, 1),
            (199_999, 10),
            (200_000, 5),
            (10, 150_000),
        ] {
            let mut a = vec![0u8; len];
            let mut b = vec![0u8; len];
            let n = buffer.read_at_async(at, &mut a).await.unwrap();
            let m = buffer.read_at(at, &mut b).unwrap();
            assert_eq!((n, &a[..n]), (m, &b[..m]));
            let end = (at as usize + len).min(model.len()).max(at as usize);
            assert_eq!(a[..n], model[(at as usize).min(model.len())..end]);
        }
        let err = buffer
            .read_at_async(u64::MAX, &mut [0u8; 2])
            .await
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    });
}

#[test]
fn outside_a_runtime_a_ranged_cursor_still_works() {
    // Polled by a minimal executor with no tokio runtime: fetches run on threads of their own.
    let model = data(300_000, 9);
    let buffer = StreamBuffer::builder()
        .build_ranged(SlowRanges {
            data: model.clone(),
            delay: Duration::ZERO,
            reads: AtomicUsize::new(0),
            fail_from: None,
        })
        .unwrap();
    let got = block_on_plain(async move {
        let mut got = Vec::new();
        buffer
            .async_reader()
            .read_to_end(&mut got)
            .await
            .map(|_| got)
    })
    .unwrap();
    assert!(got == model);
}

/// Runs a future to completion on this thread, parking between polls (no tokio runtime).
fn block_on_plain<F: std::future::Future>(future: F) -> F::Output {
    use std::task::{Context, Poll, Wake, Waker};
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    let deadline = std::time::Instant::now() + LIMIT;
    loop {
        if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
        assert!(std::time::Instant::now() < deadline, "hang");
        std::thread::park_timeout(Duration::from_millis(100));
    }
}
