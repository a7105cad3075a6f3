//! The journal of a persistent cache directory: which keys it holds, with the validators of
//! the version stored, and which of their segments are durable in the data file, each with its
//! checksum.
//!
//! An append-only file of frames `[payload length: u32][crc32c of the payload: u32][payload]`
//! (little-endian). Reading stops at the first frame that is cut short or whose checksum does
//! not match: a crash mid-append leaves a torn tail, which is cut off when the journal is
//! opened. Records are appended after the bytes they describe were written and synced, so a
//! record never points at bytes that may not be there; a record lost in a crash only means a
//! segment is fetched again. [`State`] replays records into what the directory holds, and a
//! compaction rewrites the journal as that state alone (a new file, synced, renamed over the
//! old one, the directory synced).

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

/// How a stored version is identified: the resource's validators and length, and the segment
/// size its segments were cut with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Identity {
    pub(crate) etag: Option<String>,
    /// Seconds and nanoseconds since the Unix epoch.
    pub(crate) last_modified: Option<(u64, u32)>,
    pub(crate) len: u64,
    pub(crate) segment_size: u32,
}

/// One record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Record {
    /// Key `id` is `key`, stored at the version `identity`.
    Key {
        id: u64,
        key: String,
        identity: Identity,
    },
    /// Segment `segment` of key `id` is durable in slot `slot`: `len` bytes, checksum `crc`.
    Segment {
        id: u64,
        segment: u64,
        slot: u64,
        len: u32,
        crc: u32,
    },
    /// Segment `segment` of key `id` is gone (its slot may be reused).
    Drop { id: u64, segment: u64 },
    /// Key `id` and all its segments are gone.
    Forget { id: u64 },
}

/// A durable segment, as the journal knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Durable {
    pub(crate) slot: u64,
    pub(crate) len: u32,
    pub(crate) crc: u32,
}

/// A key the directory holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Stored {
    pub(crate) key: String,
    pub(crate) identity: Identity,
    pub(crate) segments: BTreeMap<u64, Durable>,
}

/// What the records say the directory holds, by key id.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct State {
    pub(crate) keys: HashMap<u64, Stored>,
    pub(crate) next_id: u64,
}

impl State {
    /// Applies one record. Records about unknown keys are ignored.
    pub(crate) fn apply(&mut self, record: &Record) {
        match record {
            Record::Key { id, key, identity } => {
                // A key stored again replaces its older version.
                self.keys.retain(|_, stored| stored.key != *key);
                self.keys.insert(
                    *id,
                    Stored {
                        key: key.clone(),
                        identity: identity.clone(),
                        segments: BTreeMap::new(),
                    },
                );
                self.next_id = self.next_id.max(id + 1);
            }
            Record::Segment {
                id,
                segment,
                slot,
                len,
                crc,
            } => {
                if let Some(stored) = self.keys.get_mut(id) {
                    stored.segments.insert(
                        *segment,
                        Durable {
                            slot: *slot,
                            len: *len,
                            crc: *crc,
                        },
                    );
                }
            }
            Record::Drop { id, segment } => {
                if let Some(stored) = self.keys.get_mut(id) {
                    stored.segments.remove(segment);
                }
            }
            Record::Forget { id } => {
                self.keys.remove(id);
            }
        }
    }

    /// The records that rebuild this state alone.
    pub(crate) fn records(&self) -> Vec<Record> {
        let mut ids: Vec<&u64> = self.keys.keys().collect();
        ids.sort();
        let mut out = Vec::new();
        for id in ids {
            let stored = &self.keys[id];
            out.push(Record::Key {
                id: *id,
                key: stored.key.clone(),
                identity: stored.identity.clone(),
            });
            for (&segment, d) in &stored.segments {
                out.push(Record::Segment {
                    id: *id,
                    segment,
                    slot: d.slot,
                    len: d.len,
                    crc: d.crc,
                });
            }
        }
        out
    }

