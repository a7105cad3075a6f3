//! The Range server (feature `http`) against clients that misbehave and sources that fail:
//! clients that ask and never read (the send timeout, the connection limit), requests without
//! `Host`, conditional requests, and a source that fails before or during a response (every
//! request gets a status line, and a cut response carries every byte held before the failure).
#![cfg(feature = "server")]

mod common;

use std::io::{self, Cursor, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant, SystemTime};

use common::curl::curl;
use common::{data, within, Scripted};
use sparsebuf::{Running, Server, StreamBuffer};

fn start(server: Server) -> (Running, String) {
    let running = server.start("127.0.0.1:0").unwrap();
    let url = format!("http://{}/", running.local_addr());
    (running, url)
}

/// A raw request on a new connection; the whole answer (until the server closes, or 5 s of
/// silence).
fn raw(addr: SocketAddr, request: &str) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
        }
        // One response is enough: the head and a short body.
        if answer.windows(4).any(|w| w == b"\r\n\r\n") && answer.len() > 200 {
            break;
        }
    }
    String::from_utf8_lossy(&answer).to_string()
}

/// A client that asks for everything and never reads.
fn hoarder(addr: SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    stream
}

/// Polls `done` every 10 ms until it holds, failing after `limit`.
fn eventually(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "{what}: not after {limit:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Pins the send timeout: a client that takes nothing is dropped with its cursor once its
/// socket has accepted nothing for the timeout (it once kept its task, cursor and ~0.4 MiB of
/// frames for as long as it liked).
#[test]
fn a_client_that_stops_reading_is_dropped_after_the_send_timeout() {
    let model = data(32 << 20, 1);
    let buffer = StreamBuffer::builder()
        .memory_budget(64 << 20)
        .build(Cursor::new(model.clone()))
        .unwrap();
    buffer.fill_to_end().unwrap();
    let server = Server::new(buffer).send_timeout(Duration::from_secs(2));
    let (running, url) = start(server);
    let mut stalled = hoarder(running.local_addr());
    let mut first = [0u8; 100];
    stalled.read_exact(&mut first).unwrap();
    eventually(
        Duration::from_secs(30),
        "the stalled client dropped",
        || running.server().served().stalled == 1,
    );
    eventually(Duration::from_secs(10), "its connection closed", || {
        running.server().served().open == 0
    });
    // Draining what the kernel buffered ends in a close, short of the 32 MiB asked for.
    stalled
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut rest = Vec::new();
    let _ = stalled.read_to_end(&mut rest);
    assert!(rest.len() + 100 < model.len(), "{}", rest.len());
    // A client that reads slowly but steadily (64 KiB every 20 ms, after a pause shorter than
    // the timeout) is not timed out.
    let mut slow = hoarder(running.local_addr());
    std::thread::sleep(Duration::from_millis(300));
    let mut got = Vec::new();
    let mut piece = vec![0u8; 64 << 10];
    while got.len() < 8 << 20 {
        let n = slow.read(&mut piece).unwrap();
        assert!(n > 0, "closed after {} bytes", got.len());
        got.extend_from_slice(&piece[..n]);
        std::thread::sleep(Duration::from_millis(20));
    }
    let head_end = got.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let body = &got[head_end..];
    assert!(body == &model[..body.len()]);
    assert_eq!(running.server().served().stalled, 1);
    drop(slow);
    let _ = url;
    running.stop().unwrap();
}

/// Pins the connection limit: at the limit, the connection idle the longest is closed so that
/// a new client is served (hoarders once locked every other client out).
#[test]
fn at_the_connection_limit_the_stalest_connection_makes_room() {
    let model = data(8 << 20, 2);
    let buffer = StreamBuffer::builder()
        .memory_budget(16 << 20)
        .build(Cursor::new(model.clone()))
        .unwrap();
    buffer.fill_to_end().unwrap();
    let (running, url) = start(Server::new(buffer).max_connections(4));
    let hoarders: Vec<TcpStream> = (0..8).map(|_| hoarder(running.local_addr())).collect();
    eventually(
        Duration::from_secs(10),
        "eight connections accepted",
        || running.server().served().connections == 8,
    );
    for i in 0..3u64 {
        let at = i * 1_000_000;
        let got = curl(&url, &["-H", &format!("Range: bytes={at}-{}", at + 1023)]);
        assert_eq!(got.status, 206);
        assert!(got.body == model[at as usize..at as usize + 1024]);
    }
    let served = running.server().served();
    assert!(served.open <= 4, "{served:?}");
    assert!(served.evicted >= 4, "{served:?}");
    drop(hoarders);
    running.stop().unwrap();
}

#[test]
fn an_http_1_1_request_needs_exactly_one_host() {
    let buffer = StreamBuffer::new(Cursor::new(data(1000, 3)));
    let (running, _) = start(Server::new(buffer));
    let addr = running.local_addr();
    let none = raw(addr, "GET / HTTP/1.1\r\n\r\n");
    assert!(none.starts_with("HTTP/1.1 400"), "{none}");
    let two = raw(addr, "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n");
    assert!(two.starts_with("HTTP/1.1 400"), "{two}");
    let one = raw(
        addr,
        "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    );
    assert!(one.starts_with("HTTP/1.1 200"), "{one}");
    // HTTP/1.0 has no Host requirement.
    let old = raw(addr, "GET / HTTP/1.0\r\n\r\n");
    assert!(old.starts_with("HTTP/1.0 200"), "{old}");
    running.stop().unwrap();
}

/// A file: its strong tag and modification time, and the RFC 9110 §13.2.2 preconditions on
/// them (they were ignored: 200 with the whole body for a matching `If-None-Match`).
#[test]
fn preconditions_give_304_and_412_against_a_files_validators() {
    let model = data(100_000, 4);
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(&model).unwrap();
    let open = || {
        let file = std::fs::File::open(file.path()).unwrap();
        StreamBuffer::builder().build_ranged(file).unwrap()
    };
    let (running, url) = start(Server::new(open()));
    let whole = curl(&url, &[]);
    assert_eq!(whole.status, 200);
    let etag = whole.header("etag").unwrap().to_string();
    let modified = whole
        .header("last-modified")
        .expect("a Last-Modified")
        .to_string();
    let mtime = std::fs::metadata(file.path()).unwrap().modified().unwrap();
    assert_eq!(httpdate::parse_http_date(&modified).unwrap(), trim(mtime));

    let h = |name: &str, value: &str| format!("{name}: {value}");
    let weak = format!("W/{etag}");
    for value in [etag.as_str(), weak.as_str(), "*", &format!("\"x\", {etag}")] {
        let got = curl(&url, &["-H", &h("If-None-Match", value)]);
        assert_eq!(got.status, 304, "If-None-Match {value}");
        assert!(got.body.is_empty());
        assert_eq!(got.header("etag"), Some(etag.as_str()));
    }
    let got = curl(&url, &["-H", &h("If-None-Match", "\"other\"")]);
    assert!(got.status == 200 && got.body == model);
    let got = curl(
        &url,
        &["-H", &h("If-Match", "\"other\""), "-H", "Range: bytes=0-9"],
    );
    assert_eq!(got.status, 412);
    let got = curl(&url, &["-H", &h("If-Match", &weak)]);
    assert_eq!(got.status, 412, "If-Match compares strongly");
    let got = curl(
        &url,
        &["-H", &h("If-Match", &etag), "-H", "Range: bytes=0-9"],
    );
    assert!(got.status == 206 && got.body == model[..10]);
    let got = curl(&url, &["-H", &h("If-Modified-Since", &modified)]);
    assert_eq!(got.status, 304);
    let earlier = httpdate::fmt_http_date(trim(mtime) - Duration::from_secs(10));
    let got = curl(&url, &["-H", &h("If-Modified-Since", &earlier)]);
    assert_eq!(got.status, 200);
    let got = curl(&url, &["-H", &h("If-Unmodified-Since", &earlier)]);
    assert_eq!(got.status, 412);
    // If-Range by date.
    let got = curl(
        &url,
        &["-H", &h("If-Range", &modified), "-H", "Range: bytes=5-9"],
    );
    assert!(got.status == 206 && got.body == model[5..10]);
    running.stop().unwrap();

    // A new server over the same file: the same tag, so a resumed download goes on.
    let (again, url) = start(Server::new(open()));
    let got = curl(
        &url,
        &["-H", &h("If-Range", &etag), "-H", "Range: bytes=50000-"],
    );
    assert!(got.status == 206 && got.body == model[50_000..]);
    again.stop().unwrap();
}

fn trim(time: SystemTime) -> SystemTime {
    let secs = time
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
}

/// A stream that ended before its declared length: a request that starts past the failure gets
/// a `502` with a status line (the connection was closed before any), and whole `GET`s get
/// exactly the bytes held, every time, then a cut (they once stopped short by a different
/// amount each time: hyper dropped what it had not written yet).
#[test]
fn a_stream_that_ends_early_gives_502_past_the_end_and_every_held_byte_before_it() {
    let held = 4_000_000;
    let model = data(held, 5);
    let buffer = StreamBuffer::builder()
        .len(5_000_000)
        .memory_budget(1 << 20)
        .build(Scripted::new(model.clone(), 100_000))
        .unwrap();
    assert!(buffer.fill_to_end().is_err());
    let (running, url) = start(Server::new(buffer));
    let got = curl(&url, &["-H", "Range: bytes=4500000-"]);
    assert_eq!(got.status, 502);
    let text = String::from_utf8_lossy(&got.body);
    assert!(text.contains("ended at offset 4000000"), "{text}");
    for _ in 0..5 {
        let out = std::process::Command::new("curl")
            .args(["-s", "-o", "-", &url])
            .output()
            .unwrap();
        assert!(!out.status.success(), "a cut body is an error for curl");
        assert_eq!(out.stdout.len(), held, "every held byte, then the cut");
        assert!(out.stdout == model);
    }
    // A range that starts before the failure: its bytes up to it, then the cut.
    let out = std::process::Command::new("curl")
        .args(["-s", "-o", "-", "-H", "Range: bytes=3000000-", &url])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(out.stdout == model[3_000_000..]);
    running.stop().unwrap();
}

/// The same with a pipe that fails with an error while clients wait for its bytes: the waiting
/// requests are cut after the bytes before the failure.
#[test]
fn a_source_failing_mid_response_cuts_it_after_the_bytes_before_the_failure() {
    let model = data(3_000_000, 6);
    let source = Scripted::new(model.clone(), 32 * 1024)
        .delay(Duration::from_millis(2))
        .fail_at(2_500_000, io::ErrorKind::ConnectionReset);
    let buffer = StreamBuffer::builder()
        .len(3_000_000)
        .build(source)
        .unwrap();
    let (running, url) = start(Server::new(buffer));
    let out = within(Duration::from_secs(60), move || {
        std::process::Command::new("curl")
            .args(["-s", "-o", "-", &url])
            .output()
            .unwrap()
    });
    assert!(!out.status.success());
    assert!(out.stdout == model[..2_500_000], "{}", out.stdout.len());
    running.stop().unwrap();
}
