//! A partition's log through appends, syncs, rolls, retention, DeleteRecords,
//! reads and crashes. The disk keeps, per segment file, the bytes written (the
//! page cache) and how many of them are durable; a crash keeps the durable
//! prefix plus a random part of the rest, sometimes zero-filled (a torn
//! write), and recovery scans every file the way `shards` does. The model is
//! the list of batches the log must hold, byte for byte.

use std::collections::BTreeMap;

use super::{run_seeds, Rng};
use crate::log::testing::{push_stored_batches, SimLog, StoredBatch};
use crate::log::{scan_into_segment, LogConfig, PartitionLog, ReadError, ScanStop, Segment};
use crate::record::testing::simple_batch;
use crate::record::BatchHeader;

/// Operations per seed.
const STEPS: usize = 400;

#[derive(Debug, Clone, PartialEq, Eq)]
struct ModelBatch {
    base_offset: i64,
    last_offset: i64,
    bytes: Vec<u8>,
}

struct LogSim {
    rng: Rng,
    sim: SimLog,
    /// Segment base offset → how many of its file's bytes are durable.
    durable_bytes: BTreeMap<i64, usize>,
    /// The log start offset as last written durably.
    durable_log_start_offset: i64,
    /// Every batch the log holds, in order, starting with the one that holds
    /// the log start offset.
    model: Vec<ModelBatch>,
    /// Every offset below this was acknowledged after a sync.
    synced_end_offset: i64,
    now_ms: i64,
    crashes: usize,
}

impl LogSim {
    fn new(seed: u64) -> LogSim {
        let mut rng = Rng::new(seed);
        let config = LogConfig {
            segment_bytes_max: rng.range(300, 6_000),
            segment_ms: rng.range_i64(50, 5_000),
            index_interval_bytes: rng.range(0, 800),
            message_bytes_max: 1 << 20,
        };
        let sim = SimLog::new(PartitionLog::new_empty(config));
        let durable_bytes = sim.files.keys().map(|&base| (base, 0)).collect();
        LogSim {
            rng,
            sim,
            durable_bytes,
            durable_log_start_offset: 0,
            model: Vec::new(),
            synced_end_offset: 0,
            now_ms: 1_000_000,
            crashes: 0,
        }
    }

    fn run(&mut self) {
        for step in 0..STEPS {
            self.now_ms += self.rng.range_i64(0, 200);
            match self.rng.range(0, 100) {
                0..=44 => self.append(),
                45..=59 => self.sync(),
                60..=79 => self.read(),
                80..=85 => self.retention(),
                86..=88 => self.delete_records(),
                _ => self.crash_and_recover(),
            }
            if std::env::var_os("SIM_TRACE").is_some() {
                let log = &self.sim.log;
                eprintln!(
                    "step {step}: start {} end {} synced {} durable start {} model {:?}",
                    log.log_start_offset(),
                    log.next_offset(),
                    self.synced_end_offset,
                    self.durable_log_start_offset,
                    self.model.first().map(|b| b.base_offset)
                );
            }
            self.check(step);
        }
    }

    fn append(&mut self) {
        let batch_count = self.rng.range(1, 4) as usize;
        let record_set: Vec<u8> = (0..batch_count)
            .map(|_| {
                let count = self.rng.range(1, 6) as usize;
                let value_bytes = self.rng.range(0, 300) as usize;
                let timestamp_ms = self.now_ms - self.rng.range_i64(0, 3_000);
                simple_batch(count, value_bytes, timestamp_ms)
            })
            .collect::<Vec<_>>()
            .concat();
        let active_before = self.sim.log.active().base_offset;
        let batches_before = self.sim.batches.len();
        let expected_base = self.sim.log.next_offset();
        let (plan, rolled) = self
            .sim
            .append(record_set, 0, self.now_ms)
            .expect("a valid record set under max.message.bytes appends");
        assert_eq!(plan.base_offset, expected_base, "offsets are dense");
        if rolled {
            // The shard syncs the closed segment and the directory before the
            // new segment takes writes (`Partition::roll`).
            let closed_bytes = self.sim.files[&active_before].len();
            self.durable_bytes.insert(active_before, closed_bytes);
            self.durable_bytes.insert(plan.segment_base_offset, 0);
        }
        for stored in &self.sim.batches[batches_before..] {
            self.model.push(ModelBatch {
                base_offset: stored.base_offset,
                last_offset: stored.last_offset,
                bytes: stored_bytes(&self.sim, stored).to_vec(),
            });
        }
        assert_eq!(
            self.model.last().expect("appended").last_offset,
            plan.last_offset
        );
    }

