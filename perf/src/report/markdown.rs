//! The markdown summary written by `--report` (summary.md).

use std::fmt::Write as _;

use super::charts::PLOTS;
use super::format::{fmt_count, fmt_opt, ms3, rate_line, ratio_table, RatioColumn};
use super::Report;
use crate::limits::Limits;
use crate::progress::fmt_ms;
use crate::stats::LatencySummary;

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
        let separator = format!("|---|{}\n", "---|".repeat(report.results.len() * 2));
        s += &ratio_table(report, &separator, |column, text| match column {
            RatioColumn::Metric => format!("| {text} |"),
            RatioColumn::Value | RatioColumn::Ratio => format!(" {text} |"),
        });
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

fn limits_markdown(l: &Limits) -> String {
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
