//! Real players against `sparsebuf serve -` fed through a pipe, and against `sparsebuf proxy` in
//! front of nginx: ffprobe/ffmpeg decoding and
//! seeking a moov-at-end MP4 (which ffmpeg cannot read from the pipe itself), and headless
//! Chromium seeking a `<video>` to 80%. The clients are Debian's `ffmpeg` and `chromium`;
//! `.ci/run` installs them, and a missing one fails the test with a message.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::command::{run, Serving};

const LIMIT: Duration = Duration::from_secs(120);

/// A 30 s, 640x360 H.264 + AAC MP4 of about 11 MB with its index (`moov`) at the end, as
/// ffmpeg writes it without `+faststart`.
fn moov_at_end(dir: &Path) -> PathBuf {
    let path = dir.join("moov_at_end.mp4");
    let path_text = path.to_str().unwrap();
    let (code, _, err) = run(
        "ffmpeg",
        &[
            "-v",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=640x360:rate=25",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=48000",
            "-t",
            "30",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-b:v",
            "3M",
            "-c:a",
            "aac",
            "-shortest",
            path_text,
        ],
        LIMIT,
    );
    assert_eq!(code, Some(0), "ffmpeg could not make the test video: {err}");
    let head = std::fs::read(&path).unwrap();
    let moov = head.windows(4).position(|w| w == b"moov").unwrap();
    let mdat = head.windows(4).position(|w| w == b"mdat").unwrap();
    assert!(moov > mdat, "the test needs the index after the media data");
    path
}

fn md5_of(input: &str, seek: Option<&str>) -> String {
    let mut args = vec!["-v", "error"];
    if let Some(at) = seek {
        args.extend(["-ss", at]);
    }
    args.extend(["-i", input]);
    if seek.is_some() {
        args.extend(["-t", "2"]);
    }
    args.extend(["-map", "0", "-f", "md5", "-"]);
    let (code, out, err) = run("ffmpeg", &args, LIMIT);
    assert_eq!(code, Some(0), "ffmpeg {args:?} failed: {err}");
    String::from_utf8(out).unwrap().trim().to_string()
}

#[test]
fn ffmpeg_decodes_and_seeks_a_moov_at_end_mp4_served_from_a_pipe() {
    let dir = tempfile::tempdir().unwrap();
    let file = moov_at_end(dir.path());
    let len = std::fs::metadata(&file).unwrap().len().to_string();
    let file_text = file.to_str().unwrap();

    // The reason for the command: from the pipe itself, ffmpeg cannot read this file.
    let piped = Command::new("sh")
        .args([
            "-c",
            &format!("cat '{file_text}' | ffmpeg -v error -i - -map 0 -f md5 -"),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(
        !piped.success(),
        "ffmpeg read a moov-at-end MP4 from a pipe after all"
    );

    let serving = Serving::pipe(&file, &["--len", &len, "--content-type", "video/mp4"]);
    let url = serving.url.clone();
    let (code, out, err) = run(
        "ffprobe",
        &[
            "-v",
            "error",
            "-show_entries",
            "format=duration",
            "-of",
            "csv=p=0",
            &url,
        ],
        LIMIT,
    );
    assert_eq!(code, Some(0), "ffprobe failed: {err}");
    let duration: f64 = String::from_utf8(out).unwrap().trim().parse().unwrap();
    assert!((duration - 30.0).abs() < 0.1, "{duration}");
    // Every decoded frame and sample, and a seek 20 s in, as from the file itself.
    assert_eq!(md5_of(&url, None), md5_of(file_text, None));
    assert_eq!(md5_of(&url, Some("20")), md5_of(file_text, Some("20")));
    let stderr = serving.stop();
    assert!(stderr.contains("pulled"), "progress on stderr: {stderr}");
}

/// A loopback server that records the query of every request it gets (the page's reports).
fn report_server() -> (u16, mpsc::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(&stream);
            let mut line = String::new();
            if reader.read_line(&mut line).is_err() {
                continue;
            }
            if let Some(query) = line
                .split_whitespace()
                .nth(1)
                .and_then(|p| p.split_once('?'))
            {
                if tx.send(query.1.to_string()).is_err() {
                    return;
                }
            }
            let mut stream = &stream;
            let _ = stream.write_all(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n");
        }
    });
    (port, rx)
}

fn value(report: &str, key: &str) -> Option<f64> {
    report
        .split('&')
        .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
        .and_then(|v| v.parse().ok())
}

#[test]
fn chromium_seeks_a_video_served_from_a_pipe_to_80_percent_and_plays_on() {
    let dir = tempfile::tempdir().unwrap();
    let file = moov_at_end(dir.path());
    let len = std::fs::metadata(&file).unwrap().len().to_string();
    let serving = Serving::pipe(&file, &["--len", &len, "--content-type", "video/mp4"]);
    chromium_seeks_to_80_percent(dir.path(), &serving.url);
    drop(serving);
}

