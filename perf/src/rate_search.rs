//! The search for the max sustainable rate (target_rate = 0). Each trial step
//! runs open loop at a fixed rate; a step is sustainable when the broker
//! acknowledged (and consumers read) nearly everything that was scheduled,
//! without errors, and p99 latency from the intended send time stayed under a
//! bound. Latency measured that way grows without limit once the offered rate
//! exceeds what the broker can do, so the bound separates the two cleanly.
//!
//! The search doubles the rate until a step fails, then bisects
//! (geometrically) between the best good and the lowest bad rate until they
//! are within `precision` of each other or the step budget is spent. The
//! runner then confirms the best rate over longer steps (`runner::rate`),
//! stepping down by `precision` until one holds; confirmations are recorded
//! here as steps but do not change the search.

use serde::Serialize;

/// What one trial step observed.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StepObservation {
    pub rate_msgs: f64,
    pub duration_s: f64,
    /// Records scheduled in the step (rate × duration).
    pub scheduled: u64,
    /// Records with an intended time in the step that were acknowledged.
    pub acked: u64,
    /// Acknowledgements that arrived while the step ran (not in the drain
    /// after it): falls behind `scheduled` as soon as the broker cannot keep up.
    pub acked_during: u64,
    pub errors: u64,
    pub publish_p99_ms: Option<f64>,
    /// Per consumer group: records of the step read. Empty without consumers.
    pub consumed_per_group: Vec<u64>,
    /// Per consumer group: records read while the step ran.
    pub consumed_during_per_group: Vec<u64>,
    pub e2e_p99_ms: Option<f64>,
}

/// The fraction of scheduled records that must be acknowledged and consumed.
pub const COMPLETION_MIN: f64 = 0.95;

/// Judges a step: Ok(()) if sustainable, else Err(the first reason it is not).
pub fn judge(obs: &StepObservation, max_p99_ms: f64) -> Result<(), String> {
    let need = (obs.scheduled as f64 * COMPLETION_MIN).floor() as u64;
    if obs.errors > 0 {
        return Err(format!("{} delivery errors", obs.errors));
    }
    if obs.acked < need {
        return Err(format!(
            "acknowledged {} of {} scheduled records",
            obs.acked, obs.scheduled
        ));
    }
    if obs.acked_during < need {
        return Err(format!(
            "only {} of {} scheduled records acknowledged during the step (falling behind)",
            obs.acked_during, obs.scheduled
        ));
    }
    match obs.publish_p99_ms {
        Some(p99) if p99 > max_p99_ms => {
            return Err(format!("publish p99 {p99:.1} ms > {max_p99_ms} ms"));
        }
        None if obs.scheduled > 0 => return Err("no publish latency recorded".into()),
        _ => {}
    }
    if let Some(min) = obs.consumed_per_group.iter().min() {
        if *min < need {
            return Err(format!(
                "consumers read {} of {} scheduled records",
                min, obs.scheduled
            ));
        }
        if let Some(min) = obs.consumed_during_per_group.iter().min() {
            if *min < need {
                return Err(format!(
                    "consumers read only {} of {} scheduled records during the step (falling behind)",
                    min, obs.scheduled
                ));
            }
        }
        if let Some(p99) = obs.e2e_p99_ms {
            if p99 > max_p99_ms {
                return Err(format!("end-to-end p99 {p99:.1} ms > {max_p99_ms} ms"));
            }
        }
    }
    Ok(())
}

#[derive(Debug, Clone, Serialize)]
pub struct Step {
    /// A confirmation step (longer, after the search proper).
    pub confirm: bool,
    pub rate_msgs: f64,
    pub sustainable: bool,
    pub reason: String,
    pub observation: StepObservation,
}

#[derive(Debug, Clone)]
pub struct RateSearch {
    next: Option<f64>,
    best_ok: Option<f64>,
    lowest_bad: Option<f64>,
    precision: f64,
    max_steps: u32,
    min_rate: f64,
    pub steps: Vec<Step>,
}

impl RateSearch {
    pub fn new(start_rate: f64, precision: f64, max_steps: u32) -> RateSearch {
        assert!(start_rate > 0.0 && precision > 1.0 && max_steps > 0);
        RateSearch {
            next: Some(start_rate),
            best_ok: None,
            lowest_bad: None,
            precision,
            max_steps,
            min_rate: 1.0,
            steps: Vec::new(),
        }
    }

    /// The rate to try next, or None when the search is over.
    pub fn next_rate(&self) -> Option<f64> {
        self.next
    }

    /// The highest rate found sustainable so far.
    pub fn best(&self) -> Option<f64> {
        self.best_ok
    }

