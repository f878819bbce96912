//! The follower's side: where its log stops agreeing with the leader's.
//!
//! A follower fetches with the epoch of its last batch (Fetch v12+
//! `last_fetched_epoch`). The leader checks it against its own epoch cache
//! (`check_fetch`); when they diverge it answers with the end of the
//! follower's epoch as the leader knows it, and the follower truncates
//! (`truncation_point`), as Kafka's KIP-320/KIP-595 fetchers do.

use super::epoch_cache::{EpochCache, EpochEnd, UNDEFINED_EPOCH, UNDEFINED_OFFSET};

/// The leader's answer to a follower's fetch position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchCheck {
    /// The follower's log agrees up to its fetch offset: serve it.
    Serve,
    /// The follower's last epoch ends earlier on the leader (or the leader
    /// never had it): the follower must truncate (Fetch `diverging_epoch`).
    Diverging(EpochEnd),
}

/// Leader side: does a follower at `fetch_offset`, whose last batch has
/// `last_fetched_epoch`, agree with this log (`cache`, ending at
/// `log_end_offset`)?
pub fn check_fetch(
    cache: &EpochCache,
    log_end_offset: i64,
    fetch_offset: i64,
    last_fetched_epoch: i32,
) -> FetchCheck {
    if last_fetched_epoch == UNDEFINED_EPOCH {
        // An empty follower (or an old client): nothing to compare.
        return FetchCheck::Serve;
    }
    let end = cache.end_offset_for(last_fetched_epoch, log_end_offset);
    if end.epoch < last_fetched_epoch || end.end_offset < fetch_offset {
        FetchCheck::Diverging(end)
    } else {
        FetchCheck::Serve
    }
}

/// Where a follower truncates to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Truncation {
    pub offset: i64,
    /// False when the follower does not hold the leader's epoch: it fetches
    /// again with its own epoch before it is sure.
    pub complete: bool,
}

/// Follower side: the leader said the follower's epoch ends at `leader`;
/// the follower's log (`cache`, ending at `log_end_offset`, high watermark
/// `high_watermark`) is cut where the two stop agreeing.
pub fn truncation_point(
    cache: &EpochCache,
    log_end_offset: i64,
    high_watermark: i64,
    leader: EpochEnd,
) -> Truncation {
    if leader.end_offset == UNDEFINED_OFFSET {
        // The leader has no epoch as old as ours: keep only what was
        // committed.
        return Truncation {
            offset: high_watermark.min(log_end_offset),
            complete: true,
        };
    }
    if leader.epoch == UNDEFINED_EPOCH {
        return Truncation {
            offset: leader.end_offset.min(log_end_offset),
            complete: true,
        };
    }
    let ours = cache.end_offset_for(leader.epoch, log_end_offset);
    if ours.end_offset == UNDEFINED_OFFSET {
        // We hold no epoch at or below the leader's: every record we have is
        // from later epochs the leader does not know.
        return Truncation {
            offset: leader.end_offset.min(log_end_offset),
            complete: true,
        };
    }
    if ours.epoch != leader.epoch {
        // We never had the leader's epoch: cut at the end of ours below it
        // and ask again with that epoch.
        return Truncation {
            offset: ours.end_offset.min(log_end_offset),
            complete: false,
        };
    }
    Truncation {
        offset: leader.end_offset.min(ours.end_offset).min(log_end_offset),
        complete: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(entries: &[(i32, i64)]) -> EpochCache {
        EpochCache::of(entries)
    }

    #[test]
    fn a_follower_that_agrees_is_served() {
        let leader = cache(&[(1, 0), (2, 50)]);
        assert_eq!(check_fetch(&leader, 80, 60, 2), FetchCheck::Serve);
        assert_eq!(check_fetch(&leader, 80, 50, 1), FetchCheck::Serve);
        assert_eq!(
            check_fetch(&leader, 80, 0, UNDEFINED_EPOCH),
            FetchCheck::Serve
        );
    }

    #[test]
    fn a_follower_with_a_tail_from_a_lost_epoch_truncates_to_the_leaders_end_of_it() {
        // Follower wrote 50..70 in epoch 1 as the old leader; the new leader
        // (epoch 2) only had epoch 1 up to 50.
        let leader = cache(&[(1, 0), (2, 50)]);
        let follower = cache(&[(1, 0)]);
        let check = check_fetch(&leader, 90, 70, 1);
        assert_eq!(
            check,
            FetchCheck::Diverging(EpochEnd {
                epoch: 1,
                end_offset: 50
            })
        );
        let FetchCheck::Diverging(end) = check else {
            unreachable!()
        };
        assert_eq!(
            truncation_point(&follower, 70, 40, end),
            Truncation {
                offset: 50,
                complete: true
            }
        );
    }

    #[test]
    fn a_follower_with_an_epoch_the_leader_never_had_asks_again() {
        // Follower: epochs 1 and 3; leader: epochs 1 and 2 and 4. The leader
        // answers the follower's epoch 3 with its largest epoch below it (2).
        let leader = cache(&[(1, 0), (2, 30), (4, 60)]);
        let follower = cache(&[(1, 0), (3, 40)]);
        let FetchCheck::Diverging(end) = check_fetch(&leader, 90, 55, 3) else {
            panic!("diverges")
        };
        assert_eq!(
            end,
            EpochEnd {
                epoch: 2,
                end_offset: 60
            }
        );
        // The follower has no epoch 2: it cuts at the end of its epoch 1
        // (40) and asks again with epoch 1.
        let first = truncation_point(&follower, 55, 10, end);
        assert_eq!(
            first,
            Truncation {
                offset: 40,
                complete: false
            }
        );
        let mut follower = follower;
        follower.truncate_from_end(first.offset);
        let FetchCheck::Diverging(end) = check_fetch(&leader, 90, 40, 1) else {
            panic!("diverges")
        };
        assert_eq!(
            end,
            EpochEnd {
                epoch: 1,
                end_offset: 30
            }
        );
        assert_eq!(
            truncation_point(&follower, 40, 10, end),
            Truncation {
                offset: 30,
                complete: true
            }
        );
    }

    #[test]
    fn an_undefined_answer_keeps_what_was_committed() {
        let follower = cache(&[(3, 0)]);
        assert_eq!(
            truncation_point(&follower, 70, 42, EpochEnd::UNDEFINED),
            Truncation {
                offset: 42,
                complete: true
            }
        );
    }
}
