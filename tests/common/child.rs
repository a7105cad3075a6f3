//! Tests that could hang run in a child process: the test binary runs itself with the test's
//! name, and the parent fails the test if the child fails or outlives its time (then kills it),
//! so a hang is a failure and never leaves a stuck thread in the test run.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const CHILD: &str = "SPARSEBUF_TEST_CHILD";

/// In the parent: runs test `name` in a child and checks it (returns `true`: the caller returns).
/// In that child: returns `false`, and the caller runs the test's body.
pub fn parent(name: &str, limit: Duration) -> bool {
    if std::env::var(CHILD).is_ok_and(|n| n == name) {
        return false;
    }
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(exe)
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD, name)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let out = child.wait_with_output().unwrap();
            let text = String::from_utf8_lossy(&out.stdout).to_string()
                + &String::from_utf8_lossy(&out.stderr);
            assert!(
                status.success(),
                "{name} failed in its child process:\n{text}"
            );
            assert!(text.contains("1 passed"), "{name} did not run:\n{text}");
            return true;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "{name} hung: no end after {limit:?}\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether resident memory measures the library: not under a sanitizer (`.ci/run` sets
/// `SPARSEBUF_SANITIZER` for its AddressSanitizer step), whose allocator keeps redzones, a
/// quarantine of freed blocks and shadow memory (4 million 1-byte writes grew an ASan process by
/// 349 MiB, 18 MiB without the quarantine, against a few KiB without ASan). Memory bounds are
/// checked by the plain test runs; under a sanitizer the same tests run for memory errors.
pub fn memory_is_measurable() -> bool {
    std::env::var_os("SPARSEBUF_SANITIZER").is_none()
}

/// Anonymous resident memory of this process (`RssAnon`), in bytes.
pub fn rss_anon() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("RssAnon:"))
        .expect("RssAnon in /proc/self/status");
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap();
    kib * 1024
}
