//! The `sparsebuf serve` command: its inputs (a pipe, a file, URLs with and without ranges),
//! its output, and its answers to bad input (one line on stderr and a non-zero exit, never a
//! panic).

mod common;

use std::net::TcpListener;
use std::process::Stdio;
use std::time::Duration;

use common::command::{bin, run, Serving};
use common::curl::curl;
use common::{data, Rng};

const LIMIT: Duration = Duration::from_secs(60);

#[test]
fn help_lists_every_option_with_examples() {
    let (code, out, _) = run(bin(), &["--help"], LIMIT);
    assert_eq!(code, Some(0));
    let help = String::from_utf8(out).unwrap();
    for option in [
        "--listen",
        "--len",
        "--memory-budget",
        "--disk-budget",
        "--spill-dir",
        "--window",
        "--prebuffer",
        "--content-type",
        "--quiet",
        "EXAMPLES",
        "sparsebuf serve - --listen",
        "sparsebuf serve film.mkv",
        "sparsebuf serve /srv/media",
        "sparsebuf serve https://",
        "sparsebuf proxy https://",
    ] {
        assert!(help.contains(option), "--help lacks {option}");
    }
    // Each command's help lists its options.
    for (command, options) in [
        (
            "serve",
            &["--len", "--window", "--prebuffer", "--content-type"][..],
        ),
        ("proxy", &["--max-request"][..]),
    ] {
        let (code, out, _) = run(bin(), &[command, "--help"], LIMIT);
        assert_eq!(code, Some(0));
        let help = String::from_utf8(out).unwrap();
        let common = [
            "--listen",
            "--memory-budget",
            "--disk-budget",
            "--spill-dir",
            "--cache-dir",
            "--idle-ttl",
            "--send-timeout",
            "--max-connections",
            "--drain",
            "--log",
            "--quiet",
            "EXAMPLES",
        ];
        for option in options.iter().chain(&common) {
            assert!(help.contains(option), "{command} --help lacks {option}");
        }
    }
}

#[test]
fn version_prints_the_package_version() {
    for flag in ["--version", "-V"] {
        let (code, out, err) = run(bin(), &[flag], LIMIT);
        assert_eq!(code, Some(0), "{err}");
        let expected = format!("sparsebuf {}\n", env!("CARGO_PKG_VERSION"));
        assert_eq!(String::from_utf8(out).unwrap(), expected);
    }
}

