//! The Range server (feature `http`) against curl: a matrix of requests over buffers of known
//! and unknown length, each answer's status, headers and exact bytes checked against the model.
#![cfg(feature = "server")]

mod common;

use std::io::{self, Cursor};
use std::time::Duration;

use common::curl::{curl, multipart};
use common::{data, Scripted};
use sparsebuf::{Running, Server, StreamBuffer};

fn start(buffer: StreamBuffer) -> (Running, String) {
    let running = Server::new(buffer)
        .content_type("video/mp4")
        .unwrap()
        .start("127.0.0.1:0")
        .unwrap();
    let url = format!("http://{}/", running.local_addr());
    (running, url)
}

fn range(r: &str) -> String {
    format!("Range: bytes={r}")
}

#[test]
fn a_known_length_answers_the_range_matrix() {
    let model = data(1_000_000, 1);
    let len = model.len();
    let (running, url) = start(StreamBuffer::new(Cursor::new(model.clone())));
    let buffer = running.server().buffer().unwrap().clone();
    // The length is learnt by pulling to the end: ask for it first.
    assert_eq!(buffer.fill_to_end().unwrap(), len as u64);

    let whole = curl(&url, &[]);
    assert_eq!(whole.status, 200);
    assert!(whole.body == model);
    assert_eq!(whole.header("content-length"), Some("1000000"));
    assert_eq!(whole.header("accept-ranges"), Some("bytes"));
    assert_eq!(whole.header("content-type"), Some("video/mp4"));
    let etag = whole.header("etag").expect("an ETag").to_string();
    assert!(
        etag.starts_with('"') && !etag.starts_with("W/"),
        "strong: {etag}"
    );

    // (range, first byte, end) for each satisfiable single range.
    let singles: &[(&str, usize, usize)] = &[
        ("0-", 0, len),
        ("0-0", 0, 1),
        ("100-199", 100, 200),
        ("999999-", 999_999, len),
        ("999990-2000000", 999_990, len),
        ("-500", len - 500, len),
        ("-2000000", 0, len),
        ("500000-", 500_000, len),
    ];
    for &(spec, start, end) in singles {
        let got = curl(&url, &["-H", &range(spec)]);
        assert_eq!(got.status, 206, "{spec}");
        let expected = format!("bytes {start}-{}/{len}", end - 1);
        assert_eq!(
            got.header("content-range"),
            Some(expected.as_str()),
            "{spec}"
        );
        assert_eq!(
            got.header("content-length"),
            Some((end - start).to_string().as_str())
        );
        assert!(got.body == model[start..end], "{spec}: wrong bytes");
        assert_eq!(got.header("etag"), Some(etag.as_str()));
    }

    for spec in [
        "1000000-",
        "2000000-3000000",
        "-0",
        "1000000-1000000,1000001-",
    ] {
        let got = curl(&url, &["-H", &range(spec)]);
        assert_eq!(got.status, 416, "{spec}");
        assert_eq!(
            got.header("content-range"),
            Some("bytes */1000000"),
            "{spec}"
        );
    }

    // Malformed, or another unit: ignored, the whole is sent.
    for header in [
        "Range: bytes=5-4",
        "Range: bytes=x-",
        "Range: items=0-5",
        "Range: bytes=",
    ] {
        let got = curl(&url, &["-H", header]);
        assert_eq!(got.status, 200, "{header}");
        assert!(got.body == model);
    }

    // Several ranges: parts in the order asked, overlapping ones merged, adjacent ones not.
    let got = curl(&url, &["-H", &range("500-599,0-9,550-700,-10,20-29,30-39")]);
    assert_eq!(got.status, 206);
    assert!(got
        .header("content-type")
        .unwrap()
        .starts_with("multipart/byteranges"));
    assert_eq!(
        got.header("content-length"),
        Some(got.body.len().to_string().as_str())
    );
    let parts = multipart(&got);
    let want: &[(usize, usize)] = &[(500, 701), (0, 10), (len - 10, len), (20, 30), (30, 40)];
    assert_eq!(parts.len(), want.len());
    for ((content_range, bytes), &(start, end)) in parts.iter().zip(want) {
        assert_eq!(content_range, &format!("bytes {start}-{}/{len}", end - 1));
        assert!(bytes[..] == model[start..end]);
    }
    // Two ranges that merge into one: a plain 206.
    let got = curl(&url, &["-H", &range("0-99,50-149")]);
    assert_eq!(got.status, 206);
    assert_eq!(got.header("content-range"), Some("bytes 0-149/1000000"));
    assert!(got.body == model[..150]);
    // Unsatisfiable ones among satisfiable ones are left out.
    let got = curl(&url, &["-H", &range("5000000-,10-19")]);
    assert_eq!((got.status, got.body.as_slice()), (206, &model[10..20]));

    // If-Range: the current tag honours the range; another tag, a weak one or a date do not.
    let if_range = format!("If-Range: {etag}");
    let got = curl(&url, &["-H", &range("10-19"), "-H", &if_range]);
    assert_eq!((got.status, got.body.as_slice()), (206, &model[10..20]));
    let weak = format!("If-Range: W/{etag}");
    for other in [
        "If-Range: \"another\"",
        weak.as_str(),
        "If-Range: Wed, 21 Oct 2015 07:28:00 GMT",
    ] {
        let got = curl(&url, &["-H", &range("10-19"), "-H", other]);
        assert_eq!(got.status, 200, "{other}");
        assert!(got.body == model);
    }

    // HEAD: the same fields as GET, no body.
    for spec in [None, Some("100-199"), Some("0-1,5-6"), Some("2000000-")] {
        let mut args = vec!["-I"];
        let header = spec.map(range);
        if let Some(h) = &header {
            args.extend(["-H", h.as_str()]);
        }
        let head = curl(&url, &args);
        let mut get_args: Vec<&str> = args[1..].to_vec();
        get_args.push("-X");
        get_args.push("GET");
        let get = curl(&url, &get_args);
        assert_eq!(head.status, get.status, "{spec:?}");
        for name in ["content-length", "content-range", "etag", "accept-ranges"] {
            assert_eq!(head.header(name), get.header(name), "{name} for {spec:?}");
        }
        if !spec.is_some_and(|s| s.contains(',')) {
            assert_eq!(head.header("content-type"), get.header("content-type"));
        }
    }

    // Other methods and paths.
    let got = curl(&url, &["-X", "POST", "-d", "x"]);
    assert_eq!(got.status, 405);
    assert_eq!(got.header("allow"), Some("GET, HEAD"));
    let got = curl(&format!("{url}other"), &[]);
    assert_eq!(got.status, 404);

    let served = running.server().served();
    assert!(
        served.requests >= 30 && served.bytes > len as u64,
        "{served:?}"
    );
    running.stop().unwrap();
}

