//! Group commit for `acks=all` (DESIGN.md §5): a writer that needs
//! durability registers after its write; one fdatasync of the partition then
//! acknowledges every write registered before it began. Each partition runs
//! its own sync loop, so a write waits for at most the sync already in
//! flight on its own partition plus one more, never for other partitions'.

use std::cell::RefCell;
use std::rc::Rc;

use futures::channel::oneshot;

use crate::partition::Partition;

#[derive(Default)]
pub struct GroupCommit {
    fsync_latency: RefCell<crate::metrics::Histogram>,
}

impl GroupCommit {
    pub fn fsync_latency(&self) -> crate::metrics::Histogram {
        self.fsync_latency.borrow().clone()
    }

    /// Resolves true once everything `partition` wrote so far is on disk.
    pub async fn sync(self: &Rc<Self>, partition: &Rc<Partition>) -> bool {
        let (sender, receiver) = oneshot::channel();
        partition.sync_waiters.borrow_mut().push(sender);
        if !partition.syncing.replace(true) {
            glommio::spawn_local(self.clone().run(partition.clone())).detach();
        }
        receiver.await.unwrap_or(false)
    }

    /// Syncs `partition` until no writer waits: each round acknowledges the
    /// writers that registered before its fdatasync started.
    async fn run(self: Rc<Self>, partition: Rc<Partition>) {
        loop {
            let waiters = std::mem::take(&mut *partition.sync_waiters.borrow_mut());
            if waiters.is_empty() {
                break;
            }
            let started = std::time::Instant::now();
            let result = partition.sync().await;
            self.fsync_latency
                .borrow_mut()
                .observe(started.elapsed().as_secs_f64());
            let ok = match result {
                Ok(()) => true,
                Err(e) => {
                    // The page cache may have dropped the unsynced pages: the
                    // log on disk is in doubt, so the partition stops writing.
                    partition.fail("fdatasync", &e);
                    false
                }
            };
            for waiter in waiters {
                let _ = waiter.send(ok);
            }
        }
        partition.syncing.set(false);
    }
}
