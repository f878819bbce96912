"""ISR replication between real brokers: followers copy their leaders'
batches with the leaders' offsets and epochs over the owning shards'
replication ports, acks=all waits for the in-sync replicas, and the files
of every replica hold the same bytes."""

from __future__ import annotations

import time

from confluent_kafka.admin import AdminClient, NewTopic

from helpers import consume_confluent, make_records, produce_confluent, segment_paths, verify_log


def create_replicated(bootstrap: str, name: str, partitions: int, replication_factor: int, config=None) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    deadline = time.monotonic() + 30
    while True:
        try:
            topic = NewTopic(name, partitions, replication_factor, config=config or {})
            for future in admin.create_topics([topic]).values():
                future.result(timeout=15)
            return
        except Exception as e:  # NOT_CONTROLLER while the quorum elects
            if "NOT_CONTROLLER" not in str(e) or time.monotonic() > deadline:
                raise


def partition_state(bootstrap: str, topic: str) -> dict[int, tuple[int, list[int], list[int]]]:
    """partition -> (leader, replicas, isr) from Metadata."""
    md = AdminClient({"bootstrap.servers": bootstrap}).list_topics(topic, timeout=10)
    return {p.id: (p.leader, list(p.replicas), list(p.isrs)) for p in md.topics[topic].partitions.values()}


def wait_until(what: str, check, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        time.sleep(0.1)


def replica_bytes(broker, topic: str, partition: int) -> bytes:
    return b"".join(p.read_bytes() for p in segment_paths(broker.data_dir, topic, partition))


def test_followers_copy_every_acknowledged_batch(cluster_factory):
    brokers = cluster_factory(3, shards=2)
    bootstrap = ",".join(b.bootstrap for b in brokers)
    create_replicated(bootstrap, "copied", 4, 3, {"min.insync.replicas": "2"})
    state = partition_state(bootstrap, "copied")
    for leader, replicas, isr in state.values():
        assert sorted(replicas) == [1, 2, 3]
        assert sorted(isr) == [1, 2, 3]
        assert leader in replicas
    # confluent's producer defaults to acks=all (and idempotence off).
    records = make_records(2000, seed=21)
    acks = produce_confluent(bootstrap, "copied", records)
    verify_log(records, acks, consume_confluent(bootstrap, "copied", range(4)), 4)
    # Every replica holds the leader's bytes (acks=all waited for the
    # ISR, and followers sync before they fetch again).
    for partition in range(4):
        copies = [replica_bytes(b, "copied", partition) for b in brokers]
        assert copies[0], f"partition {partition} has no data"
        assert copies[0] == copies[1] == copies[2], f"partition {partition} differs between replicas"
