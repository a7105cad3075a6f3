//! Clients that ask and never read (feature `http`), a harness that prints a table: 1000
//! connections each ask `sparsebuf::Server` for a whole 64 MiB resource (a file read through a
//! range source, 5 MiB memory budget) and read nothing; once the server has queued what it will
//! queue, the anonymous RSS it grew by, and the connections still open. Then one client asks
//! for a 1 KiB range: its time to the whole answer.
//!
//! ```sh
//! ulimit -n 4096      # the harness holds both ends of 1000 connections
//! cargo bench -p sparsebuf-benches --features http --bench stalled
//! ```

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use sparsebuf::{Server, StreamBuffer};

const LEN: usize = 64 << 20;
const CLIENTS: usize = 1000;

fn rss_anon_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // cargo bench --no-run / criterion's list probe
    }
    let mut file = tempfile::tempfile().unwrap();
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let data: Vec<u8> = (0..LEN)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    file.write_all(&data).unwrap();
    let buffer = StreamBuffer::builder()
        .memory_budget(5 << 20)
        .build_ranged(file)
        .unwrap();
    let running = Server::new(buffer).start("127.0.0.1:0").unwrap();
    let addr = running.local_addr();
    let before = rss_anon_kib();
    let mut clients = Vec::with_capacity(CLIENTS);
    for _ in 0..CLIENTS {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: stalled\r\n\r\n")
            .unwrap();
        clients.push(stream);
    }
    // Until the server has sent (queued) all it will: the bytes served stop growing.
    let mut last = u64::MAX;
    let settle = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(500));
        let bytes = running.server().served().bytes;
        if bytes == last || settle.elapsed() > Duration::from_secs(60) {
            break;
        }
        last = bytes;
    }
    let grown = rss_anon_kib().saturating_sub(before);
    let served = running.server().served();
    let started = Instant::now();
    let mut one = TcpStream::connect(addr).unwrap();
    one.write_all(
        b"GET / HTTP/1.1\r\nHost: b\r\nRange: bytes=1000000-1001023\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let mut answer = Vec::new();
    one.read_to_end(&mut answer).unwrap();
    let took = started.elapsed();
    assert!(answer.ends_with(&data[1_000_000..1_001_024]));
    println!("| clients | RssAnon growth | per client | connections open | bytes queued | a 1 KiB range after |");
    println!("|---|---|---|---|---|---|");
    println!(
        "| {CLIENTS} | {:.1} MiB | {:.0} KiB | {} | {:.1} MiB | {:.1} ms |",
        grown as f64 / 1024.0,
        grown as f64 / CLIENTS as f64,
        served.open,
        served.bytes as f64 / (1 << 20) as f64,
        took.as_secs_f64() * 1000.0
    );
    drop(clients);
    running.stop().unwrap();
}
