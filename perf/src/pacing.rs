//! Open-loop pacing. Every record has an intended send time fixed in advance
//! by the target rate; a producer that falls behind (a full client queue, a
//! stalled broker) sends late but keeps the intended times, and latency is
//! measured from them. This is what avoids coordinated omission: a stall
//! cannot hide the records that should have been sent during it.

/// The schedule of one producer among `producers` that share a total rate.
/// Producer `i` sends records `i, i + P, i + 2P, ...` of the global schedule
/// `start + k / rate`, so producers interleave instead of bursting together,
/// and the union of all producers' schedules is exactly the global one.
#[derive(Debug, Clone)]
pub struct Pacer {
    start_ns: u64,
    rate_total: f64,
    index: u64,
    stride: u64,
    /// Records this producer has sent under this schedule.
    sent: u64,
}

impl Pacer {
    pub fn new(start_ns: u64, rate_total: f64, producers: u32, index: u32) -> Pacer {
        assert!(
            rate_total > 0.0 && rate_total.is_finite(),
            "rate must be > 0"
        );
        assert!(producers > 0 && index < producers, "bad producer index");
        Pacer {
            start_ns,
            rate_total,
            index: index as u64,
            stride: producers as u64,
            sent: 0,
        }
    }

    /// The intended send time of this producer's next record.
    pub fn next_intended_ns(&self) -> u64 {
        let k = self.index + self.sent * self.stride;
        self.start_ns + (k as f64 * 1e9 / self.rate_total) as u64
    }

    /// True if the next record's intended time has come.
    pub fn is_due(&self, now_ns: u64) -> bool {
        self.next_intended_ns() <= now_ns
    }

    /// Marks the next record sent.
    pub fn advance(&mut self) {
        self.sent += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_producer_schedule() {
        let mut p = Pacer::new(1_000, 1000.0, 1, 0); // 1 ms apart
        let mut times = Vec::new();
        for _ in 0..4 {
            times.push(p.next_intended_ns());
            p.advance();
        }
        assert_eq!(times, vec![1_000, 1_001_000, 2_001_000, 3_001_000]);
    }

    #[test]
    fn producers_interleave_into_the_global_schedule() {
        let rate = 3000.0;
        let mut all = Vec::new();
        for i in 0..3 {
            let mut p = Pacer::new(0, rate, 3, i);
            for _ in 0..100 {
                all.push(p.next_intended_ns());
                p.advance();
            }
        }
        all.sort_unstable();
        let global: Vec<u64> = (0..300).map(|k| (k as f64 * 1e9 / rate) as u64).collect();
        assert_eq!(all, global);
    }

    #[test]
    fn a_stall_keeps_intended_times() {
        let mut p = Pacer::new(0, 1000.0, 1, 0);
        assert!(p.is_due(0));
        // A stall: nothing sent for 10 ms, then the backlog is due at once and
        // keeps its intended times (sent late, latency measured from the plan).
        let now = 10_000_000;
        let mut intended = Vec::new();
        while p.is_due(now) {
            intended.push(p.next_intended_ns());
            p.advance();
        }
        assert_eq!(intended.len(), 11);
        assert_eq!(intended[0], 0);
        assert_eq!(intended[10], 10_000_000);
        assert!(!p.is_due(now));
        assert_eq!(p.next_intended_ns(), 11_000_000);
    }

    #[test]
    fn a_later_producer_starts_at_its_slot() {
        let p = Pacer::new(0, 1000.0, 2, 1); // global slots 1, 3, 5, ... ms
        assert!(!p.is_due(999_999));
        assert!(p.is_due(1_000_000));
    }
}
