//! Metrics: every shard counts into its own cells (no locks, no atomics);
//! a scrape (`net::metrics_http`) asks every shard over the mesh for a
//! snapshot, and `render` merges them into Prometheus text.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

/// Upper bounds (seconds) of the latency histogram buckets; +Inf is implied.
pub const LATENCY_BUCKETS_S: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Histogram {
    /// Per bucket (not cumulative), then the +Inf bucket.
    pub counts: [u64; LATENCY_BUCKETS_S.len() + 1],
    pub sum_s: f64,
    pub count: u64,
}

impl Histogram {
    pub fn observe(&mut self, seconds: f64) {
        let bucket = LATENCY_BUCKETS_S
            .iter()
            .position(|le| seconds <= *le)
            .unwrap_or(LATENCY_BUCKETS_S.len());
        self.counts[bucket] += 1;
        self.sum_s += seconds;
        self.count += 1;
    }

    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(other.counts.iter()) {
            *a += b;
        }
        self.sum_s += other.sum_s;
        self.count += other.count;
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TopicCounters {
    pub produce_bytes: u64,
    pub produce_records: u64,
    pub fetch_bytes: u64,
    pub fetch_records: u64,
}

/// One shard's counters. Only its own thread touches them. Per-topic
/// produce/fetch counters live on the partitions (`Partition::counters`) and
/// fsync latency on the group commit; a snapshot gathers them.
#[derive(Default)]
pub struct ShardMetrics {
    pub requests: RefCell<BTreeMap<&'static str, Histogram>>,
    pub connections: Cell<i64>,
}

impl ShardMetrics {
    pub fn on_request(&self, api: &'static str, elapsed: Duration) {
        self.requests
            .borrow_mut()
            .entry(api)
            .or_default()
            .observe(elapsed.as_secs_f64());
    }
}

/// A partition's gauges at scrape time.
#[derive(Debug, Clone)]
pub struct PartitionGauges {
    pub topic: String,
    pub partition: i32,
    pub log_start_offset: i64,
    pub log_end_offset: i64,
    pub size_bytes: u64,
}

/// What one shard reports to a scrape (plain data: it crosses the mesh).
#[derive(Debug, Clone, Default)]
pub struct MetricsSnapshot {
    pub shard: usize,
    pub topics: BTreeMap<String, TopicCounters>,
    pub requests: BTreeMap<&'static str, Histogram>,
    pub fsync: Histogram,
    /// Coalesced segment writes of all the shard's partitions.
    pub segment_write: Histogram,
    pub connections: i64,
    pub mesh_hops: u64,
    pub request_memory_bytes: u64,
    pub groups: u64,
    pub partitions: Vec<PartitionGauges>,
    /// Segment files open now, and the shard's budget for them.
    pub segment_files_open: u64,
    pub segment_files_budget: u64,
    /// Segment descriptors duplicated for responses not yet sent.
    pub segment_slices_in_flight: u64,
    pub segment_file_reopens: u64,
    pub segment_file_evictions: u64,
    pub segment_file_idle_closes: u64,
    pub segment_file_over_budget_opens: u64,
    /// Partitions placed on the shard that do not serve (files not created,
    /// or damaged at open).
    pub offline_partitions: u64,
}

fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn write_histogram(out: &mut String, name: &str, labels: &str, h: &Histogram) {
    let mut cumulative = 0u64;
    let sep = if labels.is_empty() { "" } else { "," };
    for (i, le) in LATENCY_BUCKETS_S.iter().enumerate() {
        cumulative += h.counts[i];
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {cumulative}"
        );
    }
    cumulative += h.counts[LATENCY_BUCKETS_S.len()];
    let _ = writeln!(
        out,
        "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {cumulative}"
    );
    let _ = writeln!(out, "{name}_sum{{{labels}}} {}", h.sum_s);
    let _ = writeln!(out, "{name}_count{{{labels}}} {}", h.count);
}

