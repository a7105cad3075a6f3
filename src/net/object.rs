//! Object storage (feature `object-store`): [`ObjectSink`] and [`upload`] write an object as it
//! is produced, in parts; [`ObjectSource`] reads one sparsely as a [`RangeSource`].
//!
//! Everything here is synchronous for the caller: the `object_store` futures run on a small
//! runtime of this crate's own (two threads, started on first use), so no caller needs a tokio
//! runtime. Do not call these from inside an async task (blocking there would stall it).

use std::collections::VecDeque;
use std::fmt;
use std::io::{self, Read};
use std::sync::{Arc, OnceLock};

use bytes::{Bytes, BytesMut};
use object_store::path::Path;
use object_store::{
    GetOptions, GetRange, MultipartUpload, ObjectStore, ObjectStoreExt, PutPayload,
};
use tokio::runtime::Runtime;
use tokio::task::JoinHandle;

use crate::error::invalid_input;
use crate::fanout::sink::Sink;
use crate::source::RangeSource;
use crate::validators::Validators;

/// The smallest part S3 accepts for any part but the last (GCS and Azure accept it too).
#[cfg_attr(docsrs, doc(cfg(feature = "object-store")))]
pub const MIN_PART_SIZE: usize = 5 << 20;
/// The largest part S3 accepts.
#[cfg_attr(docsrs, doc(cfg(feature = "object-store")))]
pub const MAX_PART_SIZE: u64 = 5 << 30;
/// The default part size.
#[cfg_attr(docsrs, doc(cfg(feature = "object-store")))]
pub const DEFAULT_PART_SIZE: usize = 8 << 20;
/// The default number of parts uploading at once.
#[cfg_attr(docsrs, doc(cfg(feature = "object-store")))]
pub const DEFAULT_PARTS_IN_FLIGHT: usize = 2;

/// The runtime the `object_store` futures run on.
fn runtime() -> io::Result<&'static Runtime> {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    if let Some(rt) = RUNTIME.get() {
        return Ok(rt);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("sparsebuf-object-store")
        .enable_all()
        .build()?;
    Ok(RUNTIME.get_or_init(|| rt))
}

/// An `object_store` error as an `io::Error`: `NotFound` (for a missing object or bucket) keeps
/// its kind, with the store's message.
fn io_error(error: object_store::Error) -> io::Error {
    let missing = matches!(error, object_store::Error::NotFound { .. }) || {
        let text = error.to_string();
        text.contains("NoSuchBucket")
            || text.contains("NoSuchKey")
            || text.contains("404 Not Found")
    };
    if missing {
        io::Error::new(io::ErrorKind::NotFound, error.to_string())
    } else {
        io::Error::from(error)
    }
}

/// A [`Sink`] that writes one object through an [`ObjectStore`] (S3, GCS, Azure, local files,
/// memory): the chunks are gathered into parts of [`part_size`](ObjectSink::part_size) bytes,
/// up to [`parts_in_flight`](ObjectSink::parts_in_flight) of them uploading at once; `finish`
/// completes the multipart upload, or, if the whole object fits in one part, writes it with one
/// `put`. `abort` (on failure, or when dropped unfinished) aborts the multipart upload, so no
/// pending upload is left behind.
///
/// Memory: the part being gathered plus the parts in flight, about `part_size × (parts in
/// flight + 1)` (24 MiB with the defaults), whatever the object's size.
///
/// Requests are retried by `object_store` itself (its `RetryConfig`); an error that reaches
/// the sink is final: it fails the sink, and later calls return the same error.
///
/// # Examples
///
/// ```
/// use std::io::Write;
/// use std::sync::Arc;
/// use sparsebuf::object_store::{memory::InMemory, path::Path, ObjectStore};
/// use sparsebuf::{ObjectSink, StreamBuffer};
///
/// let store = Arc::new(InMemory::new());
/// let (mut writer, buf) = StreamBuffer::builder().build_push()?;
/// let sink = ObjectSink::new(store.clone(), Path::from("logs/today.bin"));
/// let consumer = buf.emit(sparsebuf::MIN_PART_SIZE).sink(sink)?;
/// writer.write_all(&[42u8; 100_000])?;
/// writer.finish()?;
/// consumer.join()?;
///
/// let source = sparsebuf::ObjectSource::new(store, Path::from("logs/today.bin"))?;
/// let object = StreamBuffer::builder().build_ranged(source)?;
/// assert_eq!(object.len(), Some(100_000));
/// assert_eq!(object.read_range(99_998..100_000)?, [42, 42]);
/// # Ok::<(), std::io::Error>(())
/// ```
#[cfg_attr(docsrs, doc(cfg(feature = "object-store")))]
pub struct ObjectSink {
    store: Arc<dyn ObjectStore>,
    path: Path,
    part_size: usize,
    max_in_flight: usize,
    /// The part being gathered.
    part: BytesMut,
    upload: Option<Box<dyn MultipartUpload>>,
    in_flight: VecDeque<JoinHandle<object_store::Result<()>>>,
    parts_done: u64,
    written: u64,
    /// Finished, aborted, or failed (with the error later calls return).
    state: State,
}

