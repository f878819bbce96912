//! Results: the JSON shape, the human table, the markdown summary, the
//! ratio table of `compare`, and `--report DIR` (JSON + markdown + SVG plots).
//! Every headline number is shown beside the machine's limit when `limits`
//! has been measured.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::limits::Limits;
use crate::progress::fmt_ms;
use crate::rate_search::Step;
use crate::stats::{Counts, LatencySummary};
use crate::svg::{self, Chart, Series, XScale};
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

/// 1234 -> "1234", 12345 -> "12.3k", 1234567 -> "1.23M".
pub fn fmt_count(x: f64) -> String {
    if x >= 1e6 {
        format!("{:.2}M", x / 1e6)
    } else if x >= 1e4 {
        format!("{:.1}k", x / 1e3)
    } else {
        format!("{x:.0}")
    }
}

fn fmt_opt(x: Option<f64>, digits: usize) -> String {
    x.map(|v| format!("{v:.digits$}"))
        .unwrap_or_else(|| "-".into())
}

fn lat_row(name: &str, l: &Option<LatencySummary>) -> String {
    match l {
        None => format!("{name:<12} {:>8}\n", "-"),
        Some(l) => format!(
            "{name:<12} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>9}\n",
            ms3(l.p50_ms),
            ms3(l.p90_ms),
            ms3(l.p99_ms),
            ms3(l.p99_9_ms),
            ms3(l.p99_99_ms),
            ms3(l.max_ms),
            fmt_count(l.count as f64)
        ),
    }
}

fn ms3(ms: f64) -> String {
    if ms < 10.0 {
        format!("{ms:.3}")
    } else if ms < 1000.0 {
        format!("{ms:.1}")
    } else {
        format!("{ms:.0}")
    }
}

fn rate_line(w: &Workload, r: &TargetResult) -> String {
    let size = w.record_size.0 as f64;
    match (r.rate.searched, r.rate.measured_msgs_per_s) {
        (true, Some(m)) => format!(
            "searched in {} steps + {} confirmations: max sustainable {} msg/s ({:.1} MB/s), held for the window",
            r.rate.search_steps.iter().filter(|s| !s.confirm).count(),
            r.rate.search_steps.iter().filter(|s| s.confirm).count(),
            fmt_count(m),
            m * size / 1e6
        ),
        (false, Some(m)) => format!("fixed {} msg/s ({:.1} MB/s)", fmt_count(m), m * size / 1e6),
        _ => "no producers in the window (read only)".into(),
    }
}

