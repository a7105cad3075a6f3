//! URL sources (feature `http`): [`Builder::build_url`], a buffer over an `http(s)://` resource,
//! fetched by ranges when the server honours `Range`, else streamed forward.

use std::fmt;
use std::io::{self, Read};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use ureq::http::Response;
use ureq::{Agent, Body, BodyReader};

use crate::buffer::StreamBuffer;
use crate::builder::Builder;
use crate::cache::Cache;
use crate::fanout::retry::RetryPolicy;
use crate::net::http_errors::{io_error, status_error};
use crate::source::RangeSource;
use crate::validators::Validators;

/// Connecting, and waiting for a response's head.
const CONNECT: Duration = Duration::from_secs(10);
const RESPONSE: Duration = Duration::from_secs(30);
/// The longest a body may stall between two reads.
const STALL: Duration = Duration::from_secs(30);

impl Cache {
    /// The buffer of the resource at `url` (feature `client`), keyed by the URL: built with
    /// [`Builder::build_url`] on the first open (a ranged source if the server serves ranges,
    /// else one forward read), shared by the opens that follow, and by concurrent ones, which
    /// wait for the first (single flight; see [`Cache::open_stream`]).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let cache = sparsebuf::Cache::builder().memory_budget(256 << 20).build()?;
    /// let film = cache.open_url("http://127.0.0.1:9000/media/film.mp4")?;
    /// let again = cache.open_url("http://127.0.0.1:9000/media/film.mp4")?; // no new probe
    /// assert_eq!(film.len(), again.len());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As for [`Builder::build_url`]; a waiting open gets an error of the same kind and
    /// message.
    #[cfg_attr(docsrs, doc(cfg(feature = "client")))]
    pub fn open_url(&self, url: &str) -> io::Result<StreamBuffer> {
        self.open_with(url, |builder| builder.build_url(url))
    }
}

impl Builder {
    /// A buffer over the resource at `url` (`http://` or `https://`), with this builder's
    /// settings (feature `http`).
    ///
    /// One probe (`GET` with `Range: bytes=0-0`) decides how:
    /// - a `206` with a validator (an `ETag` or a `Last-Modified`) means the server honours
    ///   ranges: the buffer is a range source (as [`build_ranged`](Builder::build_ranged)) that
    ///   fetches only what readers need. The length comes from `Content-Range`.
    /// - a `200` means it ignores them: its body is the stream, read forward only (as
    ///   [`build`](Builder::build)); the length comes from `Content-Length` when given.
    /// - a `206` with no validator at all is read forward only too, from one plain `GET`:
    ///   without a validator nothing can tell whether two ranges come from the same version of
    ///   the resource, and a buffer must never hold bytes of two versions.
    ///
    /// **Never two versions.** The probe's validators (its `ETag`, strong or weak, its
    /// `Last-Modified` and the total length) pin the version the buffer holds. Every ranged
    /// fetch carries `If-Range` with the strong `ETag` (else with `Last-Modified`), and every
    /// `206` must carry the same validators and the same total; a `200` to a ranged fetch, a
    /// `416` inside the pinned length, or a `206` that differs means the resource changed: that
    /// read, and every later one that needs a fetch, fails with an error of kind
    /// [`InvalidData`](io::ErrorKind::InvalidData) ("the upstream resource changed: ..."), and
    /// none of the response's bytes is stored. The bytes already in the buffer stay readable.
    /// [`StreamBuffer::validators`] gives the pinned `ETag` and `Last-Modified`.
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
    #[cfg_attr(docsrs, doc(cfg(feature = "client")))]
    pub fn build_url(self, url: &str) -> io::Result<StreamBuffer> {
        let lower = url.to_ascii_lowercase();
        if !(lower.starts_with("http://") || lower.starts_with("https://")) {
            let message = format!("{url:?} is not an http:// or https:// URL");
            return Err(crate::error::invalid_input(message));
        }
        let source = UrlSource::new(url);
        let probe = source.retry.run(|| source.probe())?;
        match probe {
            Probe::Ranged(pinned) if !pinned.is_empty() || pinned.len == Some(0) => self
                .with_stale(source.changed.clone())
                .build_ranged(UrlSource { pinned, ..source }),
            // No validator: one plain GET, read forward.
            Probe::Ranged(_) => match source.retry.run(|| source.get_whole())? {
                Probe::Whole { len, body, pinned } => self.build_whole(len, body, pinned),
                Probe::Ranged(_) => Err(io::Error::other(format!(
                    "GET {url}: a request without Range was answered with a range"
                ))),
            },
            Probe::Whole { len, body, pinned } => self.build_whole(len, body, pinned),
        }
    }

