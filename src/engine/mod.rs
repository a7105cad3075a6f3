//! The engine: the state every handle of a buffer shares, and everything that moves bytes into
//! it, out of it and between its tiers. It imports the store below it, never a public handle,
//! a fan-out type or the network.
//!
//! 1. `shared.rs`: [`Shared`](shared::Shared), the state every handle shares, [`State`](shared::State)
//!    (what the index lock guards) and [`Filler`](shared::Filler) (where bytes come from).
//! 2. `settings.rs`: the checked settings and their defaults.
//! 3. `read.rs`: the blocking read path (the four cases, waiting or pulling, range-source walks,
//!    read-ahead requests). `poll.rs`: the read path that never blocks (async cursors), and the
//!    pulling thread's step.
//! 4. `append.rs`: the appender every producer writes through. `pull.rs`: the pull driver and
//!    the writer role. `fetch.rs`: range-source fetches. `streams.rs`: the source's responses
//!    kept open between fetches, and the size of new requests.
//!    `save.rs`: copying a buffer's bytes into a file.
//! 5. `budget.rs`: the budget policy over the store's tiers (spill, evict, drop, clean ahead).
//! 6. `holds.rs`: where readers of a windowed stream still need bytes. `publish.rs`: the
//!    publish/wait protocol.
//! 7. `ahead.rs` (read-ahead), `spiller.rs` (spill ahead), `drive.rs` (pulling for async
//!    cursors): worker mailboxes, generic over their owner.
//! 8. `taps.rs`: consumers fed by the producer. `feed.rs`: how a consumer cuts the stream
//!    into chunks. `blocking.rs`: blocking work off an async task.
//!
//! 9. `account.rs`: a cache's shared budgets, spill file and members, and the global hand that
//!    keeps their sum within the budgets. `flight.rs`: the keyed, single-flight set of members.
//!    `workers.rs`: the fixed set of threads a cache's background jobs run on. `persist.rs`: a
//!    persistent cache's buffer adopting its stored segments and writing fetched ones through.
//!
//! `impl Shared` lives in `shared.rs`, `read.rs` and `poll.rs`.
//!
//! # Lock order
//!
//! The producer (a pulled stream's writer role, or a push `Writer`'s appender), then the tiers
//! lock, then the index lock (`State`), then the holds. The index lock is never held while
//! waiting for another lock, reading the source or writing spill data. The publish lock, the
//! last spill error, the tap list and the workers' mailboxes are only taken alone; the streams
//! pool is taken before the index (a fetch asks whether an idle stream's bytes are filled), and
//! a fetch waits for a busy stream with claims in the index but no lock held. An inline
//! consumer's own lock is taken by the producer with no lock of the buffer held (its role
//! aside), and it takes the index lock inside.

pub(crate) mod account;
pub(crate) mod ahead;
pub(crate) mod append;
#[cfg(feature = "tokio")]
pub(crate) mod blocking;
pub(crate) mod budget;
#[cfg(feature = "tokio")]
pub(crate) mod drive;
pub(crate) mod feed;
pub(crate) mod fetch;
pub(crate) mod flight;
pub(crate) mod holds;
pub(crate) mod persist;
#[cfg(feature = "tokio")]
pub(crate) mod poll;
pub(crate) mod publish;
pub(crate) mod pull;
pub(crate) mod read;
pub(crate) mod save;
pub(crate) mod settings;
pub(crate) mod shared;
pub(crate) mod spiller;
pub(crate) mod streams;
pub(crate) mod taps;
pub(crate) mod workers;