#[test]
fn an_unknown_length_streams_whole_and_answers_ranges_once_the_end_is_known() {
    let model = data(3_000_000, 2);
    let len = model.len();
    // A pipe: forward only, slow, no length until it ends.
    let source = Scripted::new(model.clone(), 64 * 1024).delay(Duration::from_millis(2));
    let buffer = StreamBuffer::builder()
        .memory_budget(1 << 20)
        .build(source)
        .unwrap();
    let (running, url) = start(buffer.clone());

    // From the start, with no Range or with `bytes=0-`: at once, chunked, without the length.
    // (Each on a stream of its own: once one has been read to its end, the length is known.)
    let second = StreamBuffer::new(Scripted::new(model.clone(), 64 * 1024));
    let (second_running, second_url) = start(second);
    for (url, args) in [(&url, vec![]), (&second_url, vec!["-H", "Range: bytes=0-"])] {
        let got = curl(url, &args);
        assert_eq!(got.status, 200, "{args:?}");
        assert_eq!(got.header("transfer-encoding"), Some("chunked"));
        assert_eq!(got.header("content-length"), None);
        assert_eq!(got.header("accept-ranges"), Some("bytes"));
        assert!(got.body == model);
    }
    let fresh = StreamBuffer::new(Scripted::new(model.clone(), 64 * 1024));
    let (fresh_running, fresh_url) = start(fresh.clone());
    // Any other range waits for the end: then 206 with the total, never `/*`.
    let got = curl(&fresh_url, &["-H", &range("-100")]);
    assert_eq!(got.status, 206);
    let expected = format!("bytes {}-{}/{len}", len - 100, len - 1);
    assert_eq!(got.header("content-range"), Some(expected.as_str()));
    assert!(got.body == model[len - 100..]);
    assert_eq!(fresh.len(), Some(len as u64));
    // HEAD of an unknown length, from a third stream: the same headers as its GET.
    let third = StreamBuffer::new(Scripted::new(model.clone(), 64 * 1024));
    let (third_running, third_url) = start(third);
    let head = curl(&third_url, &["-I"]);
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length"), None);
    third_running.stop().unwrap();
    second_running.stop().unwrap();
    fresh_running.stop().unwrap();
    running.stop().unwrap();
}

