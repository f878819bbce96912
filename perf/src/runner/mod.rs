//! Drives one workload against one Kafka endpoint through librdkafka:
//! topics, prefill, consumers, open-loop producers, rate search, warm-up, the
//! measured window and the drain. Everything measured goes through
//! `stats::ThreadStats`; this module only orchestrates.
//!
//! Phases, in order (each optional but the measured one):
//!   create topics → prefill → consumers join → rate search → warm-up →
//!   measure → drain → delete topics.
//!
//! `run` sets up and tears down; `Driver::drive` runs the phases (`phases`,
//! `rate`) and builds the result (`result`). The client threads are in
//! `producer` and `consumer`, their librdkafka settings in `clients`, what
//! they share with the orchestrator in `shared`; `collector` reads them all,
//! `proc_tracker` samples CPU and RSS, `topics` creates and deletes topics.

mod clients;
mod collector;
mod consumer;
mod phases;
mod proc_tracker;
mod producer;
mod rate;
mod result;
mod shared;
mod topics;

use std::io::IsTerminal;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;

use anyhow::{anyhow, Result};

use self::clients::check_reachable;
use self::collector::{Collector, Totals};
use self::phases::records_to_read;
use self::shared::Shared;
use self::topics::{topic_names, TopicGuard};
use crate::procstat;
use crate::progress::Progress;
use crate::report::TargetResult;
use crate::workload::Workload;

#[derive(Debug, Clone)]
pub struct Target {
    pub label: String,
    pub bootstrap: String,
    pub broker_pid: Option<u32>,
}

#[derive(Debug, Clone)]
pub struct RunOptions {
    pub keep_topics: bool,
    pub progress: bool,
}

/// Runs `w` against `target`; returns the measured result.
pub fn run(w: &Workload, target: &Target, opts: &RunOptions) -> Result<TargetResult> {
    let started_unix_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    check_reachable(&target.bootstrap)?;

    let shared = Arc::new(Shared::new(w));
    let run_id = shared.run_id;
    let topic_names = topic_names(w, run_id);
    let mut progress = Progress::new(opts.progress, &target.label);
    progress.note(&format!(
        "{}: creating {} topic(s) x {} partitions on {}",
        target.label, w.topics, w.partitions_per_topic, target.bootstrap
    ));
    let _topics = TopicGuard::create(&target.bootstrap, w, &topic_names, opts.keep_topics)?;

    let broker_pid = target
        .broker_pid
        .or_else(|| local_listener_pid(&target.bootstrap));
    let mut collector = Collector::new(&shared, w, broker_pid, &mut progress);
    let mut threads: Vec<JoinHandle<Result<()>>> = Vec::new();
    let result = Driver {
        w,
        bootstrap: &target.bootstrap,
        topics: &topic_names,
        shared: &shared,
        c: &mut collector,
        threads: &mut threads,
    }
    .drive();

    shared.stop.store(true, Ordering::SeqCst);
    let thread_error = join_client_threads(threads);
    let mut result = result?;
    if let Some(e) = thread_error {
        return Err(e);
    }
    result.label = target.label.clone();
    result.bootstrap = target.bootstrap.clone();
    result.broker_pid = broker_pid;
    result.run_id = format!("{run_id:08x}");
    result.topics = topic_names;
    result.started_unix_s = started_unix_s;
    progress.finish();
    Ok(result)
}

/// The pid listening on the bootstrap's port, if the bootstrap is local.
fn local_listener_pid(bootstrap: &str) -> Option<u32> {
    let (host, port) = bootstrap.rsplit_once(':')?;
    let local = matches!(
        host,
        "127.0.0.1" | "localhost" | "::1" | "[::1]" | "0.0.0.0"
    );
    local
        .then(|| port.parse().ok())
        .flatten()
        .and_then(procstat::find_listener_pid)
}

/// Waits for every client thread; the last error any of them returned.
fn join_client_threads(threads: Vec<JoinHandle<Result<()>>>) -> Option<anyhow::Error> {
    let mut thread_error = None;
    for h in threads {
        match h.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => thread_error = Some(e),
            Err(_) => thread_error = Some(anyhow!("a client thread panicked")),
        }
    }
    thread_error
}

/// What every phase works with: the workload, the run's topics, the state
/// shared with the client threads, the collector reading them, and the
/// threads started so far (joined by `run`).
struct Driver<'a, 'p> {
    w: &'a Workload,
    bootstrap: &'a str,
    topics: &'a [String],
    shared: &'a Arc<Shared>,
    c: &'a mut Collector<'p>,
    threads: &'a mut Vec<JoinHandle<Result<()>>>,
}

impl Driver<'_, '_> {
    /// The phases after the topics exist, in order; the measured result.
    fn drive(&mut self) -> Result<TargetResult> {
        let prefill = self.prefill()?;
        let prefill_acked = prefill.as_ref().map_or(0, |p| p.records);
        self.join_consumers()?;
        self.spawn_load_producers()?;
        let w = self.w;
        let consumed_target = |t: &Totals| records_to_read(w, prefill_acked, t);
        let rate = self.settle_rate(&consumed_target)?;
        self.warm_up(rate.measured_msgs_per_s);
        let window = self.measure(prefill_acked);
        let drained = self.drain(&consumed_target);
        let measured = self.result(rate.measured_msgs_per_s, &window, drained);
        Ok(TargetResult {
            prefill,
            rate,
            ..measured
        })
    }
}

/// True if stderr is an interactive terminal (for the live progress bar).
pub fn stderr_is_terminal() -> bool {
    std::io::stderr().is_terminal()
}
