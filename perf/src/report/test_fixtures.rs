//! Results shared by the report tests: a target's result and a report of
//! several.

use super::{ratio_rows, Distribution, IntervalSample, Measured, Report, TargetResult, Throughput};
use crate::stats::{Counts, LatencySummary};
use crate::workload::Workload;

pub(super) fn sample_result(label: &str, mb: f64, p99: f64) -> TargetResult {
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

pub(super) fn report(results: Vec<TargetResult>) -> Report {
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
