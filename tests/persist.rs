//! A persistent cache directory: what a restart serves without fetching, what it must fetch
//! again (a changed resource, a flipped byte, a torn journal), one process per directory, a full
//! disk, and kills at random moments. Every byte read is compared with the model.

mod common;

use std::io::{self, Read};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{byte_at, check_generated};
use sparsebuf::{Cache, RangeSource, StreamBuffer, Validators};

const SEG: usize = 64 * 1024;

/// The synthetic stream `seed` as a range source at version `etag`, counting what it reads.
struct Versioned {
    seed: u64,
    len: u64,
    etag: &'static str,
    read: Arc<AtomicU64>,
}

impl RangeSource for Versioned {
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
    fn validators(&self) -> Validators {
        Validators::new().etag(self.etag)
    }
}

fn persistent(dir: &Path) -> Cache {
    Cache::builder()
        .persist(dir)
        .memory_budget(2 << 20)
        .disk_budget(64 << 20)
        .segment_size(SEG)
        .build()
        .unwrap()
}

fn open(cache: &Cache, seed: u64, len: u64, etag: &'static str) -> (StreamBuffer, Arc<AtomicU64>) {
    let read = Arc::new(AtomicU64::new(0));
    let counter = read.clone();
    let buf = cache
        .open_ranged("object", move || {
            Ok(Versioned {
                seed,
                len,
                etag,
                read: counter,
            })
        })
        .unwrap();
    (buf, read)
}

fn read_all_checked(buf: &StreamBuffer, seed: u64, len: u64) {
    let mut all = Vec::new();
    buf.reader().read_to_end(&mut all).unwrap();
    assert_eq!(all.len() as u64, len);
    check_generated(seed, 0, &all);
}

const LEN: u64 = 5 * (1 << 20) + 123;

#[test]
fn a_restart_serves_what_was_stored_without_fetching_it() {
    let dir = tempfile::tempdir().unwrap();
    {
        let cache = persistent(dir.path());
        let (buf, read) = open(&cache, 1, LEN, "\"v1\"");
        read_all_checked(&buf, 1, LEN);
        assert_eq!(read.load(Ordering::SeqCst), LEN);
    }
    let cache = persistent(dir.path());
    let (buf, read) = open(&cache, 1, LEN, "\"v1\"");
    read_all_checked(&buf, 1, LEN);
    assert_eq!(
        read.load(Ordering::SeqCst),
        0,
        "fetched again after a restart"
    );
    // Ranges too, in any order.
    let got = buf.read_range(LEN - 1000..LEN).unwrap();
    check_generated(1, LEN - 1000, &got);
    assert_eq!(read.load(Ordering::SeqCst), 0);
}

#[test]
fn what_stays_in_ram_is_written_through_and_kept_too() {
    let dir = tempfile::tempdir().unwrap();
    let big = |dir: &Path| {
        Cache::builder()
            .persist(dir)
            .memory_budget(256 << 20)
            .segment_size(SEG)
            .build()
            .unwrap()
    };
    {
        let cache = big(dir.path());
        let (buf, _) = open(&cache, 8, LEN, "\"v1\"");
        read_all_checked(&buf, 8, LEN);
        assert_eq!(buf.stats().segments_spilled, 0);
    }
    let cache = big(dir.path());
    let (buf, read) = open(&cache, 8, LEN, "\"v1\"");
    read_all_checked(&buf, 8, LEN);
    assert_eq!(
        read.load(Ordering::SeqCst),
        0,
        "fetched again after a restart"
    );
}

#[test]
fn a_changed_resource_is_fetched_anew_and_never_served_from_the_old_copy() {
    let dir = tempfile::tempdir().unwrap();
    {
        let cache = persistent(dir.path());
        let (buf, _) = open(&cache, 1, LEN, "\"v1\"");
        read_all_checked(&buf, 1, LEN);
    }
    let cache = persistent(dir.path());
    // Same key, new content and a new ETag.
    let (buf, read) = open(&cache, 2, LEN, "\"v2\"");
    read_all_checked(&buf, 2, LEN);
    assert_eq!(read.load(Ordering::SeqCst), LEN);
    drop(buf);
    drop(cache);
    // And the new version is what the next restart keeps.
    let cache = persistent(dir.path());
    let (buf, read) = open(&cache, 2, LEN, "\"v2\"");
    read_all_checked(&buf, 2, LEN);
    assert_eq!(read.load(Ordering::SeqCst), 0);
}

