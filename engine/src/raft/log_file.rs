//! The quorum's file: what a node persisted (`PersistedQuorum`) as an
//! append-only sequence of CRC frames (`metadata::frame_payload`), each a
//! kind byte and a protobuf message: an entry, or a hard state. A driver
//! appends one ready's entries and hard state and fsyncs; reading replays
//! the frames in order, an entry at index i replacing everything from i on
//! (a follower's divergent tail), the last hard state winning. A torn tail
//! (a crash mid-append, never acknowledged) ends the valid prefix.
//!
//! Also the network form of raft messages between quorum members.

use protobuf::Message as _;

use super::{PersistedQuorum, QuorumEntry, QuorumHardState, QuorumMessage};
use crate::metadata::{frame_payload, split_frames};

const KIND_ENTRY: u8 = 1;
const KIND_HARD_STATE: u8 = 2;

fn frame(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut payload = Vec::with_capacity(1 + body.len());
    payload.push(kind);
    payload.extend_from_slice(body);
    frame_payload(&payload)
}

/// The bytes to append for one ready: its entries, then its hard state.
pub fn encode_quorum_log(entries: &[QuorumEntry], hard_state: Option<&QuorumHardState>) -> Vec<u8> {
    let mut out = Vec::new();
    for entry in entries {
        let body = entry.write_to_bytes().expect("in-memory protobuf encode");
        out.extend_from_slice(&frame(KIND_ENTRY, &body));
    }
    if let Some(hard_state) = hard_state {
        let body = hard_state
            .write_to_bytes()
            .expect("in-memory protobuf encode");
        out.extend_from_slice(&frame(KIND_HARD_STATE, &body));
    }
    out
}

/// A whole persisted state as one file's content (start-up rewrites the
/// file compactly, without the entries a follower overwrote).
pub fn encode_persisted_quorum(persisted: &PersistedQuorum) -> Vec<u8> {
    encode_quorum_log(&persisted.entries, Some(&persisted.hard_state))
}

#[derive(Debug, Clone, PartialEq)]
pub struct DecodedQuorumLog {
    pub persisted: PersistedQuorum,
    /// Bytes of the valid prefix.
    pub valid_bytes: usize,
    /// Why decoding stopped before the end, if it did.
    pub stopped: Option<String>,
}

pub fn decode_quorum_log(buf: &[u8]) -> DecodedQuorumLog {
    let split = split_frames(buf);
    let mut persisted = PersistedQuorum::default();
    let mut valid_bytes = split.valid_bytes;
    let mut stopped = split.stopped;
    for (position, payload) in split.payloads {
        if let Err(reason) = replay_frame(&mut persisted, payload) {
            valid_bytes = position;
            stopped = Some(format!("frame at byte {position}: {reason}"));
            break;
        }
    }
    // A hard state never commits past the entries it was written with.
    let last_index = persisted.entries.last().map_or(0, |e| e.index);
    if persisted.hard_state.commit > last_index && stopped.is_none() {
        stopped = Some(format!(
            "hard state commits {} but the log ends at {last_index}",
            persisted.hard_state.commit
        ));
    }
    DecodedQuorumLog {
        persisted,
        valid_bytes,
        stopped,
    }
}

fn replay_frame(persisted: &mut PersistedQuorum, payload: &[u8]) -> Result<(), String> {
    let (&kind, body) = payload.split_first().ok_or("empty frame")?;
    match kind {
        KIND_ENTRY => {
            let entry = QuorumEntry::parse_from_bytes(body).map_err(|e| e.to_string())?;
            let next = persisted.entries.len() as u64 + 1;
            if entry.index == 0 || entry.index > next {
                return Err(format!(
                    "entry {} leaves a gap after {}",
                    entry.index,
                    next - 1
                ));
            }
            persisted.take(std::slice::from_ref(&entry), None);
            Ok(())
        }
        KIND_HARD_STATE => {
            let hard_state = QuorumHardState::parse_from_bytes(body).map_err(|e| e.to_string())?;
            persisted.take(&[], Some(&hard_state));
            Ok(())
        }
        other => Err(format!("unknown frame kind {other}")),
    }
}

