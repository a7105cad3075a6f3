//! Work that may block, run off an async task: on tokio's blocking pool when a runtime is
//! current, else on a thread of its own. The task polls for the result, which wakes it.

use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::task::{Context, Poll, Waker};

use crate::sync::{Arc, Mutex};

/// A blocking call under way. Dropping it only forgets the result: the call runs to its end.
pub(crate) struct Blocking<T> {
    slot: Arc<Mutex<Slot<T>>>,
}

struct Slot<T> {
    result: Option<io::Result<T>>,
    waker: Option<Waker>,
}

impl<T: Send + 'static> Blocking<T> {
    /// Starts `f` where it may block. A panic in it comes back as an error.
    pub(crate) fn spawn(f: impl FnOnce() -> io::Result<T> + Send + 'static) -> io::Result<Self> {
        let slot = Arc::new(Mutex::new(Slot {
            result: None,
            waker: None,
        }));
        let filled = slot.clone();
        let run = move || {
            let result = catch_unwind(AssertUnwindSafe(f))
                .unwrap_or_else(|_| Err(io::Error::other("a blocking read panicked")));
            let waker = {
                let mut slot = filled.lock();
                slot.result = Some(result);
                slot.waker.take()
            };
            if let Some(waker) = waker {
                waker.wake();
            }
        };
        #[cfg(not(loom))]
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            drop(runtime.spawn_blocking(run));
            return Ok(Blocking { slot });
        }
        crate::sync::spawn("sparsebuf-blocking", run)?;
        Ok(Blocking { slot })
    }

    /// The result once the call returned; until then `Pending`, and the task is woken then.
    pub(crate) fn poll(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        let mut slot = self.slot.lock();
        match slot.result.take() {
            Some(result) => Poll::Ready(result),
            None => {
                slot.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}
