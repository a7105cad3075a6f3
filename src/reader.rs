//! [`Reader`]: an independent cursor over a [`StreamBuffer`].

use std::fmt;
use std::io::{self, BufRead, Read, Seek, SeekFrom};

use crate::buffer::StreamBuffer;
use crate::engine::holds::CursorHold;
use crate::engine::shared::Want;
use crate::error::invalid_input;

/// Size of a cursor's own buffer for [`BufRead`]; reads at least this large bypass it.
const CAPACITY: usize = 8 * 1024;

/// A cursor over a [`StreamBuffer`]: [`Read`] + [`Seek`] + [`BufRead`] + `Clone` + `Send`.
///
/// Made by [`StreamBuffer::reader`]. Each cursor has its own position; clones start where the
/// original is. [`Read::read`] returns as soon as at least one byte at the position is
/// available (like a socket), pulling from the source only if none is. Seeking past the end is
/// allowed, as for files; reads there return `Ok(0)`. [`SeekFrom::End`] needs the stream's
/// length, so without a declared length it pulls the whole stream first.
///
/// On a live stream with a [`window`](crate::Builder::window) that its budgets cannot hold, a
/// cursor keeps its place: the writer waits for it rather than drop the bytes it has yet to
/// read, so drop cursors you no longer read from.
///
/// # Examples
///
/// ```
/// use std::io::{BufRead, Seek, SeekFrom};
///
/// let buf = sparsebuf::StreamBuffer::new(&b"first line\nsecond line\n"[..]);
/// let mut r = buf.reader();
/// r.seek(SeekFrom::Start(11))?;
/// let mut line = String::new();
/// r.read_line(&mut line)?;
/// assert_eq!(line, "second line\n");
/// assert_eq!(r.seek(SeekFrom::End(0))?, 23);
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct Reader {
    buffer: StreamBuffer,
    /// On a windowed stream, this cursor's hold: the offset of the next byte it will ask the
    /// buffer for (`pos` plus what it has buffered), which the writer will not drop.
    hold: CursorHold,
    /// Stream position of the next byte `read` returns.
    pos: u64,
    /// Bytes `chunk[..end]` are the stream's bytes at `pos - start..`, so `chunk[start..end]`
    /// are those at `pos..`; allocated on first use.
    chunk: Box<[u8]>,
    start: usize,
    end: usize,
}

impl StreamBuffer {
    /// A new cursor at offset 0, implementing [`Read`], [`Seek`](std::io::Seek) and
    /// [`BufRead`](std::io::BufRead). Cursors are independent of each other.
    pub fn reader(&self) -> Reader {
        self.reader_at(0)
    }

    /// A new cursor at `offset`: the same as [`reader`](StreamBuffer::reader) followed by a
    /// seek, except that on a windowed stream the cursor never holds offset 0, even for a
    /// moment. Join a live stream at the oldest byte still kept with
    /// `buf.reader_at(buf.window_start())`.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::io::Read;
    /// use sparsebuf::StreamBuffer;
    ///
    /// let live = std::io::repeat(1).take(1 << 20); // stands in for an endless stream
    /// let buf = StreamBuffer::builder().window(256 << 10).build(live)?;
    /// buf.wait_for(500_000..500_001)?; // the stream has moved on, and so has its window
    /// assert!(buf.window_start() > 0);
    ///
    /// let mut late = buf.reader_at(buf.window_start());
    /// let mut frame = [0u8; 1000];
    /// late.read_exact(&mut frame)?;
    /// assert_eq!(frame, [1u8; 1000]);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn reader_at(&self, offset: u64) -> Reader {
        Reader::new(self.clone(), offset)
    }
}

impl Reader {
    /// A cursor at `pos` (holding it, on a windowed stream).
    pub(crate) fn new(buffer: StreamBuffer, pos: u64) -> Self {
        let shared = buffer.shared();
        let hold = CursorHold::new(shared.holds(), shared.is_windowed(), pos, true);
        Reader {
            buffer,
            hold,
            pos,
            chunk: Box::default(),
            start: 0,
            end: 0,
        }
    }

    /// The offset of the next byte this cursor will ask the buffer for: past what it buffered.
    fn next_needed(&self) -> u64 {
        self.pos + self.buffered() as u64
    }

    /// Moves this cursor's hold (if it has one) to the next byte it will need.
    fn update_hold(&self) {
        let at = self.next_needed();
        self.hold.set(self.buffer.shared().holds(), at);
    }

    /// The cursor's position.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// The buffer this cursor reads.
    pub fn get_ref(&self) -> &StreamBuffer {
        &self.buffer
    }

    fn buffered(&self) -> usize {
        self.end - self.start
    }
}

