"""Positioning: consume from an offset, offsets_for_times (ListOffsets by
timestamp), earliest/latest offsets (ListOffsets -2/-1), with both Python
clients."""

from __future__ import annotations

import time

import pytest
from confluent_kafka import TopicPartition as CkTopicPartition

from helpers import (
    confluent_consumer,
    consume_confluent,
    create_topic_confluent,
    kafka_python_consumer,
    make_records,
    produce_confluent,
    watermarks,
)

RECORD_COUNT = 10_000
SEEK_OFFSET = 5_000
TIME_OFFSET = 7_000


@pytest.fixture
def seek_topic(broker):
    """A 1-partition topic holding RECORD_COUNT records; record i has the
    explicit CreateTime timestamps[i], strictly increasing by 1 ms.

    Timestamps are recent (well inside the default 7-day retention) and in the
    past."""
    topic = "seek"
    create_topic_confluent(broker.bootstrap, topic, 1)
    records = make_records(RECORD_COUNT, seed=7)
    base_ts = int(time.time() * 1000) - 10 * 60 * 1000
    timestamps = [base_ts + i for i in range(RECORD_COUNT)]
    acks = produce_confluent(broker.bootstrap, topic, records, timestamps=timestamps)
    assert acks == [(0, i) for i in range(RECORD_COUNT)]
    return topic, records, timestamps


def test_consume_from_offset(broker, seek_topic):
    topic, records, timestamps = seek_topic
    got = consume_confluent(broker.bootstrap, topic, [0], start_offset=SEEK_OFFSET)[0]
    assert got, "nothing read from offset 5000"
    assert got[0].offset == SEEK_OFFSET, f"first record read has offset {got[0].offset}"
    assert [r.offset for r in got] == list(range(SEEK_OFFSET, RECORD_COUNT))
    for r in got:
        want = records[r.offset]
        assert (r.key, r.value, r.headers) == (want.key, want.value, want.headers), f"offset {r.offset}"
        assert r.timestamp == timestamps[r.offset], f"offset {r.offset}: timestamp {r.timestamp}"


def test_watermarks_confluent(broker, seek_topic):
    topic, _, _ = seek_topic
    assert watermarks(broker.bootstrap, topic, 0) == (0, RECORD_COUNT)


def test_offsets_for_times_confluent(broker, seek_topic):
    topic, records, timestamps = seek_topic
    consumer = confluent_consumer(broker.bootstrap)
    try:
        queries = {
            "record 7000": (timestamps[TIME_OFFSET], TIME_OFFSET),
            "before the first record": (timestamps[0] - 60_000, 0),
            # No record at or after this time: Kafka answers offset -1.
            "after the last record": (timestamps[-1] + 60_000, -1),
        }
        for what, (ts, expected) in queries.items():
            [tp] = consumer.offsets_for_times([CkTopicPartition(topic, 0, ts)], timeout=10)
            assert tp.error is None, f"{what}: {tp.error}"
            assert tp.offset == expected, f"{what}: offsets_for_times({ts}) gave {tp.offset}, expected {expected}"
    finally:
        consumer.close()

    got = consume_confluent(broker.bootstrap, topic, [0], start_offset=TIME_OFFSET)[0]
    assert got[0].offset == TIME_OFFSET
    assert got[0].timestamp == timestamps[TIME_OFFSET]
    assert got[0].value == records[TIME_OFFSET].value
    assert len(got) == RECORD_COUNT - TIME_OFFSET


def test_offsets_kafka_python(broker, seek_topic):
    from kafka import TopicPartition

    topic, records, timestamps = seek_topic
    tp = TopicPartition(topic, 0)
    consumer = kafka_python_consumer(broker.bootstrap)
    try:
        assert consumer.beginning_offsets([tp]) == {tp: 0}
        assert consumer.end_offsets([tp]) == {tp: RECORD_COUNT}

        found = consumer.offsets_for_times({tp: timestamps[TIME_OFFSET]})[tp]
        assert found is not None, "offsets_for_times found nothing for record 7000's timestamp"
        assert (found.offset, found.timestamp) == (TIME_OFFSET, timestamps[TIME_OFFSET])
        assert consumer.offsets_for_times({tp: timestamps[-1] + 60_000})[tp] is None

        consumer.assign([tp])
        consumer.seek(tp, SEEK_OFFSET)
        deadline = time.monotonic() + 60
        first = None
        while first is None and time.monotonic() < deadline:
            batch = consumer.poll(timeout_ms=1000, max_records=10)
            if batch.get(tp):
                first = batch[tp][0]
        assert first is not None, "kafka-python read nothing after seek(5000)"
        assert first.offset == SEEK_OFFSET
        assert (first.key, first.value) == (records[SEEK_OFFSET].key, records[SEEK_OFFSET].value)
        assert first.timestamp == timestamps[SEEK_OFFSET]
    finally:
        consumer.close()
