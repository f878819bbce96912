"""Shared helpers for Gregor's real-client tests.

One place for each helper: record generators, producers and consumers for each
client library, the check that a consumed log matches what was acknowledged,
and a small hand-written Kafka wire encoder/decoder for the raw-socket tests.

All timeouts here are hang protection only, never performance assertions.
"""

from __future__ import annotations

import functools
import random
import socket
import struct
import subprocess
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass
from typing import Callable, Iterable, NamedTuple, Sequence

# Hang protection for one client operation (a produce run, a consume run).
CLIENT_TIMEOUT_S = 180
# Hang protection for one raw-socket read.
SOCKET_TIMEOUT_S = 15

CODECS = ("none", "gzip", "snappy", "lz4", "zstd")

# Kafka error codes the tests look for.
ERR_NONE = 0
ERR_CORRUPT_MESSAGE = 2
ERR_UNKNOWN_TOPIC_OR_PARTITION = 3
ERR_LEADER_NOT_AVAILABLE = 5
ERR_INVALID_REQUIRED_ACKS = 21
ERR_UNSUPPORTED_VERSION = 35
ERR_KAFKA_STORAGE_ERROR = 56

API_PRODUCE = 0
API_FETCH = 1
API_METADATA = 3
API_API_VERSIONS = 18


# ---------------------------------------------------------------------------
# Waiting and naming
# ---------------------------------------------------------------------------


def unique_name(prefix: str) -> str:
    """A topic or group name no other test (or earlier run) uses."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def wait_until(
    predicate: Callable[[], object],
    timeout_s: float,
    what: str,
    *,
    state: Callable[[], object] | None = None,
    interval_s: float = 0.1,
):
    """Poll `predicate` until it returns something truthy and return that.

    `timeout_s` is hang protection, not a performance bound. On timeout the
    AssertionError names `what` and, if given, the current `state()`. An
    exception raised by `predicate` propagates at once (use that to fail fast
    when a background worker died).
    """
    deadline = time.monotonic() + timeout_s
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            detail = f"; state: {state()!r}" if state is not None else ""
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}{detail}")
        time.sleep(interval_s)


# ---------------------------------------------------------------------------
# Records
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Rec:
    """One record as produced: bytes key/value, headers as (str, bytes) pairs."""

    key: bytes
    value: bytes
    headers: tuple[tuple[str, bytes], ...]


class Consumed(NamedTuple):
    """One record as a client returned it."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]
    timestamp: int


def make_records(count: int, seed: int) -> list[Rec]:
    """Deterministic keyed records with binary values and headers.

    Keys cycle through 1000 values so that every partition gets data. Values
    are pseudo-random bytes of length 0..200 (so empty values and non-UTF-8
    bytes occur). Every record has an "idx" header; every other record also has
    a "bin" header with a binary value.
    """
    rng = random.Random(seed)
    records = []
    for i in range(count):
        key = f"k{i % 1000}".encode()
        value = rng.randbytes(rng.randrange(0, 201))
        headers: list[tuple[str, bytes]] = [("idx", str(i).encode())]
        if i % 2 == 0:
            headers.append(("bin", b"\x00\xff" + rng.randbytes(rng.randrange(0, 17))))
        records.append(Rec(key, value, tuple(headers)))
    return records


def normalize_headers(headers: Iterable | None) -> tuple[tuple[str, bytes], ...]:
    """Client header lists (or None) as a comparable tuple of (str, bytes)."""
    if not headers:
        return ()
    return tuple((str(k), bytes(v) if v is not None else None) for k, v in headers)


# ---------------------------------------------------------------------------
# Topics
# ---------------------------------------------------------------------------


def create_topic_confluent(bootstrap: str, name: str, partitions: int, config: dict | None = None) -> None:
    """Create a topic with confluent-kafka's AdminClient and wait until every
    partition has a leader in the metadata."""
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics(
        [NewTopic(name, num_partitions=partitions, replication_factor=1, config=config or {})],
        operation_timeout=30,
        request_timeout=30,
    )
    futures[name].result(timeout=60)
    wait_for_topic(bootstrap, name, partitions)


def wait_for_topic(bootstrap: str, name: str, partitions: int, timeout_s: float = 30) -> None:
    """Wait until the metadata shows `name` with `partitions` led partitions."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap})
    deadline = time.monotonic() + timeout_s
    last = None
    while True:
        md = admin.list_topics(topic=name, timeout=10)
        t = md.topics.get(name)
        if t is not None and t.error is None and len(t.partitions) == partitions:
            if all(p.leader >= 0 and p.error is None for p in t.partitions.values()):
                return
        last = t
        if time.monotonic() > deadline:
            raise AssertionError(f"topic {name} not ready with {partitions} partitions: {last!r}")
        time.sleep(0.1)


def create_topic_kafka_python(bootstrap: str, name: str, partitions: int) -> None:
    """Create a topic with kafka-python's KafkaAdminClient (CreateTopics, which
    kafka-python sends to the controller named in the Metadata response)."""
    from kafka.admin import KafkaAdminClient, NewTopic

    admin = KafkaAdminClient(
        bootstrap_servers=bootstrap,
        bootstrap_timeout_ms=10_000,
        request_timeout_ms=30_000,
    )
    try:
        # Raises the mapped kafka.errors class on a non-zero topic error code.
        admin.create_topics(
            [NewTopic(name=name, num_partitions=partitions, replication_factor=1)],
            timeout_ms=30_000,
        )
        deadline = time.monotonic() + 30
        while True:
            topics = admin.describe_topics([name])
            if topics and topics[0]["error_code"] == 0 and len(topics[0]["partitions"]) == partitions:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"topic {name} not visible to kafka-python: {topics!r}")
            time.sleep(0.1)
    finally:
        admin.close()


# ---------------------------------------------------------------------------
# Producing
# ---------------------------------------------------------------------------


def confluent_producer_conf(bootstrap: str, codec: str = "none", **extra) -> dict:
    """Producer settings shared by the tests: acks=all and batching; idempotence
    as librdkafka's default has it (off; test_idempotence turns it on)."""
    conf = {
        "bootstrap.servers": bootstrap,
        "acks": "all",
        "compression.type": codec,
        "linger.ms": 5,
        "batch.num.messages": 10_000,
        "queue.buffering.max.messages": 200_000,
        "message.timeout.ms": 120_000,
    }
    conf.update(extra)
    return conf


