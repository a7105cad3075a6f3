//! Every lock and atomic the crate uses, re-exported from one place.
//!
//! Shared state names its primitives through this module only, so that a model-checking build
//! (loom) can swap them for instrumented ones without touching the logic that uses them.

pub(crate) use parking_lot::{Condvar, Mutex, MutexGuard, RwLock, RwLockReadGuard};
pub(crate) use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
pub(crate) use std::sync::{Arc, OnceLock};
