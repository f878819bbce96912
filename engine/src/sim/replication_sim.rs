//! One partition replicated over three brokers with Kafka's ISR rules
//! (`crate::replication`), under crashes that lose what was not synced,
//! leaders cut off from the controller (zombies), slow followers and leader
//! elections. The controller is modelled simply: it elects from the ISR
//! (never unclean), bumps the epoch, and takes ISR changes only from the
//! current leader epoch, as Kafka's AlterPartition does.
//!
//! Invariants, after every step:
//! - every acknowledged (acks=all) record is in the current leader's log at
//!   its offset;
//! - every record a consumer read (below a leader's high watermark) stays:
//!   the current leader holds it at the same offset;
//! - live replicas agree below the smaller of their high watermarks;
//! - a leader's high watermark never moves back within its epoch.

use std::collections::{BTreeMap, BTreeSet};

use super::{run_seeds, Rng};
use crate::replication::{
    check_fetch, truncation_point, EpochCache, FetchCheck, IsrChange, LeaderState, ReplicaId,
    UNDEFINED_EPOCH,
};

const BROKERS: [ReplicaId; 3] = [1, 2, 3];
const MIN_INSYNC: usize = 2;
const LAG_MAX_MS: i64 = 300;
const STEPS: u64 = 3_000;
/// Records a fetch returns at most.
const FETCH_RECORDS_MAX: usize = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Record {
    epoch: i32,
    value: u64,
}

struct Broker {
    alive: bool,
    log: Vec<Record>,
    /// Records before this index are on disk.
    durable: usize,
    cache: EpochCache,
    high_watermark: i64,
    /// Some while this broker believes it leads.
    leading: Option<LeaderState>,
    /// Cut off from the controller: it does not hear of new epochs.
    isolated: bool,
    /// The epoch this broker last heard of from the controller.
    known_epoch: i32,
}

impl Broker {
    fn log_end(&self) -> i64 {
        self.log.len() as i64
    }

    fn last_epoch(&self) -> i32 {
        self.log.last().map_or(UNDEFINED_EPOCH, |r| r.epoch)
    }

    fn truncate(&mut self, offset: i64) {
        let keep = offset.max(0) as usize;
        if keep < self.log.len() {
            self.log.truncate(keep);
            self.cache.truncate_from_end(offset);
        }
        self.durable = self.durable.min(self.log.len());
        self.high_watermark = self.high_watermark.min(self.log_end());
    }

    fn append(&mut self, record: Record) {
        let offset = self.log_end();
        self.cache
            .assign(record.epoch, offset)
            .expect("epochs only grow in a log");
        self.log.push(record);
    }
}

struct Controller {
    leader: Option<ReplicaId>,
    epoch: i32,
    isr: BTreeSet<ReplicaId>,
}

struct ReplicationSim {
    rng: Rng,
    now_ms: i64,
    brokers: BTreeMap<ReplicaId, Broker>,
    controller: Controller,
    next_value: u64,
    /// Appended by a leader, not yet acknowledged: (leader, epoch, offset, value).
    in_flight: Vec<(ReplicaId, i32, i64, u64)>,
    acknowledged: BTreeMap<i64, u64>,
    consumed: BTreeMap<i64, u64>,
    /// (epoch) -> the high watermark its leader last reported.
    high_watermarks: BTreeMap<i32, i64>,
}

impl ReplicationSim {
    fn new(seed: u64) -> ReplicationSim {
        let brokers = BROKERS
            .iter()
            .map(|&id| {
                (
                    id,
                    Broker {
                        alive: true,
                        log: Vec::new(),
                        durable: 0,
                        cache: EpochCache::default(),
                        high_watermark: 0,
                        leading: None,
                        isolated: false,
                        known_epoch: 0,
                    },
                )
            })
            .collect();
        let mut sim = ReplicationSim {
            rng: Rng::new(seed),
            now_ms: 0,
            brokers,
            controller: Controller {
                leader: None,
                epoch: 0,
                isr: BROKERS.iter().copied().collect(),
            },
            next_value: 0,
            in_flight: Vec::new(),
            acknowledged: BTreeMap::new(),
            consumed: BTreeMap::new(),
            high_watermarks: BTreeMap::new(),
        };
        sim.elect();
        sim
    }

