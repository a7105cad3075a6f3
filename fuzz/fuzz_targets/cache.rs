//! A cache of a few keys under tiny budgets: random opens (forward-only or ranged by the key's
//! parity), reads through held handles, drops, lookups, removals and purges. Every byte read is
//! compared with the key's generated stream; after each step the budgets hold (the forward-only
//! keys fit them together, so no writer has to go over).
#![no_main]

use std::collections::HashMap;
use std::io;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use sparsebuf::{Cache, RangeSource, StreamBuffer};
use sparsebuf_fuzz::{byte_at, Generated};

#[derive(Arbitrary, Debug)]
enum Op {
    Open(u8),
    Read { key: u8, offset: u32, len: u16 },
    Drop(u8),
    Get(u8),
    Remove(u8),
    PurgeIdle,
}

#[derive(Arbitrary, Debug)]
struct Input {
    segment_shift: u8,
    ttl_ms: Option<u8>,
    ops: Vec<Op>,
}

const KEYS: u8 = 6;

struct Ranged {
    seed: u64,
    len: u64,
}

impl RangeSource for Ranged {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let n = buf.len().min(self.len.saturating_sub(offset) as usize);
        for (i, b) in buf[..n].iter_mut().enumerate() {
            *b = byte_at(self.seed, offset + i as u64);
        }
        Ok(n)
    }
    fn len(&self) -> Option<u64> {
        Some(self.len)
    }
}

/// Key `k`'s length in segments of `segment` bytes: the forward-only keys (0, 2, 4) take 3, 7
/// and 11 segments and a bit, 24 together, within the budgets of 8 + 24 segments.
fn len(k: u8, segment: u64) -> u64 {
    (3 + 2 * u64::from(k)) * segment + u64::from(k) * 17
}

fuzz_target!(|input: Input| {
    let segment = 1usize << (8 + input.segment_shift % 6);
    let mut builder = Cache::builder()
        .segment_size(segment)
        .memory_budget(8 * segment)
        .disk_budget(26 * segment as u64)
        .max_wait(std::time::Duration::from_millis(50));
    if let Some(ms) = input.ttl_ms {
        builder = builder.idle_ttl(std::time::Duration::from_millis(u64::from(ms % 20)));
    }
    let cache = builder.build().unwrap();
    let mut held: HashMap<u8, StreamBuffer> = HashMap::new();
    for op in input.ops.into_iter().take(64) {
        match op {
            Op::Open(k) => {
                let k = k % KEYS;
                let (seed, n) = (u64::from(k), len(k, segment as u64));
                let buf = if k % 2 == 0 {
                    cache.open_stream(&k.to_string(), move || {
                        Ok(Generated {
                            seed,
                            pos: 0,
                            len: n,
                            max_read: 1000,
                        })
                    })
                } else {
                    cache.open_ranged(&k.to_string(), move || Ok(Ranged { seed, len: n }))
                }
                .unwrap();
                held.insert(k, buf);
            }
            Op::Read {
                key,
                offset,
                len: want,
            } => {
                let k = key % KEYS;
                if let Some(buf) = held.get(&k) {
                    let n = len(k, segment as u64);
                    let offset = u64::from(offset) % (n + 100);
                    let mut dst = vec![0u8; usize::from(want)];
                    let got = buf.read_at(offset, &mut dst).unwrap();
                    assert_eq!(got as u64, n.saturating_sub(offset).min(u64::from(want)));
                    for (i, &b) in dst[..got].iter().enumerate() {
                        assert_eq!(b, byte_at(u64::from(k), offset + i as u64));
                    }
                }
            }
            Op::Drop(k) => {
                held.remove(&(k % KEYS));
            }
            Op::Get(k) => drop(cache.get(&(k % KEYS).to_string())),
            Op::Remove(k) => {
                cache.remove(&(k % KEYS).to_string());
            }
            Op::PurgeIdle => {
                cache.purge_idle();
            }
        }
        let s = cache.stats();
        assert!(s.memory_bytes <= s.memory_budget, "{s:?}");
        assert!(s.disk_bytes <= s.disk_budget, "{s:?}");
        assert_eq!(s.overcommits, 0, "{s:?}");
    }
});
