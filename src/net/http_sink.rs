//! [`HttpSink`] (feature `http`): a consumer's chunks sent to a web server, one request each.

use std::fmt;
use std::io;
use std::time::Duration;

use ureq::Agent;

use crate::fanout::sink::Sink;
use crate::net::http_errors::{io_error, status_error};

/// A [`Sink`] that sends each chunk to a URL in a request of its own (`POST` or `PUT`), with
/// headers that let the server put the pieces together: `Content-Range: bytes a-b/*`, and on
/// the last piece `bytes a-b/<total>` (an empty stream sends one empty request with
/// `bytes */0`). Each chunk is sent when the next one arrives or the stream ends, so that the
/// last one can carry the total; the sink keeps that one chunk meanwhile.
///
/// Failures: a connection error, a timeout, 408, 429 and 5xx are transient (the consumer's
/// [`RetryPolicy`](crate::RetryPolicy) retries them, after at least the `Retry-After` the server
/// asked for); any other 4xx fails the consumer at once, with the status and the start of the
/// response body in an [`HttpStatus`](crate::HttpStatus) inside the error. Redirects are not followed: a piece must
/// land where it was sent.
///
/// # Examples
///
/// ```no_run
/// use std::io::Write;
/// use sparsebuf::{HttpSink, StreamBuffer};
///
/// let (mut writer, buf) = StreamBuffer::builder().build_push()?;
/// let sink = HttpSink::post("http://127.0.0.1:8080/ingest")
///     .header("Authorization", "Bearer 1234")
///     .final_request(true); // an empty request with the total once everything arrived
/// let consumer = buf.emit(8 * 1024).sink(sink)?; // a request per 8 KiB gathered
/// writer.write_all(b"what the program writes")?;
/// writer.finish()?;
/// consumer.join()?;
/// # Ok::<(), std::io::Error>(())
/// ```
#[cfg_attr(docsrs, doc(cfg(feature = "client")))]
pub struct HttpSink {
    agent: Agent,
    url: String,
    put: bool,
    headers: Vec<(String, String)>,
    final_request: bool,
    /// The chunk to send when the next one comes (or at finish, as the last).
    pending: Option<(u64, Vec<u8>)>,
    requests: u64,
    /// The last piece went out, with this total (a retried `finish` does not send it again).
    sent_total: Option<u64>,
    final_sent: bool,
}

impl HttpSink {
    /// A sink that `POST`s each chunk to `url`.
    pub fn post(url: impl Into<String>) -> HttpSink {
        HttpSink::new(url.into(), false)
    }

    /// A sink that `PUT`s each chunk to `url`.
    pub fn put(url: impl Into<String>) -> HttpSink {
        HttpSink::new(url.into(), true)
    }

    fn new(url: String, put: bool) -> HttpSink {
        HttpSink {
            agent: agent(Duration::from_secs(60)),
            url,
            put,
            headers: Vec::new(),
            final_request: false,
            pending: None,
            requests: 0,
            sent_total: None,
            final_sent: false,
        }
    }

    /// Sends `name: value` with every request (authorisation, a stream id).
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> HttpSink {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// `true`: after the last piece, one more empty request with `Content-Range: bytes
    /// */<total>`, for servers that want an explicit end. Default `false`.
    pub fn final_request(mut self, on: bool) -> HttpSink {
        self.final_request = on;
        self
    }

    /// The longest a request may take, connection included (default 60 s); past it the
    /// request fails with `TimedOut` (transient).
    pub fn timeout(mut self, timeout: Duration) -> HttpSink {
        self.agent = agent(timeout);
        self
    }

    /// Requests answered with a success so far.
    pub fn requests(&self) -> u64 {
        self.requests
    }

    /// One request: `body` at `offset`, with the total if known.
    fn send(&mut self, offset: u64, body: &[u8], total: Option<u64>) -> io::Result<()> {
        let total_text = total.map_or_else(|| "*".to_string(), |t| t.to_string());
        let range = if body.is_empty() {
            format!("bytes */{total_text}")
        } else {
            let last = offset + body.len() as u64 - 1;
            format!("bytes {offset}-{last}/{total_text}")
        };
        let mut request = if self.put {
            self.agent.put(&self.url)
        } else {
            self.agent.post(&self.url)
        };
        request = request
            .header("Content-Range", &range)
            .header("Content-Type", "application/octet-stream");
        for (name, value) in &self.headers {
            request = request.header(name, value);
        }
        let response = request.send(body).map_err(io_error)?;
        let status = response.status().as_u16();
        if (200..300).contains(&status) {
            self.requests += 1;
            return Ok(());
        }
        let method = if self.put { "PUT" } else { "POST" };
        Err(status_error(
            response,
            &format!("{method} {} ({range})", self.url),
        ))
    }
}

fn agent(timeout: Duration) -> Agent {
    let config = Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .timeout_global(Some(timeout))
        .build();
    Agent::new_with_config(config)
}

impl Sink for HttpSink {
    fn write_chunk(&mut self, offset: u64, chunk: &[u8]) -> io::Result<()> {
        // Sends the chunk before this one; this one waits for the next (or for the end).
        if let Some((at, body)) = self.pending.take() {
            if let Err(error) = self.send(at, &body, None) {
                self.pending = Some((at, body));
                return Err(error);
            }
        }
        self.pending = Some((offset, chunk.to_vec()));
        Ok(())
    }

    fn finish(&mut self) -> io::Result<()> {
        let total = match self.sent_total {
            Some(total) => total,
            None => {
                // The last piece carries the total (an empty stream: an empty piece).
                let (at, body) = self.pending.take().unwrap_or_default();
                let total = at + body.len() as u64;
                if let Err(error) = self.send(at, &body, Some(total)) {
                    self.pending = Some((at, body));
                    return Err(error);
                }
                self.sent_total = Some(total);
                total
            }
        };
        if self.final_request && !self.final_sent {
            self.send(total, &[], Some(total))?;
            self.final_sent = true;
        }
        Ok(())
    }
}

impl fmt::Debug for HttpSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpSink")
            .field("url", &self.url)
            .field("put", &self.put)
            .field("requests", &self.requests)
            .finish_non_exhaustive()
    }
}
