//! A load test of the Range server on loopback: 200 concurrent clients read random ranges of a
//! 256 MiB forward-only stream while it is being pulled; every byte is checked against the
//! generator, the buffer's RAM stays within its budget, and the run is bounded in requests and
//! time.
#![cfg(feature = "server")]

mod common;

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{check_generated, within, Generated, Rng};
use sparsebuf::{Server, StreamBuffer};

const LEN: u64 = 256 << 20;
const CLIENTS: u64 = 200;
const REQUESTS_PER_CLIENT: u64 = 6;
const MAX_RANGE: u64 = 512 * 1024;
const MEMORY_BUDGET: usize = 16 << 20;
const SEED: u64 = 42;

/// One keep-alive connection speaking just enough HTTP/1.1 for `GET` with `Range`.
struct Client {
    reader: BufReader<TcpStream>,
}

impl Client {
    fn connect(addr: SocketAddr) -> io::Result<Client> {
        let stream = TcpStream::connect(addr)?;
        stream.set_read_timeout(Some(Duration::from_secs(120)))?;
        Ok(Client {
            reader: BufReader::new(stream),
        })
    }

    /// `GET /` of `[start, end)`: the status, the `Content-Range`, and the body.
    fn get(&mut self, start: u64, end: u64) -> io::Result<(u16, String, Vec<u8>)> {
        let request = format!(
            "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nRange: bytes={start}-{}\r\n\r\n",
            end - 1
        );
        self.reader.get_mut().write_all(request.as_bytes())?;
        let mut line = String::new();
        self.reader.read_line(&mut line)?;
        let status = line.split_whitespace().nth(1).and_then(|s| s.parse().ok());
        let status = status.ok_or_else(|| io::Error::other(format!("status line {line:?}")))?;
        let (mut length, mut range) = (0usize, String::new());
        loop {
            let mut header = String::new();
            self.reader.read_line(&mut header)?;
            let header = header.trim();
            if header.is_empty() {
                break;
            }
            let (name, value) = header.split_once(':').unwrap_or((header, ""));
            match name.to_ascii_lowercase().as_str() {
                "content-length" => length = value.trim().parse().unwrap_or(0),
                "content-range" => range = value.trim().to_string(),
                _ => {}
            }
        }
        let mut body = vec![0u8; length];
        self.reader.read_exact(&mut body)?;
        Ok((status, range, body))
    }
}

#[test]
fn two_hundred_clients_read_random_ranges_of_a_256_mib_stream() {
    within(Duration::from_secs(600), || {
        let dir = tempfile::tempdir().unwrap();
        let source = Generated {
            seed: SEED,
            pos: 0,
            len: LEN,
            max_read: 256 * 1024,
        };
        let buffer = StreamBuffer::builder()
            .len(LEN)
            .memory_budget(MEMORY_BUDGET)
            .spill_dir(dir.path())
            .build(source)
            .unwrap();
        let running = Server::new(buffer.clone()).start("127.0.0.1:0").unwrap();
        let addr = running.local_addr();
        let bytes = Arc::new(AtomicU64::new(0));
        let started = Instant::now();
        let clients: Vec<_> = (0..CLIENTS)
            .map(|id| {
                let bytes = bytes.clone();
                std::thread::Builder::new()
                    .stack_size(256 * 1024)
                    .spawn(move || {
                        let mut rng = Rng(id + 1);
                        let mut client = Client::connect(addr).unwrap();
                        let mut slowest = Duration::ZERO;
                        for _ in 0..REQUESTS_PER_CLIENT {
                            let start = rng.below(LEN);
                            let end = (start + 1 + rng.below(MAX_RANGE)).min(LEN);
                            let asked = Instant::now();
                            let (status, range, body) = client.get(start, end).unwrap();
                            slowest = slowest.max(asked.elapsed());
                            assert_eq!(status, 206);
                            assert_eq!(range, format!("bytes {start}-{}/{LEN}", end - 1));
                            assert_eq!(body.len() as u64, end - start);
                            check_generated(SEED, start, &body);
                            bytes.fetch_add(body.len() as u64, Ordering::Relaxed);
                        }
                        slowest
                    })
                    .unwrap()
            })
            .collect();
        let slowest = clients
            .into_iter()
            .map(|c| c.join().unwrap())
            .max()
            .unwrap();
        let elapsed = started.elapsed();
        let served = running.server().served();
        let stats = buffer.stats();
        eprintln!(
            "{CLIENTS} clients x {REQUESTS_PER_CLIENT} requests: {:.1} MiB checked in {elapsed:.2?} \
             (slowest request {slowest:.2?}); served {served:?}; pulled {:.1} MiB; \
             peak RAM {:.1} MiB of a {:.0} MiB budget; spilled {:.1} MiB",
            bytes.load(Ordering::Relaxed) as f64 / (1 << 20) as f64,
            stats.source_bytes as f64 / (1 << 20) as f64,
            stats.peak_memory_bytes as f64 / (1 << 20) as f64,
            MEMORY_BUDGET as f64 / (1 << 20) as f64,
            stats.spilled_bytes as f64 / (1 << 20) as f64,
        );
        assert_eq!(served.requests, CLIENTS * REQUESTS_PER_CLIENT);
        assert_eq!(served.connections, CLIENTS);
        // The documented bound: the budget, plus the segment being filled and those being
        // spilled (see tests/limits.rs).
        let ceiling = MEMORY_BUDGET as u64 + 4 * stats.segment_size;
        assert!(
            stats.peak_memory_bytes <= ceiling,
            "peak RAM {} over the budget and its 4 segments",
            stats.peak_memory_bytes
        );
        running.stop().unwrap();
    });
}
