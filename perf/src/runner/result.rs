//! The run's result from the totals after the final drain: the measured
//! window, the rate search's test applied to it, latency distributions and
//! the encoded histograms.

use std::collections::BTreeMap;

use super::phases::MeasuredWindow;
use super::Driver;
use crate::rate_search::judge;
use crate::report::{Distribution, Measured, TargetResult, Throughput};
use crate::stats::{distribution, encode_hist, Counts, LatencySummary};

impl Driver<'_, '_> {
    /// The result of the measured window at `rate` (None: no producers),
    /// without the prefill and rate parts.
    pub(super) fn result(
        &mut self,
        rate: Option<f64>,
        window: &MeasuredWindow,
        drained: bool,
    ) -> TargetResult {
        let c = &mut *self.c;
        let t = c.totals();
        let duration_s = (window.end_ns - window.start_ns) as f64 / 1e9;
        let e2e = t.e2e_latency();
        let mut consumed = Counts::default();
        let mut per_group_mb_s = Vec::new();
        for by_time in &t.groups_by_time {
            consumed = consumed.plus(*by_time);
            per_group_mb_s.push(by_time.bytes as f64 / duration_s / 1e6);
        }
        let pw = &t.produced_window;
        let last_errors = c.last_errors();
        let foreign = c.foreign_records();
        // The same test the rate search applies to a step, on the whole window:
        // did the broker keep up with the offered rate?
        let verdict = rate.map(|r| {
            match judge(
                &t.observation(r, duration_s, &e2e),
                self.w.rate_search.max_p99_ms,
            ) {
                Ok(()) => "kept up".to_string(),
                Err(why) => format!("did not keep up: {why}"),
            }
        });
        let measured = Measured {
            verdict,
            window_start_s: window.start_ns as f64 / 1e9,
            window_end_s: window.end_ns as f64 / 1e9,
            duration_s,
            scheduled: rate.map(|r| (r * duration_s).floor() as u64).unwrap_or(0),
            sent: pw.sent,
            acked: pw.done.msgs,
            errors: pw.errors,
            unfinished: pw.sent.saturating_sub(pw.done.msgs + pw.errors),
            drained,
            produce: Throughput::of(t.produced_by_time, duration_s),
            consume: Throughput::of(consumed, duration_s),
            consume_mb_per_s_per_group: per_group_mb_s,
            consumed_in_window_by_intended: t.groups_window.iter().map(|g| g.done.msgs).collect(),
            foreign_records: foreign,
            publish_latency: LatencySummary::of(&pw.latency),
            e2e_latency: LatencySummary::of(&e2e),
            caught_up_s: window.caught_up_s,
            broker_cpu_pct: window.broker.cpu_percent(),
            broker_rss_max_mb: (c.window_broker_rss_max_mb > 0.0)
                .then_some(c.window_broker_rss_max_mb)
                .or_else(|| window.broker.after.map(|s| s.rss_bytes as f64 / 1e6)),
            client_cpu_pct: window.client.cpu_percent(),
        };
        TargetResult {
            measured,
            distribution: Distribution {
                publish: distribution(&pw.latency),
                e2e: distribution(&e2e),
            },
            histograms: BTreeMap::from([
                (
                    "publish_v2_deflate_base64".to_string(),
                    encode_hist(&pw.latency),
                ),
                ("e2e_v2_deflate_base64".to_string(), encode_hist(&e2e)),
            ]),
            series: std::mem::take(&mut c.series),
            last_errors,
            ..TargetResult::default()
        }
    }
}
