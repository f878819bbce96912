//! `__transaction_state` records in Kafka's layouts, so Kafka's tools can
//! read them and a log written by Kafka could be read here: the key is
//! `TransactionLogKey` v0 (the transactional id) and the value
//! `TransactionLogValue`, written as v1 (flexible, with the tagged fields
//! PreviousProducerId = 0, NextProducerId = 1, ClientTransactionVersion = 2)
//! and read as v0 or v1. Both are prefixed by their version (int16). A null
//! value is a tombstone: the id expired.

use std::collections::BTreeSet;

use bytes::Bytes;

use super::coordinator::{TxnRecord, TxnState, TxnVersion};
use crate::protocol::wire::{WireReader, WireWriter};

/// The internal topic that holds the transaction coordinators' state.
pub const TRANSACTION_STATE_TOPIC: &str = "__transaction_state";
/// `transaction.state.log.num.partitions` default.
pub const TRANSACTION_STATE_PARTITIONS_DEFAULT: u32 = 50;

const KEY_VERSION: i16 = 0;
const VALUE_VERSION: i16 = 1;
const TAG_PREVIOUS_PRODUCER_ID: u32 = 0;
const TAG_NEXT_PRODUCER_ID: u32 = 1;
const TAG_CLIENT_TRANSACTION_VERSION: u32 = 2;
/// Bounds on what one stored value may claim (a damaged record must not
/// make the loader allocate without limit).
const TOPICS_MAX: usize = 100_000;
const PARTITIONS_PER_TOPIC_MAX: usize = 1_000_000;
const TAGGED_FIELDS_MAX: u32 = 64;

/// The `__transaction_state` partition of a transactional id: the same
/// partitioner Kafka uses for it as for groups.
pub fn transaction_state_partition_for(transactional_id: &str, partition_count: u32) -> i32 {
    crate::group::offsets_partition_for(transactional_id, partition_count)
}

/// One stored record: a transactional id and its state (None: tombstone).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnLogRecord {
    pub transactional_id: String,
    pub value: Option<TxnRecord>,
}

impl TxnLogRecord {
    /// (key, value) as stored in a record.
    pub fn encode(&self) -> (Bytes, Option<Bytes>) {
        let mut key = WireWriter::default();
        key.i16(KEY_VERSION).string(&self.transactional_id);
        (Bytes::from(key.buf), self.value.as_ref().map(encode_value))
    }

    /// Decodes a stored record; None for another key version or damage.
    pub fn decode(key: &[u8], value: Option<&[u8]>) -> Option<TxnLogRecord> {
        let mut k = WireReader::new(key);
        if k.i16()? != KEY_VERSION {
            return None;
        }
        let transactional_id = k.string()?;
        if !k.is_empty() {
            return None;
        }
        let value = match value {
            None => None,
            Some(bytes) => Some(decode_value(bytes)?),
        };
        Some(TxnLogRecord {
            transactional_id,
            value,
        })
    }
}

fn encode_value(record: &TxnRecord) -> Bytes {
    let mut w = WireWriter::default();
    w.i16(VALUE_VERSION)
        .i64(record.producer_id)
        .i16(record.producer_epoch)
        .i32(record.timeout_ms)
        .i8(record.state.id());
    let mut topics: Vec<(&str, Vec<i32>)> = Vec::new();
    for (topic, partition) in &record.partitions {
        match topics.last_mut() {
            Some((last, partitions)) if *last == topic.as_str() => partitions.push(*partition),
            _ => topics.push((topic.as_str(), vec![*partition])),
        }
    }
    // Kafka writes an Empty transaction's partitions as null (0).
    if record.state == TxnState::Empty {
        w.uvarint(0);
    } else {
        w.uvarint(topics.len() as u32 + 1);
    }
    for (topic, partitions) in &topics {
        w.compact_string(topic).uvarint(partitions.len() as u32 + 1);
        for p in partitions {
            w.i32(*p);
        }
        w.uvarint(0); // no tagged fields
    }
    w.i64(record.last_update_ms).i64(record.start_ms);
    let client_version: i16 = match record.version {
        TxnVersion::V1 => 0,
        TxnVersion::V2 => 2,
    };
    let mut tagged: Vec<(u32, Vec<u8>)> = Vec::new();
    if record.previous_producer_id != -1 {
        let bytes = record.previous_producer_id.to_be_bytes().to_vec();
        tagged.push((TAG_PREVIOUS_PRODUCER_ID, bytes));
    }
    if record.next_producer_id != -1 {
        let bytes = record.next_producer_id.to_be_bytes().to_vec();
        tagged.push((TAG_NEXT_PRODUCER_ID, bytes));
    }
    if client_version != 0 {
        let bytes = client_version.to_be_bytes().to_vec();
        tagged.push((TAG_CLIENT_TRANSACTION_VERSION, bytes));
    }
    w.uvarint(tagged.len() as u32);
    for (tag, bytes) in tagged {
        w.uvarint(tag).uvarint(bytes.len() as u32);
        w.buf.extend_from_slice(&bytes);
    }
    Bytes::from(w.buf)
}

