//! Scattered reads over a file: 256 reads of 64 KiB at random offsets of a 256 MiB file, each
//! iteration starting from nothing. sparsebuf over the `File` as a range source fetches only the
//! segments read; the baselines read the whole file first (`std::fs::read`), or stream it through
//! a forward-only sparsebuf up to the furthest offset. The file is in the page cache, so this
//! measures the work done, not the disk.

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

criterion_group!(benches, scattered);
criterion_main!(benches);
