//! The consumer threads: one group member each, timing every record of this
//! run from its intended send time; held (partitions paused) until the
//! measured window opens when the prefill is to be read.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;

use super::clients::consumer_config;
use super::shared::{lock, Shared, Stats};
use crate::payload::Header;
use crate::stats::ThreadStats;
use crate::workload::Workload;

pub(super) struct ConsumerThread {
    pub(super) group: usize,
    pub(super) stats: Stats,
    pub(super) assigned: Arc<AtomicUsize>,
    pub(super) handle: JoinHandle<Result<()>>,
}

pub(super) fn spawn_consumer(
    w: &Workload,
    shared: &Arc<Shared>,
    bootstrap: &str,
    topics: &[String],
    group: usize,
    index: usize,
) -> Result<ConsumerThread> {
    let group_id = format!("gregor-perf-{:08x}-g{group}", shared.run_id);
    let client_id = format!("gregor-perf-g{group}-c{index}");
    let consumer: BaseConsumer = consumer_config(w, bootstrap, &group_id, &client_id)
        .create()
        .map_err(|e| anyhow!("cannot create consumer: {e}"))?;
    let names: Vec<&str> = topics.iter().map(|s| s.as_str()).collect();
    consumer
        .subscribe(&names)
        .map_err(|e| anyhow!("cannot subscribe: {e}"))?;
    let stats: Stats = Arc::new(Mutex::new(ThreadStats::new()));
    let assigned = Arc::new(AtomicUsize::new(0));
    let (s2, a2, sh) = (stats.clone(), assigned.clone(), shared.clone());
    let handle = std::thread::Builder::new()
        .name(format!("consumer-{group}-{index}"))
        .spawn(move || consumer_loop(consumer, sh, s2, a2))
        .context("spawn consumer thread")?;
    Ok(ConsumerThread {
        group,
        stats,
        assigned,
        handle,
    })
}

fn consumer_loop(
    consumer: BaseConsumer,
    shared: Arc<Shared>,
    stats: Stats,
    assigned: Arc<AtomicUsize>,
) -> Result<()> {
    let mut last_assign_check = Instant::now() - Duration::from_secs(1);
    let mut held = false;
    while !shared.stop.load(Ordering::Relaxed) {
        let hold = shared.hold_consumers.load(Ordering::SeqCst);
        if last_assign_check.elapsed() >= Duration::from_millis(100) || held != hold {
            last_assign_check = Instant::now();
            let assignment = consumer.assignment().ok();
            let n = assignment.as_ref().map(|a| a.count()).unwrap_or(0);
            assigned.store(n, Ordering::SeqCst);
            if let Some(a) = assignment.filter(|a| a.count() > 0) {
                // (Re)pause while held: a rebalance hands out unpaused partitions.
                if hold {
                    let _ = consumer.pause(&a);
                } else if held {
                    let _ = consumer.resume(&a);
                }
            }
            held = hold;
        }
        match consumer.poll(Duration::from_millis(100)) {
            None => {}
            Some(Ok(m)) if held => {
                // Fetched before the pause took effect: hand it back.
                let mut tpl = rdkafka::TopicPartitionList::new();
                tpl.add_partition(m.topic(), m.partition());
                let _ = consumer.pause(&tpl);
                let _ = consumer.seek(
                    m.topic(),
                    m.partition(),
                    rdkafka::Offset::Offset(m.offset()),
                    Duration::from_secs(5),
                );
            }
            Some(Ok(m)) => {
                let now = shared.clock.now_ns();
                let payload = m.payload().unwrap_or(&[]);
                {
                    let mut s = lock(&stats);
                    match Header::read(payload) {
                        Some(h) if h.run_id == shared.run_id => {
                            let intended = shared.clock.run_ns_of_unix(h.intended_unix_ns);
                            s.record_done(&shared.window, payload.len() as u64, intended, now);
                        }
                        _ => s.foreign += 1,
                    }
                }
                let _ = consumer.store_offset_from_message(&m);
            }
            Some(Err(e)) => {
                let mut s = lock(&stats);
                s.last_error = Some(format!("consume: {e}"));
            }
        }
    }
    consumer.unsubscribe();
    Ok(())
}
