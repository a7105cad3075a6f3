//! Shared by the benches: deterministic inputs and the peers measured beside sparsebuf.
#![allow(dead_code)]

use std::io::{self, Cursor, Read, Seek, SeekFrom, Write};

use parking_lot::{Mutex, RwLock};
use sparsebuf::StreamBuffer;

/// Stream size in bytes: `SPARSEBUF_BENCH_MIB` (default 256).
pub fn stream_len() -> usize {
    let mib: usize = std::env::var("SPARSEBUF_BENCH_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    mib << 20
}

/// `len` deterministic pseudo-random bytes (xorshift64).
pub fn source(len: usize) -> Vec<u8> {
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let take = (len - out.len()).min(8);
        out.extend_from_slice(&x.to_le_bytes()[..take]);
    }
    out
}

/// 4096 deterministic offsets with `offset + read <= len`.
pub fn offsets(len: usize, read: usize) -> Vec<u64> {
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    (0..4096)
        .map(|_| {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (x >> 17) % (len - read) as u64
        })
        .collect()
}

/// A cycling cursor over offsets.
pub struct Offsets {
    list: Vec<u64>,
    i: usize,
}

impl Offsets {
    pub fn new(len: usize, read: usize) -> Self {
        Offsets {
            list: offsets(len, read),
            i: 0,
        }
    }
    #[inline]
    pub fn next(&mut self) -> u64 {
        self.i = (self.i + 1) % self.list.len();
        self.list[self.i]
    }
}

/// A filled sparsebuf: all in RAM (`budget = None`) or within `budget` bytes of RAM.
pub fn sparsebuf(data: &[u8], budget: Option<usize>) -> StreamBuffer {
    let buf = StreamBuffer::builder()
        .memory_budget(budget.unwrap_or(data.len() + (1 << 20)))
        .build(Cursor::new(data.to_vec()))
        .unwrap();
    buf.fill_to_end().unwrap();
    buf
}

/// The original design: one `SpooledTempFile` behind a mutex, read with seek + read.
pub struct Original(Mutex<tempfile::SpooledTempFile>);

impl Original {
    /// Filled with `data`; rolls over to disk past `max_size` bytes.
    pub fn new(data: &[u8], max_size: usize) -> Self {
        let mut f = tempfile::spooled_tempfile(max_size);
        f.write_all(data).unwrap();
        Original(Mutex::new(f))
    }

    #[inline]
    pub fn read_at(&self, offset: u64, dst: &mut [u8]) -> io::Result<()> {
        let mut f = self.0.lock();
        f.seek(SeekFrom::Start(offset))?;
        f.read_exact(dst)
    }
}

/// All in RAM behind a reader-writer lock.
pub struct RwVec(pub RwLock<Vec<u8>>);

impl RwVec {
    #[inline]
    pub fn read_at(&self, offset: u64, dst: &mut [u8]) {
        let v = self.0.read();
        let o = offset as usize;
        dst.copy_from_slice(&v[o..o + dst.len()]);
    }
}

/// The `stream-download` crate's blocking reader over the same bytes, fully downloaded.
pub struct Peer {
    pub reader: Box<dyn ReadSeek>,
    _runtime: tokio::runtime::Runtime,
}

pub trait ReadSeek: Read + Seek + Send {}
impl<T: Read + Seek + Send> ReadSeek for T {}

impl Peer {
    /// `temp_file`: stream-download's temp-file storage, else its memory storage.
    pub fn new(data: &[u8], temp_file: bool) -> Self {
        use stream_download::async_read::AsyncReadStreamParams;
        use stream_download::storage::memory::MemoryStorageProvider;
        use stream_download::storage::temp::TempStorageProvider;
        use stream_download::{Settings, StreamDownload};

        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let params = AsyncReadStreamParams::new(Cursor::new(data.to_vec()))
            .content_length(data.len() as u64);
        let mut reader: Box<dyn ReadSeek> = runtime.block_on(async {
            if temp_file {
                Box::new(
                    StreamDownload::new_async_read(
                        params,
                        TempStorageProvider::new(),
                        Settings::default(),
                    )
                    .await
                    .unwrap(),
                ) as Box<dyn ReadSeek>
            } else {
                Box::new(
                    StreamDownload::new_async_read(
                        params,
                        MemoryStorageProvider,
                        Settings::default(),
                    )
                    .await
                    .unwrap(),
                )
            }
        });
        // Download everything first, so the reads measured are hits.
        let mut sink = vec![0u8; 1 << 20];
        while reader.read(&mut sink).unwrap() > 0 {}
        Peer {
            reader,
            _runtime: runtime,
        }
    }

    #[inline]
    pub fn read_at(&mut self, offset: u64, dst: &mut [u8]) -> io::Result<()> {
        self.reader.seek(SeekFrom::Start(offset))?;
        self.reader.read_exact(dst)
    }
}

/// Reads `r` to its end in `chunk`-sized reads; returns the byte count.
pub fn drain(r: &mut impl Read, chunk: &mut [u8]) -> u64 {
    let mut total = 0;
    loop {
        let n = r.read(chunk).unwrap();
        if n == 0 {
            return total;
        }
        total += n as u64;
    }
}
