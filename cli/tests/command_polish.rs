//! The command as people expect it: sizes with units, `--log` lines, `Content-Type` by
//! extension, a drain on SIGTERM and SIGINT, paths that are not UTF-8.

mod common;

use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::command::{bin, run, Serving};
use common::curl::curl;
use common::data;

const LIMIT: Duration = Duration::from_secs(60);

fn file_with(dir: &std::path::Path, name: &str, bytes: &[u8]) -> String {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path.to_str().unwrap().to_string()
}

#[test]
fn sizes_take_units() {
    let dir = tempfile::tempdir().unwrap();
    let model = data(300_000, 41);
    let file = file_with(dir.path(), "f.bin", &model);
    for (budget, disk) in [
        ("64M", "1G"),
        ("64MiB", "1GiB"),
        ("64MB", "1GB"),
        ("1.5m", "2000kB"),
    ] {
        let args = ["--quiet", "--memory-budget", budget, "--disk-budget", disk];
        let serving = Serving::start(&file, Stdio::null(), &args);
        let got = curl(&serving.url, &["-H", "Range: bytes=1000-1999"]);
        assert!(got.body == model[1000..2000], "{budget}");
    }
    let (code, _, err) = run(
        bin(),
        &[
            "serve",
            &file,
            "--listen",
            "127.0.0.1:0",
            "--memory-budget",
            "64Q",
        ],
        LIMIT,
    );
    assert_eq!(code, Some(2));
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("64Q"), "{err}");
}

#[test]
fn log_writes_one_line_per_request() {
    let dir = tempfile::tempdir().unwrap();
    let model = data(100_000, 42);
    let file = file_with(dir.path(), "clip.mp4", &model);
    let serving = Serving::start(&file, Stdio::null(), &["--quiet", "--log"]);
    let got = curl(&serving.url, &["-H", "Range: bytes=0-99"]);
    assert!(got.body == model[..100]);
    let got = curl(&serving.url, &[]);
    assert!(got.body == model);
    let got = curl(&format!("{}elsewhere", serving.url), &[]);
    assert_eq!(got.status, 404);
    let got = curl(&serving.url, &["-I"]);
    assert_eq!(got.status, 200);
    std::thread::sleep(Duration::from_millis(200));
    let err = serving.stop();
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 4, "{err}");
    let fields = |line: &str| -> Vec<String> {
        let rest = line.strip_prefix("sparsebuf: ").unwrap();
        rest.split(' ').map(str::to_string).collect()
    };
    let first = fields(lines[0]);
    assert_eq!(
        &first[..5],
        ["GET", "/", "bytes=0-99", "206", "100"],
        "{err}"
    );
    assert!(first[5].ends_with("ms"), "{err}");
    assert_eq!(first.len(), 6, "a clean end: {err}");
    assert_eq!(&fields(lines[1])[..5], ["GET", "/", "-", "200", "100000"]);
    assert_eq!(&fields(lines[2])[..4], ["GET", "/elsewhere", "-", "404"]);
    assert_eq!(&fields(lines[3])[..5], ["HEAD", "/", "-", "200", "0"]);
}

#[test]
fn content_type_comes_from_the_extension_unless_given() {
    let dir = tempfile::tempdir().unwrap();
    let model = data(10_000, 43);
    for (name, args, expected) in [
        ("clip.mp4", vec!["--quiet"], "video/mp4"),
        ("song.mp3", vec!["--quiet"], "audio/mpeg"),
        ("blob", vec!["--quiet"], "application/octet-stream"),
        (
            "clip2.mp4",
            vec!["--quiet", "--content-type", "video/x-custom"],
            "video/x-custom",
        ),
    ] {
        let file = file_with(dir.path(), name, &model);
        let serving = Serving::start(&file, Stdio::null(), &args);
        let got = curl(&serving.url, &[]);
        assert!(got.body == model);
        assert_eq!(got.header("content-type"), Some(expected), "{name}");
    }
}

/// A client reading slowly (curl --limit-rate) when SIGTERM comes: its transfer completes with
/// every byte, new connections are refused, and the command exits 0. (24 MB at 8 MB/s: more
/// than the sockets' buffers hold, so a server that did not drain would cut it.)
#[test]
fn sigterm_lets_a_transfer_in_flight_finish() {
    let dir = tempfile::tempdir().unwrap();
    let model = data(24_000_000, 44);
    let file = file_with(dir.path(), "f.bin", &model);
    for signal in ["TERM", "INT"] {
        let serving = Serving::start(&file, Stdio::null(), &["--quiet", "--drain", "30"]);
        let url = serving.url.clone();
        let reading = std::thread::spawn(move || curl(&url, &["--limit-rate", "8M"]));
        // Wait until the response has started.
        std::thread::sleep(Duration::from_millis(400));
        let url = serving.url.clone();
        let started = Instant::now();
        let (code, err) = serving.signal_and_wait(signal, LIMIT);
        assert_eq!(code, Some(0), "{err}");
        assert!(err.contains(&format!("SIG{signal}")), "{err}");
        let got = reading.join().unwrap();
        assert_eq!(got.status, 200);
        assert!(got.body == model, "{} bytes", got.body.len());
        assert!(started.elapsed() < Duration::from_secs(30));
        // Nobody listens any more.
        let refused = Command::new("curl")
            .args(["-s", "--max-time", "5", &url])
            .output()
            .unwrap();
        assert!(!refused.status.success());
    }
}

/// Past `--drain`, a transfer still in flight is cut: the client sees an error, never a clean
/// short end.
#[test]
fn a_transfer_longer_than_the_drain_is_cut() {
    let dir = tempfile::tempdir().unwrap();
    let model = data(32_000_000, 45);
    let file = file_with(dir.path(), "f.bin", &model);
    let serving = Serving::start(&file, Stdio::null(), &["--quiet", "--drain", "500ms"]);
    let url = serving.url.clone();
    let reading = std::thread::spawn(move || {
        Command::new("curl")
            .args(["-s", "-o", "/dev/null", "--limit-rate", "2M", &url])
            .output()
            .unwrap()
    });
    std::thread::sleep(Duration::from_millis(400));
    let (code, err) = serving.signal_and_wait("TERM", LIMIT);
    assert_eq!(code, Some(0), "{err}");
    let out = reading.join().unwrap();
    // curl 18: a transfer closed with bytes outstanding.
    assert_eq!(out.status.code(), Some(18), "{out:?}");
}

#[test]
fn paths_that_are_not_utf8_work_or_are_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let model = data(50_000, 46);
    let raw = dir
        .path()
        .join(std::ffi::OsStr::from_bytes(b"film-\xff.bin"));
    std::fs::write(&raw, &model).unwrap();
    let mut command = Command::new(bin());
    command.arg("serve").arg(&raw);
    command.args(["--listen", "127.0.0.1:0", "--quiet"]);
    let serving = Serving::spawn(command);
    let got = curl(&serving.url, &[]);
    assert!(got.body == model);
    drop(serving);

    let missing = dir
        .path()
        .join(std::ffi::OsStr::from_bytes(b"gone-\xfe.bin"));
    let mut child = Command::new(bin())
        .arg("serve")
        .arg(&missing)
        .args(["--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = child.wait().unwrap();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert_eq!(status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("sparsebuf: cannot open"), "{err}");
    assert!(!err.contains("panicked"));
}
