//! CPU and RSS of a process (the broker, or gregor-perf itself), sampled
//! from /proc between ticks and around the measured window.

use crate::procstat::{self, ProcSample};

/// Tracks a process's CPU and RSS between samples.
pub(super) struct ProcTracker {
    pid: u32,
    last: Option<ProcSample>,
    ticks: u64,
}

impl ProcTracker {
    pub(super) fn new(pid: u32) -> ProcTracker {
        ProcTracker {
            pid,
            last: procstat::sample(pid),
            ticks: procstat::clock_ticks_per_sec(),
        }
    }

    /// (cpu % since the last call, rss MB now)
    pub(super) fn step(&mut self) -> (Option<f64>, Option<f64>) {
        let now = procstat::sample(self.pid);
        let cpu = match (&self.last, &now) {
            (Some(a), Some(b)) => procstat::cpu_percent(a, b, self.ticks),
            _ => None,
        };
        let rss = now.map(|s| s.rss_bytes as f64 / 1e6);
        if now.is_some() {
            self.last = now;
        }
        (cpu, rss)
    }

    pub(super) fn snapshot(&self) -> Option<ProcSample> {
        procstat::sample(self.pid)
    }
}

/// One process sampled at both ends of the measured window.
pub(super) struct WindowSamples {
    pub(super) before: Option<ProcSample>,
    pub(super) after: Option<ProcSample>,
}

impl WindowSamples {
    /// Percent of one core used over the window.
    pub(super) fn cpu_percent(&self) -> Option<f64> {
        match (self.before, self.after) {
            (Some(a), Some(b)) => procstat::cpu_percent(&a, &b, procstat::clock_ticks_per_sec()),
            _ => None,
        }
    }
}
