//! `save`: the whole resource written atomically, never a partial file at the path.

mod common;

use std::fs;
use std::io;

use common::{data, Scripted};
use sparsebuf::StreamBuffer;

fn leftovers(dir: &std::path::Path) -> Vec<String> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn saves_ram_and_spilled_segments() {
    let model = data(1_000_000, 61);
    let dir = tempfile::tempdir().unwrap();
    let buf = StreamBuffer::builder()
        .segment_size(4096)
        .memory_budget(64 * 1024)
        .spill_dir(dir.path())
        .build(Scripted::new(model.clone(), 10_000))
        .unwrap();
    buf.read_range(0..500_000).unwrap();
    let path = dir.path().join("out.bin");
    assert_eq!(buf.save(&path).unwrap(), 1_000_000);
    assert_eq!(fs::read(&path).unwrap(), model);
    assert!(buf.stats().segments_spilled > 100);
    // Saving again replaces the file; nothing else is left in the directory.
    fs::write(&path, b"old").unwrap();
    buf.save(&path).unwrap();
    assert_eq!(fs::read(&path).unwrap(), model);
    assert_eq!(leftovers(dir.path()), ["out.bin"]);
}

#[test]
fn a_failing_source_leaves_the_old_file_and_no_temporary() {
    let model = data(100_000, 62);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keep.bin");
    fs::write(&path, b"previous contents").unwrap();
    let buf = StreamBuffer::new(
        Scripted::new(model, 4096).fail_at(50_000, io::ErrorKind::ConnectionAborted),
    );
    let err = buf.save(&path).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::ConnectionAborted);
    assert_eq!(fs::read(&path).unwrap(), b"previous contents");
    assert_eq!(leftovers(dir.path()), ["keep.bin"]);
}

#[test]
fn a_missing_directory_is_an_error_naming_the_path() {
    let buf = StreamBuffer::new(&b"abc"[..]);
    let err = buf.save("/no/such/dir/file.bin").unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::NotFound);
    assert!(err.to_string().contains("/no/such/dir/file.bin"), "{err}");
}

#[test]
fn a_relative_path_saves_into_the_current_directory() {
    let dir = tempfile::tempdir().unwrap();
    let buf = StreamBuffer::new(&b"relative"[..]);
    let prev = std::env::current_dir().unwrap();
    std::env::set_current_dir(dir.path()).unwrap();
    let result = buf.save("rel.bin");
    std::env::set_current_dir(prev).unwrap();
    assert_eq!(result.unwrap(), 8);
    assert_eq!(fs::read(dir.path().join("rel.bin")).unwrap(), b"relative");
}

#[test]
fn a_failure_while_writing_removes_the_temporary_and_keeps_the_old_file() {
    use std::sync::atomic::Ordering;
    use std::sync::Arc;

    let model = data(200_000, 63);
    let storage = Arc::new(common::Faulty::new(common::Fault::None));
    let buf = StreamBuffer::builder()
        .segment_size(4096)
        .memory_budget(4096)
        .spill_storage(storage.clone())
        .build(Scripted::new(model.clone(), 10_000))
        .unwrap();
    buf.fill_to_end().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keep.bin");
    fs::write(&path, b"previous contents").unwrap();
    storage.fail_reads.store(true, Ordering::SeqCst);
    let err = buf.save(&path).unwrap_err();
    assert!(err.to_string().contains("keep.bin"), "{err}");
    assert_eq!(fs::read(&path).unwrap(), b"previous contents");
    assert_eq!(leftovers(dir.path()), ["keep.bin"]);
    storage.fail_reads.store(false, Ordering::SeqCst);
    buf.save(&path).unwrap();
    assert_eq!(fs::read(&path).unwrap(), model);
}

/// Readers of a range source that keep its tiny budgets churning while `save` runs.
fn churn(buf: &StreamBuffer, len: u64, stop: &std::sync::atomic::AtomicBool, seed: u64) {
    let mut rng = common::Rng(seed);
    let mut dst = vec![0u8; 100_000];
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let at = rng.below(len);
        let n = buf.read_at(at, &mut dst).unwrap();
        common::check_generated(7, at, &dst[..n]);
    }
}

/// `save` of a range source with read-ahead, under budgets that hold almost nothing, while
/// readers churn them: each segment it copies is held until copied, or fetched straight from the
/// source when it was evicted. It once failed: "segment 0 keeps being evicted while saving".
fn save_under_eviction(builder: sparsebuf::Builder) {
    use std::io::Write;
    use std::sync::atomic::{AtomicBool, Ordering};
    let len = 16u64 << 20;
    let mut file = tempfile::tempfile().unwrap();
    let mut generated = common::Generated {
        seed: 7,
        pos: 0,
        len,
        max_read: 1 << 20,
    };
    std::io::copy(&mut generated, &mut file).unwrap();
    file.flush().unwrap();
    let buf = builder
        .memory_budget(64 * 1024)
        .read_ahead(256 * 1024)
        .build_ranged(file)
        .unwrap();
    let out = tempfile::tempdir().unwrap();
    let path = out.path().join("saved.bin");
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        for seed in 0..4 {
            let (buf, stop) = (&buf, &stop);
            s.spawn(move || churn(buf, len, stop, seed));
        }
        let saved = buf.save(&path);
        stop.store(true, Ordering::Relaxed);
        assert_eq!(saved.unwrap(), len);
    });
    let saved = fs::read(&path).unwrap();
    common::check_generated(7, 0, &saved);
    assert_eq!(saved.len() as u64, len);
    assert!(buf.stats().evictions > 0, "{:?}", buf.stats());
}

#[test]
fn save_under_eviction_with_a_full_spill_disk() {
    let Some(fs) = common::tmpfs::Tmpfs::mount("1m") else {
        return;
    };
    save_under_eviction(StreamBuffer::builder().spill_dir(fs.path()));
}

#[test]
fn save_under_eviction_with_a_disk_budget() {
    let dir = tempfile::tempdir().unwrap();
    save_under_eviction(
        StreamBuffer::builder()
            .spill_dir(dir.path())
            .disk_budget(512 * 1024),
    );
}
