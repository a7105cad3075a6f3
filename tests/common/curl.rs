//! curl as the independent HTTP client of the serving tests: status, headers and exact body.

use std::collections::HashMap;
use std::process::Command;

/// One response as curl saw it.
#[derive(Debug)]
pub struct Got {
    pub status: u16,
    /// Lower-case names; the last value of a repeated header.
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
}

impl Got {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

/// Runs `curl -s` with `args` on `url`; panics (with curl's stderr) if curl itself fails.
pub fn curl(url: &str, args: &[&str]) -> Got {
    let dir = tempfile::tempdir().unwrap();
    let (head, body) = (dir.path().join("head"), dir.path().join("body"));
    let out = Command::new("curl")
        .args(["-s", "-S", "--max-time", "60", "-D"])
        .arg(&head)
        .arg("-o")
        .arg(&body)
        .args(args)
        .arg(url)
        .output()
        .expect("curl must be installed (apt-get install curl)");
    assert!(
        out.status.success(),
        "curl {args:?} {url} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let head = std::fs::read_to_string(&head).unwrap();
    // After redirects or a 100 Continue, the last response's head counts.
    let last = head
        .trim_end()
        .rsplit("\r\n\r\n")
        .next()
        .unwrap_or_default();
    let mut lines = last.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let body = std::fs::read(&body).unwrap_or_default();
    Got {
        status,
        headers,
        body,
    }
}

/// The parts of a `multipart/byteranges` body: each part's `Content-Range` and bytes.
pub fn multipart(got: &Got) -> Vec<(String, Vec<u8>)> {
    let kind = got.header("content-type").expect("a content type");
    let boundary = kind
        .split("boundary=")
        .nth(1)
        .expect("multipart/byteranges with a boundary");
    let delimiter = format!("--{boundary}");
    let body = &got.body;
    let mut parts = Vec::new();
    let mut at = find(body, delimiter.as_bytes(), 0).expect("a first boundary");
    loop {
        at += delimiter.len();
        if body[at..].starts_with(b"--") {
            return parts;
        }
        let head_end = find(body, b"\r\n\r\n", at).expect("part headers") + 4;
        let head = String::from_utf8_lossy(&body[at..head_end]).to_string();
        let range = head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Range: "))
            .expect("a Content-Range per part")
            .to_string();
        let next = find(body, format!("\r\n{delimiter}").as_bytes(), head_end).expect("next");
        parts.push((range, body[head_end..next].to_vec()));
        at = next + 2;
    }
}

fn find(haystack: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    haystack[from..]
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| p + from)
}
