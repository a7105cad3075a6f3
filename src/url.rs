//! URL sources (feature `http`): [`Builder::build_url`], a buffer over an `http(s)://` resource,
//! fetched by ranges when the server honours `Range`, else streamed forward.

use std::fmt;
use std::io::{self, Read};
use std::time::Duration;

use ureq::http::Response;
use ureq::{Agent, Body};

use crate::http_errors::{io_error, status_error};
use crate::retry::RetryPolicy;
use crate::source::RangeSource;
use crate::{Builder, StreamBuffer};

/// Connecting, and waiting for a response's head.
const CONNECT: Duration = Duration::from_secs(10);
const RESPONSE: Duration = Duration::from_secs(30);
/// The longest a body may stall between two reads.
const STALL: Duration = Duration::from_secs(30);

impl Builder {
    /// A buffer over the resource at `url` (`http://` or `https://`), with this builder's
    /// settings (feature `http`).
    ///
    /// One probe (`GET` with `Range: bytes=0-0`) decides how:
    /// - a `206` means the server honours ranges: the buffer is a range source (as
    ///   [`build_ranged`](Builder::build_ranged)) that fetches only what readers need, in
    ///   ranged `GET`s carrying `If-Range` with the probe's strong `ETag` (if any), so a resource
    ///   that changes under the buffer fails the read instead of mixing two versions. The
    ///   length comes from `Content-Range`.
    /// - a `200` means it ignores them: its body is the stream, read forward only (as
    ///   [`build`](Builder::build)); the length comes from `Content-Length` when given.
    ///
    /// Connection failures, timeouts, `408`, `429` and `5xx` are retried with exponential
    /// backoff (5 attempts from 100 ms; see [`RetryPolicy`]), for the probe and for each range
    /// fetch; then the read (or this call) fails with the cause, an [`HttpStatus`](crate::HttpStatus) inside for
    /// an HTTP error. Any other status fails at once. Timeouts: 10 s to connect, 30 s for a
    /// response to start, 30 s of silence within a body. Redirects are followed (up to 5).
    /// A length declared with [`len`](Builder::len) wins over the server's.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use sparsebuf::StreamBuffer;
    ///
    /// let buffer = StreamBuffer::builder().build_url("http://127.0.0.1:9000/media/film.mp4")?;
    /// let mut tail = [0u8; 1024];
    /// // A ranged upstream: only the last 1 KiB (well, its segment) is fetched.
    /// let len = buffer.len().expect("the server gave the length");
    /// buffer.read_exact_at(len - 1024, &mut tail)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// `InvalidInput` for a URL that is not `http(s)`; the probe's failure after its retries.
    pub fn build_url(self, url: &str) -> io::Result<StreamBuffer> {
        let lower = url.to_ascii_lowercase();
        if !(lower.starts_with("http://") || lower.starts_with("https://")) {
            let message = format!("{url:?} is not an http:// or https:// URL");
            return Err(crate::error::invalid_input(message));
        }
        let source = UrlSource::new(url);
        let probe = source.retry.run(|| source.probe())?;
        match probe {
            Probe::Ranged { len, etag } => self.build_ranged(UrlSource {
                len,
                etag,
                ..source
            }),
            Probe::Whole { len, body } => {
                let builder = match (self.declared_len(), len) {
                    (None, Some(len)) => self.len(len),
                    _ => self,
                };
                builder.build(body)
            }
        }
    }
}

/// What the probe found.
enum Probe {
    Ranged {
        len: Option<u64>,
        etag: Option<String>,
    },
    /// The server sent the whole body: read it forward.
    Whole {
        len: Option<u64>,
        body: Box<dyn Read + Send>,
    },
}

/// A resource fetched by ranged `GET`s.
struct UrlSource {
    agent: Agent,
    url: String,
    len: Option<u64>,
    etag: Option<String>,
    retry: RetryPolicy,
}

