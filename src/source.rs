//! Sources the writer pulls from. The writer is a "filler" role that asks a [`Fill`] for bytes;
//! it is not tied to `Read`, so later sources (push-mode writers, range sources) plug in here.

use std::io::{self, Read};

/// Something that produces the next bytes of the stream.
pub(crate) trait Fill: Send {
    /// Writes the next bytes of the stream into the start of `dst` and returns how many;
    /// `Ok(0)` means the stream has ended (`dst` is never empty).
    fn fill(&mut self, dst: &mut [u8]) -> io::Result<usize>;
}

/// A [`Read`] as a source.
pub(crate) struct ReadSource<R>(pub(crate) R);

impl<R: Read + Send> Fill for ReadSource<R> {
    #[inline]
    fn fill(&mut self, dst: &mut [u8]) -> io::Result<usize> {
        self.0.read(dst)
    }
}

/// An iterator of chunks as a source. A chunk larger than `dst` is handed out over several
/// calls; empty chunks are skipped.
pub(crate) struct ChunkSource<I, B> {
    chunks: I,
    current: Option<B>,
    at: usize,
}

impl<I, B> ChunkSource<I, B> {
    pub(crate) fn new(chunks: I) -> Self {
        ChunkSource {
            chunks,
            current: None,
            at: 0,
        }
    }
}

impl<I, B> Fill for ChunkSource<I, B>
where
    I: Iterator<Item = io::Result<B>> + Send,
    B: AsRef<[u8]> + Send,
{
    fn fill(&mut self, dst: &mut [u8]) -> io::Result<usize> {
        loop {
            if let Some(chunk) = &self.current {
                let rest = chunk.as_ref().get(self.at..).unwrap_or_default();
                if !rest.is_empty() {
                    let n = rest.len().min(dst.len());
                    dst[..n].copy_from_slice(&rest[..n]);
                    self.at += n;
                    return Ok(n);
                }
            }
            self.at = 0;
            match self.chunks.next() {
                Some(Ok(chunk)) => self.current = Some(chunk),
                Some(Err(e)) => {
                    self.current = None;
                    return Err(e);
                }
                None => {
                    self.current = None;
                    return Ok(0);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_are_split_and_empty_ones_skipped() {
        let chunks: Vec<io::Result<Vec<u8>>> =
            vec![Ok(vec![1, 2, 3, 4, 5]), Ok(vec![]), Ok(vec![6])];
        let mut src = ChunkSource::new(chunks.into_iter());
        let mut out = Vec::new();
        let mut buf = [0u8; 2];
        loop {
            let n = src.fill(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        assert_eq!(out, [1, 2, 3, 4, 5, 6]);
    }

    #[test]
    fn chunk_errors_pass_through() {
        let chunks: Vec<io::Result<&[u8]>> =
            vec![Ok(b"ab"), Err(io::Error::from(io::ErrorKind::BrokenPipe))];
        let mut src = ChunkSource::new(chunks.into_iter());
        let mut buf = [0u8; 8];
        assert_eq!(src.fill(&mut buf).unwrap(), 2);
        assert_eq!(
            src.fill(&mut buf).unwrap_err().kind(),
            io::ErrorKind::BrokenPipe
        );
    }
}
