//! L6: starting and stopping the whole broker: the data-dir lock, the port probe,
//! metadata load, one executor per shard, signals, clean-shutdown marker.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::Duration;

use glommio::{LocalExecutorBuilder, Placement};
use tracing::{error, info, warn};

mod shard_thread;
mod signals;

use crate::config::BrokerConfig;
use crate::controller::bootstrap_metadata;
use crate::limits::{raise_descriptor_limit, DescriptorBudget};
use crate::mesh::{build_mesh, MESH_QUEUE_CAPACITY};
use crate::stop::StopFlag;
use shard_thread::{run_shard, StartReport};
use signals::{block_stop_signals, take_stop_signal, wait_for_stop_signal};

const CLEAN_SHUTDOWN_MARKER: &str = ".clean-shutdown";
const LOCK_FILE: &str = ".lock";
/// Memory glommio registers for I/O buffers per executor.
const EXECUTOR_IO_MEMORY_BYTES: usize = 10 << 20;
/// How often a start that has not finished logs where each shard is.
const START_PROGRESS_LOG_INTERVAL: Duration = Duration::from_secs(15);
/// How often a start looks for a stop signal (a broker waiting for its
/// quorum may wait for good; Ctrl-C must still stop it).
const START_SIGNAL_POLL: Duration = Duration::from_millis(100);

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
    #[error("metadata quorum: {0}")]
    Quorum(String),
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

/// How long start-up waits for a port held by a just-killed broker: the
/// kernel tears down an io_uring (and the listening sockets its pending
/// accepts hold) asynchronously after the process dies.
const PORT_RELEASE_WAIT_MS: u64 = 10_000;
const PORT_PROBE_INTERVAL_MS: u64 = 100;

/// Shard listeners set SO_REUSEPORT, which would silently share the port with
/// another live broker (or a dying one's leftover socket); a plain bind first
/// tells us the port is really free.
fn probe_port(listen: std::net::SocketAddr) -> Result<(), BrokerError> {
    let attempts = PORT_RELEASE_WAIT_MS / PORT_PROBE_INTERVAL_MS;
    for attempt in 0..=attempts {
        match std::net::TcpListener::bind(listen) {
            Ok(listener) => {
                drop(listener);
                return Ok(());
            }
            Err(e) if e.kind() == io::ErrorKind::AddrInUse && attempt < attempts => {
                if attempt == 0 {
                    warn!(%listen, "port is in use; waiting up to {PORT_RELEASE_WAIT_MS} ms for it to be released");
                }
                std::thread::sleep(Duration::from_millis(PORT_PROBE_INTERVAL_MS));
            }
            Err(source) => {
                return Err(BrokerError::PortInUse {
                    addr: listen.to_string(),
                    source,
                })
            }
        }
    }
    unreachable!("the last attempt returns")
}

