//! Mixed: 64 KiB hit reads of filled data while one writer ingests from a slow source (about
//! 80 MB/s, pulling and spilling past a 5 MiB budget), against the same reads with the writer
//! idle. The writer thread starts before and stops after each measurement.

mod support;

use std::hint::black_box;
use std::io::{self, Read};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use sparsebuf::StreamBuffer;
use support::Offsets;

/// An endless source: 16 KiB per read after a 200 µs pause, like a network stream.
struct Slow {
    fast_until: u64,
    pos: u64,
}

impl Read for Slow {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos >= self.fast_until {
            thread::sleep(Duration::from_micros(200));
        }
        let n = buf.len().min(16 << 10);
        for (i, b) in buf[..n].iter_mut().enumerate() {
            *b = (self.pos + i as u64) as u8;
        }
        self.pos += n as u64;
        Ok(n)
    }
}

fn mixed(c: &mut Criterion) {
    let filled = 64usize << 20;
    let buf = StreamBuffer::builder()
        .memory_budget(5 << 20)
        .build(Slow {
            fast_until: filled as u64,
            pos: 0,
        })
        .unwrap();
    buf.read_range(0..filled as u64).unwrap();

    let mut group = c.benchmark_group("mixed");
    let read = 64 << 10;
    group.throughput(Throughput::Bytes(read as u64));
    let mut dst = vec![0u8; read];
    let mut offs = Offsets::new(filled, read);
    group.bench_function(BenchmarkId::new("hits", "writer_idle"), |b| {
        b.iter(|| black_box(buf.read_at(offs.next(), &mut dst).unwrap()))
    });

    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (buf, stop) = (buf.clone(), stop.clone());
        thread::spawn(move || {
            let mut frontier = buf.stats().filled_bytes;
            let mut chunk = vec![0u8; 64 << 10];
            while !stop.load(Ordering::Relaxed) {
                buf.read_exact_at(frontier, &mut chunk).unwrap();
                frontier += chunk.len() as u64;
            }
        })
    };
    group.bench_function(BenchmarkId::new("hits", "writer_ingesting"), |b| {
        b.iter(|| black_box(buf.read_at(offs.next(), &mut dst).unwrap()))
    });
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    group.finish();
    eprintln!(
        "mixed: the writer pulled {} bytes in all",
        buf.stats().source_bytes
    );
}

criterion_group!(benches, mixed);
criterion_main!(benches);
