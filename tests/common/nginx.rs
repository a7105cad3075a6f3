//! nginx as a real upstream on loopback: serves a directory with a generated configuration
//! (`.ci/run` installs nginx when it is missing; a missing nginx fails the test with a message).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running nginx, stopped when dropped.
pub struct Nginx {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Nginx {
    /// nginx serving `root` on a free loopback port, with `extra` directives in its `server`
    /// block (`etag off;`, say).
    pub fn start(root: &Path, extra: &str) -> Nginx {
        let dir = tempfile::tempdir().unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let conf = dir.path().join("nginx.conf");
        let d = dir.path().display();
        std::fs::write(
            &conf,
            format!(
                "daemon off;\nmaster_process off;\nworker_processes 1;\npid {d}/nginx.pid;\n\
                 error_log {d}/error.log;\nevents {{ worker_connections 256; }}\n\
                 http {{\n  log_format ranges '$request_method $http_range $status $body_bytes_sent';\n\
                 access_log {d}/access.log ranges;\n  client_body_temp_path {d}/body;\n\
                 proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fastcgi;\n\
                 uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
                 server {{\n    listen 127.0.0.1:{port};\n    root {};\n    {extra}\n  }}\n}}\n",
                root.display()
            ),
        )
        .unwrap();
        let binary = nginx_binary();
        let child = Command::new(&binary)
            .arg("-c")
            .arg(&conf)
            .arg("-p")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("nginx must be installed (apt-get install -y nginx): {binary:?}: {e}")
            });
        let nginx = Nginx {
            child,
            port,
            _dir: dir,
        };
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "nginx did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        nginx
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}/{path}", self.port)
    }

    /// The requests answered so far (those whose response ended), one line each: method,
    /// `Range`, status, body bytes sent.
    pub fn requests(&self) -> Vec<String> {
        let log = self._dir.path().join("access.log");
        let text = std::fs::read_to_string(log).unwrap_or_default();
        text.lines().map(str::to_string).collect()
    }
}

/// nginx from the PATH, or Debian's `/usr/sbin/nginx` (not on a normal user's PATH).
fn nginx_binary() -> PathBuf {
    for dir in std::env::var("PATH").unwrap_or_default().split(':') {
        let candidate = Path::new(dir).join("nginx");
        if candidate.exists() {
            return candidate;
        }
    }
    PathBuf::from("/usr/sbin/nginx")
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
