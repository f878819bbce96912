//! The SVG plots of `--report`: latency percentiles and throughput over
//! time, and the latency distribution of the measured window.

use super::{IntervalSample, Report, TargetResult};
use crate::svg::{Chart, Series, XScale};

pub(super) const PLOTS: [(&str, &str); 3] = [
    ("latency-over-time.svg", "latency percentiles over time"),
    ("throughput-over-time.svg", "throughput over time"),
    ("latency-distribution.svg", "latency distribution"),
];

const COLORS: [&str; 6] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b",
];

/// The three plots of a report.
pub(super) fn charts(report: &Report) -> Vec<(String, Chart)> {
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