enum State {
    Open,
    Failed(io::ErrorKind, String),
    Finished,
    Aborted,
}

impl ObjectSink {
    /// A sink writing the object at `path` of `store`, with parts of [`DEFAULT_PART_SIZE`] and
    /// [`DEFAULT_PARTS_IN_FLIGHT`] of them at once.
    pub fn new(store: Arc<dyn ObjectStore>, path: Path) -> ObjectSink {
        ObjectSink {
            store,
            path,
            part_size: DEFAULT_PART_SIZE,
            max_in_flight: DEFAULT_PARTS_IN_FLIGHT,
            part: BytesMut::new(),
            upload: None,
            in_flight: VecDeque::new(),
            parts_done: 0,
            written: 0,
            state: State::Open,
        }
    }

    /// Parts of `bytes` bytes (every part but the last). A part's memory grows as it fills;
    /// it is not reserved whole up front.
    ///
    /// # Errors
    ///
    /// [`InvalidInput`](io::ErrorKind::InvalidInput) below [`MIN_PART_SIZE`], which S3 would
    /// only refuse when the upload completes, and above [`MAX_PART_SIZE`] (5 GiB, S3's
    /// largest).
    pub fn part_size(mut self, bytes: usize) -> io::Result<ObjectSink> {
        check_part_size(bytes)?;
        self.part_size = bytes;
        Ok(self)
    }

    /// Up to `n` parts uploading at once (at least 1).
    ///
    /// # Errors
    ///
    /// [`InvalidInput`](io::ErrorKind::InvalidInput) for 0.
    pub fn parts_in_flight(mut self, n: usize) -> io::Result<ObjectSink> {
        check_in_flight(n)?;
        self.max_in_flight = n;
        Ok(self)
    }

    /// Bytes taken so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Parts uploaded so far, and parts uploading now.
    pub fn parts(&self) -> (u64, usize) {
        (self.parts_done, self.in_flight.len())
    }

    fn check_open(&self) -> io::Result<()> {
        match &self.state {
            State::Open => Ok(()),
            State::Failed(kind, message) => Err(io::Error::new(*kind, message.clone())),
            State::Finished | State::Aborted => Err(invalid_input("the upload is over")),
        }
    }

    /// Records a failure: this call and every later one returns it.
    fn fail(&mut self, error: io::Error) -> io::Error {
        self.state = State::Failed(error.kind(), error.to_string());
        error
    }

    /// Waits for the oldest part in flight.
    fn wait_oldest(&mut self) -> io::Result<()> {
        let Some(part) = self.in_flight.pop_front() else {
            return Ok(());
        };
        let rt = runtime()?;
        match rt.block_on(part) {
            Ok(Ok(())) => {
                self.parts_done += 1;
                Ok(())
            }
            Ok(Err(error)) => Err(io_error(error)),
            Err(join) => Err(io::Error::other(join)),
        }
    }

    /// Starts uploading `data` as the next part, creating the upload first if needed.
    fn send_part(&mut self, data: Bytes) -> io::Result<()> {
        while self.in_flight.len() >= self.max_in_flight {
            self.wait_oldest()?;
        }
        let rt = runtime()?;
        if self.upload.is_none() {
            let (store, path) = (self.store.clone(), self.path.clone());
            let upload = rt
                .block_on(async move { store.put_multipart(&path).await })
                .map_err(io_error)?;
            self.upload = Some(upload);
        }
        if let Some(upload) = self.upload.as_mut() {
            let part = upload.put_part(PutPayload::from(data));
            self.in_flight.push_back(rt.spawn(part));
        }
        Ok(())
    }

    fn write(&mut self, chunk: &[u8]) -> io::Result<()> {
        if self.part.is_empty() {
            // Room for a default part at once (no reallocation as a default part fills); a
            // larger part grows as it fills, so a huge part size costs only what is written.
            self.part
                .reserve(self.part_size.min(DEFAULT_PART_SIZE).max(chunk.len()));
        }
        self.part.extend_from_slice(chunk);
        self.written += chunk.len() as u64;
        while self.part.len() >= self.part_size {
            let data = self.part.split_to(self.part_size).freeze();
            self.send_part(data)?;
        }
        Ok(())
    }

