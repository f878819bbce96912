//! Group commit for `acks=all` (DESIGN.md §5): a writer that needs
//! durability registers after its write; one fdatasync of the partition then
//! acknowledges every write registered before it began. Each partition runs
//! its own sync loop, so a write waits for at most the sync already in
//! flight on its own partition plus one more, never for other partitions'.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use futures::channel::oneshot;

use super::Partition;
use crate::metrics::Histogram;

/// One partition's group commit: the writers waiting for the next
/// fdatasync, and whether its sync loop runs.
pub(super) struct GroupCommit {
    waiters: RefCell<Vec<oneshot::Sender<bool>>>,
    syncing: Cell<bool>,
    /// The shard's fdatasync latencies (shared by its partitions).
    fsync_latency: Rc<RefCell<Histogram>>,
}

impl GroupCommit {
    pub(super) fn new(fsync_latency: Rc<RefCell<Histogram>>) -> GroupCommit {
        GroupCommit {
            waiters: RefCell::new(Vec::new()),
            syncing: Cell::new(false),
            fsync_latency,
        }
    }
}

impl Partition {
    /// Resolves true once everything this partition wrote so far is on disk.
    pub async fn sync_durable(self: &Rc<Self>) -> bool {
        let (sender, receiver) = oneshot::channel();
        self.group_commit.waiters.borrow_mut().push(sender);
        if !self.group_commit.syncing.replace(true) {
            glommio::spawn_local(self.clone().run_group_commit()).detach();
        }
        receiver.await.unwrap_or(false)
    }

    /// Syncs until no writer waits: each round acknowledges the writers that
    /// registered before its fdatasync started.
    async fn run_group_commit(self: Rc<Self>) {
        loop {
            let waiters = std::mem::take(&mut *self.group_commit.waiters.borrow_mut());
            if waiters.is_empty() {
                break;
            }
            let started = std::time::Instant::now();
            let mark = self.sync_mark();
            let result = self.sync().await;
            self.group_commit
                .fsync_latency
                .borrow_mut()
                .observe(started.elapsed().as_secs_f64());
            let ok = match result {
                Ok(()) => {
                    self.on_synced(mark);
                    true
                }
                Err(e) => {
                    // The page cache may have dropped the unsynced pages: the
                    // log on disk is in doubt, so the partition stops writing.
                    self.fail("fdatasync", &e);
                    false
                }
            };
            for waiter in waiters {
                let _ = waiter.send(ok);
            }
        }
        self.group_commit.syncing.set(false);
    }
}
