//! A large generated stream (up to 16 MiB) hammered at arbitrary offsets and lengths, including
//! overflowing ones, with a budget of one or two small segments so most reads hit spilled data.
#![no_main]

use std::io;

use libfuzzer_sys::fuzz_target;
use sparsebuf::StreamBuffer;
use sparsebuf_fuzz::{byte_at, Scripted};

fuzz_target!(|input: (u64, u8, bool, Vec<(u64, u32)>)| {
    let (seed, shape, wide_offsets, reads) = input;
    let len = ((seed >> 40) % (16 << 20)) + 1;
    let segment = 4096usize << (shape % 4);
    let buf = StreamBuffer::builder()
        .segment_size(segment)
        .memory_budget(segment * (1 + (shape as usize >> 7)))
        .build(Scripted {
            seed,
            len,
            pos: 0,
            chunks: vec![1 + (seed % 200_000) as u32, 7, 65_536],
            next_chunk: 0,
            trouble: None,
        })
        .unwrap();
    for (raw, n) in reads.into_iter().take(256) {
        let offset = if wide_offsets {
            raw
        } else {
            raw % (len + 100_000)
        };
        let n = (n % (1 << 20)) as usize;
        let mut dst = vec![0u8; n];
        match buf.read_at(offset, &mut dst) {
            Ok(got) => {
                let want = len.saturating_sub(offset).min(n as u64);
                assert_eq!(got as u64, want, "read_at({offset}, {n}) of {len}");
                for (i, &b) in dst[..got].iter().enumerate() {
                    assert_eq!(
                        b,
                        byte_at(seed, offset + i as u64),
                        "at {}",
                        offset + i as u64
                    );
                }
            }
            Err(e) => {
                assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
                assert!(offset.checked_add(n as u64).is_none());
            }
        }
        let st = buf.stats();
        assert!(st.memory_bytes <= st.memory_budget.max(segment as u64) + 2 * segment as u64);
    }
});
