//! THE durable-write helper: every small file that must survive a crash
//! whole (metadata snapshot, index files, checkpoints, compaction swap
//! records) is written through it. The bytes go to `<path>.tmp`, which is
//! fdatasynced, renamed over `path`, and then the directory is synced, so a
//! crash leaves the old file or the new one, never a mix or neither.
//!
//! The work is plain blocking file calls. On a shard they run on the
//! executor's blocking thread pool (`off_shard`), so the shard's own thread
//! never waits on the disk for them.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Writes `bytes` to `path` durably (see the module doc). Blocks: call it
/// before the shards run, or through [`write_file_durably`] on a shard.
pub fn write_file_durably_blocking(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let directory = path
        .parent()
        .ok_or_else(|| io::Error::other(format!("{} has no directory", path.display())))?;
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_data()?;
    drop(file);
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(directory)?.sync_all()
}

/// [`write_file_durably_blocking`] from a shard, on the blocking pool.
pub async fn write_file_durably(path: PathBuf, bytes: Vec<u8>) -> io::Result<()> {
    off_shard(move || write_file_durably_blocking(&path, &bytes)).await
}

/// Runs blocking file-system work (directory listings, recursive removal,
/// renames, path resolution) on the executor's blocking thread pool, so
/// the shard keeps serving meanwhile (DESIGN.md §3: nothing blocks a shard).
pub async fn off_shard<R, F>(work: F) -> R
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    glommio::executor().spawn_blocking(work).await
}
