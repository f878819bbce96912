//! `gregor produce TOPIC`: records from stdin lines (or a kcat-like input
//! pattern such as '%k:%v\n'), or one record holding a whole file.

use std::collections::BTreeMap;
use std::io::{BufRead, IsTerminal, Read};
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context as _};
use bytes::Bytes;
use engine::protocol::kafka_protocol::messages::{
    produce_request::{PartitionProduceData, TopicProduceData},
    ProduceRequest,
};
use engine::protocol::kafka_protocol::records::Compression;
use serde_json::json;

use super::{Context, Format};
use crate::client::records::{build_producer_batch, parse_compression, OutRecord};
use crate::client::{error_text, topic_name, Client, TopicInfo};

/// Records per produce request (and per partition batch), and bytes.
const FLUSH_RECORDS_MAX: usize = 1_000;
const FLUSH_BYTES_MAX: usize = 512 * 1024;

#[derive(clap::Args)]
pub struct ProduceArgs {
    pub topic: String,
    /// Partition to write to (default: by key hash, else round-robin).
    #[arg(short = 'p', long)]
    pub partition: Option<i32>,
    /// Key of every record (a pattern's %k wins).
    #[arg(short = 'k', long)]
    pub key: Option<String>,
    /// Header key=value added to every record; repeatable.
    #[arg(short = 'H', long = "header")]
    pub headers: Vec<String>,
    /// Send this file's whole content as one record instead of reading stdin.
    #[arg(long)]
    pub file: Option<PathBuf>,
    /// Acknowledgements: all (-1), 1 or 0.
    #[arg(long, default_value = "all")]
    pub acks: String,
    /// none, gzip, snappy, lz4 or zstd.
    #[arg(short = 'z', long, default_value = "none")]
    pub compression: String,
    /// Print the partition and offset of every record.
    #[arg(short = 'v', long)]
    pub verbose: bool,
}

/// Piece of an input pattern.
#[derive(Debug, Clone, PartialEq)]
enum Piece {
    Key,
    Value,
    Headers,
    Literal(String),
}

/// Replaces \n, \t, \r and \\ escapes.
pub fn unescape(text: &str) -> String {
    let mut out = String::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some('0') => out.push('\0'),
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}

fn parse_input_pattern(pattern: &str) -> anyhow::Result<Vec<Piece>> {
    let pattern = unescape(pattern);
    // Records are lines: a trailing newline only ends the record.
    let pattern = pattern.strip_suffix('\n').unwrap_or(&pattern);
    let mut pieces = Vec::new();
    let mut literal = String::new();
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            literal.push(c);
            continue;
        }
        let piece = match chars.next() {
            Some('k') => Piece::Key,
            Some('v') | Some('s') => Piece::Value,
            Some('h') => Piece::Headers,
            Some('%') => {
                literal.push('%');
                continue;
            }
            other => bail!(
                "produce --format supports %k %v %h (and %%), not %{}",
                other.map(String::from).unwrap_or_default()
            ),
        };
        if !literal.is_empty() {
            pieces.push(Piece::Literal(std::mem::take(&mut literal)));
        }
        if matches!(pieces.last(), Some(p) if !matches!(p, Piece::Literal(_))) {
            bail!("produce --format needs a separator between two fields, e.g. '%k:%v'");
        }
        pieces.push(piece);
    }
    if !literal.is_empty() {
        pieces.push(Piece::Literal(literal));
    }
    if !pieces.contains(&Piece::Value) {
        bail!("produce --format needs %v");
    }
    Ok(pieces)
}

/// Headers written as k=v,k2=v2.
fn parse_headers(text: &str) -> Vec<(String, Option<Bytes>)> {
    text.split(',')
        .filter(|h| !h.is_empty())
        .map(|h| match h.split_once('=') {
            Some((k, v)) => (k.to_string(), Some(Bytes::from(v.to_string()))),
            None => (h.to_string(), None),
        })
        .collect()
}

fn parse_line(pieces: &[Piece], line: &str) -> anyhow::Result<OutRecord> {
    let mut record = OutRecord::default();
    let mut rest = line;
    for (i, piece) in pieces.iter().enumerate() {
        if let Piece::Literal(l) = piece {
            rest = rest.strip_prefix(l.as_str()).with_context(|| {
                format!("input line {line:?} does not match the --format pattern (expected {l:?})")
            })?;
            continue;
        }
        // A field runs to the next literal, or to the end of the line.
        let field = match pieces.get(i + 1) {
            Some(Piece::Literal(next)) => {
                let at = rest.find(next.as_str()).with_context(|| {
                    format!("input line {line:?} does not match the --format pattern (no {next:?})")
                })?;
                let field = &rest[..at];
                rest = &rest[at..];
                field
            }
            _ => std::mem::take(&mut rest),
        };
        match piece {
            Piece::Key => record.key = Some(Bytes::from(field.to_string())),
            Piece::Value => record.value = Some(Bytes::from(field.to_string())),
            Piece::Headers => record.headers = parse_headers(field),
            Piece::Literal(_) => unreachable!(),
        }
    }
    Ok(record)
}

