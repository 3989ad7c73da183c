//! Content-defined chunking of a stream with FastCDC (the 2020 variant).
//!
//! Cut points depend only on the content, so an insertion early in a file changes
//! one or two chunks, not every chunk after it. Sizes follow restic: at least
//! 512 KiB (smaller files are one chunk), 1 MiB on average, at most 8 MiB.
//!
//! The chunker keeps a buffer of twice the maximum chunk size and asks FastCDC for
//! the next cut only when at least one maximum chunk (or the end of the stream) is
//! buffered, so cut points never depend on how reads happen to be split. Each
//! chunk is copied out once; the buffer is compacted about once per 8 MiB. The
//! buffer is kept per thread and reused by the next chunker on that thread (a backup
//! chunks thousands of files one after another: one buffer, not one 16 MiB
//! allocation per file).

use std::cell::RefCell;
use std::io::{self, Read};

thread_local! {
    /// The buffer the last chunker on this thread gave back.
    static SPARE: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Chunk buffers given back by whoever consumed a chunk (another thread, usually),
/// for the next chunks: chunks are allocated on the reading thread and freed on the
/// workers, a pattern that makes allocators hold on to memory; reusing the buffers
/// keeps a backup's memory flat.
static CHUNK_POOL: std::sync::Mutex<Vec<Vec<u8>>> = std::sync::Mutex::new(Vec::new());
/// Chunk buffers kept at most.
const CHUNK_POOL_MAX: usize = 8;

/// Gives a chunk's buffer back for reuse (call when done with a chunk).
pub fn recycle(mut buf: Vec<u8>) {
    if buf.capacity() == 0 || buf.capacity() > MAX_CHUNK as usize {
        return;
    }
    buf.clear();
    let mut pool = CHUNK_POOL.lock().unwrap_or_else(|e| e.into_inner());
    if pool.len() < CHUNK_POOL_MAX {
        pool.push(buf);
    }
}

/// A buffer holding a copy of `data`, reusing a recycled one when there is one.
fn chunk_buffer(data: &[u8]) -> Vec<u8> {
    let spare = CHUNK_POOL.lock().unwrap_or_else(|e| e.into_inner()).pop();
    match spare {
        Some(mut buf) => {
            buf.extend_from_slice(data);
            buf
        }
        None => data.to_vec(),
    }
}

/// Smallest chunk (files below this are one blob).
pub const MIN_CHUNK: u32 = 512 * 1024;
/// Average chunk size aimed at.
pub const AVG_CHUNK: u32 = 1024 * 1024;
/// Largest chunk.
pub const MAX_CHUNK: u32 = 8 * 1024 * 1024;

/// Splits a reader into chunks.
pub struct Chunker<R> {
    reader: R,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    eof: bool,
    min: u32,
    avg: u32,
    max: u32,
}

impl<R: Read> Chunker<R> {
    /// A chunker with restic's sizes.
    pub fn new(reader: R) -> Self {
        Self::with_sizes(reader, MIN_CHUNK, AVG_CHUNK, MAX_CHUNK)
    }

    /// A chunker with other sizes (within FastCDC's limits: min 64 B..1 MiB,
    /// average 256 B..4 MiB, max 1 KiB..16 MiB).
    pub fn with_sizes(reader: R, min: u32, avg: u32, max: u32) -> Self {
        Chunker {
            reader,
            buf: Vec::new(),
            start: 0,
            end: 0,
            eof: false,
            min,
            avg,
            max,
        }
    }

    fn fill(&mut self) -> io::Result<()> {
        let want = (self.max as usize) * 2;
        if self.buf.len() < want {
            // Take this thread's spare buffer (already initialized), or make one.
            let mut spare = SPARE.with(|s| std::mem::take(&mut *s.borrow_mut()));
            if spare.len() < want {
                spare = vec![0u8; want];
            }
            self.buf = spare;
        }
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        while !self.eof && self.end < self.buf.len() {
            match self.reader.read(&mut self.buf[self.end..]) {
                Ok(0) => self.eof = true,
                Ok(n) => self.end += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// The next chunk, or `None` at the end of the stream.
    pub fn next_chunk(&mut self) -> io::Result<Option<Vec<u8>>> {
        if !self.eof && self.end - self.start < self.max as usize {
            self.fill()?;
        }
        let available = self.end - self.start;
        if available == 0 {
            return Ok(None);
        }
        let data = &self.buf[self.start..self.end];
        let len = if available <= self.min as usize {
            available
        } else {
            let cdc = fastcdc::v2020::FastCDC::new(data, self.min, self.avg, self.max);
            let (_, cut) = cdc.cut(0, available);
            cut.clamp(1, available)
        };
        let chunk = chunk_buffer(&data[..len]);
        self.start += len;
        Ok(Some(chunk))
    }
}

impl<R> Drop for Chunker<R> {
    fn drop(&mut self) {
        let buf = std::mem::take(&mut self.buf);
        if !buf.is_empty() {
            SPARE.with(|s| {
                let mut spare = s.borrow_mut();
                if buf.len() > spare.len() {
                    *spare = buf;
                }
            });
        }
    }
}

impl<R: Read> Iterator for Chunker<R> {
    type Item = io::Result<Vec<u8>>;
    fn next(&mut self) -> Option<Self::Item> {
        self.next_chunk().transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader that returns at most `step` bytes per read.
    struct Trickle<'a> {
        data: &'a [u8],
        step: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            let n = self.step.min(out.len()).min(self.data.len());
            out[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    fn pseudo_random(n: usize, seed: u64) -> Vec<u8> {
        let mut x = seed;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    #[test]
    fn chunks_are_content_defined_and_bounded() {
        let data = pseudo_random(20 << 20, 7);
        let a: Vec<Vec<u8>> = Chunker::new(&data[..]).map(|c| c.unwrap()).collect();
        let b: Vec<Vec<u8>> = Chunker::new(Trickle {
            data: &data,
            step: 77_777,
        })
        .map(|c| c.unwrap())
        .collect();
        assert_eq!(a, b, "cut points must not depend on read sizes");
        assert_eq!(a.concat(), data);
        assert!(a.len() > 5);
        for c in &a[..a.len() - 1] {
            assert!(c.len() >= MIN_CHUNK as usize && c.len() <= MAX_CHUNK as usize);
        }
        // Inserting bytes near the start leaves most later chunks unchanged.
        let mut shifted = data[..1000].to_vec();
        shifted.extend_from_slice(b"inserted");
        shifted.extend_from_slice(&data[1000..]);
        let c: Vec<Vec<u8>> = Chunker::new(&shifted[..]).map(|c| c.unwrap()).collect();
        let same = c.iter().filter(|x| a.contains(x)).count();
        assert!(same + 2 >= a.len(), "{same} of {} chunks reused", a.len());
        assert!(Chunker::new(&b""[..]).next().is_none());
        let small: Vec<_> = Chunker::new(&b"abc"[..]).map(|c| c.unwrap()).collect();
        assert_eq!(small, vec![b"abc".to_vec()]);
    }
}
