//! Serving (feature `http`), a harness that prints a table:
//!
//! - **HTTP**: 32 concurrent keep-alive clients ask for random 64 KiB ranges of 64 MiB of filled
//!   data, from `sparsebuf::Server` over a `StreamBuffer` (all in RAM, and all spilled to the
//!   disk tier), and from the baseline: the same hyper server setup reading a plain file (warm
//!   in the page cache) with `pread` into one body per request. Throughput, and time to first
//!   byte (the status line) p50/p99.
//! - **async `read_at`**: `read_at_async` of filled data on a current-thread runtime against the
//!   sync `read_at`, 64 KiB and 4 KiB at random offsets, side by side.
//!
//! ```sh
//! cargo bench -p sparsebuf-benches --features http --bench serve            # ~1 minute
//! cargo bench -p sparsebuf-benches --features http --bench serve -- --quick # a short run
//! ```

use std::convert::Infallible;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use sparsebuf::{Server, StreamBuffer};

const LEN: u64 = 64 << 20;
const RANGE: u64 = 64 * 1024;
const CLIENTS: usize = 32;

/// One xorshift64 step: the pseudo-random bytes and offsets of this bench.
fn next(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

fn data() -> Vec<u8> {
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    (0..LEN).map(|_| next(&mut x) as u8).collect()
}

/// One keep-alive client's loop: `requests` random ranges; time to first byte of each.
fn client(addr: SocketAddr, seed: u64, requests: usize, model: &[u8]) -> Vec<Duration> {
    let stream = TcpStream::connect(addr).unwrap();
    stream.set_nodelay(true).unwrap();
    let mut reader = BufReader::with_capacity(256 * 1024, stream);
    let mut x = seed.wrapping_mul(0x2545_F491_4F6C_DD1D) | 1;
    let mut ttfb = Vec::with_capacity(requests);
    let mut body = vec![0u8; RANGE as usize];
    for _ in 0..requests {
        let start = next(&mut x) % (LEN - RANGE);
        let request = format!(
            "GET / HTTP/1.1\r\nHost: b\r\nRange: bytes={start}-{}\r\n\r\n",
            start + RANGE - 1
        );
        let asked = Instant::now();
        reader.get_mut().write_all(request.as_bytes()).unwrap();
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        ttfb.push(asked.elapsed());
        assert!(line.starts_with("HTTP/1.1 206"), "{line}");
        loop {
            line.clear();
            reader.read_line(&mut line).unwrap();
            if line == "\r\n" {
                break;
            }
        }
        reader.read_exact(&mut body).unwrap();
        // A spot check: a wrong server must not look fast.
        assert_eq!(body[..16], model[start as usize..start as usize + 16]);
    }
    ttfb
}

struct Run {
    mib_per_s: f64,
    p50: Duration,
    p99: Duration,
}

fn load(addr: SocketAddr, requests: usize, model: &Arc<Vec<u8>>) -> Run {
    let started = Instant::now();
    let threads: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let model = model.clone();
            std::thread::spawn(move || client(addr, i as u64 + 1, requests, &model))
        })
        .collect();
    let mut histogram = Histogram::<u64>::new(3).unwrap();
    for t in threads {
        for d in t.join().unwrap() {
            histogram.record(d.as_micros() as u64).unwrap();
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let bytes = (CLIENTS * requests) as f64 * RANGE as f64;
    Run {
        mib_per_s: bytes / elapsed / (1 << 20) as f64,
        p50: Duration::from_micros(histogram.value_at_quantile(0.5)),
        p99: Duration::from_micros(histogram.value_at_quantile(0.99)),
    }
}

/// The baseline: hyper with the same setup as `Server`, answering `Range: bytes=a-b` from a
/// plain file with one `pread` into the body.
fn plain_file_server(file: std::fs::File) -> (SocketAddr, tokio::runtime::Runtime) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let file = Arc::new(file);
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    runtime.spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let _ = stream.set_nodelay(true);
            let file = file.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request: Request<_>| {
                    let file = file.clone();
                    async move { Ok::<_, Infallible>(answer(&file, &request)) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, runtime)
}

fn answer<B>(file: &std::fs::File, request: &Request<B>) -> Response<Full<Bytes>> {
    let range = request
        .headers()
        .get("range")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("bytes="))
        .and_then(|v| v.split_once('-'))
        .and_then(|(a, b)| Some((a.parse::<u64>().ok()?, b.parse::<u64>().ok()?)));
    let Some((start, last)) = range else {
        return Response::new(Full::new(Bytes::new()));
    };
    let mut body = vec![0u8; (last + 1 - start) as usize];
    file.read_exact_at(&mut body, start).unwrap();
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = StatusCode::PARTIAL_CONTENT;
    let content_range = format!("bytes {start}-{last}/{LEN}");
    response
        .headers_mut()
        .insert("content-range", content_range.parse().unwrap());
    response
}

