"""Errors a client must see with Kafka's exact codes, and bad input that must
close the connection without hurting the broker. Raw-socket tests use the
hand-made encoders in helpers.py; the encoders are themselves checked against
kafka-python's decoder and by a valid request that must succeed."""

from __future__ import annotations

import struct
import time

import pytest
from confluent_kafka import KafkaError, KafkaException, Producer

from helpers import (
    API_API_VERSIONS,
    API_METADATA,
    API_PRODUCE,
    ERR_CORRUPT_MESSAGE,
    ERR_NONE,
    ERR_UNKNOWN_TOPIC_OR_PARTITION,
    ERR_UNSUPPORTED_VERSION,
    RECORD_BATCH_HEADER_BYTES,
    ConnectionClosed,
    RawConnection,
    Reader,
    api_versions_request_body,
    assert_broker_answers,
    consume_confluent,
    crc32c,
    create_topic_confluent,
    encode_record_batch,
    encode_request,
    kstring,
    parse_api_versions_response,
    produce_request_body,
    watermarks,
)

MISSING_TOPIC = "no-such-topic"
SOCKET_REQUEST_MAX_BYTES = 100 * 1024 * 1024  # Kafka's socket.request.max.bytes

RAW_RECORDS = [
    (b"key-0", b"value-0", [("h", b"\x00\x01\xff")]),
    (None, b"value-1 with a null key", []),
    (b"key-2", b"\xff\xfe binary \x00", [("a", b"1"), ("b", None)]),
]


def raw_batch() -> bytes:
    return encode_record_batch(RAW_RECORDS, base_timestamp=int(time.time() * 1000))


@pytest.fixture
def strict_broker(broker_factory):
    """A broker that does not create topics on demand."""
    return broker_factory("--auto-create-topics", "false")


# --- the hand-made encoders, checked without a broker -----------------------


def test_crc32c_known_vector():
    assert crc32c(b"123456789") == 0xE3069283
    assert crc32c(b"") == 0


def test_hand_made_batch_decodes_with_kafka_python():
    from kafka.record.default_records import DefaultRecordBatch

    batch = raw_batch()
    decoded = DefaultRecordBatch(batch)
    assert decoded.validate_crc()
    got = [(r.offset, r.key, r.value, [tuple(h) for h in r.headers]) for r in decoded]
    want = [(i, k, v, [tuple(h) for h in hs]) for i, (k, v, hs) in enumerate(RAW_RECORDS)]
    assert got == want

    corrupt = bytearray(batch)
    corrupt[-2] ^= 0x01  # inside the last record's value
    assert not DefaultRecordBatch(bytes(corrupt)).validate_crc()


# --- client-visible errors ---------------------------------------------------


def test_unknown_topic_confluent(strict_broker):
    bootstrap = strict_broker.bootstrap
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "acks": "all",
            "enable.idempotence": False,
            "message.timeout.ms": 20_000,
            # Do not wait 30 s before believing the broker that the topic is unknown.
            "topic.metadata.propagation.max.ms": 1000,
        }
    )
    md = producer.list_topics(topic=MISSING_TOPIC, timeout=10)
    t = md.topics.get(MISSING_TOPIC)
    assert t is not None and t.error is not None, f"metadata for {MISSING_TOPIC}: {t!r}"
    assert t.error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART, f"metadata error {t.error}"

    errors = []
    try:
        producer.produce(MISSING_TOPIC, value=b"x", on_delivery=lambda err, msg: errors.append(err))
    except KafkaException as e:
        # librdkafka may refuse at once once it knows the topic does not exist.
        errors.append(e.args[0])
    assert producer.flush(60) == 0
    assert len(errors) == 1 and errors[0] is not None, f"delivery report {errors}"
    assert errors[0].code() in (KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC), (
        f"delivery error {errors[0]} (a timeout here means the broker gave a retriable "
        f"error instead of UNKNOWN_TOPIC_OR_PARTITION)"
    )

    md = producer.list_topics(timeout=10)
    assert MISSING_TOPIC not in md.topics or md.topics[MISSING_TOPIC].error is not None, "topic was auto-created"


