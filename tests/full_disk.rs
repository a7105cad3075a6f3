//! A real full disk: spill into a 1 MiB tmpfs until it is full. Writing through a memory map
//! there would kill the process with SIGBUS; sparsebuf must report `ENOSPC` as a spill error,
//! keep the segments in RAM and keep returning the right bytes.
//!
//! Needs root (to mount). Set `SPARSEBUF_SKIP_MOUNT_TESTS=1` to skip where that is impossible.

mod common;

use std::io::{self, Read};
use std::path::PathBuf;

use common::tmpfs::Tmpfs;
use common::{data, expected, Rng, Scripted};
use sparsebuf::StreamBuffer;

fn spill_into(dir: PathBuf, model: &[u8]) -> StreamBuffer {
    StreamBuffer::builder()
        .segment_size(64 * 1024)
        .memory_budget(128 * 1024)
        .spill_dir(dir)
        .build(Scripted::new(model.to_vec(), 50_000))
        .unwrap()
}

/// `reads` reads at offsets below `offsets`, of up to `max_len` bytes, each checked against
/// the model.
fn random_reads(
    buf: &StreamBuffer,
    model: &[u8],
    mut rng: Rng,
    reads: usize,
    offsets: u64,
    max_len: u64,
) {
    for _ in 0..reads {
        let offset = rng.below(offsets);
        let len = rng.below(max_len) as usize;
        let mut dst = vec![0u8; len];
        let n = buf.read_at(offset, &mut dst).unwrap();
        assert!(
            &dst[..n] == expected(model, offset, len),
            "wrong bytes at {offset}+{len}"
        );
    }
}

#[test]
fn spilling_past_a_full_tmpfs_is_an_error_not_sigbus() {
    let Some(fs) = Tmpfs::mount("1m") else { return };
    let model = data(8 << 20, 81);
    let buf = spill_into(fs.path().to_path_buf(), &model);

    let mut all = Vec::new();
    buf.reader().read_to_end(&mut all).unwrap();
    assert!(all == model, "sequential read returned wrong bytes");

    random_reads(
        &buf,
        &model,
        Rng(5),
        2000,
        model.len() as u64 + 100,
        200_000,
    );

    let st = buf.stats();
    assert!(
        st.spill_errors > 0,
        "the 1 MiB tmpfs never filled up: {st:?}"
    );
    assert!(
        st.spilled_bytes > 0 && st.spilled_bytes <= 1 << 20,
        "{st:?}"
    );
    // Everything that did not fit stayed in RAM.
    assert!(
        st.memory_bytes + st.spilled_bytes >= model.len() as u64,
        "{st:?}"
    );
    let err = buf.spill_error().unwrap();
    assert_eq!(
        err.kind(),
        io::Error::from_raw_os_error(common::ENOSPC).kind(),
        "{err}"
    );

    // Saving to the full filesystem fails cleanly; saving elsewhere works.
    let err = buf.save(fs.path().join("copy.bin")).unwrap_err();
    assert!(err.to_string().contains("copy.bin"), "{err}");
    assert!(!fs.path().join("copy.bin").exists());
    let elsewhere = tempfile::tempdir().unwrap();
    buf.save(elsewhere.path().join("copy.bin")).unwrap();
    assert!(std::fs::read(elsewhere.path().join("copy.bin")).unwrap() == model);
}

/// Eviction punches holes: under a 512 KiB disk budget, a range source can spill into a 1 MiB
/// tmpfs for ever. If evicted segments kept their space, the tmpfs would fill after 1 MiB of
/// spills and every further spill would fail with ENOSPC.
#[test]
fn evicting_from_a_small_tmpfs_releases_its_space() {
    use std::io::Write;
    let Some(fs) = Tmpfs::mount("1m") else { return };
    let model = data(8 << 20, 82);
    let mut file = tempfile::tempfile().unwrap();
    file.write_all(&model).unwrap();
    let buf = StreamBuffer::builder()
        .segment_size(64 * 1024)
        .memory_budget(128 * 1024)
        .disk_budget(512 * 1024)
        .spill_dir(fs.path())
        .build_ranged(file)
        .unwrap();
    random_reads(&buf, &model, Rng(6), 600, model.len() as u64, 100_000);
    let st = buf.stats();
    assert!(st.evictions > 20, "{st:?}");
    assert!(st.spilled_bytes <= 512 * 1024, "{st:?}");
    assert_eq!(st.spill_errors, 0, "{:?}", buf.spill_error());
}