fn filled(model: &[u8], memory_budget: usize, dir: &std::path::Path) -> StreamBuffer {
    let buffer = StreamBuffer::builder()
        .memory_budget(memory_budget)
        .spill_dir(dir)
        .build(std::io::Cursor::new(model.to_vec()))
        .unwrap();
    assert_eq!(buffer.fill_to_end().unwrap(), LEN);
    buffer
}

/// `reads` random offsets for reads of `size` bytes (the same for the sync and async loops).
fn offsets(reads: usize, size: usize) -> Vec<u64> {
    let mut x = 0x1234_5678_9ABC_DEF1u64;
    (0..reads)
        .map(|_| next(&mut x) % (LEN - size as u64))
        .collect()
}

/// GiB/s of reads of `size` bytes that took `elapsed`.
fn rate(reads: usize, size: usize, elapsed: Duration) -> f64 {
    (reads * size) as f64 / elapsed.as_secs_f64() / (1u64 << 30) as f64
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (requests, rounds) = if quick { (40, 1) } else { (200, 3) };
    let model = Arc::new(data());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plain.bin");
    std::fs::write(&path, &*model).unwrap();
    let file = std::fs::File::open(&path).unwrap();
    let (plain_addr, _plain_runtime) = plain_file_server(file);

    let in_ram = filled(&model, LEN as usize + (1 << 20), dir.path());
    let spilled = filled(&model, 0, dir.path());
    let ram_server = Server::new(in_ram.clone()).start("127.0.0.1:0").unwrap();
    let disk_server = Server::new(spilled.clone()).start("127.0.0.1:0").unwrap();

    println!(
        "{CLIENTS} clients, random {} KiB ranges of {} MiB filled data, {requests} requests each; \
         best of {rounds} rounds\n",
        RANGE / 1024,
        LEN >> 20
    );
    println!("| server | MiB/s | ratio | TTFB p50 | TTFB p99 |");
    println!("|---|---:|---:|---:|---:|");
    let best = |addr| {
        (0..rounds)
            .map(|_| load(addr, requests, &model))
            .max_by(|a, b| a.mib_per_s.total_cmp(&b.mib_per_s))
            .unwrap()
    };
    // Interleaved, so that load on the machine hits all alike.
    let plain = best(plain_addr);
    let ram = best(ram_server.local_addr());
    let disk = best(disk_server.local_addr());
    for (name, run) in [
        ("plain file, pread per request (baseline)", &plain),
        ("sparsebuf Server, RAM tier", &ram),
        ("sparsebuf Server, disk tier", &disk),
    ] {
        println!(
            "| {name} | {:.0} | {:.2} | {:.0?} | {:.0?} |",
            run.mib_per_s,
            run.mib_per_s / plain.mib_per_s,
            run.p50,
            run.p99
        );
    }

    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    println!("\nasync read_at_async against sync read_at, filled data in RAM, random offsets\n");
    println!("| read | sync GiB/s | async GiB/s | ratio |");
    println!("|---|---:|---:|---:|");
    for (size, reads) in [(64 * 1024, 20_000), (4096, 400_000)] {
        let reads = if quick { reads / 10 } else { reads };
        let (mut sync, mut asynch) = (0f64, 0f64);
        let at = offsets(reads, size);
        let mut buf = vec![0u8; size];
        for _ in 0..rounds.max(2) {
            let started = Instant::now();
            for &offset in &at {
                in_ram.read_at(offset, &mut buf).unwrap();
            }
            sync = sync.max(rate(reads, size, started.elapsed()));
            let elapsed = runtime.block_on(async {
                let started = Instant::now();
                for &offset in &at {
                    in_ram.read_at_async(offset, &mut buf).await.unwrap();
                }
                started.elapsed()
            });
            asynch = asynch.max(rate(reads, size, elapsed));
        }
        println!(
            "| {} KiB | {sync:.2} | {asynch:.2} | {:.2} |",
            size / 1024,
            asynch / sync
        );
    }
    ram_server.stop().unwrap();
    disk_server.stop().unwrap();
}
