"""Topic-level compression.type: the broker recompresses every batch whose
codec differs from the topic's, keeping offsets, sequence numbers and records
byte for byte. Checked with real clients on both sides and on the segment
files themselves."""

from __future__ import annotations

import pytest

from helpers import (
    consume_confluent,
    consume_kafka_python,
    create_topic_confluent,
    make_records,
    produce_confluent,
    produce_kafka_python,
    segment_paths,
    stored_batches,
    verify_log,
)

PARTITIONS = 2
RECORD_COUNT = 3_000
RECORDS_SEED = 20_261_207

# compression.type value -> the codec name stored batches then carry.
TOPIC_CODECS = {"uncompressed": "none", "gzip": "gzip", "snappy": "snappy", "lz4": "lz4", "zstd": "zstd"}


def stored_codecs(data_dir, topic: str) -> dict[str, int]:
    """How many stored batches of `topic` carry each codec."""
    counts: dict[str, int] = {}
    for partition in range(PARTITIONS):
        for path in segment_paths(data_dir, topic, partition):
            for batch in stored_batches(path):
                counts[batch.codec] = counts.get(batch.codec, 0) + 1
    return counts


@pytest.mark.parametrize("topic_codec", list(TOPIC_CODECS))
def test_batches_are_stored_with_the_topic_codec(broker, topic_codec):
    stored = TOPIC_CODECS[topic_codec]
    # A producer codec that differs from the topic's, so every batch is
    # recompressed; idempotent, so the sequence numbers must survive it.
    producer_codec = "lz4" if stored != "lz4" else "gzip"
    topic = f"tc-{topic_codec}"
    create_topic_confluent(broker.bootstrap, topic, PARTITIONS, {"compression.type": topic_codec})
    records = make_records(RECORD_COUNT, seed=RECORDS_SEED)
    acks = produce_confluent(
        broker.bootstrap, topic, records, codec=producer_codec, extra_conf={"enable.idempotence": True}
    )
    verify_log(records, acks, consume_confluent(broker.bootstrap, topic, range(PARTITIONS)), PARTITIONS)
    verify_log(records, acks, consume_kafka_python(broker.bootstrap, topic, range(PARTITIONS)), PARTITIONS)
    counts = stored_codecs(broker.data_dir, topic)
    assert set(counts) == {stored}, f"stored batches by codec: {counts}, expected only {stored}"


def test_a_batch_already_in_the_topic_codec_is_stored_as_sent(broker):
    topic = "tc-same"
    create_topic_confluent(broker.bootstrap, topic, PARTITIONS, {"compression.type": "zstd"})
    records = make_records(500, seed=RECORDS_SEED + 1)
    acks = produce_kafka_python(broker.bootstrap, topic, records, codec="zstd")
    verify_log(records, acks, consume_confluent(broker.bootstrap, topic, range(PARTITIONS)), PARTITIONS)
    assert set(stored_codecs(broker.data_dir, topic)) == {"zstd"}


def test_changing_compression_type_applies_to_the_next_batches(broker):
    from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource

    topic = "tc-altered"
    create_topic_confluent(broker.bootstrap, topic, PARTITIONS)
    first = make_records(400, seed=RECORDS_SEED + 2)
    acks = produce_confluent(broker.bootstrap, topic, first, codec="snappy")
    assert set(stored_codecs(broker.data_dir, topic)) == {"snappy"}, "compression.type=producer keeps the codec"

    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    change = ConfigResource(
        ConfigResource.Type.TOPIC,
        topic,
        incremental_configs=[ConfigEntry("compression.type", "gzip", incremental_operation=AlterConfigOpType.SET)],
    )
    admin.incremental_alter_configs([change])[change].result(30)
    second = make_records(400, seed=RECORDS_SEED + 3)
    acks += produce_confluent(broker.bootstrap, topic, second, codec="snappy")
    # kafka-python's default producer (uncompressed, idempotent) too.
    third = make_records(200, seed=RECORDS_SEED + 4)
    acks += produce_kafka_python(broker.bootstrap, topic, third)
    records = first + second + third
    verify_log(records, acks, consume_kafka_python(broker.bootstrap, topic, range(PARTITIONS)), PARTITIONS)
    counts = stored_codecs(broker.data_dir, topic)
    assert set(counts) == {"snappy", "gzip"}, f"stored batches by codec: {counts}"

