//! The thundering herd (feature `http`), a harness that prints a table: `HERD_CLIENTS` clients
//! (default 128) download a cold object of `HERD_MIB` MiB (default 256) at once through a
//! caching proxy, while 16 clients read 1 MiB ranges at random far offsets of it and 16 more
//! download a second object; the origin (on loopback) waits 20 ms before each response. Side
//! by side, the same run through sparsebuf's proxy (`Server::proxy` over a `Cache`, 256 MiB of
//! RAM, spilling past it) and through nginx (`proxy_cache` + `slice 1m` + `proxy_cache_lock`).
//! Reported: the origin's body bytes per object (against the object's size), the far ranges'
//! time to first byte (median, p99), every client's bytes checked against the object, and the
//! proxy's peak anonymous RSS growth.
//!
//! ```sh
//! ulimit -n 20000   # nginx holds a descriptor per cached slice per client (16,000+ here)
//! cargo bench -p sparsebuf-benches --features http --bench herd
//! HERD_MIB=32 HERD_CLIENTS=32 cargo bench -p sparsebuf-benches --features http --bench herd
//! HERD_NGINX=0 cargo bench -p sparsebuf-benches --features http --bench herd   # sparsebuf only
//! HERD_SLICE=4m cargo bench -p sparsebuf-benches --features http --bench herd  # nginx's slice
//! HERD_TRACE=1 cargo bench ...  # on stderr: far readers' connect and first-byte times, every
//!                               # incomplete client, the origin's requests, nginx's error log
//! ```

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

#[path = "../tests/common/origin.rs"]
#[allow(dead_code)]
mod origin;
mod support;

use origin::{Behaviour, Origin};
use sparsebuf::{Cache, Server};

const FAR: usize = 16;
const SECOND: usize = 16;
const FAR_LEN: u64 = 1 << 20;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// What one client saw.
struct Outcome {
    ttfb: Duration,
    bytes: u64,
    complete: bool,
    wrong: bool,
}

/// `GET path` (with a range) on `addr`, every body byte compared with `model`.
fn get(addr: SocketAddr, path: &str, range: Option<(u64, u64)>, model: &[u8]) -> Outcome {
    let started = Instant::now();
    let mut outcome = Outcome {
        ttfb: Duration::MAX,
        bytes: 0,
        complete: false,
        wrong: false,
    };
    let Ok(mut stream) = TcpStream::connect(addr) else {
        return outcome;
    };
    let connected = started.elapsed();
    let range_header = range.map_or(String::new(), |(a, b)| format!("Range: bytes={a}-{b}\r\n"));
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: herd\r\n{range_header}Connection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return outcome;
    }
    let mut buf = vec![0u8; 256 * 1024];
    let mut head = Vec::new();
    let (mut status, mut length) = (0u16, None::<u64>);
    let mut at = range.map_or(0, |(a, _)| a);
    loop {
        let n = match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let body = &buf[..n];
        if length.is_none() {
            head.extend_from_slice(body);
            let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") else {
                continue;
            };
            let text = String::from_utf8_lossy(&head[..end]).to_ascii_lowercase();
            status = text
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            length = text
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok());
            let rest = head[end + 4..].to_vec();
            head.clear();
            if rest.is_empty() {
                continue;
            }
            outcome.ttfb = started.elapsed();
            if range.is_some() && std::env::var_os("HERD_TRACE").is_some() {
                eprintln!(
                    "far {range:?}: connect {connected:?} head+body {:?}",
                    outcome.ttfb
                );
            }
            if check(&rest, at, model) {
                outcome.wrong = true;
            }
            at += rest.len() as u64;
            outcome.bytes += rest.len() as u64;
            continue;
        }
        if outcome.ttfb == Duration::MAX {
            outcome.ttfb = started.elapsed();
            if range.is_some() && std::env::var_os("HERD_TRACE").is_some() {
                eprintln!(
                    "far {range:?}: connect {connected:?} body {:?}",
                    outcome.ttfb
                );
            }
        }
        if check(body, at, model) {
            outcome.wrong = true;
        }
        at += body.len() as u64;
        outcome.bytes += body.len() as u64;
    }
    let expected = match range {
        Some((a, b)) => b + 1 - a,
        None => model.len() as u64,
    };
    outcome.complete =
        matches!(status, 200 | 206) && length == Some(expected) && outcome.bytes == expected;
    if !outcome.complete && std::env::var_os("HERD_TRACE").is_some() {
        eprintln!(
            "incomplete {path} {range:?}: status {status} length {length:?} bytes {} after {:?}",
            outcome.bytes,
            started.elapsed()
        );
    }
    outcome
}

