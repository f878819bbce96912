//! `gregor consume TOPIC`: read records from a start position, alone or as a
//! member of a consumer group, printing them with a kcat-like pattern
//! (%t %p %o %k %v %T %h ...) or as JSON lines.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::bail;
use engine::protocol::kafka_protocol::messages::{
    fetch_request::{FetchPartition, FetchTopic},
    BrokerId, FetchRequest,
};
use engine::protocol::kafka_protocol::records::Record;
use serde_json::json;

use super::produce::unescape;
use super::{resolve_start, Context, Format, StartAt};
use crate::client::group::Member;
use crate::client::records::fetched_records;
use crate::client::{error_name, topic_name, Client, TopicInfo, OFFSET_EARLIEST};

const FETCH_WAIT_MS: i32 = 500;
const PARTITION_BYTES_MAX: i32 = 1024 * 1024;
const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(3);
const OFFSET_OUT_OF_RANGE: i16 = 1;

#[derive(clap::Args)]
pub struct ConsumeArgs {
    pub topic: String,
    /// Start at: beginning, end, an offset (negative: from the end) or
    /// @timestamp-ms. With -g, only where the group has no committed offset.
    #[arg(
        short = 'o',
        long,
        default_value = "beginning",
        allow_hyphen_values = true
    )]
    pub offset: StartAt,
    /// Stop after this many records.
    #[arg(short = 'n', long)]
    pub count: Option<u64>,
    /// Consume as a member of this group (commits offsets on exit).
    #[arg(short = 'g', long)]
    pub group: Option<String>,
    /// Only these partitions (without -g); repeatable.
    #[arg(short = 'p', long = "partition")]
    pub partitions: Vec<i32>,
    /// Exit at the end of the partitions instead of waiting for more.
    #[arg(short = 'e', long)]
    pub exit: bool,
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// Ctrl-C and SIGTERM end the loop cleanly (offsets committed, group left).
fn install_signal_handlers() {
    let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, handler);
        libc::signal(libc::SIGTERM, handler);
    }
}

fn lossy(b: &Option<bytes::Bytes>) -> Option<String> {
    b.as_ref().map(|b| String::from_utf8_lossy(b).into_owned())
}

