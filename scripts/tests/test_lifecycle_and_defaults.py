"""Paths a user walks on the first day, with real clients: produce with acks=1
and acks=0, invalid acks, topic auto-creation, the default shard count, a
SIGTERM under load and a kill -9 (the clean-shutdown marker), a second broker
on a taken data dir or port, `--config FILE`, deleting and re-creating a topic
with data, records over max.message.bytes, OffsetDelete and the
OffsetForLeaderEpoch validation librdkafka does on an assign with a leader
epoch."""

from __future__ import annotations

import os
import subprocess
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path

import pytest
from confluent_kafka import OFFSET_INVALID, KafkaError, Producer, TopicPartition

from conftest import free_port
from helpers import (
    ERR_INVALID_REQUIRED_ACKS,
    ERR_LEADER_NOT_AVAILABLE,
    ERR_NONE,
    ERR_UNKNOWN_TOPIC_OR_PARTITION,
    BackgroundProducer,
    RawConnection,
    assert_broker_answers,
    assert_dense_offsets,
    confluent_consumer,
    consume_confluent,
    crash_key,
    crash_value,
    create_topic_confluent,
    encode_record_batch,
    log_lines,
    make_records,
    parse_crash_value,
    produce_confluent,
    produce_kafka_python,
    unique_name,
    verify_log,
    wait_for_topic,
    wait_until,
    watermarks,
)

CLEAN_SHUTDOWN_MARKER = ".clean-shutdown"  # shards/src/broker/mod.rs
LOCK_FILE = ".lock"
DEFAULT_MAX_MESSAGE_BYTES = 1048588
FAILED_START_TIMEOUT_S = 60  # hang protection for a `gregor serve` that must exit


def topic_names(bootstrap: str) -> set[str]:
    from confluent_kafka.admin import AdminClient

    return set(AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10).topics)


def raw_batch(*values: bytes) -> bytes:
    return encode_record_batch([(b"k", v, []) for v in values], base_timestamp=int(time.time() * 1000))


def serve_expecting_failure(gregor_bin: Path, log_path: Path, *args: str) -> tuple[int | None, str]:
    """Run `gregor serve ARGS`, which must exit on its own: (exit code,
    output). A broker that starts serving instead is stopped at once and
    gives (None, output)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GREGOR_")}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [str(gregor_bin), "serve", *args],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + FAILED_START_TIMEOUT_S
        while proc.poll() is None:
            if "gregor is serving" in log_path.read_text(errors="replace"):
                break
            assert time.monotonic() < deadline, f"gregor serve {args} neither failed nor served"
            time.sleep(0.05)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
            code = None
        else:
            code = proc.returncode
    return code, log_path.read_text(errors="replace")


def request_count(metrics_port: int, api: str) -> float:
    """How many `api` requests the broker answered, from /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as response:
        text = response.read().decode()
    for line in text.splitlines():
        if line.startswith(f'gregor_request_latency_seconds_count{{api="{api}"}} '):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


# --- 1. acks=1 and acks=0 ---------------------------------------------------------

ACKS_RECORDS = 1_000
ACKS_PARTITIONS = 2


def produce_with(client: str, acks: int, bootstrap: str, topic: str, records):
    if client == "confluent":
        # librdkafka's idempotence (off by default) would need acks=all.
        return produce_confluent(bootstrap, topic, records, extra_conf={"acks": acks, "enable.idempotence": False})
    return produce_kafka_python(bootstrap, topic, records, acks=acks, extra={"enable_idempotence": False})