def _store_ack(acks: list, i: int, err, msg) -> None:
    acks[i] = (err, msg.partition(), msg.offset())


def produce_confluent(
    bootstrap: str,
    topic: str,
    records: Sequence[Rec],
    *,
    codec: str = "none",
    partitions: Sequence[int] | None = None,
    timestamps: Sequence[int] | None = None,
    extra_conf: dict | None = None,
    timeout_s: float = CLIENT_TIMEOUT_S,
) -> list[tuple[int, int]]:
    """Produce `records` with confluent-kafka and wait for every delivery report.

    Returns the acknowledged (partition, offset) of each record, by index.
    Fails if any delivery report carries an error.
    """
    from confluent_kafka import Producer

    producer = Producer(confluent_producer_conf(bootstrap, codec, **(extra_conf or {})))
    acks: list = [None] * len(records)
    deadline = time.monotonic() + timeout_s
    for i, rec in enumerate(records):
        kwargs = {}
        if partitions is not None:
            kwargs["partition"] = partitions[i]
        if timestamps is not None:
            kwargs["timestamp"] = timestamps[i]
        while True:
            try:
                producer.produce(
                    topic,
                    value=rec.value,
                    key=rec.key,
                    headers=list(rec.headers) or None,
                    on_delivery=functools.partial(_store_ack, acks, i),
                    **kwargs,
                )
                break
            except BufferError:
                # Local queue full: serve delivery reports, then retry.
                producer.poll(0.05)
                if time.monotonic() > deadline:
                    raise AssertionError(f"producer queue stayed full for {timeout_s}s")
        if i % 1024 == 0:
            producer.poll(0)
    remaining = producer.flush(max(1.0, deadline - time.monotonic()))
    assert remaining == 0, f"{remaining} messages not delivered within {timeout_s}s"
    return _check_acks(acks)


def _check_acks(acks: list) -> list[tuple[int, int]]:
    missing = [i for i, a in enumerate(acks) if a is None]
    assert not missing, f"{len(missing)} records without a delivery report, first {missing[:5]}"
    failed = [(i, str(a[0])) for i, a in enumerate(acks) if a[0] is not None]
    assert not failed, f"{len(failed)} delivery errors, first: {failed[:5]}"
    return [(p, o) for _, p, o in acks]


def produce_kafka_python(
    bootstrap: str,
    topic: str,
    records: Sequence[Rec],
    *,
    codec: str = "none",
    acks: int | str = "all",
    extra: dict | None = None,
    timeout_s: float = CLIENT_TIMEOUT_S,
) -> list[tuple[int, int]]:
    """Produce `records` with kafka-python, acks=all (or `acks`) and otherwise
    its defaults (kafka-python 3 is idempotent by default) or `extra`; returns
    each record's acknowledged (partition, offset) by index (offset -1 for
    acks=0, where the broker answers nothing)."""
    from kafka import KafkaProducer

    conf = dict(
        bootstrap_servers=bootstrap,
        acks=acks,
        compression_type=None if codec == "none" else codec,
        linger_ms=5,
        batch_size=256 * 1024,
        max_block_ms=60_000,
        request_timeout_ms=30_000,
        bootstrap_timeout_ms=10_000,
    )
    conf.update(extra or {})
    producer = KafkaProducer(**conf)
    try:
        futures = [
            producer.send(topic, key=rec.key, value=rec.value, headers=list(rec.headers))
            for rec in records
        ]
        producer.flush(timeout=timeout_s)
        metas = [f.get(timeout=60) for f in futures]
    finally:
        producer.close(timeout=10)
    return [(m.partition, m.offset) for m in metas]


# ---------------------------------------------------------------------------
# Consuming
# ---------------------------------------------------------------------------


def confluent_consumer(bootstrap: str, **extra):
    """A confluent-kafka Consumer used with assign() only: a group.id is set
    (librdkafka requires one) but nothing is ever committed."""
    from confluent_kafka import Consumer

    conf = {
        "bootstrap.servers": bootstrap,
        "group.id": "gregor-tests-verify",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "enable.partition.eof": True,
        "auto.offset.reset": "earliest",
        # Validate every batch's CRC-32C: a damaged batch fails the read.
        "check.crcs": True,
    }
    conf.update(extra)
    return Consumer(conf)


