//! State shared by the orchestrator and all client threads.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::stats::{Clock, ThreadStats, Window};
use crate::workload::{ConsumerStart, Workload};

#[derive(Debug, Clone, Copy)]
pub(super) enum Mode {
    Paused,
    Paced { start_ns: u64, rate_total: f64 },
}

/// State shared by the orchestrator and all client threads.
pub(super) struct Shared {
    pub(super) clock: Clock,
    pub(super) window: Window,
    pub(super) run_id: u32,
    pub(super) mode: Mutex<Mode>,
    pub(super) mode_gen: AtomicU64,
    pub(super) stop: AtomicBool,
    /// Consumers keep their partitions paused while set (a catch-up read
    /// starts only when the measured window opens).
    pub(super) hold_consumers: AtomicBool,
}

impl Shared {
    /// A new run of `w`: a fresh clock and run id, producers paused.
    pub(super) fn new(w: &Workload) -> Shared {
        let clock = Clock::new();
        let run_id = (clock.unix_ns_of(0) as u32) ^ (std::process::id().rotate_left(16));
        Shared {
            clock,
            window: Window::closed(),
            run_id,
            mode: Mutex::new(Mode::Paused),
            mode_gen: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            hold_consumers: AtomicBool::new(
                w.prefill.0 > 0 && w.consumer_start == ConsumerStart::Beginning,
            ),
        }
    }

    pub(super) fn set_mode(&self, m: Mode) {
        *lock(&self.mode) = m;
        self.mode_gen.fetch_add(1, Ordering::SeqCst);
    }
}

/// Locks a mutex; a poisoned lock (a panicked client thread) still holds
/// valid counters, so keep using them.
pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// One client thread's counters, read by the collector.
pub(super) type Stats = Arc<Mutex<ThreadStats>>;
