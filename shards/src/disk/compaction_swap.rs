//! The file side of compaction's segment swap. A crash at any step leaves
//! the old or the new segment set:
//! 1. write `<base>.cleaned`, fdatasync;
//! 2. write `<base>.swapinfo` (the end offset of the replaced range), durably;
//! 3. rename `.cleaned` -> `.swap` and sync the directory: the commit point;
//! 4. delete the replaced segments' files, rename `.swap` -> `.log`, write
//!    its indexes, delete `.swapinfo`.
//!
//! Recovery (`finish_interrupted_swaps`) deletes stray `.cleaned` files and
//! redoes step 4 for any `.swap` it finds.

use std::io;
use std::path::{Path, PathBuf};

use engine::log::segment_file_stem;
use tracing::warn;

use super::durable::{off_shard, write_file_durably};
use super::segment_files::sync_dir;

const CLEANER_CHECKPOINT_FILE: &str = "cleaner-offset-checkpoint";

pub fn path_with(dir: &Path, base: i64, extension: &str) -> PathBuf {
    dir.join(format!("{}.{extension}", segment_file_stem(base)))
}

/// Where the last cleaning pass ended (0: never cleaned).
pub async fn read_cleaner_checkpoint(dir: &Path) -> i64 {
    let path = dir.join(CLEANER_CHECKPOINT_FILE);
    off_shard(move || std::fs::read_to_string(path))
        .await
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(0)
}

pub async fn write_cleaner_checkpoint(dir: &Path, end_offset: i64) -> io::Result<()> {
    write_file_durably(
        dir.join(CLEANER_CHECKPOINT_FILE),
        format!("{end_offset}\n").into_bytes(),
    )
    .await
}

/// Step 2: the end offset of the range the swap replaces.
pub async fn write_swap_info(dir: &Path, base: i64, end_offset: i64) -> io::Result<()> {
    write_file_durably(
        path_with(dir, base, "swapinfo"),
        format!("{end_offset}\n").into_bytes(),
    )
    .await
}

/// Step 3, the commit point: `.cleaned` becomes `.swap`, durably.
pub async fn commit_swap(dir: &Path, base: i64) -> io::Result<()> {
    glommio::io::rename(
        path_with(dir, base, "cleaned"),
        path_with(dir, base, "swap"),
    )
    .await?;
    sync_dir(dir).await
}

/// Step 4's renames, after the replaced segments' files are gone and
/// before the new segment's indexes are written: `.swap` becomes `.log`.
pub async fn swap_into_place(dir: &Path, base: i64) -> io::Result<()> {
    glommio::io::rename(path_with(dir, base, "swap"), path_with(dir, base, "log")).await?;
    Ok(())
}

/// The end of step 4: the swap record goes, durably.
pub async fn finish_swap(dir: &Path, base: i64) -> io::Result<()> {
    glommio::io::remove(path_with(dir, base, "swapinfo")).await?;
    sync_dir(dir).await
}

/// Completes or rolls back a compaction swap a crash interrupted. Runs at
/// start-up before the segments are listed.
pub fn finish_interrupted_swaps(dir: &Path) -> io::Result<()> {
    let mut names: Vec<String> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    names.sort();
    for name in &names {
        if name.ends_with(".cleaned") {
            warn!(dir = %dir.display(), file = %name, "removing an unfinished compaction output");
            std::fs::remove_file(dir.join(name))?;
        }
    }
    for name in &names {
        let Some(stem) = name.strip_suffix(".swap") else {
            continue;
        };
        let Ok(base) = stem.parse::<i64>() else {
            continue;
        };
        let info = std::fs::read_to_string(path_with(dir, base, "swapinfo")).ok();
        let Some(end) = info.and_then(|t| t.trim().parse::<i64>().ok()) else {
            warn!(dir = %dir.display(), file = %name, "compaction swap without its range; dropping it");
            std::fs::remove_file(dir.join(name))?;
            continue;
        };
        warn!(dir = %dir.display(), base, end, "finishing an interrupted compaction swap");
        for other in &names {
            let Some(other_stem) = other.strip_suffix(".log") else {
                continue;
            };
            let Ok(other_base) = other_stem.parse::<i64>() else {
                continue;
            };
            if (base..end).contains(&other_base) {
                for extension in ["log", "index", "timeindex"] {
                    let _ = std::fs::remove_file(path_with(dir, other_base, extension));
                }
            }
        }
        std::fs::rename(dir.join(name), path_with(dir, base, "log"))?;
        std::fs::remove_file(path_with(dir, base, "swapinfo"))?;
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}