pub fn run(mut config: BrokerConfig) -> Result<(), BrokerError> {
    assert!(config.shard_count > 0);
    config = with_descriptor_budget(config);
    // glommio opens directories through io_uring without a directory
    // descriptor, so a relative path fails there with EBADF (the README's
    // `gregor serve` uses ./gregor-data): make it absolute once, here.
    config.data_dir =
        std::path::absolute(&config.data_dir).map_err(|source| BrokerError::DataDir {
            dir: config.data_dir.display().to_string(),
            source,
        })?;
    let dir_error = |source| BrokerError::DataDir {
        dir: config.data_dir.display().to_string(),
        source,
    };
    std::fs::create_dir_all(&config.data_dir).map_err(dir_error)?;
    let _lock = lock_data_dir(&config.data_dir)?;
    probe_port(config.listen)?;
    let marker = config.data_dir.join(CLEAN_SHUTDOWN_MARKER);
    let clean = marker.exists();
    if clean {
        std::fs::remove_file(&marker).map_err(dir_error)?;
        File::open(&config.data_dir)
            .and_then(|d| d.sync_all())
            .map_err(dir_error)?;
    }
    let voters = &config.quorum.voters;
    if !voters.is_empty() && !voters.iter().any(|v| v.node_id == config.node_id) {
        return Err(BrokerError::Quorum(format!(
            "node {} is not among the controller quorum voters; observers are not supported yet",
            config.node_id
        )));
    }
    let lone_voter = voters.len() <= 1;
    if !lone_voter && config.quorum.listen.is_none() {
        return Err(BrokerError::Quorum(
            "a quorum of several voters needs --controller-listen".into(),
        ));
    }
    let metadata = bootstrap_metadata(
        &config.data_dir,
        config.shard_count,
        config.offsets_topic_partitions,
        lone_voter,
    )
    .map_err(dir_error)?;
    info!(
        listen = %config.listen,
        advertise = %format!("{}:{}", config.advertise_host, config.advertise_port),
        data_dir = %config.data_dir.display(),
        shards = config.shard_count,
        recovery = if clean { "clean start" } else { "scanning active segments" },
        "starting gregor"
    );

    block_stop_signals();
    let stop = StopFlag::new()
        .map_err(|e| BrokerError::Executor(format!("cannot create the stop eventfd: {e}")))?;
    let mut mesh_ends = build_mesh(config.shard_count, MESH_QUEUE_CAPACITY).into_iter();
    let (ready_sender, ready) = std::sync::mpsc::channel();
    let mut executors = Vec::with_capacity(config.shard_count);
    for shard in 0..config.shard_count {
        let config = config.clone();
        let metadata = metadata.clone();
        let mesh = mesh_ends.next().expect("one set of mesh ends per shard");
        let stop = stop.clone();
        let ready_sender = ready_sender.clone();
        let handle = LocalExecutorBuilder::new(Placement::Unbound)
            .name(&format!("shard-{shard}"))
            .io_memory(EXECUTOR_IO_MEMORY_BYTES)
            .spawn(move || async move {
                pin_to_core(shard);
                run_shard(shard, config, metadata, clean, mesh, stop, ready_sender).await
            })
            .map_err(|e| BrokerError::Executor(e.to_string()))?;
        executors.push(handle);
    }
    drop(ready_sender);

    let mut start_error = None;
    let mut partitions = 0;
    let mut ready_shards = 0;
    // The step each shard is in, reported when a start takes long.
    let mut steps: Vec<&'static str> = vec!["starting its executor"; config.shard_count];
    let started = std::time::Instant::now();
    let mut progress_logged = started;
    let mut stopped_while_starting = None;
    while ready_shards < config.shard_count {
        match ready.recv_timeout(START_SIGNAL_POLL) {
            Ok(StartReport::Step { shard, step }) => steps[shard] = step,
            Ok(StartReport::Ready {
                shard,
                partitions: count,
            }) => {
                steps[shard] = "serving";
                partitions += count;
                ready_shards += 1;
            }
            Ok(StartReport::Failed(reason)) => {
                stop.raise();
                start_error.get_or_insert(BrokerError::ShardStart { reason });
                ready_shards += 1;
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                if stopped_while_starting.is_none() {
                    if let Some(signal) = take_stop_signal() {
                        info!(signal, "stop signal while starting: stopping");
                        stopped_while_starting = Some(signal);
                        stop.raise();
                    }
                }
                if progress_logged.elapsed() < START_PROGRESS_LOG_INTERVAL {
                    continue;
                }
                progress_logged = std::time::Instant::now();
                let waiting: Vec<String> = steps
                    .iter()
                    .enumerate()
                    .filter(|(_, step)| **step != "serving")
                    .map(|(shard, step)| format!("shard {shard}: {step}"))
                    .collect();
                warn!(
                    seconds = started.elapsed().as_secs(),
                    waiting = %waiting.join("; "),
                    "still starting"
                );
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                stop.raise();
                start_error.get_or_insert(BrokerError::ShardStart {
                    reason: "shard thread exited".into(),
                });
                break;
            }
        }
    }
    if start_error.is_none() && stopped_while_starting.is_none() {
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

/// Raises the descriptor limit and splits it (`limits.rs`), saying how.
fn with_descriptor_budget(mut config: BrokerConfig) -> BrokerConfig {
    let limit = match raise_descriptor_limit() {
        Ok((before, after)) => {
            if after > before {
                info!(
                    from = before,
                    to = after,
                    "raised the open-file limit (RLIMIT_NOFILE) to its hard limit"
                );
            }
            after
        }
        Err(e) => {
            warn!(error = %e, "cannot read or raise the open-file limit; assuming 1024");
            1024
        }
    };
    config.descriptors = DescriptorBudget::plan(limit, config.shard_count);
    info!(
        open_file_limit = limit,
        segment_files_per_shard = config.descriptors.segment_files_per_shard,
        connections_per_shard = config.descriptors.connections_per_shard,
        "descriptor budget"
    );
    config
}
