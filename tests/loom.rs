//! Model checking of the publish/wait protocol, and of a windowed writer's (pulled or pushed)
//! wait for cursors and fan-out consumers, with loom:
//!
//! ```sh
//! RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 cargo test --release --test loom
//! ```
//!
//! The buffer's locks, condvar and atomics are loom's in this build (see `src/sync.rs`); the
//! spill storage is on the heap. Every interleaving loom explores must give each reader the
//! source's bytes, with no lost wake-up (loom reports a deadlock if a waiter is never woken).
#![cfg(loom)]

use std::io;
use std::sync::Mutex;

use loom::thread;
use sparsebuf::{Location, SpillStorage, StreamBuffer};

#[derive(Default)]
struct Heap(Mutex<Vec<u8>>);

impl SpillStorage for Heap {
    fn reserve(&self, end: u64) -> io::Result<()> {
        let mut v = self.0.lock().unwrap();
        if v.len() < end as usize {
            v.resize(end as usize, 0);
        }
        Ok(())
    }
    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        let at = offset as usize;
        self.0.lock().unwrap()[at..at + data.len()].copy_from_slice(data);
        Ok(())
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let at = offset as usize;
        buf.copy_from_slice(&self.0.lock().unwrap()[at..at + buf.len()]);
        Ok(())
    }
    fn len(&self) -> u64 {
        self.0.lock().unwrap().len() as u64
    }
}

const SEGMENT: usize = 256;

/// Two segments and a bit, in three chunks: three publishes, two spills with a zero budget.
fn source() -> Vec<u8> {
    (0..2 * SEGMENT as u32 + 7).map(|i| (i * 7) as u8).collect()
}

fn buffer(data: &[u8]) -> StreamBuffer {
    let chunks = vec![
        Ok::<_, io::Error>(data[..300].to_vec()),
        Ok(data[300..SEGMENT * 2].to_vec()),
        Ok(data[SEGMENT * 2..].to_vec()),
    ];
    StreamBuffer::builder()
        .segment_size(SEGMENT)
        .memory_budget(0)
        .spill_storage(Heap::default())
        .build_chunks(chunks)
        .unwrap()
}

/// Reads `cursor` to the end in 600-byte reads, checking every byte against `data`.
fn read_to_the_end(cursor: &mut sparsebuf::Reader, data: &[u8]) {
    use std::io::Read;
    let mut pos = 0;
    let mut dst = [0u8; 600];
    loop {
        let n = cursor.read(&mut dst).unwrap();
        if n == 0 {
            break;
        }
        assert_eq!(dst[..n], data[pos..pos + n]);
        pos += n;
    }
    assert_eq!(pos, data.len());
}

#[test]
fn readers_waiting_for_the_writer_get_the_right_bytes() {
    loom::model(|| {
        let data = source();
        let buf = buffer(&data);
        let (b, d) = (buf.clone(), data.clone());
        // Needs the last chunk: becomes the writer or waits for whoever is.
        let far = thread::spawn(move || {
            let mut dst = [0u8; 4];
            b.read_exact_at(SEGMENT as u64 * 2 + 2, &mut dst).unwrap();
            assert_eq!(dst, d[SEGMENT * 2 + 2..][..4]);
        });
        // Needs the first chunk only.
        let mut dst = [0u8; 10];
        buf.read_exact_at(250, &mut dst).unwrap();
        assert_eq!(dst, data[250..260]);
        far.join().unwrap();
        assert_eq!(buf.read_range(0..u64::MAX).unwrap(), data);
    });
}

#[test]
fn a_polling_reader_sees_published_bytes() {
    loom::model(|| {
        let data = source();
        let buf = buffer(&data);
        let (b, d) = (buf.clone(), data.clone());
        // Polls without ever pulling: relies on the other thread's publishes.
        let poller = thread::spawn(move || {
            while b.location(0, 300) != Location::BeforeIndex {
                thread::yield_now();
            }
            let mut dst = [0u8; 300];
            b.read_exact_at(0, &mut dst).unwrap();
            assert_eq!(dst[..], d[..300]);
        });
        assert_eq!(buf.fill_to_end().unwrap(), data.len() as u64);
        poller.join().unwrap();
    });
}