#[test]
fn a_failed_source_is_a_bad_gateway_or_a_cut_body() {
    let model = data(400_000, 3);
    let source =
        Scripted::new(model.clone(), 16 * 1024).fail_at(300_000, io::ErrorKind::ConnectionReset);
    let (running, url) = start(StreamBuffer::new(source));
    // The whole, from the start: the response started, so the failure cuts it short.
    let out = std::process::Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{size_download}", &url])
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "a cut body is a failed transfer for curl"
    );
    let size: u64 = String::from_utf8_lossy(&out.stdout).parse().unwrap();
    assert!(size <= 300_000, "{size}");
    // A range that needs the end: 502 with the cause.
    let got = curl(&url, &["-H", &range("-10")]);
    assert_eq!(got.status, 502);
    assert!(String::from_utf8_lossy(&got.body).contains("scripted failure"));
    running.stop().unwrap();
}

#[test]
fn a_live_windowed_stream_advertises_no_ranges_and_serves_from_its_oldest_byte() {
    let model = data(200_000, 4);
    let (mut writer, buffer) = StreamBuffer::builder()
        .segment_size(16 * 1024)
        .window(64 * 1024)
        .build_push()
        .unwrap();
    // Past the window: the first bytes are gone; the length is not known yet.
    io::Write::write_all(&mut writer, &model[..150_000]).unwrap();
    let start_at = buffer.window_start() as usize;
    assert!(start_at > 0);
    let (running, url) = start(buffer);
    let head = curl(&url, &["-I", "-H", &range("0-99")]);
    assert_eq!(head.status, 200);
    assert_eq!(head.header("accept-ranges"), Some("none"));
    let getting = std::thread::spawn(move || curl(&url, &["-H", &range("0-99")]));
    std::thread::sleep(Duration::from_millis(300));
    io::Write::write_all(&mut writer, &model[150_000..]).unwrap();
    writer.finish().unwrap();
    let got = getting.join().unwrap();
    assert_eq!(got.status, 200);
    assert!(got.body == model[start_at..]);
    running.stop().unwrap();
}

#[test]
fn a_windowed_stream_of_known_length_serves_ranges_inside_its_window() {
    let model = data(200_000, 4);
    let buffer = StreamBuffer::builder()
        .segment_size(16 * 1024)
        .window(64 * 1024)
        .build(Cursor::new(model.clone()))
        .unwrap();
    // Pull past the window: the first bytes are gone, the length is known.
    assert_eq!(buffer.fill_to_end().unwrap(), model.len() as u64);
    let start_at = buffer.window_start() as usize;
    assert!(start_at > 0);
    let (running, url) = start(buffer);
    // Before the window: gone.
    let got = curl(&url, &["-H", &range("0-99")]);
    assert_eq!(got.status, 416);
    assert_eq!(got.header("content-range"), Some("bytes */200000"));
    let got = curl(&url, &["-H", &range(&format!("{}-", start_at - 1))]);
    assert_eq!(got.status, 416);
    // Inside it: a player seeks back within what the window holds.
    let at = start_at + 1000;
    let got = curl(&url, &["-H", &range(&format!("{at}-{}", at + 9999))]);
    assert_eq!(got.status, 206);
    assert_eq!(got.header("accept-ranges"), Some("bytes"));
    let content_range = format!("bytes {at}-{}/200000", at + 9999);
    assert_eq!(got.header("content-range"), Some(content_range.as_str()));
    assert!(got.body == model[at..at + 10_000]);
    let got = curl(&url, &["-H", &range("-5000")]);
    assert_eq!(got.status, 206);
    assert!(got.body == model[195_000..]);
    // Without a range: from the oldest byte held.
    let got = curl(&url, &[]);
    assert_eq!(got.status, 200);
    assert!(got.body == model[start_at..]);
    running.stop().unwrap();
}

#[test]
fn prebuffering_holds_the_first_response_until_the_bytes_are_in() {
    let model = data(2_000_000, 5);
    let source = Scripted::new(model.clone(), 32 * 1024).delay(Duration::from_millis(1));
    let buffer = StreamBuffer::new(source);
    let running = Server::new(buffer.clone())
        .prebuffer(1_500_000)
        .start("127.0.0.1:0")
        .unwrap();
    let url = format!("http://{}/", running.local_addr());
    let got = curl(&url, &["-I"]);
    assert_eq!(got.status, 200);
    // The HEAD came back only once the prebuffer was filled.
    assert!(buffer.stats().source_bytes >= 1_500_000);
    let got = curl(&url, &["-H", "Range: bytes=0-"]);
    assert!(got.body == model);
    running.stop().unwrap();
}

