//! Hit reads: 4 KiB and 64 KiB reads at random offsets of filled data, (a) all in RAM and
//! (b) mostly spilled (5 MiB budget), against the baselines measured in the same group:
//! `memcpy` from a `Vec<u8>` (the physical limit), the original design (a mutex around a
//! `SpooledTempFile`, seek + read), an all-RAM `RwLock<Vec<u8>>`, and the `stream-download`
//! crate's reader over the same bytes.
//!
//! `SPARSEBUF_BENCH_MIB` sets the stream size (default 256).

mod support;

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use support::{Offsets, Original, Peer, RwVec};

const BUDGET: usize = 5 << 20;

fn hit_read(c: &mut Criterion) {
    let len = support::stream_len();
    let data = support::source(len);
    for (tier, budget) in [("ram", None), ("spilled", Some(BUDGET))] {
        let buf = support::sparsebuf(&data, budget);
        let spooled_max = budget.unwrap_or(len + 1);
        let original = Original::new(&data, spooled_max);
        let rwvec = RwVec(parking_lot::RwLock::new(data.clone()));
        let mut peer = Peer::new(&data, budget.is_some());

        let mut group = c.benchmark_group(format!("hit_read_{tier}"));
        for read in [4 << 10, 64 << 10] {
            group.throughput(Throughput::Bytes(read as u64));
            let mut dst = vec![0u8; read];
            let mut offs = Offsets::new(len, read);
            group.bench_function(BenchmarkId::new("memcpy", read), |b| {
                b.iter(|| {
                    let o = offs.next() as usize;
                    dst.copy_from_slice(&data[o..o + read]);
                    black_box(&dst);
                })
            });
            group.bench_function(BenchmarkId::new("sparsebuf", read), |b| {
                b.iter(|| black_box(buf.read_at(offs.next(), &mut dst).unwrap()))
            });
            group.bench_function(BenchmarkId::new("original_spooled_mutex", read), |b| {
                b.iter(|| original.read_at(offs.next(), &mut dst).unwrap())
            });
            group.bench_function(BenchmarkId::new("rwlock_vec", read), |b| {
                b.iter(|| rwvec.read_at(offs.next(), &mut dst))
            });
            group.bench_function(BenchmarkId::new("stream_download", read), |b| {
                b.iter(|| peer.read_at(offs.next(), &mut dst).unwrap())
            });
        }
        group.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(50);
    targets = hit_read
}
criterion_main!(benches);
