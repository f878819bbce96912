//! Workload files: OMB-like TOML with Kafka's vocabulary. Unknown fields are an
//! error (`deny_unknown_fields`), so a typo never silently runs the wrong test.
//!
//! Units: sizes take bytes or a string with a unit (`"1 KiB"`, `"100B"`,
//! `"1GiB"`); rates take msg/s as a number or a string (`"50 MB/s"`,
//! `"20k msg/s"`); `0` means "find the maximum sustainable rate". MB is 10^6
//! bytes, MiB is 2^20.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

/// The workloads shipped in `perf/workloads/`, compiled in so that
/// `gregor-perf run max-throughput-1k` works from any directory.
pub const BUILTIN: &[(&str, &str)] = &[
    (
        "max-throughput-1k",
        include_str!("../workloads/max-throughput-1k.toml"),
    ),
    (
        "small-records-100b",
        include_str!("../workloads/small-records-100b.toml"),
    ),
    (
        "latency-50mbps",
        include_str!("../workloads/latency-50mbps.toml"),
    ),
    (
        "catch-up-read",
        include_str!("../workloads/catch-up-read.toml"),
    ),
    (
        "many-partitions",
        include_str!("../workloads/many-partitions.toml"),
    ),
    (
        "idle-1000-partitions",
        include_str!("../workloads/idle-1000-partitions.toml"),
    ),
    ("smoke", include_str!("../workloads/smoke.toml")),
];

/// Every record carries a 32-byte header (see `payload.rs`).
pub const RECORD_SIZE_MIN: u64 = 32;
pub const RECORD_SIZE_MAX: u64 = 1 << 20;
pub const PARTITIONS_MAX: u32 = 100_000;
pub const CLIENTS_MAX: u32 = 256;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Workload {
    /// Defaults to the file name without `.toml`.
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default = "one")]
    pub topics: u32,
    #[serde(default = "one")]
    pub partitions_per_topic: u32,
    #[serde(default = "one_i16")]
    pub replication_factor: i16,
    pub record_size: Size,
    #[serde(default)]
    pub key_distribution: KeyDistribution,
    /// Distinct keys for `random` and `zipf`.
    #[serde(default = "key_count_default")]
    pub key_count: u64,
    /// Zipf exponent s (P(key k) ∝ 1/k^s).
    #[serde(default = "zipf_exponent_default")]
    pub zipf_exponent: f64,
    #[serde(default)]
    pub payload: PayloadKind,
    #[serde(default = "one")]
    pub producers: u32,
    /// Consumers in each group.
    #[serde(default = "one")]
    pub consumers: u32,
    #[serde(default = "one")]
    pub consumer_groups: u32,
    /// Total over all producers; 0 = find the max sustainable rate.
    pub target_rate: Rate,
    #[serde(default)]
    pub acks: Acks,
    #[serde(default)]
    pub compression: Compression,
    /// librdkafka `batch.size` (bytes per partition batch).
    #[serde(default = "batch_size_default")]
    pub batch_size: Size,
    /// librdkafka `linger.ms`.
    #[serde(default = "linger_ms_default")]
    pub linger_ms: u32,
    #[serde(default = "warmup_s_default")]
    pub warmup_s: f64,
    pub duration_s: f64,
    /// Bytes written before the measured phase (as fast as possible, acks=1).
    #[serde(default)]
    pub prefill: Size,
    /// Where consumers start: `end` (only records produced in this run's load
    /// phases) or `beginning` (the prefilled records too: a catch-up read).
    #[serde(default)]
    pub consumer_start: ConsumerStart,
    #[serde(default)]
    pub rate_search: RateSearchConfig,
    /// Extra librdkafka properties for producers and consumers (like OMB's
    /// producerConfig/consumerConfig). Applied last.
    #[serde(default)]
    pub producer_config: BTreeMap<String, String>,
    #[serde(default)]
    pub consumer_config: BTreeMap<String, String>,
    /// Topic configs the run's topics are created with (like OMB's
    /// topicConfig), e.g. `"compression.type" = "zstd"`.
    #[serde(default)]
    pub topic_config: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RateSearchConfig {
    /// First rate tried.
    #[serde(default = "search_start_default")]
    pub start_rate: Rate,
    /// Length of each trial step.
    #[serde(default = "search_step_s_default")]
    pub step_s: f64,
    /// A step is sustainable only if its p99 latencies (from the intended send
    /// time) stay below this.
    #[serde(default = "search_max_p99_ms_default")]
    pub max_p99_ms: f64,
    /// Upper bound on the number of trial steps.
    #[serde(default = "search_max_steps_default")]
    pub max_steps: u32,
    /// Stop refining when the bracket [good, bad] is narrower than this ratio.
    #[serde(default = "search_precision_default")]
    pub precision: f64,
}

