//! librdkafka client configurations (producer, consumer, admin) and the
//! reachability check run before anything else.

use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use rdkafka::admin::AdminClient;
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;

use crate::workload::{ConsumerStart, Workload};

/// How long to wait for the bootstrap broker to answer a Metadata request.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

fn base_config(bootstrap: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap);
    c
}

pub(super) fn producer_config(
    w: &Workload,
    bootstrap: &str,
    client_id: &str,
    acks: &str,
) -> ClientConfig {
    let mut c = base_config(bootstrap);
    c.set("client.id", client_id)
        .set("acks", acks)
        .set("compression.type", w.compression.as_str())
        .set("batch.size", w.batch_size.0.to_string())
        .set("linger.ms", w.linger_ms.to_string())
        // Java's default partitioner, so keyed runs spread like Java clients'.
        .set("partitioner", "murmur2_random")
        // Gregor has no InitProducerId yet; librdkafka's default is off too.
        .set("enable.idempotence", "false")
        .set("message.timeout.ms", "60000")
        // Room for ~1 s of backlog at high rates before the pacer sees QueueFull.
        .set("queue.buffering.max.messages", "1000000");
    for (k, v) in &w.producer_config {
        c.set(k, v);
    }
    c
}

pub(super) fn consumer_config(
    w: &Workload,
    bootstrap: &str,
    group: &str,
    client_id: &str,
) -> ClientConfig {
    let mut c = base_config(bootstrap);
    // Fresh topics: "earliest" loses nothing produced before offsets resolve.
    // Only a prefill that consumers should skip needs "latest".
    let reset = if w.prefill.0 > 0 && w.consumer_start == ConsumerStart::End {
        "latest"
    } else {
        "earliest"
    };
    c.set("group.id", group)
        .set("client.id", client_id)
        .set("auto.offset.reset", reset)
        .set("enable.partition.eof", "false")
        // Offsets are stored only for records actually counted, so that a
        // record handed back while consumers are held is never committed.
        .set("enable.auto.offset.store", "false");
    for (k, v) in &w.consumer_config {
        c.set(k, v);
    }
    c
}

pub(super) fn admin(bootstrap: &str) -> Result<AdminClient<DefaultClientContext>> {
    base_config(bootstrap)
        .create()
        .map_err(|e| anyhow!("bad bootstrap {bootstrap:?}: {e}"))
}

/// Fails with one clear line if nobody answers Metadata at `bootstrap`.
pub(super) fn check_reachable(bootstrap: &str) -> Result<()> {
    // A plain TCP connect first: "connection refused" at once beats a
    // librdkafka timeout, and names the real problem.
    let first = bootstrap.split(',').next().unwrap_or(bootstrap).trim();
    let addrs: Vec<std::net::SocketAddr> = std::net::ToSocketAddrs::to_socket_addrs(first)
        .map_err(|e| anyhow!("bad bootstrap address {first:?}: {e} (expected HOST:PORT)"))?
        .collect();
    let mut last_err = None;
    let mut connected = false;
    for addr in &addrs {
        match std::net::TcpStream::connect_timeout(addr, CONNECT_TIMEOUT) {
            Ok(_) => {
                connected = true;
                break;
            }
            Err(e) => last_err = Some(e),
        }
    }
    if !connected {
        bail!(
            "cannot connect to bootstrap {first}: {}",
            last_err
                .map(|e| e.to_string())
                .unwrap_or_else(|| "no address".into())
        );
    }
    let a = admin(bootstrap)?;
    a.inner()
        .fetch_metadata(None, CONNECT_TIMEOUT)
        .map_err(|e| {
            anyhow!(
                "cannot reach a Kafka broker at {bootstrap}: no Metadata answer within {} s ({e})",
                CONNECT_TIMEOUT.as_secs()
            )
        })?;
    Ok(())
}
