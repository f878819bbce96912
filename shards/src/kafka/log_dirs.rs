//! DescribeLogDirs: the one data directory, its space, and every
//! partition's size gathered from the shards.

use engine::protocol::kafka_protocol::messages::{self as km};

use super::dispatch::RequestContext;
use super::response::str_bytes as s;
use engine::protocol as codes;

use crate::disk::durable::off_shard;
use crate::io::statvfs::disk_space;
use crate::mesh::metrics::LogDirSizes;

pub async fn describe_log_dirs(
    ctx: RequestContext,
    request: km::DescribeLogDirsRequest,
) -> km::DescribeLogDirsResponse {
    let shard = &ctx.shard;
    let version = ctx.version;
    let calls = (0..shard.count).map(|target| {
        let shard = shard.clone();
        async move { shard.call(target, LogDirSizes).await }
    });
    let mut sizes: Vec<(String, i32, u64)> = Vec::new();
    for list in futures::future::join_all(calls).await {
        sizes.extend(
            list.into_iter()
                .map(|p| (p.topic, p.partition, p.size_bytes)),
        );
    }
    sizes.sort();
    let wanted = |topic: &str, partition: i32| {
        request.topics.as_ref().is_none_or(|ts| {
            ts.iter()
                .any(|t| t.topic.0.as_str() == topic && t.partitions.contains(&partition))
        })
    };
    let data_dir = shard.config.data_dir.clone();
    // Path resolution and statvfs touch the disk: off the shard's thread.
    let (dir, space) = off_shard(move || {
        let dir = std::fs::canonicalize(&data_dir).unwrap_or(data_dir);
        let space = disk_space(&dir);
        (dir, space)
    })
    .await;
    let mut result = km::describe_log_dirs_response::DescribeLogDirsResult::default()
        .with_log_dir(s(&dir.display().to_string()));
    if version >= 4 {
        let (total, usable) = space.unwrap_or((-1, -1));
        result.total_bytes = total;
        result.usable_bytes = usable;
    }
    for (topic, partition, bytes) in sizes.into_iter().filter(|(t, p, _)| wanted(t, *p)) {
        let entry = km::describe_log_dirs_response::DescribeLogDirsPartition::default()
            .with_partition_index(partition)
            .with_partition_size(bytes as i64);
        match result.topics.last_mut() {
            Some(last) if last.name.0.as_str() == topic => last.partitions.push(entry),
            _ => result.topics.push(
                km::describe_log_dirs_response::DescribeLogDirsTopic::default()
                    .with_name(km::TopicName(s(&topic)))
                    .with_partitions(vec![entry]),
            ),
        }
    }
    km::DescribeLogDirsResponse::default().with_results(vec![result])
}

/// AlterReplicaLogDirs: there is one log dir, so a move to it (by the path
/// DescribeLogDirs gives, or the configured one) is already done, and any
/// other path is LOG_DIR_NOT_FOUND.
pub async fn alter_replica_log_dirs(
    ctx: RequestContext,
    request: km::AlterReplicaLogDirsRequest,
) -> km::AlterReplicaLogDirsResponse {
    use km::alter_replica_log_dirs_response as r;
    let shard = &ctx.shard;
    let data_dir = shard.config.data_dir.clone();
    let canonical = off_shard({
        let data_dir = data_dir.clone();
        move || std::fs::canonicalize(&data_dir).unwrap_or(data_dir)
    })
    .await;
    let mut response = km::AlterReplicaLogDirsResponse::default();
    for dir in request.dirs {
        let path = std::path::PathBuf::from(dir.path.as_str());
        let known = path == data_dir || path == canonical;
        for topic in dir.topics {
            let name = topic.name.0.to_string();
            let mut out =
                r::AlterReplicaLogDirTopicResult::default().with_topic_name(topic.name.clone());
            let owners = shard.route_all(&name, topic.partitions.iter().copied());
            for (partition, owner) in topic.partitions.into_iter().zip(owners) {
                let error = match owner {
                    Err(code) => code,
                    Ok(_) if !known => codes::LOG_DIR_NOT_FOUND,
                    Ok(_) => codes::NONE,
                };
                out.partitions.push(
                    r::AlterReplicaLogDirPartitionResult::default()
                        .with_partition_index(partition)
                        .with_error_code(error),
                );
            }
            response.results.push(out);
        }
    }
    response
}
