//! The operator CLI: one file per command group (topic, produce, consume,
//! group, cluster). Every command prints a human table by default and JSON
//! with `--format json`; errors are one line naming the problem and the fix.

pub mod cluster;
pub mod consume;
pub mod dev;
pub mod group;
pub mod produce;
pub mod topic;

use std::time::Duration;

use anyhow::bail;
use serde_json::Value;

use crate::client::Client;

/// What `--format` asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Format {
    Table,
    Json,
    /// A kcat-like pattern (%k %v %p %o %T %h), for produce and consume.
    Pattern(String),
}

impl Format {
    pub fn parse(text: &str) -> Format {
        match text {
            "table" | "text" => Format::Table,
            "json" => Format::Json,
            pattern => Format::Pattern(pattern.to_string()),
        }
    }
}

/// Settings shared by every command.
pub struct Context {
    pub brokers: String,
    pub timeout: Duration,
    pub format: Format,
}

impl Context {
    pub fn client(&self) -> anyhow::Result<Client> {
        Client::connect(&self.brokers, self.timeout)
    }

    /// True for JSON output; an error for a pattern where none applies.
    pub fn json(&self) -> anyhow::Result<bool> {
        match &self.format {
            Format::Table => Ok(false),
            Format::Json => Ok(true),
            Format::Pattern(p) => bail!(
                "--format '{p}' is not valid here: use table or json (patterns apply to produce and consume)"
            ),
        }
    }
}

pub fn print_json(value: &Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).expect("a JSON value always serializes")
    );
}

/// Prints configs (topic or broker) as a config/value/source table.
pub fn print_config_table(entries: &[crate::client::configs::ConfigEntry]) {
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|c| {
            vec![
                c.name.clone(),
                c.value.clone().unwrap_or_else(|| "-".into()),
                c.source.to_string(),
            ]
        })
        .collect();
    print_table(&["config", "value", "source"], &rows);
}

/// Prints rows under upper-case headers, columns padded to their widest cell.
pub fn print_table(headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<String>| {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(cell);
                let pad = widths[i].saturating_sub(cell.chars().count()) + 2;
                out.extend(std::iter::repeat_n(' ', pad));
            }
        }
        println!("{}", out.trim_end());
    };
    line(headers.iter().map(|h| h.to_uppercase()).collect());
    for row in rows {
        line(row.clone());
    }
}

/// Parses `key=value`.
pub fn key_value(text: &str, what: &str) -> anyhow::Result<(String, String)> {
    match text.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => bail!("{what} '{text}' is not key=value"),
    }
}

/// Where to start reading a partition: beginning, end, an offset (negative:
/// that many before the end) or @timestamp-ms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAt {
    Beginning,
    End,
    Offset(i64),
    Timestamp(i64),
}

impl std::str::FromStr for StartAt {
    type Err = String;
    fn from_str(text: &str) -> Result<StartAt, String> {
        let bad = || {
            format!(
                "'{text}' is not beginning, end, an offset or @timestamp-ms (e.g. @1700000000000)"
            )
        };
        Ok(match text {
            "beginning" | "start" | "earliest" | "oldest" => StartAt::Beginning,
            "end" | "latest" | "newest" => StartAt::End,
            t if t.starts_with('@') => StartAt::Timestamp(t[1..].parse().map_err(|_| bad())?),
            t => StartAt::Offset(t.parse().map_err(|_| bad())?),
        })
    }
}

/// Resolves `start` to an offset for each partition of `topic`.
pub fn resolve_start(
    client: &mut Client,
    topic: &crate::client::TopicInfo,
    partitions: &[i32],
    start: StartAt,
) -> anyhow::Result<std::collections::BTreeMap<i32, i64>> {
    use crate::client::{OFFSET_EARLIEST, OFFSET_LATEST};
    let ask = |ts: i64| partitions.iter().map(|&p| (p, ts)).collect::<Vec<_>>();
    match start {
        StartAt::Beginning => client.list_offsets(topic, &ask(OFFSET_EARLIEST)),
        StartAt::End => client.list_offsets(topic, &ask(OFFSET_LATEST)),
        StartAt::Timestamp(ts) => {
            let found = client.list_offsets(topic, &ask(ts))?;
            let end = client.list_offsets(topic, &ask(OFFSET_LATEST))?;
            // No record at or after the timestamp: start at the end.
            Ok(found
                .into_iter()
                .map(|(p, o)| (p, if o < 0 { end[&p] } else { o }))
                .collect())
        }
        StartAt::Offset(offset) => {
            let marks = client.watermarks(topic)?;
            Ok(partitions
                .iter()
                .map(|p| {
                    let (low, high) = marks.get(p).copied().unwrap_or((0, 0));
                    let o = if offset < 0 { high + offset } else { offset };
                    (*p, o.clamp(low, high))
                })
                .collect())
        }
    }
}
