//! Live streams: a cursor drains a stream as it is pulled (64 KiB reads), with no window, with a
//! window the budgets hold, and with a window larger than the budgets (the writer drops the
//! oldest segment before each new one and checks the cursor's hold). Baseline in the same
//! group: draining a `Cursor<Vec<u8>>` of the same bytes (a copy out of RAM, no source).
//!
//! A second group measures backpressure: a cursor trails a reader that drives the writer,
//! through budgets that hold 1/16 of the stream, so the writer waits for the cursor over and
//! over; baseline: the same two readers with budgets that hold everything.

mod support;

use std::hint::black_box;
use std::io::Cursor;
use std::sync::Barrier;
use std::thread;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use sparsebuf::StreamBuffer;

const SEGMENT: usize = 64 << 10;

/// A buffer over `data` (a fresh copy per build, as a live source would hand over new bytes).
fn live(data: &[u8], memory: usize, disk: Option<u64>, window: Option<u64>) -> StreamBuffer {
    let mut b = StreamBuffer::builder()
        .segment_size(SEGMENT)
        .memory_budget(memory);
    if let Some(disk) = disk {
        b = b.disk_budget(disk);
    }
    if let Some(window) = window {
        b = b.window(window);
    }
    b.build(Cursor::new(data.to_vec())).unwrap()
}

fn window(c: &mut Criterion) {
    let len = support::stream_len() / 4;
    let data = support::source(len);
    let mut chunk = vec![0u8; 64 << 10];
    let mut group = c.benchmark_group("window");
    group.throughput(Throughput::Bytes(len as u64));
    group.sample_size(10);
    group.bench_function(BenchmarkId::new("drain", "vec_cursor"), |b| {
        b.iter(|| black_box(support::drain(&mut Cursor::new(data.to_vec()), &mut chunk)))
    });
    let cases: [(&str, usize, Option<u64>, Option<u64>); 3] = [
        ("no_window_5m_ram", 5 << 20, None, None),
        ("window_8m_in_5m_ram", 5 << 20, None, Some(8 << 20)),
        (
            "window_1g_in_1m_ram_2m_disk",
            1 << 20,
            Some(2 << 20),
            Some(1 << 30),
        ),
    ];
    for (name, memory, disk, win) in cases {
        group.bench_function(BenchmarkId::new("drain", name), |b| {
            b.iter(|| {
                let buf = live(&data, memory, disk, win);
                black_box(support::drain(&mut buf.reader(), &mut chunk))
            })
        });
    }
    group.finish();

    let mut group = c.benchmark_group("backpressure");
    group.throughput(Throughput::Bytes(len as u64));
    group.sample_size(10);
    let budgets: [(&str, usize, u64); 2] = [
        ("budgets_hold_all", len, u64::MAX),
        ("budgets_hold_1_16th", len / 32, (len / 32) as u64),
    ];
    for (name, memory, disk) in budgets {
        group.bench_function(BenchmarkId::new("lead_and_trail", name), |b| {
            b.iter(|| {
                let buf = live(&data, memory, Some(disk), Some(1 << 40));
                // Each thread makes its own cursor (a cursor belongs to the thread that last
                // used it, at first its creator), and both hold offset 0 before either reads.
                let start = Barrier::new(2);
                thread::scope(|s| {
                    for read in [64 << 10, 16 << 10] {
                        let (buf, start) = (&buf, &start);
                        s.spawn(move || {
                            let mut cursor = buf.reader();
                            start.wait();
                            black_box(support::drain(&mut cursor, &mut vec![0u8; read]))
                        });
                    }
                })
            })
        });
    }
    group.finish();
}

criterion_group!(benches, window);
criterion_main!(benches);
