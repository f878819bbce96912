//! The phases of `drive` around the rate: prefill, consumers joining, the
//! load producers, warm-up, the measured window and the final drain.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use super::collector::Totals;
use super::consumer::spawn_consumer;
use super::proc_tracker::WindowSamples;
use super::producer::spawn_producer;
use super::shared::{lock, Mode};
use super::Driver;
use crate::report::PrefillResult;
use crate::workload::{ConsumerStart, Workload};

const ASSIGN_TIMEOUT: Duration = Duration::from_secs(60);
/// Bounded wait for acks and reads after the measured window.
const FINAL_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// The measured window: its bounds on the run's clock, when a catch-up read
/// finished, and the broker (if tracked) and client processes sampled at
/// either end.
pub(super) struct MeasuredWindow {
    pub(super) start_ns: u64,
    pub(super) end_ns: u64,
    pub(super) caught_up_s: Option<f64>,
    pub(super) broker: WindowSamples,
    pub(super) client: WindowSamples,
}

/// Records each group must have read once every ack is in: the prefill if
/// consumers start at the beginning, plus every record acked since it.
pub(super) fn records_to_read(w: &Workload, prefill_acked: u64, t: &Totals) -> u64 {
    let base = if w.consumer_start == ConsumerStart::Beginning {
        prefill_acked
    } else {
        0
    };
    base + t.produced_total_done.saturating_sub(prefill_acked)
}

impl Driver<'_, '_> {
    /// Prefill: as fast as the client and broker allow, acks=1.
    pub(super) fn prefill(&mut self) -> Result<Option<PrefillResult>> {
        let w = self.w;
        if w.prefill.0 == 0 {
            return Ok(None);
        }
        let records = w.prefill_records();
        let n = w.producers.clamp(1, 4);
        let mut stats = Vec::new();
        let t0 = Instant::now();
        self.c.set_phase("prefill", records as f64);
        for i in 0..n {
            let quota = records / n as u64 + u64::from((i as u64) < records % n as u64);
            let p = spawn_producer(
                w,
                self.shared,
                self.bootstrap,
                self.topics,
                1000 + i,
                n,
                "1",
                Some(quota),
            )?;
            stats.push(p.stats.clone());
            self.c.producers.push(p.stats);
            self.threads.push(p.handle);
        }
        let deadline = Instant::now() + Duration::from_secs(3600);
        let stats2 = stats.clone();
        let done = self.c.wait(deadline, |c| {
            let (done, errs) = stats2.iter().fold((0, 0), |a, s| {
                let s = lock(s);
                (a.0 + s.total_done, a.1 + s.total_errors)
            });
            c.progress.position(done as f64);
            done + errs >= records
        });
        let (acked, errors, last_error) = stats.iter().fold((0, 0, None), |a, s| {
            let s = lock(s);
            (
                a.0 + s.total_done,
                a.1 + s.total_errors,
                s.last_error.clone().or(a.2),
            )
        });
        if !done || errors > 0 {
            bail!(
                "prefill failed: {acked} of {records} records acknowledged, {errors} errors{}",
                last_error
                    .map(|e| format!(" (last: {e})"))
                    .unwrap_or_default()
            );
        }
        let secs = t0.elapsed().as_secs_f64();
        Ok(Some(PrefillResult {
            records: acked,
            bytes: acked * w.record_size.0,
            seconds: secs,
            mb_per_s: (acked * w.record_size.0) as f64 / secs / 1e6,
        }))
    }

    /// Consumers join and get every partition assigned before load starts.
    pub(super) fn join_consumers(&mut self) -> Result<()> {
        for g in 0..self.c.groups {
            for i in 0..self.w.consumers as usize {
                let ct = spawn_consumer(self.w, self.shared, self.bootstrap, self.topics, g, i)?;
                self.c.consumers.push((ct.group, ct.stats.clone()));
                self.threads.push(ct.handle);
                self.c.assigned.push((ct.group, ct.assigned));
            }
        }
        if self.c.groups > 0 {
            self.wait_for_assignment()?;
        }
        Ok(())
    }

