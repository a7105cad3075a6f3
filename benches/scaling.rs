//! Scaling and tail-latency harness (`harness = false`; run with `cargo bench -p sparsebuf-benches --bench scaling`).
//!
//! 1. Peak anonymous RSS (`RssAnon` of `/proc/self/status`) while streaming 512 MiB through a
//!    5 MiB budget, measured first, before this process allocates anything large.
//! 2. Aggregate throughput of 1, 2, 4, 8 and 16 threads doing 64 KiB reads at random offsets of
//!    filled data, started together on a `Barrier`: plain `memcpy` from a shared `Vec<u8>` (the
//!    limit), sparsebuf in RAM and spilled, and the original design (mutex + `SpooledTempFile`).
//! 3. The same for 4 KiB reads (1, 2, 4 and 16 threads), where a cache line written by every
//!    read (a lock's reader count) costs as much as the copy: against `memcpy`, `memcpy`
//!    through a table of 64 KiB slices of the same bytes (what any segmented store pays: a
//!    dependent load before each copy, and a split at segment ends), a
//!    `parking_lot::RwLock<Vec<u8>>` and the original design.
//! 4. Latency percentiles (HDR histogram) of 4 KiB hits with the writer idle and with a writer
//!    ingesting a slow source, and of reads that had to wait for the writer.
//!
//! Prints Markdown tables. `SPARSEBUF_BENCH_MIB` sets the stream size of parts 2 and 3
//! (default 256); `SPARSEBUF_BENCH_SECONDS` the time per throughput cell (default 1).

mod support;

use std::io::{self, Read};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use sparsebuf::StreamBuffer;
use support::{Offsets, Original, RwVec};

const BUDGET: usize = 5 << 20;
const SEGMENT: usize = 64 << 10;

fn main() {
    // `cargo bench` passes `--bench`; a filter argument selects parts by name.
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let wanted = |part: &str| filter.is_empty() || filter.iter().any(|f| part.contains(f.as_str()));
    if wanted("rss") {
        rss();
    }
    let len = support::stream_len();
    let data = Arc::new(support::source(len));
    if wanted("scaling") {
        scaling(&data);
    }
    if wanted("hits4k") {
        hits_4k(&data);
    }
    if wanted("latency") {
        latency(&data);
    }
}

// ---- 1. peak anonymous RSS --------------------------------------------------------------------

fn rss_anon_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// 512 MiB generated on the fly: no copy of the stream lives in this process.
struct Generated {
    pos: u64,
    len: u64,
}

impl Read for Generated {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = (self.len - self.pos).min(buf.len() as u64) as usize;
        for (i, b) in buf[..n].iter_mut().enumerate() {
            *b = ((self.pos + i as u64) * 31) as u8;
        }
        self.pos += n as u64;
        Ok(n)
    }
}

fn rss() {
    let total: u64 = 512 << 20;
    let before = rss_anon_kib();
    let peak = Arc::new(AtomicU64::new(before));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, done) = (peak.clone(), done.clone());
        thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                peak.fetch_max(rss_anon_kib(), Ordering::Relaxed);
                thread::sleep(Duration::from_millis(1));
            }
        })
    };
    let buf = StreamBuffer::builder()
        .segment_size(SEGMENT)
        .memory_budget(BUDGET)
        .build(Generated { pos: 0, len: total })
        .unwrap();
    let start = Instant::now();
    let mut r = buf.reader();
    let mut chunk = vec![0u8; 64 << 10];
    let mut pos = 0u64;
    while let Ok(n @ 1..) = r.read(&mut chunk) {
        assert_eq!(chunk[n - 1], ((pos + n as u64 - 1) * 31) as u8);
        pos += n as u64;
    }
    let secs = start.elapsed().as_secs_f64();
    done.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    let peak = peak.load(Ordering::Relaxed);
    let limit_kib = (BUDGET + 4 * SEGMENT + (2 << 20)) as u64 / 1024;
    let st = buf.stats();
    println!("\n### Peak anonymous RSS, 512 MiB through a 5 MiB budget\n");
    println!("| RssAnon before | peak | growth | target (budget + 4 segments + 2 MiB) | stats peak | spilled | time |");
    println!("|---|---|---|---|---|---|---|");
    println!(
        "| {} KiB | {} KiB | {} KiB | ≤ {} KiB ({}) | {} KiB | {} MiB | {:.2} s |",
        before,
        peak,
        peak - before,
        limit_kib,
        if peak - before <= limit_kib {
            "met"
        } else {
            "MISSED"
        },
        st.peak_memory_bytes / 1024,
        st.spilled_bytes >> 20,
        secs
    );
    assert_eq!(pos, total);
}

// ---- 2. reader scaling ------------------------------------------------------------------------