/// The human-readable result of one target.
pub fn human(report: &Report, r: &TargetResult) -> String {
    let w = &report.workload;
    let m = &r.measured;
    let mut s = String::new();
    let _ = writeln!(s, "workload  {}: {}", w.name, w.description);
    let _ = writeln!(
        s,
        "target    {} ({}{}), client librdkafka {}",
        r.label,
        r.bootstrap,
        r.broker_pid
            .map(|p| format!(", broker pid {p}"))
            .unwrap_or_default(),
        report.librdkafka
    );
    let _ = writeln!(s, "rate      {}", rate_line(w, r));
    if let Some(p) = &r.prefill {
        let _ = writeln!(
            s,
            "prefill   {} records ({:.2} GB) in {:.1} s ({:.0} MB/s, acks=1)",
            fmt_count(p.records as f64),
            p.bytes as f64 / 1e9,
            p.seconds,
            p.mb_per_s
        );
    }
    let _ = writeln!(
        s,
        "window    {:.1} s measured{}{}",
        m.duration_s,
        if w.warmup_s > 0.0 && m.scheduled > 0 {
            format!(" after {} s warm-up", w.warmup_s)
        } else {
            String::new()
        },
        m.caught_up_s
            .map(|c| format!(", caught up in {c:.1} s"))
            .unwrap_or_default()
    );
    if let Some(v) = &m.verdict {
        let _ = writeln!(
            s,
            "verdict   {v} (p99 bound {} ms)",
            w.rate_search.max_p99_ms
        );
    }
    s.push('\n');
    let share = |metric: &str| -> String {
        r.limit_shares
            .iter()
            .filter(|l| l.metric == metric)
            .map(|l| format!("{:.1}% of {} ({:.0} MB/s)", l.share, l.limit, l.limit_value))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if m.produce.msgs > 0 || m.scheduled > 0 {
        let _ = writeln!(
            s,
            "produce   {:>8.1} MB/s {:>8} msg/s   {}",
            m.produce.mb_per_s,
            fmt_count(m.produce.msgs_per_s),
            share("produce")
        );
    }
    if m.consume.msgs > 0 || !m.consume_mb_per_s_per_group.is_empty() {
        let _ = writeln!(
            s,
            "consume   {:>8.1} MB/s {:>8} msg/s   {}",
            m.consume.mb_per_s,
            fmt_count(m.consume.msgs_per_s),
            share("consume")
        );
    }
    if let Some(cpu) = m.broker_cpu_pct {
        let cores = report.limits.as_ref().map(|l| l.cpus).unwrap_or(0);
        let _ = write!(s, "broker    {cpu:>8.0} % CPU");
        if cores > 0 {
            let _ = write!(s, " ({:.0}% of {cores} cores)", cpu / cores as f64);
        }
        if let Some(rss) = m.broker_rss_max_mb {
            let _ = write!(s, ", RSS max {rss:.0} MB");
        }
        s.push('\n');
    } else {
        let _ = writeln!(
            s,
            "broker    CPU/RSS not measured (no --broker-pid, not a local listener)"
        );
    }
    if let Some(cpu) = m.client_cpu_pct {
        let _ = writeln!(
            s,
            "client    {cpu:>8.0} % CPU (gregor-perf itself, same machine)"
        );
    }
    s.push('\n');
    if m.scheduled > 0 {
        let _ = writeln!(
            s,
            "{:<12} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>9}",
            "latency ms", "p50", "p90", "p99", "p99.9", "p99.99", "max", "count"
        );
    }
    if m.scheduled > 0 {
        s += &lat_row("publish", &m.publish_latency);
    }
    if !m.consume_mb_per_s_per_group.is_empty() && m.scheduled > 0 {
        s += &lat_row("end-to-end", &m.e2e_latency);
    }
    for l in r.limit_shares.iter().filter(|l| l.kind == "floor") {
        let _ = writeln!(
            s,
            "  {} {} is {:.1}x the machine's {} ({})",
            l.metric,
            fmt_ms(l.value),
            l.share,
            l.limit,
            fmt_ms(l.limit_value)
        );
    }
    let _ = writeln!(
        s,
        "records   scheduled {}  sent {}  acked {}  errors {}  unacked after drain {}",
        m.scheduled, m.sent, m.acked, m.errors, m.unfinished
    );
    if !m.drained {
        let _ = writeln!(
            s,
            "WARNING   drain timed out: some acks or reads never arrived"
        );
    }
    for e in &r.last_errors {
        let _ = writeln!(s, "error     {e}");
    }
    if report.limits.is_none() {
        let _ = writeln!(
            s,
            "(no machine limits: run `gregor-perf limits` to see numbers as % of limit)"
        );
    }
    s
}

pub fn human_ratios(report: &Report) -> String {
    let mut s = String::new();
    let labels: Vec<&str> = report.results.iter().map(|r| r.label.as_str()).collect();
    let _ = write!(s, "{:<22}", "metric");
    for l in &labels {
        let _ = write!(s, " {l:>12}");
    }
    for l in labels.iter().skip(1) {
        let _ = write!(s, " {:>14}", format!("{l}/{}", labels[0]));
    }
    s.push('\n');
    for row in &report.ratios {
        let _ = write!(s, "{:<22}", row.metric);
        for v in &row.values {
            let _ = write!(s, " {:>12}", fmt_opt(*v, 2));
        }
        for r in row.ratios.iter().skip(1) {
            let _ = write!(
                s,
                " {:>14}",
                r.map(|r| format!("{r:.2}x")).unwrap_or("-".into())
            );
        }
        s.push('\n');
    }
    s
}

/// The markdown summary written by --report.
pub fn markdown(report: &Report) -> String {
    let w = &report.workload;
    let mut s = String::new();
    let _ = writeln!(s, "# gregor-perf: {}\n", w.name);
    let _ = writeln!(s, "{}\n", w.description);
    let _ = writeln!(
        s,
        "Client: librdkafka {} (rdkafka crate, bundled). Command: `{}`\n",
        report.librdkafka, report.command
    );
    let _ = writeln!(
        s,
        "Workload: {} topic(s) x {} partitions, {} B records, keys {}, {} producer(s), {} consumer group(s) x {}, acks={}, compression {}, batch {} B, linger {} ms, warm-up {} s, measured {} s.\n",
        w.topics, w.partitions_per_topic, w.record_size.0, format!("{:?}", w.key_distribution).to_lowercase(), w.producers,
        w.consumer_groups, w.consumers, w.acks.as_config(), w.compression.as_str(), w.batch_size.0,
        w.linger_ms, w.warmup_s, w.duration_s
    );
    let _ = writeln!(s, "## Results\n");
    let _ = writeln!(
        s,
        "| target | rate | produce MB/s | produce msg/s | consume MB/s | publish p50 / p99 / p99.9 / max ms | e2e p50 / p99 / p99.9 / max ms | broker CPU % | broker RSS MB |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|");
    let lat = |l: &Option<LatencySummary>| {
        l.map(|l| {
            format!(
                "{} / {} / {} / {}",
                ms3(l.p50_ms),
                ms3(l.p99_ms),
                ms3(l.p99_9_ms),
                ms3(l.max_ms)
            )
        })
        .unwrap_or("-".into())
    };
    for r in &report.results {
        let m = &r.measured;
        let _ = writeln!(
            s,
            "| {} | {} | {:.1} | {} | {:.1} | {} | {} | {} | {} |",
            r.label,
            rate_line(w, r),
            m.produce.mb_per_s,
            fmt_count(m.produce.msgs_per_s),
            m.consume.mb_per_s,
            lat(&m.publish_latency),
            lat(&m.e2e_latency),
            fmt_opt(m.broker_cpu_pct, 0),
            fmt_opt(m.broker_rss_max_mb, 0)
        );
    }
    s.push('\n');
    for r in &report.results {
        if let Some(p) = &r.prefill {
            let _ = writeln!(
                s,
                "- {}: prefill of {:.2} GB took {:.1} s ({:.0} MB/s){}",
                r.label,
                p.bytes as f64 / 1e9,
                p.seconds,
                p.mb_per_s,
                r.measured
                    .caught_up_s
                    .map(|c| format!("; consumers caught up in {c:.1} s"))
                    .unwrap_or_default()
            );
        }
        let m = &r.measured;
        if let Some(v) = &m.verdict {
            let _ = writeln!(
                s,
                "- {}: {v} (the rate search's test on the whole window, p99 bound {} ms)",
                r.label, w.rate_search.max_p99_ms
            );
        }
        let _ = writeln!(
            s,
            "- {}: {} records scheduled, {} sent, {} acked, {} errors, {} unacked after the drain{}",
            r.label,
            m.scheduled,
            m.sent,
            m.acked,
            m.errors,
            m.unfinished,
            if m.drained { "" } else { " (drain timed out)" }
        );
    }
    if let Some(l) = &report.limits {
        let _ = writeln!(s, "\n## Beside the machine's limits\n");
        let _ = writeln!(s, "| target | metric | value | limit | share |");
        let _ = writeln!(s, "|---|---|---|---|---|");
        for r in &report.results {
            for x in &r.limit_shares {
                let _ = writeln!(
                    s,
                    "| {} | {} | {:.2} {} | {} {:.2} {} | {} |",
                    r.label,
                    x.metric,
                    x.value,
                    x.unit,
                    x.limit,
                    x.limit_value,
                    x.unit,
                    x.share_text()
                );
            }
        }
        s.push('\n');
        s += &limits_markdown(l);
    }
    if report.results.len() > 1 {
        let _ = writeln!(s, "\n## Ratios (to {})\n", report.results[0].label);
        let _ = write!(s, "| metric |");
        for r in &report.results {
            let _ = write!(s, " {} |", r.label);
        }
        for r in report.results.iter().skip(1) {
            let _ = write!(s, " {}/{} |", r.label, report.results[0].label);
        }
        s.push('\n');
        let cols = report.results.len() * 2;
        let _ = writeln!(s, "|---|{}", "---|".repeat(cols));
        for row in &report.ratios {
            let _ = write!(s, "| {} |", row.metric);
            for v in &row.values {
                let _ = write!(s, " {} |", fmt_opt(*v, 2));
            }
            for r in row.ratios.iter().skip(1) {
                let _ = write!(
                    s,
                    " {} |",
                    r.map(|r| format!("{r:.2}x")).unwrap_or("-".into())
                );
            }
            s.push('\n');
        }
    }
    for r in &report.results {
        if !r.rate.search_steps.is_empty() {
            let _ = writeln!(s, "\n## Rate search ({})\n", r.label);
            let _ = writeln!(
                s,
                "| step | msg/s | MB/s | acked / scheduled | publish p99 ms | verdict |"
            );
            let _ = writeln!(s, "|---|---|---|---|---|---|");
            for (i, st) in r.rate.search_steps.iter().enumerate() {
                let o = &st.observation;
                let _ = writeln!(
                    s,
                    "| {}{} | {:.0} | {:.1} | {} / {} | {} | {} |",
                    i + 1,
                    if st.confirm { " (confirm)" } else { "" },
                    st.rate_msgs,
                    st.rate_msgs * w.record_size.0 as f64 / 1e6,
                    o.acked_during,
                    o.scheduled,
                    fmt_opt(o.publish_p99_ms, 2),
                    st.reason
                );
            }
        }
    }
    let _ = writeln!(s, "\n## Plots\n");
    for (f, t) in PLOTS {
        let _ = writeln!(s, "![{t}]({f})\n");
    }
    let _ = writeln!(
        s,
        "Latencies are measured from each record's intended send time (open loop, no coordinated omission). MB = 10^6 bytes of record values."
    );
    s
}

pub fn limits_markdown(l: &Limits) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "Machine limits (`gregor-perf limits`, {} on {} cores, kernel {}, dir {}):\n",
        l.host, l.cpus, l.kernel, l.dir
    );
    let _ = writeln!(s, "| limit | value |");
    let _ = writeln!(s, "|---|---|");
    let _ = writeln!(
        s,
        "| sequential write + fdatasync | {:.0} MB/s |",
        l.seq_write_fdatasync_mb_s
    );
    let _ = writeln!(
        s,
        "| sequential write O_DIRECT | {} |",
        l.seq_write_odirect_mb_s
            .map(|v| format!("{v:.0} MB/s"))
            .unwrap_or_else(|| format!("n/a ({})", l.odirect_error.as_deref().unwrap_or("?")))
    );
    let f = &l.fsync_4k;
    let _ = writeln!(
        s,
        "| 4 KiB append + fdatasync | p50 {} / p99 {} / p99.9 {} / max {} ({:.0}/s) |",
        fmt_ms(f.p50_ms),
        fmt_ms(f.p99_ms),
        fmt_ms(f.p99_9_ms),
        fmt_ms(f.max_ms),
        l.fsync_4k_per_s
    );
    let _ = writeln!(
        s,
        "| loopback TCP (1 stream) | {:.0} MB/s |",
        l.loopback_tcp_mb_s
    );
    let _ = writeln!(s, "| memcpy (1 MiB) | {:.0} MB/s |", l.memcpy_mb_s);
    s
}

