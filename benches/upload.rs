//! Object storage against a local S3 API (`moto_server`, started here on a loopback port):
//!
//! - `upload`: 64 MiB written through `sparsebuf::upload` in 256 KiB writes (8 MiB parts, 2 in
//!   flight), against one `object_store` `put` of the same 64 MiB held in memory, the baseline;
//! - `sparse_read`: 64 reads of 4 KiB at random offsets of a 64 MiB object through
//!   `ObjectSource` (fresh buffer per iteration), against downloading the object whole with a
//!   `get` and reading the same offsets from memory.
//!
//! Before the groups it prints the peak resident-set growth of one upload of each kind (the point
//! of streaming: memory follows the part size, not the object).
//!
//! ```sh
//! cargo bench -p sparsebuf-benches --features object-store --bench upload -- --warm-up-time 1 --measurement-time 10
//! ```

#[path = "../tests/common/moto.rs"]
#[allow(dead_code)]
mod moto;

use std::hint::black_box;
use std::io::Write;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use sparsebuf::object_store::path::Path;
use sparsebuf::object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use sparsebuf::{upload, ObjectSource, StreamBuffer};

const LEN: usize = 64 << 20;

fn data() -> Vec<u8> {
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    (0..LEN)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn put_whole(rt: &tokio::runtime::Runtime, store: &Arc<dyn ObjectStore>, key: &str, bytes: &[u8]) {
    let payload = PutPayload::from(bytes.to_vec());
    rt.block_on(store.put(&Path::from(key), payload)).unwrap();
}

fn stream_up(store: &Arc<dyn ObjectStore>, key: &str, bytes: &[u8], in_flight: usize) -> u64 {
    let mut up = upload(store.clone(), Path::from(key))
        .unwrap()
        .parts_in_flight(in_flight)
        .unwrap();
    for piece in bytes.chunks(256 << 10) {
        up.write_all(piece).unwrap();
    }
    up.finish().unwrap()
}

fn offsets() -> Vec<u64> {
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    (0..64)
        .map(|_| {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            (x >> 16) % (LEN as u64 - 4096)
        })
        .collect()
}

/// A line of `/proc/self/status`, in KiB.
fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// How far the resident set grows while `f` runs (peak, from `VmHWM` reset first).
fn peak_growth_kib(f: impl FnOnce()) -> u64 {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let before = status_kib("VmRSS:");
    f();
    status_kib("VmHWM:").saturating_sub(before)
}

fn object_store_bench(c: &mut Criterion) {
    let moto = moto::Moto::start();
    moto.create_bucket("bench");
    let store = moto.store("bench");
    let rt = runtime();

    // Memory first: the peak growth of a streamed upload of data made as it goes, and of a put
    // of the whole object from memory.
    let stream_growth = peak_growth_kib(|| {
        let mut up = upload(store.clone(), Path::from("m1.bin")).unwrap();
        let mut piece = vec![0u8; 256 << 10];
        for i in 0..LEN / piece.len() {
            piece.fill(i as u8);
            up.write_all(&piece).unwrap();
        }
        up.finish().unwrap();
    });
    let mut bytes = Vec::new();
    let put_growth = peak_growth_kib(|| {
        bytes = data();
        put_whole(&rt, &store, "m2.bin", &bytes);
    });
    println!(
        "peak RSS growth for a 64 MiB object: sparsebuf upload {stream_growth} KiB, \
         put from memory {put_growth} KiB"
    );

    let mut group = c.benchmark_group("upload");
    group.throughput(Throughput::Bytes(LEN as u64));
    group.sample_size(10);
    group.bench_function(BenchmarkId::new("object_store_put", "64m_in_memory"), |b| {
        b.iter(|| put_whole(&rt, &store, "put.bin", &bytes))
    });
    for in_flight in [2, 4] {
        let name = format!("64m_8m_parts_{in_flight}_in_flight");
        group.bench_function(BenchmarkId::new("sparsebuf_upload", name), |b| {
            b.iter(|| black_box(stream_up(&store, "streamed.bin", &bytes, in_flight)))
        });
    }
    group.finish();

    put_whole(&rt, &store, "object.bin", &bytes);
    let offsets = offsets();
    let mut group = c.benchmark_group("sparse_read");
    group.throughput(Throughput::Bytes(64 * 4096));
    group.sample_size(10);
    group.bench_function("download_whole_then_read", |b| {
        b.iter(|| {
            let got = rt
                .block_on(async { store.get(&Path::from("object.bin")).await?.bytes().await })
                .unwrap();
            for &o in &offsets {
                black_box(&got[o as usize..o as usize + 4096]);
            }
        })
    });
    group.bench_function("object_source_64_reads", |b| {
        b.iter(|| {
            let source = ObjectSource::new(store.clone(), Path::from("object.bin")).unwrap();
            let buf = StreamBuffer::builder().build_ranged(source).unwrap();
            let mut dst = [0u8; 4096];
            for &o in &offsets {
                buf.read_exact_at(o, &mut dst).unwrap();
            }
            black_box(buf.stats().source_bytes)
        })
    });
    group.finish();
}

criterion_group!(benches, object_store_bench);
criterion_main!(benches);
