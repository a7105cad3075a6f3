//! Fan-out consumers, and where their chunks go.
//!
//! 1. `emit.rs`: [`Emit`], the builder of a consumer (`StreamBuffer::emit`), and [`Serial`] /
//!    [`Parallel`].
//! 2. `consumer.rs`: [`Consumer`], the loops that run a consumer on a thread or a pool.
//!    `inline.rs`: consumers run by the producer. `deliver.rs`: what a serial consumer does with
//!    each chunk. `stop.rs`: a consumer's stop signal.
//! 3. `chunk.rs`: [`Chunk`] (cut by the engine's `feed.rs`). `report.rs`: [`Report`]. `pool.rs`: [`Pool`].
//! 4. `sink.rs`: [`Sink`] and [`WriteSink`]. `retry.rs`: [`RetryPolicy`], [`HttpStatus`].
//!
//! Leaves it: the public types above; the rest stays inside.

pub(crate) mod chunk;
pub(crate) mod consumer;
pub(crate) mod deliver;
pub(crate) mod emit;
pub(crate) mod inline;
pub(crate) mod pool;
pub(crate) mod report;
pub(crate) mod retry;
pub(crate) mod sink;
pub(crate) mod stop;

pub use chunk::Chunk;
pub use consumer::Consumer;
pub use emit::{Emit, Parallel, Serial};
pub use pool::Pool;
pub use report::Report;
pub use retry::{is_transient, HttpStatus, RetryPolicy};
pub use sink::{Sink, WriteSink};
