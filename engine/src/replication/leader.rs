//! The leader's side of Kafka's ISR replication for one partition, as
//! decisions: what each follower has (its fetch offset: Gregor's followers
//! fsync before they fetch again, so a fetch offset is a durable log end),
//! when it last caught up, the in-sync replica set, and the high watermark.
//!
//! Rules (DESIGN.md §5):
//! - the high watermark is the smallest durable log end over the leader and
//!   the ISR (with any replica being added counted in), never moves back,
//!   and does not advance while the ISR is smaller than `min.insync.replicas`;
//! - a follower that has not caught up for `replica.lag.time.max.ms` is to
//!   leave the ISR; one that is not in it rejoins once it reaches the high
//!   watermark and the start of the leader's epoch. Both go through the
//!   controller (AlterPartition): `isr_change` proposes, `isr_committed`
//!   takes what the controller decided.

use std::collections::{BTreeMap, BTreeSet};

/// A broker's `node.id`.
pub type ReplicaId = i32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FollowerProgress {
    /// The follower's durable log end (its last fetch offset); -1 until it
    /// fetched in this leader epoch.
    log_end_offset: i64,
    last_caught_up_ms: i64,
    /// The leader's log end when the follower last fetched, and when.
    leader_end_at_last_fetch: i64,
    last_fetch_ms: i64,
}

/// A change of the ISR the leader asks the controller for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsrChange {
    pub leader_epoch: i32,
    pub isr: BTreeSet<ReplicaId>,
}

#[derive(Debug, Clone)]
pub struct LeaderState {
    leader: ReplicaId,
    leader_epoch: i32,
    /// The leader's log end when this epoch began: a follower must reach it
    /// to rejoin the ISR (it then holds everything the epoch built on).
    epoch_start_offset: i64,
    min_insync_replicas: usize,
    /// As committed by the controller; always holds the leader.
    isr: BTreeSet<ReplicaId>,
    /// An AlterPartition in flight: the ISR asked for.
    pending: Option<BTreeSet<ReplicaId>>,
    followers: BTreeMap<ReplicaId, FollowerProgress>,
    /// The leader's log end, written and durable.
    log_end_offset: i64,
    durable_end_offset: i64,
    high_watermark: i64,
}

