//! The recording HTTP server of the sink tests (`tests/servers/recording_http.py`): a real
//! server on a loopback port, started per test and killed when dropped.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

pub struct Recording {
    child: Child,
    pub url: String,
}

/// One request as the server saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub method: String,
    pub range: String,
    pub len: usize,
    pub status: u16,
    pub auth: String,
}

impl Recording {
    /// Starts the server with `args` (see the script).
    pub fn start(args: &[&str]) -> Recording {
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/servers/recording_http.py"
        );
        let mut child = Command::new("python3")
            .arg(script)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 runs the test server");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("its stdout"))
            .read_line(&mut line)
            .expect("the server's port");
        let port = line
            .trim()
            .strip_prefix("PORT ")
            .expect("PORT <n>")
            .to_string();
        Recording {
            child,
            url: format!("http://127.0.0.1:{port}"),
        }
    }

    /// Every request so far.
    pub fn log(&self) -> Vec<Request> {
        let text = String::from_utf8(self.get("/log")).unwrap();
        text.lines()
            .filter(|l| !l.is_empty())
            .map(|l| {
                let f: Vec<&str> = l.split('\t').collect();
                Request {
                    method: f[1].to_string(),
                    range: f[2].to_string(),
                    len: f[3].parse().unwrap(),
                    status: f[4].parse().unwrap_or(0),
                    auth: f[5].to_string(),
                }
            })
            .collect()
    }

    /// The bodies it accepted, in order.
    pub fn data(&self) -> Vec<u8> {
        self.get("/data")
    }

    fn get(&self, path: &str) -> Vec<u8> {
        let out = Command::new("curl")
            .args(["-s", "-f", &format!("{}{path}", self.url)])
            .output()
            .expect("curl");
        assert!(out.status.success());
        out.stdout
    }
}

impl Drop for Recording {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
