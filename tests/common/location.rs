//! The model's answer to `location(offset, len)` for a forward-only stream, whose filled bytes
//! are always `0..filled`. Shared by the model test and the fuzz crate (included by path).

use sparsebuf::Location;

/// Where `[offset, offset + len)` stands against a stream filled up to `filled`.
pub fn expected_location(filled: u64, offset: u64, len: u64) -> Location {
    let end = offset.saturating_add(len);
    if len == 0 || end <= filled {
        Location::BeforeIndex
    } else if offset < filled {
        Location::Bisected
    } else if offset == filled {
        Location::AtIndex
    } else {
        Location::AfterIndex
    }
}
