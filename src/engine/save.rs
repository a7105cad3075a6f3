//! `save`'s copy of a buffer's bytes into a file: RAM segments shared and written, spilled runs
//! copied by the kernel while pinned against eviction, missing segments fetched straight in.

use std::fs::File;
use std::io::{self, Write};
use std::ops::Range;

use bytes::Bytes;

use crate::engine::shared::{Shared, Want};
use crate::store::slots::Slot;

impl Shared {
    /// Writes the first `total` bytes to `file`, segment by segment: a RAM segment's buffer is
    /// shared (not copied) under the read lock and written after it is released; a run of
    /// spilled segments is one kernel copy, pinned meanwhile so that eviction does not release
    /// its space under the copy; a segment that is not there (never fetched, or evicted) is
    /// read through `read_at`, which copies it straight from what it fetches. So `save`
    /// succeeds however small the budgets are.
    pub(crate) fn write_all_to(&self, file: &mut File, total: u64) -> io::Result<()> {
        enum Piece {
            Ram(Bytes),
            Spilled(Range<u64>),
            Hole,
        }
        let shift = self.config.shift;
        let size = self.config.segment_size as u64;
        let mut fetched = Vec::new();
        let mut offset = 0;
        while offset < total {
            let segment = offset >> shift;
            let piece = {
                let mut state = self.state.write();
                match state.index.slot(segment) {
                    Some(Slot::Memory(resident)) => Piece::Ram(resident.data.clone()),
                    Some(Slot::Filling(prefix)) => Piece::Ram(Bytes::copy_from_slice(prefix)),
                    Some(Slot::Disk { .. }) => {
                        let mut end = segment;
                        while let Some(Slot::Disk { .. }) = state.index.slot(end) {
                            end += 1;
                        }
                        state.pins.push(segment..end);
                        Piece::Spilled(segment..end)
                    }
                    Some(Slot::Absent | Slot::Fetching) | None => Piece::Hole,
                }
            };
            offset += match piece {
                Piece::Ram(data) => {
                    file.write_all(&data)?;
                    data.len() as u64
                }
                Piece::Spilled(run) => {
                    let copied = self.copy_spilled(&run, file);
                    let mut state = self.state.write();
                    if let Some(at) = state.pins.iter().position(|p| *p == run) {
                        state.pins.swap_remove(at);
                    }
                    copied?
                }
                Piece::Hole => {
                    let want = (total - offset).min(size - (offset & (size - 1))) as usize;
                    fetched.resize(want, 0);
                    let n = self.read_inner(offset, &mut fetched, Want::All)?;
                    if n < want {
                        let at = offset + n as u64;
                        let message =
                            format!("the stream ended at {at}, before its length {total}");
                        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, message));
                    }
                    file.write_all(&fetched)?;
                    want as u64
                }
            };
        }
        Ok(())
    }

    /// Copies the pinned run of spilled segments `run` to `file`; how many bytes.
    fn copy_spilled(&self, run: &Range<u64>, file: &mut File) -> io::Result<u64> {
        let shift = self.config.shift;
        let len = {
            let state = self.state.read();
            run.clone()
                .map(|s| match state.index.slot(s) {
                    Some(Slot::Disk { len, .. }) => *len as u64,
                    _ => 0,
                })
                .sum::<u64>()
        };
        self.storage()?.copy_to(run.start << shift, len, file)?;
        Ok(len)
    }
}
