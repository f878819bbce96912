//! The human-readable text printed by `run`, `compare` and `limits`: one
//! block per target, the ratio table, the machine's limits.

use std::fmt::Write as _;

use super::format::{fmt_count, ms3, rate_line, ratio_table, RatioColumn};
use super::{Report, TargetResult};
use crate::limits::Limits;
use crate::progress::fmt_ms;
use crate::stats::LatencySummary;

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
    ratio_table(report, "", |column, text| match column {
        RatioColumn::Metric => format!("{text:<22}"),
        RatioColumn::Value => format!(" {text:>12}"),
        RatioColumn::Ratio => format!(" {text:>14}"),
    })
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::test_fixtures::{report, sample_result};

    #[test]
    fn human_output_mentions_the_headline_numbers() {
        let rep = report(vec![sample_result("gregor", 100.0, 10.0)]);
        let text = human(&rep, &rep.results[0]);
        assert!(text.contains("produce      100.0 MB/s"), "{text}");
        assert!(text.contains("publish"), "{text}");
        assert!(text.contains("no machine limits"), "{text}");
    }
}
