//! Time: Kafka's wall clock for timestamps, a steady clock for timers, and
//! a timeout around any future on the shard's timer.
//!
//! Timers (broker sessions, ISR lag, group member sessions, idle files,
//! fetch deadlines) run on `steady_ms`: a wall-clock step (NTP, a VM
//! resumed) must not expire every session at once. A CI machine's clock
//! once jumped 11 s forward and a lone broker fenced itself.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use futures::future::{select, Either};

/// Milliseconds since the Unix epoch: Kafka's clock for timestamps.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Milliseconds since the Unix epoch on a clock that never steps: the wall
/// clock read once (at the first call) plus the monotonic time elapsed since.
/// It agrees with `now_ms` until the wall clock steps, so values persisted
/// by one process (a group's commit times) stay meaningful to the next.
pub fn steady_ms() -> i64 {
    static ANCHOR: OnceLock<(Instant, i64)> = OnceLock::new();
    let (start, wall_at_start_ms) = ANCHOR.get_or_init(|| (Instant::now(), now_ms()));
    wall_at_start_ms.saturating_add(i64::try_from(start.elapsed().as_millis()).unwrap_or(i64::MAX))
}

/// Waits for `inner` or until `timeout_ms`, whichever is first.
pub async fn with_timeout<T>(
    timeout_ms: u64,
    inner: impl std::future::Future<Output = T>,
) -> Option<T> {
    let timer = glommio::timer::sleep(Duration::from_millis(timeout_ms));
    futures::pin_mut!(timer);
    futures::pin_mut!(inner);
    match select(inner, timer).await {
        Either::Left((value, _)) => Some(value),
        Either::Right(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_steady_clock_starts_at_the_wall_clock_and_never_goes_back() {
        let first = steady_ms();
        assert!((first - now_ms()).abs() < 1_000);
        let mut last = first;
        for _ in 0..1_000 {
            let next = steady_ms();
            assert!(next >= last);
            last = next;
        }
    }
}
