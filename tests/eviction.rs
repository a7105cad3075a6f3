//! Disk budget and eviction: a range source's coldest segments leave the spill file (or RAM)
//! and are fetched again when read; a stream's bytes are never dropped.

mod common;

use std::io::{self, Write};
use std::thread;
use std::time::Duration;

use common::{data, expected, within, Rng};
use sparsebuf::StreamBuffer;

const SEGMENT: usize = 4096;

fn file_with(model: &[u8]) -> std::fs::File {
    let mut f = tempfile::tempfile().unwrap();
    f.write_all(model).unwrap();
    f
}

#[test]
fn a_range_source_evicts_and_fetches_again_under_both_budgets() {
    within(Duration::from_secs(120), || {
        let model = data(2 << 20, 1);
        let buf = StreamBuffer::builder()
            .segment_size(SEGMENT)
            .memory_budget(2 * SEGMENT)
            .disk_budget(4 * SEGMENT as u64)
            .build_ranged(file_with(&model))
            .unwrap();
        thread::scope(|s| {
            for t in 0..8u64 {
                let (buf, model) = (buf.clone(), &model);
                s.spawn(move || {
                    let mut rng = Rng(t + 1);
                    for _ in 0..200 {
                        let offset = rng.below(model.len() as u64 + 100);
                        let len = rng.below(3 * SEGMENT as u64) as usize;
                        let mut dst = vec![0u8; len];
                        let n = buf.read_at(offset, &mut dst).unwrap();
                        assert_eq!(&dst[..n], expected(model, offset, len));
                    }
                });
            }
        });
        let st = buf.stats();
        assert!(st.evictions > 0, "{st:?}");
        assert!(st.segments_spilled <= 4, "{st:?}");
        assert!(st.spilled_bytes <= 4 * SEGMENT as u64, "{st:?}");
        // Both tiers are tiny, so reading everything again fetches again.
        assert_eq!(buf.read_range(0..u64::MAX).unwrap(), model);
        let st = buf.stats();
        assert!(st.refetched_bytes > 0, "{st:?}");
        assert_eq!(st.fetches_in_flight, 0);
        assert!(st.memory_bytes <= 4 * SEGMENT as u64, "{st:?}");
    });
}

#[test]
fn a_zero_disk_budget_drops_cold_segments_from_ram() {
    let model = data(1 << 20, 2);
    let buf = StreamBuffer::builder()
        .segment_size(SEGMENT)
        .memory_budget(8 * SEGMENT)
        .disk_budget(0)
        .build_ranged(file_with(&model))
        .unwrap();
    for round in 0..2 {
        let mut rng = Rng(round);
        for _ in 0..300 {
            let offset = rng.below(1 << 20);
            let got = buf.read_range(offset..offset + 5000).unwrap();
            assert_eq!(got, expected(&model, offset, 5000));
        }
    }
    let st = buf.stats();
    assert_eq!((st.segments_spilled, st.spill_errors), (0, 0), "{st:?}");
    assert!(st.evictions > 0 && st.refetched_bytes > 0, "{st:?}");
    assert!(st.segments_in_memory <= 8, "{st:?}");
}

#[test]
fn a_stream_keeps_its_bytes_in_ram_when_the_disk_budget_is_full() {
    let model = data(400_000, 3);
    let buf = StreamBuffer::builder()
        .segment_size(SEGMENT)
        .memory_budget(4 * SEGMENT)
        .disk_budget(10 * SEGMENT as u64)
        .build(io::Cursor::new(model.clone()))
        .unwrap();
    assert_eq!(buf.read_range(0..u64::MAX).unwrap(), model);
    let st = buf.stats();
    assert_eq!(st.segments_spilled, 10, "{st:?}");
    assert_eq!(st.evictions, 0);
    assert!(
        st.memory_bytes >= model.len() as u64 - 10 * SEGMENT as u64,
        "{st:?}"
    );
}

#[test]
fn save_fetches_evicted_segments_again() {
    let model = data(1 << 20, 4);
    let buf = StreamBuffer::builder()
        .segment_size(SEGMENT)
        .memory_budget(4 * SEGMENT)
        .disk_budget(8 * SEGMENT as u64)
        .build_ranged(file_with(&model))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("copy.bin");
    assert_eq!(buf.save(&path).unwrap(), 1 << 20);
    assert_eq!(std::fs::read(&path).unwrap(), model);
    assert!(buf.stats().evictions > 0);
}
