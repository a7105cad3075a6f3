//! A heap spill storage that injects faults: the Nth write fails, or writes run out of space
//! after N bytes, transiently or persistently; reads fail on command. Shared by the integration
//! tests and the fuzz crate (which includes this file by path).

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

use sparsebuf::SpillStorage;

/// Linux's errno for "no space left on device".
pub const ENOSPC: i32 = 28;

/// What a [`Faulty`] storage does wrong.
#[derive(Clone, Copy, Debug)]
pub enum Fault {
    /// Nothing.
    None,
    /// The `n`th write (1-based) fails with `EIO`; with `persistent`, every later one too.
    FailNthWrite { n: usize, persistent: bool },
    /// Writes fail with `ENOSPC` once `bytes` have been written; a transient fault fails one
    /// write and then "frees space" (the count restarts).
    NoSpaceAfter { bytes: u64, persistent: bool },
}

/// A heap spill storage that injects [`Fault`]s, and can fail reads on demand.
pub struct Faulty {
    data: Mutex<Vec<u8>>,
    fault: Fault,
    writes: AtomicUsize,
    written: AtomicU64,
    pub failed_writes: AtomicUsize,
    pub fail_reads: AtomicBool,
}

impl Faulty {
    pub fn new(fault: Fault) -> Self {
        Faulty {
            data: Mutex::new(Vec::new()),
            fault,
            writes: AtomicUsize::new(0),
            written: AtomicU64::new(0),
            failed_writes: AtomicUsize::new(0),
            fail_reads: Default::default(),
        }
    }

    fn injected(&self, len: u64) -> Option<io::Error> {
        let n = self.writes.fetch_add(1, Ordering::SeqCst) + 1;
        let fail = match self.fault {
            Fault::None => None,
            Fault::FailNthWrite { n: nth, persistent } => {
                let hit = n == nth || (persistent && n > nth);
                hit.then(|| io::Error::other("injected EIO"))
            }
            Fault::NoSpaceAfter { bytes, persistent } => {
                let total = self.written.load(Ordering::SeqCst) + len;
                if total > bytes {
                    if !persistent {
                        self.written.store(0, Ordering::SeqCst);
                    }
                    // ENOSPC, as a full disk reports it.
                    Some(io::Error::from_raw_os_error(ENOSPC))
                } else {
                    None
                }
            }
        };
        if fail.is_some() {
            self.failed_writes.fetch_add(1, Ordering::SeqCst);
        } else {
            self.written.fetch_add(len, Ordering::SeqCst);
        }
        fail
    }
}

impl SpillStorage for Faulty {
    fn reserve(&self, end: u64) -> io::Result<()> {
        let mut v = self.data.lock().unwrap();
        let end = usize::try_from(end).map_err(|_| io::ErrorKind::InvalidInput)?;
        if v.len() < end {
            v.resize(end, 0);
        }
        Ok(())
    }

    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        let mut v = self.data.lock().unwrap();
        let at = offset as usize;
        let dst = v
            .get_mut(at..at + data.len())
            .ok_or(io::ErrorKind::InvalidInput)?;
        if let Some(err) = self.injected(data.len() as u64) {
            // A failed write leaves garbage behind, as a real partial write might.
            dst[..data.len() / 2].fill(0xEE);
            return Err(err);
        }
        dst.copy_from_slice(data);
        Ok(())
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        if self.fail_reads.load(Ordering::SeqCst) {
            return Err(io::Error::other("injected read failure"));
        }
        let v = self.data.lock().unwrap();
        let at = offset as usize;
        buf.copy_from_slice(
            v.get(at..at + buf.len())
                .ok_or(io::ErrorKind::InvalidInput)?,
        );
        Ok(())
    }

    fn len(&self) -> u64 {
        self.data.lock().unwrap().len() as u64
    }
}
