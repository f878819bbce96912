//! A partition driven directly on a glommio executor, over files in a
//! scratch directory: the parts of its life no single engine test covers.

use std::cell::{Cell, RefCell};
use std::path::PathBuf;
use std::rc::Rc;

use bytes::Bytes;
use engine::log::LogConfig;
use engine::record::testing::{encode_batch, BatchSpec, TestRecord};
use engine::record::BatchHeader;
use engine::txn::{BatchIdentity, ProducerStates, SequenceVerdict};
use glommio::{LocalExecutorBuilder, Placement};

use super::compaction::CompactionFence;
use super::{FileBudget, OpenedLog, Partition};
use crate::disk::direct_appender::SegmentWriteMode;
use crate::disk::segment_files::create_partition;

/// A fresh scratch directory, removed when dropped.
struct ScratchDir(PathBuf);

impl ScratchDir {
    fn new(name: &str) -> ScratchDir {
        let dir = std::env::temp_dir().join(format!("gregor-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch dir");
        ScratchDir(dir)
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn on_executor<F, Fut>(test: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + 'static,
{
    LocalExecutorBuilder::new(Placement::Unbound)
        .spawn(test)
        .expect("executor")
        .join()
        .expect("test body");
}

async fn new_partition(dir: PathBuf) -> Rc<Partition> {
    new_partition_within(dir, FileBudget::new(16, 16)).await
}

async fn new_partition_within(dir: PathBuf, budget: Rc<FileBudget>) -> Rc<Partition> {
    let (log, files) = create_partition(&dir, LogConfig::default())
        .await
        .expect("create");
    let opened = OpenedLog {
        log,
        files,
        producers: ProducerStates::default(),
        txns: Default::default(),
    };
    Partition::new(
        "t".into(),
        0,
        dir,
        opened,
        SegmentWriteMode::Buffered,
        Rc::new(RefCell::new(Default::default())),
        budget,
    )
}

/// An idempotent producer's batch of `count` records, as a leader wrote it.
fn producer_batch(base_offset: i64, base_sequence: i32, count: usize) -> Vec<u8> {
    encode_batch(&BatchSpec {
        base_offset,
        leader_epoch: 1,
        producer_id: 7,
        producer_epoch: 0,
        base_sequence,
        records: (0..count)
            .map(|i| TestRecord::value(vec![i as u8; 10]))
            .collect(),
        ..Default::default()
    })
}

fn identity(batch: &[u8]) -> BatchIdentity {
    BatchIdentity::of(&BatchHeader::parse(batch).expect("header")).expect("idempotent")
}

#[test]
fn a_follower_truncation_forgets_the_cut_batches_producer_state() {
    let scratch = ScratchDir::new("truncation-producers");
    let dir = scratch.0.clone();
    on_executor(move || async move {
        let partition = new_partition(dir).await;
        partition.become_follower(2, 1);
        let first = producer_batch(0, 0, 2);
        let second = producer_batch(2, 2, 2);
        for batch in [&first, &second] {
            let appended = partition
                .enqueue_from_leader(Bytes::copy_from_slice(batch))
                .await
                .expect("answered");
            assert!(appended.is_ok(), "{appended:?}");
        }
        assert_eq!(
            partition.producers.borrow().check(&identity(&second)),
            SequenceVerdict::Duplicate { base_offset: 2 }
        );

        let log_end = partition.truncate_log(2).await.expect("truncate");

        assert_eq!(log_end, 2);
        // The cut batch is new again (a retry of it must be appended, not
        // answered with an offset this log no longer has); the kept one is
        // still a duplicate.
        let producers = partition.producers.borrow();
        assert_eq!(producers.check(&identity(&second)), SequenceVerdict::Append);
        assert_eq!(
            producers.check(&identity(&first)),
            SequenceVerdict::Duplicate { base_offset: 0 }
        );
    });
}

#[test]
fn a_cleaning_pass_gives_up_after_a_truncation_and_a_truncation_waits_for_a_commit() {
    on_executor(|| async {
        let fence = Rc::new(CompactionFence::default());
        let pass = fence.generation();
        fence.begin_truncation().await;
        assert!(!fence.begin_commit(pass), "the pass read a log since cut");

        let pass = fence.generation();
        assert!(fence.begin_commit(pass));
        let truncated = Rc::new(Cell::new(false));
        let truncation = glommio::spawn_local({
            let (fence, truncated) = (fence.clone(), truncated.clone());
            async move {
                fence.begin_truncation().await;
                truncated.set(true);
            }
        });
        glommio::executor().yield_now().await;
        assert!(!truncated.get(), "a truncation began during a commit");
        fence.end_commit();
        truncation.await;
        assert!(truncated.get());
        assert_ne!(fence.generation(), pass);
    });
}

#[test]
fn partitions_share_a_file_budget_and_reopen_closed_files_on_demand() {
    let scratch = ScratchDir::new("file-budget");
    let dir = scratch.0.clone();
    on_executor(move || async move {
        let budget = FileBudget::new(1, 16);
        let first = new_partition_within(dir.join("a-0"), budget.clone()).await;
        let second = new_partition_within(dir.join("b-0"), budget.clone()).await;
        assert_eq!(
            budget.open_files(),
            1,
            "creating the second closed the first's file"
        );
        let batch = |value: u8| {
            Bytes::from(encode_batch(&BatchSpec {
                records: vec![TestRecord::value(vec![value; 100])],
                ..Default::default()
            }))
        };
        for round in 0..3u8 {
            for (i, partition) in [&first, &second].into_iter().enumerate() {
                let appended = partition
                    .enqueue(batch(round * 2 + i as u8))
                    .await
                    .expect("answered");
                assert_eq!(appended.map(|a| a.base_offset), Ok(round as i64));
                assert!(budget.open_files() <= 1);
            }
        }
        for (i, partition) in [&first, &second].into_iter().enumerate() {
            let bytes = partition
                .read_bytes(0, 1 << 20, crate::mesh::data::ReadBound::HighWatermark)
                .await
                .expect("read");
            let mut position = 0;
            for round in 0..3u8 {
                let header = BatchHeader::parse(&bytes[position..]).expect("a batch");
                assert_eq!(header.base_offset, round as i64);
                let end = position + header.total_bytes();
                let value = round * 2 + i as u8;
                let batch = &bytes[position..end];
                assert!(
                    batch.windows(100).any(|w| w == [value; 100]),
                    "batch {round} of {i}"
                );
                position = end;
            }
            assert!(budget.open_files() <= 1);
        }
        let counters = budget.counters();
        assert!(
            counters.reopens >= 6 && counters.evictions >= 6,
            "{counters:?}"
        );
        // Idle files close; the next read opens again.
        assert_eq!(budget.close_idle(crate::clock::steady_ms() + 1, 0).await, 1);
        assert_eq!(budget.open_files(), 0);
        assert!(first
            .read_bytes(0, 1 << 20, crate::mesh::data::ReadBound::HighWatermark)
            .await
            .is_ok());
        assert_eq!(budget.open_files(), 1);
    });
}

#[test]
fn a_shard_duplicates_no_more_segment_descriptors_than_its_bound() {
    let scratch = ScratchDir::new("slice-bound");
    let dir = scratch.0.clone();
    on_executor(move || async move {
        let budget = FileBudget::new(16, 2);
        let partition = new_partition_within(dir.join("t-0"), budget.clone()).await;
        let batch = Bytes::from(encode_batch(&BatchSpec {
            records: vec![TestRecord::value(vec![7; 100])],
            ..Default::default()
        }));
        partition
            .enqueue(batch)
            .await
            .expect("answered")
            .expect("appended");
        let read = || async {
            partition
                .read(0, 1 << 20, crate::mesh::data::ReadBound::LogEnd)
                .await
                .expect("read")
        };
        let first = read().await;
        let second = read().await;
        assert!(first.records.is_some() && second.records.is_some());
        assert_eq!(budget.slices().in_use(), 2);
        // At the bound: nothing to send this time, not an error.
        assert!(read().await.records.is_none());
        drop(first);
        assert_eq!(budget.slices().in_use(), 1);
        assert!(
            read().await.records.is_some(),
            "a sent response gives its descriptor back"
        );
    });
}

/// A transactional batch of producer 9 as a client sends it.
fn transactional_batch(producer_epoch: i16, base_sequence: i32, count: usize) -> Vec<u8> {
    encode_batch(&BatchSpec {
        attributes: 0x10,
        producer_id: 9,
        producer_epoch,
        base_sequence,
        records: (0..count)
            .map(|i| TestRecord::value(vec![i as u8; 10]))
            .collect(),
        ..Default::default()
    })
}

#[test]
fn an_open_transaction_holds_the_last_stable_offset_until_its_marker_and_recovery_agrees() {
    use crate::disk::producer_snapshots::recover_producer_states;
    use crate::mesh::data::ReadBound;
    use engine::record::TxnMarker;

    let scratch = ScratchDir::new("transactions");
    let dir = scratch.0.clone();
    on_executor(move || async move {
        let partition = new_partition(dir.clone()).await;
        let plain = || Bytes::copy_from_slice(&encode_batch(&BatchSpec::default()));
        let append = |records: Bytes| {
            let partition = partition.clone();
            async move {
                partition
                    .enqueue(records)
                    .await
                    .expect("answered")
                    .expect("appended")
                    .base_offset
            }
        };
        assert_eq!(append(plain()).await, 0);
        let first = append(Bytes::from(transactional_batch(0, 0, 2))).await;
        assert_eq!(first, 1);
        assert_eq!(append(plain()).await, 3);
        assert_eq!(append(Bytes::from(transactional_batch(0, 2, 1))).await, 4);
        assert_eq!(partition.high_watermark_offset(), 5);
        assert_eq!(partition.last_stable_offset(), 1, "the transaction is open");

        // read_committed reads stop at the open transaction's first batch.
        let committed = partition
            .read_bytes(0, 1 << 20, ReadBound::LastStable)
            .await
            .expect("read");
        let header = BatchHeader::parse(&committed).expect("one batch");
        assert_eq!(
            (header.base_offset, committed.len()),
            (0, header.total_bytes())
        );
        let uncommitted = partition
            .read_bytes(0, 1 << 20, ReadBound::HighWatermark)
            .await
            .expect("read");
        assert!(uncommitted.len() > committed.len());

        // A marker with an older epoch is refused; the abort goes in.
        let stale = TxnMarker {
            producer_id: 9,
            producer_epoch: 1,
            commit: false,
            coordinator_epoch: 0,
        };
        let abort = partition.enqueue_marker(stale).await.expect("answered");
        assert_eq!(abort.expect("appended").base_offset, 5);
        let older = TxnMarker {
            producer_epoch: 0,
            ..stale
        };
        let refused = partition.enqueue_marker(older).await.expect("answered");
        assert_eq!(
            refused.err(),
            Some(engine::protocol::INVALID_PRODUCER_EPOCH)
        );
        assert_eq!(partition.last_stable_offset(), 6);
        let aborted = partition.aborted_transactions(0, 6);
        assert_eq!(
            aborted
                .iter()
                .map(|a| (a.producer_id, a.first_offset, a.last_offset))
                .collect::<Vec<_>>(),
            vec![(9, 1, 5)]
        );

        // A replay of the log rebuilds the same transactions.
        let log = partition.log.borrow().clone();
        let (_, mut replayed) = recover_producer_states(&dir, &log, &*partition, 0)
            .await
            .expect("replay");
        replayed.on_high_watermark(partition.high_watermark_offset());
        assert_eq!(replayed, *partition.txns.borrow());
        // So does the snapshot a clean close writes, with the producer's
        // next transaction (at the epoch its abort marker carried) open.
        let next = append(Bytes::from(transactional_batch(1, 0, 1))).await;
        assert_eq!(next, 6);
        assert_eq!(partition.last_stable_offset(), 6);
        let log = partition.log.borrow().clone();
        partition.close().await.expect("close");
        let (_, mut from_snapshot) = recover_producer_states(&dir, &log, &*partition, 0)
            .await
            .expect("snapshot");
        from_snapshot.on_high_watermark(partition.high_watermark_offset());
        assert_eq!(from_snapshot, *partition.txns.borrow());
        assert!(std::fs::read_dir(&dir).expect("dir").any(|e| e
            .expect("entry")
            .path()
            .extension()
            == Some("snapshot".as_ref())));
    });
}