/// nginx serves the moov-at-end MP4; `sparsebuf proxy` is in front of it.
fn proxied(dir: &Path) -> (common::nginx::Nginx, Serving, PathBuf) {
    let root = dir.join("origin");
    std::fs::create_dir(&root).unwrap();
    let file = moov_at_end(&root);
    let nginx = common::nginx::Nginx::start(&root, "types { video/mp4 mp4; }");
    let proxy = Serving::with_args(&["proxy", &nginx.url(""), "--listen", "127.0.0.1:0"]);
    (nginx, proxy, file)
}

#[test]
fn ffmpeg_decodes_and_seeks_a_moov_at_end_mp4_through_the_proxy() {
    let dir = tempfile::tempdir().unwrap();
    let (nginx, proxy, file) = proxied(dir.path());
    let name = file.file_name().unwrap().to_str().unwrap();
    let url = format!("{}{name}", proxy.url);
    let file_text = file.to_str().unwrap();
    assert_eq!(md5_of(&url, None), md5_of(file_text, None));
    assert_eq!(md5_of(&url, Some("20")), md5_of(file_text, Some("20")));
    // Fetched once from the origin, however often ffmpeg seeks.
    let len = std::fs::metadata(&file).unwrap().len();
    let sent: u64 = nginx
        .requests()
        .iter()
        .filter_map(|line| line.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    assert!(sent <= len * 102 / 100, "{sent} bytes fetched for {len}");
    drop(proxy);
}

#[test]
fn chromium_seeks_a_video_through_the_proxy_to_80_percent_and_plays_on() {
    let dir = tempfile::tempdir().unwrap();
    let (_nginx, proxy, file) = proxied(dir.path());
    let name = file.file_name().unwrap().to_str().unwrap();
    let url = format!("{}{name}", proxy.url);
    let got = common::curl::curl(&url, &["-I"]);
    assert_eq!(got.header("content-type"), Some("video/mp4"));
    chromium_seeks_to_80_percent(dir.path(), &url);
    drop(proxy);
}

/// Headless Chromium plays `url` in a `<video>`, seeks it to 80% and plays on; the page
/// reports its events to a loopback server.
fn chromium_seeks_to_80_percent(dir: &Path, url: &str) {
    let (port, reports) = report_server();
    let html = format!(
        r#"<!doctype html><video id=v src="{url}" muted preload=auto></video>
<script>
const v = document.getElementById('v');
function report(s) {{ new Image().src = 'http://127.0.0.1:{port}/r?' + s + '&t=' + Date.now(); }}
v.addEventListener('loadedmetadata', () => {{ v.currentTime = v.duration * 0.8; }});
v.addEventListener('seeked', () => {{
  report('seeked=' + v.currentTime + '&duration=' + v.duration);
  v.play().catch(e => report('playerror=1'));
}});
v.addEventListener('timeupdate', () => {{
  if (v.currentTime > v.duration * 0.8 + 0.5) report('playing=' + v.currentTime);
}});
v.addEventListener('error', () => report('error=' + (v.error && v.error.code)));
</script>"#
    );
    let page = dir.join("page.html");
    std::fs::write(&page, html).unwrap();
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "chromium".into());
    let mut browser = Command::new(&chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--autoplay-policy=no-user-gesture-required",
            "--no-first-run",
        ])
        .arg(format!("--user-data-dir={}", dir.join("profile").display()))
        .arg(format!("file://{}", page.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("{chromium} must be installed (apt-get install -y chromium): {e}")
        });
    let deadline = Instant::now() + LIMIT;
    let (mut seeked, mut playing) = (None, None);
    while playing.is_none() && Instant::now() < deadline {
        let Ok(report) = reports.recv_timeout(Duration::from_millis(500)) else {
            continue;
        };
        assert!(
            !report.starts_with("error") && !report.starts_with("playerror"),
            "{report}"
        );
        if let Some(at) = value(&report, "seeked") {
            let duration = value(&report, "duration").unwrap();
            seeked = Some((at, duration));
        }
        if seeked.is_some() {
            playing = value(&report, "playing").or(playing);
        }
    }
    let _ = browser.kill();
    let _ = browser.wait();
    let (at, duration) = seeked.expect("Chromium reported no `seeked` event");
    assert!((duration - 30.0).abs() < 0.1, "duration {duration}");
    assert!((at - 24.0).abs() < 0.5, "seeked to {at}, not 80%");
    let playing = playing.expect("Chromium did not play on after the seek");
    assert!(playing > at, "{playing} after {at}");
}
