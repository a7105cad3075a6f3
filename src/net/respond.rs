//! The answer to one `GET` or `HEAD` of one resource (a buffer with its media type and
//! validators): preconditions, ranges, prebuffering, and the head sent only with the first
//! bytes.

use std::io::{self, SeekFrom};
use std::ops::Range;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Response, StatusCode};
use tokio::io::AsyncSeek;

use crate::buffer::StreamBuffer;
use crate::net::body::{Part, ServeBody};
use crate::net::connections::Progress;
use crate::net::preconditions::{Current, Verdict};
use crate::net::ranges;
use crate::net::served::Counts;

/// One resource served: a buffer, its media type and its validators.
#[derive(Clone)]
pub(crate) struct Resource {
    pub(crate) buffer: StreamBuffer,
    pub(crate) content_type: HeaderValue,
    pub(crate) etag: HeaderValue,
    pub(crate) last_modified: Option<SystemTime>,
}

impl Resource {
    /// `buffer` with its validators (a tag of the server's own if it has no strong one), sent
    /// as `content_type`, else as the buffer's own media type, else as
    /// `application/octet-stream`.
    pub(crate) fn new(buffer: StreamBuffer, content_type: Option<HeaderValue>) -> Resource {
        let validators = buffer.validators();
        let etag = validators
            .strong_etag()
            .and_then(|tag| HeaderValue::from_str(tag).ok())
            .unwrap_or_else(new_etag);
        let last_modified = validators.last_modified;
        let content_type = content_type
            .or_else(|| {
                let own = buffer.content_type()?;
                HeaderValue::from_str(own).ok()
            })
            .unwrap_or_else(|| HeaderValue::from_static("application/octet-stream"));
        Resource {
            buffer,
            content_type,
            etag,
            last_modified,
        }
    }

    /// The tag, quotes included.
    pub(crate) fn etag(&self) -> &str {
        self.etag.to_str().unwrap_or_default()
    }

    /// The served version, for preconditions.
    fn current(&self) -> Current<'_> {
        Current {
            etag: self.etag(),
            last_modified: self.last_modified,
        }
    }

    /// `response` with the `ETag` and, if known, the `Last-Modified` of the resource.
    fn with_validators(&self, mut response: Response<ServeBody>) -> Response<ServeBody> {
        let headers = response.headers_mut();
        headers.insert(header::ETAG, self.etag.clone());
        if let Some(modified) = self.last_modified {
            if let Ok(value) = HeaderValue::from_str(&httpdate::fmt_http_date(modified)) {
                headers.insert(header::LAST_MODIFIED, value);
            }
        }
        response
    }
}

/// What a response needs besides the resource: the request's method and headers, the
/// server's prebuffering, its counts, and the connection's progress when the server runs the
/// connection (a failing body then waits until what it sent is flushed).
pub(crate) struct Ask<'a> {
    pub(crate) method: &'a Method,
    pub(crate) headers: &'a HeaderMap,
    pub(crate) prebuffer: u64,
    pub(crate) counts: &'a Arc<Counts>,
    pub(crate) progress: Option<Arc<Progress>>,
}

/// The response to `ask` (a `GET` or a `HEAD`) for `resource`.
pub(crate) async fn respond(resource: &Resource, ask: Ask<'_>) -> Response<ServeBody> {
    let head = ask.method == Method::HEAD;
    let current = resource.current();
    match current.evaluate(ask.headers, true) {
        Verdict::Proceed => {}
        Verdict::NotModified => return resource.with_validators(not_modified()),
        Verdict::Failed => {
            let why = "the resource does not match the request's preconditions\n";
            return resource.with_validators(plain(StatusCode::PRECONDITION_FAILED, why));
        }
    }
    let buffer = &resource.buffer;
    if let Err(error) = prebuffered(buffer, ask.prebuffer).await {
        return failed(&error);
    }
    let windowed = buffer.shared().is_windowed();
    let specs = match ask.headers.get(header::RANGE) {
        Some(range) if current.if_range_holds(ask.headers) => {
            range.to_str().ok().and_then(ranges::parse)
        }
        _ => None,
    };
    // A windowed stream answers ranges once its length is known (declared, or reached): its
    // oldest bytes are gone, so a range needs the total to say what is still there.
    let specs = specs.filter(|_| !windowed || buffer.len().is_some());
    let len = match (&specs, buffer.len()) {
        (_, Some(len)) => Some(len),
        // Sent whole as it comes, without the length.
        (None, None) => None,
        (Some(specs), None) if specs.len() == 1 && specs[0].is_whole() => None,
        // A range needs the total for its `Content-Range`: wait for the end.
        (Some(_), None) => match wait_for_len(buffer).await {
            Ok(len) => Some(len),
            Err(error) => return failed(&error),
        },
    };
    let body = |parts| ServeBody::new(buffer, ask.counts, parts, ask.progress.clone());
    let mut response = match (specs, len) {
        (None, _) | (Some(_), None) => {
            // From the oldest byte held: 0 but for a windowed stream.
            let start = buffer.window_start();
            let mut response = Response::new(body(vec![Part::range(start, len)]));
            if let Some(len) = len {
                let length = len.saturating_sub(start).to_string();
                set(&mut response, header::CONTENT_LENGTH, length);
            }
            response
        }
        (Some(specs), Some(len)) => {
            let chosen = ranges::resolve(&specs, len);
            // Of a window, only what it still holds.
            let start = buffer.window_start();
            if chosen.iter().any(|range| range.start < start) {
                let why = "the range asked for is no longer held (it fell out of the window)\n";
                unsatisfiable(why, len)
            } else {
                ranged(resource, &chosen, len, body)
            }
        }
    };
    // The head goes out only with the first bytes: a source that fails before them is a 502
    // with its cause, not a connection closed before any status line.
    if let Err(error) = response.body_mut().prime().await {
        return failed(&error);
    }
    let headers = response.headers_mut();
    let accept = if windowed && buffer.len().is_none() {
        "none"
    } else {
        "bytes"
    };
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static(accept));
    if !headers.contains_key(header::CONTENT_TYPE) {
        headers.insert(header::CONTENT_TYPE, resource.content_type.clone());
    }
    if head {
        *response.body_mut() = ServeBody::empty();
    }
    resource.with_validators(response)
}

