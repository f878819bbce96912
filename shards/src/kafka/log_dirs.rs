//! DescribeLogDirs: the one data directory, its space, and every
//! partition's size gathered from the shards.

use engine::protocol::kafka_protocol::messages::{self as km};

use super::dispatch::RequestContext;
use super::response::str_bytes as s;
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
