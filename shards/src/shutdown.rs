//! Signal handling: SIGINT/SIGTERM are blocked in every thread and taken by
//! the main thread with sigwait, which then raises a flag the shards poll.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How often an idle shard looks at the stop flag: cheap (a few wakeups per
/// second), and bounds how long a stop takes to start.
const STOP_POLL_INTERVAL_MS: u64 = 100;

#[derive(Clone, Default)]
pub struct StopFlag(Arc<AtomicBool>);

impl StopFlag {
    pub fn raise(&self) {
        self.0.store(true, Ordering::Release);
    }

    pub fn is_raised(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }

    /// Resolves once the flag is raised.
    pub async fn wait(&self) {
        while !self.is_raised() {
            glommio::timer::sleep(Duration::from_millis(STOP_POLL_INTERVAL_MS)).await;
        }
    }
}

fn stop_signal_set() -> libc::sigset_t {
    // SAFETY: sigemptyset/sigaddset initialise a plain C struct we own.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        set
    }
}

/// Blocks SIGINT/SIGTERM in the calling thread; threads spawned afterwards
/// inherit the mask, so only `wait_for_stop_signal` sees them.
pub fn block_stop_signals() {
    let set = stop_signal_set();
    // SAFETY: valid set pointer; a null old-set pointer is allowed.
    unsafe {
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

/// Waits for SIGINT or SIGTERM, or until `give_up` says to stop waiting
/// (checked every 200 ms). Returns the signal number, or None.
pub fn wait_for_stop_signal(give_up: impl Fn() -> bool) -> Option<i32> {
    let set = stop_signal_set();
    let timeout = libc::timespec {
        tv_sec: 0,
        tv_nsec: 200_000_000,
    };
    loop {
        // SAFETY: valid set and timeout; a null siginfo pointer is allowed.
        let signal = unsafe { libc::sigtimedwait(&set, std::ptr::null_mut(), &timeout) };
        if signal > 0 {
            return Some(signal);
        }
        if give_up() {
            return None;
        }
    }
}