def consume_confluent(
    bootstrap: str,
    topic: str,
    partitions: Iterable[int],
    *,
    start_offset: int | None = None,
    timeout_s: float = CLIENT_TIMEOUT_S,
) -> dict[int, list[Consumed]]:
    """Read `partitions` from `start_offset` (default: the beginning) to the
    end (partition EOF) with confluent-kafka; returns records per partition in
    the order received."""
    from confluent_kafka import OFFSET_BEGINNING, KafkaError, TopicPartition

    partitions = list(partitions)
    start = OFFSET_BEGINNING if start_offset is None else start_offset
    consumer = confluent_consumer(bootstrap)
    out: dict[int, list[Consumed]] = {p: [] for p in partitions}
    try:
        consumer.assign([TopicPartition(topic, p, start) for p in partitions])
        at_eof: set[int] = set()
        deadline = time.monotonic() + timeout_s
        while len(at_eof) < len(partitions):
            if time.monotonic() > deadline:
                counts = {p: len(v) for p, v in out.items()}
                raise AssertionError(
                    f"consume of {topic} did not reach the end of {sorted(set(partitions) - at_eof)} "
                    f"within {timeout_s}s; records so far {counts}"
                )
            for msg in consumer.consume(num_messages=10_000, timeout=1.0):
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        at_eof.add(msg.partition())
                        continue
                    raise AssertionError(f"consumer error on {topic}: {err}")
                at_eof.discard(msg.partition())
                out[msg.partition()].append(
                    Consumed(
                        msg.partition(),
                        msg.offset(),
                        msg.key(),
                        msg.value(),
                        normalize_headers(msg.headers()),
                        msg.timestamp()[1],
                    )
                )
    finally:
        consumer.close()
    return out


def watermarks(bootstrap: str, topic: str, partition: int) -> tuple[int, int]:
    """(low, high) watermark offsets from the broker (ListOffsets earliest and
    latest), via confluent-kafka."""
    from confluent_kafka import TopicPartition

    consumer = confluent_consumer(bootstrap)
    try:
        return consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10, cached=False)
    finally:
        consumer.close()


def kafka_python_consumer(bootstrap: str, **extra):
    """A kafka-python KafkaConsumer without a group (assign/seek only)."""
    from kafka import KafkaConsumer

    conf = dict(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=100,
        request_timeout_ms=30_000,
        bootstrap_timeout_ms=10_000,
    )
    conf.update(extra)
    return KafkaConsumer(**conf)


def consume_kafka_python(
    bootstrap: str,
    topic: str,
    partitions: Iterable[int],
    *,
    timeout_s: float = CLIENT_TIMEOUT_S,
) -> dict[int, list[Consumed]]:
    """Read `partitions` from the beginning to the end offsets (as of the call)
    with kafka-python."""
    from kafka import TopicPartition

    partitions = list(partitions)
    consumer = kafka_python_consumer(bootstrap)
    out: dict[int, list[Consumed]] = {p: [] for p in partitions}
    try:
        tps = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        end = consumer.end_offsets(tps)
        deadline = time.monotonic() + timeout_s
        while any(consumer.position(tp) < end[tp] for tp in tps):
            if time.monotonic() > deadline:
                counts = {p: len(v) for p, v in out.items()}
                raise AssertionError(
                    f"kafka-python consume of {topic} did not reach end offsets {end} "
                    f"within {timeout_s}s; records so far {counts}"
                )
            batch = consumer.poll(timeout_ms=1000, max_records=10_000)
            for tp, recs in batch.items():
                for r in recs:
                    out[tp.partition].append(
                        Consumed(tp.partition, r.offset, r.key, r.value, normalize_headers(r.headers), r.timestamp)
                    )
    finally:
        consumer.close()
    return out


# ---------------------------------------------------------------------------
# Checks
# ---------------------------------------------------------------------------


def assert_dense_offsets(consumed: dict[int, list[Consumed]], start: int = 0) -> None:
    """Each partition's consumed offsets are start, start+1, ... in order."""
    for p, recs in consumed.items():
        for expected, rec in enumerate(recs, start):
            if rec.offset != expected:
                raise AssertionError(
                    f"partition {p}: offset {rec.offset} where {expected} was expected "
                    f"(offsets must be dense and in order; {len(recs)} records read)"
                )


def verify_log(
    records: Sequence[Rec],
    acks: Sequence[tuple[int, int]],
    consumed: dict[int, list[Consumed]],
    num_partitions: int,
    *,
    require_all_partitions: bool = True,
) -> None:
    """The consumed log is exactly what was acknowledged.

    - every partition holds offsets 0..n-1, dense and in order;
    - record at (partition, offset) is byte-exact the record acknowledged there
      (key, value, headers);
    - within a partition, offset order is production order;
    - nothing is missing and nothing extra is present.
    """
    assert set(consumed) == set(range(num_partitions)), f"partitions read {sorted(consumed)}"
    by_partition: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for i, (p, off) in enumerate(acks):
        assert 0 <= p < num_partitions, f"record {i} acknowledged on partition {p}"
        by_partition[p].append((off, i))

    total = 0
    for p in range(num_partitions):
        expected = sorted(by_partition.get(p, []))
        offsets = [off for off, _ in expected]
        assert offsets == list(range(len(expected))), (
            f"partition {p}: acknowledged offsets are not 0..{len(expected) - 1} "
            f"(first ones {offsets[:10]})"
        )
        indices = [i for _, i in expected]
        for a, b in zip(indices, indices[1:]):
            assert a < b, f"partition {p}: record {b} was written before record {a} (production order broken)"
        if require_all_partitions:
            assert expected, f"partition {p} received no records; the data set should cover every partition"

        got = consumed[p]
        assert len(got) == len(expected), (
            f"partition {p}: read {len(got)} records, {len(expected)} were acknowledged"
        )
        for (off, i), rec in zip(expected, got):
            want = records[i]
            if rec.offset != off:
                raise AssertionError(f"partition {p}: read offset {rec.offset}, expected {off}")
            if rec.key != want.key or rec.value != want.value or rec.headers != want.headers:
                raise AssertionError(
                    f"partition {p} offset {off} (record {i}) differs:\n"
                    f"  key     {rec.key!r} vs {want.key!r}\n"
                    f"  value   {rec.value!r} vs {want.value!r}\n"
                    f"  headers {rec.headers!r} vs {want.headers!r}"
                )
        total += len(got)
    assert total == len(records), f"read {total} records in all, produced {len(records)}"


