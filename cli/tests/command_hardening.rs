//! `sparsebuf serve` against clients that hoard connections under a small descriptor limit,
//! and against a pipe that ends before its declared length: every request gets a status line,
//! and the failure is logged once on stderr.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::command::Serving;
use common::curl::curl;
use common::data;

/// Pins the connection limit: under `ulimit -n 256`, 300 clients that ask for a large file and
/// never read once took every descriptor, and a 1 KiB range request was still unanswered after
/// 75 s. Now the stalest connections make room and it is answered.
#[test]
fn under_ulimit_256_hoarding_clients_lock_nobody_out() {
    let model = data(16 << 20, 1);
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(&model).unwrap();
    let path = file.path().to_str().unwrap().to_string();
    let serving = Serving::start_limited(256, &path, Stdio::null(), &["--quiet"]);
    let addr = serving
        .url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let mut hoarders = Vec::new();
    for _ in 0..300 {
        let Ok(mut stream) = TcpStream::connect(&addr) else {
            continue;
        };
        let _ = stream.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        hoarders.push(stream);
    }
    assert!(hoarders.len() >= 256, "{} connected", hoarders.len());
    // Let the server accept them all (and fill their sockets).
    std::thread::sleep(Duration::from_millis(500));
    let started = Instant::now();
    let got = curl(
        &serving.url,
        &["--max-time", "10", "-H", "Range: bytes=5000000-5001023"],
    );
    let took = started.elapsed();
    eprintln!("a 1 KiB range with 300 hoarders under ulimit -n 256: {took:?}");
    assert_eq!(got.status, 206);
    assert!(got.body == model[5_000_000..5_001_024]);
    drop(hoarders);
    let stderr = serving.stop();
    assert!(
        stderr.contains("to make room at the connection limit"),
        "{stderr}"
    );
}

/// Pins "every request gets a status line" through the command: a pipe that ends before its
/// `--len` gives a `502` saying where it ended to a request past the end (the connection was
/// closed before a status line), and exactly the held bytes to whole `GET`s (they stopped short
/// by a different amount each time). The failure is logged once, with `--quiet` too.
#[test]
fn a_pipe_that_ends_before_its_length_gives_502_past_the_end_and_every_held_byte() {
    let held = 4 << 20;
    let model = data(held, 2);
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(&model).unwrap();
    let serving = Serving::pipe(file.path(), &["--len", "5000000", "--quiet"]);
    let got = curl(&serving.url, &["-H", "Range: bytes=4500000-"]);
    assert_eq!(got.status, 502);
    let text = String::from_utf8_lossy(&got.body);
    assert!(text.contains(&format!("ended at offset {held}")), "{text}");
    for _ in 0..5 {
        let out = Command::new("curl")
            .args(["-s", "-o", "-", &serving.url])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(18), "curl: partial file");
        assert_eq!(out.stdout.len(), held);
        assert!(out.stdout == model);
    }
    let stderr = serving.stop();
    let failures: Vec<&str> = stderr.lines().filter(|l| l.contains("ended at")).collect();
    assert_eq!(failures.len(), 1, "logged once: {stderr}");
    assert!(failures[0].starts_with("sparsebuf: warn: "), "{stderr}");
}

/// `--send-timeout` drops a client that takes nothing, and says so on stderr.
#[test]
fn send_timeout_drops_a_client_that_takes_nothing() {
    let model = data(32 << 20, 3);
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(&model).unwrap();
    let path = file.path().to_str().unwrap().to_string();
    let serving = Serving::start(&path, Stdio::null(), &["--quiet", "--send-timeout", "1"]);
    let addr = serving
        .url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let mut stalled = TcpStream::connect(&addr).unwrap();
    stalled
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    // The kernel's buffers fill, then the timeout runs: the server closes the connection.
    std::thread::sleep(Duration::from_secs(4));
    stalled
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut rest = Vec::new();
    let _ = std::io::Read::read_to_end(&mut stalled, &mut rest);
    assert!(rest.len() < model.len(), "{}", rest.len());
    let stderr = serving.stop();
    assert!(stderr.contains("took nothing for 1s"), "{stderr}");
}

