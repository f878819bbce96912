//! Topic configs with Kafka's names, defaults and validation, and the broker
//! defaults they fall back to (Kafka's `log.`-prefixed broker names).

use std::collections::BTreeMap;

use crate::record::Compression;

/// DescribeConfigs `config_type` codes.
pub const CONFIG_TYPE_BOOLEAN: i8 = 1;
pub const CONFIG_TYPE_STRING: i8 = 2;
pub const CONFIG_TYPE_INT: i8 = 3;
pub const CONFIG_TYPE_SHORT: i8 = 4;
pub const CONFIG_TYPE_LONG: i8 = 5;
pub const CONFIG_TYPE_DOUBLE: i8 = 6;
pub const CONFIG_TYPE_LIST: i8 = 7;

/// DescribeConfigs `config_source` codes.
pub const CONFIG_SOURCE_DYNAMIC_TOPIC: i8 = 1;
pub const CONFIG_SOURCE_STATIC_BROKER: i8 = 4;
pub const CONFIG_SOURCE_DEFAULT: i8 = 5;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Long { min: i64 },
    Int { min: i64 },
    Ratio,
    Bool,
    OneOf(&'static [&'static str]),
    CleanupPolicy,
    Compression,
}

#[derive(Debug, Clone, Copy)]
pub struct ConfigDef {
    pub name: &'static str,
    /// The broker-level name whose value is the default.
    pub broker_name: &'static str,
    pub default: &'static str,
    kind: Kind,
}

impl ConfigDef {
    pub fn config_type(&self) -> i8 {
        match self.kind {
            Kind::Long { .. } => CONFIG_TYPE_LONG,
            Kind::Int { .. } => CONFIG_TYPE_INT,
            Kind::Ratio => CONFIG_TYPE_DOUBLE,
            Kind::Bool => CONFIG_TYPE_BOOLEAN,
            Kind::OneOf(_) | Kind::Compression => CONFIG_TYPE_STRING,
            Kind::CleanupPolicy => CONFIG_TYPE_LIST,
        }
    }

    pub fn is_list(&self) -> bool {
        matches!(self.kind, Kind::CleanupPolicy)
    }
}

const fn def(
    name: &'static str,
    broker_name: &'static str,
    default: &'static str,
    kind: Kind,
) -> ConfigDef {
    ConfigDef {
        name,
        broker_name,
        default,
        kind,
    }
}

/// Every topic config the broker knows, with Kafka's defaults.
pub const TOPIC_CONFIGS: &[ConfigDef] = &[
    def(
        "cleanup.policy",
        "log.cleanup.policy",
        "delete",
        Kind::CleanupPolicy,
    ),
    def(
        "compression.type",
        "compression.type",
        "producer",
        Kind::Compression,
    ),
    def(
        "delete.retention.ms",
        "log.cleaner.delete.retention.ms",
        "86400000",
        Kind::Long { min: 0 },
    ),
    def(
        "index.interval.bytes",
        "log.index.interval.bytes",
        "4096",
        Kind::Int { min: 0 },
    ),
    def(
        "max.compaction.lag.ms",
        "log.cleaner.max.compaction.lag.ms",
        "9223372036854775807",
        Kind::Long { min: 1 },
    ),
    def(
        "max.message.bytes",
        "message.max.bytes",
        "1048588",
        Kind::Int { min: 0 },
    ),
    def(
        "message.timestamp.type",
        "log.message.timestamp.type",
        "CreateTime",
        Kind::OneOf(&["CreateTime", "LogAppendTime"]),
    ),
    def(
        "min.cleanable.dirty.ratio",
        "log.cleaner.min.cleanable.ratio",
        "0.5",
        Kind::Ratio,
    ),
    def(
        "min.compaction.lag.ms",
        "log.cleaner.min.compaction.lag.ms",
        "0",
        Kind::Long { min: 0 },
    ),
    def(
        "min.insync.replicas",
        "min.insync.replicas",
        "1",
        Kind::Int { min: 1 },
    ),
    def(
        "retention.bytes",
        "log.retention.bytes",
        "-1",
        Kind::Long { min: -1 },
    ),
    def(
        "retention.ms",
        "log.retention.ms",
        "604800000",
        Kind::Long { min: -1 },
    ),
    def(
        "segment.bytes",
        "log.segment.bytes",
        "1073741824",
        Kind::Int { min: 14 },
    ),
    def(
        "segment.ms",
        "log.roll.ms",
        "604800000",
        Kind::Long { min: 1 },
    ),
    def(
        "unclean.leader.election.enable",
        "unclean.leader.election.enable",
        "false",
        Kind::Bool,
    ),
];

