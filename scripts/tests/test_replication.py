"""ISR replication between real brokers: followers copy their leaders'
batches with the leaders' offsets and epochs over the owning shards'
replication ports, acks=all waits for the in-sync replicas, and the files
of every replica hold the same bytes."""

from __future__ import annotations

import time

from confluent_kafka.admin import AdminClient, NewTopic

import helpers
from helpers import consume_confluent, make_records, produce_confluent, segment_paths, verify_log


def create_replicated(bootstrap: str, name: str, partitions: int, replication_factor: int, config=None) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    deadline = time.monotonic() + 30
    while True:
        try:
            topic = NewTopic(name, partitions, replication_factor, config=config or {})
            for future in admin.create_topics([topic]).values():
                future.result(timeout=15)
            return
        except Exception as e:  # NOT_CONTROLLER while the quorum elects
            if "NOT_CONTROLLER" not in str(e) or time.monotonic() > deadline:
                raise


def partition_state(bootstrap: str, topic: str) -> dict[int, tuple[int, list[int], list[int]]]:
    """partition -> (leader, replicas, isr) from Metadata."""
    md = AdminClient({"bootstrap.servers": bootstrap}).list_topics(topic, timeout=10)
    return {p.id: (p.leader, list(p.replicas), list(p.isrs)) for p in md.topics[topic].partitions.values()}


def wait_until(what: str, check, timeout_s: float = 30) -> None:
    helpers.wait_until(check, timeout_s, what)


def replica_bytes(broker, topic: str, partition: int) -> bytes:
    return b"".join(p.read_bytes() for p in segment_paths(broker.data_dir, topic, partition))


def test_followers_copy_every_acknowledged_batch(cluster_factory):
    brokers = cluster_factory(3, shards=2)
    bootstrap = ",".join(b.bootstrap for b in brokers)
    create_replicated(bootstrap, "copied", 4, 3, {"min.insync.replicas": "2"})
    state = partition_state(bootstrap, "copied")
    for leader, replicas, isr in state.values():
        assert sorted(replicas) == [1, 2, 3]
        assert sorted(isr) == [1, 2, 3]
        assert leader in replicas
    # confluent's producer defaults to acks=all (and idempotence off).
    records = make_records(2000, seed=21)
    acks = produce_confluent(bootstrap, "copied", records)
    verify_log(records, acks, consume_confluent(bootstrap, "copied", range(4)), 4)
    # Every replica holds the leader's bytes (acks=all waited for the
    # ISR, and followers sync before they fetch again).
    for partition in range(4):
        copies = [replica_bytes(b, "copied", partition) for b in brokers]
        assert copies[0], f"partition {partition} has no data"
        assert copies[0] == copies[1] == copies[2], f"partition {partition} differs between replicas"


# ---------------------------------------------------------------------------
# kill -9 under acks=all load, with a history checker


import random
import sys
import threading
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from history_check import Read, Send, check  # noqa: E402
from test_metadata_quorum import wait_for_one_leader  # noqa: E402

FAULT_ARGS = (
    "--broker-heartbeat-interval-ms", 100,
    "--broker-session-timeout-ms", 1000,
    "--replica-lag-time-max-ms", 2000,
)


class HistoryProducer:
    """A default confluent producer (acks=all) sending unique values as fast
    as a small pause allows, recording every send's outcome."""

    def __init__(self, bootstrap: str, topic: str, name: str, idempotent: bool):
        from confluent_kafka import Producer

        self.topic, self.name, self.idempotent = topic, name, idempotent
        self.producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": idempotent})
        self.sends: list[Send] = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _run(self) -> None:
        i = 0
        while not self.stopping.is_set():
            send = Send(value=f"{self.name}-{i}".encode(), producer=self.name, idempotent=self.idempotent)
            self.sends.append(send)

            def delivered(err, msg, send=send):
                if err is None:
                    send.outcome, send.partition, send.offset = "acked", msg.partition(), msg.offset()
                else:
                    send.outcome, send.error = "failed", str(err)

            while True:
                try:
                    self.producer.produce(self.topic, value=send.value, on_delivery=delivered)
                    break
                except BufferError:
                    self.producer.poll(0.05)
            self.producer.poll(0)
            i += 1
            time.sleep(0.002)
        self.producer.flush(60)

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=120)
        assert not self.thread.is_alive(), f"producer {self.name} did not finish"