@pytest.mark.parametrize("client", ["confluent", "kafka-python"])
@pytest.mark.parametrize("acks", [1, 0])
def test_acks_1_and_0(broker, client, acks):
    """acks=1: every record is acknowledged at a dense offset and reads back
    byte-exact there. acks=0: the broker answers nothing, so the client knows
    no offsets; once the log holds as many records as were sent, it holds
    exactly the records sent, dense, each partition in send order."""
    topic = unique_name(f"acks{acks}")
    create_topic_confluent(broker.bootstrap, topic, ACKS_PARTITIONS)
    records = make_records(ACKS_RECORDS, seed=acks)
    acked = produce_with(client, acks, broker.bootstrap, topic, records)
    if acks == 1:
        consumed = consume_confluent(broker.bootstrap, topic, range(ACKS_PARTITIONS))
        verify_log(records, acked, consumed, ACKS_PARTITIONS)
        return

    # acks=0: the produce calls returned before the broker appended.
    wait_until(
        lambda: sum(watermarks(broker.bootstrap, topic, p)[1] for p in range(ACKS_PARTITIONS)) >= ACKS_RECORDS,
        60,
        f"{ACKS_RECORDS} acks=0 records in the log",
        state=lambda: [watermarks(broker.bootstrap, topic, p) for p in range(ACKS_PARTITIONS)],
    )
    consumed = consume_confluent(broker.bootstrap, topic, range(ACKS_PARTITIONS))
    assert_dense_offsets(consumed)
    got = [(r.key, r.value, r.headers) for recs in consumed.values() for r in recs]
    want = [(r.key, r.value, r.headers) for r in records]
    assert Counter(got) == Counter(want), "the log does not hold exactly the records sent"
    for p, recs in consumed.items():
        sent_order = [int(dict(r.headers)["idx"]) for r in recs]
        assert sent_order == sorted(sent_order), f"partition {p} holds acks=0 records out of send order"


# --- 2. invalid acks ------------------------------------------------------------------


@pytest.mark.parametrize("version", [3, 7])
def test_invalid_acks_is_refused_and_appends_nothing(broker, version):
    """Produce with acks 2 or -2 (only -1, 0 and 1 exist): the partition gets
    INVALID_REQUIRED_ACKS (21) and nothing is appended; the same batch with
    acks=-1 then lands at offset 0."""
    topic = unique_name("bad-acks")
    create_topic_confluent(broker.bootstrap, topic, 1)
    batch = raw_batch(b"one", b"two")
    with RawConnection(broker.bootstrap) as conn:
        for acks in (2, -2, 5):
            [result] = conn.produce(version, topic, 0, batch, acks=acks)
            assert (result.topic, result.partition) == (topic, 0)
            assert result.error_code == ERR_INVALID_REQUIRED_ACKS, f"acks={acks}: {result}"
        assert watermarks(broker.bootstrap, topic, 0) == (0, 0), "a request with invalid acks appended records"
        [good] = conn.produce(version, topic, 0, batch, acks=-1)
    assert (good.error_code, good.base_offset) == (ERR_NONE, 0), good
    assert [r.value for r in consume_confluent(broker.bootstrap, topic, [0])[0]] == [b"one", b"two"]


# --- 3. topic auto-creation ----------------------------------------------------------


def test_metadata_auto_creates_with_the_default_partition_count(broker):
    """On a default broker (auto-create on, num.partitions 1), Metadata with
    allow_auto_topic_creation=true creates a requested topic with one
    partition, and librdkafka's producer metadata call does the same; with
    allow_auto_topic_creation=false (a raw request, or a confluent consumer,
    whose allow.auto.create.topics is false) the topic stays unknown."""
    created, not_created = unique_name("md-auto"), unique_name("md-no-auto")
    with RawConnection(broker.bootstrap) as conn:
        [topic] = conn.metadata([not_created], allow_auto_topic_creation=False)
        assert (topic.name, topic.error_code) == (not_created, ERR_UNKNOWN_TOPIC_OR_PARTITION), topic
        [topic] = conn.metadata([created], allow_auto_topic_creation=True)
        # Kafka answers LEADER_NOT_AVAILABLE while a new topic gets its leaders.
        assert topic.name == created and topic.error_code in (ERR_NONE, ERR_LEADER_NOT_AVAILABLE), topic
        [topic] = conn.metadata([created], allow_auto_topic_creation=False)
        assert topic.error_code == ERR_NONE and topic.partitions == {0: (ERR_NONE, 0)}, topic
    wait_for_topic(broker.bootstrap, created, 1)

    consumer = confluent_consumer(broker.bootstrap)
    try:
        by_consumer = unique_name("md-consumer")
        t = consumer.list_topics(topic=by_consumer, timeout=10).topics[by_consumer]
        assert t.error is not None and t.error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART, t
    finally:
        consumer.close()
    by_producer = unique_name("md-producer")
    Producer({"bootstrap.servers": broker.bootstrap}).list_topics(topic=by_producer, timeout=10)
    wait_for_topic(broker.bootstrap, by_producer, 1)

    names = topic_names(broker.bootstrap)
    assert not_created not in names and by_consumer not in names, f"created without being allowed: {sorted(names)}"


