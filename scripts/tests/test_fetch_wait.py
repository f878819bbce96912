"""Fetch long-polls (max_wait_ms, min_bytes) over partitions that live on
different shards: a parked Fetch answers when data arrives on any of its
partitions, whichever shard owns it, and answers with nothing when its wait
runs out. The bounds below are wide (a wake-up is expected in well under a
second, the check allows half the wait), so they test the behaviour, not the
speed."""

from __future__ import annotations

import struct
import threading
import time

import pytest

from helpers import (
    API_FETCH,
    RawConnection,
    encode_record_batch,
    kstring,
    parse_fetch_response_v4,
    unique_name,
    wait_for_topic,
    create_topic_confluent,
)

PARTITIONS = 4  # on a 2-shard broker, placement puts two on each shard


def fetch_all_body(topic: str, offsets: dict[int, int], *, max_wait_ms: int, min_bytes: int) -> bytes:
    """FetchRequest v4 body: one topic, every partition in `offsets`."""
    body = struct.pack(">iiiib", -1, max_wait_ms, min_bytes, 1 << 20, 0)
    body += struct.pack(">i", 1) + kstring(topic)
    body += struct.pack(">i", len(offsets))
    for partition, offset in offsets.items():
        body += struct.pack(">iqi", partition, offset, 1 << 20)
    return body


def produce_one(bootstrap: str, topic: str, partition: int, value: bytes) -> None:
    batch = encode_record_batch([(None, value, ())], base_timestamp=int(time.time() * 1000))
    with RawConnection(bootstrap) as conn:
        (result,) = conn.produce(7, topic, partition, batch)
        assert result.error_code == 0, result


def long_poll(bootstrap: str, topic: str, *, max_wait_ms: int, min_bytes: int, produce_to: int | None, delay_s: float):
    """Starts a Fetch of every partition at offset 0, produces one record to
    `produce_to` after `delay_s` on another connection, and returns
    (seconds until the answer, results by partition)."""
    offsets = {p: 0 for p in range(PARTITIONS)}
    with RawConnection(bootstrap, timeout_s=max_wait_ms / 1000 + 30) as conn:
        producer = None
        if produce_to is not None:
            producer = threading.Timer(delay_s, produce_one, (bootstrap, topic, produce_to, b"wake-up"))
            producer.start()
        started = time.monotonic()
        r = conn.request(API_FETCH, 4, fetch_all_body(topic, offsets, max_wait_ms=max_wait_ms, min_bytes=min_bytes))
        elapsed_s = time.monotonic() - started
        if producer is not None:
            producer.join()
    results = {res.partition: res for res in parse_fetch_response_v4(r)}
    assert sorted(results) == list(range(PARTITIONS))
    return elapsed_s, results


@pytest.fixture
def topic(broker) -> str:
    name = unique_name("fetch-wait")
    create_topic_confluent(broker.bootstrap, name, PARTITIONS)
    wait_for_topic(broker.bootstrap, name, PARTITIONS)
    return name


@pytest.mark.parametrize("partition", range(PARTITIONS))
def test_parked_fetch_wakes_on_data_from_either_shard(broker, topic, partition):
    max_wait_ms = 20_000
    elapsed_s, results = long_poll(
        broker.bootstrap, topic, max_wait_ms=max_wait_ms, min_bytes=1, produce_to=partition, delay_s=0.3
    )
    assert elapsed_s < max_wait_ms / 1000 / 2, f"the fetch waited {elapsed_s:.1f} s although data arrived after 0.3 s"
    for p, res in results.items():
        assert res.error_code == 0, res
        if p == partition:
            assert res.high_watermark == 1
            assert res.records and b"wake-up" in res.records
        else:
            assert res.high_watermark == 0
            assert not res.records


def test_parked_fetch_answers_empty_when_the_wait_runs_out(broker, topic):
    elapsed_s, results = long_poll(broker.bootstrap, topic, max_wait_ms=400, min_bytes=1, produce_to=None, delay_s=0)
    assert elapsed_s >= 0.3, f"answered after {elapsed_s:.3f} s, before the wait ran out"
    for res in results.values():
        assert (res.error_code, res.high_watermark, bool(res.records)) == (0, 0, False), res


def test_min_bytes_not_reached_waits_out_and_returns_what_there_is(broker, topic):
    # One small record never reaches min_bytes: the fetch waits its time and
    # then answers with the record.
    elapsed_s, results = long_poll(
        broker.bootstrap, topic, max_wait_ms=1500, min_bytes=1 << 20, produce_to=1, delay_s=0.2
    )
    assert elapsed_s >= 1.0, f"answered after {elapsed_s:.3f} s with less than min_bytes"
    assert results[1].high_watermark == 1 and b"wake-up" in (results[1].records or b"")
