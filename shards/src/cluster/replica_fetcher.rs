//! This shard's replica fetchers (DESIGN.md §5): for each (leader broker,
//! leader shard) that owns partitions this shard follows, one connection to
//! that shard's replication listener and one long-poll Fetch session at a
//! time carrying all of those partitions. A fetch names this broker as
//! replica, the epoch it believes current and the epoch of its last batch;
//! the leader answers with records, its high watermark, or where the logs
//! diverge. Records are appended with the leader's offsets and synced
//! before the next fetch, so a fetch offset is a durable log end, which is
//! what the leader's high watermark counts.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

use engine::protocol::kafka_protocol::messages::{self as km, fetch_request, BrokerId, TopicName};
use engine::protocol::kafka_protocol::protocol::StrBytes;
use engine::protocol::{self as codes};
use engine::replication::EpochEnd;
use glommio::net::TcpStream;
use tracing::{debug, info, warn};

use super::kafka_client;
use crate::clock::with_timeout;
use crate::partition::Partition;

/// The Fetch version followers speak (the newest the broker serves).
const REPLICA_FETCH_VERSION: i16 = 12;
const FETCH_WAIT_MS: i32 = 500;
/// Per partition and per fetch; bounds the memory of one response.
const PARTITION_FETCH_BYTES_MAX: i32 = 1 << 20;
const FETCH_BYTES_MAX: i32 = 16 << 20;
/// How long a fetch may take beyond its wait before the connection is
/// given up.
const FETCH_SLACK_MS: u64 = 10_000;
const RETRY_PAUSE_MS: u64 = 100;

/// A partition this shard follows, and in which leader epoch.
struct Followed {
    partition: Rc<Partition>,
    leader_epoch: i32,
}

type PartitionKey = (Rc<str>, i32);

/// One (leader broker, leader shard) pair's fetch session.
struct Session {
    leader: i32,
    leader_shard: u32,
    address: RefCell<String>,
    partitions: RefCell<BTreeMap<PartitionKey, Followed>>,
    running: Cell<bool>,
}

#[derive(Default)]
pub struct ReplicaFetchers {
    node_id: Cell<i32>,
    sessions: RefCell<BTreeMap<(i32, u32), Rc<Session>>>,
}

impl ReplicaFetchers {
    pub fn new(node_id: i32) -> ReplicaFetchers {
        ReplicaFetchers {
            node_id: Cell::new(node_id),
            sessions: RefCell::new(BTreeMap::new()),
        }
    }

    /// Follows `partition` from `leader`'s shard `leader_shard` at
    /// `address` (its replication listener), in `leader_epoch`.
    pub fn follow(
        &self,
        partition: Rc<Partition>,
        leader: i32,
        leader_shard: u32,
        address: String,
        leader_epoch: i32,
    ) {
        let key: PartitionKey = (partition.topic.as_str().into(), partition.index);
        self.unfollow(&partition.topic, partition.index);
        let session = self
            .sessions
            .borrow_mut()
            .entry((leader, leader_shard))
            .or_insert_with(|| {
                Rc::new(Session {
                    leader,
                    leader_shard,
                    address: RefCell::new(address.clone()),
                    partitions: RefCell::new(BTreeMap::new()),
                    running: Cell::new(false),
                })
            })
            .clone();
        *session.address.borrow_mut() = address;
        session.partitions.borrow_mut().insert(
            key,
            Followed {
                partition,
                leader_epoch,
            },
        );
        if !session.running.replace(true) {
            let node_id = self.node_id.get();
            glommio::spawn_local(run_session(session, node_id)).detach();
        }
    }

    /// Stops following a partition (it leads now, or is gone).
    pub fn unfollow(&self, topic: &str, index: i32) {
        for session in self.sessions.borrow().values() {
            session
                .partitions
                .borrow_mut()
                .retain(|(t, i), _| !(&**t == topic && *i == index));
        }
    }
}

/// Fetches for a session's partitions until it has none left.
async fn run_session(session: Rc<Session>, node_id: i32) {
    info!(
        leader = session.leader,
        leader_shard = session.leader_shard,
        "replica fetcher started"
    );
    let mut connection: Option<TcpStream> = None;
    let mut correlation = 0i32;
    loop {
        if session.partitions.borrow().is_empty() {
            break;
        }
        let stream = match connection.take() {
            Some(stream) => stream,
            None => match connect(&session).await {
                Some(stream) => stream,
                None => {
                    glommio::timer::sleep(Duration::from_millis(RETRY_PAUSE_MS)).await;
                    continue;
                }
            },
        };
        correlation = correlation.wrapping_add(1);
        let (request, sent) = build_request(&session, node_id);
        let mut stream = stream;
        let answered = with_timeout(
            FETCH_WAIT_MS as u64 + FETCH_SLACK_MS,
            kafka_client::exchange(
                &mut stream,
                REPLICA_FETCH_VERSION,
                correlation,
                "gregor-replica-fetcher",
                &request,
            ),
        )
        .await;
        let response = match answered {
            Some(Ok(response)) => response,
            Some(Err(e)) => {
                debug!(leader = session.leader, error = %e, "replica fetch failed; reconnecting");
                glommio::timer::sleep(Duration::from_millis(RETRY_PAUSE_MS)).await;
                continue;
            }
            None => {
                warn!(
                    leader = session.leader,
                    "replica fetch timed out; reconnecting"
                );
                continue;
            }
        };
        connection = Some(stream);
        if !apply_response(&session, &sent, response).await {
            glommio::timer::sleep(Duration::from_millis(RETRY_PAUSE_MS)).await;
        }
    }
    session.running.set(false);
    info!(
        leader = session.leader,
        leader_shard = session.leader_shard,
        "replica fetcher stopped (nothing to follow)"
    );
}

