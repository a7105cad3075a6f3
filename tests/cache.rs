//! `Cache`: many buffers under one budget. Every read is compared with the model (the key's
//! synthetic stream), budgets are sampled while streams run, and the purges, single flight and
//! the thread and descriptor counts are pinned.

mod common;

use std::collections::HashMap;
use std::io::{self, Read};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use common::{byte_at, check_generated, Generated, Rng};
use proptest::prelude::*;
use sparsebuf::{Cache, RangeSource, StreamBuffer};

const SEG: usize = 64 * 1024;
const MIB: u64 = 1 << 20;

/// The forward-only stream of `seed`, `len` bytes.
fn stream(seed: u64, len: u64) -> Generated {
    Generated {
        seed,
        pos: 0,
        len,
        max_read: 48 * 1024,
    }
}

/// A range source over the synthetic stream `seed` that counts the bytes it reads.
struct Ranged {
    seed: u64,
    len: u64,
    read: Arc<AtomicU64>,
}

impl RangeSource for Ranged {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let n = buf.len().min(self.len.saturating_sub(offset) as usize);
        for (i, b) in buf[..n].iter_mut().enumerate() {
            *b = byte_at(self.seed, offset + i as u64);
        }
        self.read.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
    fn len(&self) -> Option<u64> {
        Some(self.len)
    }
}

/// Reads all of `buf` with a cursor in 100 KiB reads, checking every byte against `seed`.
fn read_all_checked(buf: &StreamBuffer, seed: u64, len: u64) {
    let mut reader = buf.reader();
    let mut chunk = vec![0u8; 100 * 1024];
    let mut at = 0u64;
    loop {
        let n = reader.read(&mut chunk).unwrap();
        if n == 0 {
            break;
        }
        check_generated(seed, at, &chunk[..n]);
        at += n as u64;
    }
    assert_eq!(at, len, "stream {seed} ended early");
}

fn cache(memory: usize, disk: u64) -> Cache {
    Cache::builder()
        .memory_budget(memory)
        .disk_budget(disk)
        .segment_size(SEG)
        .build()
        .unwrap()
}

