//! THE API table: each Kafka API Gregor serves is declared once here, with
//! the version range it advertises (Kafka 4.2's where Gregor has the
//! version's semantics; below it where it has not, e.g. topic ids in Produce
//! v13 and Fetch v13+, transactions v2 in InitProducerId v5), the
//! name its metrics carry, and its handler. ApiVersions, dispatch and the
//! per-API metrics all read it; an API not listed is neither advertised
//! nor served.

use std::ops::RangeInclusive;

use bytes::Bytes;
use engine::protocol::kafka_protocol::messages::ApiKey;
use futures::future::LocalBoxFuture;

use super::dispatch::{answer, RequestContext, RequestError, Started};
use super::{
    api_versions, configs, fetch, groups, log_dirs, metadata, offsets, produce, producer_ids,
    telemetry, topics, transactions,
};

pub enum Handler {
    /// Decodes the body and starts at once.
    Answer(fn(RequestContext, Bytes) -> Result<Started, RequestError>),
    /// Must be started, in arrival order, before the connection reads its
    /// next request (Produce queues its appends in order).
    InOrder(fn(RequestContext, Bytes) -> LocalBoxFuture<'static, Result<Started, RequestError>>),
}

pub struct Api {
    pub key: ApiKey,
    pub min_version: i16,
    pub max_version: i16,
    /// The `api` label of the request metrics.
    pub name: &'static str,
    pub handler: Handler,
}

impl Api {
    /// The versions ApiVersions lists (Produce v0–2 among them, though they
    /// are answered with UNSUPPORTED_VERSION: `engine::protocol::is_served`).
    pub fn versions(&self) -> RangeInclusive<i16> {
        self.min_version..=self.max_version
    }
}

const fn api(key: ApiKey, versions: (i16, i16), name: &'static str, handler: Handler) -> Api {
    Api {
        key,
        min_version: versions.0,
        max_version: versions.1,
        name,
        handler,
    }
}

use ApiKey as K;
use Handler::{Answer, InOrder};

// One line per API: the table reads as a table.
#[rustfmt::skip]
pub static APIS: &[Api] = &[
    api(K::Produce, (0, 11), "Produce", InOrder(produce::start_produce)),
    api(K::Fetch, (4, 12), "Fetch", Answer(fetch::start_fetch)),
    api(K::ListOffsets, (1, 10), "ListOffsets", Answer(|c, f| answer(c, f, offsets::list_offsets))),
    api(K::Metadata, (0, 13), "Metadata", Answer(|c, f| answer(c, f, metadata::metadata))),
    api(K::OffsetCommit, (2, 9), "OffsetCommit", Answer(|c, f| answer(c, f, groups::offset_commit))),
    api(K::OffsetFetch, (1, 9), "OffsetFetch", Answer(|c, f| answer(c, f, groups::offset_fetch))),
    api(K::FindCoordinator, (0, 5), "FindCoordinator", Answer(|c, f| answer(c, f, groups::find_coordinator))),
    api(K::JoinGroup, (0, 9), "JoinGroup", Answer(|c, f| answer(c, f, groups::join_group))),
    api(K::Heartbeat, (0, 4), "Heartbeat", Answer(|c, f| answer(c, f, groups::heartbeat))),
    api(K::LeaveGroup, (0, 5), "LeaveGroup", Answer(|c, f| answer(c, f, groups::leave_group))),
    api(K::SyncGroup, (0, 5), "SyncGroup", Answer(|c, f| answer(c, f, groups::sync_group))),
    api(K::DescribeGroups, (0, 5), "DescribeGroups", Answer(|c, f| answer(c, f, groups::describe_groups))),
    api(K::ListGroups, (0, 5), "ListGroups", Answer(|c, f| answer(c, f, groups::list_groups))),
    api(K::ApiVersions, (0, 4), "ApiVersions", Answer(api_versions::start_api_versions)),
    api(K::CreateTopics, (2, 7), "CreateTopics", Answer(|c, f| answer(c, f, topics::create_topics))),
    api(K::DeleteTopics, (1, 6), "DeleteTopics", Answer(|c, f| answer(c, f, topics::delete_topics))),
    api(K::DeleteRecords, (0, 2), "DeleteRecords", Answer(|c, f| answer(c, f, offsets::delete_records))),
    api(K::OffsetForLeaderEpoch, (2, 4), "OffsetForLeaderEpoch", Answer(|c, f| answer(c, f, offsets::offset_for_leader_epoch))),
    api(K::DescribeConfigs, (1, 4), "DescribeConfigs", Answer(|c, f| answer(c, f, configs::describe_configs))),
    api(K::AlterConfigs, (0, 2), "AlterConfigs", Answer(|c, f| answer(c, f, configs::alter_configs))),
    api(K::DescribeLogDirs, (1, 4), "DescribeLogDirs", Answer(|c, f| answer(c, f, log_dirs::describe_log_dirs))),
    api(K::CreatePartitions, (0, 3), "CreatePartitions", Answer(|c, f| answer(c, f, topics::create_partitions))),
    api(K::DeleteGroups, (0, 2), "DeleteGroups", Answer(|c, f| answer(c, f, groups::delete_groups))),
    api(K::IncrementalAlterConfigs, (0, 1), "IncrementalAlterConfigs", Answer(|c, f| answer(c, f, configs::incremental_alter_configs))),
    api(K::OffsetDelete, (0, 0), "OffsetDelete", Answer(|c, f| answer(c, f, groups::offset_delete))),
    api(K::DescribeCluster, (0, 2), "DescribeCluster", Answer(|c, f| answer(c, f, metadata::describe_cluster))),
    api(K::DescribeQuorum, (0, 2), "DescribeQuorum", Answer(|c, f| answer(c, f, metadata::describe_quorum))),
    api(K::DescribeTopicPartitions, (0, 0), "DescribeTopicPartitions", Answer(|c, f| answer(c, f, metadata::describe_topic_partitions))),
    api(K::ListConfigResources, (0, 1), "ListConfigResources", Answer(|c, f| answer(c, f, configs::list_config_resources))),
    api(K::AlterReplicaLogDirs, (1, 2), "AlterReplicaLogDirs", Answer(|c, f| answer(c, f, log_dirs::alter_replica_log_dirs))),
    api(K::GetTelemetrySubscriptions, (0, 0), "GetTelemetrySubscriptions", Answer(|c, f| answer(c, f, telemetry::get_telemetry_subscriptions))),
    api(K::PushTelemetry, (0, 0), "PushTelemetry", Answer(|c, f| answer(c, f, telemetry::push_telemetry))),
    // v5 belongs to transactions v2 (KIP-890): not advertised before it works.
    api(K::InitProducerId, (0, 4), "InitProducerId", Answer(|c, f| answer(c, f, producer_ids::init_producer_id))),
    // v4+ are the brokers' batched verification (KIP-890); clients send v3.
    api(K::AddPartitionsToTxn, (0, 4), "AddPartitionsToTxn", Answer(|c, f| answer(c, f, transactions::add_partitions_to_txn))),
    api(K::AddOffsetsToTxn, (0, 4), "AddOffsetsToTxn", Answer(|c, f| answer(c, f, transactions::add_offsets_to_txn))),
    // v5 is transactions v2 (KIP-890 part 2): not advertised before it works.
    api(K::EndTxn, (0, 4), "EndTxn", Answer(|c, f| answer(c, f, transactions::end_txn))),
    api(K::DescribeTransactions, (0, 0), "DescribeTransactions", Answer(|c, f| answer(c, f, transactions::describe_transactions))),
    // v2 filters by a transactional id pattern (a regex): not yet.
    api(K::ListTransactions, (0, 1), "ListTransactions", Answer(|c, f| answer(c, f, transactions::list_transactions))),
    api(K::WriteTxnMarkers, (1, 1), "WriteTxnMarkers", Answer(|c, f| answer(c, f, transactions::write_txn_markers))),
    // v4 is transactions v2's implicit add (KIP-890 part 2): not advertised yet.
    api(K::TxnOffsetCommit, (0, 3), "TxnOffsetCommit", Answer(|c, f| answer(c, f, transactions::txn_offset_commit))),
];

/// The table's entry for an API key.
pub fn find_api(key: ApiKey) -> Option<&'static Api> {
    APIS.iter().find(|api| api.key == key)
}

