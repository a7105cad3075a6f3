//! `tokio::io::AsyncWrite` for the push [`Writer`] (feature `tokio`).
//!
//! A write appends as far as the window lets it without waiting. When every droppable segment
//! is still held by a reader, the task leaves its waker with the holds and returns `Pending`;
//! the reader's next move wakes it. `poll_shutdown` finishes the stream.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::AsyncWrite;

use crate::writer::Writer;

#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
impl AsyncWrite for Writer {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let writer = self.get_mut();
        loop {
            match writer.write_some(buf, false) {
                Ok(written) => return Poll::Ready(written),
                Err(blocked) => {
                    let shared = writer.shared();
                    if shared.holds().register(&blocked, cx.waker()) {
                        shared.count_writer_wait();
                        // Readers look again (see `Holds::blocking_own`).
                        shared.publish().notify();
                        return Poll::Pending;
                    }
                }
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Every write is published before it returns: nothing is left to flush.
        Poll::Ready(Ok(()))
    }

    /// Finishes the stream (as [`Writer::finish`]); the `Writer` accepts no more bytes after.
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.get_mut().finish_in_place().map(drop))
    }
}
