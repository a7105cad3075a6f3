//! The store: where a buffer's bytes are and what is filled, as data. Nothing here knows the
//! engine that fills it or the handles that read it (it imports only `error`, `sync` and its
//! own files).
//!
//! 1. `index.rs`: [`Index`](index::Index), which byte ranges are filled, and [`Location`], the
//!    read path's four cases.
//! 2. `slots.rs`: [`Slot`](slots::Slot), where one segment's bytes live, and the paged table
//!    of slots.
//! 3. `tiers.rs`: [`Tiers`](tiers::Tiers), the RAM tier's buffer pool and CLOCK lists (the
//!    policy that uses them is the engine's `budget.rs`).
//! 4. `buffers.rs`: segment buffers and the pool that recycles them.
//! 5. `spill.rs`: [`SpillStorage`], the spill file and the maps that read it.
//! 6. `marks.rs`: where a stream's writes ended, and when they arrived.
//! 7. `storage.rs`: [`Spill`](storage::Spill), which storage a buffer spills into.
//! 8. `arena.rs`: one spill file shared by the buffers of a cache, and each buffer's region
//!    of it.
//! 9. `journal.rs`: the journal of a persistent cache directory (keys, their versions, their
//!    durable segments and checksums), torn tails and compaction.
//!
//! Leaves it: `Location` and `SpillStorage` (public); each file's `pub(crate)` items to the
//! engine, imported from the file that defines them.

pub(crate) mod arena;
pub(crate) mod buffers;
pub(crate) mod index;
pub(crate) mod journal;
pub(crate) mod marks;
pub(crate) mod slots;
pub(crate) mod spill;
pub(crate) mod storage;
pub(crate) mod tiers;

pub use index::Location;
pub use spill::SpillStorage;
