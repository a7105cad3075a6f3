//! Fetching over a network (feature `http`; the object storage part with `object-store`), a
//! harness that prints Markdown tables. The upstream is on loopback but behaves like a fast WAN
//! link: 20 ms before each response and 100 MB/s per response (the origin of the tests,
//! `tests/common/origin.rs`; for moto_server, the `netem.rs` proxy), so the figures are about
//! round trips and request sizes, not loopback copies. Each figure is the median of
//! `SPARSEBUF_BENCH_ROUNDS` (default 3) rounds, against a baseline measured in the same round.
//!
//! - **sequential**: one `Reader` reads a URL object front to back (256 KiB reads), against one
//!   plain `GET` of the object on a socket; time, throughput, requests after the first MiB;
//!   with the default 4 responses in flight and with 1.
//! - **serve**: `Server` over `build_url` (what `sparsebuf serve URL` runs), one `curl`
//!   downloading the whole; against `curl` from the origin itself.
//! - **scattered**: 1000 random 4 KiB reads of a fresh buffer: requests and segments per read,
//!   median latency of a read.
//! - **object** (`object-store`): an `ObjectSource` read front to back from moto_server behind
//!   the same latency and rate, against one `GET` of the object through object_store.
//!
//! ```sh
//! cargo bench -p sparsebuf-benches --features http --bench network
//! cargo bench -p sparsebuf-benches --all-features --bench network -- object   # one part
//! ```
//! `SPARSEBUF_BENCH_MIB` sets the object size (default 256).

#[cfg(feature = "object-store")]
#[path = "../tests/common/moto.rs"]
#[allow(dead_code)]
mod moto;
#[allow(dead_code)]
mod netem;
#[path = "../tests/common/origin.rs"]
#[allow(dead_code)]
mod origin;
mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use origin::{Behaviour, Origin, Served};
use sparsebuf::StreamBuffer;

const LATENCY: Duration = Duration::from_millis(20);
const RATE: u64 = 100_000_000;
const MIB: u64 = 1 << 20;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn model(len: usize) -> Arc<Vec<u8>> {
    Arc::new(support::source(len))
}

/// Reads `buffer` front to back in 256 KiB reads, every byte checked against `model`.
fn read_checked(buffer: &StreamBuffer, model: &[u8]) {
    let mut reader = buffer.reader();
    let mut buf = vec![0u8; 256 * 1024];
    let mut at = 0;
    loop {
        let n = reader.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        assert!(buf[..n] == model[at..at + n], "wrong bytes at {at}");
        at += n;
    }
    assert_eq!(at, model.len());
}

fn wan() -> Behaviour {
    Behaviour {
        latency: LATENCY,
        rate: Some(RATE),
        ..Behaviour::default()
    }
}

