//! The group coordinator driven the way a shard drives it (`shards/src/
//! groups.rs`): parked JoinGroup/SyncGroup answered through `Effects`, group
//! records appended in the background, and offset commits checked, appended,
//! and acknowledged (then applied) only once a sync made them durable. A crash
//! keeps the synced records plus a random prefix of the rest; a fresh
//! coordinator is rebuilt by applying what survived, through the record
//! codec, as `load_groups` does. The model is every acknowledged commit not
//! deleted or expired since, and every commit ever appended. Checked after
//! every step: the coordinator's invariants, and that an offset a deletion
//! removed never comes back, live or reloaded, while the deletion's tombstone
//! is in the log.

use std::collections::BTreeMap;

use bytes::Bytes;

use super::{run_seeds, Rng};
use crate::group::{
    CommitId, Completion, Coordinator, Effects, Group, GroupConfig, GroupLogRecord, JoinRequest,
    OffsetAndMetadata, Protocol, RequestToken, SyncRequest,
};
use crate::protocol as codes;

/// Operations per seed.
const STEPS: usize = 800;
const GROUPS: usize = 3;
const CLIENTS: usize = 3;
const TOPICS: [&str; 2] = ["t0", "t1"];
const PARTITIONS: i32 = 2;

type Key = (String, String, i32);

/// The (group, topic, partition) of every offset tombstone among `records`.
fn offset_tombstones(records: &[GroupLogRecord]) -> impl Iterator<Item = Key> + '_ {
    records.iter().filter_map(|record| match record {
        GroupLogRecord::Offset {
            group_id,
            topic,
            partition,
            value: None,
        } => Some((group_id.clone(), topic.clone(), *partition)),
        _ => None,
    })
}

#[derive(Default)]
struct Client {
    member_id: String,
    instance: Option<String>,
    generation_id: i32,
    /// The members to assign, when the last join made this client leader.
    leader_of: Option<Vec<String>>,
    join_token: Option<RequestToken>,
    sync_token: Option<RequestToken>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Parked {
    Join,
    Sync,
}

struct GroupSim {
    rng: Rng,
    config: GroupConfig,
    coordinator: Coordinator,
    clients: Vec<Vec<Client>>,
    /// Requests sent and not yet answered: token → (group, client, kind).
    outstanding: BTreeMap<RequestToken, (usize, usize, Parked)>,
    next_token: RequestToken,
    next_id: u64,
    /// The `__consumer_offsets` records as the shard appended them, encoded.
    log: Vec<(Bytes, Option<Bytes>)>,
    /// How many of `log` are durable.
    synced: usize,
    /// Commits appended but not yet acknowledged: their records, each with
    /// whether a tombstone for its partition was appended after it.
    in_flight: Vec<(CommitId, Vec<(GroupLogRecord, bool)>)>,
    /// Acknowledged commits, less those deleted or expired since.
    acked: BTreeMap<Key, OffsetAndMetadata>,
    /// Every commit ever appended, by its (unique) offset.
    appended: BTreeMap<i64, (Key, OffsetAndMetadata)>,
    /// Commits, by offset, appended before a tombstone of their partition:
    /// the index in `log` of the first such tombstone.
    buried: BTreeMap<i64, usize>,
    next_offset: i64,
    now_ms: i64,
    crashes: usize,
    acked_commits: usize,
    joined: usize,
    trace: bool,
}

impl GroupSim {
    fn new(seed: u64) -> GroupSim {
        let mut rng = Rng::new(seed);
        let config = GroupConfig {
            initial_rebalance_delay_ms: rng.range_i64(0, 3_000),
            session_timeout_ms_min: 1_000,
            session_timeout_ms_max: 60_000,
            offsets_retention_ms: rng.range_i64(5_000, 120_000),
            group_members_max: rng.range(2, 5) as usize,
        };
        let statics = rng.chance(1, 2);
        let clients = (0..GROUPS)
            .map(|g| {
                (0..CLIENTS)
                    .map(|c| Client {
                        instance: (statics && c == CLIENTS - 1).then(|| format!("g{g}-static")),
                        ..Client::default()
                    })
                    .collect()
            })
            .collect();
        GroupSim {
            rng,
            config,
            coordinator: Coordinator::new(config),
            clients,
            outstanding: BTreeMap::new(),
            next_token: 1,
            next_id: 0,
            log: Vec::new(),
            synced: 0,
            in_flight: Vec::new(),
            acked: BTreeMap::new(),
            appended: BTreeMap::new(),
            buried: BTreeMap::new(),
            next_offset: 0,
            now_ms: 1_000_000,
            crashes: 0,
            acked_commits: 0,
            joined: 0,
            trace: std::env::var_os("SIM_TRACE").is_some(),
        }
    }