    fn run(&mut self) {
        for _ in 0..STEPS {
            self.now_ms += self.rng.range(1, 20) as i64;
            match self.rng.range(0, 100) {
                0..=29 => self.produce(),
                30..=64 => {
                    let follower = BROKERS[self.rng.index(BROKERS.len())];
                    self.fetch(follower);
                }
                65..=79 => self.leader_sync(),
                80..=87 => self.isr_maintenance(),
                88..=92 => self.consume(),
                _ => self.controller_check(),
            }
            self.faults();
            self.check();
        }
    }

    fn leader_id(&self) -> Option<ReplicaId> {
        self.controller.leader
    }

    /// The controller's leader, if it is up and knows it leads.
    fn serving_leader(&self) -> Option<ReplicaId> {
        self.controller
            .leader
            .filter(|id| self.brokers[id].alive && self.brokers[id].leading.is_some())
    }

    /// The controller elects a live, connected ISR member (never unclean),
    /// bumps the epoch, and tells every broker it reaches.
    fn elect(&mut self) {
        let candidates: Vec<ReplicaId> = self
            .controller
            .isr
            .iter()
            .copied()
            .filter(|id| self.brokers[id].alive && !self.brokers[id].isolated)
            .collect();
        self.controller.epoch += 1;
        let epoch = self.controller.epoch;
        if candidates.is_empty() {
            // Offline: no eligible replica; data is not given up.
            self.controller.leader = None;
            return;
        }
        let leader = candidates[self.rng.index(candidates.len())];
        self.controller.leader = Some(leader);
        let isr = self.controller.isr.clone();
        let now_ms = self.now_ms;
        for (&id, broker) in self.brokers.iter_mut() {
            if !broker.alive || broker.isolated {
                continue;
            }
            broker.known_epoch = epoch;
            broker.leading = None;
            if id == leader {
                // A new leader's last appends as a follower may not be
                // synced yet: only what is counts for the high watermark.
                broker.leading = Some(LeaderState::new(
                    id,
                    epoch,
                    &BROKERS,
                    isr.clone(),
                    MIN_INSYNC,
                    broker.log_end(),
                    broker.durable as i64,
                    broker.high_watermark,
                    now_ms,
                ));
            }
        }
    }

    fn produce(&mut self) {
        // Any broker that believes it leads takes the write (a zombie too).
        let leaders: Vec<ReplicaId> = self
            .brokers
            .iter()
            .filter(|(_, b)| b.alive && b.leading.is_some())
            .map(|(&id, _)| id)
            .collect();
        if leaders.is_empty() {
            return;
        }
        let id = leaders[self.rng.index(leaders.len())];
        let value = self.next_value;
        self.next_value += 1;
        let broker = self.brokers.get_mut(&id).expect("broker");
        let state = broker.leading.as_mut().expect("leads");
        if !state.enough_replicas() {
            return; // NOT_ENOUGH_REPLICAS
        }
        let epoch = state.leader_epoch();
        let offset = broker.log_end();
        broker.append(Record { epoch, value });
        let end = broker.log_end();
        broker.leading.as_mut().expect("leads").on_append(end);
        self.in_flight.push((id, epoch, offset, value));
    }

    fn leader_sync(&mut self) {
        for broker in self.brokers.values_mut().filter(|b| b.alive) {
            broker.durable = broker.log.len();
            let end = broker.log_end();
            if let Some(state) = broker.leading.as_mut() {
                if let Some(hw) = state.on_durable(end) {
                    broker.high_watermark = hw;
                }
            }
        }
        self.acknowledge();
    }

