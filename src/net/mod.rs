//! Everything that speaks over a network.
//!
//! 1. `serve.rs` (feature `server`): [`Server`], the HTTP Range server (its listener, its
//!    connections, `handle`); `routes.rs` (a cache's resources by path: files or a proxied
//!    base URL); `respond.rs` (the answer for one resource); `body.rs` ([`ServeBody`]);
//!    `served.rs` ([`Served`]); `ranges.rs` (the `Range` grammar), `preconditions.rs`
//!    (conditional requests), `connections.rs` (send timeout, connection limit).
//! 2. `url.rs` (feature `client`): URL sources (`Builder::build_url`); `http_sink.rs`:
//!    [`HttpSink`]; `http_errors.rs`: the HTTP client's failures as `io::Error`s.
//! 3. `object.rs` (feature `object-store`): [`ObjectSink`], [`upload`], [`ObjectSource`].
//!
//! Leaves it: the public types above.

#[cfg(feature = "server")]
pub(crate) mod body;
#[cfg(feature = "server")]
pub(crate) mod connections;
#[cfg(feature = "client")]
pub(crate) mod http_errors;
#[cfg(feature = "client")]
pub(crate) mod http_sink;
#[cfg(feature = "object-store")]
pub(crate) mod object;
#[cfg(feature = "server")]
pub(crate) mod preconditions;
#[cfg(feature = "server")]
pub(crate) mod ranges;
#[cfg(feature = "server")]
pub(crate) mod respond;
#[cfg(feature = "server")]
pub(crate) mod routes;
#[cfg(feature = "server")]
pub(crate) mod serve;
#[cfg(feature = "server")]
pub(crate) mod served;
#[cfg(feature = "client")]
pub(crate) mod url;

#[cfg(feature = "server")]
pub use body::ServeBody;
#[cfg(feature = "client")]
pub use http_sink::HttpSink;
#[cfg(feature = "object-store")]
pub use object::{
    upload, ObjectSink, ObjectSource, Upload, DEFAULT_PARTS_IN_FLIGHT, DEFAULT_PART_SIZE,
    MAX_PART_SIZE, MIN_PART_SIZE,
};
#[cfg(feature = "server")]
pub use serve::{Running, Server, LISTEN_BACKLOG};
#[cfg(feature = "server")]
pub use served::Served;
