"""Issue 6: retention, log compaction, topic configs and the admin APIs,
driven through the real broker with confluent-kafka's AdminClient."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource

from helpers import create_topic_confluent, unique_name, wait_until, watermarks

# Fast maintenance so the tests wait seconds, not minutes.
MAINTENANCE_ARGS = ("--cleaner-backoff-ms", "200", "--retention-check-interval-ms", "200")
WAIT_S = 90  # hang protection only


def partition_dir_bytes(broker, topic: str, partition: int = 0) -> int:
    """Bytes of the partition's segment files. The cleaner may swap segments
    while this lists them: a file gone between the listing and its stat was
    replaced, and its replacement is counted if listed."""
    d = Path(broker.data_dir) / f"{topic}-{partition}"
    total = 0
    for f in d.iterdir():
        if f.suffix != ".log":
            continue
        try:
            total += f.stat().st_size
        except FileNotFoundError:
            pass
    return total


# A compacted log can end in a gap (the trailing tombstones are gone while
# the high watermark stays): librdkafka then never reports EOF, so a reader
# that saw records and then nothing for this long has read everything.
READ_IDLE_S = 3


def read_all(bootstrap: str, topic: str, partition: int = 0) -> list:
    """Every record from the log start to the high watermark."""
    low, high = watermarks(bootstrap, topic, partition)
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": unique_name("reader"),
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "enable.partition.eof": True,
        }
    )
    consumer.assign([TopicPartition(topic, partition, low)])
    out = []
    deadline = time.monotonic() + WAIT_S
    last_record_at = time.monotonic()
    try:
        while time.monotonic() < deadline and (not out or out[-1].offset() < high - 1) and high > low:
            if out and time.monotonic() - last_record_at > READ_IDLE_S:
                return out
            for m in consumer.consume(10000, 0.5):
                if m.error():
                    if m.error().code() == -191:  # _PARTITION_EOF
                        return out
                    raise AssertionError(f"consume error: {m.error()}")
                out.append(m)
                last_record_at = time.monotonic()
    finally:
        consumer.close()
    return out


def test_compaction_keeps_latest_value_per_key(broker_factory):
    broker = broker_factory(*MAINTENANCE_ARGS)
    topic = unique_name("compacted")
    create_topic_confluent(
        broker.bootstrap,
        topic,
        1,
        {
            "cleanup.policy": "compact",
            "segment.bytes": "200000",
            "segment.ms": "1000",
            "min.cleanable.dirty.ratio": "0.01",
            "delete.retention.ms": "0",
            "min.compaction.lag.ms": "0",
        },
    )
    producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 5, "acks": "all"})
    keys = 1000
    updates = 100_000
    latest: dict[bytes, bytes | None] = {}
    for i in range(updates):
        key = b"key-%04d" % (i % keys)
        value = b"value-%06d" % i
        producer.produce(topic, key=key, value=value)
        latest[key] = value
        if i % 10000 == 0:
            producer.poll(0)
    for k in range(100):  # tombstones for 100 keys
        key = b"key-%04d" % k
        producer.produce(topic, key=key, value=None)
        latest[key] = None
    assert producer.flush(60) == 0
    live = {k: v for k, v in latest.items() if v is not None}
    assert len(live) == 900
    bytes_before = partition_dir_bytes(broker, topic)

    def compacted():
        records = read_all(broker.bootstrap, topic)
        return records if len(records) == len(live) else None

    records = wait_until(compacted, WAIT_S, "compaction down to the 900 live keys",
                         state=lambda: len(read_all(broker.bootstrap, topic)))
    seen = {m.key(): m.value() for m in records}
    assert seen == live, "compacted log is not exactly the latest value per live key"
    offsets = [m.offset() for m in records]
    assert offsets == sorted(offsets) and len(set(offsets)) == len(offsets)
    bytes_after = partition_dir_bytes(broker, topic)
    print(f"compaction: {bytes_before} bytes before, {bytes_after} bytes after")
    assert bytes_after < bytes_before / 10
    # The cleaner's own line (the topic's name is in other lines too).
    assert re.search(r"compacted .*bytes_before=\d+ bytes_after=\d+", broker.log_text()), "no compaction was logged"


def _fill(bootstrap: str, topic: str, count: int, value_bytes: int = 100) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "acks": "all",
                         "batch.size": 16384})
    for i in range(count):
        producer.produce(topic, key=b"k%d" % i, value=b"x" * value_bytes)
        if i % 5000 == 0:
            producer.poll(0)
    assert producer.flush(60) == 0


def test_retention_by_size_and_time_and_delete_records(broker_factory):
    broker = broker_factory(*MAINTENANCE_ARGS)
    by_size, by_time, explicit = unique_name("ret-size"), unique_name("ret-time"), unique_name("ret-del")
    create_topic_confluent(broker.bootstrap, by_size, 1, {"segment.bytes": "50000", "retention.bytes": "200000"})
    create_topic_confluent(broker.bootstrap, by_time, 1, {"segment.bytes": "50000", "retention.ms": "1500"})
    create_topic_confluent(broker.bootstrap, explicit, 1, {"segment.bytes": "50000"})
    for topic in (by_size, by_time, explicit):
        _fill(broker.bootstrap, topic, 20_000)
        # Retention may already have started on the first two: check the end.
        assert watermarks(broker.bootstrap, topic, 0)[1] == 20_000

    low_size = wait_until(lambda: watermarks(broker.bootstrap, by_size, 0)[0], WAIT_S, "size retention")
    assert partition_dir_bytes(broker, by_size) < 200_000 + 60_000
    low_time = wait_until(lambda: watermarks(broker.bootstrap, by_time, 0)[0], WAIT_S, "time retention")
    print(f"retention moved the log start: by size to {low_size}, by time to {low_time}")

    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    futures = admin.delete_records([TopicPartition(explicit, 0, 12_345)])
    for f in futures.values():
        f.result(30)
    assert watermarks(broker.bootstrap, explicit, 0) == (12_345, 20_000)
    # Reading below the start is out of range; reading from it works.
    records = read_all(broker.bootstrap, explicit)
    assert records[0].offset() == 12_345 and len(records) == 20_000 - 12_345
    # The start offset survives a restart.
    broker.stop()
    broker.restart()
    assert watermarks(broker.bootstrap, explicit, 0) == (12_345, 20_000)


def test_alter_config_is_described_and_takes_effect(broker_factory):
    broker = broker_factory(*MAINTENANCE_ARGS)
    topic = unique_name("altered")
    create_topic_confluent(broker.bootstrap, topic, 1, {"segment.bytes": "50000"})
    _fill(broker.bootstrap, topic, 20_000)
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    resource = ConfigResource("topic", topic)
    described = admin.describe_configs([resource])[resource].result(30)
    assert described["retention.ms"].value == "604800000"
    assert described["segment.bytes"].value == "50000"

    change = ConfigResource("topic", topic, incremental_configs=[
        ConfigEntry("retention.ms", "100", incremental_operation=AlterConfigOpType.SET)])
    admin.incremental_alter_configs([change])[change].result(30)
    described = admin.describe_configs([resource])[resource].result(30)
    assert described["retention.ms"].value == "100"
    assert described["segment.bytes"].value == "50000"  # incremental keeps the rest
    # Behaviour: old segments go without a restart.
    wait_until(lambda: watermarks(broker.bootstrap, topic, 0)[0] > 0, WAIT_S, "retention after the change")

    bad = ConfigResource("topic", topic, incremental_configs=[
        ConfigEntry("retention.ms", "not-a-number", incremental_operation=AlterConfigOpType.SET)])
    with pytest.raises(KafkaException) as refused:
        admin.incremental_alter_configs([bad])[bad].result(30)
    assert refused.value.args[0].code() == KafkaError.INVALID_CONFIG, refused.value
    described = admin.describe_configs([resource])[resource].result(30)
    assert described["retention.ms"].value == "100", "the refused value was applied"
    # Configs survive a restart (they are metadata records).
    broker.stop()
    broker.restart()
    described = admin.describe_configs([resource])[resource].result(30)
    assert described["retention.ms"].value == "100"