/// Runs `threads` threads doing 64 KiB reads with `read` for the configured time after a
/// barrier; returns aggregate GiB/s.
fn run_threads(threads: usize, len: usize, read: impl Fn(u64, &mut [u8]) + Sync) -> f64 {
    run_threads_of(threads, len, 64 << 10, read)
}

/// `run_threads` with reads of `size` bytes.
fn run_threads_of(
    threads: usize,
    len: usize,
    size: usize,
    read: impl Fn(u64, &mut [u8]) + Sync,
) -> f64 {
    let seconds: f64 = std::env::var("SPARSEBUF_BENCH_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1.0);
    let barrier = Barrier::new(threads + 1);
    let stop = AtomicBool::new(false);
    let (bytes, elapsed) = thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (barrier, stop, read) = (&barrier, &stop, &read);
                s.spawn(move || {
                    let mut offs = Offsets::new(len, size);
                    for _ in 0..t * 97 {
                        offs.next();
                    }
                    let mut dst = vec![0u8; size];
                    let mut bytes = 0u64; // thread-local: no shared counter in the timed loop
                    barrier.wait();
                    while !stop.load(Ordering::Relaxed) {
                        read(offs.next(), &mut dst);
                        bytes += size as u64;
                    }
                    bytes
                })
            })
            .collect();
        barrier.wait();
        let start = Instant::now();
        thread::sleep(Duration::from_secs_f64(seconds));
        stop.store(true, Ordering::Relaxed);
        let bytes: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
        (bytes, start.elapsed())
    });
    bytes as f64 / elapsed.as_secs_f64() / (1u64 << 30) as f64
}

fn scaling(data: &Arc<Vec<u8>>) {
    let len = data.len();
    let ram = support::sparsebuf(data, None);
    let spilled = support::sparsebuf(data, Some(BUDGET));
    let original_ram = Original::new(data, len + 1);
    let original_disk = Original::new(data, BUDGET);
    println!(
        "\n### Reader scaling: 64 KiB random hits, aggregate GiB/s ({} MiB stream, 2 cores)\n",
        len >> 20
    );
    println!("| threads | memcpy | sparsebuf RAM | ratio | sparsebuf spilled | ratio | original RAM | original spilled |");
    println!("|---|---|---|---|---|---|---|---|");
    for threads in [1, 2, 4, 8, 16] {
        let memcpy = run_threads(threads, len, |o, dst| {
            let o = o as usize;
            dst.copy_from_slice(&data[o..o + dst.len()]);
            std::hint::black_box(&dst);
        });
        let r = run_threads(threads, len, |o, dst| {
            ram.read_at(o, dst).unwrap();
        });
        let s = run_threads(threads, len, |o, dst| {
            spilled.read_at(o, dst).unwrap();
        });
        let or = run_threads(threads, len, |o, dst| original_ram.read_at(o, dst).unwrap());
        let od = run_threads(threads, len, |o, dst| {
            original_disk.read_at(o, dst).unwrap()
        });
        println!(
            "| {threads} | {memcpy:.2} | {r:.2} | {:.2}× | {s:.2} | {:.2}× | {or:.2} | {od:.2} |",
            r / memcpy,
            s / memcpy
        );
    }
}

// ---- 3. 4 KiB hits across threads ------------------------------------------------------------

fn hits_4k(data: &Arc<Vec<u8>>) {
    let len = data.len();
    let size = 4096;
    let ram = support::sparsebuf(data, None);
    let spilled = support::sparsebuf(data, Some(BUDGET));
    let rw = RwVec(parking_lot::RwLock::new(data.to_vec()));
    let original = Original::new(data, len + 1);
    let table: Vec<&[u8]> = data.chunks(SEGMENT).collect();
    // Warm the spilled buffer's maps: one read per segment.
    let mut dst = vec![0u8; size];
    for o in (0..len as u64).step_by(SEGMENT) {
        spilled.read_at(o, &mut dst).unwrap();
    }
    println!(
        "\n### 4 KiB random hits across threads, aggregate GiB/s ({} MiB stream, 2 cores)\n",
        len >> 20
    );
    println!("| threads | memcpy | memcpy via a segment table | ratio | sparsebuf RAM | ratio | sparsebuf spilled | ratio | `RwLock<Vec>` | ratio | original RAM | ratio |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    for threads in [1, 2, 4, 16] {
        let memcpy = run_threads_of(threads, len, size, |o, dst| {
            let o = o as usize;
            dst.copy_from_slice(&data[o..o + dst.len()]);
            std::hint::black_box(&dst);
        });
        let t = run_threads_of(threads, len, size, |o, dst| {
            let (segment, at) = ((o as usize) / SEGMENT, (o as usize) % SEGMENT);
            let n = (SEGMENT - at).min(dst.len());
            dst[..n].copy_from_slice(&table[segment][at..at + n]);
            if n < dst.len() {
                let rest = dst.len() - n;
                dst[n..].copy_from_slice(&table[segment + 1][..rest]);
            }
            std::hint::black_box(&dst);
        });
        let r = run_threads_of(threads, len, size, |o, dst| {
            ram.read_at(o, dst).unwrap();
        });
        let s = run_threads_of(threads, len, size, |o, dst| {
            spilled.read_at(o, dst).unwrap();
        });
        let v = run_threads_of(threads, len, size, |o, dst| rw.read_at(o, dst));
        let or = run_threads_of(threads, len, size, |o, dst| {
            original.read_at(o, dst).unwrap()
        });
        println!(
            "| {threads} | {memcpy:.2} | {t:.2} | {:.2}× | {r:.2} | {:.2}× | {s:.2} | {:.2}× | {v:.2} | {:.2}× | {or:.2} | {:.2}× |",
            t / memcpy,
            r / memcpy,
            s / memcpy,
            v / memcpy,
            or / memcpy
        );
    }
}