pub fn limits_human(l: &Limits) -> String {
    let f = &l.fsync_4k;
    format!(
        "machine   {} ({} cores, kernel {}), files in {}\n\
         write     {:>8.0} MB/s  sequential, buffered 1 MiB writes + fdatasync every 32 MiB\n\
         write     {:>8} MB/s  sequential, O_DIRECT 1 MiB writes{}\n\
         fdatasync p50 {} p99 {} p99.9 {} max {} ({:.0} syncs/s, 4 KiB appends)\n\
         loopback  {:>8.0} MB/s  TCP, one stream\n\
         memcpy    {:>8.0} MB/s  1 MiB buffers\n",
        l.host,
        l.cpus,
        l.kernel,
        l.dir,
        l.seq_write_fdatasync_mb_s,
        l.seq_write_odirect_mb_s
            .map(|v| format!("{v:.0}"))
            .unwrap_or_else(|| "n/a".into()),
        l.odirect_error
            .as_deref()
            .map(|e| format!(" ({e})"))
            .unwrap_or_default(),
        fmt_ms(f.p50_ms),
        fmt_ms(f.p99_ms),
        fmt_ms(f.p99_9_ms),
        fmt_ms(f.max_ms),
        l.fsync_4k_per_s,
        l.loopback_tcp_mb_s,
        l.memcpy_mb_s
    )
}