    fn complete(&mut self) -> io::Result<()> {
        let rt = runtime()?;
        if self.upload.is_none() {
            // The whole object fits in one part: one `put`.
            let data = std::mem::take(&mut self.part).freeze();
            let (store, path) = (self.store.clone(), self.path.clone());
            rt.block_on(async move { store.put(&path, PutPayload::from(data)).await })
                .map_err(io_error)?;
            return Ok(());
        }
        if !self.part.is_empty() {
            let data = std::mem::take(&mut self.part).freeze();
            self.send_part(data)?;
        }
        while !self.in_flight.is_empty() {
            self.wait_oldest()?;
        }
        if let Some(upload) = self.upload.as_mut() {
            rt.block_on(upload.complete()).map_err(io_error)?;
        }
        Ok(())
    }
}

fn check_part_size(bytes: usize) -> io::Result<()> {
    if bytes < MIN_PART_SIZE {
        return Err(invalid_input(format!(
            "part size {bytes} is below the object stores' minimum of {MIN_PART_SIZE} bytes"
        )));
    }
    if bytes as u64 > MAX_PART_SIZE {
        return Err(invalid_input(format!(
            "part size {bytes} is above S3's largest part of {MAX_PART_SIZE} bytes (5 GiB)"
        )));
    }
    Ok(())
}

fn check_in_flight(n: usize) -> io::Result<()> {
    if n == 0 {
        return Err(invalid_input("an upload needs at least one part in flight"));
    }
    Ok(())
}

impl Sink for ObjectSink {
    fn write_chunk(&mut self, _offset: u64, chunk: &[u8]) -> io::Result<()> {
        self.check_open()?;
        self.write(chunk).map_err(|e| self.fail(e))
    }

    fn finish(&mut self) -> io::Result<()> {
        self.check_open()?;
        match self.complete() {
            Ok(()) => {
                self.state = State::Finished;
                Ok(())
            }
            Err(error) => Err(self.fail(error)),
        }
    }

    /// Stops the parts in flight and aborts the multipart upload (its failure is not reported:
    /// the cause of the abort is what matters).
    fn abort(&mut self) {
        if matches!(self.state, State::Finished | State::Aborted) {
            return;
        }
        for part in self.in_flight.drain(..) {
            part.abort();
        }
        if let (Some(mut upload), Ok(rt)) = (self.upload.take(), runtime()) {
            let _ = rt.block_on(upload.abort());
        }
        if matches!(self.state, State::Open) {
            self.state = State::Aborted;
        }
    }
}

impl Drop for ObjectSink {
    /// An unfinished sink aborts its upload.
    fn drop(&mut self) {
        self.abort();
    }
}

impl fmt::Debug for ObjectSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObjectSink")
            .field("path", &self.path)
            .field("part_size", &self.part_size)
            .field("written", &self.written)
            .field("parts_done", &self.parts_done)
            .field("in_flight", &self.in_flight.len())
            .finish_non_exhaustive()
    }
}

/// Starts writing the object at `path` of `store`: the returned [`Upload`] is an
/// [`io::Write`] whose bytes go up in parts as they come, with memory bounded by the part size
/// (see [`ObjectSink`]), not by the object.
///
/// # Errors
///
/// None yet: a missing bucket or a refused upload shows at the first part or at
/// [`Upload::finish`] (kind [`NotFound`](io::ErrorKind::NotFound) for a missing bucket).
///
/// # Examples
///
/// ```
/// use std::io::Write;
/// use std::sync::Arc;
/// use sparsebuf::object_store::{memory::InMemory, path::Path, ObjectStore};
///
/// let store = Arc::new(InMemory::new());
/// let mut up = sparsebuf::upload(store.clone(), Path::from("a/b.bin"))?;
/// for _ in 0..10 {
///     up.write_all(&[7u8; 1 << 20])?; // 10 MiB: two parts of 8 MiB and 2 MiB
/// }
/// assert_eq!(up.finish()?, 10 << 20);
/// # Ok::<(), std::io::Error>(())
/// ```
#[cfg_attr(docsrs, doc(cfg(feature = "object-store")))]
pub fn upload(store: Arc<dyn ObjectStore>, path: Path) -> io::Result<Upload> {
    Ok(Upload {
        sink: ObjectSink::new(store, path),
    })
}

