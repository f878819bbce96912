//! The producer threads: open-loop sends on the pacer's schedule (or a fixed
//! quota as fast as the client takes them, for the prefill), and the
//! delivery reports timed against each record's intended send time.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::DeliveryResult;
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, PurgeConfig, ThreadedProducer};
use rdkafka::ClientContext;

use super::clients::producer_config;
use super::shared::{lock, Mode, Shared, Stats};
use crate::keys::{filler, key_bytes, KeyChooser};
use crate::pacing::Pacer;
use crate::payload::{Header, HEADER_LEN};
use crate::stats::ThreadStats;
use crate::workload::Workload;

/// Records sent per pass before the producer loop looks at its mode again.
const SEND_BURST_MAX: u32 = 2048;

/// The producer's librdkafka context: delivery reports land here, on the
/// client's polling thread, and are timed against the record's intended time.
struct PerfProducerContext {
    shared: Arc<Shared>,
    stats: Stats,
}

impl ClientContext for PerfProducerContext {}

impl ProducerContext for PerfProducerContext {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, intended: usize) {
        let now = self.shared.clock.now_ns();
        let intended = intended as u64;
        let mut s = lock(&self.stats);
        match result {
            Ok(m) => {
                let bytes = m.payload_len() as u64;
                s.record_done(&self.shared.window, bytes, intended, now);
            }
            Err((e, _)) => s.record_error(&self.shared.window, intended, e.to_string()),
        }
    }
}

pub(super) struct ProducerThread {
    pub(super) stats: Stats,
    pub(super) handle: JoinHandle<Result<()>>,
}

#[allow(clippy::too_many_arguments)]
pub(super) fn spawn_producer(
    w: &Workload,
    shared: &Arc<Shared>,
    bootstrap: &str,
    topics: &[String],
    index: u32,
    producers: u32,
    acks: &str,
    quota: Option<u64>,
) -> Result<ProducerThread> {
    let stats: Stats = Arc::new(Mutex::new(ThreadStats::new()));
    let ctx = PerfProducerContext {
        shared: shared.clone(),
        stats: stats.clone(),
    };
    let client_id = format!("gregor-perf-p{index}");
    let producer: ThreadedProducer<PerfProducerContext> =
        producer_config(w, bootstrap, &client_id, acks)
            .create_with_context(ctx)
            .map_err(|e| anyhow!("cannot create producer: {e}"))?;
    let shared = shared.clone();
    let topics = topics.to_vec();
    let w = w.clone();
    let thread_stats = stats.clone();
    let handle = std::thread::Builder::new()
        .name(format!("producer-{index}"))
        .spawn(move || {
            producer_loop(
                producer,
                w,
                shared,
                thread_stats,
                topics,
                index,
                producers,
                quota,
            )
        })
        .context("spawn producer thread")?;
    Ok(ProducerThread { stats, handle })
}

/// Sends records on the open-loop schedule (or, with a quota, as fast as the
/// client accepts them: the prefill). Never blocks on the broker: a full
/// client queue only delays sends, whose intended times stay fixed.
#[allow(clippy::too_many_arguments)]
fn producer_loop(
    producer: ThreadedProducer<PerfProducerContext>,
    w: Workload,
    shared: Arc<Shared>,
    stats: Stats,
    topics: Vec<String>,
    index: u32,
    producers: u32,
    quota: Option<u64>,
) -> Result<()> {
    let record_size = w.record_size.0 as usize;
    let seed = (shared.run_id as u64) << 32 | index as u64;
    let mut value = filler(w.payload, record_size, seed);
    let mut keys = KeyChooser::new(w.key_distribution, w.key_count, w.zipf_exponent, seed);
    let mut key = Vec::with_capacity(32);
    let mut seq = 0u64;
    let mut pacer: Option<Pacer> = None;
    let mut gen_seen = u64::MAX;
    let window = &shared.window;

    while !shared.stop.load(Ordering::Relaxed) {
        let now = shared.clock.now_ns();
        if let Some(q) = quota {
            if seq >= q {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            }
        } else {
            let g = shared.mode_gen.load(Ordering::SeqCst);
            if g != gen_seen {
                gen_seen = g;
                pacer = match *lock(&shared.mode) {
                    Mode::Paused => None,
                    Mode::Paced {
                        start_ns,
                        rate_total,
                    } => Some(Pacer::new(start_ns, rate_total, producers, index)),
                };
            }
            match &pacer {
                None => {
                    std::thread::sleep(Duration::from_millis(1));
                    continue;
                }
                Some(p) if !p.is_due(now) => {
                    // Short sleeps so that mode changes are seen within ~2 ms.
                    let wait = (p.next_intended_ns() - now).min(2_000_000);
                    std::thread::sleep(Duration::from_nanos(wait));
                    continue;
                }
                Some(_) => {}
            }
        }

        let mut sent_here = 0u64;
        let mut sent_in_window = 0u64;
        let mut burst = 0;
        while burst < SEND_BURST_MAX {
            let intended = match (&pacer, quota) {
                (_, Some(q)) if seq >= q => break,
                (_, Some(_)) => shared.clock.now_ns(),
                (Some(p), None) if p.is_due(now) => p.next_intended_ns(),
                _ => break,
            };
            Header {
                run_id: shared.run_id,
                intended_unix_ns: shared.clock.unix_ns_of(intended),
                producer: index,
                seq,
            }
            .write(&mut value[..HEADER_LEN]);
            let topic = &topics[(seq % topics.len() as u64) as usize];
            let mut record =
                BaseRecord::with_opaque_to(topic, intended as usize).payload(&value[..]);
            if let Some(k) = keys.next_key() {
                key_bytes(k, &mut key);
                record = record.key(&key[..]);
            }
            match producer.send(record) {
                Ok(()) => {}
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    // Back off briefly; the record keeps its intended time.
                    std::thread::sleep(Duration::from_micros(500));
                    break;
                }
                Err((e, _)) => {
                    let mut s = lock(&stats);
                    s.record_sent(window, intended);
                    s.record_error(window, intended, format!("produce: {e}"));
                }
            }
            sent_here += 1;
            if window.contains(intended) {
                sent_in_window += 1;
            }
            seq += 1;
            if let Some(p) = pacer.as_mut() {
                p.advance();
            }
            burst += 1;
        }
        if sent_here > 0 {
            let mut s = lock(&stats);
            s.total_sent += sent_here;
            s.interval.sent += sent_here;
            s.window_intended.sent += sent_in_window;
        }
    }
    // Give in-flight records a moment, then drop the rest so that shutting
    // the client down cannot hang on an unresponsive broker.
    let _ = producer.flush(Duration::from_secs(2));
    producer.purge(PurgeConfig::default().queue().inflight());
    Ok(())
}