#[test]
fn budgets_hold_across_100_streams_sampled_while_they_run() {
    let cache = cache(64 << 20, 128 << 20);
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (cache, done) = (cache.clone(), done.clone());
        thread::spawn(move || {
            let mut samples = 0u64;
            let mut peak = (0, 0);
            while !done.load(Ordering::SeqCst) {
                let s = cache.stats();
                assert!(s.memory_bytes <= 64 << 20, "RAM over budget: {s:?}");
                assert!(s.disk_bytes <= 128 << 20, "disk over budget: {s:?}");
                peak = (peak.0.max(s.memory_bytes), peak.1.max(s.disk_bytes));
                samples += 1;
                thread::sleep(Duration::from_millis(2));
            }
            (samples, peak)
        })
    };
    // 4 threads, 25 streams each: 1 to 8 MiB, forward-only or ranged; read whole, then a few
    // random ranges of an earlier key (a hit, or rebuilt if it was purged).
    let sizes: Arc<HashMap<u64, u64>> = Arc::new(
        (0..100u64)
            .map(|k| (k, MIB + k * 73_331 % (7 * MIB)))
            .collect(),
    );
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let (cache, sizes) = (cache.clone(), sizes.clone());
            thread::spawn(move || {
                let mut rng = Rng(t + 1);
                for i in 0..25u64 {
                    let key = t * 25 + i;
                    let len = sizes[&key];
                    let buf = open(&cache, key, len);
                    read_all_checked(&buf, key, len);
                    drop(buf);
                    let old = rng.below(key + 1);
                    let buf = open(&cache, old, sizes[&old]);
                    for _ in 0..4 {
                        let at = rng.below(sizes[&old]);
                        let n = (rng.below(200_000) as usize).min((sizes[&old] - at) as usize);
                        let got = buf.read_range(at..at + n as u64).unwrap();
                        check_generated(old, at, &got);
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    done.store(true, Ordering::SeqCst);
    let (samples, peak) = sampler.join().unwrap();
    let s = cache.stats();
    eprintln!(
        "{samples} samples, peak RAM {} MiB, peak disk {} MiB; {s:?}",
        peak.0 >> 20,
        peak.1 >> 20
    );
    assert!(samples > 10);
    // The budgets were used, not just respected: RAM filled, and the disk took the rest.
    assert!(peak.0 > 32 << 20 && peak.1 > 64 << 20, "{peak:?}");
    assert!(s.purged_for_room > 0, "{s:?}");
}

/// Key `key` as a forward-only stream (even keys) or a range source (odd ones).
fn open(cache: &Cache, key: u64, len: u64) -> StreamBuffer {
    let name = format!("stream-{key}");
    if key % 2 == 0 {
        cache
            .open_stream(&name, move || Ok(stream(key, len)))
            .unwrap()
    } else {
        let read = Arc::new(AtomicU64::new(0));
        cache
            .open_ranged(&name, move || {
                Ok(Ranged {
                    seed: key,
                    len,
                    read,
                })
            })
            .unwrap()
    }
}

#[test]
fn under_pressure_the_least_recently_used_idle_buffer_goes_and_a_held_one_never() {
    // 4 segments of RAM, 8 on disk: three 4-segment streams fill both.
    let cache = cache(4 * SEG, 8 * SEG as u64);
    // Short of whole segments: the writer learns of the end without another buffer.
    let len = 4 * SEG as u64 - 1000;
    let held = cache.open_stream("held", || Ok(stream(1, len))).unwrap();
    held.fill_to_end().unwrap();
    for (key, seed) in [("a", 2), ("b", 3)] {
        let buf = cache
            .open_stream(key, move || Ok(stream(seed, len)))
            .unwrap();
        buf.fill_to_end().unwrap();
    }
    // "a" is looked up again: "b" is now the least recently used idle buffer.
    drop(cache.get("a").unwrap());
    // A fourth stream needs room: "b" goes; "held" (a live handle) and "a" stay.
    let d = cache.open_stream("d", || Ok(stream(4, len))).unwrap();
    read_all_checked(&d, 4, len);
    eprintln!(
        "held {} a {} b {} d {}",
        cache.get("held").is_some(),
        cache.get("a").is_some(),
        cache.get("b").is_some(),
        cache.get("d").is_some()
    );
    assert!(
        cache.get("b").is_none(),
        "b should have been purged: {:?}",
        cache.stats()
    );
    assert!(cache.get("held").is_some());
    read_all_checked(&held, 1, len);
    let a = cache.get("a").expect("a was used more recently than b");
    read_all_checked(&a, 2, len);
    let s = cache.stats();
    assert_eq!(s.purged_for_room, 1, "{s:?}");
    assert!(s.disk_bytes <= 8 * SEG as u64 && s.memory_bytes <= 4 * SEG as u64);
}

#[test]
fn idle_buffers_are_purged_after_the_ttl_and_held_ones_are_not() {
    let cache = Cache::builder()
        .idle_ttl(Duration::from_millis(200))
        .build()
        .unwrap();
    let held = cache.open_stream("held", || Ok(stream(1, MIB))).unwrap();
    let idle = cache.open_stream("idle", || Ok(stream(2, MIB))).unwrap();
    read_all_checked(&idle, 2, MIB);
    drop(idle);
    // By the timer, with no cache operation.
    let start = Instant::now();
    while cache.len() > 1 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "TTL purge never came"
        );
        thread::sleep(Duration::from_millis(10));
    }
    assert!(start.elapsed() >= Duration::from_millis(100));
    assert!(cache.get("idle").is_none());
    thread::sleep(Duration::from_millis(400));
    // Held for twice the TTL: still there, and whole.
    assert!(cache.get("held").is_some());
    read_all_checked(&held, 1, MIB);
    assert_eq!(cache.stats().purged_idle, 1);
    drop(held);
    // Seen in use a moment ago: not idle for the TTL yet, even when forced.
    assert_eq!(cache.purge_idle(), 0);
    let start = Instant::now();
    while !cache.is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "TTL purge never came"
        );
        thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(cache.stats().purged_idle, 2);
}