    /// [`build_url`](Builder::build_url) for async code (features `client` and `tokio`): the
    /// probe runs on tokio's blocking pool, so no runtime thread waits for the upstream (a
    /// task on a current-thread runtime keeps running while it answers).
    ///
    /// The buffer it gives is the same: read it from tasks with
    /// [`StreamBuffer::async_reader`] or [`read_at_async`](StreamBuffer::read_at_async), which
    /// never block their thread either.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use sparsebuf::StreamBuffer;
    /// use tokio::io::{AsyncReadExt, AsyncSeekExt};
    ///
    /// # async fn run() -> std::io::Result<()> {
    /// let buffer = StreamBuffer::builder()
    ///     .build_url_async("http://127.0.0.1:9000/media/film.mp4")
    ///     .await?;
    /// let mut cursor = buffer.async_reader();
    /// cursor.seek(std::io::SeekFrom::End(-1024)).await?;
    /// let mut tail = Vec::new();
    /// cursor.read_to_end(&mut tail).await?;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`build_url`](Builder::build_url); `Other` if the blocking pool is gone (the runtime
    /// shuts down).
    #[cfg(feature = "tokio")]
    #[cfg_attr(docsrs, doc(cfg(all(feature = "client", feature = "tokio"))))]
    pub async fn build_url_async(self, url: &str) -> io::Result<StreamBuffer> {
        let url = url.to_string();
        match tokio::task::spawn_blocking(move || self.build_url(&url)).await {
            Ok(built) => built,
            Err(error) => Err(io::Error::other(format!(
                "the blocking task that probes the URL did not finish: {error}"
            ))),
        }
    }

    /// A forward-only buffer over a response's body.
    fn build_whole(
        self,
        len: Option<u64>,
        body: Box<dyn Read + Send>,
        pinned: Pinned,
    ) -> io::Result<StreamBuffer> {
        let builder = match (self.declared_len(), len) {
            (None, Some(len)) => self.len(len),
            _ => self,
        };
        builder
            .with_validators(pinned.validators())
            .with_content_type(pinned.content_type)
            .build(body)
    }
}

/// What the probe found.
enum Probe {
    /// The server honours ranges; these validators pin the version.
    Ranged(Pinned),
    /// The server sent the whole body: read it forward.
    Whole {
        len: Option<u64>,
        body: Box<dyn Read + Send>,
        pinned: Pinned,
    },
}

/// The version of the resource a buffer holds: the validators of the first response, which
/// every later response must repeat.
#[derive(Debug, Clone, Default)]
struct Pinned {
    /// The `ETag` as sent (strong, or weak with its `W/`).
    etag: Option<String>,
    /// The `Last-Modified` as sent.
    last_modified: Option<String>,
    /// The total length, from `Content-Range` (`None`: `*`).
    len: Option<u64>,
    /// The `Content-Type` of the first response (not compared later: it is not a validator).
    content_type: Option<String>,
}

impl Pinned {
    fn of(response: &Response<Body>, len: Option<u64>) -> Pinned {
        Pinned {
            etag: header(response, "etag"),
            last_modified: header(response, "last-modified"),
            len,
            content_type: header(response, "content-type"),
        }
    }

    /// Whether there is no validator to pin a version by.
    fn is_empty(&self) -> bool {
        self.etag.is_none() && self.last_modified.is_none()
    }