fn headers_text(record: &Record) -> String {
    record
        .headers
        .iter()
        .map(|(k, v)| match v {
            Some(v) => format!("{}={}", k.as_str(), String::from_utf8_lossy(v)),
            None => k.to_string(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Writes `record` through a kcat-like pattern: %t topic, %p partition,
/// %o offset, %k key, %v/%s value, %K/%S their lengths (-1 for null),
/// %T timestamp ms, %h headers (k=v,...), %% a percent.
fn write_pattern(out: &mut Vec<u8>, pattern: &str, topic: &str, partition: i32, record: &Record) {
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            let mut buf = [0u8; 4];
            out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            continue;
        }
        let len = |b: &Option<bytes::Bytes>| b.as_ref().map_or(-1, |b| b.len() as i64);
        match chars.next() {
            Some('t') => out.extend_from_slice(topic.as_bytes()),
            Some('p') => out.extend_from_slice(partition.to_string().as_bytes()),
            Some('o') => out.extend_from_slice(record.offset.to_string().as_bytes()),
            Some('k') => out.extend_from_slice(record.key.as_deref().unwrap_or_default()),
            Some('v') | Some('s') => {
                out.extend_from_slice(record.value.as_deref().unwrap_or_default())
            }
            Some('K') => out.extend_from_slice(len(&record.key).to_string().as_bytes()),
            Some('S') => out.extend_from_slice(len(&record.value).to_string().as_bytes()),
            Some('T') => out.extend_from_slice(record.timestamp.to_string().as_bytes()),
            Some('h') => out.extend_from_slice(headers_text(record).as_bytes()),
            Some('%') => out.push(b'%'),
            Some(other) => {
                out.push(b'%');
                let mut buf = [0u8; 4];
                out.extend_from_slice(other.encode_utf8(&mut buf).as_bytes());
            }
            None => out.push(b'%'),
        }
    }
}

/// What to print for each record.
enum Output {
    Json,
    Pattern(String),
}

struct Consumer {
    topic: TopicInfo,
    /// Next offset to read, by partition.
    positions: BTreeMap<i32, i64>,
    /// High watermark seen in the latest fetch, by partition.
    high_watermarks: BTreeMap<i32, i64>,
    output: Output,
    remaining: Option<u64>,
}

impl Consumer {
    fn caught_up(&self) -> bool {
        self.positions.iter().all(|(p, pos)| {
            self.high_watermarks
                .get(p)
                .is_some_and(|high| *pos >= *high)
        })
    }

    /// One fetch round over every partition; prints what arrived. Returns
    /// false when stdout is closed.
    fn poll(&mut self, client: &mut Client) -> anyhow::Result<bool> {
        let mut by_leader: BTreeMap<i32, Vec<(i32, i64)>> = BTreeMap::new();
        for (&p, &pos) in &self.positions {
            let leader = self
                .topic
                .partitions
                .iter()
                .find(|i| i.partition == p)
                .map_or(-1, |i| i.leader);
            if leader < 0 {
                bail!(
                    "partition {}/{p} has no leader right now — retry in a moment",
                    self.topic.name
                );
            }
            by_leader.entry(leader).or_default().push((p, pos));
        }
        let mut out = Vec::new();
        let mut reset = Vec::new();
        for (leader, parts) in by_leader {
            let request = FetchRequest::default()
                .with_replica_id(BrokerId(-1))
                .with_max_wait_ms(FETCH_WAIT_MS)
                .with_min_bytes(1)
                .with_max_bytes(16 * PARTITION_BYTES_MAX)
                .with_session_id(0)
                .with_session_epoch(-1)
                .with_topics(vec![FetchTopic::default()
                    .with_topic(topic_name(&self.topic.name))
                    .with_partitions(
                        parts
                            .iter()
                            .map(|&(p, pos)| {
                                FetchPartition::default()
                                    .with_partition(p)
                                    .with_current_leader_epoch(-1)
                                    .with_fetch_offset(pos)
                                    .with_last_fetched_epoch(-1)
                                    .with_log_start_offset(-1)
                                    .with_partition_max_bytes(PARTITION_BYTES_MAX)
                            })
                            .collect(),
                    )]);
            let response = client.send_to(leader, &request)?;
            if response.error_code != 0 {
                bail!("fetch failed: {}", error_name(response.error_code));
            }
            for t in &response.responses {
                for p in &t.partitions {
                    let partition = p.partition_index;
                    match p.error_code {
                        0 => {}
                        OFFSET_OUT_OF_RANGE => {
                            reset.push(partition);
                            continue;
                        }
                        code => bail!(
                            "cannot fetch {}/{partition}: {}",
                            self.topic.name,
                            error_name(code)
                        ),
                    }
                    self.high_watermarks.insert(partition, p.high_watermark);
                    let Some(position) = self.positions.get(&partition).copied() else {
                        continue;
                    };
                    let Some(data) = &p.records else { continue };
                    let (records, next) = fetched_records(data, position)?;
                    let mut new_position = position;
                    for record in &records {
                        if self.remaining == Some(0) {
                            break;
                        }
                        self.print(&mut out, partition, record);
                        new_position = record.offset + 1;
                        if let Some(r) = self.remaining.as_mut() {
                            *r -= 1;
                        }
                    }
                    // Skip control batches and compacted-away offsets, but
                    // not records left unprinted because -n was reached.
                    if self.remaining != Some(0) {
                        if let Some(next) = next {
                            new_position = new_position.max(next);
                        }
                    }
                    self.positions.insert(partition, new_position);
                }
            }
        }
        if !reset.is_empty() {
            // The position fell out of the log (retention): restart at its start.
            let starts = client.list_offsets(
                &self.topic,
                &reset
                    .iter()
                    .map(|&p| (p, OFFSET_EARLIEST))
                    .collect::<Vec<_>>(),
            )?;
            self.positions.extend(starts);
        }
        let mut stdout = std::io::stdout().lock();
        if stdout.write_all(&out).and_then(|_| stdout.flush()).is_err() {
            return Ok(false);
        }
        Ok(true)
    }

    fn print(&self, out: &mut Vec<u8>, partition: i32, record: &Record) {
        match &self.output {
            Output::Json => {
                let value = json!({
                    "topic": self.topic.name,
                    "partition": partition,
                    "offset": record.offset,
                    "timestamp": record.timestamp,
                    "key": lossy(&record.key),
                    "value": lossy(&record.value),
                    "headers": record.headers.iter().map(|(k, v)| (k.to_string(), json!(lossy(v)))).collect::<serde_json::Map<_, _>>(),
                });
                out.extend_from_slice(value.to_string().as_bytes());
                out.push(b'\n');
            }
            Output::Pattern(p) => write_pattern(out, p, &self.topic.name, partition, record),
        }
    }
}

pub fn run(ctx: &Context, args: ConsumeArgs) -> anyhow::Result<()> {
    let output = match &ctx.format {
        Format::Table => Output::Pattern("%v\n".into()),
        Format::Json => Output::Json,
        Format::Pattern(p) => Output::Pattern(unescape(p)),
    };
    install_signal_handlers();
    let mut client = ctx.client()?;
    let topic = client.topic(&args.topic)?;
    let mut consumer = Consumer {
        topic: topic.clone(),
        positions: BTreeMap::new(),
        high_watermarks: BTreeMap::new(),
        output,
        remaining: args.count,
    };
    let mut member = None;
    match &args.group {
        Some(group) => {
            if !args.partitions.is_empty() {
                bail!("-p and -g do not go together: the group assigns the partitions");
            }
            let m = Member::join(&mut client, group, std::slice::from_ref(&args.topic))?;
            consumer.positions = group_positions(&mut client, &m, &topic, args.offset)?;
            member = Some(m);
        }
        None => {
            let partitions: Vec<i32> = if args.partitions.is_empty() {
                topic.partitions.iter().map(|p| p.partition).collect()
            } else {
                for p in &args.partitions {
                    if !topic.partitions.iter().any(|i| i.partition == *p) {
                        bail!(
                            "topic '{}' has no partition {p} (it has {})",
                            topic.name,
                            topic.partitions.len()
                        );
                    }
                }
                args.partitions.clone()
            };
            consumer.positions = resolve_start(&mut client, &topic, &partitions, args.offset)?;
        }
    }
    let mut last_heartbeat = Instant::now();
    let result = loop {
        if STOP.load(Ordering::SeqCst) || consumer.remaining == Some(0) {
            break Ok(());
        }
        if args.exit && consumer.caught_up() {
            break Ok(());
        }
        match consumer.poll(&mut client) {
            Ok(true) => {}
            Ok(false) => break Ok(()),
            Err(e) => break Err(e),
        }
        if let Some(m) = member.as_mut() {
            if last_heartbeat.elapsed() >= HEARTBEAT_INTERVAL {
                last_heartbeat = Instant::now();
                if !m.heartbeat(&mut client)? {
                    // Rebalance: hand back what we read, then re-join.
                    m.commit(&mut client, &offsets_of(&topic.name, &consumer.positions))?;
                    m.rejoin(&mut client)?;
                    consumer.positions = group_positions(&mut client, m, &topic, args.offset)?;
                    consumer.high_watermarks.clear();
                }
            }
        }
    };
    if let Some(m) = &member {
        m.commit(&mut client, &offsets_of(&topic.name, &consumer.positions))?;
        m.leave(&mut client)?;
    }
    result
}

fn offsets_of(topic: &str, positions: &BTreeMap<i32, i64>) -> BTreeMap<String, BTreeMap<i32, i64>> {
    if positions.is_empty() {
        return BTreeMap::new();
    }
    [(topic.to_string(), positions.clone())].into()
}

/// Start positions of the member's assigned partitions of `topic`: the
/// committed offset, else `start`.
fn group_positions(
    client: &mut Client,
    member: &Member,
    topic: &TopicInfo,
    start: StartAt,
) -> anyhow::Result<BTreeMap<i32, i64>> {
    let assigned: Vec<i32> = member
        .assignment
        .get(&topic.name)
        .cloned()
        .unwrap_or_default();
    if assigned.is_empty() {
        return Ok(BTreeMap::new());
    }
    let committed = crate::client::group::committed_offsets(
        client,
        member.coordinator,
        &member.group,
        Some(&[(topic.name.clone(), assigned.clone())].into()),
    )?;
    let committed = committed.get(&topic.name).cloned().unwrap_or_default();
    let missing: Vec<i32> = assigned
        .iter()
        .copied()
        .filter(|p| !committed.contains_key(p))
        .collect();
    let mut positions = committed;
    if !missing.is_empty() {
        positions.extend(resolve_start(client, topic, &missing, start)?);
    }
    Ok(positions)
}