/// A cursor read at `pos`: at least one byte unless at the end. Unlike `read_at`, a position
/// near `u64::MAX` is not an error: the read stops at the last addressable byte, as past EOF.
fn read_from(buffer: &StreamBuffer, pos: u64, dst: &mut [u8]) -> io::Result<usize> {
    let room = usize::try_from(u64::MAX - pos).unwrap_or(usize::MAX);
    let len = dst.len().min(room);
    buffer.shared().read_inner(pos, &mut dst[..len], Want::Some)
}

impl Read for Reader {
    fn read(&mut self, dst: &mut [u8]) -> io::Result<usize> {
        // Nothing asked, nothing to wait for: never block on (or fail from) the source.
        if dst.is_empty() {
            return Ok(0);
        }
        if self.buffered() == 0 && dst.len() >= CAPACITY {
            let n = read_from(&self.buffer, self.pos, dst)?;
            // The chunk no longer surrounds the position: drop it, or `seek` would reuse it.
            (self.start, self.end) = (0, 0);
            self.pos += n as u64;
            self.update_hold();
            return Ok(n);
        }
        let n = {
            let available = self.fill_buf()?;
            let n = available.len().min(dst.len());
            dst[..n].copy_from_slice(&available[..n]);
            n
        };
        self.consume(n);
        Ok(n)
    }
}

impl BufRead for Reader {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.buffered() == 0 {
            if self.chunk.is_empty() {
                self.chunk = vec![0u8; CAPACITY].into_boxed_slice();
            }
            self.start = 0;
            self.end = 0;
            self.end = read_from(&self.buffer, self.pos, &mut self.chunk)?;
            self.update_hold();
        }
        Ok(&self.chunk[self.start..self.end])
    }

    fn consume(&mut self, amt: usize) {
        let amt = amt.min(self.buffered());
        self.start += amt;
        self.pos += amt as u64;
    }
}

impl Seek for Reader {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let target = match to {
            SeekFrom::Start(n) => Some(n),
            SeekFrom::Current(delta) => self.pos.checked_add_signed(delta),
            SeekFrom::End(delta) => {
                let len = match self.buffer.len() {
                    Some(len) => len,
                    None => self.buffer.fill_to_end()?,
                };
                len.checked_add_signed(delta)
            }
        };
        let target = target.ok_or_else(|| {
            invalid_input(format!(
                "seek from position {} by {to:?} leaves 0..=u64::MAX",
                self.pos
            ))
        })?;
        // Keep the buffered bytes if the target is among them.
        let kept = in_chunk(self.pos, self.start, self.end, target);
        self.pos = target;
        match kept {
            // The next byte needed from the buffer is still the chunk's end: the hold stays.
            Some(at) => self.start = at,
            None => {
                (self.start, self.end) = (0, 0);
                self.update_hold();
            }
        }
        Ok(target)
    }

    fn stream_position(&mut self) -> io::Result<u64> {
        Ok(self.pos)
    }
}

/// Where `target` falls in a cursor's chunk `[start, end)`, whose `start` is at `pos`: the
/// index to continue from, or `None` if it falls outside (the chunk's end counts as inside).
pub(crate) fn in_chunk(pos: u64, start: usize, end: usize, target: u64) -> Option<usize> {
    let chunk_start = pos - start as u64;
    match target.checked_sub(chunk_start) {
        Some(at) if at <= end as u64 => Some(at as usize),
        _ => None,
    }
}

impl Clone for Reader {
    /// A cursor at the same position, with a copy of the buffered bytes (and, on a windowed
    /// stream, a hold of its own).
    fn clone(&self) -> Self {
        let shared = self.buffer.shared();
        Reader {
            buffer: self.buffer.clone(),
            hold: self.hold.again(shared.holds(), self.next_needed()),
            pos: self.pos,
            chunk: self.chunk.clone(),
            start: self.start,
            end: self.end,
        }
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.hold.release(self.buffer.shared().holds());
    }
}

impl fmt::Debug for Reader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reader")
            .field("pos", &self.pos)
            .field("buffered", &self.buffered())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeking_inside_the_chunk_keeps_it() {
        let data: Vec<u8> = (0..20_000u32).map(|i| i as u8).collect();
        let buf = StreamBuffer::new(io::Cursor::new(data.clone()));
        let mut r = buf.reader();
        r.seek(SeekFrom::Start(100)).unwrap();
        assert_eq!(r.fill_buf().unwrap().len(), CAPACITY);
        r.consume(50);
        // The chunk holds bytes 100..100 + CAPACITY: 110 is inside it.
        r.seek(SeekFrom::Current(-40)).unwrap();
        assert_eq!((r.start, r.end, r.pos), (10, CAPACITY, 110));
        assert_eq!(r.fill_buf().unwrap()[0], data[110]);
        r.seek(SeekFrom::Start(100 + CAPACITY as u64)).unwrap();
        assert_eq!((r.start, r.end), (CAPACITY, CAPACITY));
        r.seek(SeekFrom::Start(99)).unwrap();
        assert_eq!((r.start, r.end), (0, 0));
        assert_eq!(r.fill_buf().unwrap()[0], data[99]);
    }
}