# ---------------------------------------------------------------------------
# kcat
# ---------------------------------------------------------------------------

KCAT_FORMAT = "%p\\t%o\\t%k\\t%s\\t%h\\n"


def run_kcat(args: Sequence[str | bytes], *, stdin: bytes | None = None, timeout_s: float = CLIENT_TIMEOUT_S) -> bytes:
    """Run kcat; fail with its stderr if it exits non-zero. Returns stdout."""
    proc = subprocess.run(
        ["kcat", *args],
        input=stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        timeout=timeout_s,
    )
    if proc.returncode != 0:
        raise AssertionError(
            f"kcat {' '.join(map(str, args))} exited {proc.returncode}\n"
            f"stderr:\n{proc.stderr.decode(errors='replace')[-4000:]}"
        )
    return proc.stdout


def parse_kcat_lines(out: bytes) -> list[tuple[int, int, bytes, bytes, bytes]]:
    """Rows of (partition, offset, key, value, headers) from KCAT_FORMAT output."""
    rows = []
    for line in out.split(b"\n"):
        if not line:
            continue
        fields = line.split(b"\t")
        assert len(fields) == 5, f"unexpected kcat output line {line!r}"
        p, o, k, v, h = fields
        rows.append((int(p), int(o), k, v, h))
    return rows


# ---------------------------------------------------------------------------
# Hand-made Kafka wire format (for raw-socket tests)
# ---------------------------------------------------------------------------


def _crc32c_table() -> list[int]:
    poly = 0x82F63B78  # Castagnoli, reflected
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ poly if c & 1 else c >> 1
        table.append(c)
    return table