#[test]
fn without_a_ttl_purge_idle_takes_every_idle_buffer() {
    let cache = Cache::builder().build().unwrap();
    let keep = cache.open_stream("keep", || Ok(stream(1, 1000))).unwrap();
    for i in 0..10 {
        drop(cache.open_stream(&format!("k{i}"), move || Ok(stream(i, 1000))));
    }
    assert_eq!(cache.len(), 11);
    assert_eq!(cache.purge_idle(), 10);
    assert_eq!(cache.len(), 1);
    assert_eq!(keep.read_range(0..1000).unwrap().len(), 1000);
    assert!(cache.remove("keep"));
    assert!(!cache.remove("keep"));
    // Removed, its handle still reads.
    check_generated(1, 0, &keep.read_range(0..1000).unwrap());
}

#[test]
fn sixty_four_threads_opening_one_key_share_one_buffer_and_one_make() {
    let cache = cache(16 << 20, u64::MAX);
    let makes = Arc::new(AtomicU64::new(0));
    let barrier = Arc::new(Barrier::new(64));
    let threads: Vec<_> = (0..64)
        .map(|i| {
            let (cache, makes, barrier) = (cache.clone(), makes.clone(), barrier.clone());
            thread::spawn(move || {
                barrier.wait();
                let buf = cache
                    .open_stream("one", || {
                        makes.fetch_add(1, Ordering::SeqCst);
                        thread::sleep(Duration::from_millis(50));
                        Ok(stream(9, 3 * MIB))
                    })
                    .unwrap();
                let at = (i * 40_000) as u64;
                let got = buf.read_range(at..at + 10_000).unwrap();
                check_generated(9, at, &got);
                buf
            })
        })
        .collect();
    let bufs: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert_eq!(makes.load(Ordering::SeqCst), 1);
    assert_eq!(cache.len(), 1);
    // One buffer: the source was read once.
    assert!(bufs[0].stats().source_bytes <= 3 * MIB);
}

#[test]
fn a_failing_or_panicking_make_reaches_every_waiter_and_frees_the_key() {
    let cache = cache(16 << 20, u64::MAX);
    for panics in [false, true] {
        let barrier = Arc::new(Barrier::new(8));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (cache, barrier) = (cache.clone(), barrier.clone());
                thread::spawn(move || {
                    barrier.wait();
                    cache.open_stream("bad", move || -> io::Result<Generated> {
                        thread::sleep(Duration::from_millis(50));
                        if panics {
                            panic!("the source could not be made");
                        }
                        Err(io::Error::new(io::ErrorKind::NotFound, "no such stream"))
                    })
                })
            })
            .collect();
        for t in threads {
            let error = t.join().unwrap().unwrap_err();
            if panics {
                assert_eq!(error.kind(), io::ErrorKind::Other);
                assert!(error.to_string().contains("could not be made"), "{error}");
            } else {
                assert_eq!(error.kind(), io::ErrorKind::NotFound);
                assert!(error.to_string().contains("no such stream"), "{error}");
            }
        }
        assert!(cache.is_empty());
        // The key is free: the next open builds.
        let buf = cache.open_stream("bad", || Ok(stream(5, 1000))).unwrap();
        check_generated(5, 0, &buf.read_range(0..1000).unwrap());
        assert!(cache.remove("bad"));
    }
}

#[test]
fn a_range_source_fetches_again_what_the_cache_dropped_and_the_bytes_stay_exact() {
    // RAM of 8 segments, disk of 8: a 64-segment ranged object read twice cannot stay whole.
    let cache = cache(8 * SEG, 8 * SEG as u64);
    let read = Arc::new(AtomicU64::new(0));
    let len = 64 * SEG as u64;
    let src_read = read.clone();
    let buf = cache
        .open_ranged("obj", move || {
            Ok(Ranged {
                seed: 77,
                len,
                read: src_read,
            })
        })
        .unwrap();
    read_all_checked(&buf, 77, len);
    read_all_checked(&buf, 77, len);
    let s = cache.stats();
    assert!(
        s.memory_bytes <= 8 * SEG as u64 && s.disk_bytes <= 8 * SEG as u64,
        "{s:?}"
    );
    assert!(
        read.load(Ordering::SeqCst) > len,
        "nothing was fetched again"
    );
    assert!(s.totals.refetched_bytes > 0, "{s:?}");
}

