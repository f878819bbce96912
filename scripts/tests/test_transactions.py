"""Transactions with real clients at their defaults (confluent-kafka, plus
kafka-python's own transactional tests in its suite): aborted records are
invisible to read_committed readers and visible to read_uncommitted ones, an
open transaction holds the last stable offset until it ends, a second
instance fences the first, a transaction past its timeout is aborted,
transactional offsets commit with their transaction, and an exactly-once
copy survives kill -9 of the broker and of the copiers. Histories of sends,
transaction ends and polls go through scripts/txn_history_check.py.
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from confluent_kafka import KafkaException, Producer, TopicPartition

from helpers import confluent_consumer, create_topic_confluent, unique_name, wait_until
from test_replication import (
    FAULT_ARGS,
    create_replicated,
    partition_state,
    wait_for_full_isr,
    wait_for_one_leader,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from txn_history_check import READ_COMMITTED, READ_UNCOMMITTED, EndTxn, TxnHistory  # noqa: E402

CLIENTS = Path(__file__).resolve().parent / "clients"
# The copier of each client, by name: a command that takes
# BOOTSTRAP TRANSACTIONAL_ID GROUP INPUT OUTPUT BATCH.
COPIERS = {
    "confluent-kafka": [sys.executable, str(CLIENTS / "txn_copier.py")],
    "kafka-python": [sys.executable, str(CLIENTS / "txn_copier_kafka_python.py")],
    "aiokafka": [sys.executable, str(CLIENTS / "txn_copier_aiokafka.py")],
    "kafkajs": ["node", str(Path(__file__).resolve().parents[1] / "js" / "txn_copier.js")],
}
# The exactly-once copy: records, input partitions, records per transaction.
COPY_RECORDS = 100_000
COPY_PARTITIONS = 2
COPY_BATCH = 300
COPY_KILLS = 3
# The copy on a cluster moves fewer records (each kill costs an election),
# and so does the copy by the other clients (slower than librdkafka).
CLUSTER_COPY_RECORDS = 30_000
OTHER_CLIENT_COPY_RECORDS = 20_000
WAIT_S = 60


def txn_producer(bootstrap: str, transactional_id: str, **extra) -> Producer:
    producer = Producer({"bootstrap.servers": bootstrap, "transactional.id": transactional_id, **extra})
    producer.init_transactions(30)
    return producer


def read_all(bootstrap: str, topic: str, partitions: int, isolation: str) -> list[tuple[int, int, str]]:
    """Every record of `topic` up to the end `isolation` sees (its last
    stable offset for read_committed), as (partition, offset, value)."""
    consumer = confluent_consumer(bootstrap, **{"isolation.level": isolation})
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    records, at_end = [], set()
    deadline = time.monotonic() + WAIT_S
    while len(at_end) < partitions:
        assert time.monotonic() < deadline, f"no end of {topic} within {WAIT_S}s"
        message = consumer.poll(1.0)
        if message is None:
            continue
        if message.error():
            at_end.add(message.partition())
            continue
        records.append((message.partition(), message.offset(), message.value().decode()))
    consumer.close()
    return records


def test_aborts_are_invisible_to_read_committed_and_an_open_transaction_holds_the_lso(broker):
    topic = unique_name("txn")
    create_topic_confluent(broker.bootstrap, topic, 1)
    history = TxnHistory()
    producer = txn_producer(broker.bootstrap, unique_name("tid"))

    def run(txn: str, values: list[str], end: str | None) -> None:
        producer.begin_transaction()
        for value in values:
            producer.produce(topic, value=value.encode(), partition=0)
        producer.flush(30)
        for value in values:
            history.send("p1", value, 0, outcome="ok", txn=txn)
        if end is None:
            return
        invoked = history.clock()
        (producer.commit_transaction if end == "commit" else producer.abort_transaction)(30)
        history.end_txn("p1", txn, end=end, outcome="ok", invoke_ns=invoked)

    run("t1", ["a1", "a2", "a3"], "abort")
    run("t2", ["c1", "c2"], "commit")
    run("t3", ["o1"], None)  # left open
    committed = read_all(broker.bootstrap, topic, 1, READ_COMMITTED)
    assert [v for _, _, v in committed] == ["c1", "c2"]
    uncommitted = read_all(broker.bootstrap, topic, 1, READ_UNCOMMITTED)
    assert [v for _, _, v in uncommitted] == ["a1", "a2", "a3", "c1", "c2", "o1"]
    # ListOffsets(latest) for read_committed is the last stable offset: the
    # open transaction's first record; for read_uncommitted the high watermark.
    committed_end = confluent_consumer(broker.bootstrap, **{"isolation.level": READ_COMMITTED})
    open_offset = uncommitted[-1][1]
    assert committed_end.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)[1] == open_offset
    # A read_committed long poll parked at the LSO wakes when the open
    # transaction commits.
    committed_end.assign([TopicPartition(topic, 0, open_offset)])
    parked = committed_end.poll(0.5)
    assert parked is None or parked.error(), "a read_committed read past the LSO"
    invoked = history.clock()
    producer.commit_transaction(30)
    history.end_txn("p1", "t3", end="commit", outcome="ok", invoke_ns=invoked)
    message = wait_until(
        lambda: (m := committed_end.poll(0.5)) is not None and not m.error() and m, WAIT_S, "the committed record"
    )
    assert message.value() == b"o1"
    committed_end.close()
    history.final(read_all(broker.bootstrap, topic, 1, READ_COMMITTED), isolation=READ_COMMITTED)
    history.final(read_all(broker.bootstrap, topic, 1, READ_UNCOMMITTED), isolation=READ_UNCOMMITTED)
    report = history.check()
    print(report.summary())
    assert report.ok(), "\n".join(report.details())


def test_a_second_instance_fences_the_first_and_aborts_its_transaction(broker):
    topic = unique_name("fence")
    create_topic_confluent(broker.bootstrap, topic, 1)
    transactional_id = unique_name("tid")
    first = txn_producer(broker.bootstrap, transactional_id)
    first.begin_transaction()
    first.produce(topic, value=b"zombie", partition=0)
    first.flush(30)
    second = txn_producer(broker.bootstrap, transactional_id)
    with pytest.raises(KafkaException) as raised:
        first.commit_transaction(30)
    assert raised.value.args[0].fatal(), raised.value
    second.begin_transaction()
    second.produce(topic, value=b"live", partition=0)
    second.commit_transaction(30)
    assert [v for _, _, v in read_all(broker.bootstrap, topic, 1, READ_COMMITTED)] == ["live"]


def test_a_transaction_past_its_timeout_is_aborted(broker):
    topic = unique_name("timeout")
    create_topic_confluent(broker.bootstrap, topic, 1)
    stale = txn_producer(broker.bootstrap, unique_name("tid"), **{"transaction.timeout.ms": 2000})
    stale.begin_transaction()
    stale.produce(topic, value=b"expired", partition=0)
    stale.flush(30)
    other = txn_producer(broker.bootstrap, unique_name("tid"))
    other.begin_transaction()
    other.produce(topic, value=b"after", partition=0)
    other.commit_transaction(30)
    # The stale transaction holds the LSO until the coordinator aborts it.
    consumer = confluent_consumer(broker.bootstrap, **{"isolation.level": READ_COMMITTED})
    consumer.assign([TopicPartition(topic, 0, 0)])
    message = wait_until(
        lambda: (m := consumer.poll(0.5)) is not None and not m.error() and m, WAIT_S, "the timed-out abort"
    )
    assert message.value() == b"after"
    consumer.close()
    with pytest.raises(KafkaException):
        stale.commit_transaction(30)
    assert [v for _, _, v in read_all(broker.bootstrap, topic, 1, READ_COMMITTED)] == ["after"]


def test_transactional_offsets_commit_with_their_transaction(broker):
    from confluent_kafka import Consumer

    source = unique_name("src")
    create_topic_confluent(broker.bootstrap, source, 1)
    plain = Producer({"bootstrap.servers": broker.bootstrap})
    for i in range(10):
        plain.produce(source, value=str(i).encode(), partition=0)
    plain.flush(30)
    group = unique_name("group")
    consumer = Consumer({
        "bootstrap.servers": broker.bootstrap, "group.id": group, "enable.auto.commit": False,
        "auto.offset.reset": "earliest", "isolation.level": READ_COMMITTED,
    })
    consumer.assign([TopicPartition(source, 0, 0)])
    producer = txn_producer(broker.bootstrap, unique_name("tid"))
    for end, offset in (("abort", 4), ("commit", 7)):
        producer.begin_transaction()
        producer.send_offsets_to_transaction(
            [TopicPartition(source, 0, offset)], consumer.consumer_group_metadata(), 30
        )
        if end == "abort":
            producer.abort_transaction(30)
        else:
            producer.commit_transaction(30)
        (committed,) = consumer.committed([TopicPartition(source, 0)], timeout=10)
        assert committed.offset == (-1001 if end == "abort" else 7), end
    consumer.close()
    # They survive a restart (replayed with their marker).
    broker.kill9()
    broker.start()
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group})
    (committed,) = consumer.committed([TopicPartition(source, 0)], timeout=30)
    assert committed.offset == 7
    consumer.close()


def run_exactly_once_copy(
    bootstrap: str, tmp_path, records: int, kill_brokers, create_topic, client: str = "confluent-kafka"
) -> None:
    """The exactly-once copy: `records` numbered records in COPY_PARTITIONS
    input partitions, copied by 2 copiers (`client`'s, read_committed,
    `send_offsets_to_transaction`, COPY_BATCH records per transaction)
    while a read_committed reader follows the output. COPY_KILLS times, once
    the copy has moved on, `kill_brokers(kill)` kills (and restarts)
    brokers and one copier is killed with SIGKILL and started again. The
    output must equal the input: no duplicate, no gap, and everything the
    reader saw in it."""
    source, sink = unique_name("copy-in"), unique_name("copy-out")
    create_topic(source, COPY_PARTITIONS)
    create_topic(sink, COPY_PARTITIONS)
    plain = Producer({"bootstrap.servers": bootstrap})
    for i in range(records):
        plain.produce(source, key=str(i).encode(), value=str(i).encode(), partition=i % COPY_PARTITIONS)
    plain.flush(60)
    group = unique_name("copiers")

    def start_copier(n: int) -> subprocess.Popen:
        with open(tmp_path / f"copier-{n}.log", "a") as log:
            return subprocess.Popen(
                [*COPIERS[client], bootstrap, f"{group}-tid-{n}", group, source, sink, str(COPY_BATCH)],
                stdout=log,
                stderr=log,
            )

    copiers = [start_copier(n) for n in range(2)]
    # A read_committed reader of the output all along: what it reads must
    # be in the final output, in the same order, each once.
    seen: dict[int, list[tuple[int, str]]] = {p: [] for p in range(COPY_PARTITIONS)}
    stop = threading.Event()

    def reader() -> None:
        consumer = confluent_consumer(bootstrap, **{"isolation.level": READ_COMMITTED, "enable.partition.eof": False})
        consumer.assign([TopicPartition(sink, p, 0) for p in range(COPY_PARTITIONS)])
        while not stop.is_set():
            message = consumer.poll(0.5)
            if message is not None and not message.error():
                seen[message.partition()].append((message.offset(), message.value().decode()))
        consumer.close()

    reading = threading.Thread(target=reader, daemon=True)
    reading.start()

    def supervise() -> None:
        # A copier that stopped on a fatal error or its watchdog is started
        # again, as its supervisor would.
        for n, copier in enumerate(copiers):
            if copier.poll() is not None:
                print(f"copier {n} exited with {copier.returncode}; starting it again")
                copiers[n] = start_copier(n)

    def written() -> int:
        supervise()
        with_end = confluent_consumer(bootstrap)
        try:
            return sum(
                with_end.get_watermark_offsets(TopicPartition(sink, p), timeout=10)[1] for p in range(COPY_PARTITIONS)
            )
        except KafkaException:
            return 0  # a broker is starting
        finally:
            with_end.close()

    def copied() -> int:
        supervise()
        return sum(1 for _ in read_all(bootstrap, sink, COPY_PARTITIONS, READ_COMMITTED))

    try:
        kills = 0
        for kill in range(COPY_KILLS):
            # Progress is the output's end moving (cheap: no read).
            progress = written()
            wait_until(lambda: written() > progress + COPY_BATCH, WAIT_S, f"copy progress before kill {kill}")
            kills += 1
            kill_brokers(kill)
            victim = kill % len(copiers)
            copiers[victim].send_signal(signal.SIGKILL)
            copiers[victim].wait()
            copiers[victim] = start_copier(victim)
        wait_until(lambda: copied() >= records, 4 * WAIT_S, "the whole copy", state=copied)
        # The kills must land while the copy runs, or they test nothing.
        assert kills == COPY_KILLS, f"the copy ended after {kills} kills"
    finally:
        for copier in copiers:
            copier.kill()
            copier.wait()
        stop.set()
        reading.join(30)
    output = read_all(bootstrap, sink, COPY_PARTITIONS, READ_COMMITTED)
    values = [int(v) for _, _, v in output]
    duplicates = len(values) - len(set(values))
    missing = sorted(set(range(records)) - set(values))
    print(f"copy: {len(values)} records out, {duplicates} duplicates, {len(missing)} missing")
    assert duplicates == 0 and not missing, f"{duplicates} duplicates; missing {missing[:20]}"
    final = {p: [(o, v) for q, o, v in output if q == p] for p in range(COPY_PARTITIONS)}
    for p, read in seen.items():
        # The reader may have restarted its read at an earlier offset after
        # a broker's kill: drop what it read twice at the same offset.
        unique = sorted(set(read))
        assert all(record in final[p] for record in unique), f"partition {p}: the reader saw records the output lacks"
        print(f"reader: partition {p}: {len(unique)} records read while copying")


def copy_on_one_broker(broker, tmp_path, records: int, client: str) -> None:
    """The copy on a single broker, killed with -9 and restarted each round."""

    def kill_brokers(_kill: int) -> None:
        broker.kill9()
        broker.start()

    run_exactly_once_copy(
        broker.bootstrap,
        tmp_path,
        records,
        kill_brokers,
        lambda name, partitions: create_topic_confluent(broker.bootstrap, name, partitions),
        client,
    )


def test_exactly_once_copy_survives_kills_of_the_broker_and_the_copiers(broker, tmp_path):
    copy_on_one_broker(broker, tmp_path, COPY_RECORDS, "confluent-kafka")


@pytest.mark.parametrize("client", ["kafka-python", "aiokafka", "kafkajs"])
def test_exactly_once_copy_by_other_clients_survives_kills(broker, tmp_path, client):
    """The same copy with kafka-python's, aiokafka's and kafkajs's
    transactional producers and read_committed consumers, at their
    defaults (kafkajs's transactional producer must be idempotent with one
    request in flight)."""
    copy_on_one_broker(broker, tmp_path, OTHER_CLIENT_COPY_RECORDS, client)


def txn_cluster(cluster_factory):
    """3 brokers of 2 shards each, with few internal partitions (quicker
    elections and loads), and the fault-test timeouts."""
    return cluster_factory(
        3,
        *FAULT_ARGS,
        "--transaction-state-log-num-partitions", 4,
        "--offsets-topic-num-partitions", 3,
        shards=2,
    )


def test_a_transaction_spans_partitions_led_by_every_broker(cluster_factory):
    """Markers go to partitions other brokers lead (WriteTxnMarkers) and
    each leader verifies batches with a coordinator on another broker
    (AddPartitionsToTxn v4): aborts and commits across 3 leaders; the
    transactions are listed and described meanwhile."""
    brokers = txn_cluster(cluster_factory)
    bootstrap = ",".join(b.bootstrap for b in brokers)
    topic = unique_name("spread")
    create_replicated(bootstrap, topic, 3, 3, {"min.insync.replicas": "2"})
    wait_for_full_isr(bootstrap, topic, 3)
    leaders = {leader for leader, _, _ in partition_state(bootstrap, topic).values()}
    assert len(leaders) == 3, f"partitions led by {leaders}: not spread over the brokers"
    history = TxnHistory()
    tid = unique_name("tid")
    producer = txn_producer(bootstrap, tid)
    for txn, end in (("t1", "abort"), ("t2", "commit"), ("t3", "abort"), ("t4", "commit")):
        producer.begin_transaction()
        values = [f"{txn}-{p}-{i}" for p in range(3) for i in range(5)]
        for value in values:
            producer.produce(topic, value=value.encode(), partition=int(value.split("-")[1]))
        producer.flush(30)
        for value in values:
            history.send("p1", value, int(value.split("-")[1]), outcome="ok", txn=txn)
        invoked = history.clock()
        (producer.commit_transaction if end == "commit" else producer.abort_transaction)(30)
        history.end_txn("p1", txn, end=end, outcome="ok", invoke_ns=invoked)
    # ListTransactions (every broker's coordinators) and DescribeTransactions
    # (the id's coordinator), with kafka-python's admin client: an open
    # transaction over the 3 partitions, then its commit.
    from kafka import KafkaAdminClient, TopicPartition as KafkaTopicPartition

    admin = KafkaAdminClient(bootstrap_servers=bootstrap.split(","))
    producer.begin_transaction()
    for p in range(3):
        producer.produce(topic, value=f"t5-{p}".encode(), partition=p)
    producer.flush(30)

    def listed(**filters) -> dict[str, tuple[int, str]]:
        by_broker = admin.list_transactions(**filters)
        return {t.transactional_id: (t.producer_id, str(t.state.value)) for ts in by_broker.values() for t in ts}

    described = admin.describe_transactions([tid])[tid]
    assert str(described.state.value) == "Ongoing"
    assert described.topic_partitions == {KafkaTopicPartition(topic, p) for p in range(3)}
    assert described.transaction_start_time_ms > 0
    assert listed()[tid] == (described.producer_id, "Ongoing")
    assert tid in listed(state_filters=["Ongoing"])
    assert tid not in listed(state_filters=["CompleteCommit"])
    assert tid in listed(producer_id_filters=[described.producer_id])
    producer.commit_transaction(30)
    history.end_txn("p1", "t5", end="commit", outcome="ok")
    for p in range(3):
        history.send("p1", f"t5-{p}", p, outcome="ok", txn="t5")
    wait_until(lambda: listed().get(tid, (0, ""))[1] == "CompleteCommit", WAIT_S, "the commit completes")
    assert str(admin.describe_transactions([tid])[tid].state.value) == "CompleteCommit"
    admin.close()
    committed = read_all(bootstrap, topic, 3, READ_COMMITTED)
    assert sorted(v for _, _, v in committed) == sorted(
        [f"{txn}-{p}-{i}" for txn in ("t2", "t4") for p in range(3) for i in range(5)] + [f"t5-{p}" for p in range(3)]
    )
    history.final(committed, isolation=READ_COMMITTED)
    history.final(read_all(bootstrap, topic, 3, READ_UNCOMMITTED), isolation=READ_UNCOMMITTED)
    report = history.check()
    print(report.summary())
    assert report.ok(), "\n".join(report.details())


def test_exactly_once_copy_survives_kills_of_leaders_in_a_cluster(cluster_factory, tmp_path):
    """The copy on 3 brokers (replication factor 3, min.insync.replicas 2):
    each round kill -9s a broker (the leader of one output partition, then
    of the other, then the metadata quorum's leader) and a copier."""
    brokers = txn_cluster(cluster_factory)
    bootstrap = ",".join(b.bootstrap for b in brokers)
    topics: list[str] = []

    def create_topic(name: str, partitions: int) -> None:
        create_replicated(bootstrap, name, partitions, 3, {"min.insync.replicas": "2"})
        wait_for_full_isr(bootstrap, name, 3)
        topics.append(name)

    def kill_brokers(kill: int) -> None:
        if kill == 2:
            leader = wait_for_one_leader(brokers)
        else:
            state = partition_state(bootstrap, topics[-1])
            leader = state[kill % COPY_PARTITIONS][0]
        victim = next(b for b in brokers if b.node_id == leader)
        victim.kill9()
        time.sleep(1.0)
        victim.start()
        for name in topics:
            wait_for_full_isr(bootstrap, name, 3)

    run_exactly_once_copy(bootstrap, tmp_path, CLUSTER_COPY_RECORDS, kill_brokers, create_topic)


# ---------------------------------------------------------------------------
# A mixed history through leader kills, checked for Jepsen's anomalies

MIXED_PARTITIONS = 3
MIXED_KILLS = 3


class TxnWriter(threading.Thread):
    """A transactional producer (confluent-kafka at its defaults) that sends
    2-8 values per transaction to random partitions and commits about two
    transactions of three, aborting the rest. An abortable error aborts; any
    other error starts a new instance with the same transactional id, which
    fences the old one and ends its open transaction."""

    def __init__(self, name: str, bootstrap: str, topic: str, history: TxnHistory, seed: int) -> None:
        super().__init__(daemon=True)
        self.name, self.bootstrap, self.topic, self.history = name, bootstrap, topic, history
        self.rng = random.Random(seed)
        self.halt = threading.Event()
        self.transactional_id = unique_name(f"mixed-{name}")

    def new_producer(self) -> Producer:
        while not self.halt.is_set():
            try:
                return txn_producer(self.bootstrap, self.transactional_id)
            except KafkaException:
                time.sleep(0.5)
        raise SystemExit

    def end(self, producer: Producer, txn: str, end: str) -> bool:
        invoked = self.history.clock()
        try:
            (producer.commit_transaction if end == "commit" else producer.abort_transaction)(30)
        except KafkaException:
            # Committed or not: the broker decided, all or nothing.
            self.history.end_txn(self.name, txn, end=end, outcome="info", invoke_ns=invoked)
            return False
        self.history.end_txn(self.name, txn, end=end, outcome="ok", invoke_ns=invoked)
        return True

    def run(self) -> None:
        producer = self.new_producer()
        count = 0
        while not self.halt.is_set():
            txn = f"{self.name}-t{count}"
            count += 1
            sent: dict[str, tuple[int, list]] = {}

            def delivered(err, message, value=None):
                sent[value][1].append(None if err else message.offset())

            try:
                producer.begin_transaction()
                for i in range(self.rng.randrange(2, 9)):
                    value, partition = f"{txn}-{i}", self.rng.randrange(MIXED_PARTITIONS)
                    sent[value] = (partition, [])
                    producer.produce(
                        self.topic, value=value.encode(), partition=partition,
                        on_delivery=lambda err, msg, value=value: delivered(err, msg, value),
                    )
                producer.flush(30)
                ended = self.end(producer, txn, "commit" if self.rng.random() < 0.67 else "abort")
            except KafkaException as e:
                ended = e.args[0].txn_requires_abort() and self.end(producer, txn, "abort")
            for value, (partition, outcome) in sent.items():
                offset = outcome[0] if outcome else None
                self.history.send(
                    self.name, value, partition, outcome="ok" if offset is not None else "info", txn=txn,
                    offset=offset,
                )
            if not ended:
                producer = self.new_producer()


class PlainWriter(threading.Thread):
    """An idempotent producer without transactions (confluent-kafka's
    defaults plus enable.idempotence: without it a send retried after a
    leader's kill may be written twice, as Kafka allows)."""

    def __init__(self, name: str, bootstrap: str, topic: str, history: TxnHistory) -> None:
        super().__init__(daemon=True)
        self.name, self.topic, self.history = name, topic, history
        self.producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
        self.halt = threading.Event()

    def run(self) -> None:
        count = 0
        while not self.halt.is_set():
            value, partition = f"{self.name}-{count}", count % MIXED_PARTITIONS
            count += 1

            def delivered(err, message, value=value, partition=partition):
                offset = None if err else message.offset()
                outcome = "ok" if offset is not None else "info"
                self.history.send(self.name, value, partition, outcome=outcome, offset=offset)

            self.producer.produce(self.topic, value=value.encode(), partition=partition, on_delivery=delivered)
            self.producer.poll(0.01)
        self.producer.flush(60)


class Reader(threading.Thread):
    """A consumer at confluent-kafka's defaults with one isolation level,
    assigned every partition from offset 0, recording each poll (one
    session for its whole run)."""

    def __init__(self, name: str, bootstrap: str, topic: str, history: TxnHistory, isolation: str) -> None:
        super().__init__(daemon=True)
        self.name, self.topic, self.history, self.isolation = name, topic, history, isolation
        self.consumer = confluent_consumer(bootstrap, **{"isolation.level": isolation, "enable.partition.eof": False})
        self.consumer.assign([TopicPartition(topic, p, 0) for p in range(MIXED_PARTITIONS)])
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            invoked = self.history.clock()
            messages = self.consumer.consume(100, 0.5)
            records = [(m.partition(), m.offset(), m.value().decode()) for m in messages if not m.error()]
            if records:
                self.history.poll(
                    self.name, f"{self.name}-s1", records, isolation=self.isolation, invoke_ns=invoked
                )
        self.consumer.close()


def test_a_mixed_history_through_leader_kills_has_no_anomalies(cluster_factory, tmp_path):
    """5 processes on 3 brokers (replication factor 3, min.insync.replicas
    2): 2 transactional producers committing and aborting, an idempotent
    producer, a read_committed and a read_uncommitted reader; kill -9 of a
    partition leader, then of the metadata quorum's leader, then of a
    leader again. The history (written to the test's directory) must have
    no anomaly."""
    brokers = txn_cluster(cluster_factory)
    bootstrap = ",".join(b.bootstrap for b in brokers)
    topic = unique_name("mixed")
    create_replicated(bootstrap, topic, MIXED_PARTITIONS, 3, {"min.insync.replicas": "2"})
    wait_for_full_isr(bootstrap, topic, 3)
    history = TxnHistory()
    rng = random.Random(18)
    writers = [TxnWriter(f"t{n}", bootstrap, topic, history, seed=n) for n in (1, 2)]
    threads = [
        *writers,
        PlainWriter("p1", bootstrap, topic, history),
        Reader("c1", bootstrap, topic, history, READ_COMMITTED),
        Reader("c2", bootstrap, topic, history, READ_UNCOMMITTED),
    ]
    for thread in threads:
        thread.start()
    try:
        for kill in range(MIXED_KILLS):
            time.sleep(2.0)
            if kill == 1:
                leader = wait_for_one_leader(brokers)
            else:
                leader = partition_state(bootstrap, topic)[rng.randrange(MIXED_PARTITIONS)][0]
            victim = next(b for b in brokers if b.node_id == leader)
            victim.kill9()
            time.sleep(1.0)
            victim.start()
            wait_for_full_isr(bootstrap, topic, 3)
        time.sleep(2.0)
    finally:
        for thread in threads:
            thread.halt.set()
        for thread in threads:
            thread.join(90)
    history.final(read_all(bootstrap, topic, MIXED_PARTITIONS, READ_COMMITTED), isolation=READ_COMMITTED)
    history.final(read_all(bootstrap, topic, MIXED_PARTITIONS, READ_UNCOMMITTED), isolation=READ_UNCOMMITTED)
    history.write_jsonl(tmp_path / "history.jsonl")
    report = history.check()
    ends = [e for e in history.events if isinstance(e, EndTxn)]
    print(f"mixed history: {len(history.events)} events, {len(ends)} transaction ends; {report.summary()}")
    assert sum(1 for e in ends if e.end == "commit" and e.outcome == "ok") > 0
    assert report.ok(), "\n".join(report.details())