    /// fdatasync of the active segment; everything appended so far is now
    /// acknowledged (acks=all).
    fn sync(&mut self) {
        let active = self.sim.log.active().base_offset;
        self.durable_bytes
            .insert(active, self.sim.files[&active].len());
        self.synced_end_offset = self.sim.log.next_offset();
    }

    fn read(&mut self) {
        let log_start = self.sim.log.log_start_offset();
        let log_end = self.sim.log.next_offset();
        let offset = self.rng.range_i64(log_start - 2, log_end + 2);
        let max_bytes = self.rng.range(1, 4_000) as usize;
        let window_bytes = self.rng.range(1, 3_000) as usize;
        let result = self.sim.fetch(offset, max_bytes, window_bytes);
        if offset < log_start || offset > log_end {
            assert!(
                matches!(result, Err(ReadError::OffsetOutOfRange { .. })),
                "read at {offset} outside [{log_start}, {log_end}] gave {result:?}"
            );
            return;
        }
        let fetched = result.expect("in range");
        if offset == log_end {
            assert_eq!(fetched, None, "nothing to read at the log end");
            return;
        }
        let fetched = fetched.expect("an offset below the log end has a batch");
        // The model batch holding `offset`; offsets are dense, so one does.
        let first = self
            .model
            .iter()
            .position(|b| b.base_offset <= offset && offset <= b.last_offset)
            .expect("the model holds every offset in [log start, log end)");
        let mut position = 0;
        let mut k = first;
        while position < fetched.len() {
            let header = BatchHeader::parse(&fetched[position..]).expect("whole batches");
            let bytes = &fetched[position..position + header.total_bytes()];
            assert_eq!(bytes, &self.model[k].bytes[..], "read returned other bytes");
            position += bytes.len();
            k += 1;
        }
        let first_bytes = self.model[first].bytes.len();
        assert!(
            position <= max_bytes.max(first_bytes),
            "a read returns more than max_bytes only for its first batch"
        );
    }

    fn retention(&mut self) {
        let retention_ms = if self.rng.chance(1, 2) {
            -1
        } else {
            self.rng.range_i64(0, 10_000)
        };
        let retention_bytes = if self.rng.chance(1, 2) {
            -1
        } else {
            self.rng.range_i64(0, 20_000)
        };
        self.apply_retention(retention_ms, retention_bytes);
    }

    /// As `Partition::apply_retention`: the log start offset is written
    /// durably before the files go.
    fn apply_retention(&mut self, retention_ms: i64, retention_bytes: i64) {
        let doomed = self
            .sim
            .log
            .plan_retention(self.now_ms, retention_ms, retention_bytes);
        if doomed.is_empty() {
            return;
        }
        let removed = self.sim.log.remove_segments(&doomed);
        assert_eq!(removed.len(), doomed.len());
        self.durable_log_start_offset = self.sim.log.log_start_offset();
        for base in doomed {
            self.sim
                .files
                .remove(&base)
                .expect("a removed segment had a file");
            self.durable_bytes.remove(&base);
        }
        self.sim
            .batches
            .retain(|b| self.durable_bytes.contains_key(&b.segment_base_offset));
        self.trim_model();
    }

    fn delete_records(&mut self) {
        let log_start = self.sim.log.log_start_offset();
        let log_end = self.sim.log.next_offset();
        let offset = self.rng.range_i64(log_start, log_end);
        let moved = self
            .sim
            .log
            .advance_log_start_offset(offset)
            .expect("an offset within the log");
        assert_eq!(moved, offset.max(log_start));
        self.durable_log_start_offset = moved;
        self.apply_retention(-1, -1);
        self.trim_model();
    }

    /// Drops model batches wholly below the log start offset.
    fn trim_model(&mut self) {
        let log_start = self.sim.log.log_start_offset();
        self.model.retain(|b| b.last_offset >= log_start);
    }