def read_everything(bootstrap: str, topic: str, partitions: int) -> list[Read]:
    """Every record of every partition, from its start to its high watermark."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": f"history-{time.time()}", "enable.auto.commit": False}
    )
    try:
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=20)[1] for p in range(partitions)}
        consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
        reads: list[Read] = []
        positions = {p: 0 for p in range(partitions)}
        deadline = time.monotonic() + 120
        while any(positions[p] < ends[p] for p in range(partitions)):
            assert time.monotonic() < deadline, f"final read stuck at {positions} of {ends}"
            msg = consumer.poll(0.5)
            if msg is None or msg.error() is not None:
                continue
            reads.append(Read(msg.partition(), msg.offset(), msg.value()))
            positions[msg.partition()] = msg.offset() + 1
        return reads
    finally:
        consumer.close()


def leaders_and_isrs(bootstrap: str, topic: str):
    try:
        return partition_state(bootstrap, topic)
    except Exception:
        return None


def wait_for_full_isr(bootstrap: str, topic: str, brokers: int, timeout_s: float = 60) -> None:
    def full() -> bool:
        state = leaders_and_isrs(bootstrap, topic)
        return state is not None and all(leader >= 0 and len(isr) == brokers for leader, _, isr in state.values())

    wait_until("every partition has a leader and a full ISR", full, timeout_s)


def run_kill_rounds(cluster_factory, shards, seed: int, rounds: int) -> None:
    rng = random.Random(seed)
    brokers = cluster_factory(3, *FAULT_ARGS, shards=shards)
    bootstrap = ",".join(b.bootstrap for b in brokers)
    topic = f"history-{seed}"
    create_replicated(bootstrap, topic, 3, 3, {"min.insync.replicas": "2"})
    wait_for_full_isr(bootstrap, topic, 3)
    producers = [
        HistoryProducer(bootstrap, topic, "idempotent", True),
        HistoryProducer(bootstrap, topic, "plain", False),
    ]
    for p in producers:
        p.start()
    try:
        for round_ in range(rounds):
            time.sleep(1.0)
            if round_ % 2 == 1:
                # The metadata quorum's leader (the controller) this time.
                leader = wait_for_one_leader(brokers)
            else:
                state = partition_state(bootstrap, topic)
                leader = state[rng.randrange(3)][0]
            victim = next(b for b in brokers if b.node_id == leader)
            victim.kill9()
            others = ",".join(b.bootstrap for b in brokers if b is not victim)
            wait_until(
                f"round {round_}: partitions led by a live broker",
                lambda: (s := leaders_and_isrs(others, topic)) is not None
                and all(l >= 0 and l != leader for l, _, _ in s.values()),
            )
            time.sleep(1.0)
            victim.start()
            wait_for_full_isr(bootstrap, topic, 3)
    finally:
        for p in producers:
            p.stop()
    sends = [s for p in producers for s in p.sends]
    reads = read_everything(bootstrap, topic, 3)
    findings = check(sends, reads)
    print(f"history seed={seed} shards={shards}: {findings.summary()}")
    assert findings.acked > 0
    assert findings.ok(), findings


@pytest.mark.parametrize(
    "shards, seed",
    [(1, 1), (2, 2), ([1, 2, 3], 3)],
    ids=["1-shard", "2-shards", "unequal-shards"],
)
def test_kill_9_leaders_under_acks_all_load(cluster_factory, shards, seed):
    """kill -9 a partition leader, then the controller, then a partition
    leader again, under idempotent and plain acks=all load."""
    run_kill_rounds(cluster_factory, shards=shards, seed=seed, rounds=3)


def offsets_partition(group_id: str, partitions: int) -> int:
    """Kafka's partitionFor: Java's String.hashCode, made non-negative."""
    h = 0
    for c in group_id:
        h = (31 * h + ord(c)) & 0xFFFFFFFF
    return (h & 0x7FFFFFFF) % partitions


def test_group_commits_survive_a_coordinator_kill(cluster_factory):
    """__consumer_offsets replicates (offsets.topic.replication.factor 3):
    kill -9 the group's coordinator; the leader of its offsets partition
    moves, loads the group, and a new consumer resumes at the commits."""
    from confluent_kafka import Consumer

    brokers = cluster_factory(3, *FAULT_ARGS, "--offsets-topic-num-partitions", 3, shards=2)
    bootstrap = ",".join(b.bootstrap for b in brokers)
    create_replicated(bootstrap, "resumed", 2, 3, {"min.insync.replicas": "2"})
    records = make_records(400, seed=5)
    produce_confluent(bootstrap, "resumed", records)

    def consume(count: int, servers: str) -> list[bytes]:
        consumer = Consumer(
            {
                "bootstrap.servers": servers,
                "group.id": "survivor",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
            }
        )
        consumer.subscribe(["resumed"])
        values = []
        deadline = time.monotonic() + 60
        try:
            while len(values) < count and time.monotonic() < deadline:
                msg = consumer.poll(0.5)
                if msg is not None and msg.error() is None:
                    values.append(msg.key())
            consumer.commit(asynchronous=False)
        finally:
            consumer.close()
        return values

    first = consume(150, bootstrap)
    assert len(first) == 150
    coordinator = partition_state(bootstrap, "__consumer_offsets")[offsets_partition("survivor", 3)][0]
    victim = next(b for b in brokers if b.node_id == coordinator)
    victim.kill9()
    survivors = ",".join(b.bootstrap for b in brokers if b is not victim)
    rest = consume(250, survivors)
    # Nothing committed is read again, nothing is skipped (keys are unique
    # among these 400 records).
    assert len(rest) == 250
    assert set(first).isdisjoint(rest)
    assert sorted(first + rest) == sorted(r.key for r in records)


def test_former_leaders_of_an_idle_partition_rejoin_the_isr(cluster_factory):
    """A leader that started its epoch and wrote nothing in it holds that
    epoch at its log end. Killed and restarted as a follower, its fetches
    diverge on that epoch: it must drop it and rejoin the ISR, however many
    leaders in a row the partition loses while idle."""
    brokers = cluster_factory(3, *FAULT_ARGS)
    bootstrap = ",".join(b.bootstrap for b in brokers)
    create_replicated(bootstrap, "idle", 1, 3, {"min.insync.replicas": "2"})
    records = make_records(50, seed=7)
    produce_confluent(bootstrap, "idle", records)
    wait_for_full_isr(bootstrap, "idle", 3)
    for round_ in range(3):
        leader_id = partition_state(bootstrap, "idle")[0][0]
        leader = next(b for b in brokers if b.node_id == leader_id)
        leader.kill9()
        others = ",".join(b.bootstrap for b in brokers if b is not leader)
        wait_until(
            f"round {round_}: another leader",
            lambda: (s := leaders_and_isrs(others, "idle")) is not None and s[0][0] not in (-1, leader_id),
        )
        leader.start()
        wait_for_full_isr(bootstrap, "idle", 3)
    assert len(consume_confluent(bootstrap, "idle", range(1))[0]) == len(records)


def test_acks_all_needs_min_insync_replicas(cluster_factory):
    """With min.insync.replicas 3 and one of three brokers dead, acks=all is
    refused (NOT_ENOUGH_REPLICAS, nothing appended) while acks=1 still
    appends; a follower refuses produces (NOT_LEADER_OR_FOLLOWER)."""
    from helpers import API_PRODUCE, RawConnection, encode_record_batch, parse_produce_response, produce_request_body

    brokers = cluster_factory(3, *FAULT_ARGS)
    bootstrap = ",".join(b.bootstrap for b in brokers)
    create_replicated(bootstrap, "strict", 1, 3, {"min.insync.replicas": "3"})
    wait_for_full_isr(bootstrap, "strict", 3)
    leader_id = partition_state(bootstrap, "strict")[0][0]
    leader = next(b for b in brokers if b.node_id == leader_id)
    followers = [b for b in brokers if b is not leader]

    def produce(broker, acks: int) -> int:
        batch = encode_record_batch([(b"k", b"v", [])], base_timestamp=int(time.time() * 1000))
        with RawConnection(broker.bootstrap) as conn:
            body = produce_request_body(8, "strict", 0, batch, acks=acks, timeout_ms=5_000)
            return parse_produce_response(conn.request(API_PRODUCE, 8, body), 8)[0].error_code

    assert produce(leader, -1) == 0
    assert produce(followers[0], -1) == 6  # NOT_LEADER_OR_FOLLOWER
    followers[1].kill9()
    wait_until("the dead follower leaves the ISR", lambda: len(partition_state(bootstrap, "strict")[0][2]) == 2)
    assert produce(leader, -1) == 19  # NOT_ENOUGH_REPLICAS
    assert produce(leader, 1) == 0


def test_group_admin_answers_through_every_broker(cluster_factory):
    """List, describe and offsets of a group with a live member answer the
    same through each broker of three (the admin client finds the group's
    coordinator, the leader of its offsets partition, from any of them)."""
    from confluent_kafka import Consumer, ConsumerGroupTopicPartitions
    from confluent_kafka.admin import AdminClient

    brokers = cluster_factory(3, *FAULT_ARGS, shards=2)
    bootstrap = ",".join(b.bootstrap for b in brokers)
    create_replicated(bootstrap, "described", 2, 3, {})
    records = make_records(20, seed=9)
    produce_confluent(bootstrap, "described", records)
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "described-group", "auto.offset.reset": "earliest"})
    try:
        consumer.subscribe(["described"])
        got = 0
        deadline = time.monotonic() + 60
        while got < len(records) and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                got += 1
        assert got == len(records)
        consumer.commit(asynchronous=False)
        for broker in brokers:
            admin = AdminClient({"bootstrap.servers": broker.bootstrap})
            listed = admin.list_consumer_groups().result(timeout=30)
            assert "described-group" in [g.group_id for g in listed.valid], broker.node_id
            described = admin.describe_consumer_groups(["described-group"])["described-group"].result(timeout=30)
            assert len(described.members) == 1, broker.node_id
            offsets = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions("described-group")])
            committed = offsets["described-group"].result(timeout=30).topic_partitions
            assert sum(tp.offset for tp in committed) == len(records), broker.node_id
    finally:
        consumer.close()
