//! The leader-epoch cache of one partition replica (Kafka's
//! `LeaderEpochFileCache`, KIP-101/KIP-279): for every leader epoch that
//! wrote to this log, the offset of its first batch. It answers
//! OffsetForLeaderEpoch and a Fetch's divergence check, and tells a
//! follower where its log stops agreeing with the leader's.

/// No epoch / no offset (Kafka's UNDEFINED_EPOCH and UNDEFINED_EPOCH_OFFSET).
pub const UNDEFINED_EPOCH: i32 = -1;
pub const UNDEFINED_OFFSET: i64 = -1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochEntry {
    pub epoch: i32,
    pub start_offset: i64,
}

/// An epoch and the offset just past its last record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochEnd {
    pub epoch: i32,
    pub end_offset: i64,
}

impl EpochEnd {
    pub const UNDEFINED: EpochEnd = EpochEnd {
        epoch: UNDEFINED_EPOCH,
        end_offset: UNDEFINED_OFFSET,
    };
}

/// Entries strictly increasing in both epoch and start offset.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EpochCache {
    entries: Vec<EpochEntry>,
}

impl EpochCache {
    pub fn from_entries(entries: Vec<EpochEntry>) -> EpochCache {
        let cache = EpochCache { entries };
        cache.check();
        cache
    }

    pub fn entries(&self) -> &[EpochEntry] {
        &self.entries
    }

    pub fn latest_epoch(&self) -> Option<i32> {
        self.entries.last().map(|e| e.epoch)
    }

    /// Records that `epoch` wrote its first batch at `start_offset`. A batch
    /// of the latest epoch changes nothing; an older epoch is refused (a
    /// log never goes back in epochs). Entries at or past `start_offset`
    /// are dropped first: they described records a truncation removed.
    pub fn assign(&mut self, epoch: i32, start_offset: i64) -> Result<(), String> {
        assert!(epoch >= 0 && start_offset >= 0);
        if let Some(latest) = self.entries.last() {
            if epoch == latest.epoch && start_offset >= latest.start_offset {
                return Ok(());
            }
            if epoch < latest.epoch && start_offset > latest.start_offset {
                return Err(format!(
                    "epoch {epoch} at offset {start_offset} is older than epoch {} at {}",
                    latest.epoch, latest.start_offset
                ));
            }
        }
        self.entries.retain(|e| e.start_offset < start_offset);
        if self.entries.last().is_some_and(|e| e.epoch >= epoch) {
            return Err(format!(
                "epoch {epoch} at offset {start_offset} does not follow epoch {}",
                self.entries.last().map_or(UNDEFINED_EPOCH, |e| e.epoch)
            ));
        }
        self.entries.push(EpochEntry {
            epoch,
            start_offset,
        });
        self.check();
        Ok(())
    }

    /// Where `requested` epoch ends in a log that ends at `log_end_offset`:
    /// the latest epoch ends at the log's end; an older one where the next
    /// epoch starts, named by the largest epoch not above `requested`.
    /// Undefined for an epoch before the first or after the latest.
    pub fn end_offset_for(&self, requested: i32, log_end_offset: i64) -> EpochEnd {
        let Some(latest) = self.entries.last() else {
            return EpochEnd::UNDEFINED;
        };
        if requested == latest.epoch {
            return EpochEnd {
                epoch: requested,
                end_offset: log_end_offset,
            };
        }
        if requested == UNDEFINED_EPOCH || requested > latest.epoch {
            return EpochEnd::UNDEFINED;
        }
        let higher = self.entries.partition_point(|e| e.epoch <= requested);
        if higher == 0 {
            // Older than every epoch this log holds.
            return EpochEnd::UNDEFINED;
        }
        EpochEnd {
            epoch: self.entries[higher - 1].epoch,
            end_offset: self.entries[higher].start_offset,
        }
    }

