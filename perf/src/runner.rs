//! Drives one workload against one Kafka endpoint through librdkafka:
//! topics, prefill, consumers, open-loop producers, rate search, warm-up, the
//! measured window and the drain. Everything measured goes through
//! `stats::ThreadStats`; this file only orchestrates.
//!
//! Phases, in order (each optional but the measured one):
//!   create topics → prefill → consumers join → rate search → warm-up →
//!   measure → drain → delete topics.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{DeliveryResult, Message};
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, PurgeConfig, ThreadedProducer};
use rdkafka::ClientContext;

use crate::keys::{filler, key_bytes, KeyChooser};
use crate::pacing::Pacer;
use crate::payload::{Header, HEADER_LEN};
use crate::procstat::{self, ProcSample};
use crate::progress::Progress;
use crate::rate_search::{judge, RateSearch, StepObservation};
use crate::report::{
    Distribution, IntervalSample, Measured, PrefillResult, RateInfo, TargetResult, Throughput,
};
use crate::stats::{
    distribution, encode_hist, merge, new_hist, Clock, Counts, LatencySummary, Part, ThreadStats,
    Window,
};
use crate::workload::{ConsumerStart, Workload};

/// How long to wait for the bootstrap broker to answer a Metadata request.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const TOPIC_READY_TIMEOUT: Duration = Duration::from_secs(60);
const ASSIGN_TIMEOUT: Duration = Duration::from_secs(60);
/// Bounded waits for acks and reads after a step or the measured window.
const STEP_DRAIN_TIMEOUT: Duration = Duration::from_secs(15);
const FINAL_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
const TICK: Duration = Duration::from_secs(1);
/// Confirmation steps after the rate search, each CONFIRM_LEN × step_s: a
/// 2x step still passed rates that a 15 s window could not hold.
const CONFIRM_MAX: usize = 3;
const CONFIRM_LEN: f64 = 3.0;
/// Records sent per pass before the producer loop looks at its mode again.
const SEND_BURST_MAX: u32 = 2048;

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

#[derive(Debug, Clone, Copy)]
enum Mode {
    Paused,
    Paced { start_ns: u64, rate_total: f64 },
}

/// State shared by the orchestrator and all client threads.
struct Shared {
    clock: Clock,
    window: Window,
    run_id: u32,
    mode: Mutex<Mode>,
    mode_gen: AtomicU64,
    stop: AtomicBool,
    /// Consumers keep their partitions paused while set (a catch-up read
    /// starts only when the measured window opens).
    hold_consumers: AtomicBool,
}

impl Shared {
    fn set_mode(&self, m: Mode) {
        *lock(&self.mode) = m;
        self.mode_gen.fetch_add(1, Ordering::SeqCst);
    }
}

/// Locks a mutex; a poisoned lock (a panicked client thread) still holds
/// valid counters, so keep using them.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

type Stats = Arc<Mutex<ThreadStats>>;

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

fn base_config(bootstrap: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap);
    c
}

fn producer_config(w: &Workload, bootstrap: &str, client_id: &str, acks: &str) -> ClientConfig {
    let mut c = base_config(bootstrap);
    c.set("client.id", client_id)
        .set("acks", acks)
        .set("compression.type", w.compression.as_str())
        .set("batch.size", w.batch_size.0.to_string())
        .set("linger.ms", w.linger_ms.to_string())
        // Java's default partitioner, so keyed runs spread like Java clients'.
        .set("partitioner", "murmur2_random")
        // Gregor has no InitProducerId yet; librdkafka's default is off too.
        .set("enable.idempotence", "false")
        .set("message.timeout.ms", "60000")
        // Room for ~1 s of backlog at high rates before the pacer sees QueueFull.
        .set("queue.buffering.max.messages", "1000000");
    for (k, v) in &w.producer_config {
        c.set(k, v);
    }
    c
}

