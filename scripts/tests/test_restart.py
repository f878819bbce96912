"""Clean stop (SIGTERM) and restart: topics, partition counts and data come
back, and new writes continue at the next offset."""

from __future__ import annotations

from confluent_kafka.admin import AdminClient

from helpers import (
    Rec,
    consume_confluent,
    create_topic_confluent,
    kafka_python_consumer,
    make_records,
    produce_confluent,
    verify_log,
    watermarks,
)

TOPICS = {"alpha": 3, "beta": 5}
RECORDS_PER_TOPIC = 8_000
SEGMENT_BYTES = 1024 * 1024  # several segments per partition
RESTARTS = 2


def big_records(count: int, seed: int):
    """Records with ~1 KiB values (16 MB in all), so that every partition spans
    more than one segment."""
    return [
        Rec(r.key, r.value * 10 + bytes([i % 256]) * 24, r.headers)
        for i, r in enumerate(make_records(count, seed))
    ]


def assert_metadata(bootstrap: str) -> None:
    md = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10)
    for name, partitions in TOPICS.items():
        t = md.topics.get(name)
        assert t is not None, f"topic {name} missing after restart; topics: {sorted(md.topics)}"
        assert t.error is None, f"topic {name}: {t.error}"
        assert sorted(t.partitions) == list(range(partitions)), f"topic {name}: partitions {sorted(t.partitions)}"
        for p in t.partitions.values():
            assert p.error is None and p.leader in md.brokers, f"topic {name} partition {p.id}: leader {p.leader}, error {p.error}"

    consumer = kafka_python_consumer(bootstrap)
    try:
        for name, partitions in TOPICS.items():
            assert consumer.partitions_for_topic(name) == set(range(partitions)), f"kafka-python sees {name} differently"
    finally:
        consumer.close()


def test_clean_restart_keeps_topics_and_data(broker_factory):
    broker = broker_factory("--segment-bytes", SEGMENT_BYTES)
    written = {}
    for seed, (name, partitions) in enumerate(TOPICS.items()):
        create_topic_confluent(broker.bootstrap, name, partitions)
        records = big_records(RECORDS_PER_TOPIC, seed=seed)
        acks = produce_confluent(broker.bootstrap, name, records)
        written[name] = (records, acks)

    for _ in range(RESTARTS):
        code = broker.stop()
        assert code == 0, f"gregor exited with {code} on SIGTERM, expected a clean exit (0)"
        broker.restart()
        # After a clean stop every active segment comes back from its
        # checkpoint, also when nothing was written since the last start
        # (its close then rewrites nothing).
        # (Empty partitions are closed without one; scanning nothing is free.)
        this_start = broker.log_path.read_text().rsplit("===== harness: start", 1)[1]
        scanned = [line for line in this_start.splitlines()
                   if ("recovered partition" in line or "scanning" in line) and any(f"data/{t}-" in line for t in TOPICS)]
        assert scanned == []

        assert_metadata(broker.bootstrap)
        for name, partitions in TOPICS.items():
            records, acks = written[name]
            consumed = consume_confluent(broker.bootstrap, name, range(partitions))
            verify_log(records, acks, consumed, partitions)

    # New writes continue where the log ended, in every partition.
    for name, partitions in TOPICS.items():
        records, acks = written[name]
        ends = {p: sum(1 for q, _ in acks if q == p) for p in range(partitions)}
        for p in range(partitions):
            assert watermarks(broker.bootstrap, name, p) == (0, ends[p]), f"{name}[{p}] watermarks"
        more = make_records(partitions, seed=1000)
        next_acks = produce_confluent(broker.bootstrap, name, more, partitions=list(range(partitions)))
        assert next_acks == [(p, ends[p]) for p in range(partitions)], (
            f"{name}: new records landed at {next_acks}, expected next offsets {ends}"
        )