#[test]
fn a_writer_waits_while_every_buffer_is_in_use_and_goes_on_when_one_is_dropped() {
    // 4 segments of RAM, 4 of disk, two held streams of 4 segments each fill both.
    let cache = cache(4 * SEG, 4 * SEG as u64);
    let len = 4 * SEG as u64 - 1000;
    let first = cache.open_stream("first", || Ok(stream(1, len))).unwrap();
    first.fill_to_end().unwrap();
    let second = cache.open_stream("second", || Ok(stream(2, len))).unwrap();
    second.fill_to_end().unwrap();
    let third = cache.open_stream("third", || Ok(stream(3, len))).unwrap();
    let reading = {
        let third = third.clone();
        thread::spawn(move || {
            read_all_checked(&third, 3, len);
        })
    };
    thread::sleep(Duration::from_millis(300));
    assert!(
        !reading.is_finished(),
        "the third stream should wait for room"
    );
    assert!(cache.stats().writer_waits >= 1);
    // Nothing was lost meanwhile.
    read_all_checked(&first, 1, len);
    drop(first);
    common::within(Duration::from_secs(20), move || reading.join().unwrap());
    read_all_checked(&second, 2, len);
    read_all_checked(&third, 3, len);
    let s = cache.stats();
    assert!(
        s.memory_bytes <= 4 * SEG as u64 && s.disk_bytes <= 4 * SEG as u64,
        "{s:?}"
    );
}

#[test]
fn one_stream_larger_than_both_budgets_goes_over_them_rather_than_hang() {
    let cache = cache(2 * SEG, 2 * SEG as u64);
    let len = 8 * SEG as u64;
    let buf = cache.open_stream("big", || Ok(stream(3, len))).unwrap();
    common::within(Duration::from_secs(20), move || {
        read_all_checked(&buf, 3, len)
    });
}

/// Threads of the process and its open descriptors.
fn threads_and_fds() -> (usize, usize) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let threads = status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let fds = std::fs::read_dir("/proc/self/fd").unwrap().count();
    (threads, fds)
}

#[test]
fn threads_and_descriptors_stay_flat_from_10_to_10000_buffers() {
    // In a child process, so that other tests' threads do not count.
    if common::child::parent(
        "threads_and_descriptors_stay_flat_from_10_to_10000_buffers",
        Duration::from_secs(300),
    ) {
        return;
    }
    let cache = Cache::builder()
        .memory_budget(4 << 20)
        .disk_budget(64 << 20)
        .segment_size(4096)
        .read_ahead(16 * 1024)
        .threads(4)
        .build()
        .unwrap();
    let (base_threads, base_fds) = threads_and_fds();
    let mut seen = Vec::new();
    let mut held = Vec::new();
    for key in 0..10_000u64 {
        let len = 5_000 + key % 10_000;
        let buf = if key % 2 == 0 {
            cache
                .open_stream(&key.to_string(), move || Ok(stream(key, len)))
                .unwrap()
        } else {
            let read = Arc::new(AtomicU64::new(0));
            cache
                .open_ranged(&key.to_string(), move || {
                    Ok(Ranged {
                        seed: key,
                        len,
                        read,
                    })
                })
                .unwrap()
        };
        read_all_checked(&buf, key, len);
        // Every tenth buffer stays in use, the others go idle in the cache.
        if key % 10 == 0 {
            held.push(buf);
        }
        if [9, 99, 999, 9_999].contains(&key) {
            seen.push(threads_and_fds());
        }
    }
    eprintln!(
        "base {base_threads} threads, {base_fds} fds; at 10/100/1000/10000 buffers: {seen:?}"
    );
    let s = cache.stats();
    eprintln!("{s:?}");
    let cores = thread::available_parallelism().map_or(2, |n| n.get());
    for &(threads, fds) in &seen {
        assert!(threads <= base_threads + 4, "{threads} threads");
        assert!(threads <= 2 * cores + 8, "{threads} threads");
        assert!(fds <= base_fds + 1, "{fds} descriptors");
    }
    // The spill file is the one descriptor more, once anything spilled.
    assert_eq!(seen[2].1, seen[3].1);
    assert!(s.streams >= 1000, "{s:?}");
    for (i, buf) in held.iter().enumerate() {
        let key = i as u64 * 10;
        let len = 5_000 + key % 10_000;
        check_generated(key, len - 100, &buf.read_range(len - 100..len).unwrap());
    }
    // The cache and its buffers gone, so are its workers and its spill file.
    drop(held);
    drop(cache);
    let start = Instant::now();
    while threads_and_fds() != (base_threads, base_fds) {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "left behind: {:?} against {:?}",
            threads_and_fds(),
            (base_threads, base_fds)
        );
        thread::sleep(Duration::from_millis(10));
    }
}

