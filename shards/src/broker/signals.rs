//! Signal handling: SIGINT/SIGTERM are blocked in every thread and taken by
//! the main thread with sigwait, which then raises the stop flag.

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

/// SIGINT or SIGTERM if one is pending (does not wait).
pub fn take_stop_signal() -> Option<i32> {
    let set = stop_signal_set();
    let no_wait = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid set and timeout; a null siginfo pointer is allowed.
    let signal = unsafe { libc::sigtimedwait(&set, std::ptr::null_mut(), &no_wait) };
    (signal > 0).then_some(signal)
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