pub fn config_def(name: &str) -> Option<&'static ConfigDef> {
    TOPIC_CONFIGS.iter().find(|d| d.name == name)
}

/// Checks one topic config; the error says what is wrong, for INVALID_CONFIG.
pub fn validate_topic_config(name: &str, value: &str) -> Result<(), String> {
    let def = config_def(name).ok_or_else(|| format!("unknown topic config '{name}'"))?;
    let bad = |why: &str| Err(format!("invalid value '{value}' for {name}: {why}"));
    match def.kind {
        Kind::Long { min } => match value.trim().parse::<i64>() {
            Ok(v) if v >= min => Ok(()),
            Ok(_) => bad(&format!("must be at least {min}")),
            Err(_) => bad("not a whole number"),
        },
        Kind::Int { min } => match value.trim().parse::<i32>() {
            Ok(v) if v as i64 >= min => Ok(()),
            Ok(_) => bad(&format!("must be at least {min}")),
            Err(_) => bad("not a 32-bit whole number"),
        },
        Kind::Ratio => match value.trim().parse::<f64>() {
            Ok(v) if (0.0..=1.0).contains(&v) => Ok(()),
            _ => bad("must be a number between 0 and 1"),
        },
        Kind::Bool => match value.trim() {
            "true" | "false" => Ok(()),
            _ => bad("must be true or false"),
        },
        Kind::OneOf(allowed) => {
            if allowed.contains(&value.trim()) {
                Ok(())
            } else {
                bad(&format!("must be one of {}", allowed.join(", ")))
            }
        }
        Kind::CleanupPolicy => {
            let parts: Vec<&str> = value.split(',').map(str::trim).collect();
            if !parts.is_empty() && parts.iter().all(|p| *p == "delete" || *p == "compact") {
                Ok(())
            } else {
                bad("must be delete, compact or compact,delete")
            }
        }
        Kind::Compression => match topic_compression(value) {
            Some(_) => Ok(()),
            None => bad("must be producer, uncompressed, gzip, snappy, lz4 or zstd"),
        },
    }
}

/// Broker-level defaults for topic configs, by topic config name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicDefaults {
    values: BTreeMap<&'static str, String>,
    /// Which ones were set by the operator (reported as STATIC_BROKER_CONFIG).
    overridden: Vec<&'static str>,
    /// For the values a coarser broker setting can also give
    /// (`log.retention.hours`, `log.retention.minutes`, `log.roll.hours`): the unit that set
    /// them. Kafka lets `.ms` win over `.minutes` over `.hours`, whatever
    /// the order of the lines.
    set_in_unit: BTreeMap<&'static str, TimeUnit>,
}

/// The unit of a broker time setting, coarsest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum TimeUnit {
    Hours,
    Minutes,
    Milliseconds,
}

impl Default for TopicDefaults {
    fn default() -> Self {
        TopicDefaults {
            values: TOPIC_CONFIGS
                .iter()
                .map(|d| (d.name, d.default.to_string()))
                .collect(),
            overridden: Vec::new(),
            set_in_unit: BTreeMap::new(),
        }
    }
}

