//! `gregor-perf limits`: this machine's ceilings, measured the same way every
//! time, so that every benchmark number can be shown as a share of what the
//! hardware allows. Fixed parameters (not tunables) keep runs comparable:
//!
//! - sequential write, buffered 1 MiB writes, fdatasync every 32 MiB and at
//!   the end (what a broker's group commit does at best);
//! - sequential write with O_DIRECT, 1 MiB aligned writes, fdatasync at end;
//! - 4 KiB append + fdatasync, one at a time: the latency floor of acks=all;
//! - loopback TCP, one stream, 1 MiB writes for 2 s;
//! - memcpy of 1 MiB buffers for 1 s.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::keys::SplitMix64;
use crate::stats::{new_hist, LatencySummary};

const CHUNK: usize = 1 << 20;
const SYNC_EVERY: u64 = 32 << 20;
const FSYNC_APPEND: usize = 4096;
const FSYNC_COUNT: u64 = 2000;
const FSYNC_TIME_MAX: Duration = Duration::from_secs(5);
const TCP_TIME: Duration = Duration::from_secs(2);
const MEMCPY_TIME: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Limits {
    pub measured_at_unix_s: u64,
    pub host: String,
    pub kernel: String,
    pub cpus: usize,
    pub dir: String,
    pub write_size_bytes: u64,
    /// Buffered 1 MiB writes + fdatasync every 32 MiB, MB/s (10^6 B/s).
    pub seq_write_fdatasync_mb_s: f64,
    /// O_DIRECT 1 MiB writes; None where the filesystem refuses O_DIRECT.
    pub seq_write_odirect_mb_s: Option<f64>,
    pub odirect_error: Option<String>,
    /// 4 KiB append + fdatasync latency.
    pub fsync_4k: LatencySummary,
    pub fsync_4k_per_s: f64,
    pub loopback_tcp_mb_s: f64,
    pub memcpy_mb_s: f64,
}

pub fn default_cache_path() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("gregor-perf").join("limits.json")
}

pub fn load(path: &Path) -> Result<Limits> {
    let text = fs::read_to_string(path)
        .with_context(|| format!("cannot read limits {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("bad limits file {}", path.display()))
}

pub fn save(limits: &Limits, path: &Path) -> Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let text = serde_json::to_string_pretty(limits)?;
    fs::write(path, text + "\n").with_context(|| format!("cannot write {}", path.display()))
}

pub fn measure(dir: &Path, write_size: u64, progress: &dyn Fn(&str)) -> Result<Limits> {
    if !dir.is_dir() {
        bail!("--dir {} is not a directory", dir.display());
    }
    let write_size = write_size.max(SYNC_EVERY).div_ceil(CHUNK as u64) * CHUNK as u64;
    let file = dir.join(format!(".gregor-perf-limits-{}.tmp", std::process::id()));
    let _cleanup = RemoveOnDrop(file.clone());

    progress("sequential write + fdatasync");
    let seq = seq_write_fdatasync(&file, write_size)?;
    let _ = fs::remove_file(&file);
    progress("sequential write, O_DIRECT");
    let (odirect, odirect_error) = match seq_write_odirect(&file, write_size) {
        Ok(v) => (Some(v), None),
        Err(e) => (None, Some(format!("{e:#}"))),
    };
    let _ = fs::remove_file(&file);
    progress("4 KiB append + fdatasync");
    let (fsync_4k, fsync_4k_per_s) = fsync_latency(&file)?;
    let _ = fs::remove_file(&file);
    progress("loopback TCP");
    let tcp = loopback_tcp()?;
    progress("memcpy");
    let memcpy = memcpy_bandwidth();

    Ok(Limits {
        measured_at_unix_s: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        host: read_trim("/proc/sys/kernel/hostname"),
        kernel: read_trim("/proc/sys/kernel/osrelease"),
        cpus: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        dir: dir
            .canonicalize()
            .unwrap_or(dir.to_path_buf())
            .display()
            .to_string(),
        write_size_bytes: write_size,
        seq_write_fdatasync_mb_s: seq,
        seq_write_odirect_mb_s: odirect,
        odirect_error,
        fsync_4k,
        fsync_4k_per_s,
        loopback_tcp_mb_s: tcp,
        memcpy_mb_s: memcpy,
    })
}

pub fn read_trim(path: &str) -> String {
    fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

struct RemoveOnDrop(PathBuf);
impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

fn fdatasync(f: &File) -> Result<()> {
    // SAFETY: a valid open fd.
    if unsafe { libc::fdatasync(f.as_raw_fd()) } != 0 {
        return Err(std::io::Error::last_os_error()).context("fdatasync");
    }
    Ok(())
}

fn random_bytes(len: usize) -> Vec<u8> {
    crate::keys::filler(crate::workload::PayloadKind::Random, len, 0x5eed)
}

fn mb_per_s(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / d.as_secs_f64().max(1e-9) / 1e6
}

fn seq_write_fdatasync(path: &Path, size: u64) -> Result<f64> {
    let buf = random_bytes(CHUNK);
    let mut f = File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let t = Instant::now();
    let mut written = 0u64;
    while written < size {
        f.write_all(&buf).context("write")?;
        written += CHUNK as u64;
        if written.is_multiple_of(SYNC_EVERY) {
            fdatasync(&f)?;
        }
    }
    fdatasync(&f)?;
    Ok(mb_per_s(written, t.elapsed()))
}

/// A heap buffer aligned for O_DIRECT.
struct AlignedBuf {
    ptr: *mut u8,
    layout: std::alloc::Layout,
}

impl AlignedBuf {
    fn new(len: usize, align: usize) -> AlignedBuf {
        let layout = std::alloc::Layout::from_size_align(len, align).expect("valid layout");
        // SAFETY: non-zero size layout.
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        if ptr.is_null() {
            std::alloc::handle_alloc_error(layout);
        }
        AlignedBuf { ptr, layout }
    }
    fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: ptr is valid for layout.size() bytes and uniquely owned.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.layout.size()) }
    }
    fn as_slice(&self) -> &[u8] {
        // SAFETY: as above.
        unsafe { std::slice::from_raw_parts(self.ptr, self.layout.size()) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: allocated with this layout.
        unsafe { std::alloc::dealloc(self.ptr, self.layout) }
    }
}