    fn run(&mut self) {
        for step in 0..STEPS {
            self.now_ms += self.rng.range_i64(0, 400);
            let g = self.rng.index(GROUPS);
            let c = self.rng.index(CLIENTS);
            let op = self.rng.range(0, 100);
            if self.trace {
                eprintln!("step {step} t={} op {op} g{g} c{c}", self.now_ms);
            }
            match op {
                0..=19 => self.join(g, c),
                20..=29 => self.sync_group(g, c),
                30..=39 => self.heartbeat(g, c),
                40..=43 => self.leave(g, c),
                44..=61 => self.commit(g, c),
                62..=71 => self.flush(),
                72..=81 => self.tick(),
                82..=84 => self.delete_group(g),
                85..=87 => self.delete_offsets(g),
                88..=96 => self.fetch(g),
                _ => self.crash_and_reload(),
            }
            self.check_live(step);
        }
        if self.trace {
            eprintln!(
                "acknowledged commits {}, successful joins {}, crashes {}",
                self.acked_commits, self.joined, self.crashes
            );
        }
        // Every parked request is answered once timers run out.
        for _ in 0..20 {
            if self.outstanding.is_empty() {
                break;
            }
            self.now_ms += 70_000;
            let effects = self.coordinator.tick(self.now_ms);
            self.handle(effects);
        }
        assert!(
            self.outstanding.is_empty(),
            "requests never answered: {:?}",
            self.outstanding
        );
        self.flush();
        self.crash_and_reload();
    }

    fn token(&mut self, g: usize, c: usize, kind: Parked) -> RequestToken {
        let token = self.next_token;
        self.next_token += 1;
        self.outstanding.insert(token, (g, c, kind));
        token
    }

    fn group_id(g: usize) -> String {
        format!("g{g}")
    }

    fn join(&mut self, g: usize, c: usize) {
        let token = self.token(g, c, Parked::Join);
        let client = &mut self.clients[g][c];
        client.join_token = Some(token);
        let subscription: &[u8] = if c == 0 { b"t0" } else { b"t0,t1" };
        let mut protocols = vec![Protocol {
            name: "range".into(),
            metadata: Bytes::from_static(subscription),
        }];
        if self.rng.chance(1, 3) {
            protocols.insert(
                0,
                Protocol {
                    name: "roundrobin".into(),
                    metadata: Bytes::from_static(subscription),
                },
            );
        }
        let request = JoinRequest {
            group_id: Self::group_id(g),
            member_id: client.member_id.clone(),
            group_instance_id: client.instance.clone(),
            client_id: format!("c{c}"),
            client_host: "/sim".into(),
            session_timeout_ms: self.rng.range_i64(2_000, 20_000) as i32,
            rebalance_timeout_ms: self.rng.range_i64(1_000, 30_000) as i32,
            protocol_type: "consumer".into(),
            protocols,
            requires_known_member_id: self.rng.chance(1, 2),
        };
        self.next_id += 1;
        let fresh = format!("g{g}-c{c}-{}", self.next_id);
        let effects = self.coordinator.join(token, request, fresh, self.now_ms);
        self.handle(effects);
    }

    fn sync_group(&mut self, g: usize, c: usize) {
        let client = &self.clients[g][c];
        if client.member_id.is_empty() {
            return;
        }
        let assignments = client
            .leader_of
            .iter()
            .flatten()
            .map(|id| (id.clone(), Bytes::from(format!("assigned {id}"))))
            .collect();
        let request = SyncRequest {
            group_id: Self::group_id(g),
            generation_id: client.generation_id,
            member_id: client.member_id.clone(),
            group_instance_id: client.instance.clone(),
            protocol_type: None,
            protocol_name: None,
            assignments,
        };
        let token = self.token(g, c, Parked::Sync);
        self.clients[g][c].sync_token = Some(token);
        let effects = self.coordinator.sync(token, request, self.now_ms);
        self.handle(effects);
    }

