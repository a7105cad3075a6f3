//! Spilling in the background: a stream's writer hands each spilled segment to a thread that
//! writes it while the writer goes on pulling. Reads that pulled return with every spill
//! settled; dropping the buffer releases the storage; failures are handled as inline ones.

mod common;

use std::io::Read;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{check_generated, Fault, Faulty, Generated};
use sparsebuf::StreamBuffer;

const SEGMENT: u64 = 4096;

fn buffer(storage: &Arc<Faulty>, budget_segments: u64, len: u64) -> StreamBuffer {
    StreamBuffer::builder()
        .segment_size(SEGMENT as usize)
        .memory_budget((budget_segments * SEGMENT) as usize)
        .spill_storage(storage.clone())
        .build(Generated {
            seed: 91,
            pos: 0,
            len,
            max_read: 10_000,
        })
        .unwrap()
}

/// After each read that made the writer pull, the segments are where synchronous spilling
/// would have put them: RAM holds the budget (and the segment being filled), the rest is
/// spilled, nothing is in between.
#[test]
fn every_spill_is_settled_when_a_pulling_read_returns() {
    let storage = Arc::new(Faulty::new(Fault::None));
    let (budget, len) = (4, 200 * SEGMENT);
    let buf = buffer(&storage, budget, len);
    let mut dst = vec![0u8; 1000];
    for k in 1..200 {
        let at = k * SEGMENT - 500;
        buf.read_exact_at(at, &mut dst).unwrap();
        check_generated(91, at, &dst);
        let st = buf.stats();
        let (full, partial) = (st.filled_bytes / SEGMENT, st.filled_bytes % SEGMENT > 0);
        // The budget holds `budget` segments, one of them kept for the segment being filled.
        let spilled = full.saturating_sub(budget - 1);
        assert_eq!(st.segments_spilled, spilled, "{st:?}");
        assert_eq!(
            st.segments_in_memory,
            full - spilled + u64::from(partial),
            "{st:?}"
        );
        assert!(st.memory_bytes <= (budget + 2) * SEGMENT, "{st:?}");
    }
    let mut all = Vec::new();
    buf.reader().read_to_end(&mut all).unwrap();
    assert_eq!(all.len() as u64, len);
    check_generated(91, 0, &all);
    assert_eq!(buf.stats().spill_errors, 0);
}

/// The spill thread holds the buffer only while it writes: once the last handle is gone, the
/// buffer and its storage are released.
#[test]
fn dropping_the_buffer_releases_its_storage() {
    let storage = Arc::new(Faulty::new(Fault::None));
    let buf = buffer(&storage, 2, 100 * SEGMENT);
    assert_eq!(buf.fill_to_end().unwrap(), 100 * SEGMENT);
    assert!(buf.stats().segments_spilled >= 97);
    drop(buf);
    let start = Instant::now();
    while Arc::strong_count(&storage) > 1 {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "storage still held"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// A write that fails in the background leaves its segment in RAM and is counted, as inline.
#[test]
fn a_failed_background_write_keeps_the_segment_in_ram() {
    let storage = Arc::new(Faulty::new(Fault::FailNthWrite {
        n: 3,
        persistent: false,
    }));
    let len = 50 * SEGMENT;
    let buf = buffer(&storage, 2, len);
    let mut all = Vec::new();
    buf.reader().read_to_end(&mut all).unwrap();
    check_generated(91, 0, &all);
    let st = buf.stats();
    assert_eq!(st.spill_errors, 1, "{st:?}");
    // Retried later: everything past the budget ends up spilled after all.
    assert!(st.segments_spilled >= 47, "{st:?}");
    assert_eq!(st.segments_in_memory + st.segments_spilled, 50, "{st:?}");
    assert_eq!(buf.read_range(0..len).unwrap(), all);
}
