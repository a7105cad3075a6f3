//! Memory stays within the budget plus a few segments while a large stream goes through.

mod common;

use std::io::Read;

use common::{check_generated, Generated};
use sparsebuf::StreamBuffer;

#[test]
fn streaming_64_mib_with_a_1_mib_budget_stays_within_budget() {
    const LEN: u64 = 64 << 20;
    const BUDGET: u64 = 1 << 20;
    const SEGMENT: u64 = 64 << 10;
    let dir = tempfile::tempdir().unwrap();
    let buf = StreamBuffer::builder()
        .segment_size(SEGMENT as usize)
        .memory_budget(BUDGET as usize)
        .spill_dir(dir.path())
        .build(Generated {
            seed: 71,
            pos: 0,
            len: LEN,
            max_read: 100_000,
        })
        .unwrap();
    let ceiling = BUDGET + 2 * SEGMENT;
    let mut r = buf.reader();
    let mut chunk = vec![0u8; 256 * 1024];
    let mut pos = 0;
    loop {
        let n = r.read(&mut chunk).unwrap();
        if n == 0 {
            break;
        }
        check_generated(71, pos, &chunk[..n]);
        pos += n as u64;
        let st = buf.stats();
        assert!(st.memory_bytes <= ceiling, "at {pos}: {st:?}");
        // Random access into spilled data keeps working.
        if pos % (8 << 20) < n as u64 {
            let mut back = [0u8; 1000];
            buf.read_exact_at(pos / 3, &mut back).unwrap();
            check_generated(71, pos / 3, &back);
        }
    }
    assert_eq!(pos, LEN);
    let st = buf.stats();
    assert!(st.peak_memory_bytes <= ceiling, "{st:?}");
    assert!(st.spilled_bytes >= LEN - BUDGET, "{st:?}");
    assert_eq!(st.spill_errors, 0);
}