    fn heartbeat(&mut self, g: usize, c: usize) {
        let client = &self.clients[g][c];
        if client.member_id.is_empty() {
            return;
        }
        let error = self.coordinator.heartbeat(
            &Self::group_id(g),
            client.generation_id,
            &client.member_id.clone(),
            client.instance.clone().as_deref(),
            self.now_ms,
        );
        if error == codes::UNKNOWN_MEMBER_ID {
            self.clients[g][c].member_id.clear();
        }
    }

    fn leave(&mut self, g: usize, c: usize) {
        let client = &self.clients[g][c];
        let leaving = vec![(client.member_id.clone(), client.instance.clone())];
        let (errors, effects) = self
            .coordinator
            .leave(&Self::group_id(g), &leaving, self.now_ms);
        assert_eq!(errors.len(), 1);
        if errors[0] == codes::NONE {
            self.clients[g][c].member_id.clear();
        }
        self.handle(effects);
    }

    /// OffsetCommit as `run_group_op`: check, append, and (at the next
    /// flush) acknowledge and apply.
    fn commit(&mut self, g: usize, c: usize) {
        let group_id = Self::group_id(g);
        let client = &self.clients[g][c];
        let (generation_id, member_id, instance) = if self.rng.chance(1, 4) {
            (-1, String::new(), None)
        } else {
            (
                client.generation_id,
                client.member_id.clone(),
                client.instance.clone(),
            )
        };
        let check = self.coordinator.check_commit(
            &group_id,
            generation_id,
            &member_id,
            instance.as_deref(),
        );
        if check != codes::NONE {
            return;
        }
        let count = self.rng.range(1, 4);
        let mut records = Vec::new();
        for _ in 0..count {
            let topic = TOPICS[self.rng.index(TOPICS.len())].to_string();
            let partition = self.rng.range_i64(0, PARTITIONS as i64 - 1) as i32;
            self.next_offset += 1;
            let value = OffsetAndMetadata {
                offset: self.next_offset,
                leader_epoch: -1,
                metadata: format!("m{}", self.next_offset),
                commit_timestamp_ms: self.now_ms,
            };
            let key = (group_id.clone(), topic.clone(), partition);
            self.appended.insert(value.offset, (key, value.clone()));
            records.push(GroupLogRecord::Offset {
                group_id: group_id.clone(),
                topic,
                partition,
                value: Some(value),
            });
        }
        self.append(&records);
        let id = self.coordinator.begin_commit();
        self.in_flight
            .push((id, records.into_iter().map(|r| (r, false)).collect()));
    }

    fn append(&mut self, records: &[GroupLogRecord]) {
        for record in records {
            if self.trace {
                eprintln!("  append #{}: {record:?}", self.log.len());
            }
            self.log.push(record.encode());
        }
    }

    /// The group commit: everything appended is durable, and the commits
    /// waiting on it are acknowledged and applied, in order.
    fn flush(&mut self) {
        self.synced = self.log.len();
        if self.trace {
            eprintln!(
                "  flush: {} synced, {} commits acknowledged",
                self.synced,
                self.in_flight.len()
            );
        }
        for (id, records) in std::mem::take(&mut self.in_flight) {
            let plain: Vec<GroupLogRecord> = records.iter().map(|(r, _)| r.clone()).collect();
            self.coordinator.finish_commit(id, &plain, self.now_ms);
            for (record, superseded) in &records {
                if *superseded {
                    // Deleted after it was appended: a reload would not
                    // have it, so neither may memory.
                    continue;
                }
                self.acked_commits += 1;
                let GroupLogRecord::Offset {
                    group_id,
                    topic,
                    partition,
                    value: Some(value),
                } = record
                else {
                    unreachable!("commits are offset records");
                };
                self.acked
                    .insert((group_id.clone(), topic.clone(), *partition), value.clone());
            }
        }
    }

