"""kill -9 the broker while a producer writes with acks=all, restart it, and
check the durability contract: every acknowledged record is in the log, once,
at its acknowledged offset, byte for byte.

Records whose delivery failed may or may not be present (the broker may have
synced them before dying). Without idempotence, a retried request can also
write a record twice: the first copy was written but not acknowledged, the
retry is acknowledged. So:
  - with retries off, no record may appear twice at all;
  - with retries on, an acknowledged record appears at its acknowledged offset
    and any other copy of it sits earlier in the same partition;
  - with idempotence (5 requests in flight, retries on), every record appears
    at most once and each partition holds them in the order they were sent.
"""

from __future__ import annotations

import os
import random
import time
from collections import defaultdict

import pytest

from helpers import (
    BackgroundProducer,
    assert_dense_offsets,
    consume_confluent,
    crash_key,
    crash_value,
    create_topic_confluent,
    make_records,
    parse_crash_value,
    produce_confluent,
    verify_log,
    watermarks,
)

CRASH_ROUNDS = 3
CRASH_SEED = int(os.environ.get("GREGOR_CRASH_SEED", "4242"))
CRASH_PARTITIONS = 2
SEGMENT_BYTES = 1024 * 1024  # small segments so that crashes hit rolls too
PROGRESS_ACKS = 1000  # acks to see after each restart before the next kill
NO_INFLIGHT_COUNT = 20_000


@pytest.mark.parametrize(
    "retries, segment_writes, idempotent",
    [(False, "buffered", False), (True, "buffered", False), (False, "direct", False), (True, "buffered", True)],
    ids=["no-retries", "retries", "no-retries-odirect", "idempotent"],
)
def test_kill9_during_acks_all_writes(broker_factory, retries, segment_writes, idempotent):
    broker = broker_factory("--segment-bytes", SEGMENT_BYTES, "--segment-writes", segment_writes)
    topic = "crash"
    create_topic_confluent(broker.bootstrap, topic, CRASH_PARTITIONS)
    rng = random.Random(CRASH_SEED + retries)
    print(f"crash seed {CRASH_SEED} (set GREGOR_CRASH_SEED to change)")

    extra = {"enable.idempotence": True, "max.in.flight.requests.per.connection": 5} if idempotent else None
    producer = BackgroundProducer(broker.bootstrap, topic, retries, extra_conf=extra)
    producer.start()
    try:
        producer.wait_for_acks(PROGRESS_ACKS)
        for round_ in range(CRASH_ROUNDS):
            # Keep writing for a random while, then crash mid-stream.
            time.sleep(rng.uniform(0.2, 1.5))
            before = producer.ack_count()
            broker.kill9()
            print(f"round {round_}: killed after {before} acks, {producer.sent} sent")
            time.sleep(rng.uniform(0.0, 0.5))
            broker.restart()
            # Recovered and writable again before the next crash.
            producer.wait_for_acks(producer.ack_count() + PROGRESS_ACKS)
    finally:
        producer.join()

    acked, failed = producer.acked, producer.failed
    print(f"sent {producer.sent}, acked {len(acked)}, failed {len(failed)}")
    assert len(acked) + len(failed) == producer.sent, "some records got no delivery report"

    consumed = consume_confluent(broker.bootstrap, topic, range(CRASH_PARTITIONS))
    assert_dense_offsets(consumed)

    at: dict[tuple[int, int], tuple[bytes, bytes]] = {}
    copies: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for p, recs in consumed.items():
        for r in recs:
            _, i = parse_crash_value(r.value)
            assert i < producer.sent, f"partition {p} offset {r.offset}: record {i} was never sent"
            assert r.key == crash_key(i), f"partition {p} offset {r.offset}: key {r.key!r} with value of record {i}"
            at[(p, r.offset)] = (r.key, r.value)
            copies[i].append((p, r.offset))

    for i, (p, off) in sorted(acked.items()):
        got = at.get((p, off))
        assert got == (crash_key(i), crash_value(i)), (
            f"acknowledged record {i} at partition {p} offset {off} is "
            f"{'missing' if got is None else got}"
        )
        others = [c for c in copies[i] if c != (p, off)]
        if retries:
            bad = [c for c in others if c[0] != p or c[1] > off]
            assert not bad, f"acknowledged record {i} at {(p, off)} also found at {bad}"
        else:
            assert not others, f"acknowledged record {i} at {(p, off)} also found at {others}"
    if not retries or idempotent:
        dup = {i: c for i, c in copies.items() if len(c) > 1}
        assert not dup, f"records written twice: {dict(list(dup.items())[:5])}"
    if idempotent:
        for p, recs in consumed.items():
            sent_order = [parse_crash_value(r.value)[1] for r in recs]
            assert sent_order == sorted(sent_order), f"partition {p} holds records out of send order"
        print(f"idempotent: {len(acked)} acknowledged, each exactly once, in order per partition")


def test_kill9_when_idle_keeps_everything(broker_factory):
    """All writes acknowledged and nothing in flight: SIGKILL, restart, and the
    log is exactly what was written; new writes continue at the next offset."""
    broker = broker_factory("--segment-bytes", SEGMENT_BYTES)
    topic = "idle-crash"
    create_topic_confluent(broker.bootstrap, topic, CRASH_PARTITIONS)
    records = make_records(NO_INFLIGHT_COUNT, seed=99)
    acks = produce_confluent(broker.bootstrap, topic, records)

    broker.kill9()
    broker.restart()

    consumed = consume_confluent(broker.bootstrap, topic, range(CRASH_PARTITIONS))
    verify_log(records, acks, consumed, CRASH_PARTITIONS)

    counts = {p: len(consumed[p]) for p in range(CRASH_PARTITIONS)}
    for p in range(CRASH_PARTITIONS):
        wm = watermarks(broker.bootstrap, topic, p)
        assert wm == (0, counts[p]), f"partition {p}: watermarks {wm} after restart, expected (0, {counts[p]})"

    more = make_records(CRASH_PARTITIONS, seed=100)
    next_acks = produce_confluent(broker.bootstrap, topic, more, partitions=list(range(CRASH_PARTITIONS)))
    assert next_acks == [(p, counts[p]) for p in range(CRASH_PARTITIONS)], "writes after the crash did not continue at the next offset"