#[test]
fn a_flipped_byte_in_the_data_file_is_fetched_again_never_served() {
    let dir = tempfile::tempdir().unwrap();
    {
        let cache = persistent(dir.path());
        let (buf, _) = open(&cache, 3, LEN, "\"v1\"");
        read_all_checked(&buf, 3, LEN);
    }
    // One bit in the middle of the third slot of the data file.
    let data = dir.path().join("data");
    let mut bytes = std::fs::read(&data).unwrap();
    let at = 2 * SEG + 1234;
    bytes[at] ^= 0x10;
    std::fs::write(&data, &bytes).unwrap();
    let cache = persistent(dir.path());
    let (buf, read) = open(&cache, 3, LEN, "\"v1\"");
    read_all_checked(&buf, 3, LEN);
    // Exactly the spoiled segment came again.
    assert_eq!(read.load(Ordering::SeqCst), SEG as u64);
}

#[test]
fn a_truncated_journal_is_recovered_and_what_it_lost_is_fetched_again() {
    let dir = tempfile::tempdir().unwrap();
    {
        let cache = persistent(dir.path());
        let (buf, _) = open(&cache, 4, LEN, "\"v1\"");
        read_all_checked(&buf, 4, LEN);
    }
    let journal = dir.path().join("journal");
    let bytes = std::fs::read(&journal).unwrap();
    // Cut in the middle of a record.
    std::fs::write(&journal, &bytes[..bytes.len() / 2 + 3]).unwrap();
    let cache = persistent(dir.path());
    let (buf, read) = open(&cache, 4, LEN, "\"v1\"");
    read_all_checked(&buf, 4, LEN);
    let fetched = read.load(Ordering::SeqCst);
    assert!(fetched > 0 && fetched < LEN, "fetched {fetched} of {LEN}");
}

#[test]
fn a_second_cache_on_the_directory_is_refused_and_the_first_serves_on() {
    let dir = tempfile::tempdir().unwrap();
    let first = persistent(dir.path());
    let (buf, _) = open(&first, 5, LEN, "\"v1\"");
    let error = Cache::builder().persist(dir.path()).build().unwrap_err();
    assert_eq!(error.kind(), io::ErrorKind::WouldBlock);
    let pid = std::process::id().to_string();
    assert!(error.to_string().contains(&pid), "{error}");
    // Another process is refused too (util-linux `flock`, where it is installed).
    if let Ok(status) = std::process::Command::new("flock")
        .args(["-n", "-E", "75"])
        .arg(dir.path().join("lock"))
        .arg("true")
        .status()
    {
        assert_eq!(status.code(), Some(75), "another process took the lock");
    }
    read_all_checked(&buf, 5, LEN);
    drop(buf);
    drop(first);
    // Free again once the first cache is gone.
    let (buf, read) = open(&persistent(dir.path()), 5, LEN, "\"v1\"");
    read_all_checked(&buf, 5, LEN);
    assert_eq!(read.load(Ordering::SeqCst), 0);
}

#[test]
fn a_full_disk_while_persisting_is_counted_and_loses_nothing() {
    let Some(fs) = common::tmpfs::Tmpfs::mount("1m") else {
        return;
    };
    let dir = fs.path().join("cache");
    {
        let cache = persistent(&dir);
        let (buf, _) = open(&cache, 6, LEN, "\"v1\"");
        read_all_checked(&buf, 6, LEN);
        read_all_checked(&buf, 6, LEN);
        assert!(buf.stats().spill_errors > 0);
    }
    let cache = persistent(&dir);
    let (buf, read) = open(&cache, 6, LEN, "\"v1\"");
    read_all_checked(&buf, 6, LEN);
    // Some of it was kept (the 1 MiB that fitted, less the journal), the rest fetched.
    let fetched = read.load(Ordering::SeqCst);
    assert!(fetched < LEN, "nothing was kept");
}

