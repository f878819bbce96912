//! The body of one shard thread: join the mesh, build the shard (shard 0
//! with the controller), open its partitions, load its groups, start its
//! background tasks, accept connections until the stop flag, then close.

use std::rc::Rc;
use std::time::Duration;

use tracing::warn;

use crate::cluster::listener::serve_controller_listener;
use crate::cluster::peers::ControllerPeers;
use crate::config::BrokerConfig;
use crate::controller::{
    Backend, BrokerLifecycle, Controller, MetadataStart, NoPeers, QuorumDriver, QuorumParts,
    QuorumTransport,
};
use crate::disk::quorum_log::QuorumLogFile;
use crate::groups::GroupHost;
use crate::io::socket::bind_listener;
use crate::io::splice::SpliceRing;
use crate::mesh::{Mesh, MeshEnds};
use crate::net::connection::accept_loop;
use crate::net::metrics_http::{bind_metrics, serve_http};
use crate::shard::{Shard, ShardParts};
use crate::stop::StopFlag;
use crate::txns::TxnHost;
use engine::metadata::BrokerRegistration;

/// What a shard thread tells the main thread while it starts.
#[derive(Debug)]
pub enum StartReport {
    /// The shard began this step (logged by the main thread if the start
    /// takes long, so a start that hangs says where).
    Step {
        shard: usize,
        step: &'static str,
    },
    /// Serving, with this many partitions.
    Ready {
        shard: usize,
        partitions: usize,
    },
    Failed(String),
}

pub type Ready = std::sync::mpsc::Sender<StartReport>;

/// The body of one shard thread.
pub async fn run_shard(
    id: usize,
    config: BrokerConfig,
    metadata: MetadataStart,
    clean: bool,
    mesh: MeshEnds,
    stop: StopFlag,
    ready: Ready,
) -> bool {
    let count = config.shard_count;
    let step = |step| {
        let _ = ready.send(StartReport::Step { shard: id, step });
    };
    step("connecting to the other shards");
    let (senders, receivers) = mesh.connect().await;
    let config = Rc::new(config);
    let mesh = Rc::new(Mesh::new(id, count, senders));
    let MetadataStart {
        image,
        persisted,
        applied,
    } = metadata;
    let backend = Rc::new(Backend::new(id, config.clone(), image));
    // Shard 0 hosts the controller and drives the metadata quorum.
    let (controller, lifecycle) = if id == 0 {
        step("starting the metadata quorum");
        match start_controller(&config, persisted, applied, &backend, &mesh, &stop).await {
            Ok((controller, lifecycle)) => (Some(controller), Some(lifecycle)),
            Err(reason) => {
                let _ = ready.send(StartReport::Failed(format!("shard {id}: {reason}")));
                stop.raise();
                return false;
            }
        }
    } else {
        drop(persisted);
        (None, None)
    };
    step("binding the Kafka listener");
    let listener = match bind_listener(config.listen, true) {
        Ok(listener) => listener,
        Err(e) => {
            let _ = ready.send(StartReport::Failed(format!(
                "shard {id}: cannot listen on {}: {e}",
                config.listen
            )));
            stop.raise();
            return false;
        }
    };
    // In a cluster, this shard's own port for followers' fetches of the
    // partitions it owns (one listener per shard, not shared).
    let replication_listener = if config.quorum.voters.len() > 1 {
        step("binding the replication listener");
        let addr = replication_listen_addr(&config, id);
        match bind_listener(addr, false) {
            Ok(listener) => Some(listener),
            Err(e) => {
                let _ = ready.send(StartReport::Failed(format!(
                    "shard {id}: cannot listen for replica fetches on {addr}: {e} (the replication ports are the Kafka port + {REPLICATION_PORT_OFFSET} + shard)"
                )));
                stop.raise();
                return false;
            }
        }
    } else {
        None
    };
    step("setting up the splice ring");
    let splice = match SpliceRing::new() {
        Ok(ring) => ring,
        Err(e) => {
            let _ = ready.send(StartReport::Failed(format!(
                "shard {id}: cannot set up the io_uring splice ring: {e}"
            )));
            stop.raise();
            return false;
        }
    };
    let groups = Rc::new(GroupHost::new(config.groups, backend.clone(), stop.clone()));
    let txns = Rc::new(TxnHost::new(backend.clone(), stop.clone()));
    let shard = Shard::new(ShardParts {
        config: config.clone(),
        backend: backend.clone(),
        mesh,
        controller,
        groups: groups.clone(),
        txns: txns.clone(),
        stop: stop.clone(),
        splice,
    });
    for (peer, receiver) in receivers {
        let shard = shard.clone();
        glommio::spawn_local(async move {
            while let Some(message) = receiver.recv().await {
                shard.handle_mesh_message(peer, message);
            }
        })
        .detach();
    }
    step("opening partitions");
    backend.open_partitions(clean).await;
    step("loading consumer groups");
    groups.load().await;
    let maintenance_queue = glommio::executor().create_task_queue(
        glommio::Shares::Static(10),
        glommio::Latency::NotImportant,
        "log-maintenance",
    );
    match glommio::spawn_local_into(shard.clone().run_maintenance(), maintenance_queue) {
        Ok(task) => {
            task.detach();
        }
        Err(e) => {
            warn!(shard = id, error = %e, "no low-priority queue; maintenance runs in the default one");
            glommio::spawn_local(shard.clone().run_maintenance()).detach();
        }
    }
    glommio::spawn_local(groups.clone().run_ticker()).detach();
    glommio::spawn_local(shard.clone().run_isr_checks()).detach();
    glommio::spawn_local(groups.clone().follow_offsets_leadership()).detach();
    glommio::spawn_local(txns.clone().follow_leadership()).detach();
    glommio::spawn_local(txns.clone().run_timeout_checker()).detach();
    if let Some(lifecycle) = &lifecycle {
        step("waiting for the metadata quorum to count this broker live");
        lifecycle.wait_unfenced(&stop).await;
    }
    let partitions = backend.owned_partition_count();
    let _ = ready.send(StartReport::Ready {
        shard: id,
        partitions,
    });
    let accept = glommio::spawn_local(accept_loop(shard.clone(), listener));
    let replication_accept = replication_listener
        .map(|listener| glommio::spawn_local(accept_loop(shard.clone(), listener)));
    let metrics_http = match (id, shard.config.metrics_listen) {
        (0, Some(addr)) => bind_metrics(addr).map(|listener| {
            tracing::info!(%addr, "metrics at http://{addr}/metrics");
            glommio::spawn_local(serve_http(shard.clone(), listener))
        }),
        _ => None,
    };
    stop.wait().await;
    drop(accept.cancel());
    if let Some(task) = replication_accept {
        drop(task.cancel());
    }
    if let Some(task) = metrics_http {
        drop(task.cancel());
    }
    let clean = backend.close_partitions().await;
    // Peers may still be closing; let in-flight mesh replies drain.
    glommio::timer::sleep(Duration::from_millis(50)).await;
    shard.mesh.close();
    clean
}

