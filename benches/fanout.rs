//! Fan-out: one pushed stream (64 KiB writes) delivered to 1, 4 and 16 consumers, each taking
//! 64 KiB chunks and reading every byte of them (a checksum), on threads of their own or on a
//! pool of 2 threads. Throughput is the bytes *delivered* (stream length × consumers), so the
//! ratio of 16 consumers to one is the aggregate delivery rate against one consumer's. Two
//! settings: everything in RAM (budget above the stream), and a live window of 8 MiB with 4 MiB
//! of RAM and no disk, where the writer waits for the slowest consumer; the peak RAM of the
//! window runs is printed after the group (the budgets must bound it).
//!
//! ```sh
//! SPARSEBUF_BENCH_MIB=64 cargo bench -p sparsebuf-benches --bench fanout -- --warm-up-time 1 --measurement-time 4
//! ```

mod support;

use std::hint::black_box;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use sparsebuf::{Pool, StreamBuffer};

const WRITE: usize = 64 << 10;
const CHUNK: usize = 64 << 10;

/// A cheap pass over every byte, so a consumer touches what it gets.
fn checksum(bytes: &[u8]) -> u64 {
    bytes
        .chunks(8)
        .map(|c| c.iter().fold(0u64, |a, &b| a.rotate_left(8) ^ u64::from(b)))
        .fold(0, |a, b| a.wrapping_add(b))
}

/// Pushes `data` to `consumers` consumers; returns the peak RAM of the buffer.
fn run(data: &[u8], consumers: usize, pool: Option<&Pool>, window: bool) -> u64 {
    let mut builder = StreamBuffer::builder().segment_size(64 << 10);
    builder = if window {
        builder
            .memory_budget(4 << 20)
            .disk_budget(0)
            .window(8 << 20)
    } else {
        builder.memory_budget(data.len() + (1 << 20))
    };
    let (mut writer, buf) = builder.build_push().unwrap();
    let running: Vec<_> = (0..consumers)
        .map(|_| {
            let emit = buf.emit(CHUNK);
            let emit = match pool {
                Some(pool) => emit.run_on_pool(pool),
                None => emit,
            };
            emit.start(|chunk| Ok(black_box(checksum(&chunk)))).unwrap()
        })
        .collect();
    for piece in data.chunks(WRITE) {
        writer.write_all(piece).unwrap();
    }
    writer.finish().unwrap();
    for consumer in running {
        assert_eq!(consumer.join().unwrap().bytes, data.len() as u64);
    }
    buf.stats().peak_memory_bytes
}

fn fanout(c: &mut Criterion) {
    let len = support::stream_len() / 4;
    let data = support::source(len);
    let pool = Pool::new(2).unwrap();
    let mut peaks: Vec<(String, AtomicU64)> = Vec::new();
    for window in [false, true] {
        let setting = if window { "window_8m_in_4m_ram" } else { "ram" };
        let mut group = c.benchmark_group(format!("fanout_{setting}"));
        group.sample_size(10);
        for consumers in [1usize, 4, 16] {
            group.throughput(Throughput::Bytes((len * consumers) as u64));
            for (place, pool) in [("threads", None), ("pool2", Some(&pool))] {
                let peak = AtomicU64::new(0);
                group.bench_function(BenchmarkId::new(place, consumers), |b| {
                    b.iter(|| {
                        let p = run(&data, consumers, pool, window);
                        peak.fetch_max(p, Ordering::Relaxed);
                    })
                });
                peaks.push((format!("{setting}/{place}/{consumers}"), peak));
            }
        }
        group.finish();
    }
    for (name, peak) in &peaks {
        println!(
            "peak RAM {name}: {} KiB",
            peak.load(Ordering::Relaxed) >> 10
        );
    }
}

criterion_group!(benches, fanout);
criterion_main!(benches);
