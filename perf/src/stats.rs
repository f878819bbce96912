//! Latency histograms (HDR, microsecond resolution) and the counters each
//! producer and consumer thread keeps. Threads record into their own
//! `Mutex`-guarded stats (uncontended but for the once-a-second collector);
//! the collector merges them into per-interval samples and window totals.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Latencies are recorded in µs from 1 µs to 1 hour with 3 significant digits.
pub const HIST_MAX_US: u64 = 3_600_000_000;

pub fn new_hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HIST_MAX_US, 3).expect("constant histogram bounds are valid")
}

/// Records a latency in ns (clamped to the histogram's range).
pub fn record_ns(h: &mut Histogram<u64>, ns: u64) {
    h.saturating_record((ns / 1000).clamp(1, HIST_MAX_US));
}

/// Adds `src` into `dst` (same bounds, so this cannot fail in practice; a
/// failure would be a bug, and losing samples silently would be dishonest).
pub fn merge(dst: &mut Histogram<u64>, src: &Histogram<u64>) {
    dst.add(src)
        .expect("histograms with identical bounds always merge");
}

/// The run's clock: monotonic ns since the run started, and the matching Unix
/// time for the record header (so another process could compute e2e latency).
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    base: Instant,
    base_unix_ns: u64,
}

impl Clock {
    pub fn new() -> Clock {
        let base = Instant::now();
        let base_unix_ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        Clock { base, base_unix_ns }
    }

    pub fn now_ns(&self) -> u64 {
        self.base.elapsed().as_nanos() as u64
    }

    pub fn unix_ns_of(&self, run_ns: u64) -> u64 {
        self.base_unix_ns + run_ns
    }

    /// Run time of a Unix timestamp taken by this clock (saturating at 0).
    pub fn run_ns_of_unix(&self, unix_ns: u64) -> u64 {
        unix_ns.saturating_sub(self.base_unix_ns)
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}

/// The measurement window [start, end) in run ns. Records whose intended time
/// falls inside count towards latency; acks and reads that happen inside
/// count towards throughput.
#[derive(Debug)]
pub struct Window {
    start: AtomicU64,
    end: AtomicU64,
}

impl Window {
    pub fn closed() -> Window {
        Window {
            start: AtomicU64::new(u64::MAX),
            end: AtomicU64::new(u64::MAX),
        }
    }

    /// Opens [start_ns, ∞). Call `shut` (and reset the threads' window
    /// parts) first, so that late completions of an earlier window cannot
    /// leak into this one.
    pub fn open(&self, start_ns: u64) {
        self.start.store(start_ns, Ordering::SeqCst);
        self.end.store(u64::MAX, Ordering::SeqCst);
    }

    /// Ends the window at `end_ns`; records intended before it still count
    /// when they complete later (the drain).
    pub fn close(&self, end_ns: u64) {
        self.end.store(end_ns, Ordering::SeqCst);
    }

    /// Counts nothing any more, not even late completions.
    pub fn shut(&self) {
        self.start.store(u64::MAX, Ordering::SeqCst);
        self.end.store(u64::MAX, Ordering::SeqCst);
    }

    pub fn contains(&self, t_ns: u64) -> bool {
        self.start.load(Ordering::Relaxed) <= t_ns && t_ns < self.end.load(Ordering::Relaxed)
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub msgs: u64,
    pub bytes: u64,
}

impl Counts {
    pub fn add(&mut self, bytes: u64) {
        self.msgs += 1;
        self.bytes += bytes;
    }

    pub fn plus(self, o: Counts) -> Counts {
        Counts {
            msgs: self.msgs + o.msgs,
            bytes: self.bytes + o.bytes,
        }
    }
}

/// What one thread (producer or consumer) saw during one sampling interval,
/// or during one window.
#[derive(Debug, Clone)]
pub struct Part {
    /// Producers: records acknowledged. Consumers: records read.
    pub done: Counts,
    /// Producers: records handed to the client. Consumers: unused.
    pub sent: u64,
    pub errors: u64,
    pub latency: Histogram<u64>,
}

impl Part {
    pub fn new() -> Part {
        Part {
            done: Counts::default(),
            sent: 0,
            errors: 0,
            latency: new_hist(),
        }
    }

    pub fn merge_from(&mut self, o: &Part) {
        self.done = self.done.plus(o.done);
        self.sent += o.sent;
        self.errors += o.errors;
        merge(&mut self.latency, &o.latency);
    }