/// Exit code and stderr of a command that must fail without serving.
fn fails(args: &[&str]) -> (Option<i32>, String) {
    let (code, out, err) = run(bin(), args, LIMIT);
    assert!(
        out.is_empty(),
        "nothing on stdout: {}",
        String::from_utf8_lossy(&out)
    );
    assert_eq!(err.lines().count(), 1, "one line on stderr: {err:?}");
    assert!(err.starts_with("sparsebuf: "), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    (code, err)
}

#[test]
fn bad_input_is_one_line_on_stderr_and_a_non_zero_exit() {
    let listen = ["--listen", "127.0.0.1:0"];
    let (code, err) = fails(&["serve", "/no/such/file", listen[0], listen[1]]);
    assert_eq!(code, Some(1));
    assert!(err.contains("cannot open /no/such/file"), "{err}");

    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("f");
    std::fs::write(&file, b"bytes").unwrap();
    let (code, err) = fails(&["serve", file.to_str().unwrap(), "--listen", &addr]);
    assert_eq!(code, Some(1));
    assert!(err.contains("cannot listen on"), "{err}");

    // Nothing listens on port 1 of loopback: refused at once, retried, then given up.
    let (code, err) = fails(&["serve", "http://127.0.0.1:1/x", listen[0], listen[1]]);
    assert_eq!(code, Some(1));
    assert!(err.contains("cannot open http://127.0.0.1:1/x"), "{err}");

    for args in [
        vec!["serve", "-", "--bogus", "--listen", "127.0.0.1:0"],
        vec!["serve", "-"],
        vec!["serve", "--listen", "127.0.0.1:0"],
        vec!["serve", "-", "--listen", "127.0.0.1:0", "--len", "12Q"],
        vec!["serve", "-", "--listen", "127.0.0.1:0", "--window"],
        vec!["serve", "a", "b", "--listen", "127.0.0.1:0"],
        vec!["play", "-"],
    ] {
        let (code, _) = fails(&args);
        assert_eq!(code, Some(2), "{args:?}");
    }
    let (code, err) = fails(&["serve", "-", "--listen", "nowhere"]);
    assert_eq!(code, Some(1), "{err}");
}

#[test]
fn a_file_is_served_with_its_length_at_once() {
    let model = data(700_000, 1);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("data.bin");
    std::fs::write(&file, &model).unwrap();
    let serving = Serving::start(file.to_str().unwrap(), Stdio::null(), &["--quiet"]);
    let got = curl(&serving.url, &["-H", "Range: bytes=-1000"]);
    assert_eq!(got.status, 206);
    assert_eq!(
        got.header("content-range"),
        Some("bytes 699000-699999/700000")
    );
    assert!(got.body == model[699_000..]);
    let got = curl(&serving.url, &[]);
    assert!(got.body == model);
    // --quiet: nothing on stderr, even after a progress tick would have come.
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(serving.stop(), "");
}

#[test]
fn a_pipe_is_served_to_random_ranges_and_reports_progress() {
    let model = data(5_000_000, 2);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("data.bin");
    std::fs::write(&file, &model).unwrap();
    let len = model.len().to_string();
    let serving = Serving::pipe(
        &file,
        &[
            "--len",
            &len,
            "--memory-budget",
            "1M",
            "--spill-dir",
            dir.path().to_str().unwrap(),
        ],
    );
    let mut rng = Rng(7);
    for _ in 0..20 {
        let start = rng.below(model.len() as u64) as usize;
        let end = (start + 1 + rng.below(300_000) as usize).min(model.len());
        let got = curl(
            &serving.url,
            &["-H", &format!("Range: bytes={start}-{}", end - 1)],
        );
        assert_eq!(got.status, 206);
        assert!(got.body == model[start..end], "{start}-{end}");
    }
    std::thread::sleep(Duration::from_millis(1200));
    let stderr = serving.stop();
    assert!(
        stderr.contains("pulled") && stderr.contains("served"),
        "{stderr}"
    );
}

#[test]
fn urls_are_served_by_ranges_or_forward() {
    let model = data(2_000_000, 3);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("data.bin");
    std::fs::write(&file, &model).unwrap();
    // An upstream that honours ranges: another sparsebuf serving the file.
    let upstream = Serving::start(file.to_str().unwrap(), Stdio::null(), &["--quiet"]);
    let proxy = Serving::start(&upstream.url, Stdio::null(), &["--quiet"]);
    let got = curl(&proxy.url, &["-H", "Range: bytes=-10"]);
    // The length came from the upstream's probe: a tail is answered at once.
    assert_eq!(got.status, 206);
    assert_eq!(
        got.header("content-range"),
        Some("bytes 1999990-1999999/2000000")
    );
    assert!(got.body == model[model.len() - 10..]);
    assert!(curl(&proxy.url, &[]).body == model);
    drop(proxy);

    // An upstream that ignores Range: Python's http.server, streamed forward.
    let python = std::process::Command::new("python3")
        .args(["-m", "http.server", "0", "--bind", "127.0.0.1"])
        .current_dir(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3");
    let mut python = KillOnDrop(python);
    let mut line = String::new();
    use std::io::BufRead;
    std::io::BufReader::new(python.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    // "Serving HTTP on 127.0.0.1 port 41234 (http://127.0.0.1:41234/) ..."
    let port = line
        .split("port ")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}/data.bin");
    let forward = Serving::start(&url, Stdio::null(), &["--quiet"]);
    let got = curl(&forward.url, &["-H", "Range: bytes=1000-1999"]);
    assert_eq!(got.status, 206);
    // Content-Length gave the length: the range's answer carries the total.
    assert_eq!(got.header("content-range"), Some("bytes 1000-1999/2000000"));
    assert!(got.body == model[1000..2000]);
    assert!(curl(&forward.url, &[]).body == model);
}

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
