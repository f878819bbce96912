//! The process's descriptor budget (DESIGN.md §3: every resource is a bound).
//! At start the soft `RLIMIT_NOFILE` is raised to the hard limit; what it
//! allows is then split: a fixed part for the broker's own descriptors
//! (listeners, io_uring rings, eventfds, splice pipes, peer links), a share
//! for client connections, and the rest for segment files, which are opened
//! on demand within a per-shard bound.

use std::io;

/// Descriptors the process needs whatever its load (stdio, logs, the
/// metrics listener, the quorum's links).
const FIXED_DESCRIPTORS: u64 = 64;
/// Per shard: its io_uring rings and eventfds, the Kafka and replication
/// listeners, splice pipes, replica-fetcher and mesh links.
const FIXED_DESCRIPTORS_PER_SHARD: u64 = 48;
/// Descriptors a connection may hold: its socket, and the duplicated
/// segment descriptor of a fetch response being spliced.
const DESCRIPTORS_PER_CONNECTION: u64 = 2;
/// The least a shard gets of each, however low the limit (below these the
/// broker still starts, and says how short it is).
const CONNECTIONS_PER_SHARD_MIN: u64 = 8;
const SEGMENT_FILES_PER_SHARD_MIN: u64 = 16;

/// How the descriptor limit is spent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DescriptorBudget {
    /// The soft limit the process runs with.
    pub limit: u64,
    /// Connections each shard accepts before it closes new ones.
    pub connections_per_shard: usize,
    /// Segment files each shard keeps open at once.
    pub segment_files_per_shard: usize,
}

impl DescriptorBudget {
    /// Splits `limit` over `shards`: a quarter of what the fixed part
    /// leaves for connections, the rest for segment files.
    pub fn plan(limit: u64, shards: usize) -> DescriptorBudget {
        let shards = shards.max(1) as u64;
        let fixed = FIXED_DESCRIPTORS + FIXED_DESCRIPTORS_PER_SHARD * shards;
        let free = limit.saturating_sub(fixed);
        let connections =
            (free / 4 / DESCRIPTORS_PER_CONNECTION / shards).max(CONNECTIONS_PER_SHARD_MIN);
        let files = (free.saturating_sub(connections * DESCRIPTORS_PER_CONNECTION * shards)
            / shards)
            .max(SEGMENT_FILES_PER_SHARD_MIN);
        DescriptorBudget {
            limit,
            connections_per_shard: usize::try_from(connections).unwrap_or(usize::MAX),
            segment_files_per_shard: usize::try_from(files).unwrap_or(usize::MAX),
        }
    }
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit. Returns (before,
/// after).
pub fn raise_descriptor_limit() -> io::Result<(u64, u64)> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct it is given, nothing else.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let before = limit.rlim_cur;
    if limit.rlim_cur < limit.rlim_max {
        limit.rlim_cur = limit.rlim_max;
        // SAFETY: setrlimit reads the struct it is given.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok((before, limit.rlim_cur))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_never_exceeds_the_limit_when_the_limit_allows_the_minimums() {
        for limit in [1_000u64, 3_000, 65_536, 1 << 20] {
            for shards in [1usize, 2, 8, 64] {
                let plan = DescriptorBudget::plan(limit, shards);
                let s = shards as u64;
                let used = FIXED_DESCRIPTORS
                    + FIXED_DESCRIPTORS_PER_SHARD * s
                    + plan.connections_per_shard as u64 * DESCRIPTORS_PER_CONNECTION * s
                    + plan.segment_files_per_shard as u64 * s;
                let minimums = FIXED_DESCRIPTORS
                    + s * (FIXED_DESCRIPTORS_PER_SHARD
                        + CONNECTIONS_PER_SHARD_MIN * DESCRIPTORS_PER_CONNECTION
                        + SEGMENT_FILES_PER_SHARD_MIN);
                if limit >= minimums {
                    assert!(used <= limit, "{limit} {shards}: {plan:?} uses {used}");
                }
                assert!(plan.connections_per_shard >= CONNECTIONS_PER_SHARD_MIN as usize);
                assert!(plan.segment_files_per_shard >= SEGMENT_FILES_PER_SHARD_MIN as usize);
            }
        }
    }

    #[test]
    fn a_typical_limit_gives_files_most_of_it() {
        let plan = DescriptorBudget::plan(1 << 20, 2);
        assert!(plan.segment_files_per_shard > 350_000, "{plan:?}");
        assert!(plan.connections_per_shard > 60_000, "{plan:?}");
    }
}
