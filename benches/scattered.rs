//! Scattered reads over a file: 256 reads of 64 KiB at random offsets of a 256 MiB file, each
//! iteration starting from nothing. sparsebuf over the `File` as a range source fetches only the
//! segments read; the baselines read the whole file first (`std::fs::read`), or stream it through
//! a forward-only sparsebuf up to the furthest offset. The file is in the page cache, so this
//! measures the work done, not the disk. The `read_ahead` group reads sequentially through a
//! slow source with and without read-ahead.

mod support;

use std::hint::black_box;
use std::io::Write;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use sparsebuf::StreamBuffer;

const READ: usize = 64 << 10;

fn scattered(c: &mut Criterion) {
    let len = support::stream_len();
    let mut file = tempfile::NamedTempFile::new_in(std::env::temp_dir()).unwrap();
    file.write_all(&support::source(len)).unwrap();
    let path = file.path().to_owned();
    let offsets: Vec<u64> = support::offsets(len, READ).into_iter().take(256).collect();

    let mut group = c.benchmark_group("scattered");
    group.throughput(Throughput::Bytes((offsets.len() * READ) as u64));
    group.sample_size(10);
    let mut dst = vec![0u8; READ];
    group.bench_function(BenchmarkId::new("read_whole_file_first", len >> 20), |b| {
        b.iter(|| {
            let all = std::fs::read(&path).unwrap();
            for &o in &offsets {
                dst.copy_from_slice(&all[o as usize..o as usize + READ]);
            }
            black_box(&dst);
        })
    });
    group.bench_function(BenchmarkId::new("sparsebuf_stream", len >> 20), |b| {
        b.iter(|| {
            let buf = StreamBuffer::builder()
                .build(std::fs::File::open(&path).unwrap())
                .unwrap();
            for &o in &offsets {
                buf.read_exact_at(o, &mut dst).unwrap();
            }
            black_box(buf.stats().source_bytes)
        })
    });
    group.bench_function(BenchmarkId::new("sparsebuf_ranged", len >> 20), |b| {
        b.iter(|| {
            let buf = StreamBuffer::builder()
                .build_ranged(std::fs::File::open(&path).unwrap())
                .unwrap();
            for &o in &offsets {
                buf.read_exact_at(o, &mut dst).unwrap();
            }
            black_box(buf.stats().source_bytes)
        })
    });
    group.finish();
    let buf = StreamBuffer::builder()
        .build_ranged(std::fs::File::open(&path).unwrap())
        .unwrap();
    for &o in &offsets {
        buf.read_exact_at(o, &mut dst).unwrap();
    }
    eprintln!(
        "scattered: ranged fetched {} of {} bytes for {} bytes requested",
        buf.stats().source_bytes,
        len,
        offsets.len() * READ
    );
}

/// A file as a range source that takes 1 ms per call, like a remote store.
struct Remote(std::fs::File);

impl sparsebuf::RangeSource for Remote {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<usize> {
        std::thread::sleep(std::time::Duration::from_millis(1));
        std::os::unix::fs::FileExt::read_at(&self.0, buf, offset)
    }
    fn len(&self) -> Option<u64> {
        self.0.metadata().ok().map(|m| m.len())
    }
}

/// Sequential 64 KiB reads of 8 MiB through a source with 1 ms latency per call, the consumer
/// spending 1 ms on each chunk (decoding, say): without read-ahead the two alternate; with it,
/// the fetches overlap the consumer's work.
fn read_ahead(c: &mut Criterion) {
    let len = 8usize << 20;
    let mut file = tempfile::NamedTempFile::new_in(std::env::temp_dir()).unwrap();
    file.write_all(&support::source(len)).unwrap();
    let path = file.path().to_owned();
    let mut group = c.benchmark_group("read_ahead");
    group.throughput(Throughput::Bytes(len as u64));
    group.sample_size(10);
    for ahead in [0u64, 1 << 20] {
        group.bench_function(
            BenchmarkId::new("sequential_1ms_source_1ms_work", ahead),
            |b| {
                b.iter(|| {
                    let buf = StreamBuffer::builder()
                        .read_ahead(ahead)
                        .build_ranged(Remote(std::fs::File::open(&path).unwrap()))
                        .unwrap();
                    let mut dst = vec![0u8; READ];
                    let mut pos = 0;
                    while pos < len as u64 {
                        buf.read_exact_at(pos, &mut dst).unwrap();
                        std::thread::sleep(std::time::Duration::from_millis(1));
                        pos += READ as u64;
                    }
                    black_box(buf.stats().read_ahead_hits)
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, scattered, read_ahead);
criterion_main!(benches);
