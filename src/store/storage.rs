//! Which storage a buffer spills into: its own file, its region of a cache's shared file, or a
//! storage of the user's ([`Spill`]).

use std::io;

use crate::store::arena::Region;
use crate::store::spill::{FileStorage, Mapped, SpillStorage};
use crate::sync::Arc;

/// The spill storage of a buffer: the default file (whose segments can be mapped), or one
/// supplied with [`Builder::spill_storage`](crate::Builder::spill_storage).
pub(crate) enum Spill {
    File(FileStorage),
    /// The buffer's slots of its cache's shared file.
    Region(Region),
    Custom(Arc<dyn SpillStorage>),
}

impl Spill {
    /// A map of a spilled segment's bytes, if the storage is the file and the kernel agrees.
    pub(crate) fn map(&self, offset: u64, len: usize) -> Option<Mapped> {
        match self {
            Spill::File(file) => file.map(offset, len),
            Spill::Region(region) => region.map(offset, len),
            Spill::Custom(_) => None,
        }
    }

    /// Bytes mapped for reads of spilled segments.
    pub(crate) fn mapped_bytes(&self) -> u64 {
        match self {
            Spill::File(file) => file.mapped_bytes(),
            Spill::Region(region) => region.mapped_bytes(),
            Spill::Custom(_) => 0,
        }
    }

    /// Writes `parts` one after the other at `offset` (a run of adjacent segments): one
    /// `pwritev` into the file, or a `write_at` per part into a storage of the user's. How many
    /// bytes were written, and the error that stopped it, if any.
    pub(crate) fn write_parts(&self, offset: u64, parts: &[&[u8]]) -> (usize, Option<io::Error>) {
        match self {
            Spill::File(file) => file.write_parts(offset, parts),
            Spill::Region(_) | Spill::Custom(_) => {
                let storage: &dyn SpillStorage = &**self;
                let mut done = 0;
                for part in parts {
                    if let Err(error) = storage.write_at(offset + done as u64, part) {
                        return (done, Some(error));
                    }
                    done += part.len();
                }
                (done, None)
            }
        }
    }
}

impl std::ops::Deref for Spill {
    type Target = dyn SpillStorage;
    fn deref(&self) -> &(dyn SpillStorage + 'static) {
        match self {
            Spill::File(file) => file,
            Spill::Region(region) => region,
            Spill::Custom(custom) => &**custom,
        }
    }
}
