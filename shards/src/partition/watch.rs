//! Long-poll wake-ups: parked fetches watch partitions for data past the
//! high watermark they saw.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use super::Partition;
use crate::mesh::data::ReadBound;

/// Wakes one parked fetch when any partition it watches gets data: one
/// signal per park, however many partitions it watches. Partitions hold it
/// weakly, so a fetch that ended leaves only a dead entry behind.
#[derive(Default)]
pub struct DataSignal {
    fired: Cell<bool>,
    waker: RefCell<Option<std::task::Waker>>,
}

impl DataSignal {
    fn fire(&self) {
        self.fired.set(true);
        if let Some(waker) = self.waker.borrow_mut().take() {
            waker.wake();
        }
    }

    /// Resolves once a watched partition got data.
    pub async fn fired(&self) {
        std::future::poll_fn(|cx| {
            if self.fired.get() {
                return std::task::Poll::Ready(());
            }
            *self.waker.borrow_mut() = Some(cx.waker().clone());
            std::task::Poll::Pending
        })
        .await
    }
}

impl Partition {
    /// Makes `signal` fire once the read's bound (the high watermark; a
    /// follower's fetch: the written log end; read_committed: the last
    /// stable offset) may have passed `offset`. False, and nothing
    /// registered, if it already has or the partition closed.
    pub fn watch_beyond(&self, offset: i64, bound: ReadBound, signal: &Rc<DataSignal>) -> bool {
        if self.read_end_offset(bound) > offset || self.closed.get() {
            return false;
        }
        let mut waiters = self.data_waiters.borrow_mut();
        // Drop watchers whose fetch already ended, so the list stays bounded.
        waiters.retain(|w| w.strong_count() > 0);
        waiters.push(Rc::downgrade(signal));
        true
    }

    pub(super) fn wake_data_waiters(&self) {
        for waiter in self.data_waiters.borrow_mut().drain(..) {
            if let Some(signal) = waiter.upgrade() {
                signal.fire();
            }
        }
    }
}