    /// A follower syncs, then fetches from the leader it knows.
    fn fetch(&mut self, follower: ReplicaId) {
        let Some(leader) = self.leader_id() else {
            return;
        };
        if follower == leader {
            return;
        }
        {
            let f = &self.brokers[&follower];
            let l = &self.brokers[&leader];
            if !f.alive || !l.alive || f.leading.is_some() || f.known_epoch != self.controller.epoch
            {
                return;
            }
        }
        // What the last fetch appended is synced before this one (a crash
        // before it loses those appends).
        let f = self.brokers.get_mut(&follower).expect("f");
        f.durable = f.log.len();
        let f = &self.brokers[&follower];
        let l = &self.brokers[&leader];
        // The leader serves only fetches of its epoch.
        if l.leading.as_ref().map(LeaderState::leader_epoch) != Some(f.known_epoch) {
            return;
        }
        let fetch_offset = f.log_end();
        let last_epoch = f.last_epoch();
        match check_fetch(&l.cache, l.log_end(), fetch_offset, last_epoch) {
            FetchCheck::Diverging(end) => {
                let (log_end, hw) = (f.log_end(), f.high_watermark);
                let cut = truncation_point(&f.cache, log_end, hw, end);
                self.brokers
                    .get_mut(&follower)
                    .expect("f")
                    .truncate(cut.offset);
            }
            FetchCheck::Serve => {
                let records: Vec<Record> = l
                    .log
                    .iter()
                    .skip(fetch_offset as usize)
                    .take(FETCH_RECORDS_MAX)
                    .copied()
                    .collect();
                let now_ms = self.now_ms;
                let leader_broker = self.brokers.get_mut(&leader).expect("l");
                let state = leader_broker.leading.as_mut().expect("leads");
                let moved = state
                    .on_follower_fetch(follower, fetch_offset, now_ms)
                    .expect("a replica's fetch within the log");
                if let Some(hw) = moved {
                    leader_broker.high_watermark = hw;
                }
                let leader_hw = leader_broker.high_watermark;
                let f = self.brokers.get_mut(&follower).expect("f");
                for record in records {
                    f.append(record);
                }
                // Synced at the start of its next fetch, not yet.
                f.high_watermark = f.high_watermark.max(leader_hw.min(f.log_end()));
                self.acknowledge();
            }
        }
    }

    /// acks=all: a write is acknowledged once its leader's high watermark
    /// passes it (and the leader still believes it leads that epoch).
    fn acknowledge(&mut self) {
        let mut still = Vec::new();
        for (id, epoch, offset, value) in std::mem::take(&mut self.in_flight) {
            let b = &self.brokers[&id];
            let leads_epoch = b.leading.as_ref().map(LeaderState::leader_epoch) == Some(epoch);
            if !b.alive || !leads_epoch {
                continue; // the client gets an error (indeterminate)
            }
            if b.high_watermark > offset {
                assert_eq!(
                    b.log[offset as usize].value, value,
                    "acked what was written"
                );
                self.acknowledged.insert(offset, value);
            } else {
                still.push((id, epoch, offset, value));
            }
        }
        self.in_flight = still;
    }

    fn isr_maintenance(&mut self) {
        let now_ms = self.now_ms;
        let ids: Vec<ReplicaId> = self.brokers.keys().copied().collect();
        for id in ids {
            let broker = self.brokers.get_mut(&id).expect("b");
            if !broker.alive {
                continue;
            }
            let Some(state) = broker.leading.as_mut() else {
                continue;
            };
            let Some(change) = state.isr_change(now_ms, LAG_MAX_MS) else {
                continue;
            };
            state.isr_change_sent(&change);
            let isolated = broker.isolated;
            let committed = self.alter_partition(id, &change, isolated);
            let broker = self.brokers.get_mut(&id).expect("b");
            if let (Some(isr), Some(state)) = (committed, broker.leading.as_mut()) {
                if let Some(hw) = state.isr_committed(isr) {
                    broker.high_watermark = hw;
                }
            }
        }
        self.acknowledge();
    }

    /// The controller's AlterPartition: only the current leader's epoch may
    /// change the ISR. Returns what the leader hears back (None: nothing,
    /// it is cut off; it keeps its change pending and stays frozen).
    fn alter_partition(
        &mut self,
        from: ReplicaId,
        change: &IsrChange,
        isolated: bool,
    ) -> Option<BTreeSet<ReplicaId>> {
        if isolated {
            return None;
        }
        if self.controller.leader == Some(from) && change.leader_epoch == self.controller.epoch {
            self.controller.isr = change.isr.clone();
        }
        // A stale leader hears the current ISR and stays pending on nothing;
        // it learns of its fencing through the epoch (`controller_check`).
        if self.controller.leader == Some(from) {
            Some(self.controller.isr.clone())
        } else {
            None
        }
    }