#[test]
fn a_windowed_writer_waits_for_a_cursor_and_wakes_when_it_moves() {
    loom::model(|| {
        let data = source();
        let chunks = vec![
            Ok::<_, io::Error>(data[..300].to_vec()),
            Ok(data[300..SEGMENT * 2].to_vec()),
            Ok(data[SEGMENT * 2..].to_vec()),
        ];
        // Room for one full segment and nothing on disk: the writer must drop the oldest
        // segment before each new one, and the cursor (held on this thread) may stop it.
        let buf = StreamBuffer::builder()
            .segment_size(SEGMENT)
            .memory_budget(SEGMENT)
            .disk_budget(0)
            .window(1 << 20)
            .build_chunks(chunks)
            .unwrap();
        let mut cursor = buf.reader();
        let (b, d) = (buf.clone(), data.clone());
        let far = thread::spawn(move || {
            let mut dst = [0u8; 4];
            b.read_exact_at(SEGMENT as u64 * 2 + 2, &mut dst).unwrap();
            assert_eq!(dst, d[SEGMENT * 2 + 2..][..4]);
        });
        read_to_the_end(&mut cursor, &data);
        drop(cursor);
        far.join().unwrap();
    });
}

/// A push writer on a window its budgets cannot hold: it waits for a cursor that another
/// thread reads, and wakes when the cursor moves; the cursor gets every byte.
#[test]
fn a_push_writer_waits_for_a_cursor_and_wakes_when_it_moves() {
    use std::io::Write;
    loom::model(|| {
        let data = source();
        let (mut writer, buf) = StreamBuffer::builder()
            .segment_size(SEGMENT)
            .memory_budget(SEGMENT)
            .disk_budget(0)
            .window(1 << 20)
            .build_push()
            .unwrap();
        // The cursor belongs to this thread; the writer runs on another, so it waits for it.
        let mut cursor = buf.reader();
        let d = data.clone();
        let producer = thread::spawn(move || {
            writer.write_all(&d[..300]).unwrap();
            writer.write_all(&d[300..]).unwrap();
            writer.finish().unwrap()
        });
        read_to_the_end(&mut cursor, &data);
        assert_eq!(producer.join().unwrap(), data.len() as u64);
    });
}

/// A push writer whose window is one segment waits for a consumer thread's pinned hold before
/// each new segment, and wakes when the consumer takes its bytes; the consumer gets every byte,
/// cut in exact chunks with one last chunk.
#[test]
fn a_push_writer_waits_for_a_consumer_and_wakes_when_it_takes_its_bytes() {
    use std::io::Write;
    use std::sync::{Arc, Mutex};
    loom::model(|| {
        let data = source();
        let (mut writer, buf) = StreamBuffer::builder()
            .segment_size(SEGMENT)
            .memory_budget(2 * SEGMENT)
            .disk_budget(0)
            .window(SEGMENT as u64)
            .build_push()
            .unwrap();
        let got = Arc::new(Mutex::new(Vec::new()));
        let sink = got.clone();
        let consumer = buf
            .emit(200)
            .start(move |chunk| {
                let mut got = sink.lock().unwrap();
                assert_eq!(chunk.offset(), got.len() as u64);
                got.extend_from_slice(&chunk);
                Ok(chunk.is_last())
            })
            .unwrap();
        let d = data.clone();
        let producer = thread::spawn(move || {
            writer.write_all(&d).unwrap();
            writer.finish().unwrap()
        });
        let report = consumer.join().unwrap();
        assert_eq!(producer.join().unwrap(), data.len() as u64);
        assert_eq!((report.bytes, report.skipped), (data.len() as u64, 0));
        assert_eq!(*got.lock().unwrap(), data);
    });
}

