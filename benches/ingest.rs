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
    group.bench_function("sparsebuf_spilling", |b| {
        b.iter(|| {
            let buf = StreamBuffer::builder()
                .memory_budget(5 << 20)
                .spill_dir(&dir)
                .build(Cursor::new(data))
                .unwrap();
            black_box(buf.fill_to_end().unwrap())
        })
    });
    group.finish();
}

criterion_group!(benches, ingest);
criterion_main!(benches);