/// What the property test does.
#[derive(Debug, Clone)]
enum Op {
    /// Open key (0..6), forward-only or ranged by its parity, and keep the handle.
    Open(u8),
    /// Read a range of a held handle.
    Read(u8, u32, u32),
    /// Drop a held handle.
    Drop(u8),
    /// Look a key up.
    Get(u8),
    Remove(u8),
    PurgeIdle,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u8..6).prop_map(Op::Open),
        (0u8..6, any::<u32>(), 0u32..200_000).prop_map(|(k, a, n)| Op::Read(k, a, n)),
        (0u8..6).prop_map(Op::Drop),
        (0u8..6).prop_map(Op::Get),
        (0u8..6).prop_map(Op::Remove),
        Just(Op::PurgeIdle),
    ]
}

/// The length of key `k`'s stream. The forward-only ones (even keys) fit the budgets
/// together: with all of them held, a writer has nothing to wait for (the ranged ones can be
/// dropped and fetched again).
fn model_len(k: u8) -> u64 {
    100_000 + u64::from(k) * 60_000
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Random opens, reads, drops, lookups, removals and purges through a small cache: every
    /// read gives the model's bytes, held buffers are never purged, and the budgets hold.
    #[test]
    fn random_operations_match_the_model(ops in proptest::collection::vec(op(), 1..60)) {
        let cache = Cache::builder()
            .memory_budget(8 * 16 * 1024)
            .disk_budget(40 * 16 * 1024)
            .segment_size(16 * 1024)
            .max_wait(Duration::from_millis(100))
            .build()
            .unwrap();
        let mut held: HashMap<u8, StreamBuffer> = HashMap::new();
        for op in ops {
            match op {
                Op::Open(k) => {
                    let len = model_len(k);
                    let seed = u64::from(k);
                    let buf = if k % 2 == 0 {
                        cache.open_stream(&k.to_string(), move || Ok(stream(seed, len)))
                    } else {
                        let read = Arc::new(AtomicU64::new(0));
                        cache.open_ranged(&k.to_string(), move || Ok(Ranged { seed, len, read }))
                    }
                    .unwrap();
                    held.insert(k, buf);
                }
                Op::Read(k, at, n) => {
                    if let Some(buf) = held.get(&k) {
                        let len = model_len(k);
                        let at = u64::from(at) % (len + 10);
                        let mut dst = vec![0u8; n as usize];
                        let got = common::within(Duration::from_secs(30), {
                            let buf = buf.clone();
                            move || {
                                let n = buf.read_at(at, &mut dst).unwrap();
                                dst.truncate(n);
                                dst
                            }
                        });
                        let want = (len.saturating_sub(at)).min(u64::from(n));
                        prop_assert_eq!(got.len() as u64, want);
                        check_generated(u64::from(k), at, &got);
                    }
                }
                Op::Drop(k) => {
                    held.remove(&k);
                }
                Op::Get(k) => {
                    if held.contains_key(&k) {
                        // A held buffer is never purged (unless removed, and then re-held).
                        if let Some(buf) = cache.get(&k.to_string()) {
                            check_generated(u64::from(k), 0, &buf.read_range(0..100).unwrap());
                        }
                    } else {
                        drop(cache.get(&k.to_string()));
                    }
                }
                Op::Remove(k) => {
                    cache.remove(&k.to_string());
                }
                Op::PurgeIdle => {
                    cache.purge_idle();
                }
            }
            let s = cache.stats();
            prop_assert!(s.memory_bytes <= s.memory_budget, "{:?}", s);
            prop_assert!(s.disk_bytes <= s.disk_budget, "{:?}", s);
            prop_assert_eq!(s.overcommits, 0);
        }
    }
}