fn consumer_config(w: &Workload, bootstrap: &str, group: &str, client_id: &str) -> ClientConfig {
    let mut c = base_config(bootstrap);
    // Fresh topics: "earliest" loses nothing produced before offsets resolve.
    // Only a prefill that consumers should skip needs "latest".
    let reset = if w.prefill.0 > 0 && w.consumer_start == ConsumerStart::End {
        "latest"
    } else {
        "earliest"
    };
    c.set("group.id", group)
        .set("client.id", client_id)
        .set("auto.offset.reset", reset)
        .set("enable.partition.eof", "false")
        // Offsets are stored only for records actually counted, so that a
        // record handed back while consumers are held is never committed.
        .set("enable.auto.offset.store", "false");
    for (k, v) in &w.consumer_config {
        c.set(k, v);
    }
    c
}

fn admin(bootstrap: &str) -> Result<AdminClient<DefaultClientContext>> {
    base_config(bootstrap)
        .create()
        .map_err(|e| anyhow!("bad bootstrap {bootstrap:?}: {e}"))
}

/// Fails with one clear line if nobody answers Metadata at `bootstrap`.
pub fn check_reachable(bootstrap: &str) -> Result<()> {
    // A plain TCP connect first: "connection refused" at once beats a
    // librdkafka timeout, and names the real problem.
    let first = bootstrap.split(',').next().unwrap_or(bootstrap).trim();
    let addrs: Vec<std::net::SocketAddr> = std::net::ToSocketAddrs::to_socket_addrs(first)
        .map_err(|e| anyhow!("bad bootstrap address {first:?}: {e} (expected HOST:PORT)"))?
        .collect();
    let mut last_err = None;
    let mut connected = false;
    for addr in &addrs {
        match std::net::TcpStream::connect_timeout(addr, CONNECT_TIMEOUT) {
            Ok(_) => {
                connected = true;
                break;
            }
            Err(e) => last_err = Some(e),
        }
    }
    if !connected {
        bail!(
            "cannot connect to bootstrap {first}: {}",
            last_err
                .map(|e| e.to_string())
                .unwrap_or_else(|| "no address".into())
        );
    }
    let a = admin(bootstrap)?;
    a.inner()
        .fetch_metadata(None, CONNECT_TIMEOUT)
        .map_err(|e| {
            anyhow!(
                "cannot reach a Kafka broker at {bootstrap}: no Metadata answer within {} s ({e})",
                CONNECT_TIMEOUT.as_secs()
            )
        })?;
    Ok(())
}

fn block_on_timeout<F: std::future::Future>(f: F) -> F::Output {
    futures::executor::block_on(f)
}