/// An inline consumer started while a push writer runs on another thread: the bytes published
/// before it registered are delivered by `start` (holding the window meanwhile), the rest by
/// the writer; either way every byte from where it started arrives once, in order. (The budgets
/// hold two segments, the one being filled included, so the writer may have dropped the first
/// segment before the consumer started: it then starts at the window start.)
#[test]
fn an_inline_consumer_started_mid_stream_gets_every_byte_once() {
    use std::io::Write;
    use std::sync::{Arc, Mutex};
    loom::model(|| {
        let data = source();
        let (mut writer, buf) = StreamBuffer::builder()
            .segment_size(SEGMENT)
            .memory_budget(2 * SEGMENT)
            .disk_budget(0)
            .window(2 * SEGMENT as u64)
            .build_push()
            .unwrap();
        let d = data.clone();
        let producer = thread::spawn(move || {
            writer.write_all(&d[..300]).unwrap();
            writer.write_all(&d[300..]).unwrap();
            writer.finish().unwrap()
        });
        // (first offset, bytes from there)
        let got = Arc::new(Mutex::new((None::<u64>, Vec::new())));
        let sink = got.clone();
        let consumer = buf
            .emit(100)
            .run_inline()
            .start(move |chunk| {
                let mut got = sink.lock().unwrap();
                let first = *got.0.get_or_insert(chunk.offset());
                assert_eq!(chunk.offset(), first + got.1.len() as u64);
                got.1.extend_from_slice(&chunk);
                Ok(())
            })
            .unwrap();
        let report = consumer.join().unwrap();
        assert_eq!(producer.join().unwrap(), data.len() as u64);
        let got = got.lock().unwrap();
        let first = got.0.unwrap();
        assert!(first == 0 || first == SEGMENT as u64, "{first}");
        assert_eq!(report.skipped, first);
        assert_eq!(got.1, data[first as usize..]);
    });
}

/// A push writer parked behind a cursor of the thread that then reads far ahead: that read
/// fails with `WindowFull` instead of waiting for the writer, which waits for it (a hang). The
/// writer's park wakes readers that looked before it.
#[test]
fn a_push_reader_whose_own_cursor_blocks_the_writer_fails_instead_of_waiting() {
    use std::io::Write;
    loom::model(|| {
        let data = source();
        let (mut writer, buf) = StreamBuffer::builder()
            .segment_size(SEGMENT)
            .memory_budget(SEGMENT)
            .disk_budget(0)
            .window(1 << 20)
            .build_push()
            .unwrap();
        let cursor = buf.reader(); // holds offset 0, owned by this thread
        let d = data.clone();
        let producer = thread::spawn(move || {
            writer.write_all(&d).unwrap();
            writer.finish().unwrap()
        });
        let mut dst = [0u8; 4];
        let error = buf
            .read_exact_at(SEGMENT as u64 * 2 + 2, &mut dst)
            .unwrap_err();
        assert!(matches!(
            error.get_ref().and_then(|e| e.downcast_ref()),
            Some(sparsebuf::Error::WindowFull { .. })
        ));
        drop(cursor);
        assert_eq!(producer.join().unwrap(), data.len() as u64);
    });
}

