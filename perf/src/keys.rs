//! Record keys and payload filler: a small seeded PRNG (SplitMix64) and the
//! key distributions (none, uniform random, zipf via an inverted CDF table).

use crate::workload::{KeyDistribution, PayloadKind};

/// SplitMix64: tiny, fast, good enough for load generation, and seedable so a
/// run's key sequence is reproducible.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in [0, n); n > 0.
    pub fn below(&mut self, n: u64) -> u64 {
        debug_assert!(n > 0);
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }
}

/// Picks the key (by index) of each record.
pub struct KeyChooser {
    dist: KeyDistribution,
    count: u64,
    /// Zipf only: cdf[k] = P(rank <= k), nondecreasing, last = 1.0.
    cdf: Vec<f64>,
    rng: SplitMix64,
}

impl KeyChooser {
    pub fn new(dist: KeyDistribution, count: u64, zipf_exponent: f64, seed: u64) -> Self {
        let cdf = if dist == KeyDistribution::Zipf {
            zipf_cdf(count, zipf_exponent)
        } else {
            Vec::new()
        };
        KeyChooser {
            dist,
            count,
            cdf,
            rng: SplitMix64::new(seed),
        }
    }

    /// The next key index, or None for records without a key.
    pub fn next_key(&mut self) -> Option<u64> {
        match self.dist {
            KeyDistribution::None => None,
            KeyDistribution::Random => Some(self.rng.below(self.count)),
            KeyDistribution::Zipf => {
                let u = self.rng.next_f64();
                // First rank whose cumulative probability exceeds u.
                let i = self.cdf.partition_point(|&c| c <= u);
                Some((i as u64).min(self.count - 1))
            }
        }
    }
}

/// Cumulative probabilities of ranks 0..count for P(rank k) ∝ 1/(k+1)^s.
pub fn zipf_cdf(count: u64, s: f64) -> Vec<f64> {
    let mut cdf = Vec::with_capacity(count as usize);
    let mut sum = 0.0;
    for k in 1..=count {
        sum += 1.0 / (k as f64).powf(s);
        cdf.push(sum);
    }
    for c in cdf.iter_mut() {
        *c /= sum;
    }
    if let Some(last) = cdf.last_mut() {
        *last = 1.0;
    }
    cdf
}

/// Formats key `index` as the record key bytes (fixed width, like OMB's keys).
pub fn key_bytes(index: u64, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(format!("key-{index:010}").as_bytes());
}

/// The filler bytes of a record (after its header).
pub fn filler(kind: PayloadKind, len: usize, seed: u64) -> Vec<u8> {
    let mut rng = SplitMix64::new(seed);
    match kind {
        PayloadKind::Random => {
            let mut v = Vec::with_capacity(len + 8);
            while v.len() < len {
                v.extend_from_slice(&rng.next_u64().to_le_bytes());
            }
            v.truncate(len);
            v
        }
        PayloadKind::Text => {
            const WORDS: &[&str] = &[
                "broker",
                "partition",
                "offset",
                "request",
                "commit",
                "segment",
                "replica",
                "leader",
                "fetch",
                "produce",
                "latency",
                "batch",
                "user",
                "order",
                "event",
                "status=ok",
                "status=retry",
                "level=info",
                "level=warn",
                "id",
                "ms",
                "bytes",
            ];
            let mut v = Vec::with_capacity(len + 16);
            while v.len() < len {
                let w = WORDS[rng.below(WORDS.len() as u64) as usize];
                v.extend_from_slice(w.as_bytes());
                if rng.below(4) == 0 {
                    v.extend_from_slice(format!("={}", rng.below(10_000)).as_bytes());
                }
                v.push(b' ');
            }
            v.truncate(len);
            v
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rng_is_deterministic_and_uniformish() {
        let mut a = SplitMix64::new(7);
        let mut b = SplitMix64::new(7);
        for _ in 0..100 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
        let mut counts = [0u32; 10];
        for _ in 0..100_000 {
            counts[a.below(10) as usize] += 1;
        }
        for c in counts {
            assert!((9_000..11_000).contains(&c), "{counts:?}");
        }
    }

    #[test]
    fn zipf_is_skewed_and_in_range() {
        let cdf = zipf_cdf(1000, 1.0);
        assert_eq!(cdf.len(), 1000);
        assert!(cdf.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(*cdf.last().unwrap(), 1.0);
        let mut k = KeyChooser::new(KeyDistribution::Zipf, 1000, 1.0, 1);
        let mut counts = vec![0u32; 1000];
        for _ in 0..100_000 {
            counts[k.next_key().unwrap() as usize] += 1;
        }
        // With s = 1 and 1000 keys, rank 0 has p = 1/H(1000) ~ 0.134.
        assert!((12_000..15_000).contains(&counts[0]), "{}", counts[0]);
        assert!(counts[0] > 5 * counts[9]);
        assert!(counts[0] > counts[1] && counts[1] > counts[10]);
    }

    #[test]
    fn none_and_random() {
        let mut k = KeyChooser::new(KeyDistribution::None, 10, 1.0, 1);
        assert_eq!(k.next_key(), None);
        let mut k = KeyChooser::new(KeyDistribution::Random, 3, 1.0, 1);
        for _ in 0..100 {
            assert!(k.next_key().unwrap() < 3);
        }
    }

    #[test]
    fn filler_has_the_length_asked() {
        for kind in [PayloadKind::Random, PayloadKind::Text] {
            for len in [0, 1, 7, 100, 4096] {
                assert_eq!(filler(kind, len, 3).len(), len);
            }
        }
        let mut key = Vec::new();
        key_bytes(42, &mut key);
        assert_eq!(key, b"key-0000000042");
    }
}