async fn connect(session: &Session) -> Option<TcpStream> {
    let address = session.address.borrow().clone();
    match kafka_client::connect(&address).await {
        Ok(stream) => Some(stream),
        Err(e) => {
            debug!(leader = session.leader, %address, error = %e, "cannot reach the leader's replication listener");
            None
        }
    }
}

/// The partitions a fetch asked for, with the epoch each was asked in.
type Sent = Vec<(PartitionKey, Rc<Partition>, i32, i64)>;

fn build_request(session: &Session, node_id: i32) -> (km::FetchRequest, Sent) {
    let mut topics: Vec<fetch_request::FetchTopic> = Vec::new();
    let mut sent = Vec::new();
    for (key, followed) in session.partitions.borrow().iter() {
        let (fetch_offset, last_fetched_epoch) = followed.partition.fetch_position();
        let partition = fetch_request::FetchPartition::default()
            .with_partition(key.1)
            .with_current_leader_epoch(followed.leader_epoch)
            .with_fetch_offset(fetch_offset)
            .with_last_fetched_epoch(last_fetched_epoch)
            .with_log_start_offset(-1)
            .with_partition_max_bytes(PARTITION_FETCH_BYTES_MAX);
        match topics.last_mut() {
            Some(topic) if *topic.topic.0 == *key.0 => topic.partitions.push(partition),
            _ => topics.push(
                fetch_request::FetchTopic::default()
                    .with_topic(TopicName(StrBytes::from_string(key.0.to_string())))
                    .with_partitions(vec![partition]),
            ),
        }
        sent.push((
            key.clone(),
            followed.partition.clone(),
            followed.leader_epoch,
            fetch_offset,
        ));
    }
    let request = km::FetchRequest::default()
        .with_replica_id(BrokerId(node_id))
        .with_max_wait_ms(FETCH_WAIT_MS)
        .with_min_bytes(1)
        .with_max_bytes(FETCH_BYTES_MAX)
        .with_isolation_level(0)
        .with_session_id(0)
        .with_session_epoch(-1)
        .with_topics(topics);
    (request, sent)
}

/// Appends what came, truncates where told, syncs, and records the
/// leader's high watermark. False when a partition failed (the caller
/// pauses before fetching again).
async fn apply_response(session: &Session, sent: &Sent, response: km::FetchResponse) -> bool {
    if response.error_code != codes::NONE {
        warn!(
            leader = session.leader,
            code = response.error_code,
            "replica fetch refused"
        );
        return false;
    }
    let mut by_key: BTreeMap<(String, i32), km::fetch_response::PartitionData> = BTreeMap::new();
    for topic in response.responses {
        for data in topic.partitions {
            by_key.insert((topic.topic.0.to_string(), data.partition_index), data);
        }
    }
    let mut failed = false;
    let mut appended: Vec<(Rc<Partition>, i64)> = Vec::new();
    for (key, partition, leader_epoch, fetch_offset) in sent {
        let Some(data) = by_key.remove(&(key.0.to_string(), key.1)) else {
            continue;
        };
        // Followed still, in the same epoch, from the same position?
        let current = session.partitions.borrow().get(key).is_some_and(|f| {
            Rc::ptr_eq(&f.partition, partition) && f.leader_epoch == *leader_epoch
        });
        if !current || partition.fetch_position().0 != *fetch_offset {
            continue;
        }
        if data.error_code != codes::NONE {
            debug!(topic = %key.0, partition = key.1, leader = session.leader, code = data.error_code, "replica fetch of a partition refused");
            failed = true;
            continue;
        }
        if data.diverging_epoch.epoch >= 0 || data.diverging_epoch.end_offset >= 0 {
            let end = EpochEnd {
                epoch: data.diverging_epoch.epoch,
                end_offset: data.diverging_epoch.end_offset,
            };
            let offset = partition.truncation_offset(end);
            if let Err(e) = partition.truncate_log(offset).await {
                warn!(topic = %key.0, partition = key.1, error = %e, "truncation failed");
                failed = true;
            }
            continue;
        }
        if let Some(records) = data.records.filter(|r| !r.is_empty()) {
            match partition.enqueue_from_leader(records).await {
                Ok(Ok(_)) => {
                    appended.push((partition.clone(), data.high_watermark));
                }
                Ok(Err(code)) => {
                    warn!(topic = %key.0, partition = key.1, code, "a replicated record set was refused");
                    failed = true;
                }
                Err(_) => failed = true,
            }
        } else {
            partition.on_leader_high_watermark(data.high_watermark);
        }
    }
    // Durable before the next fetch: its offsets tell the leader so.
    let synced = futures::future::join_all(appended.iter().map(|(p, _)| p.sync_durable())).await;
    for ((partition, high_watermark), ok) in appended.iter().zip(synced) {
        if ok {
            partition.on_leader_high_watermark(*high_watermark);
        }
        partition.persist_epochs().await;
    }
    !failed
}