    pub fn observe(&mut self, obs: StepObservation, verdict: Result<(), String>) {
        let rate = obs.rate_msgs;
        let sustainable = verdict.is_ok();
        if sustainable {
            self.best_ok = Some(self.best_ok.map_or(rate, |b| b.max(rate)));
        } else {
            self.lowest_bad = Some(self.lowest_bad.map_or(rate, |b| b.min(rate)));
        }
        self.steps.push(Step {
            confirm: false,
            rate_msgs: rate,
            sustainable,
            reason: verdict.err().unwrap_or_else(|| "sustainable".into()),
            observation: obs,
        });
        self.next = self.decide();
    }

    /// Records a confirmation step; it does not change the search's state.
    pub fn record_confirmation(&mut self, obs: StepObservation, verdict: Result<(), String>) {
        self.steps.push(Step {
            confirm: true,
            rate_msgs: obs.rate_msgs,
            sustainable: verdict.is_ok(),
            reason: verdict.err().unwrap_or_else(|| "sustainable".into()),
            observation: obs,
        });
    }

    fn decide(&self) -> Option<f64> {
        if self.steps.iter().filter(|s| !s.confirm).count() as u32 >= self.max_steps {
            return None;
        }
        match (self.best_ok, self.lowest_bad) {
            (Some(good), None) => Some(good * 2.0),
            (None, Some(bad)) => Some(bad / 2.0).filter(|r| *r >= self.min_rate),
            (Some(good), Some(bad)) if bad > good * self.precision => Some((good * bad).sqrt()),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(rate: f64) -> StepObservation {
        StepObservation {
            rate_msgs: rate,
            duration_s: 1.0,
            scheduled: rate as u64,
            acked: rate as u64,
            acked_during: rate as u64,
            publish_p99_ms: Some(5.0),
            ..Default::default()
        }
    }

    /// Runs the search against a broker whose capacity is `cap` msg/s.
    fn search(start: f64, cap: f64) -> RateSearch {
        let mut s = RateSearch::new(start, 1.1, 30);
        while let Some(r) = s.next_rate() {
            let verdict = if r <= cap {
                Ok(())
            } else {
                Err("too fast".into())
            };
            s.observe(obs(r), verdict);
        }
        s
    }

    #[test]
    fn finds_capacity_within_precision() {
        for (start, cap) in [(1000.0, 37_000.0), (100_000.0, 2_500.0), (500.0, 500.0)] {
            let s = search(start, cap);
            let best = s.best().expect("found a rate");
            assert!(best <= cap, "{best} > {cap}");
            assert!(best * 1.1 >= cap, "{best} too far below {cap}");
        }
    }

    #[test]
    fn gives_up_when_nothing_is_sustainable() {
        let s = search(1000.0, 0.5);
        assert_eq!(s.best(), None);
        assert!(s.steps.iter().all(|st| !st.sustainable));
    }

    #[test]
    fn respects_the_step_budget() {
        let mut s = RateSearch::new(1.0, 1.01, 5);
        while let Some(r) = s.next_rate() {
            s.observe(obs(r), Ok(()));
        }
        assert_eq!(s.steps.len(), 5);
        assert_eq!(s.best(), Some(16.0));
    }

    #[test]
    fn judge_rules() {
        assert!(judge(&obs(1000.0), 100.0).is_ok());
        let mut o = obs(1000.0);
        o.acked = 900;
        assert!(judge(&o, 100.0)
            .unwrap_err()
            .contains("acknowledged 900 of 1000"));
        let mut o = obs(1000.0);
        o.acked_during = 900;
        assert!(judge(&o, 100.0).unwrap_err().contains("falling behind"));
        let mut o = obs(1000.0);
        o.publish_p99_ms = Some(250.0);
        assert!(judge(&o, 100.0).unwrap_err().contains("publish p99"));
        let mut o = obs(1000.0);
        o.errors = 1;
        assert!(judge(&o, 100.0).is_err());
        let mut o = obs(1000.0);
        o.consumed_per_group = vec![1000, 10];
        assert!(judge(&o, 100.0).unwrap_err().contains("consumers read 10"));
        o.consumed_per_group = vec![1000, 999];
        o.consumed_during_per_group = vec![1000, 100];
        assert!(judge(&o, 100.0)
            .unwrap_err()
            .contains("consumers read only 100"));
        o.consumed_during_per_group = vec![1000, 999];
        o.e2e_p99_ms = Some(101.0);
        assert!(judge(&o, 100.0).unwrap_err().contains("end-to-end"));
        o.e2e_p99_ms = Some(99.0);
        assert!(judge(&o, 100.0).is_ok());
    }
}