/// A raft message as sent between quorum members.
pub fn encode_message(message: &QuorumMessage) -> Vec<u8> {
    message.write_to_bytes().expect("in-memory protobuf encode")
}

/// A raft message from the network; malformed bytes are an error, never a
/// panic.
pub fn decode_message(bytes: &[u8]) -> Result<QuorumMessage, String> {
    QuorumMessage::parse_from_bytes(bytes).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn entry(index: u64, term: u64, data: &[u8]) -> QuorumEntry {
        QuorumEntry {
            index,
            term,
            data: data.to_vec().into(),
            ..Default::default()
        }
    }

    fn hard_state(term: u64, vote: u64, commit: u64) -> QuorumHardState {
        QuorumHardState {
            term,
            vote,
            commit,
            ..Default::default()
        }
    }

    #[test]
    fn appends_replay_with_overwritten_tails_and_the_last_hard_state() {
        let mut file = encode_quorum_log(
            &[entry(1, 1, b"a"), entry(2, 1, b"b"), entry(3, 1, b"c")],
            Some(&hard_state(1, 1, 1)),
        );
        // A new leader overwrote entries 2 and 3.
        file.extend(encode_quorum_log(
            &[entry(2, 2, b"B")],
            Some(&hard_state(2, 2, 2)),
        ));
        let decoded = decode_quorum_log(&file);
        assert_eq!(decoded.stopped, None);
        assert_eq!(decoded.valid_bytes, file.len());
        assert_eq!(
            decoded.persisted.entries,
            vec![entry(1, 1, b"a"), entry(2, 2, b"B")]
        );
        assert_eq!(decoded.persisted.hard_state, hard_state(2, 2, 2));
        let rewritten = encode_persisted_quorum(&decoded.persisted);
        assert_eq!(decode_quorum_log(&rewritten).persisted, decoded.persisted);
    }

    #[test]
    fn a_gap_or_a_commit_past_the_log_is_corruption() {
        let gap = encode_quorum_log(&[entry(1, 1, b"a"), entry(3, 1, b"c")], None);
        let decoded = decode_quorum_log(&gap);
        assert_eq!(decoded.persisted.entries, vec![entry(1, 1, b"a")]);
        assert!(decoded.stopped.unwrap().contains("gap"));
        let ahead = encode_quorum_log(&[entry(1, 1, b"a")], Some(&hard_state(1, 1, 2)));
        assert!(decode_quorum_log(&ahead).stopped.is_some());
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(decode_message(&[0xff; 7]).is_err());
        let decoded = decode_quorum_log(&frame(9, b"x"));
        assert_eq!(decoded.valid_bytes, 0);
        assert!(decoded.stopped.unwrap().contains("unknown frame kind"));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn a_torn_append_keeps_the_frames_before_it(cut in any::<prop::sample::Index>()) {
            let first = encode_quorum_log(&[entry(1, 1, b"one"), entry(2, 1, b"two")], Some(&hard_state(1, 1, 2)));
            let mut file = first.clone();
            file.extend(encode_quorum_log(&[entry(3, 1, b"three")], Some(&hard_state(1, 1, 3))));
            let cut = first.len() + cut.index(file.len() - first.len());
            let decoded = decode_quorum_log(&file[..cut]);
            prop_assert!(decoded.persisted.entries.len() >= 2);
            prop_assert!(decoded.persisted.hard_state.commit >= 2);
            prop_assert!(decoded.valid_bytes <= cut);
        }

        #[test]
        fn messages_round_trip(term in any::<u64>(), index in any::<u64>(), data in prop::collection::vec(any::<u8>(), 0..64)) {
            let message = QuorumMessage {
                to: 2,
                from: 1,
                term,
                index,
                entries: vec![entry(index, term, &data)].into(),
                ..Default::default()
            };
            prop_assert_eq!(decode_message(&encode_message(&message)).unwrap(), message);
        }
    }
}