    /// Moves the contents out, leaving this part empty (histogram memory is
    /// reused: reset instead of reallocating).
    pub fn take_into(&mut self, acc: &mut Part) {
        acc.merge_from(self);
        self.done = Counts::default();
        self.sent = 0;
        self.errors = 0;
        self.latency.reset();
    }
}

impl Default for Part {
    fn default() -> Self {
        Part::new()
    }
}

/// One thread's statistics.
#[derive(Debug)]
pub struct ThreadStats {
    /// Everything since the last sample, by ack/read time (for time series).
    pub interval: Part,
    /// Records whose intended time is in the window (latency, completion).
    pub window_intended: Part,
    /// Acks/reads that happened while the window was open (throughput).
    pub window_by_time: Counts,
    /// Lifetime totals, for draining (sent == done + errors).
    pub total_sent: u64,
    pub total_done: u64,
    pub total_errors: u64,
    /// Consumers: records that were not ours (other runs, foreign producers).
    pub foreign: u64,
    pub last_error: Option<String>,
}

impl ThreadStats {
    pub fn new() -> ThreadStats {
        ThreadStats {
            interval: Part::new(),
            window_intended: Part::new(),
            window_by_time: Counts::default(),
            total_sent: 0,
            total_done: 0,
            total_errors: 0,
            foreign: 0,
            last_error: None,
        }
    }

    /// Resets the window parts (at the start of a new window).
    pub fn reset_window(&mut self) {
        let mut sink = Part::new();
        self.window_intended.take_into(&mut sink);
        self.window_by_time = Counts::default();
    }

    /// A record completed (acked or read) at `now_ns`, intended at `intended_ns`.
    pub fn record_done(&mut self, window: &Window, bytes: u64, intended_ns: u64, now_ns: u64) {
        let lat = now_ns.saturating_sub(intended_ns);
        self.total_done += 1;
        self.interval.done.add(bytes);
        record_ns(&mut self.interval.latency, lat);
        if window.contains(intended_ns) {
            self.window_intended.done.add(bytes);
            record_ns(&mut self.window_intended.latency, lat);
        }
        if window.contains(now_ns) {
            self.window_by_time.add(bytes);
        }
    }

    pub fn record_sent(&mut self, window: &Window, intended_ns: u64) {
        self.total_sent += 1;
        self.interval.sent += 1;
        if window.contains(intended_ns) {
            self.window_intended.sent += 1;
        }
    }

