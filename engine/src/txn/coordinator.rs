//! The transaction coordinator's decisions, as Kafka makes them (KIP-98,
//! KIP-360's epoch bumps, KIP-890's transactions v2), for the transactional
//! ids of one `__transaction_state` partition. Pure: no I/O and no clock.
//!
//! Every change of an id's state is a record in `__transaction_state`. A
//! request either gets its answer at once (nothing to write) or yields a
//! [`TxnWrite`]: the caller appends its record, and once it is durable
//! (fsynced, and replicated in a cluster) calls [`TxnCoordinator::written`],
//! which makes it the id's state and says what to answer and what to do
//! next (write commit or abort markers to the transaction's partitions). At
//! most one write per id is in flight: a request that arrives meanwhile gets
//! CONCURRENT_TRANSACTIONS and the client retries, as with Kafka.
//!
//! States and their transitions (Kafka's):
//! - Empty: no transaction open. InitProducerId bumps the epoch here.
//! - Ongoing: partitions were added; EndTxn moves it to a Prepare state.
//! - PrepareCommit / PrepareAbort: the outcome is decided and durable; the
//!   markers are being written. Only the markers' completion moves on.
//! - CompleteCommit / CompleteAbort: markers written; the next transaction
//!   may start.
//! - Dead: the id expired (a tombstone follows).
//! - PrepareEpochFence: Kafka's in-memory step of fencing an ongoing
//!   transaction; here the fence is written directly as PrepareAbort with
//!   the bumped epoch, so this state is only ever read from a log.
//!
//! Fencing: InitProducerId while a transaction is open bumps the epoch and
//! aborts it, so the old producer's requests get PRODUCER_FENCED and its
//! batches INVALID_PRODUCER_EPOCH at the partitions (the abort markers carry
//! the new epoch). A transaction open longer than its timeout is aborted
//! the same way by [`TxnCoordinator::abort_expired`].
//!
//! Transactions v2 (KIP-890 part 2, EndTxn v5+): every EndTxn bumps the
//! epoch, so a delayed or retried EndTxn of transaction N, carrying N's
//! epoch, can never end transaction N+1: it is recognised as a retry while
//! N's outcome is the latest one, and fenced once N+1 has begun.

use std::collections::{BTreeSet, HashMap};

use crate::protocol::{self as codes, ErrorCode};

/// `transaction.max.timeout.ms` default: 15 minutes.
pub const TRANSACTION_MAX_TIMEOUT_MS_DEFAULT: i32 = 900_000;
/// An epoch is bumped up to this; past it the id gets a new producer id
/// (Kafka keeps `Short.MaxValue` itself unused so a fence can still bump).
const PRODUCER_EPOCH_MAX: i16 = i16::MAX - 1;

/// A topic partition of a transaction.
pub type TxnPartition = (String, i32);

/// Kafka's `TransactionState`, with its ids in `__transaction_state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TxnState {
    Empty,
    Ongoing,
    PrepareCommit,
    PrepareAbort,
    CompleteCommit,
    CompleteAbort,
    Dead,
    PrepareEpochFence,
}

impl TxnState {
    pub fn id(self) -> i8 {
        match self {
            TxnState::Empty => 0,
            TxnState::Ongoing => 1,
            TxnState::PrepareCommit => 2,
            TxnState::PrepareAbort => 3,
            TxnState::CompleteCommit => 4,
            TxnState::CompleteAbort => 5,
            TxnState::Dead => 6,
            TxnState::PrepareEpochFence => 7,
        }
    }

    /// Kafka's name of the state, as DescribeTransactions and
    /// ListTransactions show it.
    pub fn name(self) -> &'static str {
        match self {
            TxnState::Empty => "Empty",
            TxnState::Ongoing => "Ongoing",
            TxnState::PrepareCommit => "PrepareCommit",
            TxnState::PrepareAbort => "PrepareAbort",
            TxnState::CompleteCommit => "CompleteCommit",
            TxnState::CompleteAbort => "CompleteAbort",
            TxnState::Dead => "Dead",
            TxnState::PrepareEpochFence => "PrepareEpochFence",
        }
    }

    /// The state Kafka names `name` (None for a name it does not use).
    pub fn from_name(name: &str) -> Option<TxnState> {
        (0..=7)
            .filter_map(TxnState::from_id)
            .find(|state| state.name() == name)
    }

    pub fn from_id(id: i8) -> Option<TxnState> {
        Some(match id {
            0 => TxnState::Empty,
            1 => TxnState::Ongoing,
            2 => TxnState::PrepareCommit,
            3 => TxnState::PrepareAbort,
            4 => TxnState::CompleteCommit,
            5 => TxnState::CompleteAbort,
            6 => TxnState::Dead,
            7 => TxnState::PrepareEpochFence,
            _ => return None,
        })
    }

    /// Kafka's table of which state may follow which. A record that breaks
    /// it is a bug of ours (or a corrupt log), never a client's doing.
    pub fn may_follow(self, previous: TxnState) -> bool {
        use TxnState::*;
        match self {
            Empty => matches!(previous, Empty | CompleteCommit | CompleteAbort),
            Ongoing => matches!(previous, Ongoing | Empty | CompleteCommit | CompleteAbort),
            PrepareCommit => previous == Ongoing,
            // v2 may abort a transaction that added nothing (KIP-890).
            PrepareAbort => matches!(
                previous,
                Ongoing | PrepareEpochFence | Empty | CompleteCommit | CompleteAbort
            ),
            CompleteAbort => previous == PrepareAbort,
            CompleteCommit => previous == PrepareCommit,
            Dead => matches!(previous, Empty | CompleteCommit | CompleteAbort),
            PrepareEpochFence => previous == Ongoing,
        }
    }

    fn is_prepare(self) -> bool {
        matches!(self, TxnState::PrepareCommit | TxnState::PrepareAbort)
    }

    fn is_complete(self) -> bool {
        matches!(self, TxnState::CompleteCommit | TxnState::CompleteAbort)
    }
}

/// Which transaction protocol the id's current transaction speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxnVersion {
    /// EndTxn up to v4: the epoch stays for the producer's life.
    V1,
    /// EndTxn v5+ (KIP-890 part 2): each EndTxn bumps the epoch.
    V2,
}

/// What `__transaction_state` holds for one transactional id: the fields
/// of Kafka's `TransactionLogValue`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnRecord {
    pub producer_id: i64,
    /// The producer id before the last epoch overflow gave a new one (-1:
    /// none); a v2 retry from the previous id is recognised by it.
    pub previous_producer_id: i64,
    /// A v2 transaction ending at the last epoch: the producer id the
    /// client gets once it is complete (-1: none). Until then the markers
    /// and the record keep the id the transaction ran under.
    pub next_producer_id: i64,
    pub producer_epoch: i16,
    pub timeout_ms: i32,
    pub state: TxnState,
    pub partitions: BTreeSet<TxnPartition>,
    pub last_update_ms: i64,
    /// When the open transaction began (-1: none open).
    pub start_ms: i64,
    pub version: TxnVersion,
}

