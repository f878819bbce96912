//! Results: the JSON shape (the model below), the ratio table of `compare`,
//! and the machine's limits beside each headline number. One renderer per
//! output: `human` (text), `markdown` (summary.md), `charts` (SVG plots);
//! `files` writes `--report DIR` (JSON + markdown + SVG plots). Every
//! headline number is shown beside the machine's limit when `limits` has
//! been measured.

mod charts;
mod files;
mod format;
mod human;
mod markdown;
#[cfg(test)]
mod test_fixtures;

use std::collections::BTreeMap;

use serde::Serialize;

pub use self::files::write_dir;
pub use self::format::fmt_count;
pub use self::human::{human, human_ratios, limits_human};
use crate::limits::Limits;
use crate::rate_search::Step;
use crate::stats::{Counts, LatencySummary};
use crate::workload::{Acks, Workload};

#[derive(Debug, Clone, Default, Serialize)]
pub struct Throughput {
    pub msgs: u64,
    pub bytes: u64,
    pub msgs_per_s: f64,
    /// 10^6 bytes per second, record values only (keys and protocol overhead
    /// not counted).
    pub mb_per_s: f64,
}

impl Throughput {
    pub fn of(c: Counts, seconds: f64) -> Throughput {
        let s = seconds.max(1e-9);
        Throughput {
            msgs: c.msgs,
            bytes: c.bytes,
            msgs_per_s: c.msgs as f64 / s,
            mb_per_s: c.bytes as f64 / s / 1e6,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct RateInfo {
    pub searched: bool,
    /// The rate held during warm-up and the measured window (None: no
    /// producers, as in a catch-up read).
    pub measured_msgs_per_s: Option<f64>,
    pub search_steps: Vec<Step>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct PrefillResult {
    pub records: u64,
    pub bytes: u64,
    pub seconds: f64,
    pub mb_per_s: f64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Measured {
    /// With producers: "kept up" if the window passes the rate search's test
    /// (>=95% acked and read during the window, no errors, p99 under
    /// rate_search.max_p99_ms), else "did not keep up: why".
    pub verdict: Option<String>,
    /// The window, in seconds since the run started (as in `series`).
    pub window_start_s: f64,
    pub window_end_s: f64,
    pub duration_s: f64,
    /// Records the schedule called for in the window (rate × duration).
    pub scheduled: u64,
    /// Records with an intended time in the window: handed to the client,
    /// acknowledged, failed, and still unacknowledged after the drain.
    pub sent: u64,
    pub acked: u64,
    pub errors: u64,
    pub unfinished: u64,
    /// False if the drain timed out (acks or reads were still missing).
    pub drained: bool,
    /// Acknowledged while the window was open.
    pub produce: Throughput,
    /// Read while the window was open, all groups together.
    pub consume: Throughput,
    pub consume_mb_per_s_per_group: Vec<f64>,
    pub consumed_in_window_by_intended: Vec<u64>,
    pub foreign_records: u64,
    /// From intended send time to delivery report, records intended in the window.
    pub publish_latency: Option<LatencySummary>,
    /// From intended send time to the consumer's poll, records intended in the window.
    pub e2e_latency: Option<LatencySummary>,
    /// Catch-up reads: seconds until every group had read the prefill.
    pub caught_up_s: Option<f64>,
    /// Percent of one core (200 = two cores busy), averaged over the window.
    pub broker_cpu_pct: Option<f64>,
    pub broker_rss_max_mb: Option<f64>,
    pub client_cpu_pct: Option<f64>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct IntervalSample {
    /// End of the interval, seconds since the run started.
    pub t_s: f64,
    pub dt_s: f64,
    pub phase: String,
    pub target_msgs_per_s: Option<f64>,
    pub produced_msgs_per_s: f64,
    pub produced_mb_per_s: f64,
    pub consumed_msgs_per_s: f64,
    pub consumed_mb_per_s: f64,
    pub errors: u64,
    pub publish: Option<LatencySummary>,
    pub e2e: Option<LatencySummary>,
    pub broker_cpu_pct: Option<f64>,
    pub broker_rss_mb: Option<f64>,
    pub client_cpu_pct: Option<f64>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Distribution {
    /// (percentile, ms)
    pub publish: Vec<(f64, f64)>,
    pub e2e: Vec<(f64, f64)>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct TargetResult {
    pub label: String,
    pub bootstrap: String,
    pub broker_pid: Option<u32>,
    pub run_id: String,
    pub topics: Vec<String>,
    pub started_unix_s: u64,
    pub rate: RateInfo,
    pub prefill: Option<PrefillResult>,
    pub measured: Measured,
    pub limit_shares: Vec<LimitShare>,
    pub series: Vec<IntervalSample>,
    pub distribution: Distribution,
    pub histograms: BTreeMap<String, String>,
    pub last_errors: Vec<String>,
}

/// One number beside the machine's limit.
#[derive(Debug, Clone, Serialize)]
pub struct LimitShare {
    pub metric: String,
    pub value: f64,
    pub unit: String,
    pub limit: String,
    pub limit_value: f64,
    /// "ceiling": value as % of the limit. "floor": value as a multiple of it.
    pub kind: String,
    pub share: f64,
}

impl LimitShare {
    fn ceiling(metric: &str, value: f64, unit: &str, limit: &str, limit_value: f64) -> Self {
        LimitShare {
            metric: metric.into(),
            value,
            unit: unit.into(),
            limit: limit.into(),
            limit_value,
            kind: "ceiling".into(),
            share: if limit_value > 0.0 {
                value / limit_value * 100.0
            } else {
                0.0
            },
        }
    }

    fn floor(metric: &str, value: f64, unit: &str, limit: &str, limit_value: f64) -> Self {
        LimitShare {
            metric: metric.into(),
            value,
            unit: unit.into(),
            limit: limit.into(),
            limit_value,
            kind: "floor".into(),
            share: if limit_value > 0.0 {
                value / limit_value
            } else {
                0.0
            },
        }
    }

    pub fn share_text(&self) -> String {
        if self.kind == "floor" {
            format!("{:.1}x floor", self.share)
        } else {
            format!("{:.1}% of limit", self.share)
        }
    }
}

/// The limits that bound each headline number of this workload.
pub fn limit_shares(w: &Workload, m: &Measured, l: &Limits) -> Vec<LimitShare> {
    let mut out = Vec::new();
    if m.produce.msgs > 0 {
        if w.acks == Acks::All {
            out.push(LimitShare::ceiling(
                "produce",
                m.produce.mb_per_s,
                "MB/s",
                "sequential write + fdatasync",
                l.seq_write_fdatasync_mb_s,
            ));
        }
        out.push(LimitShare::ceiling(
            "produce",
            m.produce.mb_per_s,
            "MB/s",
            "loopback TCP",
            l.loopback_tcp_mb_s,
        ));
    }
    if m.consume.msgs > 0 {
        out.push(LimitShare::ceiling(
            "consume",
            m.consume.mb_per_s,
            "MB/s",
            "loopback TCP",
            l.loopback_tcp_mb_s,
        ));
    }
    if w.acks == Acks::All {
        if let Some(p) = &m.publish_latency {
            out.push(LimitShare::floor(
                "publish p50",
                p.p50_ms,
                "ms",
                "4 KiB fdatasync p50",
                l.fsync_4k.p50_ms,
            ));
            out.push(LimitShare::floor(
                "publish p99",
                p.p99_ms,
                "ms",
                "4 KiB fdatasync p99",
                l.fsync_4k.p99_ms,
            ));
        }
    }
    if let Some(cpu) = m.broker_cpu_pct {
        out.push(LimitShare::ceiling(
            "broker CPU",
            cpu,
            "%",
            &format!("{} cores", l.cpus),
            l.cpus as f64 * 100.0,
        ));
    }
    out
}

/// The whole output of one `run` or `compare`.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub tool: String,
    pub version: String,
    pub librdkafka: String,
    pub command: String,
    pub workload: Workload,
    pub limits: Option<Limits>,
    pub results: Vec<TargetResult>,
    /// compare: each metric for every target and its ratio to the first.
    pub ratios: Vec<RatioRow>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RatioRow {
    pub metric: String,
    /// Higher is better (throughput) or lower is better (latency, CPU).
    pub higher_is_better: bool,
    pub values: Vec<Option<f64>>,
    /// values[i] / values[0]
    pub ratios: Vec<Option<f64>>,
}

pub fn ratio_rows(results: &[TargetResult]) -> Vec<RatioRow> {
    type Get = fn(&Measured) -> Option<f64>;
    let metrics: Vec<(&str, bool, Get)> = vec![
        ("produce MB/s", true, |m| nonzero(m.produce.mb_per_s)),
        ("produce msg/s", true, |m| nonzero(m.produce.msgs_per_s)),
        ("consume MB/s", true, |m| nonzero(m.consume.mb_per_s)),
        ("publish p50 ms", false, |m| {
            m.publish_latency.map(|l| l.p50_ms)
        }),
        ("publish p99 ms", false, |m| {
            m.publish_latency.map(|l| l.p99_ms)
        }),
        ("publish p99.9 ms", false, |m| {
            m.publish_latency.map(|l| l.p99_9_ms)
        }),
        ("publish max ms", false, |m| {
            m.publish_latency.map(|l| l.max_ms)
        }),
        ("end-to-end p50 ms", false, |m| {
            m.e2e_latency.map(|l| l.p50_ms)
        }),
        ("end-to-end p99 ms", false, |m| {
            m.e2e_latency.map(|l| l.p99_ms)
        }),
        ("end-to-end p99.9 ms", false, |m| {
            m.e2e_latency.map(|l| l.p99_9_ms)
        }),
        ("catch-up s", false, |m| m.caught_up_s),
        ("broker CPU %", false, |m| m.broker_cpu_pct),
        ("broker RSS MB", false, |m| m.broker_rss_max_mb),
    ];
    let mut rows = Vec::new();
    for (name, higher, get) in metrics {
        let values: Vec<Option<f64>> = results.iter().map(|r| get(&r.measured)).collect();
        if values.iter().all(|v| v.is_none()) {
            continue;
        }
        let base = values.first().copied().flatten();
        let ratios = values
            .iter()
            .map(|v| match (v, base) {
                (Some(v), Some(b)) if b > 0.0 => Some(v / b),
                _ => None,
            })
            .collect();
        rows.push(RatioRow {
            metric: name.into(),
            higher_is_better: higher,
            values,
            ratios,
        });
    }
    // The rate the search settled on is a result in itself.
    if results.iter().any(|r| r.rate.searched) {
        let values: Vec<Option<f64>> = results.iter().map(|r| r.rate.measured_msgs_per_s).collect();
        let base = values.first().copied().flatten();
        rows.insert(
            0,
            RatioRow {
                metric: "max sustainable msg/s".into(),
                higher_is_better: true,
                ratios: values
                    .iter()
                    .map(|v| v.zip(base).filter(|(_, b)| *b > 0.0).map(|(v, b)| v / b))
                    .collect(),
                values,
            },
        );
    }
    rows
}

fn nonzero(x: f64) -> Option<f64> {
    (x > 0.0).then_some(x)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::test_fixtures::sample_result;
    use crate::workload::Workload;

    #[test]
    fn ratios_relative_to_the_first_target() {
        let rows = ratio_rows(&[
            sample_result("a", 100.0, 10.0),
            sample_result("b", 50.0, 20.0),
        ]);
        let p = rows.iter().find(|r| r.metric == "produce MB/s").unwrap();
        assert_eq!(p.ratios, vec![Some(1.0), Some(0.5)]);
        let l = rows.iter().find(|r| r.metric == "publish p99 ms").unwrap();
        assert_eq!(l.ratios, vec![Some(1.0), Some(2.0)]);
        assert!(!l.higher_is_better);
        assert!(
            rows.iter().all(|r| r.metric != "catch-up s"),
            "all-None rows are dropped"
        );
    }

    #[test]
    fn limit_shares_for_acks_all() {
        let w = Workload::load("max-throughput-1k", &[]).unwrap();
        let m = sample_result("g", 225.0, 10.0).measured;
        let l = Limits {
            measured_at_unix_s: 0,
            host: "h".into(),
            kernel: "k".into(),
            cpus: 2,
            dir: "/".into(),
            write_size_bytes: 0,
            seq_write_fdatasync_mb_s: 450.0,
            seq_write_odirect_mb_s: Some(900.0),
            odirect_error: None,
            fsync_4k: LatencySummary {
                p50_ms: 0.5,
                p99_ms: 1.0,
                ..Default::default()
            },
            fsync_4k_per_s: 2000.0,
            loopback_tcp_mb_s: 2250.0,
            memcpy_mb_s: 20000.0,
        };
        let shares = limit_shares(&w, &m, &l);
        let disk = shares
            .iter()
            .find(|s| s.limit.contains("fdatasync") && s.metric == "produce")
            .unwrap();
        assert!((disk.share - 50.0).abs() < 1e-9);
        let tcp = shares.iter().find(|s| s.metric == "consume").unwrap();
        assert!((tcp.share - 10.0).abs() < 1e-9);
        let p99 = shares.iter().find(|s| s.metric == "publish p99").unwrap();
        assert!((p99.share - 10.0).abs() < 1e-9 && p99.kind == "floor");
        let cpu = shares.iter().find(|s| s.metric == "broker CPU").unwrap();
        assert!((cpu.share - 60.0).abs() < 1e-9);
    }
}