_CRC32C_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli), table driven; crc32c(b"123456789") == 0xE3069283."""
    crc = 0xFFFFFFFF
    table = _CRC32C_TABLE
    for b in data:
        crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def uvarint(n: int) -> bytes:
    """Unsigned LEB128 varint (Kafka's UNSIGNED_VARINT)."""
    assert n >= 0
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def varint(n: int) -> bytes:
    """Zig-zag signed varint (Kafka's VARINT / VARLONG)."""
    return uvarint((n << 1) ^ (n >> 63))


def kstring(s: str | None) -> bytes:
    """STRING / NULLABLE_STRING: int16 length (-1 for null) + UTF-8."""
    if s is None:
        return struct.pack(">h", -1)
    data = s.encode()
    return struct.pack(">h", len(data)) + data


def kbytes(b: bytes | None) -> bytes:
    """BYTES / NULLABLE_BYTES (RECORDS too): int32 length (-1 for null) + data."""
    if b is None:
        return struct.pack(">i", -1)
    return struct.pack(">i", len(b)) + b


def compact_string(s: str | None) -> bytes:
    """COMPACT_STRING: unsigned varint length+1 (0 for null) + UTF-8."""
    if s is None:
        return uvarint(0)
    data = s.encode()
    return uvarint(len(data) + 1) + data


EMPTY_TAGGED_FIELDS = b"\x00"


def encode_record(
    offset_delta: int,
    timestamp_delta: int,
    key: bytes | None,
    value: bytes | None,
    headers: Sequence[tuple[str, bytes | None]] = (),
) -> bytes:
    """One Record of a v2 RecordBatch (uncompressed)."""
    body = bytearray()
    body += struct.pack(">b", 0)  # attributes (unused)
    body += varint(timestamp_delta)
    body += varint(offset_delta)
    body += varint(-1) if key is None else varint(len(key)) + key
    body += varint(-1) if value is None else varint(len(value)) + value
    body += varint(len(headers))
    for hk, hv in headers:
        hkb = hk.encode()
        body += varint(len(hkb)) + hkb
        body += varint(-1) if hv is None else varint(len(hv)) + hv
    return varint(len(body)) + bytes(body)


RECORD_BATCH_HEADER_BYTES = 61  # records start here (see KAFKA_NOTES.md)


def encode_record_batch(
    records: Sequence[tuple[bytes | None, bytes | None, Sequence[tuple[str, bytes | None]]]],
    *,
    base_timestamp: int,
    base_offset: int = 0,
    partition_leader_epoch: int = -1,
    attributes: int = 0,
    producer_id: int = -1,
    producer_epoch: int = -1,
    base_sequence: int = -1,
) -> bytes:
    """An uncompressed RecordBatch v2 (magic 2) with a correct CRC-32C.

    Every record gets timestamp base_timestamp (delta 0) and offset delta = its
    index.
    """
    assert records, "a batch holds at least one record"
    recs = b"".join(encode_record(i, 0, k, v, h) for i, (k, v, h) in enumerate(records))
    after_crc = (
        struct.pack(
            ">hiqqqhii",
            attributes,
            len(records) - 1,  # lastOffsetDelta
            base_timestamp,
            base_timestamp,  # maxTimestamp
            producer_id,
            producer_epoch,
            base_sequence,
            len(records),
        )
        + recs
    )
    crc = crc32c(after_crc)
    # batchLength counts from partitionLeaderEpoch to the end.
    batch_length = 4 + 1 + 4 + len(after_crc)
    batch = struct.pack(">qiibI", base_offset, batch_length, partition_leader_epoch, 2, crc) + after_crc
    assert len(batch) == 12 + batch_length
    assert len(batch) - len(recs) == RECORD_BATCH_HEADER_BYTES
    return batch


def encode_request(
    api_key: int,
    api_version: int,
    correlation_id: int,
    body: bytes,
    *,
    client_id: str | None = "gregor-tests",
    flexible_header: bool = False,
) -> bytes:
    """A size-prefixed request: header v1 (or v2 when flexible) + body."""
    header = struct.pack(">hhi", api_key, api_version, correlation_id) + kstring(client_id)
    if flexible_header:
        header += EMPTY_TAGGED_FIELDS
    payload = header + body
    return struct.pack(">i", len(payload)) + payload


def api_versions_request_body(version: int) -> bytes:
    """ApiVersionsRequest body: empty for v0-2; v3+ is flexible with the
    client software name and version."""
    if version < 3:
        return b""
    return compact_string("gregor-tests") + compact_string("0.1") + EMPTY_TAGGED_FIELDS


def produce_request_body(
    version: int,
    topic: str,
    partition: int,
    records: bytes | None,
    *,
    acks: int = -1,
    timeout_ms: int = 30_000,
) -> bytes:
    """ProduceRequest body for the non-flexible versions 0..8, one topic and one
    partition. v3+ starts with a null transactional id."""
    assert 0 <= version <= 8
    body = b""
    if version >= 3:
        body += kstring(None)  # transactional_id
    body += struct.pack(">hi", acks, timeout_ms)
    body += struct.pack(">i", 1) + kstring(topic)
    body += struct.pack(">i", 1) + struct.pack(">i", partition) + kbytes(records)
    return body


def metadata_request_body(topics: Sequence[str] | None, *, allow_auto_topic_creation: bool) -> bytes:
    """MetadataRequest v4 body (non-flexible): the topics (None: all) and
    allow_auto_topic_creation."""
    if topics is None:
        body = struct.pack(">i", -1)
    else:
        body = struct.pack(">i", len(topics)) + b"".join(kstring(t) for t in topics)
    return body + struct.pack(">b", 1 if allow_auto_topic_creation else 0)


class MetadataTopic(NamedTuple):
    name: str
    error_code: int
    partitions: dict[int, tuple[int, int]]  # index -> (error code, leader)


def parse_metadata_response_v4(r: "Reader") -> list[MetadataTopic]:
    """MetadataResponse v4 body -> its topics."""
    r.i32()  # throttle_time_ms
    for _ in range(r.i32()):  # brokers
        r.i32(), r.string(), r.i32(), r.string()  # node_id, host, port, rack
    r.string()  # cluster_id
    r.i32()  # controller_id
    topics = []
    for _ in range(r.i32()):
        error_code, name = r.i16(), r.string()
        r.i8()  # is_internal
        partitions = {}
        for _ in range(r.i32()):
            p_error, index, leader = r.i16(), r.i32(), r.i32()
            for _ in range(2):  # replica_nodes, isr_nodes
                for _ in range(r.i32()):
                    r.i32()
            partitions[index] = (p_error, leader)
        topics.append(MetadataTopic(name, error_code, partitions))
    assert r.remaining() == 0, f"{r.remaining()} unexpected trailing bytes in a Metadata v4 response"
    return topics


class Reader:
    """Big-endian reader over one response body."""

    def __init__(self, data: bytes):
        self.data = data
        self.pos = 0

    def _take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise AssertionError(f"response truncated: need {n} bytes at {self.pos}, have {len(self.data)}")
        b = self.data[self.pos : self.pos + n]
        self.pos += n
        return b

    def remaining(self) -> int:
        return len(self.data) - self.pos

    def i8(self) -> int:
        return struct.unpack(">b", self._take(1))[0]

    def i16(self) -> int:
        return struct.unpack(">h", self._take(2))[0]

    def i32(self) -> int:
        return struct.unpack(">i", self._take(4))[0]

    def i64(self) -> int:
        return struct.unpack(">q", self._take(8))[0]

    def uvarint(self) -> int:
        shift = 0
        result = 0
        while True:
            b = self._take(1)[0]
            result |= (b & 0x7F) << shift
            if not b & 0x80:
                return result
            shift += 7
            if shift > 63:
                raise AssertionError("varint too long")

    def string(self) -> str | None:
        n = self.i16()
        return None if n < 0 else self._take(n).decode()

    def compact_string(self) -> str | None:
        n = self.uvarint()
        return None if n == 0 else self._take(n - 1).decode()

    def skip_tagged_fields(self) -> None:
        for _ in range(self.uvarint()):
            self.uvarint()  # tag
            self._take(self.uvarint())


def parse_api_versions_response(r: Reader, version: int) -> tuple[int, dict[int, tuple[int, int]]]:
    """ApiVersionsResponse body -> (error_code, {api_key: (min, max)}).
    For v0 the whole body must be consumed (strict)."""
    error_code = r.i16()
    keys: dict[int, tuple[int, int]] = {}
    if version >= 3:
        n = r.uvarint() - 1
    else:
        n = r.i32()
    assert 0 <= n < 10_000, f"implausible ApiKeys count {n}"
    for _ in range(n):
        key, lo, hi = r.i16(), r.i16(), r.i16()
        if version >= 3:
            r.skip_tagged_fields()
        keys[key] = (lo, hi)
    if version >= 1:
        r.i32()  # throttle_time_ms
    if version >= 3:
        r.skip_tagged_fields()
    if version == 0:
        assert r.remaining() == 0, f"{r.remaining()} unexpected trailing bytes after an ApiVersions v0 body"
    return error_code, keys


class ProducePartitionResult(NamedTuple):
    topic: str
    partition: int
    error_code: int
    base_offset: int


def parse_produce_response(r: Reader, version: int) -> list[ProducePartitionResult]:
    """ProduceResponse body (non-flexible versions 0..8)."""
    assert 0 <= version <= 8
    results = []
    for _ in range(r.i32()):
        topic = r.string()
        for _ in range(r.i32()):
            partition = r.i32()
            error_code = r.i16()
            base_offset = r.i64()
            if version >= 2:
                r.i64()  # log_append_time_ms
            if version >= 5:
                r.i64()  # log_start_offset
            if version >= 8:
                for _ in range(r.i32()):  # record_errors
                    r.i32()
                    r.string()
                r.string()  # error_message
            results.append(ProducePartitionResult(topic, partition, error_code, base_offset))
    if version >= 1:
        r.i32()  # throttle_time_ms
    assert r.remaining() == 0, f"{r.remaining()} unexpected trailing bytes in a Produce v{version} response"
    return results


def fetch_request_body(topic: str, partition: int, offset: int, *, max_bytes: int = 1 << 20, max_wait_ms: int = 0) -> bytes:
    """FetchRequest v4 body (non-flexible), one topic and one partition."""
    body = struct.pack(">iiiib", -1, max_wait_ms, 0, max_bytes, 0)  # replica, wait, min, max, isolation
    body += struct.pack(">i", 1) + kstring(topic)
    body += struct.pack(">i", 1) + struct.pack(">iqi", partition, offset, max_bytes)
    return body


class FetchPartitionResult(NamedTuple):
    partition: int
    error_code: int
    high_watermark: int
    records: bytes | None


def parse_fetch_response_v4(r: Reader) -> list[FetchPartitionResult]:
    """FetchResponse v4 body."""
    r.i32()  # throttle_time_ms
    results = []
    for _ in range(r.i32()):
        r.string()  # topic
        for _ in range(r.i32()):
            partition, error_code, high_watermark = r.i32(), r.i16(), r.i64()
            r.i64()  # last_stable_offset
            aborted = r.i32()
            for _ in range(max(aborted, 0)):
                r.i64(), r.i64()
            size = r.i32()
            records = None if size < 0 else r._take(size)
            results.append(FetchPartitionResult(partition, error_code, high_watermark, records))
    assert r.remaining() == 0, f"{r.remaining()} unexpected trailing bytes in a Fetch v4 response"
    return results


class ConnectionClosed(Exception):
    pass


def split_bootstrap(bootstrap: str) -> tuple[str, int]:
    host, port = bootstrap.rsplit(":", 1)
    return host, int(port)


class RawConnection:
    """A plain TCP connection speaking hand-encoded Kafka requests."""

    def __init__(self, bootstrap: str, timeout_s: float = SOCKET_TIMEOUT_S):
        self.sock = socket.create_connection(split_bootstrap(bootstrap), timeout=timeout_s)
        self.next_correlation_id = 1

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> "RawConnection":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _recv_exact(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            chunk = self.sock.recv(min(n - len(buf), 1 << 20))
            if not chunk:
                raise ConnectionClosed(f"connection closed after {len(buf)} of {n} bytes")
            buf += chunk
        return bytes(buf)

    def read_frame(self) -> bytes:
        (size,) = struct.unpack(">i", self._recv_exact(4))
        assert 0 <= size < 1 << 30, f"implausible response size {size}"
        return self._recv_exact(size)

    def request(
        self,
        api_key: int,
        api_version: int,
        body: bytes,
        *,
        flexible_header: bool = False,
        flexible_response_header: bool = False,
    ) -> Reader:
        """Send one request and return a Reader positioned at the response body.
        Checks the correlation id."""
        cid = self.next_correlation_id
        self.next_correlation_id += 1
        self.send_raw(encode_request(api_key, api_version, cid, body, flexible_header=flexible_header))
        r = Reader(self.read_frame())
        got = r.i32()
        assert got == cid, f"correlation id {got}, expected {cid}"
        if flexible_response_header:
            r.skip_tagged_fields()
        return r

    def api_versions(self, version: int) -> tuple[int, dict[int, tuple[int, int]]]:
        r = self.request(
            API_API_VERSIONS,
            version,
            api_versions_request_body(version),
            flexible_header=version >= 3,
        )
        # The ApiVersions response header is always v0; an unsupported version
        # is answered with a v0 body.
        return parse_api_versions_response(r, version)

    def produce(
        self, version: int, topic: str, partition: int, records: bytes | None, *, acks: int = -1
    ) -> list[ProducePartitionResult]:
        """One Produce request; not for acks=0, which gets no answer."""
        assert acks != 0, "acks=0 gets no response to read"
        body = produce_request_body(version, topic, partition, records, acks=acks)
        r = self.request(API_PRODUCE, version, body)
        return parse_produce_response(r, version)

    def metadata(self, topics: Sequence[str] | None, *, allow_auto_topic_creation: bool) -> list[MetadataTopic]:
        """Metadata v4 for `topics`."""
        body = metadata_request_body(topics, allow_auto_topic_creation=allow_auto_topic_creation)
        return parse_metadata_response_v4(self.request(API_METADATA, 4, body))

    def fetch(self, topic: str, partition: int, offset: int) -> FetchPartitionResult:
        (result,) = parse_fetch_response_v4(self.request(API_FETCH, 4, fetch_request_body(topic, partition, offset)))
        return result

    def wait_closed(self, timeout_s: float = SOCKET_TIMEOUT_S) -> bytes:
        """Read until the peer closes the connection (EOF or reset). Returns any
        bytes received before. Fails if the connection stays open."""
        self.sock.settimeout(timeout_s)
        received = bytearray()
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                chunk = self.sock.recv(65536)
            except (ConnectionResetError, BrokenPipeError):
                return bytes(received)
            except socket.timeout:
                raise AssertionError(
                    f"broker kept the connection open for {timeout_s}s (received {bytes(received[:64])!r})"
                ) from None
            if not chunk:
                return bytes(received)
            received += chunk
            if time.monotonic() > deadline:
                raise AssertionError(f"broker kept sending and did not close within {timeout_s}s")


def assert_broker_answers(bootstrap: str) -> None:
    """A fresh connection gets a correct ApiVersions answer, and a real client
    can read the cluster metadata."""
    from confluent_kafka.admin import AdminClient

    with RawConnection(bootstrap) as conn:
        error_code, keys = conn.api_versions(0)
    assert error_code == ERR_NONE, f"ApiVersions v0 error {error_code}"
    assert API_PRODUCE in keys and API_API_VERSIONS in keys, f"ApiVersions lists {sorted(keys)}"
    md = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10)
    assert md.brokers, "metadata lists no brokers"


# ---------------------------------------------------------------------------
# Crash tests: a producer that keeps writing while the broker is killed
# ---------------------------------------------------------------------------

CRASH_VALUE_PAD = b"." * 100
# A background producer keeps at most this many unacknowledged records.
CRASH_MAX_QUEUED = 20_000


def crash_value(i: int, producer_id: int = 0) -> bytes:
    """The value of record `i` of background producer `producer_id`: it names
    its writer, so a consumed record can be traced back to its delivery report."""
    return f"p{producer_id}v{i}:".encode() + CRASH_VALUE_PAD


def crash_key(i: int) -> bytes:
    return f"k{i}".encode()


def parse_crash_value(value: bytes) -> tuple[int, int]:
    """(producer_id, i) of a value made by `crash_value`."""
    head, sep, pad = value.partition(b":")
    producer, v, index = head.partition(b"v")
    assert sep and v and producer.startswith(b"p") and pad == CRASH_VALUE_PAD, (
        f"value not written by a crash producer: {value[:40]!r}"
    )
    return int(producer[1:]), int(index)


class BackgroundProducer:
    """Produces `crash_value(i, producer_id)` records from a thread as fast as
    the broker takes them (or at `rate_per_s`), recording each delivery report.

    `partitions`: records go round-robin to these partitions; None lets the
    client's partitioner pick by key. Without retries no record can be written
    twice, so a duplicate in the log is a broker bug. `pause()` stops sending
    and waits for every delivery report, so that a check sees a quiet log.
    """

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        retries: bool,
        *,
        producer_id: int = 0,
        partitions: Sequence[int] | None = None,
        rate_per_s: float | None = None,
        max_queued: int = CRASH_MAX_QUEUED,
        extra_conf: dict | None = None,
    ):
        import threading

        from confluent_kafka import Producer

        extra = {
            "linger.ms": 5,
            "message.timeout.ms": 60_000,
            "reconnect.backoff.ms": 50,
            "reconnect.backoff.max.ms": 500,
            "retry.backoff.ms": 100,
        }
        if not retries:
            extra["retries"] = 0
        extra.update(extra_conf or {})
        self.producer = Producer(confluent_producer_conf(bootstrap, **extra))
        self.topic = topic
        self.producer_id = producer_id
        self.partitions = list(partitions) if partitions is not None else None
        self.rate_per_s = rate_per_s
        self.max_queued = max_queued
        self.lock = threading.Lock()
        self.acked: dict[int, tuple[int, int]] = {}  # i -> (partition, offset)
        self.failed: dict[int, str] = {}
        self.sent = 0
        self.stop_flag = threading.Event()
        self.paused = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name=f"crash-producer-{producer_id}", daemon=True)

    def _on_delivery(self, err, msg) -> None:
        producer_id, i = parse_crash_value(msg.value())
        assert producer_id == self.producer_id, f"delivery report for producer {producer_id}"
        with self.lock:
            if err is None:
                self.acked[i] = (msg.partition(), msg.offset())
            else:
                self.failed[i] = str(err)

    def _run(self) -> None:
        try:
            next_send = time.monotonic()
            while not self.stop_flag.is_set():
                if self.paused.is_set() or len(self.producer) >= self.max_queued:
                    self.producer.poll(0.05)
                    continue
                if self.rate_per_s is not None:
                    now = time.monotonic()
                    if now < next_send:
                        self.producer.poll(min(next_send - now, 0.01))
                        continue
                    # No catching up after a pause: at most 0.1 s of burst.
                    next_send = max(next_send, now - 0.1) + 1 / self.rate_per_s
                i = self.sent
                kwargs = {}
                if self.partitions is not None:
                    kwargs["partition"] = self.partitions[i % len(self.partitions)]
                try:
                    self.producer.produce(
                        self.topic,
                        key=crash_key(i),
                        value=crash_value(i, self.producer_id),
                        on_delivery=self._on_delivery,
                        **kwargs,
                    )
                except BufferError:
                    self.producer.poll(0.05)
                    continue
                self.sent += 1
                self.producer.poll(0)
            remaining = self.producer.flush(120)
            if remaining:
                raise AssertionError(f"{remaining} records unresolved after flush")
        except BaseException as e:  # surfaced by join()
            self.error = e

    def ack_count(self) -> int:
        with self.lock:
            return len(self.acked)

    def acked_snapshot(self) -> dict[int, tuple[int, int]]:
        with self.lock:
            return dict(self.acked)

    def failed_snapshot(self) -> dict[int, str]:
        with self.lock:
            return dict(self.failed)

    def wait_for_acks(self, at_least: int, timeout_s: float = 120) -> None:
        deadline = time.monotonic() + timeout_s
        while self.ack_count() < at_least:
            assert self.thread.is_alive(), f"producer thread died: {self.error!r}"
            assert time.monotonic() < deadline, (
                f"only {self.ack_count()} acks of {at_least} within {timeout_s}s "
                f"({len(self.failed)} failed, last errors {list(self.failed.values())[-3:]})"
            )
            time.sleep(0.05)

    def start(self) -> None:
        self.thread.start()

    def pause(self, timeout_s: float = CLIENT_TIMEOUT_S) -> None:
        """Stops sending and waits until every record sent has its delivery
        report (acknowledged or failed)."""
        self.paused.set()
        wait_until(
            lambda: len(self.producer) == 0 or not self.thread.is_alive(),
            timeout_s,
            f"delivery reports of producer {self.producer_id}",
            state=lambda: len(self.producer),
        )
        assert self.thread.is_alive(), f"producer thread died: {self.error!r}"

    def resume(self) -> None:
        self.paused.clear()

    def join(self) -> None:
        self.stop_flag.set()
        self.thread.join(timeout=300)
        assert not self.thread.is_alive(), "producer thread did not finish"
        if self.error is not None:
            raise self.error


