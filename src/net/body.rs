//! [`ServeBody`]: the body of the Range server's responses, read from a buffer through one
//! cursor, that ends a failed stream with an error (a cut), never a clean short end.

use std::fmt;
use std::io;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use hyper::body::{Body, Frame, SizeHint};
use hyper::header;
use hyper::http::request::Parts;
use hyper::{Method, StatusCode};
use tokio::io::{AsyncRead, ReadBuf};

use crate::async_reader::AsyncReader;
use crate::buffer::StreamBuffer;
use crate::net::connections::Progress;
use crate::net::served::Counts;

/// How much of the body one frame carries at most.
const FRAME: usize = 64 * 1024;

/// A piece of a response body: fixed text (multipart headers), or bytes of the stream.
pub(crate) enum Part {
    Text(Bytes),
    /// `[start, end)`; no end: to the end of the stream.
    Stream {
        start: u64,
        end: Option<u64>,
    },
}

impl Part {
    pub(crate) fn range(start: u64, end: Option<u64>) -> Part {
        Part::Stream { start, end }
    }

    fn len(&self) -> Option<u64> {
        match self {
            Part::Text(text) => Some(text.len() as u64),
            Part::Stream { start, end } => end.map(|end| end - start),
        }
    }
}

/// The body of a [`Server`](crate::Server)'s responses (feature `server`): an
/// [`http_body::Body`](hyper::body::Body) of [`Bytes`] frames, with `io::Error` as its error, as
/// [`Server::handle`](crate::Server::handle) returns it for a hyper or axum application to send.
///
/// Its parts are sent in order (a multipart head, then the bytes of a range, ...), the stream's
/// read through one cursor of the buffer. A body that fails yields an error frame after the
/// bytes held before the failure: the connection must then be cut (hyper does), so that the
/// client sees an error and never a clean, short end.
///
/// Its first bytes are read before the head is made, so that a source that fails at once is a
/// `502` rather than a cut. When the server runs the connection itself and the stream fails in
/// the middle, the body does not end at once (hyper would close the connection and drop what
/// it has not written yet): it waits until the connection has flushed every frame given so
/// far, then fails, so the client gets every byte held before the failure and then a cut.
#[cfg_attr(docsrs, doc(cfg(feature = "server")))]
pub struct ServeBody {
    parts: std::collections::VecDeque<Part>,
    cursor: Option<AsyncReader>,
    buffer: Option<StreamBuffer>,
    counts: Option<Arc<Counts>>,
    /// A frame being filled.
    frame: BytesMut,
    /// Frames read by `prime`, sent first.
    ready: std::collections::VecDeque<Bytes>,
    /// The connection's progress (its flushes), when the server runs the connection.
    progress: Option<Arc<Progress>>,
    /// The stream failed: the error, and the connection's flush count when it did.
    failing: Option<(io::Error, u64)>,
    /// The line to log when the body is gone.
    access: Option<Box<Access>>,
}

/// A response's access-log line, written when its body is dropped.
pub(crate) struct Access {
    method: Method,
    target: String,
    range: String,
    status: u16,
    started: Instant,
    bytes: u64,
    ended: bool,
}

impl Access {
    pub(crate) fn new(request: &Parts, status: StatusCode, started: Instant) -> Access {
        let target = request
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string();
        let range = request
            .headers
            .get(header::RANGE)
            .map_or("-", |v| v.to_str().unwrap_or("?"))
            .replace(' ', "");
        Access {
            method: request.method.clone(),
            target,
            range,
            status: status.as_u16(),
            started,
            bytes: 0,
            ended: false,
        }
    }
}

impl Drop for Access {
    fn drop(&mut self) {
        let ms = self.started.elapsed().as_secs_f64() * 1000.0;
        let cut = if self.ended { "" } else { " cut" };
        log::info!(
            target: "sparsebuf::access",
            "{} {} {} {} {} {ms:.1}ms{cut}",
            self.method,
            self.target,
            self.range,
            self.status,
            self.bytes
        );
    }
}

impl ServeBody {
    pub(crate) fn new(
        buffer: &StreamBuffer,
        counts: &Arc<Counts>,
        parts: Vec<Part>,
        progress: Option<Arc<Progress>>,
    ) -> ServeBody {
        ServeBody {
            parts: parts.into(),
            cursor: None,
            buffer: Some(buffer.clone()),
            counts: Some(counts.clone()),
            frame: BytesMut::new(),
            ready: Default::default(),
            progress,
            failing: None,
            access: None,
        }
    }

    /// No body (a `HEAD`'s).
    pub(crate) fn empty() -> ServeBody {
        ServeBody::text(Bytes::new())
    }

    /// A fixed text.
    pub(crate) fn text(bytes: Bytes) -> ServeBody {
        ServeBody {
            parts: std::iter::once(Part::Text(bytes)).collect(),
            cursor: None,
            buffer: None,
            counts: None,
            frame: BytesMut::new(),
            ready: Default::default(),
            progress: None,
            failing: None,
            access: None,
        }
    }

    /// Logs `access` once the body is gone (sent, cut, or dropped).
    pub(crate) fn log_access(&mut self, access: Access) {
        self.access = Some(Box::new(access));
        if self.is_end_stream() {
            self.mark_end();
        }
    }

    fn mark_end(&mut self) {
        if let Some(access) = &mut self.access {
            access.ended = true;
        }
    }

