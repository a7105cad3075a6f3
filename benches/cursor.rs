//! Cursor: sequential `Read` of a filled stream through a `Reader` with `std::io::copy`, against
//! `std::io::copy` from a `Cursor<Vec<u8>>` of the same bytes; also with 64 KiB reads.

mod support;

use std::hint::black_box;
use std::io::{self, Cursor, Read};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

fn drain(r: &mut impl Read, chunk: &mut [u8]) -> u64 {
    let mut total = 0;
    loop {
        let n = r.read(chunk).unwrap();
        if n == 0 {
            return total;
        }
        total += n as u64;
    }
}

fn cursor(c: &mut Criterion) {
    let len = support::stream_len();
    let data = support::source(len);
    let buf = support::sparsebuf(&data, None);
    let mut group = c.benchmark_group("cursor");
    group.throughput(Throughput::Bytes(len as u64));
    group.sample_size(10);
    group.bench_function(BenchmarkId::new("io_copy", "vec_cursor"), |b| {
        b.iter(|| io::copy(&mut Cursor::new(&data), &mut io::sink()).unwrap())
    });
    group.bench_function(BenchmarkId::new("io_copy", "sparsebuf_reader"), |b| {
        b.iter(|| io::copy(&mut buf.reader(), &mut io::sink()).unwrap())
    });
    let mut chunk = vec![0u8; 64 << 10];
    group.bench_function(BenchmarkId::new("read_64k", "vec_cursor"), |b| {
        b.iter(|| black_box(drain(&mut Cursor::new(&data), &mut chunk)))
    });
    group.bench_function(BenchmarkId::new("read_64k", "sparsebuf_reader"), |b| {
        b.iter(|| black_box(drain(&mut buf.reader(), &mut chunk)))
    });
    group.finish();
}

criterion_group!(benches, cursor);
criterion_main!(benches);
