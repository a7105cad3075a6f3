//! Cursor: sequential `Read` of a filled stream through a `Reader`, against a `Cursor<Vec<u8>>`
//! of the same bytes: with `std::io::copy` into a sink that copies what it is given (`io::sink()`
//! would let std skip the copy for a `Cursor` entirely), and with a loop of 64 KiB reads.

mod support;

use std::hint::black_box;
use std::io::{self, Cursor};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

/// A writer that consumes bytes the way a real one must: by copying them somewhere.
struct CopySink(Vec<u8>);

impl io::Write for CopySink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = buf.len().min(self.0.len());
        self.0[..n].copy_from_slice(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn cursor(c: &mut Criterion) {
    let len = support::stream_len();
    let data = support::source(len);
    let buf = support::sparsebuf(&data, None);
    let mut group = c.benchmark_group("cursor");
    group.throughput(Throughput::Bytes(len as u64));
    group.sample_size(10);
    let mut sink = CopySink(vec![0u8; 1 << 20]);
    group.bench_function(BenchmarkId::new("io_copy", "vec_cursor"), |b| {
        b.iter(|| io::copy(&mut Cursor::new(&data), &mut sink).unwrap())
    });
    group.bench_function(BenchmarkId::new("io_copy", "sparsebuf_reader"), |b| {
        b.iter(|| io::copy(&mut buf.reader(), &mut sink).unwrap())
    });
    let mut chunk = vec![0u8; 64 << 10];
    group.bench_function(BenchmarkId::new("read_64k", "vec_cursor"), |b| {
        b.iter(|| black_box(support::drain(&mut Cursor::new(&data), &mut chunk)))
    });
    group.bench_function(BenchmarkId::new("read_64k", "sparsebuf_reader"), |b| {
        b.iter(|| black_box(support::drain(&mut buf.reader(), &mut chunk)))
    });
    group.finish();
}

criterion_group!(benches, cursor);
criterion_main!(benches);
