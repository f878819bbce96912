//! The collector: the orchestrator's view of every client thread. It samples
//! each thread's interval counters once a second (the time series and the
//! progress bar), sums their totals, opens measurement windows and waits
//! for drains.

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use super::proc_tracker::ProcTracker;
use super::shared::{lock, Shared, Stats};
use crate::progress::Progress;
use crate::rate_search::StepObservation;
use crate::report::IntervalSample;
use crate::stats::{merge, new_hist, Counts, LatencySummary, Part};
use crate::workload::Workload;

const TICK: Duration = Duration::from_secs(1);

/// What the orchestrator reads from all threads at once.
pub(super) struct Totals {
    pub(super) produced_window: Part,
    pub(super) produced_by_time: Counts,
    pub(super) groups_window: Vec<Part>,
    pub(super) groups_by_time: Vec<Counts>,
    pub(super) produced_total_sent: u64,
    pub(super) produced_total_finished: u64,
    pub(super) produced_total_done: u64,
    pub(super) groups_total_done: Vec<u64>,
}

impl Totals {
    /// End-to-end latencies of the records intended in the window, every
    /// group merged.
    pub(super) fn e2e_latency(&self) -> Histogram<u64> {
        let mut e2e = new_hist();
        for g in &self.groups_window {
            merge(&mut e2e, &g.latency);
        }
        e2e
    }

    /// What the rate search judges, for a window of `duration_s` at `rate`.
    pub(super) fn observation(
        &self,
        rate: f64,
        duration_s: f64,
        e2e: &Histogram<u64>,
    ) -> StepObservation {
        let pw = &self.produced_window;
        StepObservation {
            rate_msgs: rate,
            duration_s,
            scheduled: (rate * duration_s).floor() as u64,
            acked: pw.done.msgs,
            acked_during: self.produced_by_time.msgs,
            errors: pw.errors,
            publish_p99_ms: LatencySummary::of(&pw.latency).map(|s| s.p99_ms),
            consumed_per_group: self.groups_window.iter().map(|g| g.done.msgs).collect(),
            consumed_during_per_group: self.groups_by_time.iter().map(|c| c.msgs).collect(),
            e2e_p99_ms: LatencySummary::of(e2e).map(|s| s.p99_ms),
        }
    }
}

pub(super) struct Collector<'a> {
    shared: Arc<Shared>,
    pub(super) producers: Vec<Stats>,
    pub(super) consumers: Vec<(usize, Stats)>,
    /// Partitions assigned to each consumer (group, count), for the join wait.
    pub(super) assigned: Vec<(usize, Arc<AtomicUsize>)>,
    pub(super) groups: usize,
    pub(super) series: Vec<IntervalSample>,
    last_tick_ns: u64,
    next_tick: Instant,
    pub(super) broker: Option<ProcTracker>,
    pub(super) client: ProcTracker,
    pub(super) progress: &'a mut Progress,
    phase: String,
    phase_start: Instant,
    phase_len_s: f64,
    pub(super) target_rate: Option<f64>,
    pub(super) window_broker_rss_max_mb: f64,
    pub(super) in_window: bool,
}