#[test]
fn a_ranged_read_larger_than_ram_next_to_a_held_stream_stays_within_the_budgets() {
    // Found by the fuzz target: 8 segments of RAM, a held forward-only stream of 3, and a
    // ranged read of 10 segments.
    let seg = 2048usize;
    let cache = Cache::builder()
        .segment_size(seg)
        .memory_budget(8 * seg)
        .disk_budget(26 * seg as u64)
        .max_wait(Duration::from_millis(50))
        .idle_ttl(Duration::from_millis(10))
        .build()
        .unwrap();
    let len0 = 3 * seg as u64;
    let first = cache
        .open_stream("0", move || {
            Ok(Generated {
                seed: 0,
                pos: 0,
                len: len0,
                max_read: 1000,
            })
        })
        .unwrap();
    let at = 501023732 % (len0 + 100);
    let got = first.read_range(at..(at + 41).min(len0)).unwrap();
    check_generated(0, at, &got);
    assert_eq!(cache.purge_idle(), 0);
    let len3 = 9 * seg as u64 + 51;
    let read = Arc::new(AtomicU64::new(0));
    let third = cache
        .open_ranged("3", move || {
            Ok(Ranged {
                seed: 3,
                len: len3,
                read,
            })
        })
        .unwrap();
    let at = 889141303 % (len3 + 100);
    let got = third.read_range(at..len3).unwrap();
    check_generated(3, at, &got);
    let s = cache.stats();
    assert!(
        s.memory_bytes <= s.memory_budget && s.overcommits == 0,
        "{s:?}"
    );
}

#[test]
fn buffers_outlive_their_cache_and_keep_their_bytes() {
    let cache = cache(4 * SEG, 64 * SEG as u64);
    let len = 10 * SEG as u64 + 7;
    let held = cache.open_stream("k", move || Ok(stream(11, len))).unwrap();
    let idle = cache
        .open_stream("idle", move || Ok(stream(12, len)))
        .unwrap();
    read_all_checked(&idle, 12, len);
    drop(idle);
    drop(cache);
    // The cache is gone: its idle buffer with it, the held one reads on within the budget.
    read_all_checked(&held, 11, len);
    assert!(held.stats().memory_bytes <= 5 * SEG as u64);
}

#[cfg(feature = "tokio")]
#[test]
fn async_cursors_of_cached_streams_pull_on_the_cache_workers() {
    use tokio::io::AsyncReadExt;
    let cache = Cache::builder()
        .memory_budget(8 * SEG)
        .threads(1)
        .build()
        .unwrap();
    let len = 40 * SEG as u64 + 3;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let bufs: Vec<_> = (0..4u64)
        .map(|k| {
            cache
                .open_stream(&format!("a{k}"), move || Ok(stream(k, len)))
                .unwrap()
        })
        .collect();
    rt.block_on(async {
        let tasks: Vec<_> = bufs
            .iter()
            .enumerate()
            .map(|(k, buf)| {
                let mut reader = buf.async_reader();
                async move {
                    let mut all = Vec::new();
                    reader.read_to_end(&mut all).await.unwrap();
                    check_generated(k as u64, 0, &all);
                    all.len() as u64
                }
            })
            .collect();
        for len_read in futures_join(tasks).await {
            assert_eq!(len_read, len);
        }
    });
    // One worker thread did every pull.
    assert_eq!(cache.stats().threads, 1);
}

