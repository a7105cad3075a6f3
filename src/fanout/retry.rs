//! [`RetryPolicy`]: how often and how patiently a sink's failed chunk is sent again.

use std::fmt;
use std::io;
use std::sync::atomic::AtomicU64 as StdAtomicU64;
use std::time::Duration;

use crate::sync::{Arc, AtomicU64, Ordering};

/// Which errors a [`RetryPolicy`] retries.
type Transient = Arc<dyn Fn(&io::Error) -> bool + Send + Sync>;

/// How a sink consumer ([`Emit::sink`](crate::Emit::sink)) retries a chunk its sink failed to
/// take: up to `attempts` tries in all, waiting between them with exponential backoff and
/// jitter, and only for errors the policy deems transient (by default [`is_transient`]:
/// interrupted, timed out, connection refused, reset or aborted, broken pipe, would block, and
/// an [`HttpStatus`] of 408, 429 or 5xx, after at least its `Retry-After`). Any other error, or
/// the last attempt's, fails the consumer.
///
/// Clones share one counter of retries, so a clone kept aside reads what the consumer did.
///
/// # Examples
///
/// ```
/// use std::io;
/// use std::time::Duration;
/// use sparsebuf::RetryPolicy;
///
/// let policy = RetryPolicy::new(4)
///     .backoff(Duration::from_millis(50), Duration::from_secs(2))
///     .transient(|e| e.kind() != io::ErrorKind::PermissionDenied);
/// let mut calls = 0;
/// let result = policy.run(|| {
///     calls += 1;
///     if calls < 3 {
///         Err(io::Error::new(io::ErrorKind::ConnectionReset, "flaky"))
///     } else {
///         Ok(calls)
///     }
/// });
/// assert_eq!(result?, 3);
/// assert_eq!(policy.retries(), 2);
/// # Ok::<(), io::Error>(())
/// ```
#[derive(Clone)]
pub struct RetryPolicy {
    attempts: u32,
    first: Duration,
    max: Duration,
    transient: Transient,
    retries: Arc<AtomicU64>,
}

impl RetryPolicy {
    /// Up to `attempts` tries per chunk (at least 1), 100 ms before the first retry, doubling up
    /// to 5 s, with the default transient errors.
    pub fn new(attempts: u32) -> Self {
        RetryPolicy {
            attempts: attempts.max(1),
            first: Duration::from_millis(100),
            max: Duration::from_secs(5),
            transient: Arc::new(is_transient),
            retries: Arc::new(AtomicU64::new(0)),
        }
    }

    /// One try, no retry.
    pub fn none() -> Self {
        RetryPolicy::new(1)
    }

    /// Waits `first` before the first retry, doubling each time up to `max`; each wait is
    /// drawn at random from its upper half (jitter), so sinks failing together do not retry in
    /// step.
    pub fn backoff(mut self, first: Duration, max: Duration) -> Self {
        self.first = first;
        self.max = max.max(first);
        self
    }

    /// Which errors are worth another try.
    pub fn transient<F>(mut self, transient: F) -> Self
    where
        F: Fn(&io::Error) -> bool + Send + Sync + 'static,
    {
        self.transient = Arc::new(transient);
        self
    }

    /// How many retries this policy (and its clones) made so far.
    pub fn retries(&self) -> u64 {
        self.retries.load(Ordering::Relaxed)
    }

    /// Runs `attempt` until it succeeds, fails with an error that is not transient, or has
    /// been tried `attempts` times; returns its last result. A `Retry-After` a server asked for
    /// lengthens a wait up to the policy's longest one (`max` of
    /// [`backoff`](RetryPolicy::backoff)), never beyond.
    pub fn run<T>(&self, mut attempt: impl FnMut() -> io::Result<T>) -> io::Result<T> {
        self.run_pausing(&mut attempt, &|wait| {
            std::thread::sleep(wait);
            true
        })
    }

    /// As [`run`](RetryPolicy::run), waiting between attempts with `pause`, which may cut the
    /// wait short and return `false` to give up (the last error is returned).
    pub(crate) fn run_pausing<T>(
        &self,
        attempt: &mut dyn FnMut() -> io::Result<T>,
        pause: &dyn Fn(Duration) -> bool,
    ) -> io::Result<T> {
        let mut wait = self.first;
        let mut tried = 1;
        loop {
            match attempt() {
                Err(error) if tried < self.attempts && (self.transient)(&error) => {
                    let asked = HttpStatus::of(&error).and_then(|s| s.retry_after);
                    let asked = asked.unwrap_or_default().min(self.max);
                    if !pause(jitter(wait).max(asked)) {
                        return Err(error);
                    }
                    self.retries.fetch_add(1, Ordering::Relaxed);
                    wait = (wait * 2).min(self.max);
                    tried += 1;
                }
                result => return result,
            }
        }
    }
}

