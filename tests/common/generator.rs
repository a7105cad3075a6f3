//! The synthetic streams of the tests: byte `pos` of stream `seed`, computable at any offset, so
//! large streams need no model in memory. Shared by the integration tests and the fuzz crate
//! (which includes this file by path).

use std::io::{self, Read};

/// splitmix64: a tiny, good-enough deterministic generator.
pub fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// The byte at `pos` of the synthetic stream `seed`.
pub fn byte_at(seed: u64, pos: u64) -> u8 {
    (mix(seed ^ (pos / 8).wrapping_mul(0x2545_F491_4F6C_DD1D)) >> ((pos % 8) * 8)) as u8
}

/// The synthetic stream `seed`, `len` bytes, at most `max_read` per read.
pub struct Generated {
    pub seed: u64,
    pub pos: u64,
    pub len: u64,
    pub max_read: usize,
}

impl Read for Generated {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = (self.len - self.pos).min(buf.len().min(self.max_read) as u64) as usize;
        for (i, b) in buf[..n].iter_mut().enumerate() {
            *b = byte_at(self.seed, self.pos + i as u64);
        }
        self.pos += n as u64;
        Ok(n)
    }
}

/// Panics unless `got`, read at `offset`, is the synthetic stream's bytes.
pub fn check_generated(seed: u64, offset: u64, got: &[u8]) {
    for (i, &b) in got.iter().enumerate() {
        let pos = offset + i as u64;
        assert_eq!(b, byte_at(seed, pos), "wrong byte at offset {pos}");
    }
}
