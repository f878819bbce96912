"""Idempotent producers: InitProducerId, the per-(partition, producer) sequence
checks as Kafka makes them, and exactly-once appends across kill -9.

The raw tests build batches by hand so that each rule is seen in isolation:
a retry of one of the last 5 batches is answered NONE with the original base
offset and written once; a gap gets OUT_OF_ORDER_SEQUENCE_NUMBER; an older
epoch INVALID_PRODUCER_EPOCH; a new epoch must start at 0; a record set with
two batches gets INVALID_RECORD. Nothing is appended in the error cases.
"""

from __future__ import annotations

import struct
import time

from confluent_kafka import Producer

from helpers import (
    RawConnection,
    Reader,
    consume_confluent,
    create_topic_confluent,
    encode_record_batch,
    encode_request,
    watermarks,
)

API_INIT_PRODUCER_ID = 22
ERR_NONE = 0
ERR_OUT_OF_ORDER_SEQUENCE_NUMBER = 45
ERR_INVALID_PRODUCER_EPOCH = 47
ERR_INVALID_RECORD = 87
PRODUCE_VERSION = 7


def init_producer_id(conn: RawConnection) -> tuple[int, int, int]:
    """InitProducerId v1 (the last non-flexible version) without a
    transactional id: (error, id, epoch)."""
    body = struct.pack(">hi", -1, 60_000)  # null transactional id, timeout
    conn.send_raw(encode_request(API_INIT_PRODUCER_ID, 1, 9, body))
    r = Reader(conn.read_frame())
    assert r.i32() == 9
    r.i32()  # throttle_time_ms
    return r.i16(), r.i64(), r.i16()


def batch(producer_id: int, epoch: int, sequence: int, count: int, tag: str) -> bytes:
    records = [(f"{tag}-k{i}".encode(), f"{tag}-v{i}".encode(), []) for i in range(count)]
    return encode_record_batch(
        records,
        base_timestamp=int(time.time() * 1000),
        producer_id=producer_id,
        producer_epoch=epoch,
        base_sequence=sequence,
    )


def produce(conn: RawConnection, topic: str, records: bytes) -> tuple[int, int]:
    (result,) = conn.produce(PRODUCE_VERSION, topic, 0, records)
    return result.error_code, result.base_offset


def test_init_producer_id_hands_out_new_ids_across_restarts(broker):
    seen = set()
    with RawConnection(broker.bootstrap) as conn:
        for _ in range(3):
            error, producer_id, epoch = init_producer_id(conn)
            assert (error, epoch) == (ERR_NONE, 0)
            assert producer_id >= 0 and producer_id not in seen
            seen.add(producer_id)
    broker.kill9()
    broker.restart()
    with RawConnection(broker.bootstrap) as conn:
        error, producer_id, _ = init_producer_id(conn)
    assert error == ERR_NONE
    assert producer_id > max(seen), f"id {producer_id} after a restart is not past {sorted(seen)}"