/// Shard 0's controller: the quorum driver over the quorum log, links to
/// the other voters and the controller listener, all in a task queue of
/// their own with a large share, so a saturated data path delays neither
/// heartbeats nor votes.
async fn start_controller(
    config: &Rc<BrokerConfig>,
    persisted: engine::raft::PersistedQuorum,
    applied: u64,
    backend: &Rc<Backend>,
    mesh: &Rc<Mesh>,
    stop: &StopFlag,
) -> Result<(Rc<Controller>, Rc<BrokerLifecycle>), String> {
    let task_queue = glommio::executor().create_task_queue(
        glommio::Shares::Static(QUORUM_TASK_SHARES),
        glommio::Latency::Matters(Duration::from_millis(QUORUM_LATENCY_MS)),
        "metadata-quorum",
    );
    let settings = &config.quorum;
    let lone_voter = settings.voters.len() <= 1;
    let peers = (!lone_voter).then(|| {
        ControllerPeers::start(config.node_id, &settings.voters, task_queue, stop.clone())
    });
    let listener = match settings.listen {
        Some(addr) => Some(
            bind_listener(addr, false)
                .map_err(|e| format!("cannot listen for the controller on {addr}: {e}"))?,
        ),
        None => None,
    };
    let log = QuorumLogFile::open(&config.data_dir)
        .await
        .map_err(|e| format!("cannot open the metadata quorum log: {e}"))?;
    let transport: Rc<dyn QuorumTransport> = match &peers {
        Some(peers) => peers.clone(),
        None => Rc::new(NoPeers),
    };
    let quorum = QuorumDriver::start(
        QuorumParts {
            node_id: config.node_id,
            settings: settings.clone(),
            persisted,
            applied,
            log,
            transport,
            backend: backend.clone(),
            mesh: mesh.clone(),
            stop: stop.clone(),
        },
        task_queue,
    )
    .map_err(|e| format!("cannot start the metadata quorum: {e}"))?;
    let controller = Rc::new(Controller::new(quorum.clone(), peers, backend.clone()));
    if let Some(listener) = listener {
        let serving = serve_controller_listener(listener, quorum, controller.clone());
        glommio::spawn_local_into(serving, task_queue)
            .map_err(|e| format!("cannot start the controller listener: {e}"))?
            .detach();
    }
    let fencing = controller.clone().fence_expired_brokers(
        settings.heartbeat_interval_ms,
        settings.session_timeout_ms,
        stop.clone(),
    );
    glommio::spawn_local_into(fencing, task_queue)
        .map_err(|e| format!("cannot start broker session expiry: {e}"))?
        .detach();
    let lifecycle = BrokerLifecycle::start(
        controller.clone(),
        registration(config),
        settings.heartbeat_interval_ms,
        task_queue,
        stop.clone(),
    )
    .map_err(|e| format!("cannot start broker registration: {e}"))?;
    Ok((controller, lifecycle))
}

/// How this broker presents itself to the quorum, as a new incarnation.
fn registration(config: &BrokerConfig) -> BrokerRegistration {
    BrokerRegistration {
        node_id: config.node_id,
        incarnation_id: *uuid::Uuid::new_v4().as_bytes(),
        host: config.advertise_host.clone(),
        port: config.advertise_port,
        replication_host: config.advertise_host.clone(),
        replication_port_base: config.listen.port().saturating_add(REPLICATION_PORT_OFFSET),
        shard_count: config.shard_count as u32,
        rack: None,
    }
}

/// Shard i of a broker serves replica fetches on its Kafka port + this + i
/// (brokers whose ports are 100 apart never collide).
const REPLICATION_PORT_OFFSET: u16 = 10;

/// Where shard `shard` listens for followers' fetches.
fn replication_listen_addr(config: &BrokerConfig, shard: usize) -> std::net::SocketAddr {
    let port = config
        .listen
        .port()
        .saturating_add(REPLICATION_PORT_OFFSET)
        .saturating_add(shard as u16);
    std::net::SocketAddr::new(config.listen.ip(), port)
}

/// The quorum's share of the core against the data path's default queue
/// (1000): its tasks are short and rare, so when both have work it always
/// goes first.
const QUORUM_TASK_SHARES: usize = 5000;
/// How soon the executor preempts other queues for it.
const QUORUM_LATENCY_MS: u64 = 1;