    /// The `If-Range` of a ranged fetch: the strong tag, else the date (a weak tag cannot be
    /// used there).
    fn if_range(&self) -> Option<&str> {
        self.etag
            .as_deref()
            .filter(|tag| !tag.starts_with("W/"))
            .or(self.last_modified.as_deref())
    }

    fn validators(&self) -> Validators {
        Validators {
            etag: self.etag.clone(),
            last_modified: self
                .last_modified
                .as_deref()
                .and_then(|date| httpdate::parse_http_date(date).ok()),
        }
    }

    /// What in `response` (a `206`) differs from the pinned version, if anything.
    fn differs(&self, response: &Response<Body>, total: Option<u64>) -> Option<String> {
        if let (Some(pinned), got) = (&self.len, total) {
            if got != Some(*pinned) {
                let got = got.map_or("*".to_string(), |t| t.to_string());
                return Some(format!("its length was {pinned}, a range now says {got}"));
            }
        }
        let same = |name: &str, shown: &str, pinned: &Option<String>| match pinned {
            Some(pinned) => {
                let got = header(response, name);
                (got.as_deref() != Some(pinned.as_str())).then(|| {
                    let got = got.as_deref().unwrap_or("none");
                    format!("its {shown} was {pinned}, a range now carries {got}")
                })
            }
            None => None,
        };
        same("etag", "ETag", &self.etag)
            .or_else(|| same("last-modified", "Last-Modified", &self.last_modified))
    }
}

/// A resource fetched by ranged `GET`s. Clones share the "changed" verdict and the retry count
/// (a stream holds one, to open its response again after a transient failure).
#[derive(Clone)]
struct UrlSource {
    agent: Agent,
    url: String,
    pinned: Pinned,
    retry: RetryPolicy,
    /// Set once a response showed that the resource changed: every later fetch fails with it.
    changed: Arc<OnceLock<String>>,
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
            pinned: Pinned::default(),
            retry: RetryPolicy::default(),
            changed: Arc::new(OnceLock::new()),
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
                Ok(Probe::Ranged(Pinned::of(&response, total)))
            }
            200 => Ok(Self::whole(response)),
            // An empty resource: no range of it is satisfiable.
            416 if content_range(&response).is_ok_and(|(_, total)| total == Some(0)) => {
                Ok(Probe::Ranged(Pinned::of(&response, Some(0))))
            }
            _ => Err(status_error(response, &format!("GET {}", self.url))),
        }
    }

    /// A plain `GET` of the whole resource, to be read forward.
    fn get_whole(&self) -> io::Result<Probe> {
        let response = self.agent.get(&self.url).call().map_err(io_error)?;
        match response.status().as_u16() {
            200 => Ok(Self::whole(response)),
            206 => Ok(Probe::Ranged(Pinned::default())),
            _ => Err(status_error(response, &format!("GET {}", self.url))),
        }
    }

    fn whole(response: Response<Body>) -> Probe {
        let len = header(&response, "content-length").and_then(|v| v.parse().ok());
        let pinned = Pinned::of(&response, len);
        Probe::Whole {
            len,
            body: Box::new(response.into_body().into_reader()),
            pinned,
        }
    }

    /// The resource changed under the buffer: this fetch and every later one fail.
    fn changed(&self, what: String) -> io::Error {
        // Logged by the fetch that meets it, as any failed fetch.
        changed_error(&self.url, self.changed.get_or_init(|| what))
    }

    /// One ranged fetch of `buf.len()` bytes at `offset`.
    fn fetch(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let last = offset + buf.len() as u64 - 1;
        match self.request(offset, Some(last))? {
            Some(body) => read_full(body, buf),
            None => Ok(0),
        }
    }

    /// One ranged `GET` of the bytes `[offset, last]` (`None`: to the end), checked against
    /// the pinned version: its body, or `None` if `offset` is past the end.
    fn request(&self, offset: u64, last: Option<u64>) -> io::Result<Option<BodyReader<'static>>> {
        if let Some(what) = self.changed.get() {
            return Err(changed_error(&self.url, what));
        }
        let range = match last {
            Some(last) => format!("bytes={offset}-{last}"),
            None => format!("bytes={offset}-"),
        };
        let mut request = self.agent.get(&self.url).header("Range", &range);
        if let Some(validator) = self.pinned.if_range() {
            request = request.header("If-Range", validator);
        }
        let response = request.call().map_err(io_error)?;
        match response.status().as_u16() {
            206 => {
                let (start, total) = content_range(&response)?;
                if let Some(what) = self.pinned.differs(&response, total) {
                    return Err(self.changed(what));
                }
                if start != offset {
                    return Err(io::Error::other(format!(
                        "GET {}: asked for bytes from {offset}, got them from {start}",
                        self.url
                    )));
                }
                Ok(Some(response.into_body().into_reader()))
            }
            416 if self.pinned.len.is_some_and(|len| offset < len) => Err(self.changed(format!(
                "a range inside its length was answered 416 ({range})"
            ))),
            416 => Ok(None),
            200 => Err(self.changed(
                "a range was answered with the whole resource (200): the If-Range validator no \
                 longer matches, or the server stopped honouring Range"
                    .into(),
            )),
            _ => Err(status_error(response, &format!("GET {}", self.url))),
        }
    }
}

