//! O_DIRECT appends to the active segment (`--segment-writes direct`), kept
//! to compare with buffered io_uring writes (the default; numbers in
//! perf/README.md). Direct I/O needs block-aligned writes, so the appender
//! keeps the last partial block in memory and rewrites it, zero-padded, with
//! the next append. The padding past the logical end is cut when the segment
//! rolls or the broker stops; after a crash, recovery truncates it like any
//! zero-filled tail. Reads keep using the buffered descriptor (the kernel
//! drops cached pages that a direct write covers, so they read what is on
//! disk) and fdatasync on it covers these writes too.

use std::cell::RefCell;
use std::io;
use std::path::Path;

use glommio::io::{BufferedFile, DmaFile, OpenOptions};

use super::segment_files::{segment_path, to_io};
pub use crate::config::SegmentWriteMode;

pub struct DirectAppender {
    pub base_offset: i64,
    file: DmaFile,
    /// Bytes of the last, partial block: the file's logical end is
    /// `tail_position + tail.len()`, and `tail_position` is block-aligned.
    tail: RefCell<Vec<u8>>,
    tail_position: std::cell::Cell<u64>,
}

impl DirectAppender {
    /// Opens the segment for direct appends at `logical_end`, reading the
    /// partial last block through `buffered` so the next write can carry it.
    pub async fn open(
        dir: &Path,
        base_offset: i64,
        buffered: &BufferedFile,
        logical_end: u64,
    ) -> io::Result<DirectAppender> {
        let file = OpenOptions::new()
            .write(true)
            .dma_open(segment_path(dir, base_offset, "log"))
            .await
            .map_err(to_io)?;
        let alignment = file.alignment();
        let tail_position = logical_end / alignment * alignment;
        let tail_bytes = (logical_end - tail_position) as usize;
        let tail = if tail_bytes == 0 {
            Vec::new()
        } else {
            let read = buffered
                .read_at(tail_position, tail_bytes)
                .await
                .map_err(to_io)?;
            if read.len() != tail_bytes {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "segment shorter than its logical end",
                ));
            }
            read.to_vec()
        };
        Ok(DirectAppender {
            base_offset,
            file,
            tail: RefCell::new(tail),
            tail_position: std::cell::Cell::new(tail_position),
        })
    }

    pub fn logical_end(&self) -> u64 {
        self.tail_position.get() + self.tail.borrow().len() as u64
    }

    /// Appends `bytes` at the logical end (`position` must equal it).
    pub async fn append(&self, bytes: &[u8], position: u64) -> io::Result<()> {
        assert_eq!(
            position,
            self.logical_end(),
            "direct appends are sequential"
        );
        let alignment = self.file.alignment() as usize;
        let carried = self.tail.borrow().len();
        let total = carried + bytes.len();
        let padded = total.div_ceil(alignment) * alignment;
        let mut buffer = self.file.alloc_dma_buffer(padded);
        {
            let out = buffer.as_bytes_mut();
            out[..carried].copy_from_slice(&self.tail.borrow());
            out[carried..total].copy_from_slice(bytes);
            out[total..].fill(0);
        }
        let start = self.tail_position.get();
        let written = self.file.write_at(buffer, start).await.map_err(to_io)?;
        if written != padded {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                format!("short direct write: {written} of {padded} bytes"),
            ));
        }
        // The new partial block (if any) is carried into the next write.
        let full_blocks = total / alignment * alignment;
        let mut tail = self.tail.borrow_mut();
        let mut next_tail = Vec::with_capacity(total - full_blocks);
        if full_blocks >= carried {
            next_tail.extend_from_slice(&bytes[full_blocks - carried..]);
        } else {
            next_tail.extend_from_slice(&tail[full_blocks..]);
            next_tail.extend_from_slice(bytes);
        }
        *tail = next_tail;
        self.tail_position.set(start + full_blocks as u64);
        Ok(())
    }

    /// Cuts the zero padding past the logical end; the descriptor closes
    /// when the appender is dropped.
    pub async fn finish(&self) -> io::Result<()> {
        self.file.truncate(self.logical_end()).await.map_err(to_io)
    }
}
