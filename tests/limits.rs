//! Process limits that would kill the process or exhaust its memory: a file-size limit
//! (`RLIMIT_FSIZE`, whose `SIGXFSZ` kills by default) and an address-space limit (`RLIMIT_AS`,
//! under which maps fail). Each test runs its body in a child process (this same test binary,
//! re-run with the limit set), so the limit touches nothing else and a death by signal is seen
//! by the parent as a failure instead of taking the test runner down with it.

mod common;

use std::io::{self, Read};
use std::process::Command;

use common::{byte_at, check_generated, Generated, Rng};
use sparsebuf::{RangeSource, StreamBuffer};

const CHILD: &str = "SPARSEBUF_LIMITS_CHILD";

/// In the parent: runs test `name` again in a child process and asserts it passed (and was not
/// killed). In the child: returns true, and the caller runs the body.
fn in_child(name: &str) -> bool {
    if std::env::var_os(CHILD).is_some() {
        return true;
    }
    let out = Command::new(std::env::current_exe().unwrap())
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD, "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    {
        use std::os::unix::process::ExitStatusExt;
        assert!(
            out.status.signal().is_none(),
            "the child was killed by signal {:?}\n{stderr}",
            out.status.signal()
        );
    }
    assert!(out.status.success(), "the child failed\n{stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("1 passed"),
        "the child ran no test:\n{stdout}"
    );
    false
}

fn set_soft_limit(resource: rustix::process::Resource, limit: u64) {
    let mut rlimit = rustix::process::getrlimit(resource);
    rlimit.current = Some(limit);
    rustix::process::setrlimit(resource, rlimit).unwrap();
}

/// The kind of `EFBIG`: `FileTooLarge` (spelled this way for Rust versions before it was
/// stable).
fn file_too_large() -> io::ErrorKind {
    io::Error::from(rustix::io::Errno::FBIG).kind()
}

fn vm_size_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmSize:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

fn generated(seed: u64, len: u64) -> Generated {
    Generated {
        seed,
        pos: 0,
        len,
        max_read: 64 << 10,
    }
}

/// Spilling past `RLIMIT_FSIZE` raised `SIGXFSZ` and killed the process; so did `save`. Now
/// the spill fails with `FileTooLarge` (the segment stays in RAM, every byte right), and `save`
/// fails the same way before writing anything.
#[test]
fn a_file_size_limit_is_an_error_not_a_signal() {
    if !in_child("a_file_size_limit_is_an_error_not_a_signal") {
        return;
    }
    let limit = 1 << 20;
    set_soft_limit(rustix::process::Resource::Fsize, limit);
    let dir = tempfile::tempdir().unwrap();
    let (seed, len) = (81, 4 << 20);
    let buf = StreamBuffer::builder()
        .segment_size(64 << 10)
        .memory_budget(256 << 10)
        .spill_dir(dir.path())
        .build(generated(seed, len))
        .unwrap();
    let mut all = Vec::new();
    buf.reader().read_to_end(&mut all).unwrap();
    assert_eq!(all.len() as u64, len);
    check_generated(seed, 0, &all);

    let st = buf.stats();
    // What fits under the limit was spilled; the rest stayed in RAM, counted.
    assert_eq!(st.spilled_bytes, limit, "{st:?}");
    assert!(st.spill_errors > 0, "{st:?}");
    assert_eq!(buf.spill_error().unwrap().kind(), file_too_large());
    assert_eq!(buf.read_range(0..len).unwrap(), all);

    // Saving more than the limit: an error, and nothing left in the directory.
    let out = tempfile::tempdir().unwrap();
    let err = buf.save(out.path().join("whole.bin")).unwrap_err();
    assert_eq!(err.kind(), file_too_large(), "{err}");
    assert!(err.to_string().contains("RLIMIT_FSIZE"), "{err}");
    assert_eq!(std::fs::read_dir(out.path()).unwrap().count(), 0);

    // Under the limit, saving works as ever.
    let small = StreamBuffer::new(generated(seed, 100_000));
    let path = out.path().join("small.bin");
    assert_eq!(small.save(&path).unwrap(), 100_000);
    check_generated(seed, 0, &std::fs::read(&path).unwrap());
}

