//! Number and text formatting shared by the human and markdown renderers.

use super::{Report, TargetResult};
use crate::workload::Workload;

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

pub(super) fn fmt_opt(x: Option<f64>, digits: usize) -> String {
    x.map(|v| format!("{v:.digits$}"))
        .unwrap_or_else(|| "-".into())
}

pub(super) fn ms3(ms: f64) -> String {
    if ms < 10.0 {
        format!("{ms:.3}")
    } else if ms < 1000.0 {
        format!("{ms:.1}")
    } else {
        format!("{ms:.0}")
    }
}

pub(super) fn rate_line(w: &Workload, r: &TargetResult) -> String {
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

/// A ratio as "1.23x", or "-" where there is none.
fn fmt_ratio(ratio: Option<f64>) -> String {
    ratio.map(|r| format!("{r:.2}x")).unwrap_or("-".into())
}

/// A column of the ratio table.
#[derive(Debug, Clone, Copy)]
pub(super) enum RatioColumn {
    Metric,
    Value,
    Ratio,
}

/// The ratio table of `compare`, each cell laid out by the renderer's
/// `cell`: a header line (`metric`, each target's label, each
/// `label/first`), then `after_header`, then a line per metric (its name,
/// each target's value, each ratio to the first target).
pub(super) fn ratio_table(
    report: &Report,
    after_header: &str,
    cell: impl Fn(RatioColumn, &str) -> String,
) -> String {
    let labels: Vec<&str> = report.results.iter().map(|r| r.label.as_str()).collect();
    let header = (
        "metric".to_string(),
        labels.iter().map(|l| l.to_string()).collect::<Vec<_>>(),
        labels
            .iter()
            .skip(1)
            .map(|l| format!("{l}/{}", labels[0]))
            .collect::<Vec<_>>(),
    );
    let rows = report.ratios.iter().map(|row| {
        (
            row.metric.clone(),
            row.values.iter().map(|v| fmt_opt(*v, 2)).collect(),
            row.ratios.iter().skip(1).map(|r| fmt_ratio(*r)).collect(),
        )
    });
    let mut s = String::new();
    for (i, (metric, values, ratios)) in std::iter::once(header).chain(rows).enumerate() {
        s += &cell(RatioColumn::Metric, &metric);
        for v in &values {
            s += &cell(RatioColumn::Value, v);
        }
        for r in &ratios {
            s += &cell(RatioColumn::Ratio, r);
        }
        s.push('\n');
        if i == 0 {
            s += after_header;
        }
    }
    s
}