impl Default for RateSearchConfig {
    fn default() -> Self {
        RateSearchConfig {
            start_rate: search_start_default(),
            step_s: search_step_s_default(),
            max_p99_ms: search_max_p99_ms_default(),
            max_steps: search_max_steps_default(),
            precision: search_precision_default(),
        }
    }
}

fn one() -> u32 {
    1
}
fn one_i16() -> i16 {
    1
}
fn key_count_default() -> u64 {
    10_000
}
fn zipf_exponent_default() -> f64 {
    1.0
}
fn batch_size_default() -> Size {
    Size(128 * 1024)
}
fn linger_ms_default() -> u32 {
    5
}
fn warmup_s_default() -> f64 {
    5.0
}
fn search_start_default() -> Rate {
    Rate::BytesPerSec(5e6)
}
fn search_step_s_default() -> f64 {
    3.0
}
fn search_max_p99_ms_default() -> f64 {
    200.0
}
fn search_max_steps_default() -> u32 {
    14
}
fn search_precision_default() -> f64 {
    1.1
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyDistribution {
    #[default]
    None,
    Random,
    Zipf,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PayloadKind {
    /// Incompressible bytes.
    #[default]
    Random,
    /// Words from a small vocabulary: compresses roughly like log lines.
    Text,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ConsumerStart {
    #[default]
    End,
    Beginning,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    #[default]
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl Compression {
    pub fn as_str(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }
}

/// `acks`: `"all"` (= -1), 1 or 0, as a number or a string.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "AcksRepr", into = "String")]
pub enum Acks {
    #[default]
    All,
    Leader,
    None,
}

impl Acks {
    pub fn as_config(self) -> &'static str {
        match self {
            Acks::All => "all",
            Acks::Leader => "1",
            Acks::None => "0",
        }
    }
}

impl From<Acks> for String {
    fn from(a: Acks) -> String {
        a.as_config().to_string()
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum AcksRepr {
    Int(i64),
    Text(String),
}

impl TryFrom<AcksRepr> for Acks {
    type Error = String;
    fn try_from(r: AcksRepr) -> Result<Acks, String> {
        let text = match r {
            AcksRepr::Int(i) => i.to_string(),
            AcksRepr::Text(s) => s.trim().to_ascii_lowercase(),
        };
        match text.as_str() {
            "all" | "-1" => Ok(Acks::All),
            "1" | "leader" => Ok(Acks::Leader),
            "0" | "none" => Ok(Acks::None),
            other => Err(format!("acks must be \"all\", 1 or 0, not {other:?}")),
        }
    }
}

/// A byte count: a number of bytes or a string with a unit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "SizeRepr", into = "u64")]
pub struct Size(pub u64);

impl From<Size> for u64 {
    fn from(s: Size) -> u64 {
        s.0
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum SizeRepr {
    Int(i64),
    Text(String),
}

impl TryFrom<SizeRepr> for Size {
    type Error = String;
    fn try_from(r: SizeRepr) -> Result<Size, String> {
        match r {
            SizeRepr::Int(i) if i >= 0 => Ok(Size(i as u64)),
            SizeRepr::Int(i) => Err(format!("a size cannot be negative ({i})")),
            SizeRepr::Text(s) => parse_size(&s).map(Size),
        }
    }
}

/// Parses "1024", "1 KiB", "100B", "1.5 GiB", "10 MB" (KB/MB/GB are powers of
/// ten, KiB/MiB/GiB powers of two).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let (number, unit) = split_number(text);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size (try 1024, \"1 KiB\" or \"1GiB\")"))?;
    let scale = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "m" | "mb" => 1e6,
        "g" | "gb" => 1e9,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        _ => return Err(format!("unknown size unit {unit:?} in {text:?}")),
    };
    let bytes = value * scale;
    if !(bytes.is_finite() && (0.0..1e18).contains(&bytes)) {
        return Err(format!("size {text:?} out of range"));
    }
    Ok(bytes.round() as u64)
}

fn split_number(text: &str) -> (&str, &str) {
    let t = text.trim();
    let end = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '_'))
        .unwrap_or(t.len());
    (t[..end].trim(), t[end..].trim())
}

/// A target rate; `Max` means "search for the max sustainable rate".
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RateRepr", into = "String")]
pub enum Rate {
    Max,
    MsgsPerSec(f64),
    BytesPerSec(f64),
}

impl Rate {
    /// In messages per second for records of `record_size` bytes; None for Max.
    pub fn msgs_per_sec(self, record_size: u64) -> Option<f64> {
        match self {
            Rate::Max => None,
            Rate::MsgsPerSec(r) => Some(r),
            Rate::BytesPerSec(b) => Some(b / record_size.max(1) as f64),
        }
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rate::Max => write!(f, "max"),
            Rate::MsgsPerSec(r) => write!(f, "{r} msg/s"),
            Rate::BytesPerSec(b) => write!(f, "{} MB/s", b / 1e6),
        }
    }
}

impl From<Rate> for String {
    fn from(r: Rate) -> String {
        r.to_string()
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RateRepr {
    Int(i64),
    Float(f64),
    Text(String),
}

impl TryFrom<RateRepr> for Rate {
    type Error = String;
    fn try_from(r: RateRepr) -> Result<Rate, String> {
        match r {
            RateRepr::Int(i) => parse_rate(&i.to_string()),
            RateRepr::Float(x) => parse_rate(&x.to_string()),
            RateRepr::Text(s) => parse_rate(&s),
        }
    }
}

/// Parses "0" / "max" (search), "20000", "20k msg/s", "50 MB/s", "100 MiB/s".
pub fn parse_rate(text: &str) -> Result<Rate, String> {
    let t = text.trim();
    if t.eq_ignore_ascii_case("max") {
        return Ok(Rate::Max);
    }
    let (number, unit) = split_number(t);
    let value: f64 = number.parse().map_err(|_| {
        format!("{text:?} is not a rate (try 0 for max, 20000, \"20k msg/s\" or \"50 MB/s\")")
    })?;
    if !(value.is_finite() && value >= 0.0) {
        return Err(format!("rate {text:?} out of range"));
    }
    let unit = unit.to_ascii_lowercase().replace(' ', "");
    let unit = unit.strip_suffix("/s").unwrap_or(&unit).to_string();
    let rate = match unit.as_str() {
        "" | "msg" | "msgs" => Rate::MsgsPerSec(value),
        "k" | "kmsg" | "kmsgs" => Rate::MsgsPerSec(value * 1e3),
        "m" | "mmsg" | "mmsgs" => Rate::MsgsPerSec(value * 1e6),
        "b" => Rate::BytesPerSec(value),
        "kb" => Rate::BytesPerSec(value * 1e3),
        "mb" => Rate::BytesPerSec(value * 1e6),
        "gb" => Rate::BytesPerSec(value * 1e9),
        "kib" => Rate::BytesPerSec(value * 1024.0),
        "mib" => Rate::BytesPerSec(value * 1024.0 * 1024.0),
        "gib" => Rate::BytesPerSec(value * 1024.0 * 1024.0 * 1024.0),
        _ => return Err(format!("unknown rate unit {unit:?} in {text:?}")),
    };
    let zero = match rate {
        Rate::MsgsPerSec(r) | Rate::BytesPerSec(r) => r == 0.0,
        Rate::Max => true,
    };
    Ok(if zero { Rate::Max } else { rate })
}

impl Workload {
    /// Reads a workload from a file path or a built-in name, applying
    /// `overrides` (`field=value`, value in TOML syntax or a bare string).
    pub fn load(spec: &str, overrides: &[String]) -> Result<Workload> {
        let path = Path::new(spec);
        let (origin, text, stem) = if path.is_file() {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read workload {}", path.display()))?;
            let stem = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            (path.display().to_string(), text, stem)
        } else if let Some((name, text)) = BUILTIN.iter().find(|(n, _)| *n == spec) {
            (
                format!("built-in workload {name}"),
                text.to_string(),
                name.to_string(),
            )
        } else {
            let names: Vec<&str> = BUILTIN.iter().map(|(n, _)| *n).collect();
            bail!(
                "unknown workload {spec:?}: not a file and not one of {}",
                names.join(", ")
            );
        };
        Workload::parse(&origin, &text, &stem, overrides)
    }

    pub fn parse(origin: &str, text: &str, stem: &str, overrides: &[String]) -> Result<Workload> {
        // Deserialize the text as written first: its errors carry line numbers.
        toml::from_str::<Workload>(text)
            .map_err(|e| anyhow::anyhow!("{origin}: {}", one_line_toml_error(&e, text)))?;
        let mut table: toml::Table = toml::from_str(text)
            .map_err(|e| anyhow::anyhow!("{origin}: {}", one_line_toml_error(&e, text)))?;
        for o in overrides {
            let (key, value) = o
                .split_once('=')
                .with_context(|| format!("--set {o:?}: expected FIELD=VALUE"))?;
            let key = key.trim();
            let value = value.trim();
            // A value in TOML syntax (5, "1 KiB", true), else a bare string.
            let parsed: toml::Value = toml::from_str::<toml::Table>(&format!("v = {value}"))
                .ok()
                .and_then(|mut t| t.remove("v"))
                .unwrap_or_else(|| toml::Value::String(value.to_string()));
            match key.split_once('.') {
                Some((outer, inner)) => {
                    let sub = table
                        .entry(outer.to_string())
                        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
                    match sub {
                        toml::Value::Table(t) => {
                            t.insert(inner.to_string(), parsed);
                        }
                        _ => bail!("--set {o:?}: {outer} is not a table"),
                    }
                }
                None => {
                    table.insert(key.to_string(), parsed);
                }
            }
        }
        let mut w: Workload = Workload::deserialize(toml::Value::Table(table)).map_err(|e| {
            let msg = e.message().trim().to_string();
            anyhow::anyhow!("{origin}: {msg}")
        })?;
        if w.name.is_empty() {
            w.name = stem.to_string();
        }
        w.validate().map_err(|e| anyhow::anyhow!("{origin}: {e}"))?;
        Ok(w)
    }

    fn validate(&self) -> Result<(), String> {
        let rs = self.record_size.0;
        if !(RECORD_SIZE_MIN..=RECORD_SIZE_MAX).contains(&rs) {
            return Err(format!(
                "record_size must be {RECORD_SIZE_MIN}..={RECORD_SIZE_MAX} bytes, not {rs}"
            ));
        }
        if self.topics == 0 || self.partitions_per_topic == 0 {
            return Err("topics and partitions_per_topic must be at least 1".into());
        }
        if self.topics.saturating_mul(self.partitions_per_topic) > PARTITIONS_MAX {
            return Err(format!("at most {PARTITIONS_MAX} partitions in all"));
        }
        if self.replication_factor < 1 {
            return Err("replication_factor must be at least 1".into());
        }
        if self.producers > CLIENTS_MAX
            || self.consumers.saturating_mul(self.consumer_groups) > CLIENTS_MAX
        {
            return Err(format!("at most {CLIENTS_MAX} producers and consumers"));
        }
        if self.producers == 0 && self.consumers == 0 {
            return Err("nothing to measure: no producers and no consumers".into());
        }
        if self.consumers == 0 && self.consumer_groups > 1 {
            return Err("consumer_groups > 1 needs consumers >= 1".into());
        }
        if self.key_distribution != KeyDistribution::None && self.key_count == 0 {
            return Err("key_count must be at least 1".into());
        }
        if !(self.zipf_exponent.is_finite() && self.zipf_exponent > 0.0) {
            return Err("zipf_exponent must be > 0".into());
        }
        if self.key_count > 10_000_000 {
            return Err("key_count must be at most 10,000,000".into());
        }
        for (name, v) in [("warmup_s", self.warmup_s), ("duration_s", self.duration_s)] {
            if !(v.is_finite() && (0.0..=86_400.0).contains(&v)) {
                return Err(format!("{name} must be between 0 and 86400 seconds"));
            }
        }
        if self.duration_s <= 0.0 {
            return Err("duration_s must be > 0".into());
        }
        let s = &self.rate_search;
        if !(s.step_s.is_finite() && s.step_s >= 0.5 && s.step_s <= 600.0) {
            return Err("rate_search.step_s must be between 0.5 and 600".into());
        }
        if !(s.max_p99_ms.is_finite() && s.max_p99_ms > 0.0) {
            return Err("rate_search.max_p99_ms must be > 0".into());
        }
        if s.max_steps == 0 || s.max_steps > 100 {
            return Err("rate_search.max_steps must be 1..=100".into());
        }
        if !(s.precision.is_finite() && s.precision > 1.0) {
            return Err("rate_search.precision must be > 1 (e.g. 1.1 = within 10%)".into());
        }
        if s.start_rate == Rate::Max {
            return Err("rate_search.start_rate must be a rate, not 0".into());
        }
        if self.linger_ms > 60_000 {
            return Err("linger_ms must be at most 60000".into());
        }
        if self.batch_size.0 == 0 || self.batch_size.0 > 2_147_483_647 {
            return Err("batch_size must be 1..2^31 bytes".into());
        }
        Ok(())
    }

    pub fn partitions_total(&self) -> u64 {
        self.topics as u64 * self.partitions_per_topic as u64
    }

    /// Records in the prefill (rounded up to whole records).
    pub fn prefill_records(&self) -> u64 {
        self.prefill.0.div_ceil(self.record_size.0)
    }

    /// The fixed target rate in msg/s, or None when searching.
    pub fn fixed_rate_msgs(&self) -> Option<f64> {
        if self.producers == 0 {
            return None;
        }
        self.target_rate.msgs_per_sec(self.record_size.0)
    }

    pub fn searches_rate(&self) -> bool {
        self.producers > 0 && self.target_rate == Rate::Max
    }
}

/// toml's errors are multi-line snippets; this gives "line N: message".
fn one_line_toml_error(e: &toml::de::Error, text: &str) -> String {
    let msg = e.message().trim().replace('\n', " ");
    match e.span() {
        Some(span) => {
            let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
            format!("line {line}: {msg}")
        }
        None => msg,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Workload> {
        Workload::parse("test.toml", text, "test", &[])
    }

    const MINIMAL: &str = "record_size = \"1 KiB\"\ntarget_rate = 0\nduration_s = 10\n";

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1024"), Ok(1024));
        assert_eq!(parse_size("1 KiB"), Ok(1024));
        assert_eq!(parse_size("100B"), Ok(100));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("1.5 MiB"), Ok(1_572_864));
        assert_eq!(parse_size("10 MB"), Ok(10_000_000));
        assert!(parse_size("ten").is_err());
        assert!(parse_size("10 parsecs").is_err());
    }

    #[test]
    fn rates() {
        assert_eq!(parse_rate("0"), Ok(Rate::Max));
        assert_eq!(parse_rate("max"), Ok(Rate::Max));
        assert_eq!(parse_rate("0 MB/s"), Ok(Rate::Max));
        assert_eq!(parse_rate("20000"), Ok(Rate::MsgsPerSec(20000.0)));
        assert_eq!(parse_rate("20k msg/s"), Ok(Rate::MsgsPerSec(20000.0)));
        assert_eq!(parse_rate("50 MB/s"), Ok(Rate::BytesPerSec(50e6)));
        assert_eq!(parse_rate("1 MiB/s"), Ok(Rate::BytesPerSec(1048576.0)));
        assert!(parse_rate("fast").is_err());
        assert!(parse_rate("5 furlongs/s").is_err());
        assert_eq!(Rate::BytesPerSec(50e6).msgs_per_sec(1000), Some(50_000.0));
    }

    #[test]
    fn minimal_workload_gets_defaults() {
        let w = parse(MINIMAL).unwrap();
        assert_eq!(w.name, "test");
        assert_eq!(w.record_size, Size(1024));
        assert_eq!(w.acks, Acks::All);
        assert_eq!(w.producers, 1);
        assert!(w.searches_rate());
        assert_eq!(w.rate_search.start_rate, Rate::BytesPerSec(5e6));
    }

    #[test]
    fn unknown_field_is_a_one_line_error() {
        let e = parse(&format!("{MINIMAL}recordsize = 5\n")).unwrap_err();
        let msg = format!("{e:#}");
        assert!(msg.contains("unknown field `recordsize`"), "{msg}");
        assert!(msg.contains("line 4"), "{msg}");
        assert!(!msg.contains('\n'), "{msg}");
        let e = parse(&format!("{MINIMAL}[rate_search]\nstep = 1\n")).unwrap_err();
        assert!(format!("{e:#}").contains("unknown field `step`"));
    }

    #[test]
    fn syntax_error_names_the_line() {
        let e = parse("record_size = 1024\nthis is not toml\n").unwrap_err();
        let msg = format!("{e:#}");
        assert!(msg.contains("line 2"), "{msg}");
        assert!(!msg.contains('\n'), "{msg}");
    }

    #[test]
    fn acks_forms() {
        for (text, want) in [
            ("\"all\"", Acks::All),
            ("-1", Acks::All),
            ("1", Acks::Leader),
            ("\"1\"", Acks::Leader),
            ("0", Acks::None),
        ] {
            let w = parse(&format!("{MINIMAL}acks = {text}\n")).unwrap();
            assert_eq!(w.acks, want, "{text}");
        }
        assert!(parse(&format!("{MINIMAL}acks = 2\n")).is_err());
    }

    #[test]
    fn overrides_apply_and_are_checked() {
        let w = Workload::parse(
            "t",
            MINIMAL,
            "t",
            &[
                "duration_s=2".into(),
                "acks=1".into(),
                "rate_search.step_s=1".into(),
                "compression=lz4".into(),
            ],
        )
        .unwrap();
        assert_eq!(w.duration_s, 2.0);
        assert_eq!(w.acks, Acks::Leader);
        assert_eq!(w.rate_search.step_s, 1.0);
        assert_eq!(w.compression, Compression::Lz4);
        assert!(Workload::parse("t", MINIMAL, "t", &["nosuch=1".into()]).is_err());
        assert!(Workload::parse("t", MINIMAL, "t", &["novalue".into()]).is_err());
    }

    #[test]
    fn validation() {
        assert!(parse("record_size = 8\ntarget_rate = 0\nduration_s = 1\n").is_err());
        // No producers and no prefill: an idle measurement (consumers poll).
        assert!(parse(&format!("{MINIMAL}producers = 0\n")).is_ok());
        assert!(parse(&format!("{MINIMAL}producers = 0\nconsumers = 0\n")).is_err());
        assert!(parse(&format!("{MINIMAL}topics = 0\n")).is_err());
    }

    #[test]
    fn builtin_workloads_parse() {
        for (name, text) in BUILTIN {
            let w = Workload::parse(name, text, name, &[]).unwrap();
            assert_eq!(&w.name, name);
        }
        assert!(Workload::load("no-such-workload", &[]).is_err());
    }

    #[test]
    fn shipped_workloads_match_the_issue() {
        let get = |n: &str| Workload::load(n, &[]).unwrap();
        let w = get("max-throughput-1k");
        assert_eq!(
            (w.record_size.0, w.acks, w.target_rate),
            (1024, Acks::All, Rate::Max)
        );
        let w = get("small-records-100b");
        assert_eq!(
            (w.record_size.0, w.acks, w.target_rate),
            (100, Acks::Leader, Rate::Max)
        );
        let w = get("latency-50mbps");
        assert_eq!((w.record_size.0, w.acks), (1024, Acks::All));
        assert_eq!(w.target_rate, Rate::BytesPerSec(50e6));
        let w = get("catch-up-read");
        assert!(w.prefill.0 >= 1 << 30);
        assert_eq!(w.consumer_start, ConsumerStart::Beginning);
        let w = get("many-partitions");
        assert_eq!(w.partitions_total(), 1000);
    }
}