impl TopicDefaults {
    /// Applies broker settings by their Kafka broker names (`log.retention.ms`,
    /// `log.retention.hours`, `log.segment.bytes`, ...), validated like topic
    /// configs.
    pub fn set_broker_config(&mut self, broker_name: &str, value: &str) -> Result<(), String> {
        let (topic_name, value, unit) = match broker_name {
            "log.retention.hours" | "log.retention.minutes" | "log.roll.hours" => {
                let (unit, unit_ms) = if broker_name.ends_with("hours") {
                    (TimeUnit::Hours, 3_600_000i64)
                } else {
                    (TimeUnit::Minutes, 60_000)
                };
                let v: i64 = value
                    .trim()
                    .parse()
                    .map_err(|_| format!("invalid value '{value}' for {broker_name}"))?;
                let ms = if v < 0 { -1 } else { v.saturating_mul(unit_ms) };
                let target = if broker_name.starts_with("log.roll") {
                    "segment.ms"
                } else {
                    "retention.ms"
                };
                (target, ms.to_string(), unit)
            }
            _ => {
                let def = TOPIC_CONFIGS
                    .iter()
                    .find(|d| d.broker_name == broker_name)
                    .ok_or_else(|| format!("unknown broker config '{broker_name}'"))?;
                (def.name, value.trim().to_string(), TimeUnit::Milliseconds)
            }
        };
        validate_topic_config(topic_name, &value).map_err(|e| format!("{broker_name}: {e}"))?;
        let def = config_def(topic_name).expect("validated");
        if self
            .set_in_unit
            .get(def.name)
            .is_some_and(|earlier| *earlier > unit)
        {
            // A finer setting of the same value came first and wins.
            return Ok(());
        }
        self.set_in_unit.insert(def.name, unit);
        self.values.insert(def.name, value);
        if !self.overridden.contains(&def.name) {
            self.overridden.push(def.name);
        }
        Ok(())
    }

    pub fn get(&self, name: &str) -> &str {
        self.values.get(name).map(String::as_str).unwrap_or("")
    }

    pub fn is_overridden(&self, name: &str) -> bool {
        self.overridden.contains(&name)
    }
}

/// One row of DescribeConfigs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigEntry {
    pub name: &'static str,
    pub value: String,
    pub source: i8,
    pub config_type: i8,
}

/// Every topic config with its effective value and where it comes from.
pub fn describe_topic_configs(
    configs: &BTreeMap<String, String>,
    defaults: &TopicDefaults,
) -> Vec<ConfigEntry> {
    TOPIC_CONFIGS
        .iter()
        .map(|d| match configs.get(d.name) {
            Some(v) => ConfigEntry {
                name: d.name,
                value: v.clone(),
                source: CONFIG_SOURCE_DYNAMIC_TOPIC,
                config_type: d.config_type(),
            },
            None => ConfigEntry {
                name: d.name,
                value: defaults.get(d.name).to_string(),
                source: if defaults.is_overridden(d.name) {
                    CONFIG_SOURCE_STATIC_BROKER
                } else {
                    CONFIG_SOURCE_DEFAULT
                },
                config_type: d.config_type(),
            },
        })
        .collect()
}

/// The typed, effective config of one topic.
#[derive(Debug, Clone, PartialEq)]
pub struct TopicConfig {
    pub cleanup_delete: bool,
    pub cleanup_compact: bool,
    /// -1: keep forever.
    pub retention_ms: i64,
    /// -1: no size bound.
    pub retention_bytes: i64,
    pub segment_bytes: u64,
    pub segment_ms: i64,
    pub index_interval_bytes: u64,
    pub max_message_bytes: usize,
    pub min_cleanable_dirty_ratio: f64,
    pub min_compaction_lag_ms: i64,
    pub max_compaction_lag_ms: i64,
    pub delete_retention_ms: i64,
    pub log_append_time: bool,
    /// `min.insync.replicas`: the ISR an acks=all produce needs.
    pub min_insync_replicas: usize,
    /// `compression.type`: the codec every stored batch must have, or None
    /// to keep the producer's.
    pub compression: Option<Compression>,
}

/// A `compression.type` value: Some(None) for `producer` (keep the producer's
/// codec), Some(Some(codec)) for a codec the broker recompresses to, None for
/// a value that is neither.
pub fn topic_compression(value: &str) -> Option<Option<Compression>> {
    Some(match value.trim() {
        "producer" => None,
        "uncompressed" => Some(Compression::None),
        "gzip" => Some(Compression::Gzip),
        "snappy" => Some(Compression::Snappy),
        "lz4" => Some(Compression::Lz4),
        "zstd" => Some(Compression::Zstd),
        _ => return None,
    })
}