fn seq_write_odirect(path: &Path, size: u64) -> Result<f64> {
    let mut buf = AlignedBuf::new(CHUNK, 4096);
    buf.as_mut_slice().copy_from_slice(&random_bytes(CHUNK));
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .with_context(|| format!("cannot open {} with O_DIRECT", path.display()))?;
    let t = Instant::now();
    let mut written = 0u64;
    while written < size {
        f.write_all(buf.as_slice()).context("O_DIRECT write")?;
        written += CHUNK as u64;
    }
    fdatasync(&f)?;
    Ok(mb_per_s(written, t.elapsed()))
}

fn fsync_latency(path: &Path) -> Result<(LatencySummary, f64)> {
    let buf = random_bytes(FSYNC_APPEND);
    let mut f = OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    let mut h = new_hist();
    let start = Instant::now();
    let mut n = 0u64;
    while n < FSYNC_COUNT && start.elapsed() < FSYNC_TIME_MAX {
        let t = Instant::now();
        f.write_all(&buf).context("append")?;
        fdatasync(&f)?;
        crate::stats::record_ns(&mut h, t.elapsed().as_nanos() as u64);
        n += 1;
    }
    let per_s = n as f64 / start.elapsed().as_secs_f64().max(1e-9);
    let summary = LatencySummary::of(&h).context("no fdatasync measured")?;
    Ok((summary, per_s))
}

fn loopback_tcp() -> Result<f64> {
    let listener = TcpListener::bind("127.0.0.1:0").context("bind loopback")?;
    let addr = listener.local_addr()?;
    let reader = std::thread::spawn(move || -> std::io::Result<(u64, Instant)> {
        let (mut s, _) = listener.accept()?;
        let mut buf = vec![0u8; CHUNK];
        let mut total = 0u64;
        loop {
            let n = s.read(&mut buf)?;
            if n == 0 {
                return Ok((total, Instant::now()));
            }
            total += n as u64;
        }
    });
    let mut s = TcpStream::connect(addr).context("connect loopback")?;
    let buf = random_bytes(CHUNK);
    let start = Instant::now();
    while start.elapsed() < TCP_TIME {
        for _ in 0..16 {
            s.write_all(&buf).context("loopback write")?;
        }
    }
    drop(s);
    let (total, end) = reader
        .join()
        .map_err(|_| anyhow::anyhow!("loopback reader panicked"))?
        .context("loopback read")?;
    Ok(mb_per_s(total, end.duration_since(start)))
}

fn memcpy_bandwidth() -> f64 {
    let src = random_bytes(CHUNK);
    let mut dst = vec![0u8; CHUNK];
    let mut rng = SplitMix64::new(1);
    let start = Instant::now();
    let mut copied = 0u64;
    while start.elapsed() < MEMCPY_TIME {
        for _ in 0..64 {
            dst.copy_from_slice(std::hint::black_box(&src));
            std::hint::black_box(&mut dst);
            copied += CHUNK as u64;
        }
    }
    // Touch the result so the copies cannot be elided.
    let i = rng.below(CHUNK as u64) as usize;
    assert_eq!(dst[i], src[i]);
    mb_per_s(copied, start.elapsed())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_round_trip_through_the_cache_file() {
        let dir = std::env::temp_dir().join(format!("gregor-perf-test-{}", std::process::id()));
        let path = dir.join("sub").join("limits.json");
        let l = Limits {
            measured_at_unix_s: 1,
            host: "h".into(),
            kernel: "k".into(),
            cpus: 2,
            dir: "/".into(),
            write_size_bytes: 1,
            seq_write_fdatasync_mb_s: 450.0,
            seq_write_odirect_mb_s: None,
            odirect_error: Some("EINVAL".into()),
            fsync_4k: LatencySummary::default(),
            fsync_4k_per_s: 7000.0,
            loopback_tcp_mb_s: 2700.0,
            memcpy_mb_s: 22000.0,
        };
        save(&l, &path).unwrap();
        let back = load(&path).unwrap();
        assert_eq!(back.seq_write_fdatasync_mb_s, 450.0);
        assert_eq!(back.odirect_error.as_deref(), Some("EINVAL"));
        fs::remove_dir_all(&dir).unwrap();
        assert!(load(&path).is_err());
    }

    #[test]
    fn aligned_buffer_is_aligned() {
        let mut b = AlignedBuf::new(8192, 4096);
        assert_eq!(b.as_mut_slice().as_ptr() as usize % 4096, 0);
        assert_eq!(b.as_slice().len(), 8192);
    }
}