/// A histogram family by shard: name, help, and where a snapshot keeps it.
type HistogramSeries = (
    &'static str,
    &'static str,
    fn(&MetricsSnapshot) -> &Histogram,
);
/// (metric name, help, how to read it from its source)
type Series<T, V> = (&'static str, &'static str, fn(&T) -> V);

/// Prometheus text exposition (format 0.0.4) of every shard's snapshot.
pub fn render(snapshots: &[MetricsSnapshot]) -> String {
    let mut out = String::new();
    let counter = |out: &mut String, name: &str, help: &str, kind: &str| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
    };
    let per_topic: [Series<TopicCounters, u64>; 4] = [
        (
            "gregor_produce_bytes_total",
            "Record bytes appended, by shard and topic.",
            |c| c.produce_bytes,
        ),
        (
            "gregor_produce_records_total",
            "Records appended, by shard and topic.",
            |c| c.produce_records,
        ),
        (
            "gregor_fetch_bytes_total",
            "Record bytes returned to fetches, by shard and topic.",
            |c| c.fetch_bytes,
        ),
        (
            "gregor_fetch_records_total",
            "Records returned to fetches, by shard and topic.",
            |c| c.fetch_records,
        ),
    ];
    for (name, help, get) in per_topic {
        counter(&mut out, name, help, "counter");
        for s in snapshots {
            for (topic, c) in &s.topics {
                let _ = writeln!(
                    out,
                    "{name}{{shard=\"{}\",topic=\"{}\"}} {}",
                    s.shard,
                    escape_label(topic),
                    get(c)
                );
            }
        }
    }
    counter(
        &mut out,
        "gregor_request_latency_seconds",
        "Kafka request latency on the connection's shard, by API.",
        "histogram",
    );
    let mut merged: BTreeMap<&str, Histogram> = BTreeMap::new();
    for s in snapshots {
        for (api, h) in &s.requests {
            merged.entry(api).or_default().merge(h);
        }
    }
    for (api, h) in &merged {
        write_histogram(
            &mut out,
            "gregor_request_latency_seconds",
            &format!("api=\"{api}\""),
            h,
        );
    }
    let shard_histograms: [HistogramSeries; 2] = [
        (
            "gregor_fsync_latency_seconds",
            "fdatasync latency of group commits, by shard.",
            |s| &s.fsync,
        ),
        (
            "gregor_segment_write_latency_seconds",
            "Latency of coalesced segment writes (to the page cache, or O_DIRECT), by shard.",
            |s| &s.segment_write,
        ),
    ];
    for (name, help, histogram) in shard_histograms {
        counter(&mut out, name, help, "histogram");
        for s in snapshots {
            write_histogram(
                &mut out,
                name,
                &format!("shard=\"{}\"", s.shard),
                histogram(s),
            );
        }
    }
    let gauges: [Series<MetricsSnapshot, f64>; 12] = [
        (
            "gregor_connections",
            "Open client connections, by shard.",
            |s| s.connections as f64,
        ),
        (
            "gregor_mesh_hops_total",
            "Requests forwarded to another shard, by shard.",
            |s| s.mesh_hops as f64,
        ),
        (
            "gregor_request_memory_bytes",
            "Request bytes in flight, by shard.",
            |s| s.request_memory_bytes as f64,
        ),
        (
            "gregor_consumer_groups",
            "Consumer groups coordinated, by shard.",
            |s| s.groups as f64,
        ),
        (
            "gregor_partitions_offline",
            "Partitions placed on the shard that do not serve: produce and fetch get KAFKA_STORAGE_ERROR.",
            |s| s.offline_partitions as f64,
        ),
        (
            "gregor_segment_files_open",
            "Segment files open now (idle partitions hold none), by shard.",
            |s| s.segment_files_open as f64,
        ),
        (
            "gregor_segment_files_budget",
            "Segment files a shard keeps open at most (from the open-file limit).",
            |s| s.segment_files_budget as f64,
        ),
        (
            "gregor_segment_slices_in_flight",
            "Segment descriptors duplicated for fetch responses not yet sent, by owning shard (bounded by its connection budget; at the bound a fetch sends those partitions nothing that time).",
            |s| s.segment_slices_in_flight as f64,
        ),
        (
            "gregor_segment_file_reopens_total",
            "Segment files opened again on demand after being closed, by shard.",
            |s| s.segment_file_reopens as f64,
        ),
        (
            "gregor_segment_file_evictions_total",
            "Segment files closed to make room under the budget, by shard.",
            |s| s.segment_file_evictions as f64,
        ),
        (
            "gregor_segment_file_idle_closes_total",
            "Segment files closed after the quiet period, by shard.",
            |s| s.segment_file_idle_closes as f64,
        ),
        (
            "gregor_segment_file_over_budget_opens_total",
            "Opens past the budget because every open file was in use, by shard.",
            |s| s.segment_file_over_budget_opens as f64,
        ),
    ];
    for (name, help, get) in gauges {
        let kind = if name.ends_with("_total") {
            "counter"
        } else {
            "gauge"
        };
        counter(&mut out, name, help, kind);
        for s in snapshots {
            let _ = writeln!(out, "{name}{{shard=\"{}\"}} {}", s.shard, get(s));
        }
    }
    let partition_gauges: [Series<PartitionGauges, f64>; 3] = [
        (
            "gregor_log_start_offset",
            "First offset of each partition.",
            |p| p.log_start_offset as f64,
        ),
        (
            "gregor_log_end_offset",
            "High watermark of each partition.",
            |p| p.log_end_offset as f64,
        ),
        (
            "gregor_log_size_bytes",
            "Bytes of each partition's segments.",
            |p| p.size_bytes as f64,
        ),
    ];
    for (name, help, get) in partition_gauges {
        counter(&mut out, name, help, "gauge");
        for s in snapshots {
            for p in &s.partitions {
                let _ = writeln!(
                    out,
                    "{name}{{shard=\"{}\",topic=\"{}\",partition=\"{}\"}} {}",
                    s.shard,
                    escape_label(&p.topic),
                    p.partition,
                    get(p)
                );
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_in_the_text() {
        let mut h = Histogram::default();
        h.observe(0.00005);
        h.observe(0.003);
        h.observe(100.0);
        let mut other = Histogram::default();
        other.observe(0.003);
        h.merge(&other);
        assert_eq!(h.count, 4);
        let mut out = String::new();
        write_histogram(&mut out, "x", "api=\"Fetch\"", &h);
        assert!(out.contains("x_bucket{api=\"Fetch\",le=\"0.0001\"} 1\n"));
        assert!(out.contains("x_bucket{api=\"Fetch\",le=\"0.005\"} 3\n"));
        assert!(out.contains("x_bucket{api=\"Fetch\",le=\"10\"} 3\n"));
        assert!(out.contains("x_bucket{api=\"Fetch\",le=\"+Inf\"} 4\n"));
        assert!(out.contains("x_count{api=\"Fetch\"} 4\n"));
    }

    #[test]
    fn render_names_every_family_once_and_escapes_labels() {
        let mut snapshot = MetricsSnapshot {
            shard: 1,
            ..Default::default()
        };
        snapshot.topics.insert(
            "we\"ird".into(),
            TopicCounters {
                produce_bytes: 10,
                produce_records: 2,
                fetch_bytes: 5,
                fetch_records: 1,
            },
        );
        let text = render(&[snapshot]);
        assert!(text.contains("gregor_produce_bytes_total{shard=\"1\",topic=\"we\\\"ird\"} 10\n"));
        for family in [
            "gregor_produce_bytes_total",
            "gregor_connections",
            "gregor_fsync_latency_seconds",
            "gregor_segment_write_latency_seconds",
        ] {
            assert_eq!(
                text.matches(&format!("# TYPE {family} ")).count(),
                1,
                "{family}"
            );
        }
    }
}