def test_produce_auto_creates_with_num_partitions(broker_factory):
    """Gregor also creates a topic named by a Produce request (Kafka itself only
    creates topics through Metadata and answers UNKNOWN_TOPIC_OR_PARTITION,
    which clients never see since they ask Metadata first): a raw Produce v7 to
    partition 2 of a missing topic on a broker with --num-partitions 3 creates
    it with 3 partitions and the record lands at offset 0."""
    broker = broker_factory("--num-partitions", "3")
    topic = unique_name("produce-auto")
    with RawConnection(broker.bootstrap) as conn:
        [result] = conn.produce(7, topic, 2, raw_batch(b"first"))
    assert (result.error_code, result.base_offset) == (ERR_NONE, 0), result
    wait_for_topic(broker.bootstrap, topic, 3)
    assert [(r.offset, r.value) for r in consume_confluent(broker.bootstrap, topic, [2])[2]] == [(0, b"first")]


def test_produce_does_not_create_when_auto_create_is_off(broker_factory):
    """--auto-create-topics false: a raw Produce to a missing topic gets
    UNKNOWN_TOPIC_OR_PARTITION and creates nothing (test_errors covers the
    Metadata side)."""
    broker = broker_factory("--auto-create-topics", "false")
    topic = unique_name("produce-no-auto")
    with RawConnection(broker.bootstrap) as conn:
        [result] = conn.produce(7, topic, 0, raw_batch(b"lost"))
    assert result.error_code == ERR_UNKNOWN_TOPIC_OR_PARTITION, result
    assert topic not in topic_names(broker.bootstrap)


# --- 4. the default shard count ---------------------------------------------------


def expected_available_parallelism() -> int:
    """What Rust's std::thread::available_parallelism() gives here: the CPUs
    this process may run on, capped by a cgroup CPU quota (floor, at least 1)."""
    count = len(os.sched_getaffinity(0))
    quota = None
    try:
        limit, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()  # cgroup v2
        if limit != "max":
            quota = int(limit) // int(period)
    except (OSError, ValueError):
        try:  # cgroup v1
            limit = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text())
            period = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
            if limit > 0 and period > 0:
                quota = limit // period
        except (OSError, ValueError):
            pass
    if quota is not None:
        count = min(count, max(1, quota))
    return count


def test_default_shard_count_is_the_available_parallelism(broker_factory):
    """Without --shards (and without GREGOR_SHARDS) the broker runs one shard
    per CPU it may use, says so at start-up, and serves a topic with a
    partition on every shard."""
    if "GREGOR_SHARDS" in os.environ or "--shards" in os.environ.get("GREGOR_TEST_EXTRA_ARGS", ""):
        pytest.skip("the environment sets the shard count")
    broker = broker_factory(shards=None)
    [line] = log_lines(broker.log_since_last_start(), "starting gregor")
    assert f"shards={expected_available_parallelism()} " in line + " ", line
    topic = unique_name("all-shards")
    partitions = 2 * expected_available_parallelism()
    create_topic_confluent(broker.bootstrap, topic, partitions)
    records = make_records(500, seed=4)
    acks = produce_confluent(broker.bootstrap, topic, records, partitions=[i % partitions for i in range(500)])
    verify_log(records, acks, consume_confluent(broker.bootstrap, topic, range(partitions)), partitions)


# --- 5. SIGTERM under load, kill -9 ------------------------------------------------