def test_sequence_rules(broker):
    topic = "idempotence-rules"
    create_topic_confluent(broker.bootstrap, topic, 1)
    with RawConnection(broker.bootstrap) as conn:
        _, pid, epoch = init_producer_id(conn)
        assert produce(conn, topic, batch(pid, epoch, 0, 3, "a")) == (ERR_NONE, 0)
        assert produce(conn, topic, batch(pid, epoch, 3, 2, "b")) == (ERR_NONE, 3)
        # A retry of either batch: the original offsets, nothing written.
        assert produce(conn, topic, batch(pid, epoch, 0, 3, "a")) == (ERR_NONE, 0)
        assert produce(conn, topic, batch(pid, epoch, 3, 2, "b")) == (ERR_NONE, 3)
        assert watermarks(broker.bootstrap, topic, 0) == (0, 5)
        # A gap, a reorder, a stale epoch, a new epoch not at 0: refused.
        assert produce(conn, topic, batch(pid, epoch, 7, 1, "gap"))[0] == ERR_OUT_OF_ORDER_SEQUENCE_NUMBER
        assert produce(conn, topic, batch(pid, epoch, 2, 1, "old"))[0] == ERR_OUT_OF_ORDER_SEQUENCE_NUMBER
        assert produce(conn, topic, batch(pid, epoch + 1, 5, 1, "epoch"))[0] == ERR_OUT_OF_ORDER_SEQUENCE_NUMBER
        assert watermarks(broker.bootstrap, topic, 0) == (0, 5), "a refused batch was appended"
        # A new epoch starting at 0 is taken; the old epoch is then fenced.
        assert produce(conn, topic, batch(pid, epoch + 1, 0, 1, "new")) == (ERR_NONE, 5)
        assert produce(conn, topic, batch(pid, epoch, 5, 1, "stale"))[0] == ERR_INVALID_PRODUCER_EPOCH
        # Two batches for one partition in one Produce v3+: INVALID_RECORD.
        two = batch(pid, epoch + 1, 1, 1, "x") + batch(pid, epoch + 1, 2, 1, "y")
        assert produce(conn, topic, two)[0] == ERR_INVALID_RECORD
        assert watermarks(broker.bootstrap, topic, 0) == (0, 6)
    # The state survives a crash: retries are still recognised after it.
    broker.kill9()
    broker.restart()
    with RawConnection(broker.bootstrap) as conn:
        assert produce(conn, topic, batch(pid, epoch + 1, 0, 1, "new")) == (ERR_NONE, 5)
        assert produce(conn, topic, batch(pid, epoch + 1, 3, 1, "gap"))[0] == ERR_OUT_OF_ORDER_SEQUENCE_NUMBER
        assert produce(conn, topic, batch(pid, epoch + 1, 1, 1, "next")) == (ERR_NONE, 6)
    # And a clean stop, which writes a snapshot.
    assert broker.stop() == 0
    broker.start()
    with RawConnection(broker.bootstrap) as conn:
        assert produce(conn, topic, batch(pid, epoch + 1, 1, 1, "next")) == (ERR_NONE, 6)
        assert produce(conn, topic, batch(pid, epoch + 1, 2, 1, "more")) == (ERR_NONE, 7)
    values = [r.value for r in consume_confluent(broker.bootstrap, topic, [0])[0]]
    assert values == [b"a-v0", b"a-v1", b"a-v2", b"b-v0", b"b-v1", b"new-v0", b"next-v0", b"more-v0"]


def test_state_survives_segment_rolls_and_retention(broker_factory):
    """Snapshots at rolls: a producer's state outlives the segments that
    created it."""
    broker = broker_factory("--segment-bytes", 4096)
    topic = "idempotence-rolls"
    create_topic_confluent(broker.bootstrap, topic, 1)
    with RawConnection(broker.bootstrap) as conn:
        _, pid, _ = init_producer_id(conn)
        # ~40 batches of ~1 KiB: several rolls.
        for seq in range(40):
            big = encode_record_batch(
                [(b"k", b"x" * 1000, [])],
                base_timestamp=int(time.time() * 1000),
                producer_id=pid,
                producer_epoch=0,
                base_sequence=seq,
            )
            assert produce(conn, topic, big) == (ERR_NONE, seq)
    broker.kill9()
    broker.restart()
    with RawConnection(broker.bootstrap) as conn:
        last = encode_record_batch(
            [(b"k", b"x" * 1000, [])],
            base_timestamp=int(time.time() * 1000),
            producer_id=pid,
            producer_epoch=0,
            base_sequence=39,
        )
        assert produce(conn, topic, last) == (ERR_NONE, 39), "a retry after a crash and rolls"
        assert produce(conn, topic, batch(pid, 0, 41, 1, "gap"))[0] == ERR_OUT_OF_ORDER_SEQUENCE_NUMBER
    assert watermarks(broker.bootstrap, topic, 0) == (0, 40)


def test_default_idempotent_producer_round_trips(broker):
    """librdkafka with enable.idempotence=true (the Java client's and
    kafka-python 3's default): everything once, in order."""
    topic = "idempotent-default"
    create_topic_confluent(broker.bootstrap, topic, 2)
    producer = Producer({"bootstrap.servers": broker.bootstrap, "enable.idempotence": True})
    for i in range(2000):
        producer.produce(topic, key=str(i % 7).encode(), value=str(i).encode())
        producer.poll(0)
    assert producer.flush(30) == 0
    consumed = consume_confluent(broker.bootstrap, topic, [0, 1])
    values = [int(r.value) for recs in consumed.values() for r in recs]
    assert sorted(values) == list(range(2000))
    for recs in consumed.values():
        mine = [int(r.value) for r in recs]
        assert mine == sorted(mine), "a partition's records are out of order"
