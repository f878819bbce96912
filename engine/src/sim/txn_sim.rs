//! The transaction coordinator (`txn::coordinator`) under random requests
//! from several producer instances sharing two transactional ids (v1 and v2
//! clients, stale and delayed requests), with writes that complete, fail or
//! are lost in a crash (the coordinator is rebuilt from the durable records
//! and resumes the prepared transactions' markers), markers completing late,
//! and timeouts. After every step it checks:
//! - the durable records of each id follow Kafka's transition table;
//! - a transaction's outcome is decided once: never both PrepareCommit and
//!   PrepareAbort between its start and its completion;
//! - an EndTxn answered NONE for commit (abort) means the durable log holds
//!   that transaction's PrepareCommit (PrepareAbort);
//! - a fenced epoch never gets a partition added once a newer epoch of the
//!   same producer id was handed out;
//!
//! and at the end, with faults stopped, that every transaction completes.

use std::collections::{BTreeMap, HashMap};

use super::{run_seeds, Rng};
use crate::protocol::ErrorCode;
use crate::txn::coordinator::{
    AfterWrite, Decision, ProducerIdEpoch, TxnCoordinator, TxnMarkers, TxnRecord, TxnState,
    TxnVersion, TxnWrite,
};

const STEPS: usize = 400;
const INSTANCES: usize = 3;
const IDS: [&str; 2] = ["a", "b"];
const TIMEOUT_MS: i32 = 150;
const MAX_TIMEOUT_MS: i32 = 1_000;

struct Instance {
    id: &'static str,
    version: TxnVersion,
    producer: Option<ProducerIdEpoch>,
    /// Requests sent earlier, replayed late (a delayed EndTxn).
    old_producers: Vec<ProducerIdEpoch>,
}

/// Who waits for a write's answer.
enum Waiter {
    Init(usize),
    End { instance: usize, commit: bool },
    Nobody,
}

struct TxnSim {
    rng: Rng,
    now_ms: i64,
    coordinator: TxnCoordinator,
    durable: Vec<(String, Option<TxnRecord>)>,
    in_flight: Vec<(TxnWrite, Waiter)>,
    markers: Vec<TxnMarkers>,
    instances: Vec<Instance>,
    next_producer_id: i64,
    /// Per (id, start_ms): the outcomes prepared in the durable log.
    prepared: BTreeMap<(String, i64), Vec<bool>>,
    /// Per producer id, the highest epoch handed out by a durable record.
    newest_epoch: HashMap<i64, i16>,
    /// Which instance each (producer id, epoch) was handed to: never two.
    holders: HashMap<(i64, i16), usize>,
}

impl TxnSim {
    fn new(seed: u64) -> TxnSim {
        let mut rng = Rng::new(seed);
        let instances = (0..INSTANCES)
            .map(|i| Instance {
                id: IDS[i % IDS.len()],
                version: if rng.chance(1, 2) {
                    TxnVersion::V1
                } else {
                    TxnVersion::V2
                },
                producer: None,
                old_producers: Vec::new(),
            })
            .collect();
        // Id "b" starts a few bumps from the last epoch, so producer ids
        // change (InitProducerId, v2 EndTxn) within a run.
        let near_overflow = TxnRecord {
            producer_id: 50,
            previous_producer_id: -1,
            next_producer_id: -1,
            producer_epoch: i16::MAX - 1 - rng.range(0, 8) as i16,
            timeout_ms: TIMEOUT_MS,
            state: TxnState::Empty,
            partitions: Default::default(),
            last_update_ms: 0,
            start_ms: -1,
            version: TxnVersion::V1,
        };
        let durable = vec![(IDS[1].to_string(), Some(near_overflow))];
        let (coordinator, _) = TxnCoordinator::load(MAX_TIMEOUT_MS, durable.clone());
        TxnSim {
            rng,
            now_ms: 0,
            coordinator,
            durable,
            in_flight: Vec::new(),
            markers: Vec::new(),
            instances,
            next_producer_id: 100,
            prepared: BTreeMap::new(),
            newest_epoch: HashMap::new(),
            holders: HashMap::new(),
        }
    }