def test_unknown_topic_kafka_python(strict_broker):
    from kafka import errors as kafka_errors
    from kafka.admin import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=strict_broker.bootstrap, bootstrap_timeout_ms=10_000)
    try:
        [topic] = admin.describe_topics([MISSING_TOPIC])
        assert topic["name"] == MISSING_TOPIC  # kafka-python 3: DescribeTopicPartitions
        assert topic["error_code"] == ERR_UNKNOWN_TOPIC_OR_PARTITION, topic
        assert kafka_errors.for_code(topic["error_code"]) is kafka_errors.UnknownTopicOrPartitionError
        assert MISSING_TOPIC not in admin.list_topics(), "topic was auto-created"
    finally:
        admin.close()


# --- bad frames: the connection closes, the broker stays up ------------------


def _request_header(api_key: int, api_version: int, client_id: str = "raw") -> bytes:
    return struct.pack(">hhi", api_key, api_version, 7) + kstring(client_id)


BAD_FRAMES = {
    # Kafka rejects a size above socket.request.max.bytes before reading it.
    "size-200MiB": struct.pack(">i", 2 * SOCKET_REQUEST_MAX_BYTES) + b"\x00" * 16,
    "negative-size": struct.pack(">i", -1) + b"\x00" * 16,
    "too-short-for-a-header": struct.pack(">i", 3) + b"\x00\x12\x00",
    "unknown-api-key": struct.pack(">i", 10) + struct.pack(">hhi", 9999, 0, 1) + kstring(None),
    # client_id claims 1000 bytes, the frame ends after 4.
    "client-id-overruns-frame": struct.pack(">i", 12) + struct.pack(">hhih", API_METADATA, 1, 1, 1000) + b"abcd",
    # Metadata v1 whose topics array claims 5 entries but holds none.
    "truncated-body": (
        lambda payload: struct.pack(">i", len(payload)) + payload
    )(_request_header(API_METADATA, 1) + struct.pack(">i", 5)),
    "garbage": struct.pack(">i", 32) + bytes(range(0xFF, 0xDF, -1)),
}


@pytest.mark.parametrize("frame", list(BAD_FRAMES.values()), ids=list(BAD_FRAMES))
def test_bad_frame_closes_connection(broker, frame):
    with RawConnection(broker.bootstrap) as conn:
        conn.send_raw(frame)
        conn.wait_closed()
    assert broker.is_running(), f"broker died on a bad frame\n{broker.log_tail()}"
    assert_broker_answers(broker.bootstrap)


# --- versions ------------------------------------------------------------------


@pytest.mark.parametrize("version", [0, 3])
def test_api_versions(broker, version):
    """Valid ApiVersions requests (v0; v3, the first flexible one) through the
    hand-made encoder: the decoder and encoder agree with the broker."""
    with RawConnection(broker.bootstrap) as conn:
        error_code, keys = conn.api_versions(version)
    assert error_code == ERR_NONE
    assert keys[API_API_VERSIONS][0] == 0 and keys[API_API_VERSIONS][1] >= 3, keys.get(API_API_VERSIONS)
    # Produce advertises min 0 (old librdkafka enables compression only then).
    assert keys[API_PRODUCE][0] == 0 and keys[API_PRODUCE][1] >= 7, keys.get(API_PRODUCE)


def test_api_versions_unsupported_version(broker):
    """ApiVersions v99: error 35 in a v0 body (the header is v0 as always),
    listing the ApiVersions range so the client can retry."""
    with RawConnection(broker.bootstrap) as conn:
        conn.send_raw(encode_request(API_API_VERSIONS, 99, 42, api_versions_request_body(99), flexible_header=True))
        r = _read_response(conn, 42)
        error_code, keys = parse_api_versions_response(r, 0)
        assert error_code == ERR_UNSUPPORTED_VERSION
        assert API_API_VERSIONS in keys, f"ApiKeys lists {sorted(keys)}, ApiVersions missing"
        lo, hi = keys[API_API_VERSIONS]
        assert lo == 0 and hi >= 3
        # The connection remains usable: the client retries with a version it knows.
        error_code, _ = conn.api_versions(3)
        assert error_code == ERR_NONE


def _read_response(conn: RawConnection, correlation_id: int) -> Reader:
    r = Reader(conn.read_frame())
    assert r.i32() == correlation_id
    return r


