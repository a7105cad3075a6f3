//! Models and random offsets for tests: the bytes of a synthetic stream as a `Vec`, and a small
//! PRNG. Shared by path with the command's tests (`cli/tests/common/`); the including module
//! re-exports the generator's `byte_at` and `mix`.

use super::{byte_at, mix};

/// `len` bytes of the synthetic stream `seed`, as a model to compare against.
pub fn data(len: usize, seed: u64) -> Vec<u8> {
    (0..len as u64).map(|i| byte_at(seed, i)).collect()
}

/// A small PRNG for tests that pick random offsets.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = mix(self.0);
        self.0
    }
    /// Uniform-ish in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}
