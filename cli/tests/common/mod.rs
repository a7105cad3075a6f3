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
#[path = "../../../tests/common/origin.rs"]
pub mod origin;
#[path = "../../../tests/common/random.rs"]
mod random;
#[path = "../../../tests/common/upstream.rs"]
pub mod upstream;

#[allow(unused_imports)]
pub use generator::{byte_at, mix};
#[allow(unused_imports)] // each test file uses a different part of the helpers
pub use random::{data, Rng};
