//! Building buffers from async code (feature `tokio`): `build_async_read` over a tokio
//! `AsyncRead`, read by sync and async readers at once against the exact bytes, and
//! `build_url_async` (with `client`), which lets other tasks of a current-thread runtime run
//! while the upstream takes its time.
#![cfg(feature = "tokio")]

mod common;

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use common::{data, Rng};
use sparsebuf::StreamBuffer;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncSeekExt, ReadBuf};

/// An async source over a `Vec`: chunks of varying sizes, and `Pending` (woken at once) every
/// few reads, as a network body gives them.
struct Trickle {
    data: Vec<u8>,
    at: usize,
    rng: Rng,
    fail_at: Option<usize>,
}

impl AsyncRead for Trickle {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.rng.below(4) == 0 {
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        if self.fail_at.is_some_and(|at| self.at >= at) {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "the async source failed",
            )));
        }
        let chunk = 1 + self.rng.below(20_000) as usize;
        let n = chunk
            .min(buf.remaining())
            .min(self.data.len() - self.at)
            .min(self.fail_at.map_or(usize::MAX, |at| at - self.at));
        let at = self.at;
        buf.put_slice(&self.data[at..at + n]);
        self.at += n;
        Poll::Ready(Ok(()))
    }
}

fn trickle(data: Vec<u8>, seed: u64) -> Trickle {
    Trickle {
        data,
        at: 0,
        rng: Rng(seed),
        fail_at: None,
    }
}

#[test]
fn an_async_source_gives_exact_bytes_to_sync_and_async_readers_at_once() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let model = data(6 << 20, 11);
    let buffer = rt.block_on(async {
        StreamBuffer::builder()
            .memory_budget(1 << 20)
            .build_async_read(trickle(model.clone(), 1))
            .unwrap()
    });
    // Two sync threads read random ranges while two tasks read sequentially and seek.
    let threads: Vec<_> = (0..2)
        .map(|t| {
            let (buffer, model) = (buffer.clone(), model.clone());
            std::thread::spawn(move || {
                let mut rng = Rng(100 + t);
                for _ in 0..200 {
                    let at = rng.below(model.len() as u64);
                    let len = 1 + rng.below(100_000);
                    let got = buffer.read_range(at..at + len).unwrap();
                    let end = (at + len).min(model.len() as u64) as usize;
                    assert!(got[..] == model[at as usize..end], "sync read at {at}");
                }
            })
        })
        .collect();
    rt.block_on(async {
        let tasks: Vec<_> = (0..2)
            .map(|t| {
                let (buffer, model) = (buffer.clone(), model.clone());
                tokio::spawn(async move {
                    let mut cursor = buffer.async_reader();
                    let mut all = Vec::new();
                    cursor.read_to_end(&mut all).await.unwrap();
                    assert!(all == model, "task {t} read to the end");
                    let back = (t as u64 + 1) * 1_000_000;
                    cursor.seek(io::SeekFrom::Start(back)).await.unwrap();
                    let mut piece = vec![0u8; 50_000];
                    cursor.read_exact(&mut piece).await.unwrap();
                    assert!(piece[..] == model[back as usize..back as usize + 50_000]);
                })
            })
            .collect();
        for task in tasks {
            tokio::time::timeout(Duration::from_secs(60), task)
                .await
                .expect("an async reader hung")
                .unwrap();
        }
    });
    for thread in threads {
        thread.join().unwrap();
    }
    assert_eq!(buffer.len(), Some(model.len() as u64));
    assert!(buffer.read_range(0..u64::MAX).unwrap() == model);
}

#[test]
fn an_async_source_is_read_only_as_far_as_readers_need_and_its_failure_reaches_them() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let model = data(2 << 20, 12);
    let mut source = trickle(model.clone(), 2);
    source.fail_at = Some(1_500_000);
    rt.block_on(async {
        let buffer = StreamBuffer::builder().build_async_read(source).unwrap();
        // Only what the first read needed was pulled (a segment or so past it).
        let mut head = vec![0u8; 100_000];
        buffer.read_at_async(0, &mut head).await.unwrap();
        assert!(head[..] == model[..100_000]);
        let filled = buffer.stats().filled_bytes;
        assert!(filled < 400_000, "pulled {filled} bytes for a 100 kB read");
        // Past the failure: the source's error, for this reader and the next.
        let mut cursor = buffer.async_reader_at(1_400_000);
        let mut rest = Vec::new();
        let error = cursor.read_to_end(&mut rest).await.unwrap_err();
        assert!(
            error.to_string().contains("the async source failed"),
            "{error}"
        );
        assert!(rest[..] == model[1_400_000..1_400_000 + rest.len()]);
        let error = buffer
            .read_at_async(1_600_000, &mut head)
            .await
            .unwrap_err();
        assert!(
            error.to_string().contains("the async source failed"),
            "{error}"
        );
    });
}

#[test]
fn build_async_read_outside_a_runtime_is_invalid_input() {
    let error = StreamBuffer::builder()
        .build_async_read(trickle(vec![1, 2, 3], 3))
        .unwrap_err();
    assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
}

#[cfg(feature = "client")]
#[test]
fn build_url_async_lets_a_ticker_on_the_same_thread_tick_while_the_upstream_stalls() {
    use common::origin::{Behaviour, Origin};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    let model = Arc::new(data(1 << 20, 13));
    let origin = Origin::start(
        model.clone(),
        Behaviour {
            latency: Duration::from_secs(2),
            ..Behaviour::default()
        },
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let ticks = Arc::new(AtomicUsize::new(0));
    rt.block_on(async {
        let counted = ticks.clone();
        let ticker = tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(10)).await;
                counted.fetch_add(1, Ordering::Relaxed);
            }
        });
        // The probe waits 2 s for its answer; the ticker runs meanwhile.
        let buffer = StreamBuffer::builder()
            .build_url_async(&origin.url)
            .await
            .unwrap();
        let during = ticks.load(Ordering::Relaxed);
        assert!(during >= 50, "the ticker ticked {during} times in 2 s");
        // Async reads of it do not block the thread either (each fetch waits 2 s too).
        let before = ticks.load(Ordering::Relaxed);
        let mut tail = vec![0u8; 1000];
        buffer
            .read_at_async(model.len() as u64 - 1000, &mut tail)
            .await
            .unwrap();
        assert!(tail[..] == model[model.len() - 1000..]);
        assert!(ticks.load(Ordering::Relaxed) - before >= 50);
        ticker.abort();
    });
}
