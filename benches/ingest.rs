//! Ingest: pulling a whole stream from an in-memory source, in RAM and while spilling, against
//! `memcpy` of the same bytes into a fresh buffer and a raw sequential `pwrite` of them (64 KiB
//! writes) into a fresh file in the spill directory. Both sparsebuf runs and both baselines
//! allocate (or create) their destination inside the timed region, as a real ingest does.

mod support;

use std::hint::black_box;
use std::io::Cursor;
use std::os::unix::fs::FileExt;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sparsebuf::StreamBuffer;

fn ingest(c: &mut Criterion) {
    let len = support::stream_len();
    // Leaked once so that `Cursor<&'static [u8]>` is a `Read + Send + 'static` source that does
    // not copy the data before the timed region.
    let data: &'static [u8] = Box::leak(support::source(len).into_boxed_slice());
    let dir = std::env::temp_dir();
    let mut group = c.benchmark_group("ingest");
    group.throughput(Throughput::Bytes(len as u64));
    group.sample_size(10);

    group.bench_function("memcpy", |b| {
        b.iter(|| {
            let mut v = Vec::with_capacity(len);
            v.extend_from_slice(data);
            black_box(v)
        })
    });
    group.bench_function("sparsebuf_ram", |b| {
        b.iter(|| {
            let buf = StreamBuffer::builder()
                .memory_budget(len + (1 << 20))
                .build(Cursor::new(data))
                .unwrap();
            black_box(buf.fill_to_end().unwrap())
        })
    });
    group.bench_function("pwrite", |b| {
        b.iter(|| {
            let file = tempfile::tempfile_in(&dir).unwrap();
            for (i, chunk) in data.chunks(64 << 10).enumerate() {
                file.write_all_at(chunk, (i << 16) as u64).unwrap();
            }
            black_box(file)
        })
    });
    // The floor for any store that holds bytes in RAM before spilling them: the copy out of
    // the source into a segment buffer, then the same `pwrite`s.
    group.bench_function("copy_then_pwrite", |b| {
        b.iter(|| {
            let file = tempfile::tempfile_in(&dir).unwrap();
            let mut segment = vec![0u8; 64 << 10];
            for (i, chunk) in data.chunks(64 << 10).enumerate() {
                segment[..chunk.len()].copy_from_slice(chunk);
                file.write_all_at(black_box(&segment[..chunk.len()]), (i << 16) as u64)
                    .unwrap();
            }
            black_box(file)
        })
    });
    group.bench_function("sparsebuf_spilling", |b| b.iter(|| spill(data, &dir)));
    group.finish();
}

/// One spilled ingest: 5 MiB of RAM, the rest to `dir`.
fn spill(data: &'static [u8], dir: &std::path::Path) -> u64 {
    let buf = StreamBuffer::builder()
        .memory_budget(5 << 20)
        .spill_dir(dir)
        .build(Cursor::new(data))
        .unwrap();
    black_box(buf.fill_to_end().unwrap())
}

/// Spilled ingest against raw `pwrite` while another thread keeps one of the machine's cores
/// busy (a spinning thread started before the group and stopped after it): a spill design whose
/// writer and background thread wait for each other loses most when they must share a core.
fn ingest_under_a_cpu_hog(c: &mut Criterion) {
    use std::sync::atomic::{AtomicBool, Ordering};
    let len = support::stream_len();
    let data: &'static [u8] = Box::leak(support::source(len).into_boxed_slice());
    let dir = std::env::temp_dir();
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let hog = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut x = 1u64;
            while !stop.load(Ordering::Relaxed) {
                for _ in 0..1024 {
                    x = black_box(x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1));
                }
            }
            x
        })
    };
    let mut group = c.benchmark_group("ingest_hog");
    group.throughput(Throughput::Bytes(len as u64));
    group.sample_size(10);
    group.bench_function("pwrite", |b| {
        b.iter(|| {
            let file = tempfile::tempfile_in(&dir).unwrap();
            for (i, chunk) in data.chunks(64 << 10).enumerate() {
                file.write_all_at(chunk, (i << 16) as u64).unwrap();
            }
            black_box(file)
        })
    });
    group.bench_function("sparsebuf_spilling", |b| b.iter(|| spill(data, &dir)));
    group.finish();
    stop.store(true, Ordering::Relaxed);
    black_box(hog.join().unwrap());
}

/// A source that returns at most `piece` bytes per read: every read is one publish.
struct Pieces {
    data: &'static [u8],
    pos: usize,
    piece: usize,
}

impl std::io::Read for Pieces {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min(self.piece).min(self.data.len() - self.pos);
        buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// The publish path alone: a 1 MiB stream from a source giving 1 and 16 bytes per read (a
/// publish each), against extending a `Vec` with the same pieces.
fn tiny_reads(c: &mut Criterion) {
    let len = 1 << 20;
    let data: &'static [u8] = Box::leak(support::source(len).into_boxed_slice());
    let mut group = c.benchmark_group("tiny_reads");
    group.throughput(Throughput::Bytes(len as u64));
    group.sample_size(10);
    for piece in [1, 16] {
        group.bench_function(format!("vec_extend_{piece}"), |b| {
            b.iter(|| {
                let mut v = Vec::new();
                for chunk in data.chunks(piece) {
                    v.extend_from_slice(black_box(chunk));
                }
                black_box(v)
            })
        });
        group.bench_function(format!("sparsebuf_{piece}"), |b| {
            b.iter(|| {
                let source = Pieces {
                    data,
                    pos: 0,
                    piece,
                };
                let buf = StreamBuffer::new(source);
                black_box(buf.fill_to_end().unwrap())
            })
        });
    }
    group.finish();
}

/// Push ingest into RAM: a `Writer` taking 4 KiB and 64 KiB writes, against extending a `Vec`
/// with the same writes (both allocate inside the timed region).
fn push(c: &mut Criterion) {
    let len = support::stream_len();
    let data: &'static [u8] = Box::leak(support::source(len).into_boxed_slice());
    let mut group = c.benchmark_group("push");
    group.throughput(Throughput::Bytes(len as u64));
    group.sample_size(10);
    for write in [4 << 10, 64 << 10] {
        group.bench_function(format!("vec_extend_{}k", write >> 10), |b| {
            b.iter(|| {
                let mut v = Vec::new();
                for chunk in data.chunks(write) {
                    v.extend_from_slice(black_box(chunk));
                }
                black_box(v)
            })
        });
        group.bench_function(format!("sparsebuf_{}k", write >> 10), |b| {
            b.iter(|| {
                let (mut writer, buf) = StreamBuffer::builder()
                    .memory_budget(len + (1 << 20))
                    .build_push()
                    .unwrap();
                for chunk in data.chunks(write) {
                    std::io::Write::write_all(&mut writer, black_box(chunk)).unwrap();
                }
                black_box(writer.finish().unwrap());
                black_box(buf)
            })
        });
    }
    group.finish();
}

criterion_group!(benches, ingest, ingest_under_a_cpu_hog, tiny_reads, push);
criterion_main!(benches);