def test_produce_v2_is_rejected(strict_broker):
    """Produce v0-2 is advertised (for old librdkafka) but answered with
    UNSUPPORTED_VERSION; nothing is appended."""
    topic = "raw-v2"
    create_topic_confluent(strict_broker.bootstrap, topic, 1)
    with RawConnection(strict_broker.bootstrap) as conn:
        # Gregor answers (it advertises v0 for old librdkafka's sake), it
        # does not close: the client must see the error.
        results = conn.produce(2, topic, 0, raw_batch())
    assert [(r.topic, r.partition) for r in results] == [(topic, 0)]
    assert results[0].error_code == ERR_UNSUPPORTED_VERSION, results
    assert_broker_answers(strict_broker.bootstrap)
    assert watermarks(strict_broker.bootstrap, topic, 0) == (0, 0), "a Produce v2 request appended records"


def test_produce_crc_check(strict_broker):
    """A batch with a flipped byte gets CORRUPT_MESSAGE and is not appended;
    the same batch intact gets offset 0, and a real client reads it back."""
    topic = "raw-crc"
    create_topic_confluent(strict_broker.bootstrap, topic, 1)
    batch = raw_batch()
    corrupt = bytearray(batch)
    corrupt[-2] ^= 0x01  # a value byte: only the CRC can tell
    assert len(batch) > RECORD_BATCH_HEADER_BYTES + 2

    with RawConnection(strict_broker.bootstrap) as conn:
        [bad] = conn.produce(7, topic, 0, bytes(corrupt))
        assert (bad.topic, bad.partition) == (topic, 0)
        assert bad.error_code == ERR_CORRUPT_MESSAGE, f"corrupt batch answered with error {bad.error_code}"

        [good] = conn.produce(7, topic, 0, batch)
        assert good.error_code == ERR_NONE, f"valid hand-made batch answered with error {good.error_code}"
        assert good.base_offset == 0, f"valid batch appended at {good.base_offset}, the corrupt one must not count"

    got = consume_confluent(strict_broker.bootstrap, topic, [0])[0]
    assert [(r.offset, r.key, r.value, r.headers) for r in got] == [
        (i, k, v, tuple(hs)) for i, (k, v, hs) in enumerate(RAW_RECORDS)
    ]


# --- leader epochs ---------------------------------------------------------------

API_OFFSET_FOR_LEADER_EPOCH = 23
ERR_FENCED_LEADER_EPOCH = 74
ERR_UNKNOWN_LEADER_EPOCH = 75


def _offset_for_leader_epoch(conn: RawConnection, topic: str, current_leader_epoch: int) -> tuple[int, int, int]:
    """OffsetForLeaderEpoch v2 for partition 0, asking where epoch 0 ends:
    (error code, leader epoch, end offset)."""
    body = struct.pack(">i", 1) + kstring(topic)
    body += struct.pack(">i", 1) + struct.pack(">iii", 0, current_leader_epoch, 0)
    conn.send_raw(encode_request(API_OFFSET_FOR_LEADER_EPOCH, 2, 23, body))
    r = _read_response(conn, 23)
    r.i32()  # throttle_time_ms
    assert r.i32() == 1
    assert r.string() == topic
    assert r.i32() == 1
    error_code, partition, leader_epoch, end_offset = r.i16(), r.i32(), r.i32(), r.i64()
    assert partition == 0
    return error_code, leader_epoch, end_offset


def test_offset_for_leader_epoch_fenced_and_unknown(broker):
    """A current_leader_epoch older than the leader's is FENCED_LEADER_EPOCH
    (74), a newer one UNKNOWN_LEADER_EPOCH (75); the leader's own epoch (0 on
    one node) or none (-1) gets the end offset of the asked epoch."""
    topic = "epochs"
    create_topic_confluent(broker.bootstrap, topic, 1)
    producer = Producer({"bootstrap.servers": broker.bootstrap, "enable.idempotence": False})
    for i in range(3):
        producer.produce(topic, value=b"v%d" % i, partition=0)
    assert producer.flush(10) == 0
    with RawConnection(broker.bootstrap) as conn:
        assert _offset_for_leader_epoch(conn, topic, 0) == (ERR_NONE, 0, 3)
        assert _offset_for_leader_epoch(conn, topic, -1) == (ERR_NONE, 0, 3)
        assert _offset_for_leader_epoch(conn, topic, 1)[0] == ERR_UNKNOWN_LEADER_EPOCH
        assert _offset_for_leader_epoch(conn, topic, 7)[0] == ERR_UNKNOWN_LEADER_EPOCH