class BusyConsumer:
    """A confluent consumer reading the topic from a thread until stopped."""

    def __init__(self, bootstrap: str, topic: str, partitions: int):
        self.consumer = confluent_consumer(bootstrap, **{"enable.partition.eof": False, "fetch.wait.max.ms": 500})
        self.consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
        self.count = 0
        self.stop_flag = threading.Event()
        self.thread = threading.Thread(target=self._run, name="busy-consumer", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop_flag.is_set():
            for msg in self.consumer.consume(num_messages=1000, timeout=0.2):
                if msg.error() is None:
                    self.count += 1

    def stop(self) -> None:
        self.stop_flag.set()
        self.thread.join(timeout=60)
        assert not self.thread.is_alive(), "consumer thread did not finish"
        self.consumer.close()


def test_sigterm_under_load_is_clean_and_loses_nothing(broker_factory):
    """SIGTERM while an idempotent acks=all producer and a consumer are busy:
    the broker exits 0 and leaves the clean-shutdown marker; the restart
    trusts it (and removes it while running). Every record the producer got
    an acknowledgement for, before the stop or after the restart, is in the
    log once, at its acknowledged offset, byte-exact; nothing else is there
    but records the producer sent, in send order."""
    broker = broker_factory()
    topic, partitions = unique_name("sigterm"), 2
    create_topic_confluent(broker.bootstrap, topic, partitions)
    marker = broker.data_dir / CLEAN_SHUTDOWN_MARKER
    producer = BackgroundProducer(
        broker.bootstrap, topic, retries=True, extra_conf={"enable.idempotence": True}
    )
    consumer = BusyConsumer(broker.bootstrap, topic, partitions)
    producer.start()
    try:
        producer.wait_for_acks(2_000)
        wait_until(lambda: consumer.count > 0, 60, "the consumer to read")
        code = broker.stop()
        acked_before_stop = producer.ack_count()
        assert code == 0, f"gregor exited with {code} on SIGTERM"
        assert marker.exists(), "no clean-shutdown marker after a clean stop"
        assert log_lines(broker.log_text(), "clean shutdown"), "the stop did not log a clean shutdown"

        broker.restart()
        [start] = log_lines(broker.log_since_last_start(), "starting gregor")
        assert "clean start" in start, f"the restart did not trust the clean shutdown: {start}"
        distrusted = log_lines(broker.log_since_last_start(), "no active-segment checkpoint after a clean stop")
        assert not distrusted, f"a partition scanned its segment after a clean stop: {distrusted[0]}"
        assert not marker.exists(), "the marker stays while the broker runs: a crash now would pass as clean"
        producer.wait_for_acks(acked_before_stop + 1_000)
    finally:
        producer.join()
        consumer.stop()

    acked = producer.acked
    print(f"sent {producer.sent}, acked {len(acked)} ({acked_before_stop} before the stop), failed {len(producer.failed)}")
    consumed = consume_confluent(broker.bootstrap, topic, range(partitions))
    assert_dense_offsets(consumed)
    at, copies = {}, Counter()
    for p, recs in consumed.items():
        for r in recs:
            _, i = parse_crash_value(r.value)
            assert i < producer.sent and r.key == crash_key(i), f"partition {p} offset {r.offset}: phantom record {r.value[:20]!r}"
            at[(p, r.offset)] = r.value
            copies[i] += 1
    for i, (p, off) in acked.items():
        assert at.get((p, off)) == crash_value(i), f"acknowledged record {i} is not at {p}/{off}: {at.get((p, off))!r}"
    assert not [i for i, n in copies.items() if n > 1], "an idempotent producer's record is in the log twice"
    for p, recs in consumed.items():
        order = [parse_crash_value(r.value)[1] for r in recs]
        assert order == sorted(order), f"partition {p} holds records out of send order"


def test_kill9_leaves_no_marker_and_the_restart_scans(broker_factory):
    """After kill -9 there is no clean-shutdown marker, the next start says it
    scans the active segments, and the acknowledged records are all there."""
    broker = broker_factory()
    topic = unique_name("kill9")
    create_topic_confluent(broker.bootstrap, topic, 2)
    records = make_records(500, seed=5)
    acks = produce_confluent(broker.bootstrap, topic, records)
    broker.kill9()
    assert not (broker.data_dir / CLEAN_SHUTDOWN_MARKER).exists(), "a killed broker left the clean-shutdown marker"
    broker.restart()
    [start] = log_lines(broker.log_since_last_start(), "starting gregor")
    assert "scanning active segments" in start and "clean start" not in start, start
    verify_log(records, acks, consume_confluent(broker.bootstrap, topic, range(2)), 2)


# --- 6. a taken data dir, a taken port ---------------------------------------------


def test_second_broker_on_a_locked_data_dir_or_taken_port_fails(broker_factory, gregor_bin, tmp_path):
    """A second `gregor serve` on the data dir of a running broker exits
    non-zero naming the lock; on its port (with a data dir of its own) it
    exits non-zero naming the address. The first broker keeps serving its
    data and keeps its lock."""
    first = broker_factory()
    topic = unique_name("first")
    create_topic_confluent(first.bootstrap, topic, 1)
    records = make_records(50, seed=6)
    acks = produce_confluent(first.bootstrap, topic, records)

    lock = first.data_dir / LOCK_FILE
    code, out = serve_expecting_failure(
        gregor_bin, tmp_path / "second-locked.log", "--data-dir", str(first.data_dir), "--listen", f"127.0.0.1:{free_port()}", "--metrics", "off"
    )
    assert code not in (0, None), f"a second broker started on a locked data dir:\n{out}"
    assert "in use by another gregor process" in out and str(lock) in out, out

    other_dir = tmp_path / "other-data"
    code, out = serve_expecting_failure(
        gregor_bin, tmp_path / "second-port.log", "--data-dir", str(other_dir), "--listen", first.bootstrap, "--metrics", "off"
    )
    assert code not in (0, None), f"a second broker started on a taken port:\n{out}"
    assert f"cannot listen on {first.bootstrap}" in out, out

    assert first.is_running() and lock.exists()
    assert_broker_answers(first.bootstrap)
    verify_log(records, acks, consume_confluent(first.bootstrap, topic, [0]), 1)
    more = produce_confluent(first.bootstrap, topic, make_records(1, seed=7))
    assert more == [(0, 50)], more


# --- 7. --config FILE ---------------------------------------------------------------


def describe(bootstrap: str, resource_type, name: str) -> dict:
    from confluent_kafka.admin import AdminClient, ConfigResource

    admin = AdminClient({"bootstrap.servers": bootstrap})
    resource = ConfigResource(resource_type, name)
    return admin.describe_configs([resource], request_timeout=30)[resource].result(timeout=60)


def test_config_file_applies_its_settings(broker_factory, tmp_path):
    """A Kafka-style properties file: comments ('#', '!'), blank lines and
    spaces around keys and values; its settings are the defaults of new
    topics (reported as STATIC_BROKER_CONFIG) and show in the BROKER configs;
    a flag given explicitly wins over the file."""
    from confluent_kafka.admin import ConfigSource, ResourceType

    config = tmp_path / "server.properties"
    config.write_text(
        "# Gregor test settings\n"
        "! a comment in the other style\n"
        "\n"
        "log.retention.ms=1234\n"
        "   log.segment.bytes = 2097152   \n"
        "message.max.bytes=2000000\n"
        "log.cleanup.policy=compact\n"
    )
    broker = broker_factory("--config", str(config), "--cleanup-policy", "delete")
    topic = unique_name("configured")
    create_topic_confluent(broker.bootstrap, topic, 1)
    entries = describe(broker.bootstrap, ResourceType.TOPIC, topic)
    want = {
        "retention.ms": "1234",
        "segment.bytes": "2097152",
        "max.message.bytes": "2000000",
        "cleanup.policy": "delete",
    }
    got = {name: entries[name].value for name in want}
    assert got == want, f"topic configs {got}"
    for name in want:
        assert entries[name].source == ConfigSource.STATIC_BROKER_CONFIG.value, (name, entries[name].source)
    assert entries["retention.bytes"].source == ConfigSource.DEFAULT_CONFIG.value

    broker_entries = describe(broker.bootstrap, ResourceType.BROKER, "0")
    assert broker_entries["log.retention.ms"].value == "1234"
    assert broker_entries["log.segment.bytes"].value == "2097152"

    # message.max.bytes from the file applies: 1.5 MB is over Kafka's default, under the file's.
    producer = Producer({"bootstrap.servers": broker.bootstrap, "message.max.bytes": 5_000_000})
    reports = []
    producer.produce(topic, value=os.urandom(1_500_000), on_delivery=lambda err, msg: reports.append(err))
    assert producer.flush(60) == 0
    assert reports == [None], f"a 1.5 MB record under message.max.bytes=2000000 was refused: {reports}"


def test_config_file_ms_settings_win_over_hours_and_minutes(broker_factory, tmp_path):
    """As in Kafka (KafkaConfig.logRetentionTimeMillis, logRollTimeMillis),
    log.retention.ms wins over log.retention.minutes and log.retention.hours,
    and log.roll.ms over log.roll.hours, whatever their order in the file."""
    from confluent_kafka.admin import ResourceType

    config = tmp_path / "server.properties"
    config.write_text(
        "log.retention.ms=1234\n"
        "log.retention.minutes=30\n"
        "log.retention.hours=24\n"
        "log.roll.ms=5000\n"
        "log.roll.hours=1\n"
    )
    broker = broker_factory("--config", str(config))
    topic = unique_name("precedence")
    create_topic_confluent(broker.bootstrap, topic, 1)
    entries = describe(broker.bootstrap, ResourceType.TOPIC, topic)
    got = {name: entries[name].value for name in ("retention.ms", "segment.ms")}
    assert got == {"retention.ms": "1234", "segment.ms": "5000"}, f"topic configs {got}"


@pytest.mark.parametrize(
    "bad_line, message",
    [
        ("log.segment.bytes", "expected key=value"),
        ("no.such.setting=1", "unknown broker config 'no.such.setting'"),
        ("log.retention.ms=soon", "invalid value 'soon'"),
        ("log.segment.bytes=10", "must be at least 14"),
    ],
    ids=["no-equals", "unknown-key", "not-a-number", "below-minimum"],
)
def test_config_file_bad_line_stops_the_broker(gregor_bin, tmp_path, bad_line, message):
    """A bad line (no '=', an unknown key, a bad value) makes `gregor serve`
    exit non-zero naming FILE:LINE (comments and blank lines count), before it
    touches the data dir."""
    config = tmp_path / "bad.properties"
    config.write_text(f"# comment\n\nlog.retention.ms=1000\n{bad_line}\nlog.retention.ms=2000\n")
    data_dir = tmp_path / "data"
    code, out = serve_expecting_failure(
        gregor_bin,
        tmp_path / "gregor.log",
        "--config", str(config),
        "--data-dir", str(data_dir),
        "--listen", f"127.0.0.1:{free_port()}",
        "--metrics", "off",
    )
    assert code not in (0, None), f"gregor started with a bad config line:\n{out}"
    assert f"{config}:4:" in out and message in out, out
    assert not data_dir.exists(), "a broker with a bad config created its data dir"


# --- 8. deleting and re-creating a topic -----------------------------------------


def test_recreated_topic_is_empty_also_after_a_restart(broker):
    """A topic with data is deleted and created again under the same name: it
    is empty (watermarks 0, 0), reads return nothing old, new records start at
    offset 0; after a restart the old data has not come back."""
    from confluent_kafka.admin import AdminClient

    topic, partitions = unique_name("recreated"), 2
    create_topic_confluent(broker.bootstrap, topic, partitions)
    old = make_records(500, seed=8)
    produce_confluent(broker.bootstrap, topic, old)

    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.delete_topics([topic], operation_timeout=30)[topic].result(timeout=60)
    wait_until(lambda: topic not in topic_names(broker.bootstrap), 30, f"{topic} to disappear")
    create_topic_confluent(broker.bootstrap, topic, partitions)
    for p in range(partitions):
        assert watermarks(broker.bootstrap, topic, p) == (0, 0), f"partition {p} of the re-created topic"
    assert consume_confluent(broker.bootstrap, topic, range(partitions)) == {p: [] for p in range(partitions)}

    new = make_records(20, seed=9)
    acks = produce_confluent(broker.bootstrap, topic, new, partitions=[i % partitions for i in range(20)])
    verify_log(new, acks, consume_confluent(broker.bootstrap, topic, range(partitions)), partitions)

    broker.restart()
    for p in range(partitions):
        assert watermarks(broker.bootstrap, topic, p) == (0, 10), f"partition {p} after the restart"
    verify_log(new, acks, consume_confluent(broker.bootstrap, topic, range(partitions)), partitions)


# --- 9. records over max.message.bytes -----------------------------------------------

BIG_VALUE_BYTES = 2 * 1024 * 1024


def test_oversized_record_confluent(broker):
    """librdkafka allowed to send 5 MB: a 2 MiB record to a topic with the
    default max.message.bytes (1048588) comes back with the broker's
    MESSAGE_TOO_LARGE (10, not librdkafka's own _MSG_SIZE_TOO_LARGE) and is
    not appended; the same producer then writes a normal record."""
    from confluent_kafka.admin import ResourceType

    topic = unique_name("too-big-confluent")
    create_topic_confluent(broker.bootstrap, topic, 1)
    limit = describe(broker.bootstrap, ResourceType.TOPIC, topic)["max.message.bytes"].value
    assert limit == str(DEFAULT_MAX_MESSAGE_BYTES), f"max.message.bytes {limit}"
    producer = Producer({"bootstrap.servers": broker.bootstrap, "message.max.bytes": 5_000_000, "acks": "all"})
    reports = []
    on_delivery = lambda err, msg: reports.append((err, msg.offset()))  # noqa: E731
    producer.produce(topic, value=os.urandom(BIG_VALUE_BYTES), partition=0, on_delivery=on_delivery)
    assert producer.flush(60) == 0
    [(err, _)] = reports
    assert err is not None and err.code() == KafkaError.MSG_SIZE_TOO_LARGE, f"delivery report {err}"
    assert watermarks(broker.bootstrap, topic, 0) == (0, 0), "the oversized record was appended"

    producer.produce(topic, value=b"small", partition=0, on_delivery=on_delivery)
    assert producer.flush(60) == 0
    assert reports[1] == (None, 0), reports[1]
    assert [r.value for r in consume_confluent(broker.bootstrap, topic, [0])[0]] == [b"small"]


def test_oversized_record_kafka_python(broker):
    """kafka-python with max_request_size raised to 5 MB: the future of a
    2 MiB record fails with MessageSizeTooLargeError and nothing is appended;
    the broker serves a normal record afterwards."""
    from kafka import KafkaProducer
    from kafka.errors import MessageSizeTooLargeError

    topic = unique_name("too-big-kafka-python")
    create_topic_confluent(broker.bootstrap, topic, 1)
    producer = KafkaProducer(
        bootstrap_servers=broker.bootstrap, acks="all", max_request_size=5_000_000,
        request_timeout_ms=30_000, bootstrap_timeout_ms=10_000,
    )
    try:
        future = producer.send(topic, value=os.urandom(BIG_VALUE_BYTES), partition=0)
        with pytest.raises(MessageSizeTooLargeError):
            future.get(timeout=60)
    finally:
        producer.close(timeout=10)
    assert watermarks(broker.bootstrap, topic, 0) == (0, 0), "the oversized record was appended"
    acks = produce_kafka_python(broker.bootstrap, topic, make_records(3, seed=10))
    assert acks == [(0, 0), (0, 1), (0, 2)], acks


# --- 10. OffsetDelete, OffsetForLeaderEpoch -----------------------------------------


def test_offset_delete_through_kafka_python(broker_factory):
    """OffsetDelete (kafka-python's delete_group_offsets) on an empty group
    removes one partition's committed offset and keeps the other's; a group
    with a member subscribed to the topic refuses with
    GROUP_SUBSCRIBED_TO_TOPIC and keeps it; an unknown group is
    GROUP_ID_NOT_FOUND."""
    from confluent_kafka import Consumer, ConsumerGroupTopicPartitions
    from confluent_kafka.admin import AdminClient
    from kafka import TopicPartition as KTopicPartition
    from kafka.admin import KafkaAdminClient
    from kafka.errors import GroupIdNotFoundError, GroupSubscribedToTopicError, NoError

    broker = broker_factory("--group-initial-rebalance-delay-ms", "0")
    topic, group, busy_group = unique_name("offdel"), unique_name("g-empty"), unique_name("g-busy")
    create_topic_confluent(broker.bootstrap, topic, 2)
    produce_confluent(broker.bootstrap, topic, make_records(20, seed=11), partitions=[i % 2 for i in range(20)])

    committer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group, "enable.auto.commit": False})
    committer.commit(offsets=[TopicPartition(topic, 0, 5), TopicPartition(topic, 1, 7)], asynchronous=False)
    committer.close()

    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap, bootstrap_timeout_ms=10_000)
    member = None
    try:
        assert admin.delete_group_offsets(group, [KTopicPartition(topic, 0)]) == {KTopicPartition(topic, 0): NoError}
        left = admin.list_group_offsets(group)[group]
        assert {tp.partition: o.offset for tp, o in left.items()} == {1: 7}, left
        confluent_admin = AdminClient({"bootstrap.servers": broker.bootstrap})
        request = ConsumerGroupTopicPartitions(group, [TopicPartition(topic, 0), TopicPartition(topic, 1)])
        listed = confluent_admin.list_consumer_group_offsets([request])[group].result(timeout=60)
        assert {tp.partition: tp.offset for tp in listed.topic_partitions} == {0: OFFSET_INVALID, 1: 7}

        member = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": busy_group,
                           "enable.auto.commit": False, "auto.offset.reset": "earliest"})
        member.subscribe([topic])
        wait_until(lambda: (member.poll(0.2), member.assignment())[1], 60, "the member's assignment")
        member.commit(offsets=[TopicPartition(topic, 0, 3)], asynchronous=False)
        refused = admin.delete_group_offsets(busy_group, [KTopicPartition(topic, 0)])
        assert refused == {KTopicPartition(topic, 0): GroupSubscribedToTopicError}, refused
        kept = admin.list_group_offsets(busy_group)[busy_group]
        assert kept[KTopicPartition(topic, 0)].offset == 3, kept

        with pytest.raises(GroupIdNotFoundError):
            admin.delete_group_offsets(unique_name("g-none"), [KTopicPartition(topic, 0)])
    finally:
        if member is not None:
            member.close()
        admin.close()


