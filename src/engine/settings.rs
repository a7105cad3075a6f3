//! The settings a buffer runs with, once checked, and their defaults: what the engine reads.

use std::path::PathBuf;

use crate::engine::account::Account;
use crate::sync::Arc;
use crate::validators::Validators;

/// Default segment size: 64 KiB.
pub(crate) const DEFAULT_SEGMENT_SIZE: usize = 64 * 1024;
/// Default memory budget: 5 MiB.
pub(crate) const DEFAULT_MEMORY_BUDGET: usize = 5 * 1024 * 1024;
/// Default number of concurrent range-source fetches.
pub(crate) const DEFAULT_MAX_FETCHES: usize = 4;
/// The largest request of a streaming range source (see `Builder::max_request`).
pub(crate) const DEFAULT_MAX_REQUEST: u64 = 16 << 20;
/// How many responses of a streaming range source may be open at once.
pub(crate) const DEFAULT_REQUESTS_IN_FLIGHT: usize = 4;
/// Smallest segment size accepted.
pub(crate) const MIN_SEGMENT_SIZE: usize = 256;
/// Largest segment size accepted.
pub(crate) const MAX_SEGMENT_SIZE: usize = 1 << 30;

/// Settings of a buffer, checked by the `Builder` (see `config.rs`).
pub(crate) struct Config {
    /// log2 of `segment_size`.
    pub(crate) shift: u32,
    pub(crate) segment_size: usize,
    pub(crate) memory_budget: usize,
    pub(crate) spill_dir: PathBuf,
    pub(crate) declared_len: Option<u64>,
    pub(crate) disk_budget: u64,
    pub(crate) read_ahead: u64,
    pub(crate) window: Option<u64>,
    /// What identifies the resource, for a buffer that is not over a range source (which
    /// reports its own).
    pub(crate) validators: Validators,
    /// The media type, for a buffer that is not over a range source.
    pub(crate) content_type: Option<String>,
    /// Set by the source when the resource changed under the buffer.
    #[cfg_attr(not(all(feature = "server", feature = "client")), allow(dead_code))]
    pub(crate) stale: Option<std::sync::Arc<std::sync::OnceLock<String>>>,
    /// The cache the buffer belongs to, whose budgets, spill file and workers it shares.
    pub(crate) account: Option<Arc<Account>>,
}