/// An inline sink consumer dropped on one thread while the writer feeds it on another: the drop
/// never waits for the feeding, and the consumer always ends, finished or aborted (a stop that
/// found the feeding lock taken once left it neither).
#[test]
fn an_inline_consumer_dropped_while_fed_always_ends() {
    use std::io::Write;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    struct Ends(Arc<AtomicUsize>);
    impl sparsebuf::Sink for Ends {
        fn write_chunk(&mut self, _: u64, _: &[u8]) -> io::Result<()> {
            Ok(())
        }
        fn finish(&mut self) -> io::Result<()> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
        fn abort(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    loom::model(|| {
        let data = source();
        let (mut writer, buf) = StreamBuffer::builder()
            .segment_size(SEGMENT)
            .build_push()
            .unwrap();
        let ends = Arc::new(AtomicUsize::new(0));
        let consumer = buf
            .emit(300)
            .run_inline()
            .retry(sparsebuf::RetryPolicy::none())
            .sink(Ends(ends.clone()))
            .unwrap();
        let d = data.clone();
        let producer = thread::spawn(move || {
            writer.write_all(&d[..300]).unwrap();
            writer.write_all(&d[300..]).unwrap();
            writer.finish().unwrap()
        });
        drop(consumer);
        assert_eq!(producer.join().unwrap(), data.len() as u64);
        assert_eq!(ends.load(Ordering::SeqCst), 1, "finished or aborted, once");
        assert_eq!(buf.registered_consumers(), 0, "it ended: unregistered");
    });
}

/// Async cursors (feature `tokio`): a task's waker is registered beside the condition
/// variable, and a publish between the task's look and its registration is never missed.
#[cfg(feature = "tokio")]
mod wakers {
    use super::*;
    use loom::sync::Notify;
    use std::pin::Pin;
    use std::sync::Arc;
    use std::task::{Context, Poll, Wake, Waker};
    use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

    /// A waker that a blocked "task" thread waits on (loom's `Notify` keeps a wake that came
    /// before the wait, as a real executor would).
    struct Wakeup(Notify);

    impl Wake for Wakeup {
        fn wake(self: Arc<Self>) {
            self.0.notify();
        }
    }

    /// Polls `f` until it is ready, sleeping on the waker in between: a one-task executor.
    fn run<T>(mut f: impl FnMut(&mut Context<'_>) -> Poll<T>) -> T {
        let wakeup = Arc::new(Wakeup(Notify::new()));
        let waker = Waker::from(wakeup.clone());
        let mut cx = Context::from_waker(&waker);
        loop {
            if let Poll::Ready(out) = f(&mut cx) {
                return out;
            }
            wakeup.0.wait();
        }
    }

    fn read_all(cursor: &mut sparsebuf::AsyncReader) -> Vec<u8> {
        let mut got = Vec::new();
        loop {
            let mut dst = [0u8; 200];
            let n = run(|cx| {
                let mut buf = ReadBuf::new(&mut dst);
                Pin::new(&mut *cursor)
                    .poll_read(cx, &mut buf)
                    .map(|r| r.map(|()| buf.filled().len()))
            })
            .unwrap();
            if n == 0 {
                return got;
            }
            got.extend_from_slice(&dst[..n]);
        }
    }

    #[test]
    fn a_task_waiting_on_a_push_stream_is_woken_by_each_write() {
        loom::model(|| {
            let data = source();
            let (mut writer, buf) = StreamBuffer::builder()
                .segment_size(SEGMENT)
                .build_push()
                .unwrap();
            let d = data.clone();
            let producer = thread::spawn(move || {
                use std::io::Write;
                writer.write_all(&d[..300]).unwrap();
                writer.write_all(&d[300..]).unwrap();
                writer.finish().unwrap();
            });
            let mut cursor = buf.async_reader();
            assert_eq!(read_all(&mut cursor), data);
            producer.join().unwrap();
        });
    }

    #[test]
    fn a_task_on_a_pulled_stream_is_served_by_the_pulling_thread() {
        loom::model(|| {
            let data = source();
            // Two chunks, all in RAM (no spill thread): the model is the task, the pulling
            // thread and their wake-ups.
            let chunks = vec![
                Ok::<_, io::Error>(data[..300].to_vec()),
                Ok(data[300..].to_vec()),
            ];
            let buf = StreamBuffer::builder()
                .segment_size(SEGMENT)
                .build_chunks(chunks)
                .unwrap();
            // The task never pulls: the background thread it starts does, and wakes it.
            let mut cursor = buf.async_reader();
            assert_eq!(read_all(&mut cursor), data);
            buf.join_pulling_threads();
        });
    }

    #[test]
    fn an_async_writer_held_back_by_a_cursor_is_woken_when_it_moves() {
        loom::model(|| {
            let data = source();
            // One segment of RAM, none on disk, a window wider than the stream: the writer
            // cannot start the third segment before the cursor leaves the first.
            let (mut writer, buf) = StreamBuffer::builder()
                .segment_size(SEGMENT)
                .memory_budget(SEGMENT)
                .disk_budget(0)
                .window(1 << 20)
                .build_push()
                .unwrap();
            let mut cursor = buf.reader();
            let d = data.clone();
            let producer = thread::spawn(move || {
                let mut at = 0;
                while at < d.len() {
                    let n = run(|cx| Pin::new(&mut writer).poll_write(cx, &d[at..])).unwrap();
                    at += n;
                }
                run(|cx| Pin::new(&mut writer).poll_shutdown(cx)).unwrap();
            });
            read_to_the_end(&mut cursor, &data);
            producer.join().unwrap();
        });
    }
}