fn median(values: &[f64]) -> f64 {
    let mut values = values.to_vec();
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// One plain `GET` of the whole object on a socket: seconds to the last byte.
fn plain_get(url: &str, len: u64) -> f64 {
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_once('/').unwrap();
    let start = Instant::now();
    let stream = TcpStream::connect(host).unwrap();
    let mut reader = BufReader::with_capacity(256 * 1024, stream.try_clone().unwrap());
    (&stream)
        .write_all(format!("GET /{path} HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes())
        .unwrap();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        if line.trim().is_empty() {
            break;
        }
    }
    // The origin keeps connections alive: the body ends after its length, not at a close.
    let mut got = 0u64;
    let mut buf = vec![0u8; 256 * 1024];
    while got < len {
        let want = buf.len().min((len - got) as usize);
        let n = reader.read(&mut buf[..want]).unwrap();
        assert!(n > 0, "the origin closed after {got} bytes");
        got += n as u64;
    }
    start.elapsed().as_secs_f64()
}

/// Requests after the first MiB (the probe, `bytes=0-0`, is not one).
fn requests_after_first_mib(log: &[Served]) -> usize {
    log.iter()
        .filter(|s| s.range.is_some_and(|(a, b)| a >= MIB && b != Some(0)))
        .count()
}

/// A `Reader` over `build_url`, front to back, every byte checked: seconds (the probe
/// included) and requests after the first MiB.
fn sparsebuf_sequential(model: &Arc<Vec<u8>>, in_flight: usize) -> (f64, usize) {
    let origin = Origin::start(model.clone(), wan());
    let start = Instant::now();
    let buffer = StreamBuffer::builder()
        .requests_in_flight(in_flight)
        .build_url(&origin.url)
        .unwrap();
    read_checked(&buffer, model);
    let seconds = start.elapsed().as_secs_f64();
    (seconds, requests_after_first_mib(&origin.log()))
}

/// `in_flight` is `Builder::requests_in_flight`: with 1, one response at a time, which is what
/// one plain GET gets too (the cap is per response, so several in flight can pass it).
fn sequential(model: &Arc<Vec<u8>>, rounds: u64, in_flight: usize) {
    let len = model.len() as u64;
    let (mut plain, mut ours, mut requests) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        let origin = Origin::start(model.clone(), wan());
        plain.push(plain_get(&origin.url, len));
        let (seconds, n) = sparsebuf_sequential(model, in_flight);
        ours.push(seconds);
        requests.push(n as f64);
    }
    let (p, o) = (median(&plain), median(&ours));
    let mb = len as f64 / 1e6;
    println!("| sequential {} MiB, {in_flight} in flight | one GET {:.2} s ({:.0} MB/s) | sparsebuf {:.2} s ({:.0} MB/s) | **{:.2}×** | {} requests after the first MiB (1 per {:.1} MiB) |",
        len >> 20, p, mb / p, o, mb / o, p / o, median(&requests), (len - MIB) as f64 / MIB as f64 / median(&requests).max(1.0));
}

/// `curl` downloading `url` to nowhere: seconds.
fn curl(url: &str, len: u64) -> f64 {
    let out = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{size_download} %{time_total}",
            url,
        ])
        .output()
        .expect("curl must be installed");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut parts = text.split_whitespace();
    let size: u64 = parts.next().and_then(|v| v.parse().ok()).unwrap_or(0);
    assert_eq!(size, len, "curl got {size} bytes: {text}");
    parts.next().and_then(|v| v.parse().ok()).unwrap()
}

fn serve(model: &Arc<Vec<u8>>, rounds: u64) {
    let len = model.len() as u64;
    let (mut plain, mut ours, mut requests) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        let origin = Origin::start(model.clone(), wan());
        plain.push(curl(&origin.url, len));
        let origin = Origin::start(model.clone(), wan());
        let buffer = StreamBuffer::builder().build_url(&origin.url).unwrap();
        let running = sparsebuf::Server::new(buffer).start("127.0.0.1:0").unwrap();
        ours.push(curl(&format!("http://{}/", running.local_addr()), len));
        requests.push(requests_after_first_mib(&origin.log()) as f64);
        running.stop().unwrap();
    }
    let (p, o) = (median(&plain), median(&ours));
    let mb = len as f64 / 1e6;
    println!("| serve URL + curl {} MiB | curl from the origin {:.2} s ({:.0} MB/s) | curl through sparsebuf {:.2} s ({:.0} MB/s) | **{:.2}×** | {} requests after the first MiB (1 per {:.1} MiB) |",
        len >> 20, p, mb / p, o, mb / o, p / o, median(&requests), (len - MIB) as f64 / MIB as f64 / median(&requests).max(1.0));
}

fn scattered(model: &Arc<Vec<u8>>) {
    const READS: usize = 1000;
    let len = model.len() as u64;
    let origin = Origin::start(model.clone(), wan());
    let buffer = StreamBuffer::builder()
        .memory_budget(64 << 20)
        .build_url(&origin.url)
        .unwrap();
    let segment = buffer.stats().segment_size;
    let before = origin.requests();
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    let mut times = Vec::with_capacity(READS);
    for _ in 0..READS {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let at = x % (len - 4096);
        let start = Instant::now();
        let got = buffer.read_range(at..at + 4096).unwrap();
        times.push(start.elapsed().as_secs_f64() * 1e3);
        assert!(got[..] == model[at as usize..at as usize + 4096]);
    }
    let requests = origin.requests() - before;
    let segments = buffer.stats().source_bytes as f64 / segment as f64;
    let max_len = origin.log()[before..]
        .iter()
        .map(|s| s.len)
        .max()
        .unwrap_or(0);
    println!("| scattered: {READS} random 4 KiB reads of {} MiB | {:.3} requests per read | {:.3} segments per read (largest response {} KiB) | read p50 {:.1} ms |",
        len >> 20, requests as f64 / READS as f64, segments / READS as f64, max_len >> 10, median(&times));
}

