//! Producer ids are handed out from blocks that the metadata log records
//! before any id of a block is used, so an id is never handed out twice,
//! across restarts and crashes (a crash only skips the rest of a block).

/// Ids per block written to the metadata log.
pub const PRODUCER_ID_BLOCK_SIZE: i64 = 1000;

/// The ids the controller may hand out without writing to the log:
/// `next..end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ProducerIdBlock {
    pub next: i64,
    pub end: i64,
}

impl ProducerIdBlock {
    /// The next id, or None when the block is used up (reserve another).
    pub fn take(&mut self) -> Option<i64> {
        if self.next >= self.end {
            return None;
        }
        let id = self.next;
        self.next += 1;
        Some(id)
    }

    /// The block that follows every block reserved so far (`reserved_end`:
    /// the end recorded in the metadata log, 0 when none was).
    pub fn after(reserved_end: i64) -> ProducerIdBlock {
        assert!(reserved_end >= 0);
        ProducerIdBlock {
            next: reserved_end,
            end: reserved_end + PRODUCER_ID_BLOCK_SIZE,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_hand_out_each_id_once() {
        let mut block = ProducerIdBlock::after(0);
        let mut seen = Vec::new();
        while let Some(id) = block.take() {
            seen.push(id);
        }
        assert_eq!(seen.len() as i64, PRODUCER_ID_BLOCK_SIZE);
        let mut next = ProducerIdBlock::after(block.end);
        assert_eq!(next.take(), Some(PRODUCER_ID_BLOCK_SIZE));
        assert_eq!(ProducerIdBlock::default().take(), None);
    }
}