    /// The log lost everything from `end_offset` on (a truncation).
    pub fn truncate_from_end(&mut self, end_offset: i64) {
        self.entries.retain(|e| e.start_offset < end_offset);
    }

    /// The log now starts at `start_offset` (retention, DeleteRecords): the
    /// epoch that holds it starts there now, older ones go.
    pub fn truncate_from_start(&mut self, start_offset: i64) {
        let holding = self
            .entries
            .partition_point(|e| e.start_offset <= start_offset);
        if holding == 0 {
            return;
        }
        self.entries.drain(..holding - 1);
        self.entries[0].start_offset = self.entries[0].start_offset.max(start_offset);
        self.check();
    }

    /// A cache of (epoch, start offset) pairs (tests).
    #[cfg(test)]
    pub(crate) fn of(entries: &[(i32, i64)]) -> EpochCache {
        EpochCache::from_entries(
            entries
                .iter()
                .map(|&(epoch, start_offset)| EpochEntry {
                    epoch,
                    start_offset,
                })
                .collect(),
        )
    }

    fn check(&self) {
        for pair in self.entries.windows(2) {
            assert!(
                pair[0].epoch < pair[1].epoch && pair[0].start_offset < pair[1].start_offset,
                "epoch cache out of order: {:?}",
                self.entries
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(entries: &[(i32, i64)]) -> EpochCache {
        EpochCache::of(entries)
    }

    #[test]
    fn end_offsets_follow_the_next_epochs_start() {
        let c = cache(&[(1, 0), (3, 10), (4, 25)]);
        assert_eq!(
            c.end_offset_for(4, 40),
            EpochEnd {
                epoch: 4,
                end_offset: 40
            }
        );
        assert_eq!(
            c.end_offset_for(3, 40),
            EpochEnd {
                epoch: 3,
                end_offset: 25
            }
        );
        // Epoch 2 never wrote here: the largest epoch below it ends where 3 starts.
        assert_eq!(
            c.end_offset_for(2, 40),
            EpochEnd {
                epoch: 1,
                end_offset: 10
            }
        );
        assert_eq!(
            c.end_offset_for(1, 40),
            EpochEnd {
                epoch: 1,
                end_offset: 10
            }
        );
        assert_eq!(c.end_offset_for(0, 40), EpochEnd::UNDEFINED);
        assert_eq!(c.end_offset_for(5, 40), EpochEnd::UNDEFINED);
        assert_eq!(c.end_offset_for(UNDEFINED_EPOCH, 40), EpochEnd::UNDEFINED);
        assert_eq!(
            EpochCache::default().end_offset_for(0, 0),
            EpochEnd::UNDEFINED
        );
    }

    #[test]
    fn assign_keeps_the_first_offset_of_each_epoch_and_refuses_going_back() {
        let mut c = EpochCache::default();
        c.assign(0, 0).unwrap();
        c.assign(0, 5).unwrap();
        c.assign(2, 7).unwrap();
        assert_eq!(c, cache(&[(0, 0), (2, 7)]));
        assert!(c.assign(1, 9).is_err());
        // A new epoch at an offset an old entry claims: the old entry's
        // records were truncated away.
        c.assign(3, 7).unwrap();
        assert_eq!(c, cache(&[(0, 0), (3, 7)]));
    }

    #[test]
    fn truncation_from_either_end() {
        let mut c = cache(&[(1, 0), (3, 10), (4, 25)]);
        c.truncate_from_end(25);
        assert_eq!(c, cache(&[(1, 0), (3, 10)]));
        c.truncate_from_end(11);
        assert_eq!(c, cache(&[(1, 0), (3, 10)]));
        let mut c = cache(&[(1, 0), (3, 10), (4, 25)]);
        c.truncate_from_start(12);
        assert_eq!(c, cache(&[(3, 12), (4, 25)]));
        c.truncate_from_start(25);
        assert_eq!(c, cache(&[(4, 25)]));
        c.truncate_from_start(3);
        assert_eq!(c, cache(&[(4, 25)]));
    }
}