#[cfg(test)]
mod tests {
    use engine::protocol::is_served;

    use super::*;

    fn served(key: ApiKey, version: i16) -> bool {
        is_served(key, version, find_api(key).map(Api::versions))
    }

    #[test]
    fn produce_v0_to_v2_are_advertised_but_not_served() {
        let produce = find_api(ApiKey::Produce).unwrap();
        assert_eq!((produce.min_version, produce.max_version), (0, 11));
        for version in 0..=2 {
            assert!(produce.versions().contains(&version));
            assert!(!served(ApiKey::Produce, version));
        }
        for version in 3..=11 {
            assert!(served(ApiKey::Produce, version));
        }
        assert!(!served(ApiKey::Produce, 12));
        assert!(!served(ApiKey::Produce, -1));
    }

    #[test]
    fn ranges_are_served_exactly() {
        assert!(!served(ApiKey::Fetch, 3));
        assert!(served(ApiKey::Fetch, 4));
        assert!(served(ApiKey::Fetch, 12));
        assert!(!served(ApiKey::Fetch, 13));
        assert!(served(ApiKey::ApiVersions, 0));
        assert!(served(ApiKey::ApiVersions, 4));
        assert!(!served(ApiKey::ApiVersions, 5));
        assert!(!served(ApiKey::ListOffsets, 0));
        assert!(served(ApiKey::JoinGroup, 0));
        assert!(!served(ApiKey::JoinGroup, 10));
        // Transactions v1 and the brokers' batched verification (v4);
        // v2 (KIP-890 part 2) is not advertised yet.
        assert!(served(ApiKey::AddPartitionsToTxn, 4));
        assert!(!served(ApiKey::AddPartitionsToTxn, 5));
        assert!(served(ApiKey::EndTxn, 4));
        assert!(!served(ApiKey::EndTxn, 5));
        assert!(served(ApiKey::InitProducerId, 4));
        assert!(!served(ApiKey::InitProducerId, 5));
        // Inter-broker: v0 was removed in Kafka 4.0.
        assert!(!served(ApiKey::WriteTxnMarkers, 0));
        assert!(served(ApiKey::WriteTxnMarkers, 1));
    }

    #[test]
    fn table_is_sane() {
        for (i, api) in APIS.iter().enumerate() {
            assert!(api.min_version <= api.max_version, "{}", api.name);
            assert!(
                APIS[i + 1..].iter().all(|other| other.key != api.key),
                "{} listed twice",
                api.name
            );
            assert!(served(api.key, api.max_version), "{}", api.name);
            assert_eq!(
                api.name,
                format!("{:?}", api.key),
                "metric name of {:?}",
                api.key
            );
            // Every advertised version is one the codec can decode.
            let codec = api.key.valid_versions();
            assert!(
                api.key == ApiKey::Produce || codec.min <= api.min_version,
                "{}",
                api.name
            );
            assert!(api.max_version <= codec.max, "{}", api.name);
        }
    }
}
