//! The body of one shard thread: join the mesh, build the shard (shard 0
//! with the controller), open its partitions, load its groups, start its
//! background tasks, accept connections until the stop flag, then close.

use std::rc::Rc;
use std::time::Duration;

use engine::metadata::ClusterImage;
use glommio::channels::channel_mesh::{Full, MeshBuilder};
use tracing::warn;

use crate::config::BrokerConfig;
use crate::controller::{Backend, Controller};
use crate::disk::metadata_log::MetadataLog;
use crate::groups::GroupHost;
use crate::io::socket::bind_listener;
use crate::io::splice::SpliceRing;
use crate::mesh::{Mesh, MeshMessage};
use crate::net::connection::accept_loop;
use crate::net::metrics_http::{bind_metrics, serve_http};
use crate::shard::{Shard, ShardParts};
use crate::stop::StopFlag;

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
    image: ClusterImage,
    clean: bool,
    mesh: MeshBuilder<MeshMessage, Full>,
    stop: StopFlag,
    ready: Ready,
) -> bool {
    let count = config.shard_count;
    let step = |step| {
        let _ = ready.send(StartReport::Step { shard: id, step });
    };
    step("joining the shard mesh");
    let (senders, mut receivers) = match mesh.join().await {
        Ok(joined) => joined,
        Err(e) => {
            let _ = ready.send(StartReport::Failed(format!(
                "shard {id}: cannot join the shard mesh: {e}"
            )));
            return false;
        }
    };
    let config = Rc::new(config);
    let mesh = Rc::new(Mesh::new(id, count, senders));
    let backend = Rc::new(Backend::new(id, config.clone(), image));
    // Shard 0 hosts the controller.
    let controller = if id == 0 {
        step("opening the metadata log");
        match MetadataLog::open(&config.data_dir).await {
            Ok(log) => Some(Controller::new(log, backend.clone(), mesh.clone())),
            Err(e) => {
                let _ = ready.send(StartReport::Failed(format!(
                    "shard {id}: cannot open the metadata log: {e}"
                )));
                stop.raise();
                return false;
            }
        }
    } else {
        None
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
    let shard = Shard::new(ShardParts {
        config: config.clone(),
        backend: backend.clone(),
        mesh,
        controller,
        groups: groups.clone(),
        stop: stop.clone(),
        splice,
    });
    for (peer, receiver) in receivers.streams() {
        let shard = shard.clone();
        glommio::spawn_local(async move {
            while let Some(message) = receiver.recv().await {
                shard.handle_mesh_message(peer, message);
            }
        })
        .detach();
    }
    step("opening partitions");
    if let Err(e) = backend.open_partitions(clean).await {
        let _ = ready.send(StartReport::Failed(format!(
            "shard {id}: cannot open partitions: {e}"
        )));
        stop.raise();
        return false;
    }
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
    let partitions = backend.owned_partition_count();
    let _ = ready.send(StartReport::Ready {
        shard: id,
        partitions,
    });
    let accept = glommio::spawn_local(accept_loop(shard.clone(), listener));
    let metrics_http = match (id, shard.config.metrics_listen) {
        (0, Some(addr)) => bind_metrics(addr).map(|listener| {
            tracing::info!(%addr, "metrics at http://{addr}/metrics");
            glommio::spawn_local(serve_http(shard.clone(), listener))
        }),
        _ => None,
    };
    stop.wait().await;
    drop(accept.cancel());
    if let Some(task) = metrics_http {
        drop(task.cancel());
    }
    let clean = backend.close_partitions().await;
    // Peers may still be closing; let in-flight mesh replies drain.
    glommio::timer::sleep(Duration::from_millis(50)).await;
    shard.mesh.close();
    clean
}