    /// Loses every un-synced byte except a random prefix of it per file
    /// (sometimes zero-filled: the size reached the disk, the data did not),
    /// then recovers the way `open_partition` does after an unclean stop.
    fn crash_and_recover(&mut self) {
        self.crashes += 1;
        let config = *self.sim.log.config();
        let mut files = BTreeMap::new();
        for (&base, written) in &self.sim.files {
            let durable = self.durable_bytes[&base];
            assert!(durable <= written.len());
            let kept = durable + self.rng.index(written.len() - durable + 1);
            let mut bytes = written[..kept].to_vec();
            if kept > durable && self.rng.chance(1, 4) {
                let from = durable + self.rng.index(kept - durable);
                bytes[from..].fill(0);
            }
            files.insert(base, bytes);
        }
        let mut segments = Vec::with_capacity(files.len());
        for (&base, bytes) in files.iter_mut() {
            let segment = self.scan(base, bytes, &config);
            segments.push(segment);
        }
        let log = PartitionLog::from_segments(config, segments, self.durable_log_start_offset);
        self.durable_bytes = files.iter().map(|(&base, b)| (base, b.len())).collect();
        self.sim = SimLog {
            batches: stored_batches(&log, &files),
            log,
            files,
        };
        // `open_partition` persists a start offset that recovery moved back.
        self.durable_log_start_offset = self.sim.log.log_start_offset();

        // Recovery may keep un-synced batches that reached the disk whole,
        // but only a prefix of them, byte for byte, and every synced one.
        let recovered_end = self.sim.log.next_offset();
        assert!(
            recovered_end >= self.synced_end_offset,
            "recovered log end {recovered_end} is below the synced end {}",
            self.synced_end_offset
        );
        self.model.retain(|b| b.last_offset < recovered_end);
        if let Some(last) = self.model.last() {
            assert_eq!(
                last.last_offset + 1,
                recovered_end,
                "recovery ended inside a batch or past the model"
            );
        }
        for (model, stored) in self.model.iter().rev().zip(self.sim.batches.iter().rev()) {
            assert_eq!(
                model.bytes,
                stored_bytes(&self.sim, stored),
                "recovered other bytes"
            );
        }
        self.trim_model();
        // What was read back after the crash came from the disk.
        self.synced_end_offset = recovered_end;
    }

    /// `scan_segment` in `shards`: windows of random size, grown to the batch
    /// size on `Incomplete`; the file is cut after the last valid batch.
    fn scan(&mut self, base: i64, bytes: &mut Vec<u8>, config: &LogConfig) -> Segment {
        let mut segment = Segment::new(base);
        let mut position = 0;
        let mut want = self.rng.range(1, 2_000) as usize;
        for _round in 0..bytes.len() + 2 {
            if position >= bytes.len() {
                break;
            }
            let end = bytes.len().min(position + want);
            let outcome = scan_into_segment(
                &bytes[position..end],
                &mut segment,
                config.index_interval_bytes,
                self.now_ms,
            );
            position += outcome.valid_bytes;
            match outcome.stop {
                ScanStop::Clean => want = self.rng.range(1, 2_000) as usize,
                ScanStop::Incomplete { needed_bytes } => {
                    if position + needed_bytes > bytes.len() {
                        break;
                    }
                    want = needed_bytes;
                }
                ScanStop::Corrupt { .. } => break,
            }
        }
        assert_eq!(segment.size_bytes as usize, position);
        bytes.truncate(position);
        segment
    }

    /// Invariants that hold after every step.
    fn check(&self, step: usize) {
        let log = &self.sim.log;
        let context = || format!("step {step}, {} crashes", self.crashes);
        assert_eq!(
            self.model
                .iter()
                .map(|b| (b.base_offset, b.last_offset))
                .collect::<Vec<_>>(),
            self.sim
                .batches
                .iter()
                .filter(|b| b.last_offset >= log.log_start_offset())
                .map(|b| (b.base_offset, b.last_offset))
                .collect::<Vec<_>>(),
            "the log's batches differ from the model ({})",
            context()
        );
        for pair in self.model.windows(2) {
            assert_eq!(
                pair[0].last_offset + 1,
                pair[1].base_offset,
                "offsets are dense"
            );
        }
        match (self.model.first(), self.model.last()) {
            (Some(first), Some(last)) => {
                assert!(first.base_offset <= log.log_start_offset());
                assert_eq!(last.last_offset + 1, log.next_offset(), "{}", context());
            }
            _ => assert_eq!(log.log_start_offset(), log.next_offset(), "{}", context()),
        }
        assert!(self.synced_end_offset <= log.next_offset());
        for segment in log.segments() {
            assert_eq!(
                segment.size_bytes as usize,
                self.sim.files[&segment.base_offset].len(),
                "the segment's size is its file's ({})",
                context()
            );
            assert!(self.durable_bytes[&segment.base_offset] <= segment.size_bytes as usize);
        }
        assert_eq!(log.segments().count(), self.sim.files.len());
    }
}

fn stored_bytes<'a>(sim: &'a SimLog, stored: &StoredBatch) -> &'a [u8] {
    &sim.files[&stored.segment_base_offset][stored.position..stored.position + stored.bytes]
}

/// The batches of recovered files, in log order.
fn stored_batches(log: &PartitionLog, files: &BTreeMap<i64, Vec<u8>>) -> Vec<StoredBatch> {
    let mut batches = Vec::new();
    for segment in log.segments() {
        let file = &files[&segment.base_offset];
        push_stored_batches(&mut batches, segment.base_offset, file, 0);
    }
    batches
}

#[test]
fn log_survives_crashes() {
    run_seeds("log_survives_crashes", 0x10_6000, |seed| {
        let mut sim = LogSim::new(seed);
        sim.run();
    });
}
