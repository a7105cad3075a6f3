//! A cache of many streams (issue: many streams under one budget). Not a criterion bench: a
//! harness that prints its figures (BENCHMARKS.md, "## Many streams").
//!
//! 1. Scale: `SPARSEBUF_CACHE_BUFFERS` (default 10,000) generated streams of 4 MiB, opened
//!    through one `Cache` (256 MiB of RAM, 4 GiB of disk in the system's temp directory) and
//!    read to their end by two threads, every byte compared; threads, open descriptors and
//!    anonymous RSS sampled every 10 ms. Then the same in a child process under
//!    `RLIMIT_NOFILE` 256.
//! 2. Hit reads: 4 KiB reads at random offsets of a 64 MiB buffer all in RAM, cached and
//!    standalone, against `memcpy` from a `Vec<u8>`, in the same run.
//! 3. Lookups: the median time of `open_stream` for a key that is cached.
//!
//! `cargo bench -p sparsebuf-benches --bench cache`

use std::hint::black_box;
use std::io::{self, Read};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sparsebuf::{Cache, StreamBuffer};

const MIB: u64 = 1 << 20;
const STREAM: u64 = 4 * MIB;

/// Stream `seed`: 8-byte words of a cheap mix of the seed and the word's index.
struct Gen {
    seed: u64,
    pos: u64,
    len: u64,
}

fn word(seed: u64, i: u64) -> u64 {
    let x = (seed ^ i.wrapping_mul(0x9E37_79B9_7F4A_7C15)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^ (x >> 29)
}

/// The bytes of stream `seed` at `pos` (a multiple of 8) into `out`.
fn fill(seed: u64, pos: u64, out: &mut [u8]) {
    for (i, chunk) in out.chunks_mut(8).enumerate() {
        let w = word(seed, pos / 8 + i as u64).to_le_bytes();
        chunk.copy_from_slice(&w[..chunk.len()]);
    }
}

impl Read for Gen {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = (buf.len() as u64).min(self.len - self.pos).min(64 * 1024) as usize & !7;
        let n = if n == 0 {
            (self.len - self.pos) as usize
        } else {
            n
        };
        fill(self.seed, self.pos, &mut buf[..n]);
        self.pos += n as u64;
        Ok(n)
    }
}

fn status(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let value = status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .unwrap()
        .trim();
    let number: u64 = value.split_whitespace().next().unwrap().parse().unwrap();
    if value.ends_with("kB") {
        number * 1024
    } else {
        number
    }
}

fn fds() -> u64 {
    std::fs::read_dir("/proc/self/fd").unwrap().count() as u64
}

fn scale(buffers: u64) {
    let cache = Cache::builder()
        .memory_budget(256 << 20)
        .disk_budget(4 << 30)
        .build()
        .unwrap();
    let before = (status("Threads:"), fds(), status("RssAnon:"));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut peak = (0, 0, 0);
            while !done.load(Ordering::Relaxed) {
                peak.0 = peak.0.max(status("Threads:"));
                peak.1 = peak.1.max(fds());
                peak.2 = peak.2.max(status("RssAnon:"));
                std::thread::sleep(Duration::from_millis(10));
            }
            peak
        })
    };
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (cache, next) = (cache.clone(), next.clone());
            std::thread::spawn(move || {
                let mut chunk = vec![0u8; 256 * 1024];
                let mut want = vec![0u8; 256 * 1024];
                loop {
                    let key = next.fetch_add(1, Ordering::Relaxed);
                    if key >= buffers {
                        return;
                    }
                    let buf = cache
                        .open_stream(&format!("stream/{key}"), move || {
                            Ok(Gen {
                                seed: key,
                                pos: 0,
                                len: STREAM,
                            })
                        })
                        .unwrap();
                    let mut reader = buf.reader();
                    let mut at = 0u64;
                    loop {
                        let n = reader.read(&mut chunk).unwrap();
                        if n == 0 {
                            break;
                        }
                        let from = at & !7;
                        let skip = (at - from) as usize;
                        fill(key, from, &mut want[..skip + n]);
                        assert!(
                            chunk[..n] == want[skip..skip + n],
                            "wrong bytes in {key} at {at}"
                        );
                        at += n as u64;
                    }
                    assert_eq!(at, STREAM);
                }
            })
        })
        .collect();
    for r in readers {
        r.join().unwrap();
    }
    let elapsed = start.elapsed();
    done.store(true, Ordering::Relaxed);
    let peak = sampler.join().unwrap();
    let s = cache.stats();
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get()) as u64;
    // The target's bound (10,000 buffers' worth of overhead), whatever the run's count.
    let rss_bound = (256 << 20) + 10_000 * 16 * 1024;
    println!(
        "scale: {buffers} buffers x 4 MiB in {:.1} s ({:.0} MiB/s): threads {} -> peak {} (bound {}), \
         fds {} -> peak {} (bound 64), RssAnon {} MiB -> peak {} MiB (bound {} MiB); \
         cached {} buffers, {} MiB RAM, {} MiB disk, purged for room {}, evictions {}, waits {}, overcommits {}",
        elapsed.as_secs_f64(),
        (buffers * STREAM) as f64 / MIB as f64 / elapsed.as_secs_f64(),
        before.0,
        peak.0,
        2 * cores + 8,
        before.1,
        peak.1,
        before.2 >> 20,
        peak.2 >> 20,
        rss_bound >> 20,
        s.streams,
        s.memory_bytes >> 20,
        s.disk_bytes >> 20,
        s.purged_for_room,
        s.evictions,
        s.writer_waits,
        s.overcommits,
    );
    let overhead = peak.2.saturating_sub(before.2).saturating_sub(256 << 20);
    println!(
        "scale: RSS past the memory budget {} KiB, {:.1} KiB per cached buffer",
        overhead >> 10,
        overhead as f64 / 1024.0 / s.streams.max(1) as f64
    );
    assert!(peak.0 <= 2 * cores + 8, "threads");
    assert!(peak.1 <= 64, "descriptors");
    assert!(peak.2 <= rss_bound + before.2, "RSS");
}