#[test]
fn a_source_without_validators_is_not_kept() {
    struct Bare(u64);
    impl RangeSource for Bare {
        fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
            let n = buf.len().min(self.0.saturating_sub(offset) as usize);
            for (i, b) in buf[..n].iter_mut().enumerate() {
                *b = byte_at(7, offset + i as u64);
            }
            Ok(n)
        }
        fn len(&self) -> Option<u64> {
            Some(self.0)
        }
    }
    let dir = tempfile::tempdir().unwrap();
    for _ in 0..2 {
        let cache = persistent(dir.path());
        let buf = cache.open_ranged("bare", || Ok(Bare(LEN))).unwrap();
        read_all_checked(&buf, 7, LEN);
        assert!(
            buf.stats().source_bytes >= LEN,
            "served without a version to check"
        );
    }
}

/// In a child process: reads the object behind `SPARSEBUF_KILL_URL` through a persistent
/// cache in `SPARSEBUF_KILL_DIR` with 4 threads at random ranges, until killed; every byte
/// checked.
#[cfg(feature = "client")]
#[test]
fn kill_child_reads_until_killed() {
    let (Ok(url), Ok(dir)) = (
        std::env::var("SPARSEBUF_KILL_URL"),
        std::env::var("SPARSEBUF_KILL_DIR"),
    ) else {
        return;
    };
    let seed: u64 = std::env::var("SPARSEBUF_KILL_SEED")
        .unwrap()
        .parse()
        .unwrap();
    let cache = Cache::builder()
        .persist(&dir)
        .memory_budget(4 << 20)
        .segment_size(SEG)
        .build()
        .unwrap();
    let buf = cache.open_url(&url).unwrap();
    let len = buf.len().unwrap();
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let buf = buf.clone();
            std::thread::spawn(move || {
                let mut rng = common::Rng(seed * 10 + t + 1);
                for _ in 0..1000 {
                    let at = rng.below(len);
                    let n = rng.below(512 * 1024).min(len - at);
                    let got = buf.read_range(at..at + n).unwrap();
                    check_generated(41, at, &got);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

#[cfg(feature = "client")]
#[test]
fn kills_at_random_moments_never_cost_a_wrong_byte_and_resume_rather_than_refetch() {
    use common::origin::{Behaviour, Origin};
    let trials: u64 = std::env::var("SPARSEBUF_KILL_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let len = 16 << 20;
    let model: Vec<u8> = (0..len).map(|i| byte_at(41, i)).collect();
    let origin = Origin::start(
        Arc::new(model),
        Behaviour {
            rate: Some(64 << 20),
            ..Behaviour::default()
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut rng = common::Rng(99);
    for trial in 0..trials {
        let mut child = std::process::Command::new(&exe)
            .args(["kill_child_reads_until_killed", "--exact", "--nocapture"])
            .env("SPARSEBUF_KILL_URL", &origin.url)
            .env("SPARSEBUF_KILL_DIR", dir.path())
            .env("SPARSEBUF_KILL_SEED", trial.to_string())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(50 + rng.below(300)));
        match child.try_wait().unwrap() {
            // It read everything it wanted before the kill came: it must have passed.
            Some(status) => {
                let mut err = String::new();
                child
                    .stderr
                    .take()
                    .unwrap()
                    .read_to_string(&mut err)
                    .unwrap();
                assert!(status.success(), "trial {trial}: {err}");
            }
            None => {
                // SIGKILL: nothing runs after it, no destructor, no flush.
                child.kill().unwrap();
                child.wait().unwrap();
            }
        }
        if std::env::var_os("SPARSEBUF_KILL_VERBOSE").is_some() {
            let journal = std::fs::metadata(dir.path().join("journal")).map_or(0, |m| m.len());
            eprintln!(
                "after trial {trial}: {} bytes sent, journal {journal}",
                served(&origin)
            );
        }
    }
    // Then a whole read through a restarted cache: every byte right.
    let served_before = served(&origin);
    {
        let cache = Cache::builder()
            .persist(dir.path())
            .segment_size(SEG)
            .build()
            .unwrap();
        let buf = cache.open_url(&origin.url).unwrap();
        read_all_checked(&buf, 41, len);
    }
    let final_read = served(&origin) - served_before;
    // A clean restart after a complete read fetches nothing.
    let before = served(&origin);
    {
        let cache = Cache::builder()
            .persist(dir.path())
            .segment_size(SEG)
            .build()
            .unwrap();
        let buf = cache.open_url(&origin.url).unwrap();
        read_all_checked(&buf, 41, len);
    }
    let after_clean = served(&origin) - before;
    let total = served(&origin);
    eprintln!(
        "{trials} kills: upstream sent {total} bytes for a {len}-byte object ({:.2}x); the read \
         after the kills fetched {final_read}, a clean restart {after_clean}",
        total as f64 / len as f64
    );
    // Only probes (a few bytes each) after a clean restart.
    assert!(after_clean < 64 * 1024, "{after_clean} bytes fetched again");
    assert!(
        total as f64 <= 1.5 * len as f64,
        "upstream sent {total} bytes for {len}: refetched, not resumed"
    );
}

/// Body bytes the origin has sent so far.
#[cfg(feature = "client")]
fn served(origin: &common::origin::Origin) -> u64 {
    origin.log().iter().map(|s| s.sent).sum()
}

/// A range source over the synthetic stream 43 that appends the size of each read to a file
/// (one `write` of a line each, `O_APPEND`), so that a parent process can count what children
/// that were killed read.
struct Counted {
    len: u64,
    counter: std::fs::File,
}

impl RangeSource for Counted {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        use std::io::Write;
        let n = buf.len().min(self.len.saturating_sub(offset) as usize);
        for (i, b) in buf[..n].iter_mut().enumerate() {
            *b = byte_at(43, offset + i as u64);
        }
        (&self.counter).write_all(format!("{n}\n").as_bytes())?;
        Ok(n)
    }
    fn len(&self) -> Option<u64> {
        Some(self.len)
    }
    fn validators(&self) -> Validators {
        Validators::new().etag("\"counted\"")
    }
}

const COUNTED_LEN: u64 = 32 << 20;

fn open_counted(cache: &Cache, counter: &Path) -> StreamBuffer {
    let counter = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(counter)
        .unwrap();
    cache
        .open_ranged("counted", move || {
            Ok(Counted {
                len: COUNTED_LEN,
                counter,
            })
        })
        .unwrap()
}

fn counted(counter: &Path) -> u64 {
    std::fs::read_to_string(counter)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.parse::<u64>().ok())
        .sum()
}

/// In a child process: 4 threads read random ranges of the counted source through a persistent
/// cache in `SPARSEBUF_COUNTED_DIR`, until killed; every byte checked.
#[test]
fn counted_child_reads_until_killed() {
    let Ok(dir) = std::env::var("SPARSEBUF_COUNTED_DIR") else {
        return;
    };
    let seed: u64 = std::env::var("SPARSEBUF_KILL_SEED")
        .unwrap()
        .parse()
        .unwrap();
    let dir = Path::new(&dir);
    let cache = Cache::builder()
        .persist(dir.join("cache"))
        .memory_budget(4 << 20)
        .segment_size(SEG)
        .build()
        .unwrap();
    let buf = open_counted(&cache, &dir.join("counter"));
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let buf = buf.clone();
            std::thread::spawn(move || {
                let mut rng = common::Rng(seed * 10 + t + 1);
                for _ in 0..1000 {
                    let at = rng.below(COUNTED_LEN);
                    let n = rng.below(512 * 1024).min(COUNTED_LEN - at);
                    let got = buf.read_range(at..at + n).unwrap();
                    check_generated(43, at, &got);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

#[test]
fn kills_of_a_counted_range_source_resume_and_never_cost_a_wrong_byte() {
    let trials: u64 = std::env::var("SPARSEBUF_KILL_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let dir = tempfile::tempdir().unwrap();
    let counter = dir.path().join("counter");
    let exe = std::env::current_exe().unwrap();
    let mut rng = common::Rng(17);
    for trial in 0..trials {
        let mut child = std::process::Command::new(&exe)
            .args(["counted_child_reads_until_killed", "--exact", "--nocapture"])
            .env("SPARSEBUF_COUNTED_DIR", dir.path())
            .env("SPARSEBUF_KILL_SEED", trial.to_string())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(20 + rng.below(200)));
        match child.try_wait().unwrap() {
            Some(status) => {
                let mut err = String::new();
                child
                    .stderr
                    .take()
                    .unwrap()
                    .read_to_string(&mut err)
                    .unwrap();
                assert!(status.success(), "trial {trial}: {err}");
            }
            None => {
                child.kill().unwrap();
                child.wait().unwrap();
            }
        }
    }
    let during = counted(&counter);
    {
        let cache = Cache::builder()
            .persist(dir.path().join("cache"))
            .segment_size(SEG)
            .build()
            .unwrap();
        let buf = open_counted(&cache, &counter);
        read_all_checked(&buf, 43, COUNTED_LEN);
    }
    let complete = counted(&counter);
    // Flushed when the cache was dropped: a restart reads nothing from the source.
    {
        let cache = Cache::builder()
            .persist(dir.path().join("cache"))
            .segment_size(SEG)
            .build()
            .unwrap();
        let buf = open_counted(&cache, &counter);
        read_all_checked(&buf, 43, COUNTED_LEN);
    }
    let again = counted(&counter) - complete;
    eprintln!(
        "{trials} kills: the source gave {during} bytes during them, {complete} with the full \
         read after ({:.2}x the {COUNTED_LEN}-byte object); a clean restart read {again}",
        complete as f64 / COUNTED_LEN as f64
    );
    assert_eq!(again, 0);
    assert!(complete as f64 <= 1.5 * COUNTED_LEN as f64);
}

/// The forward-only stream of `seed`, `len` bytes.
fn forward(seed: u64, len: u64) -> common::Generated {
    common::Generated {
        seed,
        pos: 0,
        len,
        max_read: 40_000,
    }
}

#[test]
fn a_forward_only_stream_read_to_its_end_is_kept_and_a_partial_one_is_not() {
    let dir = tempfile::tempdir().unwrap();
    {
        let cache = persistent(dir.path());
        let whole = cache.open_stream("whole", || Ok(forward(9, LEN))).unwrap();
        read_all_checked(&whole, 9, LEN);
        let part = cache.open_stream("part", || Ok(forward(10, LEN))).unwrap();
        check_generated(10, 0, &part.read_range(0..LEN / 2).unwrap());
        // Kept on a worker once it ended: give it a moment.
        std::thread::sleep(Duration::from_millis(300));
    }
    let cache = persistent(dir.path());
    let whole = cache
        .open_stream("whole", || -> io::Result<common::Generated> {
            panic!("a kept stream is not made again")
        })
        .unwrap();
    read_all_checked(&whole, 9, LEN);
    assert_eq!(whole.len(), Some(LEN));
    let made = Arc::new(AtomicU64::new(0));
    let counter = made.clone();
    let part = cache
        .open_stream("part", move || {
            counter.fetch_add(1, Ordering::SeqCst);
            Ok(forward(10, LEN))
        })
        .unwrap();
    read_all_checked(&part, 10, LEN);
    assert_eq!(
        made.load(Ordering::SeqCst),
        1,
        "a partial stream is made again"
    );
}

#[test]
fn a_damaged_kept_stream_is_an_error_never_wrong_bytes_and_made_again_once_removed() {
    let dir = tempfile::tempdir().unwrap();
    {
        let cache = persistent(dir.path());
        let whole = cache.open_stream("s", || Ok(forward(11, LEN))).unwrap();
        read_all_checked(&whole, 11, LEN);
        std::thread::sleep(Duration::from_millis(300));
    }
    let data = dir.path().join("data");
    let mut bytes = std::fs::read(&data).unwrap();
    bytes[5 * SEG + 17] ^= 0x01;
    std::fs::write(&data, &bytes).unwrap();
    let cache = persistent(dir.path());
    let s = cache
        .open_stream("s", || -> io::Result<common::Generated> {
            panic!("kept: not made")
        })
        .unwrap();
    // Segment by segment: the intact ones read exact, the damaged one is an error.
    let mut damaged = 0;
    for at in (0..LEN).step_by(SEG) {
        let end = (at + SEG as u64).min(LEN);
        match s.read_range(at..end) {
            Ok(got) => check_generated(11, at, &got),
            Err(error) => {
                assert_eq!(error.kind(), io::ErrorKind::InvalidData, "{error}");
                damaged += 1;
            }
        }
    }
    assert_eq!(damaged, 1);
    drop(s);
    assert!(cache.remove("s"));
    let s = cache.open_stream("s", || Ok(forward(11, LEN))).unwrap();
    read_all_checked(&s, 11, LEN);
}

#[test]
fn a_restart_after_a_read_larger_than_ram_fetches_nothing() {
    // Written through, spilled and flushed concurrently (a flush in progress when the cache
    // closed once lost the records it was writing: 20 of 4096 segments were fetched again).
    let dir = tempfile::tempdir().unwrap();
    let len: u64 = 48 << 20;
    let big = |dir: &Path| {
        Cache::builder()
            .persist(dir)
            .memory_budget(8 << 20)
            .segment_size(SEG)
            .build()
            .unwrap()
    };
    for round in 0..3 {
        let cache = big(dir.path());
        let (buf, read) = open(&cache, 12, len, "\"v1\"");
        let mut reader = buf.reader();
        let mut chunk = vec![0u8; 1 << 20];
        while reader.read(&mut chunk).unwrap() > 0 {}
        let fetched = read.load(Ordering::SeqCst);
        assert_eq!(fetched, if round == 0 { len } else { 0 }, "round {round}");
    }
    let cache = big(dir.path());
    let (buf, _) = open(&cache, 12, len, "\"v1\"");
    check_generated(
        12,
        len - 100_000,
        &buf.read_range(len - 100_000..len).unwrap(),
    );
}

#[cfg(feature = "client")]
#[test]
fn a_changed_url_is_fetched_anew_after_a_restart_never_served_from_the_old_copy() {
    use common::upstream::{Script, Upstream};
    let v1: Vec<u8> = (0..2_000_000u64).map(|i| byte_at(61, i)).collect();
    let v2: Vec<u8> = (0..2_000_000u64).map(|i| byte_at(62, i)).collect();
    // Version 1 for the first run's requests, version 2 (another ETag and date) after.
    let upstream = Upstream::start(Script::new(v1.clone(), v2.clone(), 20));
    let dir = tempfile::tempdir().unwrap();
    {
        let cache = persistent(dir.path());
        let buf = cache.open_url(&upstream.url).unwrap();
        let mut all = Vec::new();
        buf.reader().read_to_end(&mut all).unwrap();
        assert!(all == v1, "the first run reads version 1");
    }
    // Past the change: every request from now on gets version 2.
    for _ in 0..40 {
        if upstream.requests() >= 20 {
            break;
        }
        // A probe is one request.
        drop(StreamBuffer::builder().build_url(&upstream.url));
    }
    assert!(upstream.requests() >= 20);
    let cache = persistent(dir.path());
    let buf = cache.open_url(&upstream.url).unwrap();
    let mut all = Vec::new();
    buf.reader().read_to_end(&mut all).unwrap();
    assert!(all == v2, "a restart served the old version");
}