impl TxnRecord {
    /// The producer id and epoch the client uses after this record: what
    /// EndTxn v5+ answers.
    pub fn producer_for_next_transaction(&self) -> ProducerIdEpoch {
        if self.next_producer_id >= 0 {
            ProducerIdEpoch {
                producer_id: self.next_producer_id,
                producer_epoch: 0,
            }
        } else {
            ProducerIdEpoch {
                producer_id: self.producer_id,
                producer_epoch: self.producer_epoch,
            }
        }
    }
}

/// Commit or abort markers to write, one per partition, with this producer
/// id and epoch; then [`TxnCoordinator::markers_written`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnMarkers {
    pub transactional_id: String,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub commit: bool,
    pub partitions: BTreeSet<TxnPartition>,
    /// The write that prepared this transaction: a completion for another
    /// preparation (v1 transactions share id and epoch) is stale.
    pub prepared_by: u64,
}

/// What follows once a write is durable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AfterWrite {
    /// Answer InitProducerId with the record's producer id and epoch.
    InitProducerId,
    /// Answer NONE (AddPartitionsToTxn, AddOffsetsToTxn).
    Added,
    /// Answer EndTxn with NONE (and, for v2, the producer id and epoch of
    /// the record's next transaction), then write the markers (to no
    /// partition for an empty v2 abort: complete it at once).
    Ended(TxnMarkers),
    /// An InitProducerId fenced an open transaction: answer it
    /// CONCURRENT_TRANSACTIONS (the client retries once the abort is
    /// complete) and write the abort markers.
    Fenced(TxnMarkers),
    /// The transaction timed out: no one to answer; write the abort markers.
    TimedOut(TxnMarkers),
    /// The markers are written: the transaction is complete.
    Completed,
}

/// A record to append to `__transaction_state` for one id (None: a
/// tombstone), and what follows once it is durable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnWrite {
    pub transactional_id: String,
    pub record: Option<TxnRecord>,
    pub then: AfterWrite,
    /// Matches the write to its completion; a completion for a write the
    /// coordinator no longer waits for (it was reloaded) is ignored.
    pub sequence: u64,
    /// After this write, the epoch a KIP-360 InitProducerId may still carry
    /// (Some(-1): none any more; None: unchanged).
    retry_epoch: Option<i16>,
}

/// A request's outcome: an answer now, or a write first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision<T> {
    Answer(Result<T, ErrorCode>),
    Write(TxnWrite),
}

/// A producer's id and epoch as a request carries them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerIdEpoch {
    pub producer_id: i64,
    pub producer_epoch: i16,
}

struct Entry {
    record: TxnRecord,
    /// False for a new id until its first record is durable.
    durable: bool,
    /// The sequence of the write in flight for this id.
    pending: Option<u64>,
    /// The epoch before the last bump that a producer may still hold (-1:
    /// none): set by an InitProducerId that named the current epoch and by
    /// a v2 EndTxn, so that their retries are answered, not fenced
    /// (KIP-360); cleared by a bump for a new instance and by a fence, so a
    /// zombie never gets the new instance's epoch. Kept in memory only,
    /// as Kafka does.
    last_producer_epoch: i16,
    /// The write that prepared the transaction in a Prepare state.
    prepared_by: Option<u64>,
}

pub struct TxnCoordinator {
    entries: HashMap<String, Entry>,
    max_timeout_ms: i32,
    next_sequence: u64,
}

impl TxnCoordinator {
    pub fn new(max_timeout_ms: i32) -> TxnCoordinator {
        TxnCoordinator {
            entries: HashMap::new(),
            max_timeout_ms,
            next_sequence: 0,
        }
    }

    /// Rebuilds the state from `__transaction_state` (the last record per
    /// id wins; a tombstone removes it). Writes in flight are forgotten.
    /// Returns the markers to write again for transactions left prepared.
    pub fn load(
        max_timeout_ms: i32,
        records: impl IntoIterator<Item = (String, Option<TxnRecord>)>,
    ) -> (TxnCoordinator, Vec<TxnMarkers>) {
        let mut coordinator = TxnCoordinator::new(max_timeout_ms);
        let resume = coordinator.load_records(records);
        (coordinator, resume)
    }

    /// Adds the ids of one more `__transaction_state` partition from its
    /// records (this coordinator became its leader), as `load` does.
    /// Returns the markers to write again for its prepared transactions.
    pub fn load_records(
        &mut self,
        records: impl IntoIterator<Item = (String, Option<TxnRecord>)>,
    ) -> Vec<TxnMarkers> {
        let coordinator = self;
        let mut loaded = BTreeSet::new();
        for (id, record) in records {
            loaded.insert(id.clone());
            match record {
                Some(mut record) => {
                    // Kafka never writes its in-memory fencing step; read
                    // one as the abort it leads to.
                    if record.state == TxnState::PrepareEpochFence {
                        record.state = TxnState::PrepareAbort;
                    }
                    coordinator.entries.insert(
                        id,
                        Entry {
                            record,
                            durable: true,
                            pending: None,
                            last_producer_epoch: -1,
                            prepared_by: None,
                        },
                    );
                }
                None => {
                    coordinator.entries.remove(&id);
                }
            }
        }
        let prepared: Vec<String> = loaded
            .into_iter()
            .filter(|id| {
                coordinator
                    .entries
                    .get(id)
                    .is_some_and(|e| e.record.state.is_prepare())
            })
            .collect();
        prepared
            .into_iter()
            .map(|id| {
                let sequence = coordinator.take_sequence();
                let entry = coordinator.entries.get_mut(&id).expect("listed");
                entry.prepared_by = Some(sequence);
                markers_of(&id, &entry.record, sequence)
            })
            .collect()
    }

    /// Forgets the ids `leaves` names (their partition moved to another
    /// coordinator); their writes in flight complete as stale. Returns how
    /// many were forgotten.
    pub fn unload(&mut self, leaves: impl Fn(&str) -> bool) -> usize {
        let before = self.entries.len();
        self.entries.retain(|id, _| !leaves(id));
        before - self.entries.len()
    }

    /// Whether an id has a transaction open (its timeout must be watched).
    pub fn has_open_transactions(&self) -> bool {
        self.entries
            .values()
            .any(|e| e.record.state == TxnState::Ongoing)
    }

    /// The id's durable state.
    pub fn record(&self, transactional_id: &str) -> Option<&TxnRecord> {
        self.entries
            .get(transactional_id)
            .filter(|e| e.durable)
            .map(|e| &e.record)
    }

