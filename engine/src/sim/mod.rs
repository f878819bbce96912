//! Seeded deterministic simulations (DESIGN.md §7): one seed drives the
//! engine's state machines through random operations, with crashes that lose
//! what was not synced, and checks them against a simple model after every
//! step. No clocks, threads or files: a seed replays exactly.
//!
//! `cargo test --release -p engine sim::` runs `SIM_SEEDS` seeds (default
//! 200); `SIM_SEED=<n>` runs only seed n, which is how a failure printed by
//! `run_seeds` is reproduced.

mod cluster_sim;
mod group_sim;
mod log_sim;
mod raft_sim;
mod replication_sim;
mod txn_sim;

use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};

/// SplitMix64: tiny, fast, and its whole state is the seed, so a run depends
/// on nothing but the seed.
pub struct Rng {
    state: u64,
}

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng { state: seed }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[low, high)`; `high > low`.
    pub fn range(&mut self, low: u64, high: u64) -> u64 {
        assert!(high > low, "empty range {low}..{high}");
        low + self.next_u64() % (high - low)
    }

    /// Uniform in `[low, high]` over i64.
    pub fn range_i64(&mut self, low: i64, high: i64) -> i64 {
        assert!(high >= low);
        let span = (high - low) as u64 + 1;
        low + (self.next_u64() % span) as i64
    }

    pub fn index(&mut self, len: usize) -> usize {
        self.range(0, len as u64) as usize
    }

    /// True with probability `numerator / denominator`.
    pub fn chance(&mut self, numerator: u64, denominator: u64) -> bool {
        self.range(0, denominator) < numerator
    }
}

const SEEDS_DEFAULT: u64 = 200;

/// Runs `simulate` for the seed in `SIM_SEED`, or for `SIM_SEEDS` seeds
/// (default 200) derived from `base`. A failing seed is printed with the
/// command that replays it before the panic continues.
pub fn run_seeds(name: &str, base: u64, simulate: impl Fn(u64)) {
    let seeds: Vec<u64> = match std::env::var("SIM_SEED") {
        Ok(seed) => vec![seed.trim().parse().expect("SIM_SEED is a u64")],
        Err(_) => {
            let count = std::env::var("SIM_SEEDS")
                .ok()
                .map(|n| n.trim().parse().expect("SIM_SEEDS is a u64"))
                .unwrap_or(SEEDS_DEFAULT);
            (0..count).map(|i| base.wrapping_add(i)).collect()
        }
    };
    for seed in seeds {
        if let Err(panic) = catch_unwind(AssertUnwindSafe(|| simulate(seed))) {
            eprintln!(
                "simulation {name} failed with seed {seed}; replay it with: \
                 SIM_SEED={seed} cargo test --release -p engine {name}"
            );
            resume_unwind(panic);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rng_replays_from_its_seed() {
        let draw = |seed| {
            let mut rng = Rng::new(seed);
            (0..64).map(|_| rng.range(0, 1000)).collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
        let mut rng = Rng::new(1);
        for _ in 0..1000 {
            let v = rng.range_i64(-3, 3);
            assert!((-3..=3).contains(&v));
        }
    }
}
