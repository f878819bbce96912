//! Time: Kafka's wall clock for timestamps, and a timeout around any
//! future on the shard's timer.

use std::time::Duration;

use futures::future::{select, Either};

/// Milliseconds since the Unix epoch: Kafka's clock for timestamps.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
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