impl<'a> Collector<'a> {
    /// A collector for the threads of a run of `w`, none started yet; it
    /// tracks the broker's process too when its pid is known.
    pub(super) fn new(
        shared: &Arc<Shared>,
        w: &Workload,
        broker_pid: Option<u32>,
        progress: &'a mut Progress,
    ) -> Collector<'a> {
        let groups = if w.consumers == 0 {
            0
        } else {
            w.consumer_groups as usize
        };
        Collector {
            shared: shared.clone(),
            producers: Vec::new(),
            consumers: Vec::new(),
            assigned: Vec::new(),
            groups,
            series: Vec::new(),
            last_tick_ns: shared.clock.now_ns(),
            next_tick: Instant::now() + TICK,
            broker: broker_pid.map(ProcTracker::new),
            client: ProcTracker::new(std::process::id()),
            progress,
            phase: String::new(),
            phase_start: Instant::now(),
            phase_len_s: 0.0,
            target_rate: None,
            window_broker_rss_max_mb: 0.0,
            in_window: false,
        }
    }

    pub(super) fn totals(&self) -> Totals {
        let mut t = Totals {
            produced_window: Part::new(),
            produced_by_time: Counts::default(),
            groups_window: (0..self.groups).map(|_| Part::new()).collect(),
            groups_by_time: vec![Counts::default(); self.groups],
            produced_total_sent: 0,
            produced_total_finished: 0,
            produced_total_done: 0,
            groups_total_done: vec![0; self.groups],
        };
        for p in &self.producers {
            let s = lock(p);
            t.produced_window.merge_from(&s.window_intended);
            t.produced_by_time = t.produced_by_time.plus(s.window_by_time);
            t.produced_total_sent += s.total_sent;
            t.produced_total_finished += s.total_done + s.total_errors;
            t.produced_total_done += s.total_done;
        }
        for (g, c) in &self.consumers {
            let s = lock(c);
            t.groups_window[*g].merge_from(&s.window_intended);
            t.groups_by_time[*g] = t.groups_by_time[*g].plus(s.window_by_time);
            t.groups_total_done[*g] += s.total_done;
        }
        t
    }

    /// Starts a new measurement window at `start_ns` (now or later): no
    /// completion of an earlier window leaks in, and every record intended
    /// at or after `start_ns` is sent after the window is open.
    pub(super) fn begin_window(&self, start_ns: u64) {
        self.shared.window.shut();
        self.reset_windows();
        self.shared.window.open(start_ns);
    }

    fn reset_windows(&self) {
        for s in self
            .producers
            .iter()
            .chain(self.consumers.iter().map(|(_, s)| s))
        {
            lock(s).reset_window();
        }
    }

    pub(super) fn set_phase(&mut self, name: &str, len_s: f64) {
        self.phase = name.to_string();
        self.phase_start = Instant::now();
        self.phase_len_s = len_s;
        self.progress.phase(name, len_s);
    }

    /// One interval sample: merges every thread's interval part.
    pub(super) fn tick(&mut self) {
        let now_ns = self.shared.clock.now_ns();
        let dt = (now_ns - self.last_tick_ns) as f64 / 1e9;
        self.last_tick_ns = now_ns;
        if dt <= 0.0 {
            return;
        }
        let mut prod = Part::new();
        for p in &self.producers {
            lock(p).interval.take_into(&mut prod);
        }
        let mut cons = Part::new();
        for (_, c) in &self.consumers {
            lock(c).interval.take_into(&mut cons);
        }
        let (broker_cpu, broker_rss) = match self.broker.as_mut() {
            Some(b) => b.step(),
            None => (None, None),
        };
        if self.in_window {
            if let Some(r) = broker_rss {
                self.window_broker_rss_max_mb = self.window_broker_rss_max_mb.max(r);
            }
        }
        let (client_cpu, _) = self.client.step();
        let sample = IntervalSample {
            t_s: now_ns as f64 / 1e9,
            dt_s: dt,
            phase: self.phase.clone(),
            target_msgs_per_s: self.target_rate,
            produced_msgs_per_s: prod.done.msgs as f64 / dt,
            produced_mb_per_s: prod.done.bytes as f64 / dt / 1e6,
            consumed_msgs_per_s: cons.done.msgs as f64 / dt,
            consumed_mb_per_s: cons.done.bytes as f64 / dt / 1e6,
            errors: prod.errors,
            publish: LatencySummary::of(&prod.latency),
            e2e: LatencySummary::of(&cons.latency),
            broker_cpu_pct: broker_cpu,
            broker_rss_mb: broker_rss,
            client_cpu_pct: client_cpu,
        };
        self.progress.interval(&sample);
        // A sliver of an interval (the last tick after a drain) would plot as
        // a spike; its counts are already in the window totals.
        if dt >= 0.5 {
            self.series.push(sample);
        }
    }

    /// Sleeps until `deadline` or until `done` says so, ticking every second
    /// and updating the progress bar.
    pub(super) fn wait(&mut self, deadline: Instant, mut done: impl FnMut(&Self) -> bool) -> bool {
        loop {
            if done(self) {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            if now >= self.next_tick {
                self.tick();
                self.next_tick += TICK;
                if self.next_tick < now {
                    self.next_tick = now + TICK;
                }
            }
            self.progress.position(
                self.phase_start
                    .elapsed()
                    .as_secs_f64()
                    .min(self.phase_len_s),
            );
            let nap = deadline
                .min(self.next_tick)
                .saturating_duration_since(Instant::now())
                .min(Duration::from_millis(50));
            std::thread::sleep(nap);
        }
    }

    /// Waits for every sent record to be acked (or fail) and, where there are
    /// consumers, for every group to read `expected_per_group()` records.
    pub(super) fn drain(
        &mut self,
        timeout: Duration,
        consumed_target: impl Fn(&Totals) -> u64,
    ) -> bool {
        let deadline = Instant::now() + timeout;
        let has_groups = !self.consumers.is_empty();
        self.wait(deadline, |c| {
            let t = c.totals();
            let acked = t.produced_total_finished >= t.produced_total_sent;
            let want = consumed_target(&t);
            let read = !has_groups || t.groups_total_done.iter().all(|d| *d >= want);
            acked && read
        })
    }

    /// The last error of every thread, each distinct one once.
    pub(super) fn last_errors(&self) -> Vec<String> {
        let mut last_errors = Vec::new();
        for s in self
            .producers
            .iter()
            .chain(self.consumers.iter().map(|(_, s)| s))
        {
            if let Some(e) = &lock(s).last_error {
                if !last_errors.contains(e) {
                    last_errors.push(e.clone());
                }
            }
        }
        last_errors
    }

    /// Records read that this run did not produce.
    pub(super) fn foreign_records(&self) -> u64 {
        self.consumers.iter().map(|(_, s)| lock(s).foreign).sum()
    }
}