fn decode_value(bytes: &[u8]) -> Option<TxnRecord> {
    let mut v = WireReader::new(bytes);
    let version = v.i16()?;
    if !(0..=VALUE_VERSION).contains(&version) {
        return None;
    }
    let flexible = version >= 1;
    let producer_id = v.i64()?;
    let producer_epoch = v.i16()?;
    let timeout_ms = v.i32()?;
    let state = TxnState::from_id(v.i8()?)?;
    let mut partitions = BTreeSet::new();
    // A null array (-1, or 0 when flexible) holds no partitions.
    let topics = array_len(&mut v, flexible, TOPICS_MAX)?.unwrap_or(0);
    for _ in 0..topics {
        let topic = if flexible {
            v.compact_string()?
        } else {
            v.string()?
        };
        let count = array_len(&mut v, flexible, PARTITIONS_PER_TOPIC_MAX)??;
        for _ in 0..count {
            partitions.insert((topic.clone(), v.i32()?));
        }
        if flexible {
            for _ in 0..tagged_count(&mut v)? {
                let _tag = v.uvarint()?;
                let size = v.uvarint()?;
                v.take(size as usize)?;
            }
        }
    }
    let last_update_ms = v.i64()?;
    let start_ms = v.i64()?;
    let mut record = TxnRecord {
        producer_id,
        previous_producer_id: -1,
        next_producer_id: -1,
        producer_epoch,
        timeout_ms,
        state,
        partitions,
        last_update_ms,
        start_ms,
        version: TxnVersion::V1,
    };
    if flexible {
        for _ in 0..tagged_count(&mut v)? {
            let tag = v.uvarint()?;
            let size = v.uvarint()?;
            let mut field = WireReader::new(v.take(size as usize)?);
            match (tag, size) {
                (TAG_PREVIOUS_PRODUCER_ID, 8) => record.previous_producer_id = field.i64()?,
                (TAG_NEXT_PRODUCER_ID, 8) => record.next_producer_id = field.i64()?,
                (TAG_CLIENT_TRANSACTION_VERSION, 2) => {
                    record.version = if field.i16()? >= 2 {
                        TxnVersion::V2
                    } else {
                        TxnVersion::V1
                    }
                }
                // A known tag of the wrong size is damage; unknown tags are
                // for newer readers.
                (TAG_PREVIOUS_PRODUCER_ID..=TAG_CLIENT_TRANSACTION_VERSION, _) => return None,
                _ => {}
            }
        }
    }
    v.is_empty().then_some(record)
}

/// An array length: Some(None) for null, Some(Some(n)) up to `max`, None
/// when damaged or over `max`.
fn array_len(v: &mut WireReader, flexible: bool, max: usize) -> Option<Option<usize>> {
    let len = if flexible {
        match v.uvarint()? {
            0 => return Some(None),
            n => (n - 1) as usize,
        }
    } else {
        match v.i32()? {
            -1 => return Some(None),
            n => usize::try_from(n).ok()?,
        }
    };
    (len <= max).then_some(Some(len))
}