# ---------------------------------------------------------------------------
# Broker log lines
# ---------------------------------------------------------------------------


def log_lines(text: str, message: str) -> list[str]:
    """The broker log lines that carry `message`."""
    return [line for line in text.splitlines() if message in line]


def log_field(line: str, name: str) -> str | None:
    """The value of a tracing field `name=value` in one text log line."""
    import re

    m = re.search(rf"\b{re.escape(name)}=(\"[^\"]*\"|\S+)", line)
    return m.group(1).strip('"') if m else None


def truncated_bytes_in_log(text: str) -> int:
    """Bytes recovery cut off segment tails, summed over the WARN lines
    "truncating segment tail" in `text`."""
    return sum(int(log_field(line, "truncated_bytes") or 0) for line in log_lines(text, "truncating segment tail"))


# ---------------------------------------------------------------------------
# Segment files on disk
# ---------------------------------------------------------------------------


class StoredBatch(NamedTuple):
    """One RecordBatch in a segment file."""

    position: int
    base_offset: int
    total_bytes: int
    records: int  # lastOffsetDelta + 1
    codec: str  # attributes bits 0-2, by CODECS name


def segment_paths(data_dir, topic: str, partition: int, extension: str = "log") -> list:
    """A partition's segment files of one kind, by base offset."""
    from pathlib import Path

    return sorted((Path(data_dir) / f"{topic}-{partition}").glob(f"*.{extension}"))


def stored_batches(path) -> list[StoredBatch]:
    """The complete batches at the start of a segment file, by their headers
    (baseOffset, batchLength, lastOffsetDelta); CRCs are not checked."""
    from pathlib import Path

    data = Path(path).read_bytes()
    batches = []
    position = 0
    while position + RECORD_BATCH_HEADER_BYTES <= len(data):
        base_offset, batch_length = struct.unpack_from(">qi", data, position)
        (attributes, last_offset_delta) = struct.unpack_from(">hi", data, position + 21)
        total = 12 + batch_length
        if batch_length < RECORD_BATCH_HEADER_BYTES - 12 or position + total > len(data):
            break
        codec = CODECS[attributes & 7] if attributes & 7 < len(CODECS) else f"codec {attributes & 7}"
        batches.append(StoredBatch(position, base_offset, total, last_offset_delta + 1, codec))
        position += total
    return batches