    pub fn record_error(&mut self, window: &Window, intended_ns: u64, error: String) {
        self.total_errors += 1;
        self.interval.errors += 1;
        if window.contains(intended_ns) {
            self.window_intended.errors += 1;
        }
        self.last_error = Some(error);
    }
}

impl Default for ThreadStats {
    fn default() -> Self {
        ThreadStats::new()
    }
}

/// Percentiles of a latency histogram, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencySummary {
    pub count: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p99_9_ms: f64,
    pub p99_99_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

impl LatencySummary {
    pub fn of(h: &Histogram<u64>) -> Option<LatencySummary> {
        if h.is_empty() {
            return None;
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Some(LatencySummary {
            count: h.len(),
            p50_ms: ms(h.value_at_quantile(0.50)),
            p90_ms: ms(h.value_at_quantile(0.90)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p99_9_ms: ms(h.value_at_quantile(0.999)),
            p99_99_ms: ms(h.value_at_quantile(0.9999)),
            max_ms: ms(h.max()),
            mean_ms: h.mean() / 1000.0,
        })
    }
}

/// The latency distribution as (percentile, ms) points for the classic HDR
/// plot: percentiles spaced evenly in log(1 / (1 - p)), up to where the
/// sample count still supports them, then the max.
pub fn distribution(h: &Histogram<u64>) -> Vec<(f64, f64)> {
    if h.is_empty() {
        return Vec::new();
    }
    let n = h.len() as f64;
    let x_max = n.log10().clamp(0.0, 6.0);
    let mut out = Vec::new();
    let mut x = 0.0;
    while x <= x_max + 1e-9 {
        let q = 1.0 - 10f64.powf(-x);
        out.push((q * 100.0, h.value_at_quantile(q) as f64 / 1000.0));
        x += 0.05;
    }
    out.push((100.0, h.max() as f64 / 1000.0));
    out
}

/// A histogram as base64 of its V2 deflate encoding (the format HdrHistogram
/// tools read), so that a report's raw data can be re-merged later.
pub fn encode_hist(h: &Histogram<u64>) -> String {
    use hdrhistogram::serialization::{Serializer, V2DeflateSerializer};
    let mut buf = Vec::new();
    match V2DeflateSerializer::new().serialize(h, &mut buf) {
        Ok(_) => base64(&buf),
        Err(_) => String::new(),
    }
}

fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        out.push(T[(n >> 18) as usize & 63] as char);
        out.push(T[(n >> 12) as usize & 63] as char);
        out.push(if chunk.len() > 1 {
            T[(n >> 6) as usize & 63] as char
        } else {
            '='
        });
        out.push(if chunk.len() > 2 {
            T[n as usize & 63] as char
        } else {
            '='
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merging_per_thread_histograms_equals_one_histogram_of_everything() {
        let mut all = new_hist();
        let mut parts: Vec<Part> = (0..4).map(|_| Part::new()).collect();
        for i in 0..40_000u64 {
            let v = 1 + (i * 7919) % 50_000; // µs
            all.record(v).unwrap();
            let p = &mut parts[(i % 4) as usize];
            p.latency.record(v).unwrap();
            p.done.add(100);
        }
        let mut acc = Part::new();
        for p in parts.iter_mut() {
            p.take_into(&mut acc);
            assert!(p.latency.is_empty(), "take_into empties the part");
            assert_eq!(p.done, Counts::default());
        }
        assert_eq!(
            acc.done,
            Counts {
                msgs: 40_000,
                bytes: 4_000_000
            }
        );
        assert_eq!(LatencySummary::of(&acc.latency), LatencySummary::of(&all));
        assert_eq!(acc.latency.len(), all.len());
    }

    #[test]
    fn window_classifies_by_intended_and_by_completion_time() {
        let w = Window::closed();
        let mut s = ThreadStats::new();
        s.record_sent(&w, 5);
        s.record_done(&w, 10, 5, 7);
        assert_eq!(
            s.window_intended.done.msgs, 0,
            "closed window counts nothing"
        );
        assert_eq!(s.interval.done.msgs, 1);
        w.open(100);
        // Intended before the window, acked inside: throughput, not latency.
        s.record_done(&w, 10, 50, 150);
        // Intended inside, acked inside.
        s.record_sent(&w, 120);
        s.record_done(&w, 10, 120, 130);
        w.close(200);
        // Intended inside, acked after the window closed (the drain).
        s.record_done(&w, 10, 190, 5_000);
        s.record_error(&w, 199, "boom".into());
        assert_eq!(s.window_intended.done.msgs, 2);
        assert_eq!(s.window_intended.sent, 1);
        assert_eq!(s.window_intended.errors, 1);
        assert_eq!(s.window_by_time.msgs, 2);
        assert_eq!(s.total_done, 4);
        assert_eq!(s.window_intended.latency.max(), 4); // (5000-190) ns -> 4 µs
        w.shut();
        s.record_done(&w, 10, 150, 6_000);
        assert_eq!(
            s.window_intended.done.msgs, 2,
            "a shut window counts nothing"
        );
        s.reset_window();
        assert_eq!(s.window_intended.done.msgs, 0);
        assert!(s.window_intended.latency.is_empty());
    }

    #[test]
    fn summary_and_distribution() {
        let mut h = new_hist();
        assert!(LatencySummary::of(&h).is_none());
        assert!(distribution(&h).is_empty());
        for v in 1..=10_000u64 {
            h.record(v).unwrap();
        }
        let s = LatencySummary::of(&h).unwrap();
        assert_eq!(s.count, 10_000);
        assert!((s.p50_ms - 5.0).abs() < 0.01, "{s:?}");
        assert!((s.p99_ms - 9.9).abs() < 0.01, "{s:?}");
        assert!((s.max_ms - 10.0).abs() < 0.01, "{s:?}");
        let d = distribution(&h);
        assert!(d.windows(2).all(|w| w[0].0 <= w[1].0 && w[0].1 <= w[1].1));
        assert_eq!(d.last().unwrap().0, 100.0);
        // 10k samples support percentiles up to 99.99%.
        assert!(d.iter().any(|(p, _)| (*p - 99.99).abs() < 0.001));
    }

    #[test]
    fn record_clamps_into_range() {
        let mut h = new_hist();
        record_ns(&mut h, 0);
        record_ns(&mut h, u64::MAX);
        assert_eq!(h.len(), 2);
        assert_eq!(h.min(), 1);
    }

    #[test]
    fn base64_matches_known_vectors() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
        let mut h = new_hist();
        h.record(5).unwrap();
        assert!(!encode_hist(&h).is_empty());
    }
}
