//! The rate held for the measured window: fixed by the workload, or searched
//! by open-loop trials (`rate_search` decides the next rate) and confirmed
//! over longer steps.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use super::collector::Totals;
use super::shared::Mode;
use super::Driver;
use crate::rate_search::{judge, RateSearch, StepObservation};
use crate::report::RateInfo;

/// Bounded wait for acks and reads after a step.
const STEP_DRAIN_TIMEOUT: Duration = Duration::from_secs(15);
/// Confirmation steps after the rate search, each CONFIRM_LEN × step_s: a
/// 2x step still passed rates that a 15 s window could not hold.
const CONFIRM_MAX: usize = 3;
const CONFIRM_LEN: f64 = 3.0;

impl Driver<'_, '_> {
    /// Rate: fixed, or searched (fails if no rate tried was sustainable).
    pub(super) fn settle_rate(
        &mut self,
        consumed_target: &dyn Fn(&Totals) -> u64,
    ) -> Result<RateInfo> {
        if !self.w.searches_rate() {
            return Ok(RateInfo {
                searched: false,
                measured_msgs_per_s: self.w.fixed_rate_msgs(),
                search_steps: Vec::new(),
            });
        }
        let mut search = self.search_rate(consumed_target);
        match self.confirm_best_rate(&mut search, consumed_target) {
            Some(b) => Ok(RateInfo {
                searched: true,
                measured_msgs_per_s: Some(b),
                search_steps: search.steps.clone(),
            }),
            None => {
                let why = search
                    .steps
                    .last()
                    .map(|s| s.reason.clone())
                    .unwrap_or_default();
                bail!("no sustainable rate found: even the lowest rate tried failed ({why})");
            }
        }
    }

    /// The search proper: one step_s trial per rate `RateSearch` asks for.
    fn search_rate(&mut self, consumed_target: &dyn Fn(&Totals) -> u64) -> RateSearch {
        let w = self.w;
        let cfg = &w.rate_search;
        let start = cfg
            .start_rate
            .msgs_per_sec(w.record_size.0)
            .unwrap_or(1000.0)
            .max(1.0);
        let mut search = RateSearch::new(start, cfg.precision, cfg.max_steps);
        while let Some(r) = search.next_rate() {
            let label = format!("search {}", search.steps.len() + 1);
            let (obs, verdict) = self.trial(r, cfg.step_s, &label, consumed_target);
            search.observe(obs, verdict);
        }
        search
    }

    /// Short steps flatter a broker (page cache, no stall yet): confirm the
    /// best rate over a longer step, stepping down until one holds.
    fn confirm_best_rate(
        &mut self,
        search: &mut RateSearch,
        consumed_target: &dyn Fn(&Totals) -> u64,
    ) -> Option<f64> {
        let w = self.w;
        let cfg = &w.rate_search;
        let mut best = search.best();
        for i in 0..CONFIRM_MAX {
            let Some(b) = best else { break };
            let label = format!("confirm {}", i + 1);
            let (obs, verdict) = self.trial(b, cfg.step_s * CONFIRM_LEN, &label, consumed_target);
            let ok = verdict.is_ok();
            search.record_confirmation(obs, verdict);
            if ok {
                break;
            }
            best = Some(b / cfg.precision);
        }
        best
    }

    /// One open-loop trial at `rate` for `len_s`, drained and judged.
    fn trial(
        &mut self,
        rate: f64,
        len_s: f64,
        label: &str,
        consumed_target: &dyn Fn(&Totals) -> u64,
    ) -> (StepObservation, Result<(), String>) {
        let (w, shared, c) = (self.w, self.shared, &mut *self.c);
        let mb = rate * w.record_size.0 as f64 / 1e6;
        let t0 = shared.clock.now_ns();
        c.begin_window(t0);
        c.target_rate = Some(rate);
        c.set_phase(&format!("{label}: {mb:.1} MB/s"), len_s);
        shared.set_mode(Mode::Paced {
            start_ns: t0,
            rate_total: rate,
        });
        c.wait(Instant::now() + Duration::from_secs_f64(len_s), |_| false);
        shared.set_mode(Mode::Paused);
        let t1 = shared.clock.now_ns();
        shared.window.close(t1);
        c.target_rate = None;
        c.drain(STEP_DRAIN_TIMEOUT, consumed_target);
        let t = c.totals();
        let duration_s = (t1 - t0) as f64 / 1e9;
        let obs = t.observation(rate, duration_s, &t.e2e_latency());
        let verdict = judge(&obs, w.rate_search.max_p99_ms);
        c.progress.note(&format!(
            "  {label}: {} msg/s ({mb:.1} MB/s) for {len_s} s: {}",
            crate::report::fmt_count(rate),
            verdict
                .as_ref()
                .err()
                .map(|s| s.as_str())
                .unwrap_or("sustainable")
        ));
        (obs, verdict)
    }
}
