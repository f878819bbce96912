//! The run's topics: named after the run, created before any client starts
//! (ready once every partition has a leader), deleted when the guard drops.

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;

use super::clients::admin;
use crate::workload::Workload;

const TOPIC_READY_TIMEOUT: Duration = Duration::from_secs(60);

/// One name per topic, unique to the run.
pub(super) fn topic_names(w: &Workload, run_id: u32) -> Vec<String> {
    (0..w.topics)
        .map(|i| format!("gregor-perf-{}-{run_id:08x}-{i}", w.name))
        .collect()
}

fn block_on_timeout<F: std::future::Future>(f: F) -> F::Output {
    futures::executor::block_on(f)
}

fn create_topics(
    a: &AdminClient<DefaultClientContext>,
    w: &Workload,
    names: &[String],
) -> Result<()> {
    let topics: Vec<NewTopic> = names
        .iter()
        .map(|n| {
            w.topic_config.iter().fold(
                NewTopic::new(
                    n,
                    w.partitions_per_topic as i32,
                    TopicReplication::Fixed(w.replication_factor as i32),
                ),
                |topic, (name, value)| topic.set(name, value),
            )
        })
        .collect();
    let opts = AdminOptions::new()
        .operation_timeout(Some(Duration::from_secs(30)))
        .request_timeout(Some(Duration::from_secs(60)));
    let results = block_on_timeout(a.create_topics(topics.iter(), &opts))
        .map_err(|e| anyhow!("CreateTopics failed: {e}"))?;
    for r in results {
        if let Err((name, code)) = r {
            bail!("cannot create topic {name}: {code}");
        }
    }
    // Wait until metadata shows every partition with a leader.
    let deadline = Instant::now() + TOPIC_READY_TIMEOUT;
    loop {
        let mut ready = true;
        for n in names {
            let ok = a
                .inner()
                .fetch_metadata(Some(n), Duration::from_secs(5))
                .map(|md| {
                    md.topics().iter().any(|t| {
                        t.name() == n
                            && t.error().is_none()
                            && t.partitions().len() == w.partitions_per_topic as usize
                            && t.partitions().iter().all(|p| p.leader() >= 0)
                    })
                })
                .unwrap_or(false);
            ready &= ok;
        }
        if ready {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "topics not ready (all partitions with a leader) within {} s",
                TOPIC_READY_TIMEOUT.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Deletes the run's topics when dropped (also on an error path).
pub(super) struct TopicGuard {
    admin: AdminClient<DefaultClientContext>,
    names: Vec<String>,
    keep: bool,
}

impl TopicGuard {
    /// Creates `names` on `bootstrap` and waits until they are ready; the
    /// guard deletes them when dropped, unless `keep`.
    pub(super) fn create(
        bootstrap: &str,
        w: &Workload,
        names: &[String],
        keep: bool,
    ) -> Result<TopicGuard> {
        let admin = admin(bootstrap)?;
        create_topics(&admin, w, names)?;
        Ok(TopicGuard {
            admin,
            names: names.to_vec(),
            keep,
        })
    }
}

impl Drop for TopicGuard {
    fn drop(&mut self) {
        if self.keep || self.names.is_empty() {
            return;
        }
        let names: Vec<&str> = self.names.iter().map(|s| s.as_str()).collect();
        let opts = AdminOptions::new()
            .operation_timeout(Some(Duration::from_secs(30)))
            .request_timeout(Some(Duration::from_secs(30)));
        match block_on_timeout(self.admin.delete_topics(&names, &opts)) {
            Ok(results) => {
                for r in results {
                    if let Err((name, code)) = r {
                        eprintln!("warning: could not delete topic {name}: {code}");
                    }
                }
            }
            Err(e) => eprintln!("warning: could not delete topics: {e}"),
        }
    }
}