    /// The slots in use, each once: a slot claimed by two segments (a `Drop` record lost
    /// before the slot was reused) cannot be trusted for either, and both are dropped from the
    /// state (their bytes are fetched again).
    pub(crate) fn dedupe_slots(&mut self) {
        let mut owner: HashMap<u64, (u64, u64)> = HashMap::new();
        let mut lost = Vec::new();
        for (&id, stored) in &self.keys {
            for (&segment, d) in &stored.segments {
                if let Some(previous) = owner.insert(d.slot, (id, segment)) {
                    lost.push(previous);
                    lost.push((id, segment));
                }
            }
        }
        for (id, segment) in lost {
            if let Some(stored) = self.keys.get_mut(&id) {
                stored.segments.remove(&segment);
            }
        }
    }
}

/// The journal file, open for appends.
pub(crate) struct Journal {
    file: File,
    path: PathBuf,
    /// Bytes in the file.
    len: u64,
    /// Bytes of the state alone at the last compaction: the journal is compacted again when it
    /// grows past four times that (and 1 MiB).
    compacted: u64,
}

const MAX_PAYLOAD: u32 = 1 << 20;

impl Journal {
    /// Opens (or creates) the journal at `path`, replays it, and compacts it: the state it
    /// held, and the journal ready for appends.
    pub(crate) fn open(path: &Path) -> io::Result<(Journal, State)> {
        let mut bytes = Vec::new();
        match File::open(path) {
            Ok(mut file) => {
                file.read_to_end(&mut bytes)?;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let (records, _valid) = decode_all(&bytes);
        let mut state = State::default();
        for record in &records {
            state.apply(record);
        }
        state.dedupe_slots();
        let journal = Journal::rewrite(path, &state)?;
        Ok((journal, state))
    }

    /// Writes `state` alone as the journal at `path` (a new file, synced, renamed over).
    fn rewrite(path: &Path, state: &State) -> io::Result<Journal> {
        let tmp = path.with_extension("tmp");
        let mut out = Vec::new();
        for record in state.records() {
            encode(&record, &mut out);
        }
        {
            let mut file = File::create(&tmp)?;
            file.write_all(&out)?;
            file.sync_all()?;
        }
        std::fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent() {
            File::open(dir)?.sync_all()?;
        }
        let file = OpenOptions::new().append(true).open(path)?;
        let len = out.len() as u64;
        Ok(Journal {
            file,
            path: path.to_path_buf(),
            len,
            compacted: len,
        })
    }

    /// Appends `record` (one `write` of its frame; not synced: a record lost in a crash costs
    /// a fetch, never a wrong byte).
    pub(crate) fn append(&mut self, record: &Record) -> io::Result<()> {
        let mut frame = Vec::with_capacity(64);
        encode(record, &mut frame);
        self.file.write_all(&frame)?;
        self.len += frame.len() as u64;
        Ok(())
    }

    /// Whether the journal has grown enough to be compacted.
    pub(crate) fn wants_compaction(&self) -> bool {
        self.len > (4 * self.compacted).max(1 << 20)
    }

    /// Rewrites the journal as `state` alone.
    pub(crate) fn compact(&mut self, state: &State) -> io::Result<()> {
        *self = Journal::rewrite(&self.path.clone(), state)?;
        Ok(())
    }
}

/// Appends `record`'s frame to `out`.
pub(crate) fn encode(record: &Record, out: &mut Vec<u8>) {
    let mut p = Vec::with_capacity(48);
    match record {
        Record::Key { id, key, identity } => {
            p.push(1);
            p.extend_from_slice(&id.to_le_bytes());
            p.extend_from_slice(&identity.segment_size.to_le_bytes());
            p.extend_from_slice(&identity.len.to_le_bytes());
            match identity.last_modified {
                Some((secs, nanos)) => {
                    p.push(1);
                    p.extend_from_slice(&secs.to_le_bytes());
                    p.extend_from_slice(&nanos.to_le_bytes());
                }
                None => p.push(0),
            }
            put_str(&mut p, identity.etag.as_deref());
            put_str(&mut p, Some(key));
        }
        Record::Segment {
            id,
            segment,
            slot,
            len,
            crc,
        } => {
            p.push(2);
            p.extend_from_slice(&id.to_le_bytes());
            p.extend_from_slice(&segment.to_le_bytes());
            p.extend_from_slice(&slot.to_le_bytes());
            p.extend_from_slice(&len.to_le_bytes());
            p.extend_from_slice(&crc.to_le_bytes());
        }
        Record::Drop { id, segment } => {
            p.push(3);
            p.extend_from_slice(&id.to_le_bytes());
            p.extend_from_slice(&segment.to_le_bytes());
        }
        Record::Forget { id } => {
            p.push(4);
            p.extend_from_slice(&id.to_le_bytes());
        }
    }
    out.extend_from_slice(&(p.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(&p).to_le_bytes());
    out.extend_from_slice(&p);
}

/// A string field: absent (`u32::MAX`) or its length and bytes.
fn put_str(p: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => {
            p.extend_from_slice(&(s.len() as u32).to_le_bytes());
            p.extend_from_slice(s.as_bytes());
        }
        None => p.extend_from_slice(&u32::MAX.to_le_bytes()),
    }
}

/// The records of `bytes` up to the first torn or corrupt frame, and how many bytes they take.
pub(crate) fn decode_all(bytes: &[u8]) -> (Vec<Record>, usize) {
    let mut records = Vec::new();
    let mut at = 0;
    while let Some((record, next)) = decode_at(bytes, at) {
        records.push(record);
        at = next;
    }
    (records, at)
}

fn decode_at(bytes: &[u8], at: usize) -> Option<(Record, usize)> {
    let head = bytes.get(at..at.checked_add(8)?)?;
    let len = u32::from_le_bytes(head[..4].try_into().ok()?);
    let crc = u32::from_le_bytes(head[4..8].try_into().ok()?);
    if len > MAX_PAYLOAD {
        return None;
    }
    let end = at + 8 + len as usize;
    let payload = bytes.get(at + 8..end)?;
    if crc32c::crc32c(payload) != crc {
        return None;
    }
    let mut r = Fields(payload);
    let record = match r.u8()? {
        1 => {
            let id = r.u64()?;
            let segment_size = r.u32()?;
            let len = r.u64()?;
            let last_modified = match r.u8()? {
                0 => None,
                1 => Some((r.u64()?, r.u32()?)),
                _ => return None,
            };
            let etag = r.str()?;
            let key = r.str()??;
            Record::Key {
                id,
                key,
                identity: Identity {
                    etag,
                    last_modified,
                    len,
                    segment_size,
                },
            }
        }
        2 => Record::Segment {
            id: r.u64()?,
            segment: r.u64()?,
            slot: r.u64()?,
            len: r.u32()?,
            crc: r.u32()?,
        },
        3 => Record::Drop {
            id: r.u64()?,
            segment: r.u64()?,
        },
        4 => Record::Forget { id: r.u64()? },
        _ => return None,
    };
    if !r.0.is_empty() {
        return None;
    }
    Some((record, end))
}

/// A payload being read field by field; `None` when it is short.
struct Fields<'a>(&'a [u8]);

impl Fields<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    /// `Some(None)` for an absent string, `None` when short or not UTF-8.
    fn str(&mut self) -> Option<Option<String>> {
        let len = self.u32()?;
        if len == u32::MAX {
            return Some(None);
        }
        let bytes = self.take(len as usize)?;
        Some(Some(String::from_utf8(bytes.to_vec()).ok()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity() -> Identity {
        Identity {
            etag: Some("\"v1\"".into()),
            last_modified: Some((1_700_000_000, 5)),
            len: 1 << 20,
            segment_size: 65536,
        }
    }

    fn sample() -> Vec<Record> {
        vec![
            Record::Key {
                id: 0,
                key: "a/b.mp4".into(),
                identity: identity(),
            },
            Record::Segment {
                id: 0,
                segment: 3,
                slot: 7,
                len: 65536,
                crc: 0xdead_beef,
            },
            Record::Segment {
                id: 0,
                segment: 4,
                slot: 8,
                len: 100,
                crc: 1,
            },
            Record::Drop { id: 0, segment: 3 },
            Record::Key {
                id: 1,
                key: "other".into(),
                identity: Identity {
                    etag: None,
                    ..identity()
                },
            },
            Record::Forget { id: 1 },
        ]
    }

    #[test]
    fn records_round_trip_and_replay() {
        let mut bytes = Vec::new();
        for r in sample() {
            encode(&r, &mut bytes);
        }
        let (records, valid) = decode_all(&bytes);
        assert_eq!(records, sample());
        assert_eq!(valid, bytes.len());
        let mut state = State::default();
        for r in &records {
            state.apply(r);
        }
        assert_eq!(state.keys.len(), 1);
        let a = &state.keys[&0];
        assert_eq!(a.segments.keys().copied().collect::<Vec<_>>(), [4]);
        assert_eq!(state.next_id, 2);
        // The state's own records replay to the same state.
        let mut again = State::default();
        for r in state.records() {
            again.apply(&r);
        }
        again.next_id = state.next_id;
        assert_eq!(again, state);
    }

    #[test]
    fn a_torn_or_corrupt_tail_ends_the_journal_there() {
        let mut bytes = Vec::new();
        for r in sample() {
            encode(&r, &mut bytes);
        }
        let (all, _) = decode_all(&bytes);
        // Under miri (interpreted), a sample of the cuts and bits: every one takes minutes.
        let step = if cfg!(miri) { 17 } else { 1 };
        // Every cut keeps exactly the whole frames before it.
        for cut in (0..bytes.len()).step_by(step) {
            let (records, valid) = decode_all(&bytes[..cut]);
            assert!(valid <= cut);
            assert_eq!(records[..], all[..records.len()]);
        }
        // A flipped bit in a frame ends the journal before that frame.
        let mut first = Vec::new();
        encode(&sample()[0], &mut first);
        for bit in (0..8 * bytes.len()).step_by(step) {
            let mut bad = bytes.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            let (records, _) = decode_all(&bad);
            assert!(records.len() < all.len(), "bit {bit} went unnoticed");
            assert_eq!(records[..], all[..records.len()]);
        }
    }

    #[test]
    #[cfg_attr(miri, ignore = "files")]
    fn the_journal_file_is_cut_at_a_torn_tail_and_compacted_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal");
        {
            let (mut journal, state) = Journal::open(&path).unwrap();
            assert_eq!(state, State::default());
            for r in sample() {
                journal.append(&r).unwrap();
            }
        }
        // A torn append: half a frame at the end.
        let mut half = Vec::new();
        encode(
            &Record::Segment {
                id: 0,
                segment: 9,
                slot: 9,
                len: 1,
                crc: 1,
            },
            &mut half,
        );
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(&half[..half.len() / 2]).unwrap();
        drop(file);
        let (mut journal, state) = Journal::open(&path).unwrap();
        assert_eq!(state.keys.len(), 1);
        assert_eq!(state.keys[&0].segments.len(), 1);
        // Compacted: the file holds the state alone (a key and one segment).
        let (records, valid) = decode_all(&std::fs::read(&path).unwrap());
        assert_eq!(records.len(), 2);
        assert_eq!(valid as u64, std::fs::metadata(&path).unwrap().len());
        // Appends after it replay.
        journal.append(&Record::Drop { id: 0, segment: 4 }).unwrap();
        drop(journal);
        let (_, state) = Journal::open(&path).unwrap();
        assert!(state.keys[&0].segments.is_empty());
    }

    #[test]
    fn a_slot_claimed_twice_is_trusted_for_neither() {
        let mut state = State::default();
        for r in [
            Record::Key {
                id: 0,
                key: "a".into(),
                identity: identity(),
            },
            Record::Key {
                id: 1,
                key: "b".into(),
                identity: identity(),
            },
            Record::Segment {
                id: 0,
                segment: 0,
                slot: 5,
                len: 1,
                crc: 1,
            },
            Record::Segment {
                id: 1,
                segment: 2,
                slot: 5,
                len: 1,
                crc: 2,
            },
        ] {
            state.apply(&r);
        }
        state.dedupe_slots();
        assert!(state.keys[&0].segments.is_empty());
        assert!(state.keys[&1].segments.is_empty());
    }
}