/// The answer to the ranges `chosen` (none: unsatisfiable) of a resource of `len` bytes.
fn ranged(
    resource: &Resource,
    chosen: &[Range<u64>],
    len: u64,
    body: impl Fn(Vec<Part>) -> ServeBody,
) -> Response<ServeBody> {
    match chosen {
        [] => unsatisfiable("no range of the request is in the resource\n", len),
        [range] => {
            let part = Part::range(range.start, Some(range.end));
            let mut response = Response::new(body(vec![part]));
            *response.status_mut() = StatusCode::PARTIAL_CONTENT;
            set(
                &mut response,
                header::CONTENT_RANGE,
                content_range(range, len),
            );
            let length = (range.end - range.start).to_string();
            set(&mut response, header::CONTENT_LENGTH, length);
            response
        }
        several => {
            let etag = resource.etag();
            let boundary = format!("sparsebuf-{}", &etag[1..17.min(etag.len())]);
            let content_type = resource.content_type.to_str().unwrap_or_default();
            let mut parts = Vec::with_capacity(several.len() * 2 + 1);
            for (i, range) in several.iter().enumerate() {
                let lead = if i == 0 { "" } else { "\r\n" };
                let head = format!(
                    "{lead}--{boundary}\r\nContent-Type: {content_type}\r\nContent-Range: {}\r\n\r\n",
                    content_range(range, len)
                );
                parts.push(Part::Text(Bytes::from(head)));
                parts.push(Part::range(range.start, Some(range.end)));
            }
            parts.push(Part::Text(Bytes::from(format!("\r\n--{boundary}--\r\n"))));
            let body = body(parts);
            let length = body.remaining_len().unwrap_or(0).to_string();
            let mut response = Response::new(body);
            *response.status_mut() = StatusCode::PARTIAL_CONTENT;
            let kind = format!("multipart/byteranges; boundary={boundary}");
            set(&mut response, header::CONTENT_TYPE, kind);
            set(&mut response, header::CONTENT_LENGTH, length);
            response
        }
    }
}

/// `416` with `Content-Range: bytes */len`.
fn unsatisfiable(why: &'static str, len: u64) -> Response<ServeBody> {
    let mut response = plain(StatusCode::RANGE_NOT_SATISFIABLE, why);
    let value = format!("bytes */{len}");
    set(&mut response, header::CONTENT_RANGE, value);
    response
}

/// Waits until the first `want` bytes are filled, or the stream ended before them.
async fn prebuffered(buffer: &StreamBuffer, want: u64) -> io::Result<()> {
    if want == 0 || buffer.shared().is_windowed() {
        return Ok(());
    }
    let mut byte = [0u8; 1];
    buffer.read_at_async(want - 1, &mut byte).await.map(drop)
}

/// The stream's length, waiting for its end off the runtime's threads.
async fn wait_for_len(buffer: &StreamBuffer) -> io::Result<u64> {
    let mut cursor = buffer.async_reader();
    Pin::new(&mut cursor).start_seek(SeekFrom::End(0))?;
    std::future::poll_fn(|cx| Pin::new(&mut cursor).poll_complete(cx)).await
}

/// `304 Not Modified`: no body.
fn not_modified() -> Response<ServeBody> {
    let mut response = Response::new(ServeBody::empty());
    *response.status_mut() = StatusCode::NOT_MODIFIED;
    response
}

/// A tag unique to this server: the time and a process-wide count.
fn new_etag() -> HeaderValue {
    static MADE: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let count = MADE.fetch_add(1, Ordering::Relaxed);
    let tag = format!(
        "\"{nanos:016x}{:04x}{count:x}\"",
        std::process::id() & 0xffff
    );
    HeaderValue::from_str(&tag).unwrap_or(HeaderValue::from_static("\"sparsebuf\""))
}

fn content_range(range: &Range<u64>, len: u64) -> String {
    format!("bytes {}-{}/{len}", range.start, range.end - 1)
}

pub(crate) fn set(response: &mut Response<ServeBody>, name: header::HeaderName, value: String) {
    if let Ok(value) = HeaderValue::from_str(&value) {
        response.headers_mut().insert(name, value);
    }
}

/// A short text answer (an error, or why there is no body).
pub(crate) fn plain(status: StatusCode, text: impl Into<Bytes>) -> Response<ServeBody> {
    let text = text.into();
    let length = text.len().to_string();
    let mut response = Response::new(ServeBody::text(text));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    set(&mut response, header::CONTENT_LENGTH, length);
    response
}

/// The stream failed before the response could start: `502 Bad Gateway` (the upstream is the
/// source), or `504` for a timeout, with the cause. (The failure itself is logged where it
/// happened, once.)
pub(crate) fn failed(error: &io::Error) -> Response<ServeBody> {
    let (status, why) = failure(error);
    plain(status, why)
}

/// The status and the line of [`failed`].
pub(crate) fn failure(error: &io::Error) -> (StatusCode, String) {
    let status = match error.kind() {
        io::ErrorKind::TimedOut => StatusCode::GATEWAY_TIMEOUT,
        _ => StatusCode::BAD_GATEWAY,
    };
    (status, format!("the stream failed: {error}\n"))
}