#[test]
fn an_empty_stream_has_no_satisfiable_range() {
    let (running, url) = start(StreamBuffer::new(Cursor::new(Vec::new())));
    running.server().buffer().unwrap().fill_to_end().unwrap();
    let got = curl(&url, &[]);
    assert_eq!((got.status, got.body.len()), (200, 0));
    assert_eq!(got.header("content-length"), Some("0"));
    let got = curl(&url, &["-H", "Range: bytes=0-"]);
    assert_eq!(got.status, 416);
    assert_eq!(got.header("content-range"), Some("bytes */0"));
    running.stop().unwrap();
}

#[test]
fn a_stalled_client_holds_back_no_other() {
    use std::io::{Read, Write};
    let model = data(4_000_000, 6);
    let (running, url) = start(StreamBuffer::new(Cursor::new(model.clone())));
    // A client that asks for everything and reads nothing: its socket buffers fill, and its
    // response waits.
    let mut stalled = std::net::TcpStream::connect(running.local_addr()).unwrap();
    stalled
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut first = [0u8; 100];
    stalled.read_exact(&mut first).unwrap();
    for i in 0..5 {
        let start = i * 700_000;
        let got = curl(
            &url,
            &["-H", &range(&format!("{start}-{}", start + 99_999))],
        );
        assert!(got.body == model[start..start + 100_000]);
    }
    // curl has exited; the server notices each close on its own task, a moment later.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while running.server().served().open > 1 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert_eq!(
        running.server().served().open,
        1,
        "only the stalled client is left"
    );
    drop(stalled);
    running.stop().unwrap();
}

#[test]
fn a_client_that_disconnects_releases_its_cursor_at_once() {
    use std::io::{Read, Write};
    // A push stream whose budgets hold 256 KiB and whose window holds all: the writer may only
    // drop bytes that no reader holds.
    let (mut writer, buffer) = StreamBuffer::builder()
        .segment_size(64 * 1024)
        .memory_budget(256 * 1024)
        .disk_budget(0)
        .window(1 << 30)
        .build_push()
        .unwrap();
    let model = data(4_000_000, 7);
    writer.write_all(&model[..200_000]).unwrap();
    let (running, _) = start(buffer);
    let mut client = std::net::TcpStream::connect(running.local_addr()).unwrap();
    client
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut some = [0u8; 1000];
    client.read_exact(&mut some).unwrap();
    // The client's cursor holds the stream's start: the writer could not get far now.
    drop(client);
    // Gone: the writer goes on to the end (a hold left behind would block it for good).
    common::within(Duration::from_secs(30), move || {
        writer.write_all(&model[200_000..]).unwrap();
        writer.finish().unwrap();
    });
    running.stop().unwrap();
}

/// `Running::shutdown` drains: a response in flight (its client reads slowly, past what the
/// sockets buffer) gets every byte, then the server stops and refuses new connections.
#[test]
fn shutdown_lets_a_response_in_flight_finish() {
    let model = data(24_000_000, 9);
    let buffer = StreamBuffer::builder()
        .build(Cursor::new(model.clone()))
        .unwrap();
    let (running, url) = start(buffer);
    let reading = {
        let url = url.clone();
        std::thread::spawn(move || curl(&url, &["--limit-rate", "8M"]))
    };
    std::thread::sleep(Duration::from_millis(400));
    running.shutdown(Duration::from_secs(30)).unwrap();
    let got = reading.join().unwrap();
    assert_eq!(got.status, 200);
    assert!(got.body == model, "{} bytes", got.body.len());
    let refused = std::process::Command::new("curl")
        .args(["-s", "--max-time", "5", &url])
        .output()
        .unwrap();
    assert!(!refused.status.success());
}

#[test]
fn a_herd_of_connections_waits_in_the_listen_queue() {
    // 600 clients connect at once to a server that has yet to accept any: each one's handshake
    // completes at once (the queue holds `LISTEN_BACKLOG`). With tokio's own `bind` (128) the
    // 130th waited for the kernel's SYN retries (1 s, 3 s): the herd's far readers did.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let listener = runtime.block_on(Server::bind("127.0.0.1:0")).unwrap();
    let addr = listener.local_addr().unwrap();
    // The kernel caps every queue at `net.core.somaxconn` (4096 since Linux 5.4, 128 before).
    let cap = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()
        .and_then(|s| s.trim().parse::<usize>().ok())
        .unwrap_or(600);
    let mut clients = Vec::new();
    for i in 0..600.min(cap) {
        match std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
            Ok(client) => clients.push(client),
            Err(e) => panic!("connection {i} was not queued: {e}"),
        }
    }
    drop(listener);
}