    fn tick(&mut self) {
        self.now_ms += match self.rng.range(0, 10) {
            0..=5 => self.rng.range_i64(0, 3_000),
            6..=8 => self.rng.range_i64(0, 25_000),
            _ => self.rng.range_i64(0, 2 * self.config.offsets_retention_ms),
        };
        let effects = self.coordinator.tick(self.now_ms);
        for key in offset_tombstones(&effects.persist) {
            if let Some(acked) = self.acked.get(&key) {
                assert!(
                    acked.commit_timestamp_ms + self.config.offsets_retention_ms <= self.now_ms,
                    "{key:?} expired before its retention: {acked:?} at {}",
                    self.now_ms
                );
            }
        }
        self.handle(effects);
    }

    fn delete_group(&mut self, g: usize) {
        let (_, effects) = self.coordinator.delete_group(&Self::group_id(g));
        self.handle(effects);
    }

    fn delete_offsets(&mut self, g: usize) {
        let topic = TOPICS[self.rng.index(TOPICS.len())].to_string();
        let partition = self.rng.range_i64(0, PARTITIONS as i64 - 1) as i32;
        let subscribed = |group: &Group, topic: &str| {
            group
                .member_metadata()
                .iter()
                .any(|m| m.split(|&b| b == b',').any(|t| t == topic.as_bytes()))
        };
        let (_, _, effects) =
            self.coordinator
                .delete_offsets(&Self::group_id(g), &[(topic, partition)], subscribed);
        self.handle(effects);
    }

    fn fetch(&mut self, g: usize) {
        let group_id = Self::group_id(g);
        let list: Vec<(String, Vec<i32>)> = TOPICS
            .iter()
            .map(|t| (t.to_string(), (0..PARTITIONS + 1).collect()))
            .collect();
        for (topic, partition, found) in self.coordinator.fetch_offsets(&group_id, Some(&list)) {
            let key = (group_id.clone(), topic, partition);
            assert_eq!(found.as_ref(), self.acked.get(&key), "fetch of {key:?}");
        }
    }

    /// Answers parked requests (each exactly once), models deletions, and
    /// appends the records in the background (not durable until a flush).
    fn handle(&mut self, effects: Effects) {
        for (token, completion) in effects.completions {
            let (g, c, kind) = self
                .outstanding
                .remove(&token)
                .unwrap_or_else(|| panic!("token {token} answered twice or never sent"));
            let client = &mut self.clients[g][c];
            match completion {
                Completion::Join(result) => {
                    assert_eq!(kind, Parked::Join, "token {token}");
                    let current = client.join_token == Some(token);
                    if current {
                        client.join_token = None;
                    }
                    if result.error == codes::NONE {
                        self.joined += 1;
                        client.member_id = result.member_id.clone();
                        client.generation_id = result.generation_id;
                        client.leader_of = (result.leader == result.member_id)
                            .then(|| result.members.iter().map(|m| m.member_id.clone()).collect());
                    } else if result.error == codes::MEMBER_ID_REQUIRED {
                        client.member_id = result.member_id.clone();
                    } else if current
                        && (result.error == codes::UNKNOWN_MEMBER_ID
                            || result.error == codes::FENCED_INSTANCE_ID)
                    {
                        client.member_id.clear();
                    }
                }
                Completion::Sync(_) => {
                    assert_eq!(kind, Parked::Sync, "token {token}");
                    if client.sync_token == Some(token) {
                        client.sync_token = None;
                    }
                }
            }
        }
        for key in offset_tombstones(&effects.persist) {
            self.acked.remove(&key);
            for (_, records) in &mut self.in_flight {
                for (record, superseded) in records.iter_mut() {
                    if let GroupLogRecord::Offset {
                        group_id,
                        topic,
                        partition,
                        ..
                    } = record
                    {
                        if (&*group_id, &*topic, *partition) == (&key.0, &key.1, key.2) {
                            *superseded = true;
                        }
                    }
                }
            }
        }
        self.bury(&effects.persist);
        self.append(&effects.persist);
    }