/// An object being written: made by [`upload`]. Bytes written go up in parts;
/// [`finish`](Upload::finish) completes the object. Dropped unfinished, it aborts: no object
/// and no pending multipart upload are left.
#[derive(Debug)]
#[cfg_attr(docsrs, doc(cfg(feature = "object-store")))]
pub struct Upload {
    sink: ObjectSink,
}

impl Upload {
    /// Parts of `bytes` bytes; see [`ObjectSink::part_size`]. Only before the first write.
    ///
    /// # Errors
    ///
    /// As [`ObjectSink::part_size`]; [`InvalidInput`](io::ErrorKind::InvalidInput) after a
    /// write.
    pub fn part_size(mut self, bytes: usize) -> io::Result<Upload> {
        if self.sink.written > 0 {
            return Err(invalid_input("the part size is set before the first write"));
        }
        check_part_size(bytes)?;
        self.sink.part_size = bytes;
        Ok(self)
    }

    /// Up to `n` parts uploading at once; see [`ObjectSink::parts_in_flight`].
    ///
    /// # Errors
    ///
    /// As [`ObjectSink::parts_in_flight`].
    pub fn parts_in_flight(mut self, n: usize) -> io::Result<Upload> {
        check_in_flight(n)?;
        self.sink.max_in_flight = n;
        Ok(self)
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.sink.written()
    }

    /// Parts uploaded so far, and parts uploading now.
    pub fn parts(&self) -> (u64, usize) {
        self.sink.parts()
    }

    /// Completes the object; returns its length once the store has it.
    ///
    /// # Errors
    ///
    /// The upload's failure (the first one, not the abort's): the upload is then aborted.
    pub fn finish(mut self) -> io::Result<u64> {
        match self.sink.finish() {
            Ok(()) => Ok(self.sink.written),
            Err(error) => {
                self.sink.abort();
                Err(error)
            }
        }
    }
}

impl io::Write for Upload {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.sink.write_chunk(self.sink.written, buf)?;
        Ok(buf.len())
    }

    /// Nothing to do: parts go up as they fill; [`finish`](Upload::finish) sends the rest.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// An object in an [`ObjectStore`] as a [`RangeSource`]: each fetch is one ranged `GET` (a run
/// of adjacent missing segments included), and the length comes from a `HEAD` when it is made. With
/// [`Builder::build_ranged`](crate::Builder::build_ranged) this reads a large object at
/// scattered offsets without downloading it, keeping what was fetched in the buffer (RAM, then
/// the local spill file) as a cache. See [`ObjectSink`] for an example.
///
/// **Pinned to one version.** The `HEAD` pins the object's version: every ranged `GET` carries
/// `If-Match` with its `ETag` (and asks for its version id, on a versioned bucket), or, for a
/// store that gives no `ETag`, `If-Unmodified-Since` with its modification time, and the answer
/// must carry the same `ETag`. An object replaced under the buffer fails the read with an error
/// of kind [`InvalidData`](io::ErrorKind::InvalidData) ("the object changed: ..."), never a
/// buffer holding bytes of two versions; so does every later fetch.
#[cfg_attr(docsrs, doc(cfg(feature = "object-store")))]
pub struct ObjectSource {
    store: Arc<dyn ObjectStore>,
    path: Path,
    len: u64,
    meta: object_store::ObjectMeta,
    /// Set once a fetch found the object changed: every later fetch fails with it.
    changed: OnceLock<String>,
}

impl ObjectSource {
    /// The object at `path` of `store`.
    ///
    /// # Errors
    ///
    /// [`NotFound`](io::ErrorKind::NotFound) (with the store's message) if the object or its
    /// bucket does not exist; other store errors as kind `Other`.
    pub fn new(store: Arc<dyn ObjectStore>, path: Path) -> io::Result<ObjectSource> {
        let rt = runtime()?;
        let (s, p) = (store.clone(), path.clone());
        let meta = rt
            .block_on(async move { s.head(&p).await })
            .map_err(io_error)?;
        Ok(ObjectSource {
            store,
            path,
            len: meta.size,
            meta,
            changed: OnceLock::new(),
        })
    }

    /// The `GET` options of a ranged fetch: the range and the pinned version.
    fn options(&self, range: GetRange) -> GetOptions {
        let meta = &self.meta;
        GetOptions {
            range: Some(range),
            if_match: meta.e_tag.clone(),
            if_unmodified_since: meta.e_tag.is_none().then_some(meta.last_modified),
            version: meta.version.clone(),
            ..GetOptions::default()
        }
    }