def test_assign_with_leader_epoch_validates_through_offset_for_leader_epoch(broker_factory):
    """librdkafka validates a position assigned with a leader epoch through
    OffsetForLeaderEpoch (counted in /metrics): offset 200 of 500 with epoch 0
    is confirmed and reading starts there; offset 600 with epoch 0 is past the
    epoch's end (500, as the broker answers), so librdkafka moves to 500 and
    reads nothing, not from 0 as an out-of-range reset would."""
    metrics_port = free_port()
    broker = broker_factory("--metrics", f"127.0.0.1:{metrics_port}")
    topic = unique_name("epoch")
    create_topic_confluent(broker.bootstrap, topic, 1)
    records = make_records(500, seed=12)
    produce_confluent(broker.bootstrap, topic, records, partitions=[0] * 500)

    for start, first_read in ((200, 200), (600, 500)):
        before = request_count(metrics_port, "OffsetForLeaderEpoch")
        consumer = confluent_consumer(broker.bootstrap)
        try:
            consumer.assign([TopicPartition(topic, 0, start, leader_epoch=0)])
            read, eof_at = [], None
            deadline = time.monotonic() + 60
            while eof_at is None:
                assert time.monotonic() < deadline, f"no partition EOF after assign at {start}; read {len(read)}"
                for msg in consumer.consume(num_messages=1000, timeout=1.0):
                    if msg.error() is None:
                        read.append((msg.offset(), msg.value()))
                    elif msg.error().code() == KafkaError._PARTITION_EOF:
                        eof_at = msg.offset()
                    else:
                        raise AssertionError(f"consumer error after assign at {start}: {msg.error()}")
        finally:
            consumer.close()
        assert [o for o, _ in read] == list(range(first_read, 500)), (
            f"assign at {start}: read offsets {read[:1]}..{read[-1:]} ({len(read)})"
        )
        assert [v for _, v in read] == [records[o].value for o in range(first_read, 500)]
        assert eof_at == 500, f"assign at {start}: end of partition at {eof_at}"
        assert request_count(metrics_port, "OffsetForLeaderEpoch") > before, (
            f"assign at {start} with a leader epoch sent no OffsetForLeaderEpoch"
        )