/// When maps failed (an address-space limit), spills failed too and every later segment stayed
/// in RAM until an allocation aborted the process. Now spilled segments that cannot be mapped
/// are read with `pread`, spilling goes on, and RAM stays within the budget.
#[test]
fn reads_stay_right_and_memory_bounded_when_maps_fail() {
    if !in_child("reads_stay_right_and_memory_bounded_when_maps_fail") {
        return;
    }
    let (seed, len, budget, segment) = (82, 256u64 << 20, 1 << 20, 64 << 10);
    let dir = tempfile::tempdir().unwrap();
    let buf = StreamBuffer::builder()
        .segment_size(segment)
        .memory_budget(budget)
        .spill_dir(dir.path())
        .build(generated(seed, len))
        .unwrap();
    let headroom = 96 << 20;
    set_soft_limit(
        rustix::process::Resource::As,
        vm_size_kib() * 1024 + headroom,
    );

    // Stream it all, then read it all back: far more than the headroom gets mapped-or-read.
    let mut r = buf.reader();
    let mut chunk = vec![0u8; 1 << 20];
    let mut pos = 0;
    loop {
        let n = r.read(&mut chunk).unwrap();
        if n == 0 {
            break;
        }
        check_generated(seed, pos, &chunk[..n]);
        pos += n as u64;
    }
    assert_eq!(pos, len);
    let mut rng = Rng(seed);
    let mut dst = vec![0u8; 100_000];
    for _ in 0..3000 {
        let offset = rng.below(len);
        let n = buf.read_at(offset, &mut dst).unwrap();
        check_generated(seed, offset, &dst[..n]);
    }
    let st = buf.stats();
    assert_eq!(st.spill_errors, 0, "{st:?}");
    assert!(
        st.spilled_bytes >= len - budget as u64 - segment as u64,
        "{st:?}"
    );
    assert!(
        st.memory_bytes <= budget as u64 + 4 * segment as u64,
        "{st:?}"
    );
    assert!(
        st.peak_memory_bytes <= budget as u64 + 4 * segment as u64,
        "{st:?}"
    );
    assert!(st.mapped_bytes < headroom, "{st:?}");
}

/// A range source of 1 TiB, generated on the fly.
struct Huge {
    seed: u64,
    len: u64,
}

impl RangeSource for Huge {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.len.saturating_sub(offset).min(buf.len() as u64) as usize;
        for (i, b) in buf[..n].iter_mut().enumerate() {
            *b = byte_at(self.seed, offset + i as u64);
        }
        Ok(n)
    }
    fn len(&self) -> Option<u64> {
        Some(self.len)
    }
}

/// Maps grew in regions that doubled and were never released: far reads of a range source
/// took the process to terabytes of virtual memory. Now only spilled segments are mapped, and
/// only while they are spilled, so the address space follows the disk budget.
#[test]
fn far_reads_keep_virtual_memory_within_the_disk_budget() {
    if !in_child("far_reads_keep_virtual_memory_within_the_disk_budget") {
        return;
    }
    let (seed, len, disk) = (83, 1u64 << 40, 4u64 << 20);
    let dir = tempfile::tempdir().unwrap();
    let buf = StreamBuffer::builder()
        .segment_size(64 << 10)
        .memory_budget(1 << 20)
        .disk_budget(disk)
        .spill_dir(dir.path())
        .build_ranged(Huge { seed, len })
        .unwrap();
    let before = vm_size_kib();
    let mut most = 0;
    let mut rng = Rng(seed);
    let mut dst = vec![0u8; 4096];
    for i in 0..2000 {
        // Half far reads, half re-reads of a small hot region (so spilled segments get read).
        let offset = if i % 2 == 0 {
            rng.below(len - 4096)
        } else {
            rng.below(8 << 20)
        };
        buf.read_exact_at(offset, &mut dst).unwrap();
        check_generated(seed, offset, &dst);
        most = most.max(vm_size_kib().saturating_sub(before));
    }
    let st = buf.stats();
    assert!(st.segments_spilled > 0 && st.evictions > 0, "{st:?}");
    assert!(st.mapped_bytes <= disk, "{st:?}");
    // The disk budget's maps, plus RAM segments, the buffer pool and the allocator's slack.
    assert!(
        most <= 64 << 10,
        "virtual memory grew by {most} KiB: {st:?}"
    );
}