    /// A `GET`'s failure: the pinned version refused means the object changed.
    fn failed(&self, error: object_store::Error) -> io::Error {
        match error {
            object_store::Error::Precondition { source, .. } => {
                self.changed(format!("the store refused the pinned version: {source}"))
            }
            error => io_error(error),
        }
    }

    /// A response must carry the pinned `ETag`.
    fn check(&self, meta: &object_store::ObjectMeta) -> io::Result<()> {
        if let (Some(pinned), got) = (&self.meta.e_tag, &meta.e_tag) {
            if got.as_ref() != Some(pinned) {
                let got = got.as_deref().unwrap_or("none");
                return Err(self.changed(format!("its ETag was {pinned}, a range carries {got}")));
            }
        }
        Ok(())
    }

    /// The object changed under the buffer: this fetch and every later one fail.
    fn changed(&self, what: String) -> io::Error {
        let what = self.changed.get_or_init(|| what);
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("the object changed: {}: {what}", self.path),
        )
    }
}

impl RangeSource for ObjectSource {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        self.read_vectored_at(offset, &mut [buf])
    }

    /// One ranged `GET` for the whole run, scattered into `bufs`.
    fn read_vectored_at(&self, offset: u64, bufs: &mut [&mut [u8]]) -> io::Result<usize> {
        if let Some(what) = self.changed.get() {
            return Err(self.changed(what.clone()));
        }
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        let end = offset.saturating_add(total as u64).min(self.len);
        if offset >= end {
            return Ok(0);
        }
        let (store, path, options) = (
            self.store.clone(),
            self.path.clone(),
            self.options(GetRange::Bounded(offset..end)),
        );
        let got = runtime()?.block_on(async move {
            let result = store.get_opts(&path, options).await?;
            let meta = result.meta.clone();
            result.bytes().await.map(|bytes| (meta, bytes))
        });
        let (meta, bytes) = got.map_err(|error| self.failed(error))?;
        self.check(&meta)?;
        let mut rest = &bytes[..bytes.len().min(total)];
        let n = rest.len();
        for buf in bufs.iter_mut() {
            let k = rest.len().min(buf.len());
            buf[..k].copy_from_slice(&rest[..k]);
            rest = &rest[k..];
        }
        Ok(n)
    }

    /// One ranged `GET` of the pinned version, its body read as it arrives.
    fn open_at(&self, offset: u64, len: Option<u64>) -> io::Result<Option<Box<dyn Read + Send>>> {
        if let Some(what) = self.changed.get() {
            return Err(self.changed(what.clone()));
        }
        let end = len.map_or(self.len, |len| offset.saturating_add(len).min(self.len));
        if offset >= end {
            return Ok(Some(Box::new(io::empty())));
        }
        let range = match len {
            Some(_) => GetRange::Bounded(offset..end),
            None => GetRange::Offset(offset),
        };
        let (store, path, options) = (self.store.clone(), self.path.clone(), self.options(range));
        let rt = runtime()?;
        let result = rt
            .block_on(async move { store.get_opts(&path, options).await })
            .map_err(|error| self.failed(error))?;
        self.check(&result.meta)?;
        Ok(Some(Box::new(ObjectStream {
            rt,
            body: result.into_stream(),
            chunk: bytes::Bytes::new(),
        })))
    }

    fn len(&self) -> Option<u64> {
        Some(self.len)
    }

    fn validators(&self) -> Validators {
        let modified = std::time::SystemTime::from(self.meta.last_modified);
        let validators = Validators::new().last_modified(modified);
        match &self.meta.e_tag {
            Some(tag) => validators.etag(tag.clone()),
            None => validators,
        }
    }
}

/// A `GET`'s body as a `Read`: each chunk is awaited on the crate's runtime when the one before
/// is used up.
struct ObjectStream {
    rt: &'static Runtime,
    body: futures_core::stream::BoxStream<'static, object_store::Result<bytes::Bytes>>,
    chunk: bytes::Bytes,
}

impl Read for ObjectStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.chunk.is_empty() {
            let body = &mut self.body;
            let next = self
                .rt
                .block_on(std::future::poll_fn(|cx| body.as_mut().poll_next(cx)));
            match next {
                Some(Ok(chunk)) => self.chunk = chunk,
                Some(Err(error)) => return Err(io_error(error)),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len());
        buf[..n].copy_from_slice(&self.chunk.split_to(n));
        Ok(n)
    }
}

impl fmt::Debug for ObjectSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObjectSource")
            .field("path", &self.path)
            .field("len", &self.len)
            .field("e_tag", &self.meta.e_tag)
            .field("version", &self.meta.version)
            .finish_non_exhaustive()
    }
}