fn create_topics(
    a: &AdminClient<DefaultClientContext>,
    w: &Workload,
    names: &[String],
) -> Result<()> {
    let topics: Vec<NewTopic> = names
        .iter()
        .map(|n| {
            NewTopic::new(
                n,
                w.partitions_per_topic as i32,
                TopicReplication::Fixed(w.replication_factor as i32),
            )
        })
        .collect();
    let opts = AdminOptions::new()
        .operation_timeout(Some(Duration::from_secs(30)))
        .request_timeout(Some(Duration::from_secs(60)));
    let results = block_on_timeout(a.create_topics(topics.iter(), &opts))
        .map_err(|e| anyhow!("CreateTopics failed: {e}"))?;
    for r in results {
        if let Err((name, code)) = r {
            bail!("cannot create topic {name}: {code}");
        }
    }
    // Wait until metadata shows every partition with a leader.
    let deadline = Instant::now() + TOPIC_READY_TIMEOUT;
    loop {
        let mut ready = true;
        for n in names {
            let ok = a
                .inner()
                .fetch_metadata(Some(n), Duration::from_secs(5))
                .map(|md| {
                    md.topics().iter().any(|t| {
                        t.name() == n
                            && t.error().is_none()
                            && t.partitions().len() == w.partitions_per_topic as usize
                            && t.partitions().iter().all(|p| p.leader() >= 0)
                    })
                })
                .unwrap_or(false);
            ready &= ok;
        }
        if ready {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "topics not ready (all partitions with a leader) within {} s",
                TOPIC_READY_TIMEOUT.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Deletes the run's topics when dropped (also on an error path).
struct TopicGuard {
    admin: AdminClient<DefaultClientContext>,
    names: Vec<String>,
    keep: bool,
}

impl Drop for TopicGuard {
    fn drop(&mut self) {
        if self.keep || self.names.is_empty() {
            return;
        }
        let names: Vec<&str> = self.names.iter().map(|s| s.as_str()).collect();
        let opts = AdminOptions::new()
            .operation_timeout(Some(Duration::from_secs(30)))
            .request_timeout(Some(Duration::from_secs(30)));
        match block_on_timeout(self.admin.delete_topics(&names, &opts)) {
            Ok(results) => {
                for r in results {
                    if let Err((name, code)) = r {
                        eprintln!("warning: could not delete topic {name}: {code}");
                    }
                }
            }
            Err(e) => eprintln!("warning: could not delete topics: {e}"),
        }
    }
}

struct ProducerThread {
    stats: Stats,
    handle: JoinHandle<Result<()>>,
}

struct ConsumerThread {
    group: usize,
    stats: Stats,
    assigned: Arc<AtomicUsize>,
    handle: JoinHandle<Result<()>>,
}

#[allow(clippy::too_many_arguments)]
fn spawn_producer(
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

fn spawn_consumer(
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

/// Tracks a process's CPU and RSS between samples.
struct ProcTracker {
    pid: u32,
    last: Option<ProcSample>,
    ticks: u64,
}

impl ProcTracker {
    fn new(pid: u32) -> ProcTracker {
        ProcTracker {
            pid,
            last: procstat::sample(pid),
            ticks: procstat::clock_ticks_per_sec(),
        }
    }

    /// (cpu % since the last call, rss MB now)
    fn step(&mut self) -> (Option<f64>, Option<f64>) {
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

    fn snapshot(&self) -> Option<ProcSample> {
        procstat::sample(self.pid)
    }
}

/// What the orchestrator reads from all threads at once.
struct Totals {
    produced_window: Part,
    produced_by_time: Counts,
    groups_window: Vec<Part>,
    groups_by_time: Vec<Counts>,
    produced_total_sent: u64,
    produced_total_finished: u64,
    produced_total_done: u64,
    groups_total_done: Vec<u64>,
}

struct Collector<'a> {
    shared: Arc<Shared>,
    producers: Vec<Stats>,
    consumers: Vec<(usize, Stats)>,
    /// Partitions assigned to each consumer (group, count), for the join wait.
    assigned: Vec<(usize, Arc<AtomicUsize>)>,
    groups: usize,
    series: Vec<IntervalSample>,
    last_tick_ns: u64,
    next_tick: Instant,
    broker: Option<ProcTracker>,
    client: ProcTracker,
    progress: &'a mut Progress,
    phase: String,
    phase_start: Instant,
    phase_len_s: f64,
    target_rate: Option<f64>,
    rss_max_mb_window: f64,
    in_window: bool,
}

impl Collector<'_> {
    fn totals(&self) -> Totals {
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
    fn begin_window(&self, start_ns: u64) {
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

    fn set_phase(&mut self, name: &str, len_s: f64) {
        self.phase = name.to_string();
        self.phase_start = Instant::now();
        self.phase_len_s = len_s;
        self.progress.phase(name, len_s);
    }

    /// One interval sample: merges every thread's interval part.
    fn tick(&mut self) {
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
                self.rss_max_mb_window = self.rss_max_mb_window.max(r);
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
    fn wait(&mut self, deadline: Instant, mut done: impl FnMut(&Self) -> bool) -> bool {
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
    fn drain(&mut self, timeout: Duration, consumed_target: impl Fn(&Totals) -> u64) -> bool {
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
}

/// One open-loop trial at `rate` for `len_s`, drained and judged.
fn trial(
    c: &mut Collector<'_>,
    shared: &Arc<Shared>,
    w: &Workload,
    rate: f64,
    len_s: f64,
    label: &str,
    consumed_target: &dyn Fn(&Totals) -> u64,
) -> (StepObservation, Result<(), String>) {
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
    let mut e2e = new_hist();
    for g in &t.groups_window {
        merge(&mut e2e, &g.latency);
    }
    let obs = StepObservation {
        rate_msgs: rate,
        duration_s,
        scheduled: (rate * duration_s).floor() as u64,
        acked: t.produced_window.done.msgs,
        acked_during: t.produced_by_time.msgs,
        errors: t.produced_window.errors,
        publish_p99_ms: LatencySummary::of(&t.produced_window.latency).map(|s| s.p99_ms),
        consumed_per_group: t.groups_window.iter().map(|g| g.done.msgs).collect(),
        consumed_during_per_group: t.groups_by_time.iter().map(|c| c.msgs).collect(),
        e2e_p99_ms: LatencySummary::of(&e2e).map(|s| s.p99_ms),
    };
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

/// Runs `w` against `target`; returns the measured result.
pub fn run(w: &Workload, target: &Target, opts: &RunOptions) -> Result<TargetResult> {
    let started_unix_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    check_reachable(&target.bootstrap)?;

    let clock = Clock::new();
    let run_id = (clock.unix_ns_of(0) as u32) ^ (std::process::id().rotate_left(16));
    let shared = Arc::new(Shared {
        clock,
        window: Window::closed(),
        run_id,
        mode: Mutex::new(Mode::Paused),
        mode_gen: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        hold_consumers: AtomicBool::new(
            w.prefill.0 > 0 && w.consumer_start == ConsumerStart::Beginning,
        ),
    });

    let topic_names: Vec<String> = (0..w.topics)
        .map(|i| format!("gregor-perf-{}-{run_id:08x}-{i}", w.name))
        .collect();
    let mut progress = Progress::new(opts.progress, &target.label);
    progress.note(&format!(
        "{}: creating {} topic(s) x {} partitions on {}",
        target.label, w.topics, w.partitions_per_topic, target.bootstrap
    ));
    let admin_client = admin(&target.bootstrap)?;
    create_topics(&admin_client, w, &topic_names)?;
    let _topics = TopicGuard {
        admin: admin_client,
        names: topic_names.clone(),
        keep: opts.keep_topics,
    };

    let broker_pid = target.broker_pid.or_else(|| {
        let (host, port) = target.bootstrap.rsplit_once(':')?;
        let local = matches!(
            host,
            "127.0.0.1" | "localhost" | "::1" | "[::1]" | "0.0.0.0"
        );
        local
            .then(|| port.parse().ok())
            .flatten()
            .and_then(procstat::find_listener_pid)
    });

    let groups = if w.consumers == 0 {
        0
    } else {
        w.consumer_groups as usize
    };
    let mut collector = Collector {
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
        progress: &mut progress,
        phase: String::new(),
        phase_start: Instant::now(),
        phase_len_s: 0.0,
        target_rate: None,
        rss_max_mb_window: 0.0,
        in_window: false,
    };
    let mut threads: Vec<JoinHandle<Result<()>>> = Vec::new();
    let result = drive(
        w,
        target,
        &shared,
        &topic_names,
        &mut collector,
        &mut threads,
    );

    shared.stop.store(true, Ordering::SeqCst);
    let mut thread_error = None;
    for h in threads {
        match h.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => thread_error = Some(e),
            Err(_) => thread_error = Some(anyhow!("a client thread panicked")),
        }
    }
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

fn drive(
    w: &Workload,
    target: &Target,
    shared: &Arc<Shared>,
    topics: &[String],
    c: &mut Collector<'_>,
    threads: &mut Vec<JoinHandle<Result<()>>>,
) -> Result<TargetResult> {
    let mut result = TargetResult::default();

    // Prefill: as fast as the client and broker allow, acks=1.
    let mut prefill_acked = 0u64;
    if w.prefill.0 > 0 {
        let records = w.prefill_records();
        let n = w.producers.clamp(1, 4);
        let mut stats = Vec::new();
        let t0 = Instant::now();
        c.set_phase("prefill", records as f64);
        for i in 0..n {
            let quota = records / n as u64 + u64::from((i as u64) < records % n as u64);
            let p = spawn_producer(
                w,
                shared,
                &target.bootstrap,
                topics,
                1000 + i,
                n,
                "1",
                Some(quota),
            )?;
            stats.push(p.stats.clone());
            c.producers.push(p.stats);
            threads.push(p.handle);
        }
        let deadline = Instant::now() + Duration::from_secs(3600);
        let stats2 = stats.clone();
        let done = c.wait(deadline, |c| {
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
        prefill_acked = acked;
        let secs = t0.elapsed().as_secs_f64();
        result.prefill = Some(PrefillResult {
            records: acked,
            bytes: acked * w.record_size.0,
            seconds: secs,
            mb_per_s: (acked * w.record_size.0) as f64 / secs / 1e6,
        });
    }

    // Consumers join and get every partition assigned before load starts.
    for g in 0..c.groups {
        for i in 0..w.consumers as usize {
            let ct = spawn_consumer(w, shared, &target.bootstrap, topics, g, i)?;
            c.consumers.push((ct.group, ct.stats.clone()));
            threads.push(ct.handle);
            c.assigned.push((ct.group, ct.assigned));
        }
    }
    if c.groups > 0 {
        c.set_phase("join", ASSIGN_TIMEOUT.as_secs_f64());
        let partitions = w.partitions_total() as usize;
        let mut stable_since: Option<Instant> = None;
        let ok = c.wait(Instant::now() + ASSIGN_TIMEOUT, |c| {
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
    }

    // Load producers (paused until a rate is set).
    for i in 0..w.producers {
        let p = spawn_producer(
            w,
            shared,
            &target.bootstrap,
            topics,
            i,
            w.producers,
            w.acks.as_config(),
            None,
        )?;
        c.producers.push(p.stats);
        threads.push(p.handle);
    }

    let consumed_target = |t: &Totals| -> u64 {
        let base = if w.consumer_start == ConsumerStart::Beginning {
            prefill_acked
        } else {
            0
        };
        base + t.produced_total_done.saturating_sub(prefill_acked)
    };

    // Rate: fixed, or searched.
    let mut rate = w.fixed_rate_msgs();
    if w.searches_rate() {
        let cfg = &w.rate_search;
        let start = cfg
            .start_rate
            .msgs_per_sec(w.record_size.0)
            .unwrap_or(1000.0)
            .max(1.0);
        let mut search = RateSearch::new(start, cfg.precision, cfg.max_steps);
        while let Some(r) = search.next_rate() {
            let label = format!("search {}", search.steps.len() + 1);
            let (obs, verdict) = trial(c, shared, w, r, cfg.step_s, &label, &consumed_target);
            search.observe(obs, verdict);
        }
        // Short steps flatter a broker (page cache, no stall yet): confirm the
        // best rate over a longer step, stepping down until one holds.
        let mut best = search.best();
        for i in 0..CONFIRM_MAX {
            let Some(b) = best else { break };
            let label = format!("confirm {}", i + 1);
            let (obs, verdict) = trial(
                c,
                shared,
                w,
                b,
                cfg.step_s * CONFIRM_LEN,
                &label,
                &consumed_target,
            );
            let ok = verdict.is_ok();
            search.record_confirmation(obs, verdict);
            if ok {
                break;
            }
            best = Some(b / cfg.precision);
        }
        result.rate = RateInfo {
            searched: true,
            measured_msgs_per_s: best,
            search_steps: search.steps.clone(),
        };
        match best {
            Some(b) => rate = Some(b),
            None => {
                let why = search
                    .steps
                    .last()
                    .map(|s| s.reason.clone())
                    .unwrap_or_default();
                bail!("no sustainable rate found: even the lowest rate tried failed ({why})");
            }
        }
    } else {
        result.rate = RateInfo {
            searched: false,
            measured_msgs_per_s: rate,
            search_steps: Vec::new(),
        };
    }

    // Warm-up at the measured rate; the schedule then runs on unbroken into
    // the measured window.
    shared.window.shut();
    if let Some(r) = rate {
        c.target_rate = Some(r);
        shared.set_mode(Mode::Paced {
            start_ns: shared.clock.now_ns(),
            rate_total: r,
        });
        if w.warmup_s > 0.0 {
            c.set_phase("warm-up", w.warmup_s);
            c.wait(Instant::now() + Duration::from_secs_f64(w.warmup_s), |_| {
                false
            });
        }
    }

    // Measure. The window opens 2 ms ahead so that no record intended inside
    // it can be sent before the producers see it open.
    let t0 = shared.clock.now_ns() + 2_000_000;
    c.begin_window(t0);
    let broker_before = c.broker.as_ref().and_then(|b| b.snapshot());
    let client_before = c.client.snapshot();
    while shared.clock.now_ns() < t0 {
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
            caught_up_s = Some((shared.clock.now_ns() - t0) as f64 / 1e9);
        }
    } else {
        c.wait(deadline, |_| false);
    }
    let t1 = shared.clock.now_ns();
    shared.window.close(t1);
    c.in_window = false;
    let broker_after = c.broker.as_ref().and_then(|b| b.snapshot());
    let client_after = c.client.snapshot();
    shared.set_mode(Mode::Paused);
    c.target_rate = None;

    c.set_phase("drain", FINAL_DRAIN_TIMEOUT.as_secs_f64());
    let drained = c.drain(FINAL_DRAIN_TIMEOUT, consumed_target);
    c.tick();

    let t = c.totals();
    let duration_s = (t1 - t0) as f64 / 1e9;
    let mut e2e = new_hist();
    let mut consumed = Counts::default();
    let mut per_group_mb_s = Vec::new();
    for (g, by_time) in t.groups_window.iter().zip(&t.groups_by_time) {
        merge(&mut e2e, &g.latency);
        consumed = consumed.plus(*by_time);
        per_group_mb_s.push(by_time.bytes as f64 / duration_s / 1e6);
    }
    let ticks = procstat::clock_ticks_per_sec();
    let cpu = |a: Option<ProcSample>, b: Option<ProcSample>| match (a, b) {
        (Some(a), Some(b)) => procstat::cpu_percent(&a, &b, ticks),
        _ => None,
    };
    let pw = &t.produced_window;
    let mut last_errors = Vec::new();
    for s in c.producers.iter().chain(c.consumers.iter().map(|(_, s)| s)) {
        if let Some(e) = &lock(s).last_error {
            if !last_errors.contains(e) {
                last_errors.push(e.clone());
            }
        }
    }
    let foreign: u64 = c.consumers.iter().map(|(_, s)| lock(s).foreign).sum();
    // The same test the rate search applies to a step, on the whole window:
    // did the broker keep up with the offered rate?
    let verdict = rate.map(|r| {
        let obs = StepObservation {
            rate_msgs: r,
            duration_s,
            scheduled: (r * duration_s).floor() as u64,
            acked: pw.done.msgs,
            acked_during: t.produced_by_time.msgs,
            errors: pw.errors,
            publish_p99_ms: LatencySummary::of(&pw.latency).map(|s| s.p99_ms),
            consumed_per_group: t.groups_window.iter().map(|g| g.done.msgs).collect(),
            consumed_during_per_group: t.groups_by_time.iter().map(|c| c.msgs).collect(),
            e2e_p99_ms: LatencySummary::of(&e2e).map(|s| s.p99_ms),
        };
        match judge(&obs, w.rate_search.max_p99_ms) {
            Ok(()) => "kept up".to_string(),
            Err(why) => format!("did not keep up: {why}"),
        }
    });
    result.measured = Measured {
        verdict,
        window_start_s: t0 as f64 / 1e9,
        window_end_s: t1 as f64 / 1e9,
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
        caught_up_s,
        broker_cpu_pct: cpu(broker_before, broker_after),
        broker_rss_max_mb: (c.rss_max_mb_window > 0.0)
            .then_some(c.rss_max_mb_window)
            .or_else(|| broker_after.map(|s| s.rss_bytes as f64 / 1e6)),
        client_cpu_pct: cpu(client_before, client_after),
    };
    result.distribution = Distribution {
        publish: distribution(&pw.latency),
        e2e: distribution(&e2e),
    };
    result.histograms = BTreeMap::from([
        (
            "publish_v2_deflate_base64".to_string(),
            encode_hist(&pw.latency),
        ),
        ("e2e_v2_deflate_base64".to_string(), encode_hist(&e2e)),
    ]);
    result.series = std::mem::take(&mut c.series);
    result.last_errors = last_errors;
    Ok(result)
}

/// True if stderr is an interactive terminal (for the live progress bar).
pub fn stderr_is_terminal() -> bool {
    std::io::stderr().is_terminal()
}
