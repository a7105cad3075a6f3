//! Helpers shared by the integration tests: deterministic data, scripted sources, a
//! fault-injecting spill storage, and a watchdog that turns hangs into failures.
#![allow(dead_code)]

use std::io::{self, Read};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

pub mod child;
#[cfg(any(feature = "client", feature = "server"))]
pub mod curl;
mod faulty;
mod generator;
#[cfg(any(feature = "client", feature = "server"))]
pub mod http_server;
mod location;
#[cfg(feature = "object-store")]
pub mod moto;
#[cfg(any(feature = "client", feature = "server"))]
pub mod nginx;
#[cfg(feature = "client")]
pub mod origin;
mod random;
pub mod tmpfs;
#[cfg(any(feature = "client", feature = "server"))]
pub mod upstream;
pub mod window_model;
#[allow(unused_imports)] // each test file uses a different part of the helpers
pub use faulty::{Fault, Faulty, ENOSPC};
#[allow(unused_imports)]
pub use generator::{byte_at, check_generated, mix, Generated};
#[allow(unused_imports)]
pub use location::expected_location;
#[allow(unused_imports)]
pub use random::{data, Rng};

/// `data` cut into chunks whose sizes cycle through `sizes`.
pub fn chunked(data: &[u8], sizes: &[usize]) -> Vec<io::Result<Vec<u8>>> {
    let mut out = Vec::new();
    let mut at = 0;
    for &size in sizes.iter().cycle() {
        if at >= data.len() {
            break;
        }
        let end = (at + size.max(1)).min(data.len());
        out.push(Ok(data[at..end].to_vec()));
        at = end;
    }
    out
}

/// A `Read` source with a script: reads of at most `max_read` bytes, an optional delay per
/// read, `Interrupted` every `interrupt_every` reads, and a failure or panic at a position.
#[derive(Clone)]
pub struct Scripted {
    pub data: Vec<u8>,
    pub pos: usize,
    pub max_read: usize,
    pub delay: Duration,
    pub interrupt_every: Option<usize>,
    pub fail_at: Option<(usize, io::ErrorKind)>,
    pub panic_at: Option<usize>,
    reads: usize,
}

impl Scripted {
    pub fn new(data: Vec<u8>, max_read: usize) -> Self {
        Scripted {
            data,
            pos: 0,
            max_read: max_read.max(1),
            delay: Duration::ZERO,
            interrupt_every: None,
            fail_at: None,
            panic_at: None,
            reads: 0,
        }
    }
    pub fn delay(mut self, d: Duration) -> Self {
        self.delay = d;
        self
    }
    pub fn interrupt_every(mut self, n: usize) -> Self {
        self.interrupt_every = Some(n);
        self
    }
    pub fn fail_at(mut self, pos: usize, kind: io::ErrorKind) -> Self {
        self.fail_at = Some((pos, kind));
        self
    }
    pub fn panic_at(mut self, pos: usize) -> Self {
        self.panic_at = Some(pos);
        self
    }
}

impl Read for Scripted {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.reads += 1;
        if !self.delay.is_zero() {
            thread::sleep(self.delay);
        }
        if let Some(n) = self.interrupt_every {
            if self.reads % n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::Interrupted,
                    "scripted interrupt",
                ));
            }
        }
        if let Some((at, kind)) = self.fail_at {
            if self.pos >= at {
                return Err(io::Error::new(kind, format!("scripted failure at {at}")));
            }
        }
        if let Some(at) = self.panic_at {
            if self.pos >= at {
                panic!("scripted panic at {at}");
            }
        }
        // Stop short of a scripted failure, so it happens exactly at its position.
        let stops = [self.fail_at.map(|(at, _)| at), self.panic_at];
        let limit = stops
            .into_iter()
            .flatten()
            .fold(self.data.len(), usize::min);
        let end = (self.pos + self.max_read.min(buf.len())).min(limit);
        let n = end - self.pos;
        buf[..n].copy_from_slice(&self.data[self.pos..end]);
        self.pos = end;
        Ok(n)
    }
}

/// Runs `f` on another thread and fails the test if it takes longer than `limit` (a hang).
pub fn within<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    let handle = thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(limit) {
        Ok(v) => {
            handle.join().unwrap();
            v
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => match handle.join() {
            Err(panic) => std::panic::resume_unwind(panic),
            Ok(()) => unreachable!("sender dropped without sending"),
        },
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("hang: no result after {limit:?}"),
    }
}

/// The model's answer to `read_at(offset, len)`.
pub fn expected(model: &[u8], offset: u64, len: usize) -> &[u8] {
    let start = (offset.min(model.len() as u64)) as usize;
    let end = (start as u64 + len as u64).min(model.len() as u64) as usize;
    &model[start..end]
}