/// Whether `bytes` at `at` differ from the model.
fn check(bytes: &[u8], at: u64, model: &[u8]) -> bool {
    let at = at as usize;
    model.get(at..at + bytes.len()) != Some(bytes)
}

fn rss_anon_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Samples `pid`'s anonymous RSS every 20 ms until stopped; the peak.
fn sample_peak(pid: u32, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let mut peak = 0;
        while !stop.load(Ordering::Relaxed) {
            peak = peak.max(rss_anon_kib(pid));
            std::thread::sleep(Duration::from_millis(20));
        }
        peak
    })
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

/// One run of the herd through the proxy at `addr`; prints its row.
fn herd(name: &str, addr: SocketAddr, model: &Arc<Vec<u8>>, origin: &Origin, pid: u32) {
    let clients = env("HERD_CLIENTS", 128);
    let len = model.len() as u64;
    let before = rss_anon_kib(pid);
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = sample_peak(pid, stop.clone());
    let total = clients + FAR + SECOND;
    let barrier = Arc::new(Barrier::new(total));
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let mut jobs = Vec::new();
    for i in 0..total {
        let (model, barrier) = (model.clone(), barrier.clone());
        let (path, range, far) = if i < clients {
            ("/a.bin", None, false)
        } else if i < clients + FAR {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            // Far: in the second half of the object.
            let a = len / 2 + (x >> 11) % (len / 2 - FAR_LEN);
            ("/a.bin", Some((a, a + FAR_LEN - 1)), true)
        } else {
            ("/b.bin", None, false)
        };
        jobs.push(std::thread::spawn(move || {
            barrier.wait();
            (far, get(addr, path, range, &model))
        }));
    }
    let started = Instant::now();
    let (mut far_ttfb, mut complete, mut wrong, mut bytes) = (Vec::new(), 0, 0, 0u64);
    for job in jobs {
        let (far, outcome) = job.join().unwrap();
        if far {
            far_ttfb.push(outcome.ttfb);
        }
        complete += usize::from(outcome.complete);
        wrong += usize::from(outcome.wrong);
        bytes += outcome.bytes;
    }
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let peak = sampler.join().unwrap();
    far_ttfb.sort();
    let upstream = |path: &str| -> u64 {
        origin
            .log()
            .iter()
            .filter(|s| s.path == path)
            .map(|s| s.sent)
            .sum()
    };
    let (a, b) = (upstream("/a.bin"), upstream("/b.bin"));
    if std::env::var_os("HERD_TRACE").is_some() {
        let mut log = origin.log();
        log.sort_by_key(|s| (s.path.clone(), s.start));
        for s in log {
            eprintln!(
                "origin {} {:?} start {} len {} sent {} cut {} closed {}",
                s.path,
                s.range,
                s.start >> 20,
                s.len >> 20,
                s.sent >> 20,
                s.cut,
                s.closed
            );
        }
    }
    println!(
        "| {name} | {:.3}x | {:.3}x | {:.0} ms | {:.0} ms | {complete}/{total} | {wrong} | {:.1} s | {:.2} GB/s | {} MiB |",
        a as f64 / len as f64,
        b as f64 / len as f64,
        percentile(&far_ttfb, 0.5).as_secs_f64() * 1000.0,
        percentile(&far_ttfb, 0.99).as_secs_f64() * 1000.0,
        elapsed.as_secs_f64(),
        bytes as f64 / elapsed.as_secs_f64() / 1e9,
        peak.saturating_sub(before) / 1024,
    );
}

