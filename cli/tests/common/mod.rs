//! Helpers of the command's tests: the command itself (`command.rs`), and the library's test
//! helpers they share (included by path from `../../tests/common/`).
#![allow(dead_code)]

pub mod command;
#[path = "../../../tests/common/curl.rs"]
pub mod curl;
#[path = "../../../tests/common/generator.rs"]
mod generator;
#[path = "../../../tests/common/nginx.rs"]
pub mod nginx;
#[path = "../../../tests/common/upstream.rs"]
pub mod upstream;

pub use generator::{byte_at, mix};

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