fn tagged_count(v: &mut WireReader) -> Option<u32> {
    let count = v.uvarint()?;
    (count <= TAGGED_FIELDS_MAX).then_some(count)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn record() -> TxnRecord {
        TxnRecord {
            producer_id: 4_000_000_001,
            previous_producer_id: -1,
            next_producer_id: -1,
            producer_epoch: 7,
            timeout_ms: 60_000,
            state: TxnState::Ongoing,
            partitions: [("orders", 0), ("orders", 3), ("__consumer_offsets", 12)]
                .into_iter()
                .map(|(t, p)| (t.to_string(), p))
                .collect(),
            last_update_ms: 1_700_000_000_123,
            start_ms: 1_700_000_000_000,
            version: TxnVersion::V1,
        }
    }

    #[test]
    fn a_record_round_trips_and_its_key_is_kafkas() {
        let stored = TxnLogRecord {
            transactional_id: "copier-1".to_string(),
            value: Some(record()),
        };
        let (key, value) = stored.encode();
        // Version 0, then an int16-length string.
        assert_eq!(&key[..], b"\x00\x00\x00\x08copier-1");
        let value = value.unwrap();
        assert_eq!(&value[..2], &[0, 1], "written as v1");
        assert_eq!(TxnLogRecord::decode(&key, Some(&value)), Some(stored));
    }

    #[test]
    fn v2_fields_travel_in_tagged_fields() {
        let mut r = record();
        r.version = TxnVersion::V2;
        r.previous_producer_id = 11;
        r.next_producer_id = 12;
        r.state = TxnState::PrepareCommit;
        let stored = TxnLogRecord {
            transactional_id: "t".to_string(),
            value: Some(r),
        };
        let (key, value) = stored.encode();
        assert_eq!(TxnLogRecord::decode(&key, value.as_deref()), Some(stored));
    }

    #[test]
    fn many_partitions_and_an_empty_state_round_trip() {
        let mut r = record();
        r.partitions = (0..300).map(|p| ("t".to_string(), p)).collect();
        for state in [TxnState::PrepareAbort, TxnState::Empty] {
            r.state = state;
            if state == TxnState::Empty {
                r.partitions.clear();
            }
            let stored = TxnLogRecord {
                transactional_id: "many".to_string(),
                value: Some(r.clone()),
            };
            let (key, value) = stored.encode();
            assert_eq!(TxnLogRecord::decode(&key, value.as_deref()), Some(stored));
        }
    }

    #[test]
    fn a_tombstone_has_no_value() {
        let stored = TxnLogRecord {
            transactional_id: "gone".to_string(),
            value: None,
        };
        let (key, value) = stored.encode();
        assert!(value.is_none());
        assert_eq!(TxnLogRecord::decode(&key, None), Some(stored));
    }

    #[test]
    fn a_v0_value_is_read() {
        // Kafka's v0 layout: plain strings and arrays, no tagged fields.
        let mut v = WireWriter::default();
        v.i16(0)
            .i64(42)
            .i16(3)
            .i32(10_000)
            .i8(TxnState::CompleteAbort.id())
            .i32(1)
            .string("t")
            .i32(2)
            .i32(0)
            .i32(1)
            .i64(5)
            .i64(-1);
        let record = decode_value(&v.buf).unwrap();
        assert_eq!(
            (record.producer_id, record.producer_epoch, record.state),
            (42, 3, TxnState::CompleteAbort)
        );
        assert_eq!(record.partitions.len(), 2);
        assert_eq!(record.version, TxnVersion::V1);
    }

    #[test]
    fn the_partition_of_an_id_is_kafkas() {
        // Same partitioner as groups (checked against Kafka there).
        assert_eq!(
            transaction_state_partition_for("copier-1", TRANSACTION_STATE_PARTITIONS_DEFAULT),
            crate::group::offsets_partition_for("copier-1", TRANSACTION_STATE_PARTITIONS_DEFAULT)
        );
    }

    proptest! {
        /// Damage never panics: a cut or altered value decodes to None or
        /// to some record, and a whole one decodes to itself.
        #[test]
        fn damaged_values_never_panic(cut in 0usize..200, flip in 0usize..200, byte in any::<u8>()) {
            let (key, value) = TxnLogRecord {
                transactional_id: "x".to_string(),
                value: Some(record()),
            }
            .encode();
            let value = value.unwrap();
            let cut = cut.min(value.len());
            let _ = TxnLogRecord::decode(&key, Some(&value[..cut]));
            let mut altered = value.to_vec();
            let at = flip % altered.len();
            altered[at] ^= byte;
            let _ = TxnLogRecord::decode(&key, Some(&altered));
        }
    }
}