/// nginx as a caching proxy of `origin_port`: `proxy_cache` with 1 MiB slices and the lock.
fn nginx(origin_port: u16, dir: &std::path::Path) -> (Child, u16) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let d = dir.display();
    let slice = std::env::var("HERD_SLICE").unwrap_or_else(|_| "1m".into());
    let conf = format!(
        "daemon off;\nmaster_process off;\nworker_processes 1;\npid {d}/nginx.pid;\n\
         error_log {d}/error.log;\nworker_rlimit_nofile 8192;\nevents {{ worker_connections 4096; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n\
         proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fastcgi;\n\
         uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
         proxy_cache_path {d}/cache levels=1:2 keys_zone=herd:16m max_size=8g inactive=1h use_temp_path=off;\n\
         server {{\n    listen 127.0.0.1:{port};\n    location / {{\n\
         slice {slice};\n      proxy_cache herd;\n      proxy_cache_key $uri$is_args$args$slice_range;\n\
         proxy_set_header Range $slice_range;\n      proxy_cache_valid 200 206 1h;\n\
         proxy_cache_lock on;\n      proxy_cache_lock_timeout 120s;\n      proxy_cache_lock_age 120s;\n\
         proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n\
         proxy_pass http://127.0.0.1:{origin_port};\n    }}\n  }}\n}}\n"
    );
    let path = dir.join("nginx.conf");
    std::fs::write(&path, conf).unwrap();
    let binary = if std::path::Path::new("/usr/sbin/nginx").exists() {
        "/usr/sbin/nginx"
    } else {
        "nginx"
    };
    let child = Command::new(binary)
        .arg("-c")
        .arg(&path)
        .arg("-p")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nginx (apt-get install -y nginx)");
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "nginx did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    (child, port)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // cargo bench --no-run / criterion's list probe
    }
    let mib = env("HERD_MIB", 256);
    let model = Arc::new(support::source(mib << 20));
    println!(
        "herd: {} clients on a cold {mib} MiB object + {FAR} far 1 MiB ranges + {SECOND} on a second object; origin latency 20 ms",
        env("HERD_CLIENTS", 128)
    );
    println!(
        "| proxy | upstream / object A | upstream / object B | far ranges TTFB median | p99 | complete | wrong | time | throughput | RSS growth |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let behaviour = Behaviour {
        latency: Duration::from_millis(20),
        ..Behaviour::default()
    };

    // sparsebuf, in this process (its RSS growth is the proxy's: the model was made before).
    let origin = Origin::start(model.clone(), behaviour.clone());
    let base = origin.url.trim_end_matches("/object.bin").to_string();
    let spill = tempfile::tempdir().unwrap();
    let cache = Cache::builder()
        .memory_budget(256 << 20)
        .spill_dir(spill.path())
        .build()
        .unwrap();
    let running = Server::proxy(cache, &base)
        .unwrap()
        .start("127.0.0.1:0")
        .unwrap();
    herd(
        "sparsebuf proxy (256 MiB RAM)",
        running.local_addr(),
        &model,
        &origin,
        std::process::id(),
    );
    drop(running);
    if env("HERD_NGINX", 1) == 0 {
        return;
    }

    // nginx, before a fresh origin.
    let origin = Origin::start(model.clone(), behaviour);
    let port: u16 = origin
        .url
        .trim_start_matches("http://127.0.0.1:")
        .split('/')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (mut child, nginx_port) = nginx(port, dir.path());
    let addr: SocketAddr = format!("127.0.0.1:{nginx_port}").parse().unwrap();
    herd(
        &format!(
            "nginx proxy_cache + slice {} + lock",
            std::env::var("HERD_SLICE").unwrap_or_else(|_| "1m".into())
        ),
        addr,
        &model,
        &origin,
        child.id(),
    );
    let _ = child.kill();
    let _ = child.wait();
    if std::env::var_os("HERD_TRACE").is_some() {
        let log = std::fs::read_to_string(dir.path().join("error.log")).unwrap_or_default();
        for line in log.lines().take(20) {
            eprintln!("nginx: {line}");
        }
    }
}