    /// Every id's durable state, in no particular order.
    pub fn records(&self) -> impl Iterator<Item = (&str, &TxnRecord)> {
        self.entries
            .iter()
            .filter(|(_, e)| e.durable)
            .map(|(id, e)| (id.as_str(), &e.record))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn take_sequence(&mut self) -> u64 {
        self.next_sequence += 1;
        self.next_sequence
    }

    /// A write of `record` for `id`, in flight from now on; `sequence` from
    /// `take_sequence` (taken first when markers must name it).
    fn write_as(
        &mut self,
        sequence: u64,
        id: &str,
        record: Option<TxnRecord>,
        then: AfterWrite,
        retry_epoch: Option<i16>,
    ) -> TxnWrite {
        if let Some(entry) = self.entries.get_mut(id) {
            debug_assert!(entry.pending.is_none(), "two writes in flight for {id}");
            entry.pending = Some(sequence);
        }
        TxnWrite {
            transactional_id: id.to_string(),
            record,
            then,
            sequence,
            retry_epoch,
        }
    }

    fn write(
        &mut self,
        id: &str,
        record: Option<TxnRecord>,
        then: AfterWrite,
        retry_epoch: Option<i16>,
    ) -> TxnWrite {
        let sequence = self.take_sequence();
        self.write_as(sequence, id, record, then, retry_epoch)
    }

    /// A write that prepares `record`'s transaction: its markers name it.
    fn prepare(
        &mut self,
        id: &str,
        record: TxnRecord,
        then: impl FnOnce(TxnMarkers) -> AfterWrite,
        retry_epoch: Option<i16>,
    ) -> TxnWrite {
        debug_assert!(record.state.is_prepare());
        let sequence = self.take_sequence();
        let markers = markers_of(id, &record, sequence);
        self.write_as(sequence, id, Some(record), then(markers), retry_epoch)
    }

    /// InitProducerId for a transactional id. `expected` is the producer id
    /// and epoch the client already has (KIP-360; None for a new producer);
    /// `new_producer_id` hands out a fresh id when one is needed.
    pub fn init_producer_id(
        &mut self,
        transactional_id: &str,
        timeout_ms: i32,
        expected: Option<ProducerIdEpoch>,
        now_ms: i64,
        new_producer_id: &mut dyn FnMut() -> Result<i64, ErrorCode>,
    ) -> Decision<ProducerIdEpoch> {
        if timeout_ms <= 0 || timeout_ms > self.max_timeout_ms {
            return Decision::Answer(Err(codes::INVALID_TRANSACTION_TIMEOUT));
        }
        let Some(entry) = self.entries.get(transactional_id) else {
            let producer_id = match new_producer_id() {
                Ok(id) => id,
                Err(code) => return Decision::Answer(Err(code)),
            };
            let record = TxnRecord {
                producer_id,
                previous_producer_id: -1,
                next_producer_id: -1,
                producer_epoch: 0,
                timeout_ms,
                state: TxnState::Empty,
                partitions: BTreeSet::new(),
                last_update_ms: now_ms,
                start_ms: -1,
                version: TxnVersion::V1,
            };
            self.entries.insert(
                transactional_id.to_string(),
                Entry {
                    record: record.clone(),
                    durable: false,
                    pending: None,
                    last_producer_epoch: -1,
                    prepared_by: None,
                },
            );
            return Decision::Write(self.write(
                transactional_id,
                Some(record),
                AfterWrite::InitProducerId,
                Some(-1),
            ));
        };
        if entry.pending.is_some() {
            return Decision::Answer(Err(codes::CONCURRENT_TRANSACTIONS));
        }
        let current = &entry.record;
        if let Some(expected) = expected {
            let same_id = expected.producer_id == current.producer_id;
            let is_current = same_id && expected.producer_epoch == current.producer_epoch;
            let is_last = same_id
                && entry.last_producer_epoch >= 0
                && expected.producer_epoch == entry.last_producer_epoch;
            if is_last && current.state == TxnState::Empty {
                // A retry: the bump it asks for is done; answer it again.
                return Decision::Answer(Ok(ProducerIdEpoch {
                    producer_id: current.producer_id,
                    producer_epoch: current.producer_epoch,
                }));
            }
            if !is_current && !is_last {
                return Decision::Answer(Err(codes::PRODUCER_FENCED));
            }
        }
        match current.state {
            TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort => {
                let mut record = current.clone();
                if let Err(code) = bump_epoch(&mut record, new_producer_id) {
                    return Decision::Answer(Err(code));
                }
                record.state = TxnState::Empty;
                record.timeout_ms = timeout_ms;
                record.partitions.clear();
                record.start_ms = -1;
                record.last_update_ms = now_ms;
                record.version = TxnVersion::V1;
                // The client that named its epoch may retry with it; a new
                // instance's bump leaves no older epoch valid.
                let retry_epoch = match expected {
                    Some(_) if record.producer_id == current.producer_id => current.producer_epoch,
                    _ => -1,
                };
                Decision::Write(self.write(
                    transactional_id,
                    Some(record),
                    AfterWrite::InitProducerId,
                    Some(retry_epoch),
                ))
            }
            TxnState::Ongoing => {
                let record = fence_and_abort(current, now_ms);
                Decision::Write(self.prepare(
                    transactional_id,
                    record,
                    AfterWrite::Fenced,
                    Some(-1),
                ))
            }
            TxnState::PrepareCommit
            | TxnState::PrepareAbort
            | TxnState::Dead
            | TxnState::PrepareEpochFence => Decision::Answer(Err(codes::CONCURRENT_TRANSACTIONS)),
        }
    }

    /// AddPartitionsToTxn (and AddOffsetsToTxn, whose partition is the
    /// group's `__consumer_offsets` partition; and the implicit add of a v2
    /// produce). `verify_only` is KIP-890 part 1's check from a partition
    /// leader: NONE only if every partition is already in the open
    /// transaction, INVALID_TXN_STATE otherwise; it never writes.
    pub fn add_partitions(
        &mut self,
        transactional_id: &str,
        producer: ProducerIdEpoch,
        partitions: &[TxnPartition],
        verify_only: bool,
        now_ms: i64,
    ) -> Decision<()> {
        let entry = match self.check_producer(transactional_id, producer) {
            Ok(entry) => entry,
            Err(code) => return Decision::Answer(Err(code)),
        };
        let current = &entry.record;
        let all_present = partitions.iter().all(|p| current.partitions.contains(p));
        if verify_only {
            return Decision::Answer(match current.state {
                TxnState::Ongoing if all_present => Ok(()),
                TxnState::PrepareCommit | TxnState::PrepareAbort => {
                    Err(codes::CONCURRENT_TRANSACTIONS)
                }
                _ => Err(codes::INVALID_TXN_STATE),
            });
        }
        if entry.pending.is_some() {
            return Decision::Answer(Err(codes::CONCURRENT_TRANSACTIONS));
        }
        match current.state {
            TxnState::PrepareCommit
            | TxnState::PrepareAbort
            | TxnState::Dead
            | TxnState::PrepareEpochFence => Decision::Answer(Err(codes::CONCURRENT_TRANSACTIONS)),
            TxnState::Ongoing if all_present => Decision::Answer(Ok(())),
            TxnState::Ongoing
            | TxnState::Empty
            | TxnState::CompleteCommit
            | TxnState::CompleteAbort => {
                let mut record = current.clone();
                if record.state != TxnState::Ongoing {
                    record.partitions.clear();
                    record.start_ms = now_ms;
                    record.state = TxnState::Ongoing;
                }
                record.partitions.extend(partitions.iter().cloned());
                record.last_update_ms = now_ms;
                Decision::Write(self.write(transactional_id, Some(record), AfterWrite::Added, None))
            }
        }
    }

    /// EndTxn: commit or abort the open transaction. v2 answers with the
    /// producer id and epoch the client uses next; v1 with the same ones.
    pub fn end_txn(
        &mut self,
        transactional_id: &str,
        producer: ProducerIdEpoch,
        commit: bool,
        version: TxnVersion,
        now_ms: i64,
        new_producer_id: &mut dyn FnMut() -> Result<i64, ErrorCode>,
    ) -> Decision<ProducerIdEpoch> {
        let Some(entry) = self.entries.get(transactional_id) else {
            return Decision::Answer(Err(codes::INVALID_PRODUCER_ID_MAPPING));
        };
        let current = &entry.record;
        let answer_current = current.producer_for_next_transaction();
        let ended = |state: TxnState| match state {
            TxnState::PrepareCommit | TxnState::CompleteCommit => Some(true),
            TxnState::PrepareAbort | TxnState::CompleteAbort => Some(false),
            _ => None,
        };
        // v2: a retry carries the epoch the ended transaction ran under,
        // one below the bumped one (or the previous id after an overflow).
        if version == TxnVersion::V2
            && current.version == TxnVersion::V2
            && ended(current.state).is_some()
            && is_previous_epoch(current, producer)
        {
            return Decision::Answer(retry_answer(current.state, commit, answer_current));
        }
        if producer.producer_id != current.producer_id {
            return Decision::Answer(Err(codes::INVALID_PRODUCER_ID_MAPPING));
        }
        if producer.producer_epoch != current.producer_epoch {
            return Decision::Answer(Err(codes::PRODUCER_FENCED));
        }
        if entry.pending.is_some() {
            return Decision::Answer(Err(codes::CONCURRENT_TRANSACTIONS));
        }
        let open = current.state == TxnState::Ongoing;
        // KIP-890: a v2 client may abort a transaction that added nothing.
        let empty_abort = version == TxnVersion::V2
            && !commit
            && matches!(
                current.state,
                TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort
            );
        if !open && !empty_abort {
            return Decision::Answer(match (version, current.state) {
                (TxnVersion::V1, state) if ended(state).is_some() => {
                    retry_answer(state, commit, answer_current)
                }
                // v2 at the current epoch: a transaction being ended is
                // settling; an ended one was ended under the epoch before.
                (TxnVersion::V2, TxnState::PrepareCommit | TxnState::PrepareAbort) => {
                    Err(codes::CONCURRENT_TRANSACTIONS)
                }
                _ => Err(codes::INVALID_TXN_STATE),
            });
        }
        let mut record = current.clone();
        record.state = if commit {
            TxnState::PrepareCommit
        } else {
            TxnState::PrepareAbort
        };
        if empty_abort {
            record.partitions.clear();
            record.start_ms = now_ms;
        }
        record.last_update_ms = now_ms;
        record.version = version;
        let mut retry_epoch = None;
        if version == TxnVersion::V2 {
            // The markers carry the bumped epoch, which fences the
            // transaction's epoch at its partitions. At the last epoch they
            // carry the one no producer is given, and the id changes once
            // they are written.
            retry_epoch = Some(record.producer_epoch);
            if record.producer_epoch >= PRODUCER_EPOCH_MAX {
                match new_producer_id() {
                    Ok(id) => record.next_producer_id = id,
                    Err(code) => return Decision::Answer(Err(code)),
                }
            }
            record.producer_epoch = record.producer_epoch.saturating_add(1);
        }
        Decision::Write(self.prepare(transactional_id, record, AfterWrite::Ended, retry_epoch))
    }

    /// Every marker of a prepared transaction is written: complete it.
    /// None when the id moved on meanwhile (a stale completion).
    pub fn markers_written(&mut self, markers: &TxnMarkers, now_ms: i64) -> Option<TxnWrite> {
        let entry = self.entries.get(&markers.transactional_id)?;
        let current = &entry.record;
        if entry.pending.is_some()
            || !current.state.is_prepare()
            || entry.prepared_by != Some(markers.prepared_by)
        {
            return None;
        }
        let mut record = current.clone();
        record.state = if markers.commit {
            TxnState::CompleteCommit
        } else {
            TxnState::CompleteAbort
        };
        record.partitions.clear();
        record.last_update_ms = now_ms;
        if record.next_producer_id >= 0 {
            record.previous_producer_id = record.producer_id;
            record.producer_id = record.next_producer_id;
            record.producer_epoch = 0;
            record.next_producer_id = -1;
        }
        let id = markers.transactional_id.clone();
        Some(self.write(&id, Some(record), AfterWrite::Completed, None))
    }

    /// Aborts, with a bumped epoch, every open transaction older than its
    /// timeout (Kafka's `abortTimedOutTransactions`).
    pub fn abort_expired(&mut self, now_ms: i64) -> Vec<TxnWrite> {
        let mut expired: Vec<String> = self
            .entries
            .iter()
            .filter(|(_, e)| {
                e.pending.is_none()
                    && e.record.state == TxnState::Ongoing
                    && e.record.start_ms.saturating_add(e.record.timeout_ms as i64) < now_ms
            })
            .map(|(id, _)| id.clone())
            .collect();
        expired.sort();
        expired
            .into_iter()
            .map(|id| {
                let record = fence_and_abort(&self.entries[&id].record, now_ms);
                self.prepare(&id, record, AfterWrite::TimedOut, Some(-1))
            })
            .collect()
    }

    /// A write is durable: it becomes the id's state. Returns false for a
    /// write this coordinator no longer waits for.
    pub fn written(&mut self, write: &TxnWrite) -> bool {
        let Some(entry) = self.entries.get_mut(&write.transactional_id) else {
            return false;
        };
        if entry.pending != Some(write.sequence) {
            return false;
        }
        entry.pending = None;
        entry.durable = true;
        match &write.record {
            Some(record) => {
                assert!(
                    record.state.may_follow(entry.record.state),
                    "{:?} may not follow {:?} for {}",
                    record.state,
                    entry.record.state,
                    write.transactional_id
                );
                if let Some(epoch) = write.retry_epoch {
                    entry.last_producer_epoch = epoch;
                }
                entry.prepared_by = record.state.is_prepare().then_some(write.sequence);
                entry.record = record.clone();
            }
            None => {
                self.entries.remove(&write.transactional_id);
            }
        }
        true
    }

    /// A write failed: nothing changes, and the id takes requests again. A
    /// new id whose first write failed is forgotten. When the failed write
    /// completed a transaction, it is still prepared: the markers to
    /// complete it with again are returned.
    pub fn write_failed(&mut self, write: &TxnWrite) -> Option<TxnMarkers> {
        let entry = self.entries.get_mut(&write.transactional_id)?;
        if entry.pending != Some(write.sequence) {
            return None;
        }
        entry.pending = None;
        if !entry.durable {
            // The first record of a new id: there is no durable state.
            self.entries.remove(&write.transactional_id);
            return None;
        }
        let prepared_by = entry.prepared_by?;
        (write.then == AfterWrite::Completed && entry.record.state.is_prepare())
            .then(|| markers_of(&write.transactional_id, &entry.record, prepared_by))
    }

    fn check_producer(&self, id: &str, producer: ProducerIdEpoch) -> Result<&Entry, ErrorCode> {
        let entry = self
            .entries
            .get(id)
            .filter(|e| e.durable)
            .ok_or(codes::INVALID_PRODUCER_ID_MAPPING)?;
        if producer.producer_id != entry.record.producer_id {
            return Err(codes::INVALID_PRODUCER_ID_MAPPING);
        }
        if producer.producer_epoch != entry.record.producer_epoch {
            return Err(codes::PRODUCER_FENCED);
        }
        Ok(entry)
    }
}

/// The next epoch, or a new producer id at epoch 0 once the epoch is used up.
fn bump_epoch(
    record: &mut TxnRecord,
    new_producer_id: &mut dyn FnMut() -> Result<i64, ErrorCode>,
) -> Result<(), ErrorCode> {
    if record.producer_epoch >= PRODUCER_EPOCH_MAX {
        record.previous_producer_id = record.producer_id;
        record.producer_id = new_producer_id()?;
        record.producer_epoch = 0;
    } else {
        record.producer_epoch += 1;
    }
    Ok(())
}

/// The open transaction aborted with the epoch bumped, so its producer is
/// fenced (up to `i16::MAX`; the next InitProducerId then gives a new
/// producer id).
fn fence_and_abort(current: &TxnRecord, now_ms: i64) -> TxnRecord {
    let mut record = current.clone();
    // v2 bumps once for the fence and once for the abort (as Kafka does),
    // so the fenced epoch is not one below the new one: its EndTxn is not
    // taken for a retry. A fence may use the epoch no producer is given.
    let bumps = match current.version {
        TxnVersion::V1 => 1,
        TxnVersion::V2 => 2,
    };
    record.producer_epoch = record.producer_epoch.saturating_add(bumps);
    record.state = TxnState::PrepareAbort;
    record.last_update_ms = now_ms;
    record
}

fn markers_of(id: &str, record: &TxnRecord, prepared_by: u64) -> TxnMarkers {
    TxnMarkers {
        transactional_id: id.to_string(),
        prepared_by,
        producer_id: record.producer_id,
        producer_epoch: record.producer_epoch,
        commit: matches!(
            record.state,
            TxnState::PrepareCommit | TxnState::CompleteCommit
        ),
        partitions: record.partitions.clone(),
    }
}

/// Does `producer` carry the epoch that the last (v2) EndTxn bumped from?
fn is_previous_epoch(current: &TxnRecord, producer: ProducerIdEpoch) -> bool {
    if current.producer_epoch == 0 && current.previous_producer_id >= 0 {
        // Completed at the last epoch: the id changed.
        producer.producer_id == current.previous_producer_id
            && producer.producer_epoch == PRODUCER_EPOCH_MAX
    } else {
        producer.producer_id == current.producer_id
            && producer.producer_epoch + 1 == current.producer_epoch
    }
}

/// A retried EndTxn: the same outcome is NONE once complete and
/// CONCURRENT_TRANSACTIONS while its markers are written; the other
/// outcome is INVALID_TXN_STATE.
fn retry_answer(
    state: TxnState,
    commit: bool,
    answer: ProducerIdEpoch,
) -> Result<ProducerIdEpoch, ErrorCode> {
    let same = matches!(
        (state, commit),
        (TxnState::PrepareCommit | TxnState::CompleteCommit, true)
            | (TxnState::PrepareAbort | TxnState::CompleteAbort, false)
    );
    if !same {
        Err(codes::INVALID_TXN_STATE)
    } else if state.is_complete() {
        Ok(answer)
    } else {
        Err(codes::CONCURRENT_TRANSACTIONS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUT_MS: i32 = 60_000;

    fn ids() -> impl FnMut() -> Result<i64, ErrorCode> {
        let mut next = 1000;
        move || {
            next += 1;
            Ok(next)
        }
    }

    fn pe(producer_id: i64, producer_epoch: i16) -> ProducerIdEpoch {
        ProducerIdEpoch {
            producer_id,
            producer_epoch,
        }
    }

    fn tp(topic: &str, index: i32) -> TxnPartition {
        (topic.to_string(), index)
    }

    /// Applies a decision's write as durable and returns it.
    fn durable<T: std::fmt::Debug>(
        c: &mut TxnCoordinator,
        decide: impl FnOnce(&mut TxnCoordinator) -> Decision<T>,
    ) -> TxnWrite {
        let d = decide(c);
        let Decision::Write(w) = d else {
            panic!("expected a write, got {d:?}")
        };
        assert!(c.written(&w));
        w
    }

    fn answer<T: std::fmt::Debug>(d: Decision<T>) -> Result<T, ErrorCode> {
        match d {
            Decision::Answer(a) => a,
            Decision::Write(w) => panic!("expected an answer, got a write {w:?}"),
        }
    }

    /// EndTxn made durable; its markers.
    fn end(
        c: &mut TxnCoordinator,
        p: ProducerIdEpoch,
        commit: bool,
        version: TxnVersion,
        now_ms: i64,
    ) -> TxnMarkers {
        // Ids it may hand out (a v2 end at the last epoch) differ from
        // `open`'s.
        let mut new_id = || Ok(9_000);
        let w = durable(c, |c| {
            c.end_txn("tx", p, commit, version, now_ms, &mut new_id)
        });
        let AfterWrite::Ended(markers) = w.then else {
            panic!("{w:?}")
        };
        markers
    }

    /// The markers are written and the completion is durable.
    fn complete(c: &mut TxnCoordinator, markers: &TxnMarkers, now_ms: i64) {
        let done = c
            .markers_written(markers, now_ms)
            .expect("a current preparation");
        assert!(c.written(&done));
    }

    /// A producer with an open transaction on `t-0`, at epoch 0.
    fn open(c: &mut TxnCoordinator, version: TxnVersion) -> ProducerIdEpoch {
        let mut new_id = ids();
        durable(c, |c| {
            c.init_producer_id("tx", TIMEOUT_MS, None, 0, &mut new_id)
        });
        let r = c.record("tx").unwrap();
        let p = pe(r.producer_id, r.producer_epoch);
        durable(c, |c| c.add_partitions("tx", p, &[tp("t", 0)], false, 10));
        let _ = version;
        p
    }

    #[test]
    fn a_new_id_gets_a_producer_id_once_its_record_is_durable() {
        let mut c = TxnCoordinator::new(TRANSACTION_MAX_TIMEOUT_MS_DEFAULT);
        let mut new_id = ids();
        let Decision::Write(w) = c.init_producer_id("tx", TIMEOUT_MS, None, 0, &mut new_id) else {
            panic!()
        };
        assert_eq!(w.then, AfterWrite::InitProducerId);
        assert!(c.record("tx").is_none(), "not durable yet");
        assert_eq!(
            answer(c.init_producer_id("tx", TIMEOUT_MS, None, 0, &mut new_id)),
            Err(codes::CONCURRENT_TRANSACTIONS)
        );
        assert!(c.written(&w));
        let r = c.record("tx").unwrap();
        assert_eq!(
            (r.producer_id, r.producer_epoch, r.state),
            (1001, 0, TxnState::Empty)
        );
    }

    #[test]
    fn a_failed_first_write_forgets_the_id() {
        let mut c = TxnCoordinator::new(TRANSACTION_MAX_TIMEOUT_MS_DEFAULT);
        let mut new_id = ids();
        let Decision::Write(w) = c.init_producer_id("tx", TIMEOUT_MS, None, 0, &mut new_id) else {
            panic!()
        };
        assert_eq!(c.write_failed(&w), None);
        assert!(c.is_empty());
        assert!(!c.written(&w), "a failed write never becomes durable");
    }

    #[test]
    fn timeouts_above_the_maximum_are_refused() {
        let mut c = TxnCoordinator::new(1_000);
        assert_eq!(
            answer(c.init_producer_id("tx", 1_001, None, 0, &mut ids())),
            Err(codes::INVALID_TRANSACTION_TIMEOUT)
        );
        assert_eq!(
            answer(c.init_producer_id("tx", 0, None, 0, &mut ids())),
            Err(codes::INVALID_TRANSACTION_TIMEOUT)
        );
    }

    #[test]
    fn init_bumps_the_epoch_and_its_retry_is_answered_not_fenced() {
        let mut c = TxnCoordinator::new(TRANSACTION_MAX_TIMEOUT_MS_DEFAULT);
        let mut new_id = ids();
        durable(&mut c, |c| {
            c.init_producer_id("tx", TIMEOUT_MS, None, 0, &mut new_id)
        });
        durable(&mut c, |c| {
            c.init_producer_id("tx", TIMEOUT_MS, Some(pe(1001, 0)), 1, &mut new_id)
        });
        assert_eq!(c.record("tx").unwrap().producer_epoch, 1);
        // The same request again (its answer was lost): same answer.
        assert_eq!(
            answer(c.init_producer_id("tx", TIMEOUT_MS, Some(pe(1001, 0)), 2, &mut new_id)),
            Ok(pe(1001, 1))
        );
        assert_eq!(
            answer(c.init_producer_id("tx", TIMEOUT_MS, Some(pe(1001, 7)), 2, &mut new_id)),
            Err(codes::PRODUCER_FENCED)
        );
    }

    #[test]
    fn adding_partitions_opens_the_transaction_and_verification_reads_it() {
        let mut c = TxnCoordinator::new(TRANSACTION_MAX_TIMEOUT_MS_DEFAULT);
        let p = open(&mut c, TxnVersion::V1);
        let r = c.record("tx").unwrap();
        assert_eq!((r.state, r.start_ms), (TxnState::Ongoing, 10));
        // Already in: answered without a write.
        assert_eq!(
            answer(c.add_partitions("tx", p, &[tp("t", 0)], false, 11)),
            Ok(())
        );
        assert_eq!(
            answer(c.add_partitions("tx", p, &[tp("t", 0)], true, 11)),
            Ok(())
        );
        assert_eq!(
            answer(c.add_partitions("tx", p, &[tp("t", 1)], true, 11)),
            Err(codes::INVALID_TXN_STATE)
        );
        durable(&mut c, |c| {
            c.add_partitions("tx", p, &[tp("t", 1)], false, 12)
        });
        let r = c.record("tx").unwrap();
        assert_eq!(r.partitions.len(), 2);
        assert_eq!(r.start_ms, 10, "the transaction began at its first add");
        assert_eq!(
            answer(c.add_partitions("tx", pe(p.producer_id + 1, 0), &[tp("t", 0)], false, 12)),
            Err(codes::INVALID_PRODUCER_ID_MAPPING)
        );
        assert_eq!(
            answer(c.add_partitions("other", p, &[tp("t", 0)], false, 12)),
            Err(codes::INVALID_PRODUCER_ID_MAPPING)
        );
    }

    #[test]
    fn commit_prepares_writes_markers_completes_and_retries_are_idempotent() {
        let mut c = TxnCoordinator::new(TRANSACTION_MAX_TIMEOUT_MS_DEFAULT);
        let p = open(&mut c, TxnVersion::V1);
        let mut new_id = ids();
        let w = durable(&mut c, |c| {
            c.end_txn("tx", p, true, TxnVersion::V1, 20, &mut new_id)
        });
        let AfterWrite::Ended(markers) = w.then else {
            panic!("{w:?}")
        };
        assert!(markers.commit);
        assert_eq!(
            (markers.producer_id, markers.producer_epoch),
            (p.producer_id, 0)
        );
        assert_eq!(c.record("tx").unwrap().state, TxnState::PrepareCommit);
        for commit in [true, false] {
            let code = if commit {
                codes::CONCURRENT_TRANSACTIONS
            } else {
                codes::INVALID_TXN_STATE
            };
            assert_eq!(
                answer(c.end_txn("tx", p, commit, TxnVersion::V1, 21, &mut new_id)),
                Err(code)
            );
        }
        assert_eq!(
            answer(c.add_partitions("tx", p, &[tp("t", 5)], false, 21)),
            Err(codes::CONCURRENT_TRANSACTIONS)
        );
        let w = c.markers_written(&markers, 22).unwrap();
        assert!(c.written(&w));
        let r = c.record("tx").unwrap();
        assert_eq!(r.state, TxnState::CompleteCommit);
        assert!(r.partitions.is_empty());
        assert_eq!(
            answer(c.end_txn("tx", p, true, TxnVersion::V1, 23, &mut new_id)),
            Ok(p)
        );
        assert_eq!(
            answer(c.end_txn("tx", p, false, TxnVersion::V1, 23, &mut new_id)),
            Err(codes::INVALID_TXN_STATE)
        );
        assert!(
            c.markers_written(&markers, 24).is_none(),
            "stale completion"
        );
    }

    #[test]
    fn end_without_an_open_transaction_is_invalid() {
        let mut c = TxnCoordinator::new(TRANSACTION_MAX_TIMEOUT_MS_DEFAULT);
        let mut new_id = ids();
        durable(&mut c, |c| {
            c.init_producer_id("tx", TIMEOUT_MS, None, 0, &mut new_id)
        });
        assert_eq!(
            answer(c.end_txn("tx", pe(1001, 0), true, TxnVersion::V1, 1, &mut new_id)),
            Err(codes::INVALID_TXN_STATE)
        );
    }

    #[test]
    fn a_second_instance_fences_the_first_and_aborts_its_transaction() {
        let mut c = TxnCoordinator::new(TRANSACTION_MAX_TIMEOUT_MS_DEFAULT);
        let old = open(&mut c, TxnVersion::V1);
        let mut new_id = ids();
        let w = durable(&mut c, |c| {
            c.init_producer_id("tx", TIMEOUT_MS, None, 30, &mut new_id)
        });
        let AfterWrite::Fenced(markers) = &w.then else {
            panic!("{w:?}")
        };
        assert!(!markers.commit);
        assert_eq!(markers.producer_epoch, 1, "the abort fences epoch 0");
        assert_eq!(c.record("tx").unwrap().state, TxnState::PrepareAbort);
        assert_eq!(
            answer(c.add_partitions("tx", old, &[tp("t", 0)], false, 31)),
            Err(codes::PRODUCER_FENCED)
        );
        assert_eq!(
            answer(c.end_txn("tx", old, true, TxnVersion::V1, 31, &mut new_id)),
            Err(codes::PRODUCER_FENCED)
        );
        // The new instance retries until the abort is complete.
        assert_eq!(
            answer(c.init_producer_id("tx", TIMEOUT_MS, None, 31, &mut new_id)),
            Err(codes::CONCURRENT_TRANSACTIONS)
        );
        complete(&mut c, markers, 32);
        durable(&mut c, |c| {
            c.init_producer_id("tx", TIMEOUT_MS, None, 33, &mut new_id)
        });
        let r = c.record("tx").unwrap();
        assert_eq!((r.producer_epoch, r.state), (2, TxnState::Empty));
    }

    #[test]
    fn a_transaction_past_its_timeout_is_aborted_with_a_bumped_epoch() {
        let mut c = TxnCoordinator::new(TRANSACTION_MAX_TIMEOUT_MS_DEFAULT);
        let p = open(&mut c, TxnVersion::V1);
        assert!(c.abort_expired(10 + TIMEOUT_MS as i64).is_empty());
        let writes = c.abort_expired(10 + TIMEOUT_MS as i64 + 1);
        assert_eq!(writes.len(), 1);
        assert!(
            matches!(&writes[0].then, AfterWrite::TimedOut(m) if !m.commit && m.producer_epoch == 1)
        );
        assert!(c.abort_expired(i64::MAX).is_empty(), "one abort in flight");
        assert!(c.written(&writes[0]));
        assert_eq!(
            answer(c.end_txn("tx", p, true, TxnVersion::V1, 1, &mut ids())),
            Err(codes::PRODUCER_FENCED)
        );
        // As in Kafka, a timeout fences for good: the old epoch cannot
        // come back through InitProducerId either.
        let AfterWrite::TimedOut(markers) = &writes[0].then else {
            panic!()
        };
        complete(&mut c, markers, 3);
        assert_eq!(
            answer(c.init_producer_id("tx", TIMEOUT_MS, Some(p), 4, &mut ids())),
            Err(codes::PRODUCER_FENCED)
        );
    }

    #[test]
    fn v2_bumps_the_epoch_per_transaction_and_a_delayed_commit_cannot_end_the_next() {
        let mut c = TxnCoordinator::new(TRANSACTION_MAX_TIMEOUT_MS_DEFAULT);
        let mut new_id = ids();
        let first = open(&mut c, TxnVersion::V2);
        let markers = &end(&mut c, first, true, TxnVersion::V2, 20);
        assert_eq!(markers.producer_epoch, 1, "markers carry the bumped epoch");
        let next = c.record("tx").unwrap().producer_for_next_transaction();
        assert_eq!(next, pe(first.producer_id, 1));
        // A retry while the markers are written, then after.
        assert_eq!(
            answer(c.end_txn("tx", first, true, TxnVersion::V2, 21, &mut new_id)),
            Err(codes::CONCURRENT_TRANSACTIONS)
        );
        complete(&mut c, markers, 22);
        assert_eq!(
            answer(c.end_txn("tx", first, true, TxnVersion::V2, 23, &mut new_id)),
            Ok(next)
        );
        // Transaction N+1 begins at epoch 1; the delayed commit of N (epoch
        // 0) arrives: fenced, and N+1 stays open.
        durable(&mut c, |c| {
            c.add_partitions("tx", next, &[tp("t", 3)], false, 24)
        });
        assert_eq!(
            answer(c.end_txn("tx", first, true, TxnVersion::V2, 25, &mut new_id)),
            Err(codes::PRODUCER_FENCED)
        );
        let r = c.record("tx").unwrap();
        assert_eq!((r.state, r.producer_epoch), (TxnState::Ongoing, 1));
        assert!(r.partitions.contains(&tp("t", 3)));
    }

    #[test]
    fn v2_at_the_last_epoch_moves_to_a_new_producer_id_after_the_markers() {
        let mut c = TxnCoordinator::new(TRANSACTION_MAX_TIMEOUT_MS_DEFAULT);
        let mut new_id = || Ok(5000);
        let p = open(&mut c, TxnVersion::V2);
        let mut record = c.record("tx").unwrap().clone();
        record.producer_epoch = PRODUCER_EPOCH_MAX;
        let (mut c, _) = TxnCoordinator::load(
            TRANSACTION_MAX_TIMEOUT_MS_DEFAULT,
            [("tx".to_string(), Some(record))],
        );
        let last = pe(p.producer_id, PRODUCER_EPOCH_MAX);
        let markers = &end(&mut c, last, false, TxnVersion::V2, 5);
        // The markers fence the last epoch with the one no producer gets.
        assert_eq!(
            (markers.producer_id, markers.producer_epoch),
            (p.producer_id, i16::MAX)
        );
        let next = c.record("tx").unwrap().producer_for_next_transaction();
        assert_ne!(next.producer_id, p.producer_id);
        assert_eq!(next.producer_epoch, 0);
        complete(&mut c, markers, 6);
        let r = c.record("tx").unwrap();
        assert_eq!(
            (r.producer_id, r.producer_epoch, r.previous_producer_id),
            (next.producer_id, 0, p.producer_id)
        );
        assert_eq!(
            answer(c.end_txn("tx", last, false, TxnVersion::V2, 7, &mut new_id)),
            Ok(next)
        );
    }

    #[test]
    fn v2_may_abort_a_transaction_that_added_nothing() {
        let mut c = TxnCoordinator::new(TRANSACTION_MAX_TIMEOUT_MS_DEFAULT);
        let mut new_id = ids();
        durable(&mut c, |c| {
            c.init_producer_id("tx", TIMEOUT_MS, None, 0, &mut new_id)
        });
        let w = durable(&mut c, |c| {
            c.end_txn("tx", pe(1001, 0), false, TxnVersion::V2, 1, &mut new_id)
        });
        let AfterWrite::Ended(markers) = &w.then else {
            panic!("{w:?}")
        };
        assert!(markers.partitions.is_empty(), "no partition to mark");
        let r = c.record("tx").unwrap();
        assert_eq!((r.state, r.producer_epoch), (TxnState::PrepareAbort, 1));
        complete(&mut c, markers, 2);
        assert_eq!(c.record("tx").unwrap().state, TxnState::CompleteAbort);
    }

    #[test]
    fn a_reload_resumes_the_markers_of_prepared_transactions() {
        let mut c = TxnCoordinator::new(TRANSACTION_MAX_TIMEOUT_MS_DEFAULT);
        let p = open(&mut c, TxnVersion::V1);
        durable(&mut c, |c| {
            c.end_txn("tx", p, true, TxnVersion::V1, 20, &mut ids())
        });
        let prepared = c.record("tx").unwrap().clone();
        let (c, resume) = TxnCoordinator::load(
            TRANSACTION_MAX_TIMEOUT_MS_DEFAULT,
            [
                ("tx".to_string(), Some(prepared)),
                ("gone".to_string(), Some(c.record("tx").unwrap().clone())),
                ("gone".to_string(), None),
            ],
        );
        assert_eq!(c.len(), 1);
        assert_eq!(resume.len(), 1);
        assert!(resume[0].commit);
        assert_eq!(resume[0].partitions.len(), 1);
    }

    #[test]
    fn a_zombie_never_gets_the_epoch_a_new_instance_was_given() {
        let mut c = TxnCoordinator::new(TRANSACTION_MAX_TIMEOUT_MS_DEFAULT);
        let mut new_id = ids();
        durable(&mut c, |c| {
            c.init_producer_id("tx", TIMEOUT_MS, None, 0, &mut new_id)
        });
        let zombie = pe(1001, 0);
        // A new instance (no epoch of its own) bumps to 1.
        durable(&mut c, |c| {
            c.init_producer_id("tx", TIMEOUT_MS, None, 1, &mut new_id)
        });
        assert_eq!(
            answer(c.init_producer_id("tx", TIMEOUT_MS, Some(zombie), 2, &mut new_id)),
            Err(codes::PRODUCER_FENCED)
        );
    }

    #[test]
    fn a_fenced_v2_producer_is_not_taken_for_a_retry() {
        let mut c = TxnCoordinator::new(TRANSACTION_MAX_TIMEOUT_MS_DEFAULT);
        let mut new_id = ids();
        let first = open(&mut c, TxnVersion::V2);
        let markers = &end(&mut c, first, true, TxnVersion::V2, 20);
        complete(&mut c, markers, 21);
        let zombie = c.record("tx").unwrap().producer_for_next_transaction();
        durable(&mut c, |c| {
            c.add_partitions("tx", zombie, &[tp("t", 1)], false, 22)
        });
        // A new instance fences the zombie's open transaction: two bumps.
        let w = durable(&mut c, |c| {
            c.init_producer_id("tx", TIMEOUT_MS, None, 23, &mut new_id)
        });
        let AfterWrite::Fenced(markers) = &w.then else {
            panic!("{w:?}")
        };
        assert_eq!(markers.producer_epoch, zombie.producer_epoch + 2);
        for commit in [false, true] {
            assert_eq!(
                answer(c.end_txn("tx", zombie, commit, TxnVersion::V2, 24, &mut new_id)),
                Err(codes::PRODUCER_FENCED)
            );
        }
    }

    #[test]
    fn a_late_completion_of_one_transaction_does_not_complete_the_next() {
        let mut c = TxnCoordinator::new(TRANSACTION_MAX_TIMEOUT_MS_DEFAULT);
        let mut new_id = ids();
        let p = open(&mut c, TxnVersion::V1);
        let w = durable(&mut c, |c| {
            c.end_txn("tx", p, true, TxnVersion::V1, 20, &mut new_id)
        });
        let AfterWrite::Ended(first) = w.then else {
            panic!()
        };
        complete(&mut c, &first, 21);
        // The next v1 transaction has the same producer id and epoch.
        durable(&mut c, |c| {
            c.add_partitions("tx", p, &[tp("t", 0)], false, 22)
        });
        durable(&mut c, |c| {
            c.end_txn("tx", p, true, TxnVersion::V1, 23, &mut new_id)
        });
        assert!(c.markers_written(&first, 24).is_none(), "stale");
        assert_eq!(c.record("tx").unwrap().state, TxnState::PrepareCommit);
    }

    #[test]
    fn v2_end_at_the_current_epoch_of_an_ended_transaction_is_invalid() {
        let mut c = TxnCoordinator::new(TRANSACTION_MAX_TIMEOUT_MS_DEFAULT);
        let mut new_id = ids();
        let first = open(&mut c, TxnVersion::V2);
        let w = durable(&mut c, |c| {
            c.end_txn("tx", first, true, TxnVersion::V2, 20, &mut new_id)
        });
        let next = c.record("tx").unwrap().producer_for_next_transaction();
        assert_eq!(
            answer(c.end_txn("tx", next, true, TxnVersion::V2, 21, &mut new_id)),
            Err(codes::CONCURRENT_TRANSACTIONS),
            "still settling"
        );
        let AfterWrite::Ended(markers) = &w.then else {
            panic!()
        };
        complete(&mut c, markers, 22);
        assert_eq!(
            answer(c.end_txn("tx", next, true, TxnVersion::V2, 23, &mut new_id)),
            Err(codes::INVALID_TXN_STATE)
        );
    }

    #[test]
    fn state_ids_round_trip_and_the_transition_table_is_kafkas() {
        for id in 0..8 {
            assert_eq!(TxnState::from_id(id).unwrap().id(), id);
        }
        assert_eq!(TxnState::from_id(8), None);
        assert!(TxnState::PrepareCommit.may_follow(TxnState::Ongoing));
        assert!(!TxnState::PrepareCommit.may_follow(TxnState::Empty));
        assert!(!TxnState::CompleteCommit.may_follow(TxnState::PrepareAbort));
        assert!(!TxnState::Ongoing.may_follow(TxnState::PrepareCommit));
    }

    #[test]
    fn state_names_are_kafkas_and_round_trip() {
        for id in 0..=7 {
            let state = TxnState::from_id(id).unwrap();
            assert_eq!(TxnState::from_name(state.name()), Some(state));
        }
        assert_eq!(TxnState::Ongoing.name(), "Ongoing");
        assert_eq!(TxnState::from_name("ongoing"), None);
    }
}
