//! What persistence costs (issue: a cache directory that survives restarts). Not a criterion
//! bench: a harness that prints its figures (BENCHMARKS.md, "## Persistence").
//!
//! 1. Ingest: a 256 MiB range source (generated in memory, no network) read front to back
//!    through a cache, without and with `persist` (the directory in the system's temp dir),
//!    three rounds, medians; the ratio is persisted over plain.
//! 2. Reopen: a directory holding one key of 16,384 segments (4 KiB segments, 64 MiB): the time
//!    to build the cache (lock, journal replay and compaction), to open the key (its version
//!    checked), and to read it all from the directory after that (each segment's checksum
//!    checked on its first read; no byte fetched). The same with 64 KiB segments (1 GiB).
//!
//! `cargo bench -p sparsebuf-benches --bench persist`

use std::io::{self, Read};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sparsebuf::{Cache, RangeSource, Validators};

struct Source {
    len: u64,
    read: Arc<AtomicU64>,
}

fn word(i: u64) -> u64 {
    let x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x1234_5678;
    x ^ (x >> 31)
}

fn fill(pos: u64, out: &mut [u8]) {
    // Bytes by position: word `pos / 8`, byte `pos % 8`.
    for (i, b) in out.iter_mut().enumerate() {
        let p = pos + i as u64;
        *b = word(p / 8).to_le_bytes()[(p % 8) as usize];
    }
}

impl RangeSource for Source {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let n = buf.len().min(self.len.saturating_sub(offset) as usize);
        fill(offset, &mut buf[..n]);
        self.read.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
    fn len(&self) -> Option<u64> {
        Some(self.len)
    }
    fn validators(&self) -> Validators {
        Validators::new().etag("\"bench\"")
    }
}

fn cache(dir: Option<&Path>, segment: usize) -> Cache {
    let mut b = Cache::builder()
        .memory_budget(64 << 20)
        .disk_budget(8 << 30)
        .segment_size(segment);
    if let Some(dir) = dir {
        b = b.persist(dir);
    }
    b.build().unwrap()
}

/// Reads the key front to back in 1 MiB reads, checking a sample of bytes; the time taken.
fn read_through(cache: &Cache, len: u64, read: Arc<AtomicU64>) -> Duration {
    let start = Instant::now();
    let buf = cache
        .open_ranged("object", move || Ok(Source { len, read }))
        .unwrap();
    let mut reader = buf.reader();
    let mut chunk = vec![0u8; 1 << 20];
    let mut at = 0u64;
    let mut want = [0u8; 64];
    loop {
        let n = reader.read(&mut chunk).unwrap();
        if n == 0 {
            break;
        }
        let k = n.min(64);
        fill(at, &mut want[..k]);
        assert_eq!(&chunk[..k], &want[..k], "wrong bytes at {at}");
        at += n as u64;
    }
    assert_eq!(at, len);
    start.elapsed()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ingest() {
    let len = 256 << 20;
    let mut plain = Vec::new();
    let mut persisted = Vec::new();
    for _ in 0..3 {
        let c = cache(None, 64 * 1024);
        plain.push(read_through(&c, len, Arc::new(AtomicU64::new(0))));
        drop(c);
        let dir = tempfile::tempdir().unwrap();
        let c = cache(Some(dir.path()), 64 * 1024);
        persisted.push(read_through(&c, len, Arc::new(AtomicU64::new(0))));
    }
    let (p, q) = (median(plain), median(persisted));
    let mbs = |d: Duration| len as f64 / (1 << 20) as f64 / d.as_secs_f64();
    println!(
        "ingest 256 MiB through a cache (64 MiB RAM): plain {:.0} ms ({:.0} MiB/s), persisted {:.0} ms \
         ({:.0} MiB/s): persisted/plain throughput {:.2}x",
        p.as_secs_f64() * 1e3,
        mbs(p),
        q.as_secs_f64() * 1e3,
        mbs(q),
        mbs(q) / mbs(p)
    );
}

fn reopen(segment: usize, segments: u64) {
    let len = segments * segment as u64;
    let dir = tempfile::tempdir().unwrap();
    {
        let c = cache(Some(dir.path()), segment);
        read_through(&c, len, Arc::new(AtomicU64::new(0)));
    }
    let journal = std::fs::metadata(dir.path().join("journal")).unwrap().len();
    let mut builds = Vec::new();
    let mut opens = Vec::new();
    let mut reads = Vec::new();
    let mut fetched = 0;
    for _ in 0..3 {
        let start = Instant::now();
        let c = cache(Some(dir.path()), segment);
        builds.push(start.elapsed());
        let read = Arc::new(AtomicU64::new(0));
        let r = read.clone();
        let start = Instant::now();
        let buf = c
            .open_ranged("object", move || Ok(Source { len, read: r }))
            .unwrap();
        opens.push(start.elapsed());
        drop(buf);
        reads.push(read_through(&c, len, read.clone()));
        fetched += read.load(Ordering::Relaxed);
    }
    println!(
        "reopen: {segments} segments of {} KiB ({} MiB, journal {} KiB): building the cache {:.1} ms, \
         opening the key {:.1} ms, then a full read from the directory (each checksum checked on \
         its first read) {:.0} ms; bytes fetched from the source by those reads: {fetched}",
        segment >> 10,
        len >> 20,
        journal >> 10,
        median(builds).as_secs_f64() * 1e3,
        median(opens).as_secs_f64() * 1e3,
        median(reads).as_secs_f64() * 1e3,
    );
}

fn main() {
    ingest();
    reopen(4096, 16_384);
    reopen(64 * 1024, 16_384);
}