/// Kafka's murmur2 (the Java client's default partitioner hash).
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let length = data.len() as u32;
    let mut h = SEED ^ length;
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = chunks.remainder();
    if tail.len() >= 3 {
        h ^= u32::from(tail[2]) << 16;
    }
    if tail.len() >= 2 {
        h ^= u32::from(tail[1]) << 8;
    }
    if !tail.is_empty() {
        h ^= u32::from(tail[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

struct Producer<'a> {
    client: &'a mut Client,
    topic: TopicInfo,
    acks: i16,
    compression: Compression,
    partition: Option<i32>,
    round_robin: usize,
    pending: Vec<(i32, OutRecord)>,
    pending_bytes: usize,
    produced: usize,
    verbose: bool,
    json: bool,
}

impl Producer<'_> {
    fn add(&mut self, record: OutRecord) -> anyhow::Result<()> {
        let count = self.topic.partitions.len();
        let partition = match (self.partition, &record.key) {
            (Some(p), _) => p,
            (None, Some(key)) => {
                self.topic.partitions[(murmur2(key) & 0x7fff_ffff) as usize % count].partition
            }
            (None, None) => {
                self.round_robin += 1;
                self.topic.partitions[(self.round_robin - 1) % count].partition
            }
        };
        self.pending_bytes += record.key.as_ref().map_or(0, |k| k.len())
            + record.value.as_ref().map_or(0, |v| v.len());
        self.pending.push((partition, record));
        if self.pending.len() >= FLUSH_RECORDS_MAX || self.pending_bytes >= FLUSH_BYTES_MAX {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let pending = std::mem::take(&mut self.pending);
        self.pending_bytes = 0;
        let timestamp_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        let mut by_partition: BTreeMap<i32, Vec<OutRecord>> = BTreeMap::new();
        for (p, r) in pending {
            by_partition.entry(p).or_default().push(r);
        }
        let mut by_leader: BTreeMap<i32, Vec<(i32, Vec<OutRecord>)>> = BTreeMap::new();
        for (p, records) in by_partition {
            let leader = self
                .topic
                .partitions
                .iter()
                .find(|i| i.partition == p)
                .map(|i| i.leader)
                .unwrap_or(-1);
            if leader < 0 {
                bail!(
                    "partition {}/{p} has no leader right now — retry in a moment",
                    self.topic.name
                );
            }
            by_leader.entry(leader).or_default().push((p, records));
        }
        for (leader, partitions) in by_leader {
            let mut data = Vec::new();
            for (p, records) in &partitions {
                data.push(
                    PartitionProduceData::default()
                        .with_index(*p)
                        .with_records(Some(build_producer_batch(
                            records,
                            timestamp_ms,
                            self.compression,
                        )?)),
                );
            }
            let request = ProduceRequest::default()
                .with_acks(self.acks)
                .with_timeout_ms(30_000)
                .with_topic_data(vec![TopicProduceData::default()
                    .with_name(topic_name(&self.topic.name))
                    .with_partition_data(data)]);
            let mut base_offsets: BTreeMap<i32, i64> = BTreeMap::new();
            if self.acks == 0 {
                self.client.node(leader)?.send_without_response(&request)?;
            } else {
                let response = self.client.send_to(leader, &request)?;
                for t in &response.responses {
                    for p in &t.partition_responses {
                        if p.error_code != 0 {
                            bail!(
                                "cannot produce to {}/{}: {}",
                                self.topic.name,
                                p.index,
                                error_text(p.error_code, p.error_message.as_ref())
                            );
                        }
                        base_offsets.insert(p.index, p.base_offset);
                    }
                }
            }
            for (p, records) in &partitions {
                self.produced += records.len();
                if !self.verbose {
                    continue;
                }
                let base = base_offsets.get(p).copied().unwrap_or(-1);
                for i in 0..records.len() as i64 {
                    let offset = if base < 0 { -1 } else { base + i };
                    if self.json {
                        println!(
                            "{}",
                            json!({"topic": self.topic.name, "partition": p, "offset": offset})
                        );
                    } else {
                        println!("{}/{p}@{offset}", self.topic.name);
                    }
                }
            }
        }
        Ok(())
    }
}

pub fn run(ctx: &Context, args: ProduceArgs) -> anyhow::Result<()> {
    let (json, pattern) = match &ctx.format {
        Format::Table => (false, None),
        Format::Json => (true, None),
        Format::Pattern(p) => (false, Some(parse_input_pattern(p)?)),
    };
    let acks: i16 = match args.acks.as_str() {
        "all" | "-1" => -1,
        "1" => 1,
        "0" => 0,
        other => bail!("--acks {other} is not all, 1 or 0"),
    };
    let compression = parse_compression(&args.compression)?;
    let mut common_headers = Vec::new();
    for h in &args.headers {
        let (k, v) = super::key_value(h, "-H")?;
        common_headers.push((k, Some(Bytes::from(v))));
    }
    let mut client = ctx.client()?;
    let topic = client.topic(&args.topic)?;
    if topic.partitions.is_empty() {
        bail!("topic '{}' has no partitions", args.topic);
    }
    if let Some(p) = args.partition {
        if !topic.partitions.iter().any(|i| i.partition == p) {
            bail!(
                "topic '{}' has no partition {p} (it has {})",
                args.topic,
                topic.partitions.len()
            );
        }
    }
    let mut producer = Producer {
        client: &mut client,
        topic,
        acks,
        compression,
        partition: args.partition,
        round_robin: 0,
        pending: Vec::new(),
        pending_bytes: 0,
        produced: 0,
        verbose: args.verbose,
        json,
    };
    let key = args.key.map(|k| Bytes::from(k.into_bytes()));
    let finish = |mut record: OutRecord| {
        if record.key.is_none() {
            record.key = key.clone();
        }
        record.headers.extend(common_headers.iter().cloned());
        record
    };
    if let Some(path) = &args.file {
        let data = std::fs::read(path)
            .with_context(|| format!("cannot read --file {}", path.display()))?;
        producer.add(finish(OutRecord {
            value: Some(Bytes::from(data)),
            ..OutRecord::default()
        }))?;
    } else {
        let stdin = std::io::stdin();
        // Typed input goes out line by line; piped input in batches.
        let interactive = stdin.is_terminal();
        let mut reader = stdin.lock();
        let mut line = Vec::new();
        loop {
            line.clear();
            let n = reader
                .by_ref()
                .read_until(b'\n', &mut line)
                .context("cannot read stdin")?;
            if n == 0 {
                break;
            }
            if line.last() == Some(&b'\n') {
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
            }
            let record = match &pattern {
                Some(pieces) => parse_line(pieces, &String::from_utf8_lossy(&line))?,
                None => OutRecord {
                    value: Some(Bytes::copy_from_slice(&line)),
                    ..OutRecord::default()
                },
            };
            producer.add(finish(record))?;
            if interactive {
                producer.flush()?;
            }
        }
    }
    producer.flush()?;
    let produced = producer.produced;
    if !args.verbose {
        if json {
            println!("{}", json!({"topic": args.topic, "produced": produced}));
        } else {
            eprintln!("produced {produced} record(s) to {}", args.topic);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur2_matches_kafka() {
        // Values from Kafka's UtilsTest.testMurmur2.
        assert_eq!(murmur2(b"21"), -973932308);
        assert_eq!(murmur2(b"foobar"), -790332482);
        assert_eq!(murmur2(b"a-little-bit-long-string"), -985981536);
        assert_eq!(murmur2(b"a-little-bit-longer-string"), -1486304829);
        assert_eq!(
            murmur2(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8"),
            -58897971
        );
        assert_eq!(murmur2(b"abc"), 479470107);
    }

    #[test]
    fn input_patterns() {
        let pieces = parse_input_pattern("%k:%v\\n").unwrap();
        let r = parse_line(&pieces, "k1:v:1").unwrap();
        assert_eq!(r.key.as_deref(), Some(&b"k1"[..]));
        assert_eq!(r.value.as_deref(), Some(&b"v:1"[..]));
        let pieces = parse_input_pattern("%h\\t%k\\t%v").unwrap();
        let r = parse_line(&pieces, "a=1,b=2\tkey\tvalue").unwrap();
        assert_eq!(r.headers.len(), 2);
        assert_eq!(r.value.as_deref(), Some(&b"value"[..]));
        assert!(parse_line(&pieces, "no tabs").is_err());
        assert!(parse_input_pattern("%k%v").is_err());
        assert!(parse_input_pattern("%k").is_err());
    }
}
