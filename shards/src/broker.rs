//! Starting and stopping the whole broker: the data-dir lock, the port probe,
//! metadata load, one executor per shard, signals, clean-shutdown marker.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::Duration;

use glommio::channels::channel_mesh::MeshBuilder;
use glommio::{LocalExecutorBuilder, Placement};
use tracing::{error, info, warn};

use crate::config::BrokerConfig;
use crate::mesh::MESH_QUEUE_CAPACITY;
use crate::shard::run_shard;
use crate::shutdown::{block_stop_signals, wait_for_stop_signal, StopFlag};

const CLEAN_SHUTDOWN_MARKER: &str = ".clean-shutdown";
const LOCK_FILE: &str = ".lock";
/// Memory glommio registers for I/O buffers per executor.
const EXECUTOR_IO_MEMORY_BYTES: usize = 10 << 20;

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("data dir {dir} is in use by another gregor process (lock {lock} is held)")]
    DataDirLocked { dir: String, lock: String },
    #[error("cannot listen on {addr} (is another broker running on that port?)")]
    PortInUse { addr: String, source: io::Error },
    #[error("data dir {dir}")]
    DataDir { dir: String, source: io::Error },
    #[error("a shard failed to start: {reason}")]
    ShardStart { reason: String },
    #[error("cannot start executor: {0}")]
    Executor(String),
}

/// Takes an exclusive flock on the data dir for the life of the process.
fn lock_data_dir(dir: &Path) -> Result<File, BrokerError> {
    let path = dir.join(LOCK_FILE);
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|source| BrokerError::DataDir {
            dir: dir.display().to_string(),
            source,
        })?;
    // SAFETY: flock on a file descriptor we own.
    let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if locked != 0 {
        return Err(BrokerError::DataDirLocked {
            dir: dir.display().to_string(),
            lock: path.display().to_string(),
        });
    }
    Ok(file)
}

fn pin_to_core(shard: usize) {
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    if cores.is_empty() {
        return;
    }
    let core = cores[shard % cores.len()];
    if !core_affinity::set_for_current(core) {
        warn!(shard, core = core.id, "could not pin shard to its core");
    }
}

pub fn run(config: BrokerConfig) -> Result<(), BrokerError> {
    assert!(config.shard_count > 0);
    let dir_error = |source| BrokerError::DataDir {
        dir: config.data_dir.display().to_string(),
        source,
    };
    std::fs::create_dir_all(&config.data_dir).map_err(dir_error)?;
    let _lock = lock_data_dir(&config.data_dir)?;
    // Shard listeners set SO_REUSEPORT, which would share the port with
    // another broker silently; a plain bind first tells us it is taken.
    drop(
        std::net::TcpListener::bind(config.listen).map_err(|source| BrokerError::PortInUse {
            addr: config.listen.to_string(),
            source,
        })?,
    );
    let marker = config.data_dir.join(CLEAN_SHUTDOWN_MARKER);
    let clean = marker.exists();
    if clean {
        std::fs::remove_file(&marker).map_err(dir_error)?;
        File::open(&config.data_dir)
            .and_then(|d| d.sync_all())
            .map_err(dir_error)?;
    }
    let image = crate::controller::load_and_compact(&config.data_dir).map_err(dir_error)?;
    info!(
        listen = %config.listen,
        advertise = %format!("{}:{}", config.advertise_host, config.advertise_port),
        data_dir = %config.data_dir.display(),
        shards = config.shard_count,
        recovery = if clean { "clean start" } else { "scanning active segments" },
        "starting gregor"
    );

    block_stop_signals();
    let stop = StopFlag::default();
    let mesh = MeshBuilder::full(config.shard_count, MESH_QUEUE_CAPACITY);
    let (ready_sender, ready) = std::sync::mpsc::channel();
    let mut executors = Vec::with_capacity(config.shard_count);
    for shard in 0..config.shard_count {
        let config = config.clone();
        let image = image.clone();
        let mesh = mesh.clone();
        let stop = stop.clone();
        let ready_sender = ready_sender.clone();
        let handle = LocalExecutorBuilder::new(Placement::Unbound)
            .name(&format!("shard-{shard}"))
            .io_memory(EXECUTOR_IO_MEMORY_BYTES)
            .spawn(move || async move {
                pin_to_core(shard);
                run_shard(shard, config, image, clean, mesh, stop, ready_sender).await
            })
            .map_err(|e| BrokerError::Executor(e.to_string()))?;
        executors.push(handle);
    }
    drop(ready_sender);

    let mut start_error = None;
    let mut partitions = 0;
    for _ in 0..config.shard_count {
        match ready.recv() {
            Ok(Ok(count)) => partitions += count,
            Ok(Err(reason)) => {
                stop.raise();
                start_error.get_or_insert(BrokerError::ShardStart { reason });
            }
            Err(_) => {
                stop.raise();
                start_error.get_or_insert(BrokerError::ShardStart {
                    reason: "shard thread exited".into(),
                });
                break;
            }
        }
    }
    if start_error.is_none() {
        info!(listen = %config.listen, partitions, "gregor is serving");
        let signal = wait_for_stop_signal(|| stop.is_raised());
        info!(?signal, "stopping: draining partitions");
        stop.raise();
    }
    let mut all_clean = start_error.is_none();
    for executor in executors {
        match executor.join() {
            Ok(true) => {}
            Ok(false) => all_clean = false,
            Err(e) => {
                error!(error = %e, "shard thread failed");
                all_clean = false;
            }
        }
    }
    if let Some(e) = start_error {
        return Err(e);
    }
    if all_clean {
        File::create(&marker)
            .and_then(|f| f.sync_all())
            .and_then(|_| File::open(&config.data_dir)?.sync_all())
            .map_err(dir_error)?;
        info!("clean shutdown");
    } else {
        warn!("unclean shutdown: the next start scans the active segments");
    }
    std::thread::sleep(Duration::from_millis(1));
    Ok(())
}
