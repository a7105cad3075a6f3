//! A shared, seekable, random-access buffer over a forward-only byte stream.
//!
//! Programs that stream media or large resources often must seek in streams that can only be
//! read forward: a player's decoder jumps around, a server answers HTTP `Range` requests from a
//! forward-only upstream, several consumers read one stream at their own pace. [`StreamBuffer`]
//! serves `read_at(offset, buf)` from many threads at once: bytes already pulled are read in
//! parallel, bytes not yet pulled are fetched by one thread while the readers that need them
//! wait. Small streams stay in RAM; past a memory budget, fixed-size segments move to a sparse,
//! memory-mapped, unnamed temp file.
//!
//! # Contents
//!
//! - **The buffer**: [`StreamBuffer`] (a cheap, `Clone + Send + Sync` handle), configured by
//!   [`Builder`]; random access with [`read_at`](StreamBuffer::read_at),
//!   [`read_exact_at`](StreamBuffer::read_exact_at) and [`read_range`](StreamBuffer::read_range);
//!   the whole resource with [`fill_to_end`](StreamBuffer::fill_to_end) and
//!   [`save`](StreamBuffer::save).
//! - **Cursors**: [`Reader`], an independent `Read + Seek + BufRead` position in the buffer.
//! - **Push mode**: [`Builder::build_push`] gives a [`Writer`] (`io::Write`) that produces the
//!   stream while readers only wait; [`Writer::finish`] ends it, [`Writer::fail`] or a drop
//!   fails it.
//! - **Sources that can seek**: [`RangeSource`] (implemented for `File`) and [`SeekSource`], for
//!   [`Builder::build_ranged`]: reads fetch only the segments they need and leave holes.
//! - **Ahead and behind**: [`Builder::read_ahead`], [`prefetch`](StreamBuffer::prefetch) and
//!   [`wait_for`](StreamBuffer::wait_for); [`Builder::disk_budget`] (eviction) and
//!   [`Builder::window`] (live streams, whose writer waits for slow cursors when the budgets
//!   cannot hold the window).
//! - **Introspection**: [`Location`] (the read path's four cases), [`Stats`].
//! - **Failures**: [`Error`], the source failures carried inside `std::io::Error` (sticky for
//!   streams).
//! - **Storage**: [`SpillStorage`], where segments past the memory budget go.
//!
//! # Example
//!
//! ```
//! use std::io::{Cursor, Read};
//! use std::thread;
//! use sparsebuf::StreamBuffer;
//!
//! let data: Vec<u8> = (0..1_000_000u32).map(|i| (i * 7) as u8).collect();
//! let buf = StreamBuffer::builder()
//!     .memory_budget(256 * 1024) // the rest spills to a temp file
//!     .build(Cursor::new(data.clone()))?;
//!
//! // Many threads read at their own offsets; the stream is pulled once.
//! thread::scope(|s| {
//!     for t in 0..4u64 {
//!         let (buf, data) = (buf.clone(), &data);
//!         s.spawn(move || {
//!             let offset = t * 200_000 + 123;
//!             let mut dst = vec![0u8; 4096];
//!             buf.read_exact_at(offset, &mut dst).unwrap();
//!             assert_eq!(dst, data[offset as usize..][..4096]);
//!         });
//!     }
//! });
//!
//! let mut all = Vec::new();
//! buf.reader().read_to_end(&mut all)?;
//! assert_eq!(all, data);
//! assert!(buf.stats().segments_spilled > 0);
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! # Guarantees and limits
//!
//! - Reads return the source's bytes or an error, never other bytes. Source errors are sticky
//!   and reach every reader that needs bytes past the failure; earlier bytes stay readable.
//! - Misuse (overflowing ranges, bad segment sizes) is [`std::io::ErrorKind::InvalidInput`], not a
//!   panic. A panicking source becomes an error for its readers instead of a hang.
//! - Spilled bytes are written with `pwrite`, so a full disk is an `io::Error` counted in
//!   [`Stats::spill_errors`], never a `SIGBUS`; the segment then stays in RAM. A file-size limit
//!   (`RLIMIT_FSIZE`) is an error of kind `FileTooLarge` the same way, never a `SIGXFSZ`.
//! - Spilled segments are read through per-segment maps that go with the segment, or with
//!   `pread` where a map cannot be made: the address space follows the spilled bytes.
//! - `/tmp` is RAM-backed `tmpfs` on many systems: set [`Builder::spill_dir`] to a disk-backed
//!   directory if spilling is meant to save RAM.
//!
//! # Cargo features (all off by default)
//!
//! - `tokio`: `AsyncReader` (`StreamBuffer::async_reader`), `StreamBuffer::read_at_async`,
//!   and tokio's `AsyncWrite` for `Writer`. No task blocks its runtime thread.
//! - `http`: `HttpSink`; `Server`, an HTTP Range server on hyper (one buffer, the files of a
//!   directory, or a caching proxy of a base URL, through a `Cache`); `Builder::build_url` for
//!   URL sources; the `sparsebuf serve` and `sparsebuf proxy` commands. Implies `tokio`. (Its
//!   halves: `client` and `server`.)
//! - `tower`: `Server` as a tower `Service`, to mount it in an axum or tower application.
//!   Implies `server`.
//! - `object-store`: `ObjectSink`, `upload` and `ObjectSource` through `object_store`.

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "tokio")]
mod async_reader;
#[cfg(feature = "tokio")]
mod async_source;
#[cfg(feature = "tokio")]
mod async_writer;
mod buffer;
mod builder;
mod cache;
mod engine;
mod error;
mod fanout;
mod net;
mod reader;
mod source;
mod stats;
mod store;
mod sync;
mod validators;
mod writer;

#[cfg(feature = "tokio")]
pub use async_reader::AsyncReader;
pub use buffer::StreamBuffer;
pub use builder::Builder;
pub use cache::{Cache, CacheBuilder, CacheStats};
pub use error::Error;
pub use fanout::{
    is_transient, Chunk, Consumer, Emit, HttpStatus, Parallel, Pool, Report, RetryPolicy, Serial,
    Sink, WriteSink,
};
#[cfg(feature = "client")]
pub use net::HttpSink;
#[cfg(feature = "object-store")]
pub use net::{
    upload, ObjectSink, ObjectSource, Upload, DEFAULT_PARTS_IN_FLIGHT, DEFAULT_PART_SIZE,
    MAX_PART_SIZE, MIN_PART_SIZE,
};
#[cfg(feature = "server")]
pub use net::{Running, ServeBody, Served, Server, LISTEN_BACKLOG};
/// The `object_store` crate this crate was built with (feature `object-store`): name its types
/// through here (`sparsebuf::object_store::path::Path`, its stores) so that they are the ones
/// [`upload`], [`ObjectSink`] and [`ObjectSource`] take, whatever version the rest of a program
/// uses.
#[cfg(feature = "object-store")]
#[cfg_attr(docsrs, doc(cfg(feature = "object-store")))]
pub use object_store;
pub use reader::Reader;
pub use source::{RangeSource, SeekSource};
pub use stats::Stats;
pub use store::{Location, SpillStorage};
pub use validators::Validators;
pub use writer::Writer;

/// The README's examples, compiled and run as doctests.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
