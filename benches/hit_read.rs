//! Hit reads: random-offset reads of filled data, in RAM and spilled, against a plain `memcpy`
//! from a `Vec<u8>` with the same access pattern (the physical limit), measured in one group.
//!
//! `SPARSEBUF_BENCH_MIB` sets the stream size (default 256).

use std::hint::black_box;
use std::io::Cursor;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use sparsebuf::StreamBuffer;

fn stream_len() -> usize {
    let mib: usize = std::env::var("SPARSEBUF_BENCH_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    mib << 20
}

fn source(len: usize) -> Vec<u8> {
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    (0..len / 8)
        .flat_map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()
        })
        .collect()
}

/// Deterministic random offsets such that `offset + read` stays inside `len`.
fn offsets(len: usize, read: usize) -> Vec<u64> {
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    (0..4096)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (x >> 17) % (len - read) as u64
        })
        .collect()
}

fn hit_read(c: &mut Criterion) {
    let len = stream_len();
    let data = source(len);
    let in_ram = StreamBuffer::builder()
        .memory_budget(len + (1 << 20))
        .build(Cursor::new(data.clone()))
        .unwrap();
    let spilled = StreamBuffer::builder()
        .memory_budget(5 << 20)
        .build(Cursor::new(data.clone()))
        .unwrap();
    in_ram.fill_to_end().unwrap();
    spilled.fill_to_end().unwrap();

    let mut group = c.benchmark_group("hit_read");
    for read in [4 << 10, 64 << 10] {
        let offs = offsets(len, read);
        let mut dst = vec![0u8; read];
        group.throughput(Throughput::Bytes(read as u64));
        let mut i = 0;
        let mut next = move || {
            i = (i + 1) % offs.len();
            offs[i]
        };
        group.bench_function(BenchmarkId::new("memcpy", read), |b| {
            b.iter(|| {
                let o = next() as usize;
                dst.copy_from_slice(&data[o..o + read]);
                black_box(&dst);
            })
        });
        for (name, buf) in [("sparsebuf_ram", &in_ram), ("sparsebuf_spilled", &spilled)] {
            group.bench_function(BenchmarkId::new(name, read), |b| {
                b.iter(|| {
                    black_box(buf.read_at(next(), &mut dst).unwrap());
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, hit_read);
criterion_main!(benches);
