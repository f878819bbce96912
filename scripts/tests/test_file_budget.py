"""Issue 21: partitions bounded by disk, not descriptors. A broker whose
open-file limit is far below its partition count opens segment files on
demand within a per-shard budget, serves produce and consume on every
partition, and, once connections spend their share, closes new ones with
a log line while existing connections and partitions keep working."""
from __future__ import annotations

import os
import socket
import time
import urllib.request

from confluent_kafka.admin import AdminClient, NewTopic

from conftest import free_port
from helpers import Rec, RawConnection, consume_confluent, produce_confluent, wait_until

OPEN_FILE_LIMIT = 400
TOPICS = 12
PARTITIONS_PER_TOPIC = 50  # 600 partitions (and 50 of __consumer_offsets)


def scrape_sum(port: int, family: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(family + "{"))


def open_descriptors(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def start_limited(broker_factory):
    metrics_port = free_port()
    broker = broker_factory(
        "--metrics", f"127.0.0.1:{metrics_port}", "--segment-file-idle-ms", 1_000, "--cleaner-backoff-ms", 500,
        shards=1, start=False,
    )
    broker.open_file_limit = OPEN_FILE_LIMIT
    broker.start()
    return broker, metrics_port


def test_more_partitions_than_descriptors_all_serve(broker_factory):
    broker, metrics_port = start_limited(broker_factory)
    log = broker.log_path.read_text()
    assert f"open_file_limit={OPEN_FILE_LIMIT}" in log, "the budget is logged at start"
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    names = [f"budget-{i}" for i in range(TOPICS)]
    futures = admin.create_topics([NewTopic(n, PARTITIONS_PER_TOPIC, 1) for n in names], operation_timeout=30)
    for future in futures.values():
        future.result(timeout=60)
    budget = scrape_sum(metrics_port, "gregor_segment_files_budget")
    assert 0 < budget < TOPICS * PARTITIONS_PER_TOPIC
    for name in names:
        records = [Rec(key=f"{name}-{p}".encode(), value=f"value {p}".encode(), headers=()) for p in range(PARTITIONS_PER_TOPIC)]
        produce_confluent(broker.bootstrap, name, records, partitions=list(range(PARTITIONS_PER_TOPIC)))
        assert scrape_sum(metrics_port, "gregor_segment_files_open") <= budget
    for name in names:
        consumed = consume_confluent(broker.bootstrap, name, range(PARTITIONS_PER_TOPIC))
        for p in range(PARTITIONS_PER_TOPIC):
            assert [c.value for c in consumed[p]] == [f"value {p}".encode()], (name, p)
    assert scrape_sum(metrics_port, "gregor_segment_file_reopens_total") > 0
    assert open_descriptors(broker.pid) < TOPICS * PARTITIONS_PER_TOPIC
    # Idle partitions give their descriptors back.
    wait_until(lambda: scrape_sum(metrics_port, "gregor_segment_files_open") == 0, timeout_s=30,
               what="idle segment files closed")
    assert open_descriptors(broker.pid) < 100


def test_connections_past_their_share_are_closed_and_the_rest_keep_working(broker_factory):
    broker, metrics_port = start_limited(broker_factory)
    first = RawConnection(broker.bootstrap)
    first.api_versions(0)
    held = []
    refused = 0
    try:
        for _ in range(OPEN_FILE_LIMIT // 2):
            s = socket.create_connection(("127.0.0.1", broker.port), timeout=5)
            held.append(s)
            s.settimeout(0.5)
            try:
                if s.recv(1) == b"":
                    refused += 1
            except socket.timeout:
                pass  # accepted, waiting for a request
            if refused >= 3:
                break
        assert refused >= 3, "no connection was refused within half the descriptor limit"
        assert "connection budget" in broker.log_path.read_text()
        # The connection opened first still answers; partitions still serve.
        code, _ = first.api_versions(0)
        assert code == 0
    finally:
        for s in held:
            s.close()
        first.close()
    # Once connections close, new clients get in again.
    records = [Rec(key=b"k", value=b"after", headers=())]
    wait_until(lambda: _can_produce(broker.bootstrap, records), timeout_s=30, what="a new client is served again")


def _can_produce(bootstrap: str, records) -> bool:
    try:
        produce_confluent(bootstrap, "budget-after", records, timeout_s=10)
        return True
    except Exception:
        return False


def _produce_code(broker, topic: str, partition: int) -> int:
    """Kafka's error code for one acks=all produce to (topic, partition)."""
    from helpers import API_PRODUCE, encode_record_batch, parse_produce_response, produce_request_body

    batch = encode_record_batch([(b"k", b"v", [])], base_timestamp=int(time.time() * 1000))
    with RawConnection(broker.bootstrap) as conn:
        body = produce_request_body(8, topic, partition, batch, acks=-1, timeout_ms=5_000)
        return parse_produce_response(conn.request(API_PRODUCE, 8, body), 8)[0].error_code


KAFKA_STORAGE_ERROR = 56


def test_create_topics_and_partitions_answer_an_error_for_partitions_that_cannot_be_created(broker_factory):
    """One partition's directory cannot be made (a file sits where it goes):
    CreateTopics answers KAFKA_STORAGE_ERROR naming it and creates nothing,
    not even the partitions that could be made; once the obstacle is gone
    the same request works. CreatePartitions cannot take partitions back:
    it answers the error, and the partition is offline until it can be
    created, without a restart."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import NewPartitions

    broker, metrics_port = start_limited(broker_factory)
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    blocker = broker.data_dir / "blocked-0"
    blocker.write_text("not a directory")
    try:
        admin.create_topics([NewTopic("blocked", 2, 1)])["blocked"].result(timeout=30)
        raise AssertionError("CreateTopics succeeded although partition 0 could not be created")
    except KafkaException as e:
        error = e.args[0]
        assert error.code() == KAFKA_STORAGE_ERROR, error
        assert "partition(s) 0 could not be created" in error.str(), error.str()
    assert "blocked" not in admin.list_topics(timeout=10).topics
    assert not (broker.data_dir / "blocked-1").exists(), "a partition of the failed topic was left behind"
    blocker.unlink()
    admin.create_topics([NewTopic("blocked", 2, 1)])["blocked"].result(timeout=30)
    wait_until(lambda: _produce_code(broker, "blocked", 0) == 0, timeout_s=30, what="the created topic serves")

    admin.create_topics([NewTopic("grow", 1, 1)])["grow"].result(timeout=30)
    blocker = broker.data_dir / "grow-1"
    blocker.write_text("not a directory")
    try:
        admin.create_partitions([NewPartitions("grow", 2)])["grow"].result(timeout=30)
        raise AssertionError("CreatePartitions succeeded although partition 1 could not be created")
    except KafkaException as e:
        assert e.args[0].code() == KAFKA_STORAGE_ERROR, e.args[0]
    assert _produce_code(broker, "grow", 1) == KAFKA_STORAGE_ERROR
    assert scrape_sum(metrics_port, "gregor_partitions_offline") == 1
    blocker.unlink()
    wait_until(lambda: _produce_code(broker, "grow", 1) == 0, timeout_s=30,
               what="the new partition serves once its directory can be made")
    assert scrape_sum(metrics_port, "gregor_partitions_offline") == 0


def test_a_partition_that_cannot_be_opened_is_offline_until_it_can(broker_factory):
    """At a restart one partition's directory cannot be opened: the broker
    starts anyway; that partition answers KAFKA_STORAGE_ERROR at once, and
    Metadata, `gregor topic describe` and /metrics show it offline; once
    its directory is back it serves its old records again, without a
    restart."""
    from test_cli import gjson

    broker, metrics_port = start_limited(broker_factory)
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic("later", 2, 1)])["later"].result(timeout=30)
    records = [Rec(key=b"k", value=f"before {p}".encode(), headers=()) for p in range(2)]
    produce_confluent(broker.bootstrap, "later", records, partitions=[0, 1])
    broker.stop()
    moved = broker.workdir / "later-0.moved"
    (broker.data_dir / "later-0").rename(moved)
    (broker.data_dir / "later-0").write_text("not a directory")
    broker.start()

    assert _produce_code(broker, "later", 0) == KAFKA_STORAGE_ERROR
    assert _produce_code(broker, "later", 1) == 0
    assert scrape_sum(metrics_port, "gregor_partitions_offline") == 1
    partitions = admin.list_topics("later", timeout=10).topics["later"].partitions
    node = partitions[1].leader
    # librdkafka shows no offline replicas; `gregor topic describe` below does.
    assert partitions[0].leader == -1 and node not in partitions[0].isrs, partitions[0]
    assert partitions[0].error is not None and partitions[0].error.code() == 5, partitions[0]  # LEADER_NOT_AVAILABLE
    described = {p["partition"]: p for p in gjson(broker, "topic", "describe", "later")["partitions"]}
    assert described[0]["offline_replicas"] == [node] and described[0]["leader"] == -1, described[0]
    assert described[1]["offline_replicas"] == [], described[1]

    (broker.data_dir / "later-0").unlink()
    moved.rename(broker.data_dir / "later-0")
    wait_until(lambda: _produce_code(broker, "later", 0) == 0, timeout_s=30,
               what="the partition serves once its directory is back")
    assert scrape_sum(metrics_port, "gregor_partitions_offline") == 0
    consumed = consume_confluent(broker.bootstrap, "later", [0])
    assert [c.value for c in consumed[0]] == [b"before 0", b"v"], consumed[0]


def test_a_partition_with_more_segments_than_descriptors_opens_after_a_crash(broker_factory):
    """One partition of 500 segments (segment.bytes=14: a segment per
    batch) under a 400-descriptor limit: after kill -9 it opens (recovery
    keeps only the active segment's file open) and every record reads back."""
    from helpers import API_PRODUCE, encode_record_batch, parse_produce_response, produce_request_body

    broker, _ = start_limited(broker_factory)
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic("segments", 1, 1, config={"segment.bytes": "14"})])["segments"].result(timeout=30)
    count = 500
    with RawConnection(broker.bootstrap) as conn:
        for i in range(count):
            batch = encode_record_batch([(b"k", f"v{i}".encode(), [])], base_timestamp=int(time.time() * 1000))
            body = produce_request_body(8, "segments", 0, batch, acks=-1, timeout_ms=5_000)
            assert parse_produce_response(conn.request(API_PRODUCE, 8, body), 8)[0].error_code == 0
    segments = len(list((broker.data_dir / "segments-0").glob("*.log")))
    assert segments >= count, segments
    broker.kill9()
    broker.start()
    assert _produce_code(broker, "segments", 0) == 0
    consumed = consume_confluent(broker.bootstrap, "segments", [0])
    assert [c.value for c in consumed[0]] == [f"v{i}".encode() for i in range(count)] + [b"v"]