    /// Waits until every group has every partition assigned, and has kept
    /// them for 500 ms.
    fn wait_for_assignment(&mut self) -> Result<()> {
        self.c.set_phase("join", ASSIGN_TIMEOUT.as_secs_f64());
        let partitions = self.w.partitions_total() as usize;
        let mut stable_since: Option<Instant> = None;
        let ok = self.c.wait(Instant::now() + ASSIGN_TIMEOUT, |c| {
            let mut per_group = vec![0usize; c.groups];
            for (g, n) in &c.assigned {
                per_group[*g] += n.load(Ordering::SeqCst);
            }
            let covered = per_group.iter().all(|n| *n >= partitions);
            if covered {
                let since = *stable_since.get_or_insert_with(Instant::now);
                since.elapsed() >= Duration::from_millis(500)
            } else {
                stable_since = None;
                false
            }
        });
        if !ok {
            bail!(
                "consumers did not get all {partitions} partitions assigned within {} s (consumer group protocol)",
                ASSIGN_TIMEOUT.as_secs()
            );
        }
        Ok(())
    }

    /// Load producers (paused until a rate is set).
    pub(super) fn spawn_load_producers(&mut self) -> Result<()> {
        let w = self.w;
        for i in 0..w.producers {
            let p = spawn_producer(
                w,
                self.shared,
                self.bootstrap,
                self.topics,
                i,
                w.producers,
                w.acks.as_config(),
                None,
            )?;
            self.c.producers.push(p.stats);
            self.threads.push(p.handle);
        }
        Ok(())
    }

    /// Warm-up at the measured rate; the schedule then runs on unbroken into
    /// the measured window.
    pub(super) fn warm_up(&mut self, rate: Option<f64>) {
        let shared = self.shared;
        shared.window.shut();
        if let Some(r) = rate {
            self.c.target_rate = Some(r);
            shared.set_mode(Mode::Paced {
                start_ns: shared.clock.now_ns(),
                rate_total: r,
            });
            if self.w.warmup_s > 0.0 {
                self.c.set_phase("warm-up", self.w.warmup_s);
                self.c.wait(
                    Instant::now() + Duration::from_secs_f64(self.w.warmup_s),
                    |_| false,
                );
            }
        }
    }

    /// Measure. The window opens 2 ms ahead so that no record intended inside
    /// it can be sent before the producers see it open. Producers are paused
    /// when it closes.
    pub(super) fn measure(&mut self, prefill_acked: u64) -> MeasuredWindow {
        let (w, shared, c) = (self.w, self.shared, &mut *self.c);
        let start_ns = shared.clock.now_ns() + 2_000_000;
        c.begin_window(start_ns);
        let broker_before = c.broker.as_ref().and_then(|b| b.snapshot());
        let client_before = c.client.snapshot();
        while shared.clock.now_ns() < start_ns {
            std::thread::sleep(Duration::from_micros(200));
        }
        shared.hold_consumers.store(false, Ordering::SeqCst);
        c.in_window = true;
        c.set_phase("measure", w.duration_s);
        // No producers: a catch-up read of the prefill, or (without one) an idle
        // measurement that runs the whole window.
        let catch_up = w.producers == 0 && w.prefill.0 > 0;
        let mut caught_up_s = None;
        let deadline = Instant::now() + Duration::from_secs_f64(w.duration_s);
        if catch_up {
            let want = prefill_acked;
            let done = c.wait(deadline, |c| {
                c.totals().groups_total_done.iter().all(|d| *d >= want)
            });
            if done {
                caught_up_s = Some((shared.clock.now_ns() - start_ns) as f64 / 1e9);
            }
        } else {
            c.wait(deadline, |_| false);
        }
        let end_ns = shared.clock.now_ns();
        shared.window.close(end_ns);
        c.in_window = false;
        let broker_after = c.broker.as_ref().and_then(|b| b.snapshot());
        let client_after = c.client.snapshot();
        shared.set_mode(Mode::Paused);
        c.target_rate = None;
        MeasuredWindow {
            start_ns,
            end_ns,
            caught_up_s,
            broker: WindowSamples {
                before: broker_before,
                after: broker_after,
            },
            client: WindowSamples {
                before: client_before,
                after: client_after,
            },
        }
    }

    /// Waits (bounded) for the last acks and reads; false if some never came.
    pub(super) fn drain(&mut self, consumed_target: &dyn Fn(&Totals) -> u64) -> bool {
        self.c.set_phase("drain", FINAL_DRAIN_TIMEOUT.as_secs_f64());
        let drained = self.c.drain(FINAL_DRAIN_TIMEOUT, consumed_target);
        self.c.tick();
        drained
    }
}