    fn new_id(next: &mut i64) -> impl FnMut() -> Result<i64, ErrorCode> + '_ {
        move || {
            *next += 1;
            Ok(*next)
        }
    }

    fn step(&mut self, faults: bool) {
        self.now_ms += 1;
        let choice = if faults {
            self.rng.range(0, 14)
        } else {
            // Quiesce: only completions of writes and markers.
            if self.rng.chance(1, 2) {
                3
            } else {
                8
            }
        };
        match choice {
            0 => self.init(),
            1 | 2 => self.add(),
            3..=5 => self.complete_write(),
            6 | 7 => self.end(),
            8 | 9 => self.complete_markers(),
            10 => self.fail_write(),
            11 => {
                let writes = self.coordinator.abort_expired(self.now_ms);
                self.in_flight
                    .extend(writes.into_iter().map(|w| (w, Waiter::Nobody)));
            }
            12 if self.rng.chance(1, 4) => self.crash(),
            _ => self.delayed_end(),
        }
    }

    fn init(&mut self) {
        let i = self.rng.index(self.instances.len());
        let expected = if self.rng.chance(1, 2) {
            self.instances[i].producer
        } else {
            None
        };
        let id = self.instances[i].id;
        let decision = self.coordinator.init_producer_id(
            id,
            TIMEOUT_MS,
            expected,
            self.now_ms,
            &mut Self::new_id(&mut self.next_producer_id),
        );
        match decision {
            Decision::Answer(Ok(p)) => self.handed_out(i, p),
            Decision::Answer(Err(_)) => {}
            Decision::Write(w) => {
                let waiter = if matches!(w.then, AfterWrite::InitProducerId) {
                    Waiter::Init(i)
                } else {
                    Waiter::Nobody
                };
                self.in_flight.push((w, waiter));
            }
        }
    }

    fn handed_out(&mut self, i: usize, p: ProducerIdEpoch) {
        let holder = *self
            .holders
            .entry((p.producer_id, p.producer_epoch))
            .or_insert(i);
        assert_eq!(holder, i, "{p:?} handed to instances {holder} and {i}");
        let instance = &mut self.instances[i];
        if let Some(old) = instance.producer.replace(p) {
            instance.old_producers.push(old);
        }
    }

    fn add(&mut self) {
        let i = self.rng.index(self.instances.len());
        let Some(p) = self.instances[i].producer else {
            return;
        };
        let partition = ("t".to_string(), self.rng.range(0, 3) as i32);
        let verify_only = self.rng.chance(1, 5);
        let decision = self.coordinator.add_partitions(
            self.instances[i].id,
            p,
            &[partition],
            verify_only,
            self.now_ms,
        );
        let accepted = match &decision {
            Decision::Answer(Ok(())) => true,
            Decision::Answer(Err(_)) => false,
            Decision::Write(_) => true,
        };
        if accepted {
            let newest = self.newest_epoch.get(&p.producer_id).copied().unwrap_or(-1);
            assert!(
                p.producer_epoch >= newest,
                "fenced epoch {p:?} added a partition after epoch {newest} was handed out"
            );
        }
        if let Decision::Write(w) = decision {
            self.in_flight.push((w, Waiter::Nobody));
        }
    }

    fn end(&mut self) {
        let i = self.rng.index(self.instances.len());
        if let Some(p) = self.instances[i].producer {
            self.send_end(i, p);
        }
    }

    fn delayed_end(&mut self) {
        let i = self.rng.index(self.instances.len());
        let olds = &self.instances[i].old_producers;
        if olds.is_empty() {
            return;
        }
        let p = olds[self.rng.index(olds.len())];
        self.send_end(i, p);
    }

    fn send_end(&mut self, i: usize, p: ProducerIdEpoch) {
        let commit = self.rng.chance(1, 2);
        let (id, version) = (self.instances[i].id, self.instances[i].version);
        let decision = self.coordinator.end_txn(
            id,
            p,
            commit,
            version,
            self.now_ms,
            &mut Self::new_id(&mut self.next_producer_id),
        );
        match decision {
            Decision::Answer(Ok(next)) => {
                // A retry of an ended transaction: its outcome is durable.
                self.check_outcome_durable(id, commit);
                if version == TxnVersion::V2 && Some(p) == self.instances[i].producer {
                    self.handed_out(i, next);
                }
            }
            Decision::Answer(Err(_)) => {}
            Decision::Write(w) => self.in_flight.push((
                w,
                Waiter::End {
                    instance: i,
                    commit,
                },
            )),
        }
    }

    /// The id's latest decided transaction ended with `commit`.
    fn check_outcome_durable(&self, id: &str, commit: bool) {
        let record = self
            .coordinator
            .record(id)
            .expect("an ended transaction has a record");
        let decided = match record.state {
            TxnState::PrepareCommit | TxnState::CompleteCommit => true,
            TxnState::PrepareAbort | TxnState::CompleteAbort => false,
            other => panic!("EndTxn answered NONE in state {other:?}"),
        };
        assert_eq!(
            decided, commit,
            "EndTxn answered NONE for the other outcome"
        );
    }

    /// A write in flight, picked at random (completions come in any order).
    fn take_write(&mut self) -> Option<(TxnWrite, Waiter)> {
        if self.in_flight.is_empty() {
            return None;
        }
        let index = self.rng.index(self.in_flight.len());
        Some(self.in_flight.swap_remove(index))
    }

    fn complete_write(&mut self) {
        let Some((write, waiter)) = self.take_write() else {
            return;
        };
        if !self.coordinator.written(&write) {
            return;
        }
        self.append_durable(&write);
        match (&write.then, waiter) {
            (AfterWrite::InitProducerId, Waiter::Init(i)) => {
                let r = write
                    .record
                    .as_ref()
                    .expect("InitProducerId writes a record");
                self.handed_out(
                    i,
                    ProducerIdEpoch {
                        producer_id: r.producer_id,
                        producer_epoch: r.producer_epoch,
                    },
                );
            }
            (AfterWrite::Ended(markers), Waiter::End { instance, commit }) => {
                self.check_outcome_durable(&write.transactional_id, commit);
                let r = write.record.as_ref().expect("EndTxn writes a record");
                if self.instances[instance].version == TxnVersion::V2 {
                    self.handed_out(instance, r.producer_for_next_transaction());
                }
                self.markers.push(markers.clone());
            }
            (AfterWrite::Fenced(m) | AfterWrite::TimedOut(m), _) => self.markers.push(m.clone()),
            _ => {}
        }
    }

    fn append_durable(&mut self, write: &TxnWrite) {
        let id = &write.transactional_id;
        let previous = self
            .durable
            .iter()
            .rev()
            .find(|(i, _)| i == id)
            .and_then(|(_, r)| r.as_ref().map(|r| r.state));
        if let Some(record) = &write.record {
            match previous {
                Some(previous) => assert!(
                    record.state.may_follow(previous),
                    "{:?} after {previous:?} for {id}",
                    record.state
                ),
                None => assert_eq!(record.state, TxnState::Empty, "first record of {id}"),
            }
            let newest = self.newest_epoch.entry(record.producer_id).or_insert(-1);
            *newest = (*newest).max(record.producer_epoch);
            if matches!(
                record.state,
                TxnState::PrepareCommit | TxnState::PrepareAbort
            ) {
                let outcomes = self
                    .prepared
                    .entry((id.clone(), record.start_ms))
                    .or_default();
                outcomes.push(record.state == TxnState::PrepareCommit);
                assert!(
                    outcomes.iter().all(|o| *o == outcomes[0]),
                    "transaction {id} started at {} prepared both ways",
                    record.start_ms
                );
            }
        }
        self.durable.push((id.clone(), write.record.clone()));
    }

    fn fail_write(&mut self) {
        let Some((write, _)) = self.take_write() else {
            return;
        };
        if let Some(markers) = self.coordinator.write_failed(&write) {
            self.markers.push(markers);
        }
    }

    fn complete_markers(&mut self) {
        if self.markers.is_empty() {
            return;
        }
        let markers = self.markers.swap_remove(self.rng.index(self.markers.len()));
        if let Some(write) = self.coordinator.markers_written(&markers, self.now_ms) {
            self.in_flight.push((write, Waiter::Nobody));
        } else if self
            .coordinator
            .record(&markers.transactional_id)
            .is_some_and(|r| {
                matches!(r.state, TxnState::PrepareCommit | TxnState::PrepareAbort)
                    && r.producer_id == markers.producer_id
                    && r.producer_epoch == markers.producer_epoch
            })
        {
            // Its id has a write in flight (a completion already on its way
            // or a request refused meanwhile): try these markers again later.
            self.markers.push(markers);
        }
    }

    fn crash(&mut self) {
        self.in_flight.clear();
        self.markers.clear();
        let (coordinator, resume) = TxnCoordinator::load(MAX_TIMEOUT_MS, self.durable.clone());
        self.coordinator = coordinator;
        self.markers = resume;
    }

    fn all_complete(&self) -> bool {
        IDS.iter().all(|id| {
            self.coordinator.record(id).is_none_or(|r| {
                !matches!(r.state, TxnState::PrepareCommit | TxnState::PrepareAbort)
            })
        })
    }
}

#[test]
fn transactions_are_decided_once_and_complete_despite_crashes() {
    run_seeds("transactions_are_decided_once", 0x7_8000, |seed| {
        let mut sim = TxnSim::new(seed);
        for _ in 0..STEPS {
            sim.step(true);
        }
        for _ in 0..STEPS * 4 {
            if sim.all_complete() && sim.in_flight.is_empty() {
                break;
            }
            sim.step(false);
        }
        assert!(
            sim.all_complete(),
            "a prepared transaction never completed: {:?}",
            IDS.map(|id| sim.coordinator.record(id).map(|r| r.state))
        );
    });
}
