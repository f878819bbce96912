"""Produce and consume with real clients, every compression codec, and check
the log record by record: count, bytes, order per partition, dense offsets."""

from __future__ import annotations

import random
from collections import defaultdict

import pytest

from helpers import (
    CODECS,
    KCAT_FORMAT,
    consume_confluent,
    consume_kafka_python,
    create_topic_confluent,
    create_topic_kafka_python,
    make_records,
    parse_kcat_lines,
    produce_confluent,
    produce_kafka_python,
    run_kcat,
    verify_log,
)

RECORD_COUNT = 100_000
KCAT_RECORD_COUNT = 20_000
PARTITIONS = 4
RECORDS_SEED = 20_251_123
KCAT_HEADERS = (("origin", "kcat"), ("h2", "two-2"))


@pytest.fixture(scope="module")
def records():
    return make_records(RECORD_COUNT, seed=RECORDS_SEED)


def roundtrip_confluent(bootstrap, topic, codec, records):
    create_topic_confluent(bootstrap, topic, PARTITIONS)
    acks = produce_confluent(bootstrap, topic, records, codec=codec)
    consumed = consume_confluent(bootstrap, topic, range(PARTITIONS))
    verify_log(records, acks, consumed, PARTITIONS)


def roundtrip_kafka_python(bootstrap, topic, codec, records):
    create_topic_kafka_python(bootstrap, topic, PARTITIONS)
    acks = produce_kafka_python(bootstrap, topic, records, codec=codec)
    consumed = consume_kafka_python(bootstrap, topic, range(PARTITIONS))
    verify_log(records, acks, consumed, PARTITIONS)


def kcat_lines(count: int, seed: int) -> list[tuple[bytes, bytes]]:
    """Text (key, value) pairs for kcat's line input; values are unique
    ("v<i>-..."), contain no ':' / tab / newline."""
    rng = random.Random(seed)
    alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,_-"
    lines = []
    for i in range(count):
        pad = "".join(rng.choices(alphabet, k=rng.randrange(0, 101)))
        lines.append((f"k{i % 1000}".encode(), f"v{i}-{pad}".encode()))
    return lines


def roundtrip_kcat(bootstrap, topic, codec, _records):
    # kcat is Debian's (librdkafka 2.0.2): an old client worth testing.
    # The topic is created with confluent-kafka's AdminClient.
    create_topic_confluent(bootstrap, topic, PARTITIONS)
    lines = kcat_lines(KCAT_RECORD_COUNT, seed=RECORDS_SEED)
    stdin = b"".join(k + b":" + v + b"\n" for k, v in lines)
    header_args = []
    for name, value in KCAT_HEADERS:
        header_args += ["-H", f"{name}={value}"]
    run_kcat(
        [
            "-b", bootstrap, "-P", "-t", topic, "-K", ":", "-z", codec, *header_args,
            "-X", "acks=all", "-X", "linger.ms=5", "-X", "batch.num.messages=10000",
        ],
        stdin=stdin,
    )
    out = run_kcat(["-b", bootstrap, "-C", "-t", topic, "-o", "beginning", "-e", "-q", "-f", KCAT_FORMAT])
    rows = parse_kcat_lines(out)

    expected_headers = ",".join(f"{n}={v}" for n, v in KCAT_HEADERS).encode()
    value_index = {v: i for i, (_, v) in enumerate(lines)}
    by_partition = defaultdict(list)
    for p, o, k, v, h in rows:
        by_partition[p].append((o, k, v, h))
    assert set(by_partition) == set(range(PARTITIONS)), f"partitions with data: {sorted(by_partition)}"

    seen = set()
    key_partition = {}
    for p, got in by_partition.items():
        last_index = -1
        for expected_offset, (o, k, v, h) in enumerate(got):
            assert o == expected_offset, f"partition {p}: offset {o} where {expected_offset} was expected"
            assert v in value_index, f"partition {p} offset {o}: unknown value {v[:60]!r}"
            i = value_index[v]
            assert i not in seen, f"record {i} read twice"
            seen.add(i)
            assert k == lines[i][0], f"partition {p} offset {o}: key {k!r}, expected {lines[i][0]!r}"
            assert h == expected_headers, f"partition {p} offset {o}: headers {h!r}"
            assert i > last_index, f"partition {p}: record {i} after record {last_index} (order broken)"
            last_index = i
            assert key_partition.setdefault(k, p) == p, f"key {k!r} found in two partitions"
    assert len(seen) == len(lines), f"read {len(seen)} of {len(lines)} records"


ROUNDTRIPS = {
    "confluent": roundtrip_confluent,
    "kafka-python": roundtrip_kafka_python,
    "kcat": roundtrip_kcat,
}


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("client", list(ROUNDTRIPS))
def test_produce_consume(broker, records, client, codec):
    topic = f"pc-{client}-{codec}"
    ROUNDTRIPS[client](broker.bootstrap, topic, codec, records)