// ---- 4. latency ------------------------------------------------------------------------------

/// An endless slow source: 16 KiB per read after `pause`, past the first `fast_until` bytes.
struct Slow {
    pos: u64,
    fast_until: u64,
    pause: Duration,
}

impl Read for Slow {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos >= self.fast_until {
            thread::sleep(self.pause);
        }
        let n = buf.len().min(16 << 10);
        buf[..n].fill(self.pos as u8);
        self.pos += n as u64;
        Ok(n)
    }
}

fn percentiles(h: &Histogram<u64>) -> String {
    let us = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    format!(
        "{:.2} µs | {:.2} µs | {:.2} µs | {:.1} µs | {}",
        us(0.5),
        us(0.99),
        us(0.999),
        h.max() as f64 / 1000.0,
        h.len()
    )
}

/// 4 KiB hits from `readers` threads for a second; one histogram of all their latencies.
fn hit_latencies(buf: &StreamBuffer, filled: usize, readers: usize) -> Histogram<u64> {
    let stop = AtomicBool::new(false);
    thread::scope(|s| {
        let handles: Vec<_> = (0..readers)
            .map(|t| {
                let stop = &stop;
                s.spawn(move || {
                    let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).unwrap();
                    let mut offs = Offsets::new(filled, 4096);
                    for _ in 0..t * 31 {
                        offs.next();
                    }
                    let mut dst = [0u8; 4096];
                    while !stop.load(Ordering::Relaxed) {
                        let o = offs.next();
                        let t0 = Instant::now();
                        buf.read_at(o, &mut dst).unwrap();
                        h.record(t0.elapsed().as_nanos() as u64).unwrap();
                    }
                    h
                })
            })
            .collect();
        thread::sleep(Duration::from_secs(1));
        stop.store(true, Ordering::Relaxed);
        let mut all = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).unwrap();
        for h in handles {
            all.add(h.join().unwrap()).unwrap();
        }
        all
    })
}

fn latency(data: &Arc<Vec<u8>>) {
    let filled = data.len().min(64 << 20);
    println!("\n### Latency of 4 KiB reads (HDR histogram)\n");
    println!("| case | p50 | p99 | p99.9 | max | reads |");
    println!("|---|---|---|---|---|---|");
    for (tier, budget) in [("RAM", filled * 4), ("spilled", BUDGET)] {
        let buf = StreamBuffer::builder()
            .memory_budget(budget)
            .build(Slow {
                pos: 0,
                fast_until: filled as u64,
                pause: Duration::from_micros(200),
            })
            .unwrap();
        buf.read_range(0..filled as u64).unwrap();
        let idle = hit_latencies(&buf, filled, 1);
        println!(
            "| hits, {tier}, writer idle, 1 reader | {} |",
            percentiles(&idle)
        );
        // A writer ingesting the slow source (about 80 MB/s) while one reader measures.
        let stop = Arc::new(AtomicBool::new(false));
        let mut waits = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).unwrap();
        let busy = thread::scope(|s| {
            let writer = {
                let (buf, stop) = (buf.clone(), stop.clone());
                s.spawn(move || {
                    // Reads at the frontier: each one waits for the source. Their latencies are
                    // "reads that had to wait for the writer".
                    let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).unwrap();
                    let mut at = filled as u64;
                    let mut dst = [0u8; 4096];
                    while !stop.load(Ordering::Relaxed) {
                        let t0 = Instant::now();
                        buf.read_exact_at(at, &mut dst).unwrap();
                        h.record(t0.elapsed().as_nanos() as u64).unwrap();
                        at += dst.len() as u64;
                    }
                    h
                })
            };
            let busy = hit_latencies(&buf, filled, 1);
            stop.store(true, Ordering::Relaxed);
            waits = writer.join().unwrap();
            busy
        });
        println!(
            "| hits, {tier}, writer ingesting, 1 reader | {} |",
            percentiles(&busy)
        );
        println!(
            "| reads waiting for the writer ({tier}) | {} |",
            percentiles(&waits)
        );
    }
}
