//! A real S3 API for the tests: `moto_server` (PyPI `moto[server]`) on a free loopback port,
//! started per test and killed when dropped, and `curl` as the independent client that checks
//! what landed in it. A missing `moto_server` fails the test with a message.

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sparsebuf::object_store::aws::AmazonS3Builder;
use sparsebuf::object_store::ObjectStore;

pub struct Moto {
    child: Child,
    pub endpoint: String,
}

impl Moto {
    pub fn start() -> Moto {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free loopback port")
            .port();
        let child = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("moto_server is needed for the object-store tests: pip install 'moto[server]'");
        let moto = Moto {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "moto_server did not start within 60 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        moto
    }

    /// A store for `bucket` (which need not exist), talking to this server.
    pub fn store(&self, bucket: &str) -> Arc<dyn ObjectStore> {
        Moto::store_at(&self.endpoint, bucket)
    }

    /// A store for `bucket` at `endpoint` (a moto_server, or a proxy in front of one).
    pub fn store_at(endpoint: &str, bucket: &str) -> Arc<dyn ObjectStore> {
        Arc::new(
            AmazonS3Builder::new()
                .with_endpoint(endpoint)
                .with_bucket_name(bucket)
                .with_region("us-east-1")
                .with_access_key_id("test")
                .with_secret_access_key("test")
                .with_allow_http(true)
                .build()
                .expect("an S3 store for moto"),
        )
    }

    /// Creates `bucket` with curl.
    pub fn create_bucket(&self, bucket: &str) {
        let code = self.curl(&[
            "-X",
            "PUT",
            "--data-binary",
            "",
            &format!("{}/{bucket}", self.endpoint),
        ]);
        assert!(
            String::from_utf8_lossy(&code).is_empty(),
            "{}",
            String::from_utf8_lossy(&code)
        );
    }

    /// The object's bytes as curl gets them; `None` if there is no such object.
    pub fn get(&self, bucket: &str, key: &str) -> Option<Vec<u8>> {
        let url = format!("{}/{bucket}/{key}", self.endpoint);
        // Signed (moto answers an unsigned GET of an empty object with 403).
        let out = Command::new("curl")
            .args([
                "-s",
                "-f",
                "--aws-sigv4",
                "aws:amz:us-east-1:s3",
                "--user",
                "test:test",
                &url,
            ])
            .output()
            .expect("curl");
        out.status.success().then_some(out.stdout)
    }

    /// Multipart uploads still pending in `bucket`, as the S3 API lists them.
    pub fn pending_uploads(&self, bucket: &str) -> usize {
        let body = self.curl(&[&format!("{}/{bucket}?uploads", self.endpoint)]);
        let text = String::from_utf8_lossy(&body);
        assert!(text.contains("ListMultipartUploadsResult"), "{text}");
        text.matches("<Upload>").count()
    }

    /// `curl -s args`: its body. A transport failure (moto's Python server dropping a
    /// connection on a loaded machine) is tried again, twice; an HTTP error status is not one.
    fn curl(&self, args: &[&str]) -> Vec<u8> {
        let mut tries = 0;
        loop {
            let out = Command::new("curl")
                .args(["-s", "--max-time", "30"])
                .args(args)
                .output()
                .expect("curl");
            if out.status.success() {
                return out.stdout;
            }
            tries += 1;
            assert!(tries < 3, "curl {args:?} failed: {:?}", out.status.code());
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