/// Runs the futures concurrently on the current task.
#[cfg(feature = "tokio")]
async fn futures_join<F: std::future::Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut set = Vec::new();
    for f in futures {
        set.push(Box::pin(f));
    }
    let mut out: Vec<Option<F::Output>> = set.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in set.iter_mut().enumerate() {
            if out[i].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => out[i] = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter().map(Option::unwrap).collect()
}

#[cfg(feature = "client")]
#[test]
fn concurrent_open_url_of_one_url_probe_once_and_read_exact_bytes() {
    use common::origin::{Behaviour, Origin};
    let model: Vec<u8> = (0..3 * MIB).map(|i| byte_at(21, i)).collect();
    let origin = Origin::start(
        Arc::new(model.clone()),
        Behaviour {
            latency: Duration::from_millis(50),
            ..Behaviour::default()
        },
    );
    let cache = cache(16 << 20, u64::MAX);
    let barrier = Arc::new(Barrier::new(8));
    let threads: Vec<_> = (0..8u64)
        .map(|i| {
            let (cache, barrier, url) = (cache.clone(), barrier.clone(), origin.url.clone());
            thread::spawn(move || {
                barrier.wait();
                let buf = cache.open_url(&url).unwrap();
                let at = i * 300_000;
                let got = buf.read_range(at..at + 100_000).unwrap();
                check_generated(21, at, &got);
                buf
            })
        })
        .collect();
    let bufs: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert_eq!(cache.len(), 1);
    let mut all = Vec::new();
    bufs[0].reader().read_to_end(&mut all).unwrap();
    assert_eq!(all, model);
    // One probe for the eight opens; the ranges after it.
    let probes = origin
        .log()
        .iter()
        .filter(|s| s.range.is_none_or(|(start, _)| start == 0))
        .count();
    assert!(probes <= 2, "{:?}", origin.log());
}

#[test]
fn a_full_disk_keeps_the_bytes_in_ram_and_every_read_exact() {
    // A 1 MiB tmpfs under a 16 MiB disk budget: spills fail once it is full.
    let Some(fs) = common::tmpfs::Tmpfs::mount("1m") else {
        return;
    };
    let cache = Cache::builder()
        .memory_budget(4 * SEG)
        .disk_budget(16 << 20)
        .spill_dir(fs.path())
        .max_wait(Duration::from_millis(100))
        .build()
        .unwrap();
    let len = 40 * SEG as u64 + 5;
    let a = cache.open_stream("a", move || Ok(stream(31, len))).unwrap();
    read_all_checked(&a, 31, len);
    let b = cache.open_stream("b", move || Ok(stream(32, len))).unwrap();
    read_all_checked(&b, 32, len);
    read_all_checked(&a, 31, len);
    let s = cache.stats();
    assert!(s.totals.spill_errors > 0, "{s:?}");
    assert!(s.disk_bytes <= 1 << 20, "{s:?}");
}

#[test]
fn bad_settings_are_invalid_input() {
    let kind = |b: sparsebuf::CacheBuilder| b.build().unwrap_err().kind();
    assert_eq!(
        kind(Cache::builder().segment_size(1000)),
        io::ErrorKind::InvalidInput
    );
    assert_eq!(
        kind(Cache::builder().segment_size(64)),
        io::ErrorKind::InvalidInput
    );
    assert_eq!(
        kind(Cache::builder().memory_budget(100)),
        io::ErrorKind::InvalidInput
    );
    assert_eq!(
        kind(Cache::builder().threads(0)),
        io::ErrorKind::InvalidInput
    );
    assert_eq!(
        kind(Cache::builder().spill_dir("/nonexistent/sparsebuf")),
        io::ErrorKind::InvalidInput
    );
}