/// The error of a fetch from a resource that changed.
fn changed_error(url: &str, what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("the upstream resource changed: GET {url}: {what}"),
    )
}

impl RangeSource for UrlSource {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() || self.pinned.len.is_some_and(|len| offset >= len) {
            return Ok(0);
        }
        self.retry.run(|| self.fetch(offset, buf))
    }

    /// One ranged `GET`, read as it arrives. The response is opened when first read (so
    /// opening costs no round trip of its own); a transient failure in the middle of it opens
    /// another from where it stopped (with its retries), and every response is checked against
    /// the pinned version.
    fn open_at(&self, offset: u64, len: Option<u64>) -> io::Result<Option<Box<dyn Read + Send>>> {
        let end = match (len, self.pinned.len) {
            (Some(len), Some(total)) => Some(offset.saturating_add(len).min(total)),
            (Some(len), None) => Some(offset.saturating_add(len)),
            (None, total) => total,
        };
        let mut stream = UrlStream {
            source: self.clone(),
            pos: offset,
            end,
            body: None,
        };
        // The head now, so that a fetch that opens a stream meets a refusal at once.
        stream.open()?;
        Ok(Some(Box::new(stream)))
    }

    fn len(&self) -> Option<u64> {
        self.pinned.len
    }

    fn validators(&self) -> Validators {
        self.pinned.validators()
    }

    fn content_type(&self) -> Option<String> {
        self.pinned.content_type.clone()
    }
}

impl fmt::Debug for UrlSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UrlSource")
            .field("url", &self.url)
            .field("pinned", &self.pinned)
            .finish_non_exhaustive()
    }
}

/// A response read as it arrives: the bytes `[pos, end)` of the resource (`end`: `None` for
/// "to its end").
struct UrlStream {
    source: UrlSource,
    pos: u64,
    end: Option<u64>,
    /// The response being read; `None` before the first read and after a failure.
    body: Option<BodyReader<'static>>,
}

impl UrlStream {
    /// Opens the response for `[pos, end)` if none is open, with the source's retries. `false`:
    /// nothing is left to read.
    fn open(&mut self) -> io::Result<bool> {
        if self.body.is_some() {
            return Ok(true);
        }
        if self.end.is_some_and(|end| self.pos >= end) {
            return Ok(false);
        }
        let last = self.end.map(|end| end - 1);
        let source = &self.source;
        let pos = self.pos;
        self.body = source.retry.run(|| source.request(pos, last))?;
        Ok(self.body.is_some())
    }
}

impl Read for UrlStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let retry = self.source.retry.clone();
        retry.run(|| {
            if !self.open()? {
                return Ok(0);
            }
            let body = self.body.as_mut().expect("opened");
            match body.read(buf) {
                Ok(n) => {
                    self.pos += n as u64;
                    Ok(n)
                }
                Err(error) => {
                    // The next attempt opens a response from where this one stopped.
                    self.body = None;
                    Err(error)
                }
            }
        })
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