    /// Before `records` are appended: the commits each of their offset
    /// tombstones deletes for as long as it stays in the log.
    fn bury(&mut self, records: &[GroupLogRecord]) {
        for (index, record) in records.iter().enumerate() {
            let Some(key) = offset_tombstones(std::slice::from_ref(record)).next() else {
                continue;
            };
            for (offset, (committed_key, _)) in &self.appended {
                if *committed_key == key {
                    self.buried.entry(*offset).or_insert(self.log.len() + index);
                }
            }
        }
    }

    /// No offset a deletion removed is back: neither in memory nor reloaded.
    fn check_buried(&self, group_id: &str, offsets: &[(String, i32, Option<OffsetAndMetadata>)]) {
        for (topic, partition, found) in offsets {
            let value = found.as_ref().expect("listed offsets exist");
            if let Some(tombstone) = self.buried.get(&value.offset) {
                panic!(
                    "{group_id}/{topic}/{partition} = {value:?} is back, though log record \
                     #{tombstone} deleted it"
                );
            }
        }
    }

    /// The live coordinator holds exactly the acknowledged, undeleted
    /// commits.
    fn check_live(&self, step: usize) {
        self.coordinator.check_invariants();
        for g in 0..GROUPS {
            let group_id = Self::group_id(g);
            let offsets = self.coordinator.fetch_offsets(&group_id, None);
            self.check_buried(&group_id, &offsets);
            let live: BTreeMap<Key, OffsetAndMetadata> = offsets
                .into_iter()
                .map(|(t, p, o)| ((group_id.clone(), t, p), o.expect("listed offsets exist")))
                .collect();
            let model: BTreeMap<Key, OffsetAndMetadata> = self
                .acked
                .iter()
                .filter(|(k, _)| k.0 == group_id)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            assert_eq!(live, model, "step {step}: live offsets of {group_id}");
        }
    }

    /// Loses the unsynced tail but a random prefix of it, drops every
    /// connection (parked requests and in-flight commits go unanswered), and
    /// loads a fresh coordinator from what survived.
    fn crash_and_reload(&mut self) {
        self.crashes += 1;
        let kept = self.synced + self.rng.index(self.log.len() - self.synced + 1);
        self.log.truncate(kept);
        self.synced = kept;
        // Tombstones lost with the tail delete nothing.
        self.buried.retain(|_, tombstone| *tombstone < kept);
        self.in_flight.clear();
        self.outstanding.clear();
        for client in self.clients.iter_mut().flatten() {
            client.join_token = None;
            client.sync_token = None;
        }
        let mut coordinator = Coordinator::new(self.config);
        for (key, value) in &self.log {
            let record = GroupLogRecord::decode(key, value.as_deref())
                .expect("the coordinator's own records decode");
            coordinator.apply(&record, self.now_ms);
        }
        coordinator.check_invariants();
        self.coordinator = coordinator;
        if self.trace {
            eprintln!("crash {}: kept {kept} records", self.crashes);
        }
        let mut reloaded = BTreeMap::new();
        for g in 0..GROUPS {
            let group_id = Self::group_id(g);
            let offsets = self.coordinator.fetch_offsets(&group_id, None);
            self.check_buried(&group_id, &offsets);
            for (topic, partition, found) in offsets {
                let value = found.expect("listed offsets exist");
                let key = (group_id.clone(), topic, partition);
                let (committed_key, committed) = self
                    .appended
                    .get(&value.offset)
                    .unwrap_or_else(|| panic!("{key:?} reloaded {value:?}, never committed"));
                assert_eq!(
                    (committed_key, committed),
                    (&key, &value),
                    "reloaded offset differs from its commit"
                );
                reloaded.insert(key, value);
            }
        }
        for (key, acked) in &self.acked {
            // A later commit, appended but not yet acknowledged, may have
            // survived the crash and overwritten it.
            match reloaded.get(key) {
                Some(value) if value.offset >= acked.offset => {}
                other => panic!(
                    "acknowledged commit {key:?} = {acked:?} reloaded as {other:?} \
                     after crash {}",
                    self.crashes
                ),
            }
        }
        self.acked = reloaded;
    }
}

#[test]
fn group_offsets_survive_crashes() {
    run_seeds("group_offsets_survive_crashes", 0x6_7000, |seed| {
        let mut sim = GroupSim::new(seed);
        sim.run();
    });
}