/// `sparsebuf serve URL` over nginx (`etag off;`): once the file is replaced upstream, a
/// response never carries bytes of the new version. A whole `GET` is cut after the bytes held
/// from the first version; a range that needs a fetch is a `502` saying the upstream changed.
#[test]
fn serve_url_never_mixes_two_versions_of_a_changed_upstream() {
    let (v1, v2) = (data(4 << 20, 4), data(4 << 20, 5));
    let root = tempfile::tempdir().unwrap();
    let path = root.path().join("film.bin");
    std::fs::write(&path, &v1).unwrap();
    let nginx = common::nginx::Nginx::start(root.path(), "etag off;");
    let serving = Serving::start(&nginx.url("film.bin"), Stdio::null(), &["--quiet"]);
    let got = curl(&serving.url, &["-H", "Range: bytes=0-1048575"]);
    assert!(got.status == 206 && got.body == v1[..1 << 20]);
    // A deploy: a new file renamed over the old one, ten seconds newer.
    let old = std::fs::metadata(&path).unwrap().modified().unwrap();
    let tmp = root.path().join("film.new");
    std::fs::write(&tmp, &v2).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&tmp)
        .unwrap()
        .set_modified(old + Duration::from_secs(10))
        .unwrap();
    std::fs::rename(&tmp, &path).unwrap();

    let out = Command::new("curl")
        .args(["-s", "-o", "-", &serving.url])
        .output()
        .unwrap();
    assert!(!out.status.success(), "cut, not a clean end");
    // The bytes held, and those of a response opened before the change (version 1's too),
    // then the cut: version 1's bytes only, and not all of them.
    let n = out.stdout.len();
    assert!(n >= 1 << 20 && n < v1.len(), "{n} bytes");
    assert!(out.stdout == v1[..n], "{n} bytes, not all of version 1");
    // The first byte not held needs a fetch: the upstream changed, so a 502.
    let range = format!("Range: bytes={n}-{}", n + 99);
    let got = curl(&serving.url, &["-H", &range]);
    assert_eq!(got.status, 502);
    let text = String::from_utf8_lossy(&got.body);
    assert!(text.contains("the upstream resource changed"), "{text}");
    let stderr = serving.stop();
    let logged = stderr.matches("the upstream resource changed").count();
    assert_eq!(logged, 1, "{stderr}");
}

/// `sparsebuf serve URL` over the scripted upstream that changes the resource after three
/// requests, with each kind of validator it may have: no response ever carries bytes of the
/// second version (a whole GET is cut after what was held; a range needing a fetch is a 502).
#[test]
fn serve_url_never_mixes_versions_of_a_scripted_upstream() {
    use common::upstream::{Script, Tags, Upstream};
    let (v1, v2) = (data(2 << 20, 6), data(2 << 20, 7));
    let scripts = {
        let base = Script::new(v1.clone(), v2.clone(), 3);
        let mut last_modified_only = base.clone();
        last_modified_only.tags = Tags::None;
        let mut weak = base.clone();
        weak.tags = Tags::Weak;
        weak.last_modified = false;
        let mut ignoring = base.clone();
        ignoring.honour_if_range = false;
        let mut lying = Script::new(v1.clone(), v1.clone(), 3);
        lying.honour_if_range = false;
        lying.lie_about_total = Some(3 << 20);
        [
            ("Last-Modified only", last_modified_only),
            ("weak tags", weak),
            ("ignoring If-Range", ignoring),
            ("a wrong total", lying),
        ]
    };
    for (what, script) in scripts {
        let upstream = Upstream::start(script);
        // Segments of 64 KiB: the probe, then one request per read of the first two segments
        // (the second continues the first and asks for two segments).
        let serving = Serving::start(&upstream.url, Stdio::null(), &["--quiet"]);
        for (a, b) in [(0, 65_535), (65_536, 131_071)] {
            let got = curl(&serving.url, &["-H", &format!("Range: bytes={a}-{b}")]);
            assert!(got.status == 206 && got.body == v1[a..=b], "{what}");
        }
        let out = Command::new("curl")
            .args(["-s", "-o", "-", &serving.url])
            .output()
            .unwrap();
        assert!(!out.status.success(), "{what}: cut, not a clean end");
        // What was held and the rest of the second response (asked for before the change):
        // version 1's bytes, then the cut.
        let n = out.stdout.len();
        assert!(n >= 131_072 && n < v1.len(), "{what}: {n} bytes");
        assert!(
            out.stdout == v1[..n],
            "{what}: {n} bytes, not all of version 1"
        );
        let range = format!("Range: bytes={n}-{}", n + 99);
        let got = curl(&serving.url, &["-H", &range]);
        assert_eq!(got.status, 502, "{what}");
        let text = String::from_utf8_lossy(&got.body);
        assert!(
            text.contains("the upstream resource changed"),
            "{what}: {text}"
        );
        let stderr = serving.stop();
        assert_eq!(stderr.matches("changed").count(), 1, "{what}: {stderr}");
    }
}
