//! How the HTTP client's failures become `io::Error`s (feature `http`): a connection error or
//! timeout keeps a kind that says whether a retry may help; an unexpected status becomes an
//! [`HttpStatus`] with the start of the response body.

use std::io::{self, Read};
use std::time::Duration;

use ureq::http::Response;
use ureq::Body;

use crate::fanout::retry::HttpStatus;

/// A client error as an `io::Error` whose kind says whether a retry may help.
pub(crate) fn io_error(error: ureq::Error) -> io::Error {
    match error {
        ureq::Error::Io(e) => e,
        ureq::Error::Timeout(_) => io::Error::new(io::ErrorKind::TimedOut, error),
        ureq::Error::ConnectionFailed => io::Error::new(io::ErrorKind::ConnectionRefused, error),
        other => io::Error::other(other),
    }
}

/// An unexpected status as an error: the status, the `Retry-After` asked for (in seconds), and
/// `what` (the request) with the start of the body.
pub(crate) fn status_error(mut response: Response<Body>, what: &str) -> io::Error {
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let mut text = String::new();
    let _ = response
        .body_mut()
        .as_reader()
        .take(200)
        .read_to_string(&mut text);
    HttpStatus {
        status,
        retry_after,
        message: format!("{what}: {}", text.trim()),
    }
    .into_io()
}
