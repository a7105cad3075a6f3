//! Async sources (feature `tokio`): [`Builder::build_async_read`], a forward-only buffer over a
//! tokio [`AsyncRead`], read by a task on the caller's runtime only as far as readers need.

use std::io::{self, Read};
use std::pin::Pin;
use std::sync::mpsc;

use tokio::io::{AsyncRead, ReadBuf};
use tokio::sync::mpsc::{unbounded_channel, UnboundedSender};

use crate::buffer::StreamBuffer;
use crate::builder::Builder;
use crate::error::invalid_input;

impl Builder {
    /// A forward-only buffer over an async source: a tokio [`AsyncRead`] such as a hyper or
    /// reqwest body adapted to one, a child process's stdout or a socket (feature `tokio`).
    ///
    /// A task spawned on the current tokio runtime reads the source, and only when a reader
    /// needs bytes past those already pulled (the buffer pulls it as it pulls any stream: see
    /// [`build`](Builder::build)). Async cursors ([`StreamBuffer::async_reader`]) never block
    /// their runtime thread; the sync readers (`read_at`, [`Reader`](crate::Reader)) block
    /// theirs until the task has read, so call those from threads of their own (or
    /// `spawn_blocking`), never from a task of a current-thread runtime, which could then not
    /// run the reading task. The task ends when the buffer is dropped or the source ends;
    /// it reads no more once the runtime shuts down (readers then get an error).
    ///
    /// # Examples
    ///
    /// ```
    /// use sparsebuf::StreamBuffer;
    /// use tokio::io::AsyncReadExt;
    ///
    /// # let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    /// # rt.block_on(async {
    /// // Any AsyncRead: here one end of an in-memory pipe.
    /// let (mut tx, rx) = tokio::io::duplex(64 * 1024);
    /// tokio::spawn(async move {
    ///     use tokio::io::AsyncWriteExt;
    ///     tx.write_all(&[7u8; 300_000]).await.unwrap();
    /// });
    /// let buffer = StreamBuffer::builder().build_async_read(rx)?;
    /// let mut tail = Vec::new();
    /// let mut cursor = buffer.async_reader_at(299_990);
    /// cursor.read_to_end(&mut tail).await?;
    /// assert_eq!(tail, [7u8; 10]);
    /// # Ok::<(), std::io::Error>(())
    /// # })?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// `InvalidInput` if called outside a tokio runtime; otherwise as for
    /// [`build`](Builder::build).
    #[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
    pub fn build_async_read<R>(self, reader: R) -> io::Result<StreamBuffer>
    where
        R: AsyncRead + Send + Unpin + 'static,
    {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            invalid_input("build_async_read must be called within a tokio runtime, which runs the task that reads the source")
        })?;
        let (asks, mut asked) = unbounded_channel::<Vec<u8>>();
        let (gives, given) = mpsc::sync_channel::<io::Result<Vec<u8>>>(1);
        runtime.spawn(async move {
            let mut reader = reader;
            // One read per ask, into the buffer that came with it.
            while let Some(mut buf) = asked.recv().await {
                let got = std::future::poll_fn(|cx| {
                    let mut into = ReadBuf::new(&mut buf);
                    Pin::new(&mut reader)
                        .poll_read(cx, &mut into)
                        .map_ok(|()| into.filled().len())
                })
                .await;
                let got = got.map(|n| {
                    buf.truncate(n);
                    buf
                });
                if gives.send(got).is_err() {
                    return;
                }
            }
        });
        self.build(Bridge {
            asks,
            given,
            spare: Vec::new(),
        })
    }
}

/// The sync side of the reading task: a `Read` that asks it for a read and waits for the answer.
struct Bridge {
    asks: UnboundedSender<Vec<u8>>,
    given: mpsc::Receiver<io::Result<Vec<u8>>>,
    /// The last answer's buffer, sent with the next ask to be filled again.
    spare: Vec<u8>,
}

impl Read for Bridge {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let mut ask = std::mem::take(&mut self.spare);
        ask.resize(buf.len(), 0);
        let gone = || {
            io::Error::other("the task reading the async source is gone (its runtime shut down)")
        };
        self.asks.send(ask).map_err(|_| gone())?;
        let got = self.given.recv().map_err(|_| gone())??;
        let n = got.len().min(buf.len());
        buf[..n].copy_from_slice(&got[..n]);
        self.spare = got;
        Ok(n)
    }
}
