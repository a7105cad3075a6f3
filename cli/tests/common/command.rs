//! The `sparsebuf` command started by the tests, and what they need around it: a pipe into its
//! stdin, its first line (the URL), and a kill on drop.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, ChildStderr, Command, Stdio};
use std::time::{Duration, Instant};

/// The command's path (built by cargo for the integration tests).
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_sparsebuf")
}

/// A running `sparsebuf serve`, killed (with the process feeding its pipe) when dropped.
pub struct Serving {
    pub url: String,
    child: Child,
    feeder: Option<Child>,
    stderr: Option<ChildStderr>,
}

impl Serving {
    /// `cat file | sparsebuf serve - --listen 127.0.0.1:0 <args>`: a real pipe.
    pub fn pipe(file: &Path, args: &[&str]) -> Serving {
        let mut feeder = Command::new("cat")
            .arg(file)
            .stdout(Stdio::piped())
            .spawn()
            .expect("cat");
        let stdin = Stdio::from(feeder.stdout.take().unwrap());
        let mut serving = Serving::start("-", stdin, args);
        serving.feeder = Some(feeder);
        serving
    }

    /// `sparsebuf serve INPUT --listen 127.0.0.1:0 <args>`, with `stdin`.
    pub fn start(input: &str, stdin: Stdio, args: &[&str]) -> Serving {
        let mut command = Command::new(bin());
        command.args(["serve", input, "--listen", "127.0.0.1:0"]);
        command.args(args).stdin(stdin);
        Serving::spawn(command)
    }

    /// The same under `ulimit -n <nofile>` (through `sh`).
    pub fn start_limited(nofile: u32, input: &str, stdin: Stdio, args: &[&str]) -> Serving {
        let mut command = Command::new("sh");
        let script = format!("ulimit -n {nofile} && exec \"$0\" \"$@\"");
        command.args([
            "-c",
            &script,
            bin(),
            "serve",
            input,
            "--listen",
            "127.0.0.1:0",
        ]);
        command.args(args).stdin(stdin);
        Serving::spawn(command)
    }

    /// Starts `command` (a `sparsebuf serve`) and reads its first line.
    pub fn spawn(mut command: Command) -> Serving {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the sparsebuf command");
        let mut first = String::new();
        let stdout = child.stdout.take().unwrap();
        BufReader::new(stdout).read_line(&mut first).unwrap();
        let url = first
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| {
                let mut err = String::new();
                let _ = child.stderr.take().unwrap().read_to_string(&mut err);
                panic!("unexpected first line {first:?}; stderr: {err}")
            })
            .to_string();
        assert!(
            url.starts_with("http://127.0.0.1:") && url.ends_with('/'),
            "{url}"
        );
        let stderr = child.stderr.take();
        Serving {
            url,
            child,
            feeder: None,
            stderr,
        }
    }

    /// `sparsebuf <args>` (a `serve` or a `proxy`, with its `--listen`).
    pub fn with_args(args: &[&str]) -> Serving {
        let mut command = Command::new(bin());
        command.args(args).stdin(Stdio::null());
        Serving::spawn(command)
    }

    /// The command's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` (`TERM`, `INT`) and waits up to `limit` for the command to exit; its exit
    /// code (`None` if it did not exit in time: it is killed then) and its stderr.
    pub fn signal_and_wait(mut self, signal: &str, limit: Duration) -> (Option<i32>, String) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.pid().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
        let start = Instant::now();
        let code = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status.code();
            }
            if start.elapsed() > limit {
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let err = self.stop();
        (code, err)
    }

    /// Stops the command and returns what it wrote on stderr.
    pub fn stop(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let mut err = String::new();
        if let Some(mut stderr) = self.stderr.take() {
            let _ = stderr.read_to_string(&mut err);
        }
        err
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(feeder) = &mut self.feeder {
            let _ = feeder.kill();
            let _ = feeder.wait();
        }
    }
}

/// Runs `program` with `args` and returns (exit code, stdout, stderr), failing if it is missing
/// (with a message saying how to install it) or runs longer than `limit`.
pub fn run(program: &str, args: &[&str], limit: Duration) -> (Option<i32>, Vec<u8>, String) {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("{program} must be installed (apt-get install -y {program}): {e}")
        });
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = stdout.read_to_end(&mut v);
        v
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{program} {args:?} ran longer than {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (status.code(), out.join().unwrap(), err.join().unwrap())
}