    /// The bytes left to send, if known.
    pub(crate) fn remaining_len(&self) -> Option<u64> {
        let ready: u64 = self.ready.iter().map(|b| b.len() as u64).sum();
        let parts: Option<u64> = self.parts.iter().map(Part::len).sum();
        parts.map(|parts| parts + ready)
    }

    /// Reads the body up to its first bytes of the stream (or its end), to be sent first; the
    /// stream's error if it fails before them.
    pub(crate) async fn prime(&mut self) -> io::Result<()> {
        loop {
            match std::future::poll_fn(|cx| self.poll_produce(cx)).await {
                None => return Ok(()),
                Some(Err(error)) => {
                    self.parts.clear();
                    return Err(error);
                }
                Some(Ok((data, from_stream))) => {
                    self.ready.push_back(data);
                    if from_stream {
                        return Ok(());
                    }
                }
            }
        }
    }

    /// The next frame of the stream part at the front, `[start, end)`.
    fn poll_stream(
        &mut self,
        cx: &mut Context<'_>,
        start: u64,
        end: Option<u64>,
    ) -> Poll<io::Result<Bytes>> {
        let cursor = match &mut self.cursor {
            Some(cursor) if cursor.position() == start => cursor,
            _ => {
                let buffer = self
                    .buffer
                    .as_ref()
                    .ok_or_else(|| io::Error::other("no stream"))?;
                self.cursor.insert(buffer.async_reader_at(start))
            }
        };
        let want = end.map_or(FRAME as u64, |end| (end - start).min(FRAME as u64)) as usize;
        if self.frame.len() < want {
            self.frame.resize(want, 0);
        }
        let mut read = ReadBuf::new(&mut self.frame[..want]);
        ready!(Pin::new(cursor).poll_read(cx, &mut read))?;
        let n = read.filled().len();
        if n == 0 && end.is_some() {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("the stream ended at {start}, before the end of the range served"),
            )));
        }
        let frame = self.frame.split_to(n).freeze();
        Poll::Ready(Ok(frame))
    }

    /// The next piece of the body: its bytes, and whether they are the stream's (not a
    /// multipart head).
    fn poll_produce(&mut self, cx: &mut Context<'_>) -> Poll<Option<io::Result<(Bytes, bool)>>> {
        loop {
            let (start, end) = match self.parts.front_mut() {
                None => return Poll::Ready(None),
                Some(Part::Text(text)) => {
                    let text = std::mem::take(text);
                    self.parts.pop_front();
                    if text.is_empty() {
                        continue;
                    }
                    return Poll::Ready(Some(Ok((text, false))));
                }
                Some(Part::Stream { start, end }) => (*start, *end),
            };
            if end == Some(start) {
                self.parts.pop_front();
                continue;
            }
            let data = match ready!(self.poll_stream(cx, start, end)) {
                Ok(data) => data,
                Err(error) => {
                    self.parts.clear();
                    return Poll::Ready(Some(Err(error)));
                }
            };
            if data.is_empty() {
                // The end of a stream sent whole.
                self.parts.pop_front();
                continue;
            }
            let next = start + data.len() as u64;
            if let Some(Part::Stream { start, .. }) = self.parts.front_mut() {
                *start = next;
            }
            return Poll::Ready(Some(Ok((data, true))));
        }
    }

    /// A failed stream's error, once the connection has flushed what was sent before it.
    fn poll_failing(&mut self, cx: &mut Context<'_>) -> Poll<Option<io::Result<Frame<Bytes>>>> {
        let flushed = match (&self.failing, &self.progress) {
            (Some((_, seen)), Some(progress)) => progress.flushed_since(*seen, cx.waker()),
            _ => true,
        };
        if !flushed {
            return Poll::Pending;
        }
        match self.failing.take() {
            Some((error, _)) => Poll::Ready(Some(Err(error))),
            None => Poll::Ready(None),
        }
    }
}

impl Body for ServeBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<io::Result<Frame<Bytes>>>> {
        let this = &mut *self;
        if this.failing.is_some() {
            return this.poll_failing(cx);
        }
        let data = match this.ready.pop_front() {
            Some(data) => data,
            None => match ready!(this.poll_produce(cx)) {
                None => {
                    this.mark_end();
                    return Poll::Ready(None);
                }
                Some(Ok((data, _))) => data,
                Some(Err(error)) => {
                    let seen = this.progress.as_ref().map_or(0, |p| p.flushes());
                    this.failing = Some((error, seen));
                    return this.poll_failing(cx);
                }
            },
        };
        if let Some(counts) = &this.counts {
            counts.bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
        }
        if let Some(access) = &mut this.access {
            access.bytes += data.len() as u64;
        }
        if this.is_end_stream() {
            this.mark_end();
        }
        Poll::Ready(Some(Ok(Frame::data(data))))
    }

    fn is_end_stream(&self) -> bool {
        // What is left may be parts with nothing in them (a range read to its end).
        self.ready.is_empty()
            && self.failing.is_none()
            && self.parts.iter().all(|part| part.len() == Some(0))
    }

    fn size_hint(&self) -> SizeHint {
        match self.remaining_len() {
            Some(len) => SizeHint::with_exact(len),
            None => SizeHint::default(),
        }
    }
}

impl fmt::Debug for ServeBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServeBody")
            .field("remaining", &self.remaining_len())
            .finish_non_exhaustive()
    }
}