impl UrlSource {
    fn new(url: &str) -> UrlSource {
        let config = Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(CONNECT))
            .timeout_recv_response(Some(RESPONSE))
            .timeout_per_read(Some(STALL))
            .max_redirects(5)
            .build();
        UrlSource {
            agent: Agent::new_with_config(config),
            url: url.to_string(),
            len: None,
            etag: None,
            retry: RetryPolicy::default(),
        }
    }

    fn probe(&self) -> io::Result<Probe> {
        let response = self
            .agent
            .get(&self.url)
            .header("Range", "bytes=0-0")
            .call()
            .map_err(io_error)?;
        match response.status().as_u16() {
            206 => {
                let (_, total) = content_range(&response)?;
                let etag = header(&response, "etag").filter(|tag| !tag.starts_with("W/"));
                Ok(Probe::Ranged { len: total, etag })
            }
            200 => {
                let len = header(&response, "content-length").and_then(|v| v.parse().ok());
                let body = response.into_body().into_reader();
                Ok(Probe::Whole {
                    len,
                    body: Box::new(body),
                })
            }
            // An empty resource: no range of it is satisfiable.
            416 if content_range(&response).is_ok_and(|(_, total)| total == Some(0)) => {
                Ok(Probe::Ranged {
                    len: Some(0),
                    etag: None,
                })
            }
            _ => Err(status_error(response, &format!("GET {}", self.url))),
        }
    }

    /// One ranged fetch of `buf.len()` bytes at `offset`.
    fn fetch(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let last = offset + buf.len() as u64 - 1;
        let mut request = self
            .agent
            .get(&self.url)
            .header("Range", &format!("bytes={offset}-{last}"));
        if let Some(etag) = &self.etag {
            request = request.header("If-Range", etag);
        }
        let response = request.call().map_err(io_error)?;
        match response.status().as_u16() {
            206 => {
                let (start, _) = content_range(&response)?;
                if start != offset {
                    return Err(io::Error::other(format!(
                        "GET {}: asked for bytes from {offset}, got them from {start}",
                        self.url
                    )));
                }
                read_full(response.into_body().into_reader(), buf)
            }
            416 => Ok(0),
            200 => Err(io::Error::other(format!(
                "GET {}: the server answered a range with the whole resource (it changed, or \
                 stopped honouring Range)",
                self.url
            ))),
            _ => Err(status_error(response, &format!("GET {}", self.url))),
        }
    }
}

impl RangeSource for UrlSource {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() || self.len.is_some_and(|len| offset >= len) {
            return Ok(0);
        }
        self.retry.run(|| self.fetch(offset, buf))
    }

    fn len(&self) -> Option<u64> {
        self.len
    }
}

impl fmt::Debug for UrlSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UrlSource")
            .field("url", &self.url)
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

/// Reads until `buf` is full or the body ends; how many bytes.
fn read_full(mut body: impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match body.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

fn header(response: &Response<Body>, name: &str) -> Option<String> {
    let value = response.headers().get(name)?.to_str().ok()?;
    Some(value.trim().to_string())
}

/// `Content-Range: bytes a-b/total` (or `bytes */total`): `a` (0 for `*`) and the total
/// (`None` for `*`).
fn content_range(response: &Response<Body>) -> io::Result<(u64, Option<u64>)> {
    let bad = || io::Error::other("a 206 or 416 response without a valid Content-Range");
    let value = header(response, "content-range").ok_or_else(bad)?;
    let rest = value.strip_prefix("bytes ").ok_or_else(bad)?;
    let (range, total) = rest.split_once('/').ok_or_else(bad)?;
    let total = match total.trim() {
        "*" => None,
        total => Some(total.parse().map_err(|_| bad())?),
    };
    let start = match range.trim() {
        "*" => 0,
        range => {
            let (start, _) = range.split_once('-').ok_or_else(bad)?;
            start.trim().parse().map_err(|_| bad())?
        }
    };
    Ok((start, total))
}