#[cfg(feature = "object-store")]
fn object(model: &Arc<Vec<u8>>, rounds: u64) {
    use sparsebuf::object_store::path::Path;
    use sparsebuf::object_store::{ObjectStore, ObjectStoreExt};
    use sparsebuf::ObjectSource;

    let len = model.len() as u64;
    let moto = moto::Moto::start();
    moto.create_bucket("bench");
    let direct = moto.store("bench");
    let path = Path::from("object.bin");
    let mut up = sparsebuf::upload(direct, path.clone()).unwrap();
    up.write_all(model).unwrap();
    assert_eq!(up.finish().unwrap(), len);
    let upstream: std::net::SocketAddr = moto
        .endpoint
        .strip_prefix("http://")
        .unwrap()
        .parse()
        .unwrap();
    let netem = netem::Netem::start(upstream, LATENCY, RATE);
    let slow = moto::Moto::store_at(&format!("http://{}", netem.addr), "bench");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    // moto's own cost of one ranged GET of this object, without the proxy: it reads the whole
    // object for any range, so this grows with the object and is paid once per request.
    let mut first_byte = Vec::new();
    for _ in 0..5 {
        let (store, p) = (moto.store("bench"), path.clone());
        let start = Instant::now();
        let got = rt.block_on(async move { store.get_range(&p, 0..1).await.unwrap() });
        first_byte.push(start.elapsed().as_secs_f64());
        assert_eq!(got[..], model[..1]);
    }
    let first_byte = median(&first_byte);
    let (mut plain, mut ours, mut requests) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        let (store, p) = (slow.clone(), path.clone());
        let start = Instant::now();
        let got = rt.block_on(async move { store.get(&p).await.unwrap().bytes().await.unwrap() });
        plain.push(start.elapsed().as_secs_f64());
        assert!(got[..] == model[..]);
        drop(got);
        let before = netem.requests();
        let start = Instant::now();
        let source = ObjectSource::new(slow.clone(), path.clone()).unwrap();
        let buffer = StreamBuffer::builder().build_ranged(source).unwrap();
        read_checked(&buffer, model);
        ours.push(start.elapsed().as_secs_f64());
        requests.push((netem.requests() - before) as f64);
        let _: &dyn ObjectStore = &*slow;
    }
    let (p, o) = (median(&plain), median(&ours));
    let mb = len as f64 / 1e6;
    println!("| ObjectSource from moto {} MiB | one GET {:.2} s ({:.0} MB/s) | sparsebuf {:.2} s ({:.0} MB/s) | **{:.2}×** | {} requests (the HEAD included); moto takes {:.0} ms per ranged GET of this object before the proxy |",
        len >> 20, p, mb / p, o, mb / o, p / o, median(&requests), first_byte * 1e3);
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    if std::env::args().any(|a| a == "--list") {
        return; // cargo bench --no-run / criterion's list probe
    }
    let wanted = |name: &str| args.is_empty() || args.iter().any(|a| name.contains(a.as_str()));
    let len = env("SPARSEBUF_BENCH_MIB", 256) << 20;
    let rounds = env("SPARSEBUF_BENCH_ROUNDS", 3);
    let model = model(len as usize);
    println!(
        "Upstream: {} ms before each response, {} MB/s per response; median of {rounds} rounds.\n",
        LATENCY.as_millis(),
        RATE / 1_000_000
    );
    println!("| case | baseline | sparsebuf | ratio | requests |\n|---|---|---|---|---|");
    if wanted("sequential") {
        sequential(&model, rounds, 4);
        sequential(&model, rounds, 1);
    }
    if wanted("serve") {
        serve(&model, rounds);
    }
    #[cfg(feature = "object-store")]
    if wanted("object") {
        object(&model, rounds);
    }
    if wanted("scattered") {
        println!();
        scattered(&model);
    }
}