impl TopicConfig {
    /// Topic values over broker defaults. Values were validated on the way
    /// in; anything unparsable falls back to Kafka's default.
    pub fn effective(configs: &BTreeMap<String, String>, defaults: &TopicDefaults) -> TopicConfig {
        let raw = |name: &str| -> String {
            configs
                .get(name)
                .cloned()
                .unwrap_or_else(|| defaults.get(name).to_string())
        };
        let long = |name: &str| -> i64 {
            raw(name).trim().parse().unwrap_or_else(|_| {
                config_def(name)
                    .and_then(|d| d.default.parse().ok())
                    .unwrap_or(0)
            })
        };
        let policy = raw("cleanup.policy");
        TopicConfig {
            cleanup_delete: policy.split(',').any(|p| p.trim() == "delete"),
            cleanup_compact: policy.split(',').any(|p| p.trim() == "compact"),
            retention_ms: long("retention.ms"),
            retention_bytes: long("retention.bytes"),
            segment_bytes: long("segment.bytes").max(14) as u64,
            segment_ms: long("segment.ms").max(1),
            index_interval_bytes: long("index.interval.bytes").max(0) as u64,
            max_message_bytes: long("max.message.bytes").max(0) as usize,
            min_cleanable_dirty_ratio: raw("min.cleanable.dirty.ratio")
                .trim()
                .parse()
                .unwrap_or(0.5),
            min_compaction_lag_ms: long("min.compaction.lag.ms"),
            max_compaction_lag_ms: long("max.compaction.lag.ms"),
            delete_retention_ms: long("delete.retention.ms"),
            log_append_time: raw("message.timestamp.type").trim() == "LogAppendTime",
            min_insync_replicas: long("min.insync.replicas").max(1) as usize,
            compression: topic_compression(&raw("compression.type")).flatten(),
        }
    }

    pub fn log_config(&self) -> crate::log::LogConfig {
        crate::log::LogConfig {
            segment_bytes_max: self.segment_bytes,
            segment_ms: self.segment_ms,
            index_interval_bytes: self.index_interval_bytes,
            message_bytes_max: self.max_message_bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults_from(lines: &[(&str, &str)]) -> TopicDefaults {
        let mut defaults = TopicDefaults::default();
        for (name, value) in lines {
            defaults.set_broker_config(name, value).unwrap();
        }
        defaults
    }

    #[test]
    fn milliseconds_win_over_minutes_over_hours_in_any_order() {
        let orders: [&[(&str, &str)]; 3] = [
            &[
                ("log.retention.ms", "1234"),
                ("log.retention.minutes", "30"),
                ("log.retention.hours", "24"),
            ],
            &[
                ("log.retention.hours", "24"),
                ("log.retention.minutes", "30"),
                ("log.retention.ms", "1234"),
            ],
            &[
                ("log.retention.minutes", "30"),
                ("log.retention.ms", "1234"),
                ("log.retention.hours", "24"),
            ],
        ];
        for lines in orders {
            assert_eq!(
                defaults_from(lines).get("retention.ms"),
                "1234",
                "{lines:?}"
            );
        }
        let minutes_then_hours = [
            ("log.retention.minutes", "30"),
            ("log.retention.hours", "24"),
        ];
        assert_eq!(
            defaults_from(&minutes_then_hours).get("retention.ms"),
            "1800000"
        );
        let roll = [("log.roll.ms", "5000"), ("log.roll.hours", "1")];
        assert_eq!(defaults_from(&roll).get("segment.ms"), "5000");
        // The same unit twice: the later line wins, as for every setting.
        let twice = [("log.retention.hours", "1"), ("log.retention.hours", "2")];
        assert_eq!(defaults_from(&twice).get("retention.ms"), "7200000");
        assert!(defaults_from(&twice).is_overridden("retention.ms"));
    }
}