pub const PLOTS: [(&str, &str); 3] = [
    ("latency-over-time.svg", "latency percentiles over time"),
    ("throughput-over-time.svg", "throughput over time"),
    ("latency-distribution.svg", "latency distribution"),
];

const COLORS: [&str; 6] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b",
];

/// The three plots of a report.
pub fn charts(report: &Report) -> Vec<(String, Chart)> {
    let many = report.results.len() > 1;
    let name = |r: &TargetResult, what: &str| {
        if many {
            format!("{} {what}", r.label)
        } else {
            what.to_string()
        }
    };
    let measured_band = |r: &TargetResult| -> Option<(f64, f64)> {
        let m = &r.measured;
        (m.window_end_s > m.window_start_s).then_some((m.window_start_s, m.window_end_s))
    };

    let mut lat = Chart::new(
        &format!("{}: latency percentiles per second", report.workload.name),
        "time since start (s)",
        "latency (ms, log scale)",
    );
    lat.y_log = true;
    let mut thr = Chart::new(
        &format!("{}: throughput per second", report.workload.name),
        "time since start (s)",
        "MB/s",
    );
    let mut dist = Chart::new(
        &format!(
            "{}: latency distribution (measured window)",
            report.workload.name
        ),
        "percentile",
        "latency (ms, log scale)",
    );
    dist.y_log = true;
    dist.x_scale = XScale::Percentile;
    let size = report.workload.record_size.0 as f64;

    for (i, r) in report.results.iter().enumerate() {
        let c = |k: usize| COLORS[(i * 2 + k) % COLORS.len()];
        let pts = |f: &dyn Fn(&IntervalSample) -> Option<f64>| -> Vec<(f64, f64)> {
            r.series
                .iter()
                .filter_map(|s| f(s).map(|v| (s.t_s, v)))
                .collect()
        };
        let (c0, c1) = if many {
            (c(0), c(0))
        } else {
            (COLORS[0], COLORS[1])
        };
        lat.series.push(
            Series::new(
                &name(r, "publish p50"),
                c0,
                pts(&|s| s.publish.map(|l| l.p50_ms)),
            )
            .dashed(),
        );
        lat.series.push(Series::new(
            &name(r, "publish p99"),
            c0,
            pts(&|s| s.publish.map(|l| l.p99_ms)),
        ));
        if !many {
            lat.series.push(
                Series::new(
                    "publish max",
                    "#aec7e8",
                    pts(&|s| s.publish.map(|l| l.max_ms)),
                )
                .thin(),
            );
        }
        lat.series.push(
            Series::new(&name(r, "e2e p50"), c1, pts(&|s| s.e2e.map(|l| l.p50_ms)))
                .dashed()
                .alt(),
        );
        lat.series
            .push(Series::new(&name(r, "e2e p99"), c1, pts(&|s| s.e2e.map(|l| l.p99_ms))).alt());

        thr.series.push(Series::new(
            &name(r, "produced (acked)"),
            c0,
            pts(&|s| Some(s.produced_mb_per_s)),
        ));
        thr.series.push(
            Series::new(
                &name(r, "consumed"),
                c1,
                pts(&|s| Some(s.consumed_mb_per_s)),
            )
            .alt(),
        );
        thr.series.push(
            Series::new(
                &name(r, "target"),
                "#7f7f7f",
                pts(&|s| s.target_msgs_per_s.map(|t| t * size / 1e6)),
            )
            .dashed(),
        );

        dist.series.push(Series::new(
            &name(r, "publish"),
            c0,
            r.distribution.publish.clone(),
        ));
        dist.series
            .push(Series::new(&name(r, "end-to-end"), c1, r.distribution.e2e.clone()).alt());

        if !many {
            if let Some(b) = measured_band(r) {
                lat.bands.push((b.0, b.1, "measured".into()));
                thr.bands.push((b.0, b.1, "measured".into()));
            }
        }
    }
    for ch in [&mut lat, &mut thr, &mut dist] {
        ch.series.retain(|s| !s.points.is_empty());
    }
    vec![
        (PLOTS[0].0.to_string(), lat),
        (PLOTS[1].0.to_string(), thr),
        (PLOTS[2].0.to_string(), dist),
    ]
}