fn hit_reads() {
    const LEN: usize = 64 << 20;
    let mut data = vec![0u8; LEN];
    fill(7, 0, &mut data);
    let standalone = StreamBuffer::builder()
        .memory_budget(LEN + (1 << 20))
        .build(io::Cursor::new(data.clone()))
        .unwrap();
    standalone.fill_to_end().unwrap();
    let cache = Cache::builder()
        .memory_budget(LEN + (1 << 20))
        .build()
        .unwrap();
    let copy = data.clone();
    let cached = cache
        .open_stream("hits", move || Ok(io::Cursor::new(copy)))
        .unwrap();
    cached.fill_to_end().unwrap();
    let offsets: Vec<u64> = (0..1u64 << 16)
        .map(|i| word(3, i) % (LEN as u64 - 4096))
        .collect();
    let mut dst = vec![0u8; 4096];
    let time = |f: &mut dyn FnMut(u64)| {
        let mut best = f64::MAX;
        for _ in 0..7 {
            let start = Instant::now();
            for _ in 0..8 {
                for &o in &offsets {
                    f(o);
                }
            }
            best = best.min(start.elapsed().as_secs_f64());
        }
        (8 * offsets.len()) as f64 * 4096.0 / best / 1e9
    };
    let memcpy = time(&mut |o| {
        let o = o as usize;
        dst.copy_from_slice(&data[o..o + 4096]);
        black_box(&dst);
    });
    let mut dst2 = vec![0u8; 4096];
    let alone = time(&mut |o| {
        black_box(standalone.read_at(o, &mut dst2).unwrap());
    });
    let mut dst3 = vec![0u8; 4096];
    let in_cache = time(&mut |o| {
        black_box(cached.read_at(o, &mut dst3).unwrap());
    });
    println!(
        "hit reads (4 KiB, random, all in RAM): memcpy {memcpy:.2} GB/s; standalone {alone:.2} GB/s \
         ({:.2}x memcpy); cached {in_cache:.2} GB/s ({:.2}x memcpy); cached/standalone {:.2}",
        alone / memcpy,
        in_cache / memcpy,
        in_cache / alone
    );
}

fn lookups() {
    let cache = Cache::builder().build().unwrap();
    for k in 0..1000u64 {
        drop(
            cache
                .open_stream(&format!("k/{k}"), move || {
                    Ok(Gen {
                        seed: k,
                        pos: 0,
                        len: 1000,
                    })
                })
                .unwrap(),
        );
    }
    let keys: Vec<String> = (0..1000).map(|k| format!("k/{k}")).collect();
    let mut times = Vec::with_capacity(100_000);
    for i in 0..100_000 {
        let key = &keys[i % keys.len()];
        let start = Instant::now();
        let buf = cache
            .open_stream(key, || -> io::Result<Gen> { unreachable!("cached") })
            .unwrap();
        times.push(start.elapsed());
        drop(buf);
    }
    times.sort();
    println!(
        "lookups: open_stream of a cached key (1000 cached): median {:?}, p99 {:?}",
        times[times.len() / 2],
        times[times.len() * 99 / 100]
    );
}

/// RAM a cached buffer costs besides its segments: 10,000 cached buffers of 1000 bytes read to
/// their end and spilled (a 1 MiB budget keeps almost none of their segments in RAM).
fn overhead() {
    let cache = Cache::builder()
        .memory_budget(1 << 20)
        .segment_size(4096)
        .build()
        .unwrap();
    let before = status("RssAnon:");
    for k in 0..10_000u64 {
        let buf = cache
            .open_stream(&format!("small/{k}"), move || {
                Ok(Gen {
                    seed: k,
                    pos: 0,
                    len: 1000,
                })
            })
            .unwrap();
        buf.fill_to_end().unwrap();
    }
    let after = status("RssAnon:");
    let s = cache.stats();
    println!(
        "overhead: 10,000 cached buffers of 1000 bytes: RssAnon +{} KiB, {:.1} KiB per buffer \
         ({} KiB of it segments in RAM, {} buffers cached)",
        (after - before) >> 10,
        (after - before) as f64 / 1024.0 / 10_000.0,
        s.memory_bytes >> 10,
        s.streams
    );
}

fn main() {
    // `cargo bench` passes `--bench`; a child run under the descriptor limit passes `child`.
    let args: Vec<String> = std::env::args().collect();
    let buffers: u64 = std::env::var("SPARSEBUF_CACHE_BUFFERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    if args.iter().any(|a| a == "child") {
        scale(buffers);
        return;
    }
    lookups();
    hit_reads();
    scale(buffers);
    overhead();
    let exe = std::env::current_exe().unwrap();
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("ulimit -n 256 && exec '{}' child", exe.display()))
        .status()
        .unwrap();
    println!(
        "scale under RLIMIT_NOFILE 256: {}",
        if status.success() { "passed" } else { "FAILED" }
    );
    assert!(status.success());
}