impl LeaderState {
    /// Becomes leader of `leader_epoch` with a log that ends at
    /// `log_end_offset`, of which what lies below `durable_end_offset` is
    /// on its disk (a follower's last appends may still be syncing), and
    /// the high watermark it knew as a follower.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        leader: ReplicaId,
        leader_epoch: i32,
        replicas: &[ReplicaId],
        isr: BTreeSet<ReplicaId>,
        min_insync_replicas: usize,
        log_end_offset: i64,
        durable_end_offset: i64,
        high_watermark: i64,
        now_ms: i64,
    ) -> LeaderState {
        assert!(isr.contains(&leader), "the leader is in its own ISR");
        assert!(high_watermark <= log_end_offset);
        assert!(durable_end_offset <= log_end_offset);
        let followers = replicas
            .iter()
            .filter(|&&r| r != leader)
            .map(|&r| {
                (
                    r,
                    FollowerProgress {
                        log_end_offset: -1,
                        // Kafka: ISR members start caught up, so a new
                        // leader does not drop them before they fetch.
                        last_caught_up_ms: if isr.contains(&r) { now_ms } else { 0 },
                        leader_end_at_last_fetch: -1,
                        last_fetch_ms: 0,
                    },
                )
            })
            .collect();
        LeaderState {
            leader,
            leader_epoch,
            epoch_start_offset: log_end_offset,
            min_insync_replicas: min_insync_replicas.max(1),
            isr,
            pending: None,
            followers,
            log_end_offset,
            durable_end_offset,
            high_watermark,
        }
    }

    pub fn leader_epoch(&self) -> i32 {
        self.leader_epoch
    }

    pub fn high_watermark(&self) -> i64 {
        self.high_watermark
    }

    pub fn isr(&self) -> &BTreeSet<ReplicaId> {
        &self.isr
    }

    /// Whether an acks=all produce may be appended now (Kafka answers
    /// NOT_ENOUGH_REPLICAS when the ISR is too small).
    pub fn enough_replicas(&self) -> bool {
        self.isr.len() >= self.min_insync_replicas
    }

    /// The leader wrote up to `log_end_offset` (not yet durable).
    pub fn on_append(&mut self, log_end_offset: i64) {
        assert!(
            log_end_offset >= self.log_end_offset,
            "a leader's log only grows"
        );
        self.log_end_offset = log_end_offset;
    }

    /// The leader's own log is durable up to `durable_end_offset`. Returns
    /// the new high watermark if it moved.
    pub fn on_durable(&mut self, durable_end_offset: i64) -> Option<i64> {
        assert!(durable_end_offset <= self.log_end_offset);
        self.durable_end_offset = self.durable_end_offset.max(durable_end_offset);
        self.advance_high_watermark()
    }

    /// A follower fetched from `fetch_offset` (everything before it is on
    /// its disk). Returns the new high watermark if it moved.
    pub fn on_follower_fetch(
        &mut self,
        follower: ReplicaId,
        fetch_offset: i64,
        now_ms: i64,
    ) -> Result<Option<i64>, String> {
        let leader_end = self.log_end_offset;
        let Some(progress) = self.followers.get_mut(&follower) else {
            return Err(format!("broker {follower} is not a replica"));
        };
        if fetch_offset > leader_end {
            return Err(format!(
                "broker {follower} fetches from {fetch_offset}, past the log end {leader_end}"
            ));
        }
        // Kafka's rule: caught up now if it reached the log end; caught up
        // as of its previous fetch if it reached what the log end was then.
        if fetch_offset >= leader_end {
            progress.last_caught_up_ms = now_ms;
        } else if fetch_offset >= progress.leader_end_at_last_fetch {
            progress.last_caught_up_ms = progress.last_caught_up_ms.max(progress.last_fetch_ms);
        }
        progress.log_end_offset = fetch_offset;
        progress.leader_end_at_last_fetch = leader_end;
        progress.last_fetch_ms = now_ms;
        Ok(self.advance_high_watermark())
    }

    /// The ISR the leader should ask for now, if it differs from the one it
    /// has and no change is in flight: followers lagging longer than
    /// `lag_max_ms` leave, caught-up ones join.
    pub fn isr_change(&self, now_ms: i64, lag_max_ms: i64) -> Option<IsrChange> {
        if self.pending.is_some() {
            return None;
        }
        let mut isr = self.isr.clone();
        for (&replica, progress) in &self.followers {
            let in_isr = isr.contains(&replica);
            if in_isr && now_ms - progress.last_caught_up_ms > lag_max_ms {
                isr.remove(&replica);
            } else if !in_isr
                && progress.log_end_offset >= self.high_watermark
                && progress.log_end_offset >= self.epoch_start_offset
            {
                isr.insert(replica);
            }
        }
        (isr != self.isr).then_some(IsrChange {
            leader_epoch: self.leader_epoch,
            isr,
        })
    }

    /// The change was sent to the controller: until it answers, a replica
    /// being added already counts for the high watermark (Kafka's
    /// "maximal ISR"), and one being removed still does.
    pub fn isr_change_sent(&mut self, change: &IsrChange) {
        assert_eq!(change.leader_epoch, self.leader_epoch);
        assert!(change.isr.contains(&self.leader));
        self.pending = Some(change.isr.clone());
    }

    /// The controller committed `isr` (or refused: the committed one comes
    /// back unchanged). Returns the new high watermark if it moved.
    pub fn isr_committed(&mut self, isr: BTreeSet<ReplicaId>) -> Option<i64> {
        assert!(isr.contains(&self.leader), "the leader is in its own ISR");
        self.isr = isr;
        self.pending = None;
        self.advance_high_watermark()
    }

    /// The replicas whose durable log ends bound the high watermark.
    fn maximal_isr(&self) -> BTreeSet<ReplicaId> {
        let mut isr = self.isr.clone();
        if let Some(pending) = &self.pending {
            isr.extend(pending.iter().copied());
        }
        isr
    }

    fn advance_high_watermark(&mut self) -> Option<i64> {
        if self.isr.len() < self.min_insync_replicas {
            return None;
        }
        let mut bound = self.durable_end_offset;
        for replica in self.maximal_isr() {
            if replica != self.leader {
                let end = self
                    .followers
                    .get(&replica)
                    .map_or(-1, |p| p.log_end_offset);
                bound = bound.min(end);
            }
        }
        if bound > self.high_watermark {
            self.high_watermark = bound;
            return Some(bound);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ids: &[ReplicaId]) -> BTreeSet<ReplicaId> {
        ids.iter().copied().collect()
    }

    fn leader(isr: &[ReplicaId], min_isr: usize) -> LeaderState {
        LeaderState::new(1, 5, &[1, 2, 3], set(isr), min_isr, 100, 100, 100, 0)
    }

    #[test]
    fn the_high_watermark_is_the_smallest_durable_end_of_the_isr() {
        let mut state = leader(&[1, 2, 3], 2);
        state.on_append(150);
        assert_eq!(state.on_durable(150), None, "followers have nothing yet");
        assert_eq!(state.on_follower_fetch(2, 120, 10).unwrap(), None);
        assert_eq!(state.on_follower_fetch(3, 110, 10).unwrap(), Some(110));
        assert_eq!(state.on_follower_fetch(3, 150, 20).unwrap(), Some(120));
        assert_eq!(state.on_follower_fetch(2, 150, 20).unwrap(), Some(150));
        // A follower going back (it truncated) never moves the mark back.
        state.on_follower_fetch(2, 140, 30).unwrap();
        assert_eq!(state.high_watermark(), 150);
        // The leader's own durability bounds it too.
        state.on_append(200);
        state.on_follower_fetch(2, 200, 40).unwrap();
        state.on_follower_fetch(3, 200, 40).unwrap();
        assert_eq!(state.high_watermark(), 150);
        assert_eq!(state.on_durable(180), Some(180));
    }

    #[test]
    fn a_new_leader_counts_only_its_synced_log() {
        // Its last 30 records came from the old leader and are not synced.
        let mut state = LeaderState::new(1, 6, &[1, 2, 3], set(&[1, 2, 3]), 1, 130, 100, 90, 0);
        state.on_follower_fetch(2, 130, 1).unwrap();
        assert_eq!(state.on_follower_fetch(3, 130, 1).unwrap(), Some(100));
        assert_eq!(state.on_durable(130), Some(130));
    }

    #[test]
    fn no_progress_below_min_insync_replicas() {
        let mut state = leader(&[1], 2);
        assert!(!state.enough_replicas());
        state.on_append(130);
        assert_eq!(state.on_durable(130), None);
        // Follower 2 catches up and is proposed for the ISR; once committed
        // the mark moves.
        state.on_follower_fetch(2, 130, 5).unwrap();
        let change = state.isr_change(5, 30_000).unwrap();
        assert_eq!(change.isr, set(&[1, 2]));
        state.isr_change_sent(&change);
        assert_eq!(
            state.high_watermark(),
            100,
            "still not enough until committed"
        );
        assert_eq!(state.isr_committed(change.isr), Some(130));
        assert!(state.enough_replicas());
    }

    #[test]
    fn a_lagging_follower_is_proposed_out_and_rejoins_once_caught_up() {
        let mut state = leader(&[1, 2, 3], 1);
        state.on_append(200);
        state.on_durable(200);
        state.on_follower_fetch(2, 200, 1_000).unwrap();
        state.on_follower_fetch(3, 150, 1_000).unwrap();
        assert_eq!(state.isr_change(20_000, 30_000), None);
        // Follower 3 last caught up at 0 (start); 31 s later it is out.
        state.on_follower_fetch(2, 200, 31_000).unwrap();
        let change = state.isr_change(31_000, 30_000).unwrap();
        assert_eq!(change.isr, set(&[1, 2]));
        state.isr_change_sent(&change);
        assert_eq!(
            state.isr_change(31_000, 30_000),
            None,
            "one change in flight"
        );
        state.isr_committed(change.isr);
        assert_eq!(state.high_watermark(), 200);
        // It catches up and is proposed back in.
        state.on_follower_fetch(3, 200, 32_000).unwrap();
        assert_eq!(
            state.isr_change(32_000, 30_000).unwrap().isr,
            set(&[1, 2, 3])
        );
    }

    #[test]
    fn a_follower_that_keeps_reaching_the_previous_log_end_stays_in() {
        let mut state = leader(&[1, 2], 1);
        // The leader's end moves ahead of every fetch, but each fetch
        // reaches the end of the previous one: caught up as of that fetch.
        let mut end = 100;
        for second in 1..100 {
            let fetched_to = end;
            end += 10;
            state.on_append(end);
            state
                .on_follower_fetch(2, fetched_to, second * 1_000)
                .unwrap();
        }
        assert_eq!(state.isr_change(100_000, 30_000), None);
    }

    #[test]
    fn strangers_and_fetches_past_the_end_are_refused() {
        let mut state = leader(&[1, 2, 3], 1);
        assert!(state.on_follower_fetch(9, 100, 0).is_err());
        assert!(state.on_follower_fetch(2, 101, 0).is_err());
        assert!(
            state.on_follower_fetch(1, 100, 0).is_err(),
            "the leader is no follower"
        );
    }
}