# --- Kafka's answers to misuse ---------------------------------------------------

ERR_INVALID_RECORD = 87


def test_offset_commit_for_a_missing_topic(strict_broker):
    """OffsetCommit names a partition of a topic that does not exist: that
    partition gets UNKNOWN_TOPIC_OR_PARTITION and nothing is stored for it;
    a partition of an existing topic in the same request is committed."""
    from confluent_kafka import Consumer, TopicPartition

    topic = "commit-real"
    create_topic_confluent(strict_broker.bootstrap, topic, 1)
    consumer = Consumer({"bootstrap.servers": strict_broker.bootstrap, "group.id": "commit-missing",
                         "enable.auto.commit": False})
    try:
        results = consumer.commit(
            offsets=[TopicPartition(MISSING_TOPIC, 0, 5), TopicPartition(topic, 0, 0)], asynchronous=False
        )
    except KafkaException as e:
        # librdkafka raises when any partition failed; the per-partition
        # results are in the committed offsets below.
        assert e.args[0].code() == KafkaError.UNKNOWN_TOPIC_OR_PART, e
        results = None
    if results is not None:
        by_topic = {tp.topic: tp for tp in results}
        assert by_topic[MISSING_TOPIC].error is not None
        assert by_topic[MISSING_TOPIC].error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART
        assert by_topic[topic].error is None
    committed = consumer.committed([TopicPartition(MISSING_TOPIC, 0), TopicPartition(topic, 0)], timeout=30)
    consumer.close()
    by_topic = {tp.topic: tp for tp in committed}
    assert by_topic[MISSING_TOPIC].offset < 0, "an offset for a missing topic was stored"
    assert by_topic[topic].offset == 0


def test_null_key_on_a_compacted_topic_is_refused(strict_broker):
    """A record without a key cannot be compacted: Kafka refuses the batch
    with INVALID_RECORD (KIP-467 names the records); nothing is appended."""
    topic = "compacted-keys"
    create_topic_confluent(strict_broker.bootstrap, topic, 1, {"cleanup.policy": "compact"})
    producer = Producer({"bootstrap.servers": strict_broker.bootstrap, "linger.ms": 50})
    reports = []
    producer.produce(topic, key=None, value=b"no key", partition=0, on_delivery=lambda e, m: reports.append(e))
    producer.produce(topic, key=b"k", value=b"keyed", partition=0, on_delivery=lambda e, m: reports.append(e))
    assert producer.flush(30) == 0
    # Both records were in one batch: the batch is refused as a whole.
    assert [r.code() if r else None for r in reports] == [KafkaError.INVALID_RECORD] * 2, reports
    assert watermarks(strict_broker.bootstrap, topic, 0) == (0, 0), "a refused batch was appended"
    # Keyed records alone are taken.
    producer.produce(topic, key=b"k", value=b"keyed", partition=0, on_delivery=lambda e, m: reports.append(e))
    assert producer.flush(30) == 0
    assert reports[-1] is None, reports[-1]
    assert watermarks(strict_broker.bootstrap, topic, 0) == (0, 1)


def test_null_key_refusal_names_the_record(strict_broker):
    """The Produce v8 answer carries record_errors with the record's index in
    its batch and the error message."""
    topic = "compacted-keys-raw"
    create_topic_confluent(strict_broker.bootstrap, topic, 1, {"cleanup.policy": "compact"})
    batch = encode_record_batch(
        [(b"a", b"1", []), (None, b"2", []), (b"c", b"3", [])], base_timestamp=int(time.time() * 1000)
    )
    with RawConnection(strict_broker.bootstrap) as conn:
        conn.send_raw(encode_request(API_PRODUCE, 8, 31, produce_request_body(8, topic, 0, batch)))
        r = _read_response(conn, 31)
        assert r.i32() == 1 and r.string() == topic and r.i32() == 1
        partition, error, base_offset = r.i32(), r.i16(), r.i64()
        r.i64()  # log_append_time_ms
        r.i64()  # log_start_offset
        record_errors = [(r.i32(), r.string()) for _ in range(r.i32())]
        message = r.string()
    assert (partition, error, base_offset) == (0, ERR_INVALID_RECORD, -1)
    assert [index for index, _ in record_errors] == [1], record_errors
    assert "without key" in (message or ""), message
    assert watermarks(strict_broker.bootstrap, topic, 0) == (0, 0)
