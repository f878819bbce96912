//! Per-shard group commit for `acks=all`: every writer that needs durability
//! registers here after its write; one round of fdatasync (one per dirty
//! partition, issued together) then acknowledges every write made before the
//! round began (DESIGN.md §5).

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use futures::channel::oneshot;

use crate::partition::Partition;

#[derive(Default)]
pub struct GroupCommit {
    dirty: RefCell<Vec<Rc<Partition>>>,
    waiters: RefCell<Vec<oneshot::Sender<bool>>>,
    running: Cell<bool>,
    fsync_latency: RefCell<crate::metrics::Histogram>,
}

impl GroupCommit {
    pub fn fsync_latency(&self) -> crate::metrics::Histogram {
        self.fsync_latency.borrow().clone()
    }

    /// Resolves true once everything `partition` wrote so far is on disk.
    pub async fn sync(self: &Rc<Self>, partition: &Rc<Partition>) -> bool {
        if !partition.sync_pending.replace(true) {
            self.dirty.borrow_mut().push(partition.clone());
        }
        let (sender, receiver) = oneshot::channel();
        self.waiters.borrow_mut().push(sender);
        if !self.running.replace(true) {
            glommio::spawn_local(self.clone().run()).detach();
        }
        receiver.await.unwrap_or(false)
    }

    async fn run(self: Rc<Self>) {
        loop {
            let waiters = std::mem::take(&mut *self.waiters.borrow_mut());
            if waiters.is_empty() {
                break;
            }
            let dirty = std::mem::take(&mut *self.dirty.borrow_mut());
            for partition in &dirty {
                partition.sync_pending.set(false);
            }
            let started = std::time::Instant::now();
            let results = futures::future::join_all(dirty.iter().map(|p| p.sync())).await;
            self.fsync_latency
                .borrow_mut()
                .observe(started.elapsed().as_secs_f64());
            let mut ok = true;
            for (partition, result) in dirty.iter().zip(results) {
                if let Err(e) = result {
                    // The page cache may have dropped the unsynced pages: the
                    // log on disk is in doubt, so the partition stops writing.
                    partition.fail("fdatasync", &e);
                    ok = false;
                }
            }
            for waiter in waiters {
                let _ = waiter.send(ok);
            }
        }
        self.running.set(false);
    }
}