impl Default for RetryPolicy {
    /// Five tries, 100 ms doubling to 5 s.
    fn default() -> Self {
        RetryPolicy::new(5)
    }
}

impl fmt::Debug for RetryPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryPolicy")
            .field("attempts", &self.attempts)
            .field("first", &self.first)
            .field("max", &self.max)
            .field("retries", &self.retries())
            .finish_non_exhaustive()
    }
}

/// An HTTP status a sink's request was answered with (inside the `io::Error` the sink
/// returns). The default policy retries 408, 429 and 5xx, and waits at least `retry_after`
/// (from the response's `Retry-After`) before the next try.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpStatus {
    /// The status code.
    pub status: u16,
    /// The least wait the server asked for.
    pub retry_after: Option<Duration>,
    /// What the request was, and the start of the response body.
    pub message: String,
}

impl HttpStatus {
    /// Whether a retry may succeed: request timeout, too many requests, a server error.
    pub fn is_transient(&self) -> bool {
        matches!(self.status, 408 | 429 | 500..=599)
    }

    /// As an `io::Error`: kind `TimedOut` for 408, `Other` otherwise (the status is inside).
    pub fn into_io(self) -> io::Error {
        let kind = match self.status {
            408 => io::ErrorKind::TimedOut,
            _ => io::ErrorKind::Other,
        };
        io::Error::new(kind, self)
    }

    /// The status inside `error`, if it carries one.
    pub fn of(error: &io::Error) -> Option<&HttpStatus> {
        error.get_ref().and_then(|e| e.downcast_ref::<HttpStatus>())
    }
}

impl fmt::Display for HttpStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HTTP {}: {}", self.status, self.message)
    }
}

impl std::error::Error for HttpStatus {}

/// The default transient errors: those a network or a busy peer gives and a retry can cure
/// (an [`HttpStatus`] inside decides for itself).
pub fn is_transient(error: &io::Error) -> bool {
    use io::ErrorKind::*;
    if let Some(status) = HttpStatus::of(error) {
        return status.is_transient();
    }
    matches!(
        error.kind(),
        Interrupted
            | TimedOut
            | WouldBlock
            | ConnectionRefused
            | ConnectionReset
            | ConnectionAborted
            | BrokenPipe
            | UnexpectedEof
    )
}

/// A wait drawn from `[wait / 2, wait]`.
fn jitter(wait: Duration) -> Duration {
    // A cheap draw: the clock's nanoseconds and a per-process count, mixed.
    static DRAWS: StdAtomicU64 = StdAtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::from(d.subsec_nanos()))
        ^ DRAWS.fetch_add(1, Ordering::Relaxed).rotate_left(32);
    let mut x = nanos.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^= x >> 31;
    let half = wait / 2;
    half + half.mul_f64((x >> 11) as f64 / (1u64 << 53) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permanent_errors_are_not_retried_and_transient_ones_stop_at_the_limit() {
        let policy = RetryPolicy::new(3).backoff(Duration::ZERO, Duration::ZERO);
        let mut calls = 0;
        let r: io::Result<()> = policy.run(|| {
            calls += 1;
            Err(io::Error::new(io::ErrorKind::PermissionDenied, "no"))
        });
        assert_eq!(
            (r.unwrap_err().kind(), calls),
            (io::ErrorKind::PermissionDenied, 1)
        );
        let mut calls = 0;
        let r: io::Result<()> = policy.run(|| {
            calls += 1;
            Err(io::Error::new(io::ErrorKind::TimedOut, "slow"))
        });
        assert_eq!((r.unwrap_err().kind(), calls), (io::ErrorKind::TimedOut, 3));
        assert_eq!(policy.retries(), 2);
    }

    #[test]
    fn jitter_stays_in_the_upper_half() {
        for ms in [0u64, 1, 10, 1000] {
            let wait = Duration::from_millis(ms);
            let j = jitter(wait);
            assert!(j <= wait && j >= wait / 2, "{j:?} for {wait:?}");
        }
    }
}