/// `--report DIR`: result.json, summary.md and the SVG plots.
pub fn write_dir(report: &Report, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let json = serde_json::to_string_pretty(report)?;
    std::fs::write(dir.join("result.json"), json + "\n")
        .with_context(|| format!("cannot write {}", dir.display()))?;
    std::fs::write(dir.join("summary.md"), markdown(report))?;
    for (file, chart) in charts(report) {
        std::fs::write(dir.join(&file), svg::render(&chart))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::Workload;

    fn sample_result(label: &str, mb: f64, p99: f64) -> TargetResult {
        let lat = LatencySummary {
            count: 1000,
            p50_ms: p99 / 3.0,
            p90_ms: p99 / 2.0,
            p99_ms: p99,
            p99_9_ms: p99 * 2.0,
            p99_99_ms: p99 * 3.0,
            max_ms: p99 * 4.0,
            mean_ms: p99 / 3.0,
        };
        let series = (1..=10)
            .map(|t| IntervalSample {
                t_s: t as f64,
                dt_s: 1.0,
                phase: if t > 3 {
                    "measure".into()
                } else {
                    "warm-up".into()
                },
                target_msgs_per_s: Some(mb * 1e6 / 1024.0),
                produced_mb_per_s: mb,
                consumed_mb_per_s: mb * 0.99,
                publish: Some(lat),
                e2e: Some(lat),
                ..Default::default()
            })
            .collect();
        TargetResult {
            label: label.into(),
            bootstrap: "127.0.0.1:9092".into(),
            measured: Measured {
                window_start_s: 3.0,
                window_end_s: 10.0,
                duration_s: 10.0,
                scheduled: 100,
                sent: 100,
                acked: 100,
                drained: true,
                produce: Throughput::of(
                    Counts {
                        msgs: 100,
                        bytes: (mb * 1e7) as u64,
                    },
                    10.0,
                ),
                consume: Throughput::of(
                    Counts {
                        msgs: 100,
                        bytes: (mb * 1e7) as u64,
                    },
                    10.0,
                ),
                consume_mb_per_s_per_group: vec![mb],
                publish_latency: Some(lat),
                e2e_latency: Some(lat),
                broker_cpu_pct: Some(120.0),
                ..Default::default()
            },
            series,
            distribution: Distribution {
                publish: vec![(0.0, 1.0), (90.0, 2.0), (99.0, 3.0), (100.0, 9.0)],
                e2e: vec![(0.0, 1.5), (99.0, 4.0), (100.0, 10.0)],
            },
            ..Default::default()
        }
    }

    fn report(results: Vec<TargetResult>) -> Report {
        let ratios = ratio_rows(&results);
        Report {
            tool: "gregor-perf".into(),
            version: "0".into(),
            librdkafka: "2.12.1".into(),
            command: "test".into(),
            workload: Workload::load("max-throughput-1k", &[]).unwrap(),
            limits: None,
            results,
            ratios,
        }
    }

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
    fn report_dir_has_json_markdown_and_plots() {
        let dir = std::env::temp_dir().join(format!("gregor-perf-report-{}", std::process::id()));
        let rep = report(vec![
            sample_result("gregor", 100.0, 10.0),
            sample_result("other", 80.0, 12.0),
        ]);
        write_dir(&rep, &dir).unwrap();
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("result.json")).unwrap())
                .unwrap();
        assert_eq!(json["results"][1]["label"], "other");
        assert_eq!(json["librdkafka"], "2.12.1");
        let md = std::fs::read_to_string(dir.join("summary.md")).unwrap();
        assert!(md.contains("## Ratios (to gregor)"), "{md}");
        assert!(
            md.contains("| produce MB/s | 100.00 | 80.00 | 0.80x |"),
            "{md}"
        );
        for (f, _) in PLOTS {
            let svg = std::fs::read_to_string(dir.join(f)).unwrap();
            assert!(
                svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"),
                "{f}"
            );
            assert!(svg.contains("<polyline"), "{f} has data");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn human_output_mentions_the_headline_numbers() {
        let rep = report(vec![sample_result("gregor", 100.0, 10.0)]);
        let text = human(&rep, &rep.results[0]);
        assert!(text.contains("produce      100.0 MB/s"), "{text}");
        assert!(text.contains("publish"), "{text}");
        assert!(text.contains("no machine limits"), "{text}");
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
