//! The stop flag: raised once (by a signal, or a shard that cannot start)
//! and seen by every shard; raising it wakes the shards through an eventfd,
//! so an idle shard takes no timer for it.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// What raising adds to the semaphore eventfd: every waiting read takes one,
/// so any number of shards wake.
const STOP_WAKE_COUNT: u64 = 1 << 32;
/// Fallback poll when the eventfd cannot be read.
const STOP_POLL_INTERVAL_MS: u64 = 100;

#[derive(Clone)]
pub struct StopFlag(Arc<StopInner>);

struct StopInner {
    raised: AtomicBool,
    /// EFD_SEMAPHORE: each read returns 1 and takes one from the count.
    eventfd: OwnedFd,
}

impl StopFlag {
    pub fn new() -> std::io::Result<StopFlag> {
        // SAFETY: eventfd returns a fresh descriptor (or -1), owned below.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_SEMAPHORE) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(StopFlag(Arc::new(StopInner {
            raised: AtomicBool::new(false),
            // SAFETY: fd is valid and nothing else owns it.
            eventfd: unsafe { OwnedFd::from_raw_fd(fd) },
        })))
    }

    pub fn raise(&self) {
        self.0.raised.store(true, Ordering::Release);
        let count = STOP_WAKE_COUNT.to_ne_bytes();
        // SAFETY: writes 8 bytes from a live buffer to our own eventfd. A
        // failure only leaves the waiters on their fallback poll.
        unsafe {
            libc::write(
                self.0.eventfd.as_raw_fd(),
                count.as_ptr().cast(),
                count.len(),
            );
        }
    }

    pub fn is_raised(&self) -> bool {
        self.0.raised.load(Ordering::Acquire)
    }

    /// Resolves once the flag is raised: sleeps on a read of the eventfd.
    pub async fn wait(&self) {
        // SAFETY: dup of our own descriptor; the BufferedFile owns the copy.
        let fd = unsafe { libc::dup(self.0.eventfd.as_raw_fd()) };
        let wake = (fd >= 0).then(|| unsafe { glommio::io::BufferedFile::from_raw_fd(fd) });
        while !self.is_raised() {
            let woken = match &wake {
                Some(file) => file.read_at(0, 8).await.is_ok(),
                None => false,
            };
            if !woken {
                glommio::timer::sleep(Duration::from_millis(STOP_POLL_INTERVAL_MS)).await;
            }
        }
    }
}