    /// The controller notices dead or unreachable leaders (missed
    /// heartbeats), fences them out of the ISR, and elects; brokers it
    /// reaches learn the current epoch.
    fn controller_check(&mut self) {
        if let Some(leader) = self.controller.leader {
            let b = &self.brokers[&leader];
            if !b.alive || b.isolated {
                // Fenced out of the ISR, unless it is the last member: then
                // the partition waits for it (no unclean election).
                if self.controller.isr.len() > 1 {
                    self.controller.isr.remove(&leader);
                }
                self.elect();
            }
        } else {
            self.elect();
        }
        let epoch = self.controller.epoch;
        let leader = self.controller.leader;
        for (&id, broker) in self.brokers.iter_mut() {
            if broker.alive && !broker.isolated && broker.known_epoch != epoch {
                broker.known_epoch = epoch;
                if leader != Some(id) {
                    broker.leading = None;
                }
            }
        }
        // Live ISR members lost by a fencing may come back through the
        // leader's ISR expansion once they catch up.
    }

    fn consume(&mut self) {
        let Some(leader) = self.serving_leader() else {
            return;
        };
        let b = &self.brokers[&leader];
        for offset in 0..b.high_watermark {
            let value = b.log[offset as usize].value;
            self.consumed.insert(offset, value);
        }
    }

    /// Rare crashes and cuts, quicker recoveries.
    fn faults(&mut self) {
        let id = BROKERS[self.rng.index(BROKERS.len())];
        let (alive, isolated) = (self.brokers[&id].alive, self.brokers[&id].isolated);
        if (alive && self.rng.chance(1, 150)) || (!alive && self.rng.chance(1, 15)) {
            self.crash_or_restart(id);
        }
        if (!isolated && self.rng.chance(1, 250)) || (isolated && self.rng.chance(1, 25)) {
            self.isolate_or_heal(id);
        }
    }

    fn crash_or_restart(&mut self, id: ReplicaId) {
        let broker = self.brokers.get_mut(&id).expect("b");
        if broker.alive {
            // kill -9: what was not synced is gone; the high watermark comes
            // back from its last checkpoint, here at most the durable end.
            broker.alive = false;
            broker.leading = None;
            let durable = broker.durable as i64;
            broker.truncate(durable);
        } else {
            broker.alive = true;
            broker.known_epoch = 0; // learns it from the controller
        }
    }

    fn isolate_or_heal(&mut self, id: ReplicaId) {
        let broker = self.brokers.get_mut(&id).expect("b");
        broker.isolated = !broker.isolated;
    }

    fn check(&mut self) {
        let Some(leader) = self.serving_leader() else {
            return;
        };
        let l = &self.brokers[&leader];
        for (what, records) in [
            ("acknowledged", &self.acknowledged),
            ("consumed", &self.consumed),
        ] {
            for (&offset, &value) in records {
                let held = l.log.get(offset as usize).map(|r| r.value);
                assert_eq!(
                    held,
                    Some(value),
                    "{what} record at offset {offset} is not on leader {leader} (epoch {})",
                    self.controller.epoch
                );
            }
        }
        let state = l.leading.as_ref().expect("leads");
        let hw = state.high_watermark();
        let last = self
            .high_watermarks
            .entry(state.leader_epoch())
            .or_insert(hw);
        assert!(
            hw >= *last,
            "high watermark moved back in epoch {}",
            state.leader_epoch()
        );
        *last = hw;
        for (&a, x) in &self.brokers {
            for (&b, y) in &self.brokers {
                if a >= b || !x.alive || !y.alive {
                    continue;
                }
                let below = x.high_watermark.min(y.high_watermark) as usize;
                assert_eq!(
                    &x.log[..below],
                    &y.log[..below],
                    "brokers {a} and {b} differ below their high watermarks"
                );
            }
        }
    }
}

#[test]
fn replication_keeps_acknowledged_and_consumed_records() {
    run_seeds(
        "replication_keeps_acknowledged_and_consumed_records",
        0x4953_5200,
        |seed| {
            let mut sim = ReplicationSim::new(seed);
            sim.run();
            assert!(
            !sim.acknowledged.is_empty() || sim.next_value < 10,
            "seed {seed}: nothing was ever acknowledged: {} produced, epoch {}, leader {:?}, ISR {:?}",
            sim.next_value,
            sim.controller.epoch,
            sim.controller.leader,
            sim.controller.isr
        );
        },
    );
}
