"""Consumer groups with real clients: rebalances on leave (eager and
cooperative, confluent-kafka and kafka-python), committed offsets surviving
kill -9, eviction of a member that stops heartbeating, and the admin API
(list/describe groups, committed offsets, delete).

Every member here processes a polled batch completely and then commits it
synchronously (enable.auto.commit off), so a clean leave must redeliver
nothing: duplicates could only come from work that was processed but whose
commit did not succeed before the partition moved.

The coordinator applies group.initial.rebalance.delay.ms = 3000, so the first
join of a new group takes ~3 s. All waits are hang protection only.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections import Counter

import pytest
from confluent_kafka import (
    OFFSET_INVALID,
    Consumer,
    ConsumerGroupState,
    ConsumerGroupTopicPartitions,
    KafkaError,
    KafkaException,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient

from helpers import (
    create_topic_confluent,
    make_records,
    produce_confluent,
    unique_name,
    wait_until,
)

REBALANCE_PARTITIONS = 6
REBALANCE_RECORDS = 50_000
REBALANCE_FIRST_PART = 25_000  # produced before the members start; the rest during the leave
BACKGROUND_CHUNK = 2_500
BACKGROUND_PAUSE_S = 0.3
LEAVE_AFTER_BACKGROUND_ACKS = 5_000
SESSION_TIMEOUT_MS = 10_000
HEARTBEAT_INTERVAL_MS = 1_000
# librdkafka and kafka-python send max.poll.interval.ms as the JoinGroup
# rebalance timeout.
REBALANCE_TIMEOUT_MS = 30_000
EVICTION_SESSION_TIMEOUT_MS = 6_000  # group.min.session.timeout.ms is 6000
GROUP_WAIT_S = 60  # hang protection for a group to reach an expected assignment
CONSUME_WAIT_S = 120  # hang protection for a group to read everything
WORKER_STOP_S = 60  # hang protection for a member to close (LeaveGroup)

KINDS = ("confluent-eager", "confluent-cooperative", "kafka-python")


# ---------------------------------------------------------------------------
# Group members polled from their own threads
# ---------------------------------------------------------------------------


class GroupWorker(threading.Thread):
    """One group member, polled from its own thread so that it heartbeats and
    serves rebalances. It records every record it processes as (partition,
    offset, value) and commits each processed batch synchronously. stop()
    makes the thread close its consumer (a clean leave: LeaveGroup)."""

    kind = "?"

    def __init__(self, bootstrap: str, group: str, topic: str, name: str, session_timeout_ms: int = SESSION_TIMEOUT_MS):
        super().__init__(name=name, daemon=True)
        self.bootstrap = bootstrap
        self.group = group
        self.topic = topic
        self.session_timeout_ms = session_timeout_ms
        self.lock = threading.Lock()
        self.records: list[tuple[int, int, bytes | None]] = []
        self._assignment: frozenset[int] = frozenset()
        self.history: list[str] = []  # rebalance callbacks, for failure messages
        self.commit_errors: list[str] = []
        self.uncommitted: list[tuple[int, int]] = []  # processed, commit failed
        self.commits = 0
        self.error: str | None = None
        self.stop_event = threading.Event()
        self.closed = threading.Event()

    # -- read by the test thread --------------------------------------------

    def assigned(self) -> frozenset[int]:
        if self.error is not None:
            raise AssertionError(f"{self.name} failed:\n{self.error}")
        with self.lock:
            return self._assignment

    def record_count(self) -> int:
        with self.lock:
            return len(self.records)

    def summary(self) -> str:
        with self.lock:
            return (
                f"{self.name}: assigned {sorted(self._assignment)}, {len(self.records)} records, "
                f"{self.commits} commits, commit errors {self.commit_errors[:3]}, "
                f"history {self.history[-6:]}, error {self.error and self.error.splitlines()[-1]}"
            )

    def stop(self) -> None:
        self.stop_event.set()
        self.join(WORKER_STOP_S)
        assert not self.is_alive(), f"{self.name} did not close within {WORKER_STOP_S}s: {self.summary()}"

    # -- the member's own thread ---------------------------------------------

    def run(self) -> None:
        try:
            self.consume_loop()
        except BaseException:
            self.error = traceback.format_exc()
        finally:
            with self.lock:
                self._assignment = frozenset()
            self.closed.set()

    def consume_loop(self) -> None:
        raise NotImplementedError

    def _note(self, event: str) -> None:
        with self.lock:
            self.history.append(f"{time.monotonic():.1f} {event}")

    def _processed(self, batch: list[tuple[int, int, bytes | None]]) -> None:
        with self.lock:
            self.records.extend(batch)

    def _set_assignment(self, partitions) -> None:
        with self.lock:
            self._assignment = frozenset(partitions)

    def _commit_failed(self, offsets: dict[int, int], first: dict[int, int], err) -> None:
        with self.lock:
            self.commit_errors.append(f"{offsets}: {err}")
            for p, end in offsets.items():
                self.uncommitted.extend((p, o) for o in range(first[p], end))


class ConfluentWorker(GroupWorker):
    """confluent-kafka member; `cooperative` selects the cooperative-sticky
    assignor, where the rebalance callbacks must use incremental_assign and
    incremental_unassign (librdkafka's incremental rebalance protocol)."""

    def __init__(self, *args, cooperative: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.cooperative = cooperative
        self.kind = "confluent-cooperative" if cooperative else "confluent-eager"

    def conf(self) -> dict:
        return {
            "bootstrap.servers": self.bootstrap,
            "group.id": self.group,
            "client.id": self.name,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": self.session_timeout_ms,
            "heartbeat.interval.ms": HEARTBEAT_INTERVAL_MS,
            "max.poll.interval.ms": REBALANCE_TIMEOUT_MS,
            "partition.assignment.strategy": "cooperative-sticky" if self.cooperative else "range,roundrobin",
            "reconnect.backoff.max.ms": 1000,
        }

    def on_assign(self, consumer, partitions) -> None:
        self._note(f"assign {sorted(tp.partition for tp in partitions)}")
        # (consumer.assignment() is not called in callbacks: during close() it
        # raises "Broker handle destroyed".)
        if self.cooperative:
            consumer.incremental_assign(partitions)
            self._set_assignment(self.assigned() | {tp.partition for tp in partitions})
        else:
            consumer.assign(partitions)
            self._set_assignment(tp.partition for tp in partitions)

    def on_revoke(self, consumer, partitions) -> None:
        self._note(f"revoke {sorted(tp.partition for tp in partitions)}")
        # Everything processed is committed already (after each batch).
        if self.cooperative:
            consumer.incremental_unassign(partitions)
            self._set_assignment(self.assigned() - {tp.partition for tp in partitions})
        else:
            consumer.unassign()
            self._set_assignment(())

    def on_lost(self, consumer, partitions) -> None:
        self._note(f"LOST {sorted(tp.partition for tp in partitions)}")
        self.on_revoke(consumer, partitions)

    def consume_loop(self) -> None:
        consumer = Consumer(self.conf())
        try:
            consumer.subscribe([self.topic], on_assign=self.on_assign, on_revoke=self.on_revoke, on_lost=self.on_lost)
            while not self.stop_event.is_set():
                msgs = consumer.consume(num_messages=500, timeout=0.2)
                batch = []
                first: dict[int, int] = {}
                offsets: dict[int, int] = {}
                for m in msgs:
                    if m.error() is not None:
                        raise AssertionError(f"consumer error: {m.error()}")
                    batch.append((m.partition(), m.offset(), m.value()))
                    first.setdefault(m.partition(), m.offset())
                    offsets[m.partition()] = m.offset() + 1
                if batch:
                    self._processed(batch)
                    self._commit(consumer, offsets, first)
                self._set_assignment(tp.partition for tp in consumer.assignment())
        finally:
            self._note("close")
            consumer.close()

    def _commit(self, consumer, offsets: dict[int, int], first: dict[int, int]) -> None:
        tps = [TopicPartition(self.topic, p, o) for p, o in offsets.items()]
        try:
            result = consumer.commit(offsets=tps, asynchronous=False)
        except KafkaException as e:
            self._commit_failed(offsets, first, e)
            return
        failed = {tp.partition: tp.offset for tp in result if tp.error is not None}
        if failed:
            self._commit_failed(failed, first, [str(tp.error) for tp in result if tp.error is not None])
        with self.lock:
            self.commits += 1


class KafkaPythonWorker(GroupWorker):
    """kafka-python member (eager range/round-robin assignors)."""

    kind = "kafka-python"

    def consume_loop(self) -> None:
        from kafka import ConsumerRebalanceListener, KafkaConsumer
        from kafka import TopicPartition as KpTopicPartition
        from kafka.errors import CommitFailedError, RebalanceInProgressError
        from kafka.structs import OffsetAndMetadata

        worker = self

        class Listener(ConsumerRebalanceListener):
            def on_partitions_revoked(self, revoked):
                worker._note(f"revoke {sorted(tp.partition for tp in revoked)}")
                worker._set_assignment(())

            def on_partitions_assigned(self, assigned):
                worker._note(f"assign {sorted(tp.partition for tp in assigned)}")
                worker._set_assignment(tp.partition for tp in assigned)

        consumer = KafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=self.group,
            client_id=self.name,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=self.session_timeout_ms,
            heartbeat_interval_ms=HEARTBEAT_INTERVAL_MS,
            max_poll_interval_ms=REBALANCE_TIMEOUT_MS,
            fetch_max_wait_ms=100,
            request_timeout_ms=40_000,
            bootstrap_timeout_ms=10_000,
        )
        try:
            consumer.subscribe(topics=[self.topic], listener=Listener())
            while not self.stop_event.is_set():
                polled = consumer.poll(timeout_ms=200, max_records=500)
                batch = []
                first: dict[int, int] = {}
                offsets: dict[int, int] = {}
                for tp, recs in polled.items():
                    for r in recs:
                        batch.append((tp.partition, r.offset, r.value))
                        first.setdefault(tp.partition, r.offset)
                        offsets[tp.partition] = r.offset + 1
                if batch:
                    self._processed(batch)
                    try:
                        consumer.commit(
                            {KpTopicPartition(self.topic, p): OffsetAndMetadata(o, "", -1) for p, o in offsets.items()}
                        )
                        with self.lock:
                            self.commits += 1
                    except (CommitFailedError, RebalanceInProgressError) as e:
                        self._commit_failed(offsets, first, repr(e))
                self._set_assignment(tp.partition for tp in consumer.assignment())
        finally:
            self._note("close")
            consumer.close(autocommit=False)


def make_worker(kind: str, bootstrap: str, group: str, topic: str, name: str, **kwargs) -> GroupWorker:
    if kind == "kafka-python":
        return KafkaPythonWorker(bootstrap, group, topic, name, **kwargs)
    assert kind in ("confluent-eager", "confluent-cooperative"), kind
    return ConfluentWorker(bootstrap, group, topic, name, cooperative=kind == "confluent-cooperative", **kwargs)


def group_state(workers) -> str:
    return "\n  " + "\n  ".join(w.summary() for w in workers)


def wait_for_assignment(workers, partitions: int, sizes: list[int], timeout_s: float = GROUP_WAIT_S) -> float:
    """Wait until the members hold `sizes` partitions each, together all of
    them, each partition once. Returns the seconds waited."""
    t0 = time.monotonic()

    def balanced():
        held = [w.assigned() for w in workers]
        every = [p for a in held for p in a]
        return sorted(map(len, held)) == sorted(sizes) and sorted(every) == list(range(partitions))

    wait_until(balanced, timeout_s, f"assignment sizes {sizes}", state=lambda: group_state(workers))
    return time.monotonic() - t0


def consumed_counter(workers) -> Counter:
    seen: Counter = Counter()
    for w in workers:
        with w.lock:
            seen.update((p, o) for p, o, _ in w.records)
    return seen


def wait_consumed(workers, produced: dict[tuple[int, int], bytes | None]) -> None:
    def done():
        for w in workers:
            w.assigned()  # raises if the member failed
        return produced.keys() <= consumed_counter(workers).keys()

    wait_until(
        done,
        CONSUME_WAIT_S,
        f"the group to read all {len(produced)} records",
        state=lambda: f"{len(produced.keys() - consumed_counter(workers).keys())} missing" + group_state(workers),
        interval_s=0.5,
    )


def check_consumed(workers, produced: dict[tuple[int, int], bytes | None]) -> dict[tuple[int, int], int]:
    """Every produced record was processed at least once with the produced
    value, nothing else was; returns the duplicates {(partition, offset):
    extra deliveries} after printing them."""
    seen: Counter = Counter()
    for w in workers:
        for p, o, value in w.records:
            assert (p, o) in produced, f"{w.name} read ({p}, {o}), which was never produced"
            assert value == produced[(p, o)], f"{w.name} read ({p}, {o}) with a value that differs from the produced one"
            seen[(p, o)] += 1
    missing = sorted(produced.keys() - seen.keys())
    assert not missing, f"{len(missing)} records never consumed, first {missing[:10]}" + group_state(workers)
    duplicates = {k: n - 1 for k, n in sorted(seen.items()) if n > 1}
    uncommitted = {k for w in workers for k in w.uncommitted}
    print(
        f"consumed {sum(seen.values())} deliveries of {len(produced)} records; "
        f"{sum(duplicates.values())} duplicate deliveries of {len(duplicates)} records "
        f"({len(duplicates.keys() & uncommitted)} of them after a failed commit); first {list(duplicates)[:10]}"
    )
    for w in workers:
        print(f"  {w.summary()}")
    return duplicates


class ChunkProducer(threading.Thread):
    """Produces records in chunks with pauses, from a thread, so that records
    keep arriving while the group rebalances."""

    def __init__(self, bootstrap: str, topic: str, records, chunk: int, pause_s: float):
        super().__init__(name="chunk-producer", daemon=True)
        self.bootstrap, self.topic, self.records = bootstrap, topic, records
        self.chunk, self.pause_s = chunk, pause_s
        self.acks: list[tuple[int, int]] = []
        self.error: str | None = None

    def run(self) -> None:
        try:
            for start in range(0, len(self.records), self.chunk):
                self.acks.extend(produce_confluent(self.bootstrap, self.topic, self.records[start : start + self.chunk]))
                time.sleep(self.pause_s)
        except BaseException:
            self.error = traceback.format_exc()

    def acked(self) -> int:
        if self.error is not None:
            raise AssertionError(f"background producer failed:\n{self.error}")
        return len(self.acks)


# ---------------------------------------------------------------------------
# Rebalance on a clean leave
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_rebalance_on_leave_loses_nothing(broker, kind):
    bootstrap = broker.bootstrap
    topic, group = unique_name("grp-leave"), unique_name(f"g-{kind}")
    create_topic_confluent(bootstrap, topic, REBALANCE_PARTITIONS)
    records = make_records(REBALANCE_RECORDS, seed=11)
    first, rest = records[:REBALANCE_FIRST_PART], records[REBALANCE_FIRST_PART:]
    produced: dict[tuple[int, int], bytes | None] = {}
    produced.update(zip(produce_confluent(bootstrap, topic, first), (r.value for r in first)))

    workers = [make_worker(kind, bootstrap, group, topic, f"{kind}-{i}") for i in range(3)]
    for w in workers:
        w.start()
    try:
        waited = wait_for_assignment(workers, REBALANCE_PARTITIONS, [2, 2, 2])
        print(f"3 members hold 2 partitions each after {waited:.1f}s")
        wait_consumed(workers, produced)

        # The second half arrives while one member leaves.
        background = ChunkProducer(bootstrap, topic, rest, BACKGROUND_CHUNK, BACKGROUND_PAUSE_S)
        background.start()
        wait_until(lambda: background.acked() >= LEAVE_AFTER_BACKGROUND_ACKS, CONSUME_WAIT_S, "background acks")
        leaver, survivors = workers[0], workers[1:]
        leaver_held = leaver.assigned()
        t0 = time.monotonic()
        leaver.stop()  # consumer.close(): LeaveGroup
        waited = wait_for_assignment(survivors, REBALANCE_PARTITIONS, [3, 3], timeout_s=REBALANCE_TIMEOUT_MS / 1000)
        print(f"{leaver.name} (held {sorted(leaver_held)}) left; survivors hold 3 each {time.monotonic() - t0:.1f}s later")

        background.join(CONSUME_WAIT_S)
        assert not background.is_alive(), "background producer did not finish"
        background.acked()
        produced.update(zip(background.acks, (r.value for r in rest)))
        assert len(produced) == REBALANCE_RECORDS
        wait_consumed(workers, produced)
    finally:
        for w in workers:
            w.stop()

    for w in workers:
        assert w.error is None, f"{w.name} failed:\n{w.error}"
    duplicates = check_consumed(workers, produced)
    assert not duplicates, (
        f"{sum(duplicates.values())} records were delivered twice although every processed batch was "
        f"committed synchronously before the clean leave; first {list(duplicates.items())[:10]}" + group_state(workers)
    )


# ---------------------------------------------------------------------------
# Committed offsets survive kill -9
# ---------------------------------------------------------------------------


def group_consumer_conf(bootstrap: str, group: str, **extra) -> dict:
    conf = {
        "bootstrap.servers": bootstrap,
        "group.id": group,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": SESSION_TIMEOUT_MS,
        "heartbeat.interval.ms": HEARTBEAT_INTERVAL_MS,
        "reconnect.backoff.max.ms": 1000,
        # The broker is down for a while on purpose: no page of "Connection refused".
        "log_level": 2,
    }
    conf.update(extra)
    return conf


def consume_until(consumer, done, what: str, timeout_s: float = CONSUME_WAIT_S) -> list:
    """consume() until done(messages so far) is true; returns the messages."""
    got = []
    deadline = time.monotonic() + timeout_s
    while not done(got):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}; {len(got)} records read")
        for m in consumer.consume(num_messages=1000, timeout=0.5):
            if m.error() is not None:
                raise AssertionError(f"consumer error: {m.error()}")
            got.append(m)
    return got


def test_committed_offsets_survive_kill9(broker):
    partitions = 4
    topic, group = unique_name("grp-kill"), unique_name("g-kill")
    create_topic_confluent(broker.bootstrap, topic, partitions)
    records = make_records(4_000, seed=5)
    acks = produce_confluent(broker.bootstrap, topic, records)
    ends = Counter(p for p, _ in acks)
    assert set(ends) == set(range(partitions))
    tps = [TopicPartition(topic, p) for p in range(partitions)]

    # Two commits; the second one (mid-partition, different per partition)
    # is what must survive.
    commits = [{p: ends[p] // 4 for p in range(partitions)}, {p: ends[p] // 2 + p for p in range(partitions)}]
    committed = commits[-1]
    first = Consumer(group_consumer_conf(broker.bootstrap, group, **{"client.id": "before-crash"}))
    try:
        first.subscribe([topic])
        consume_until(first, lambda got: len(got) >= len(records), "the first member to read everything")
        for commit in commits:
            result = first.commit(offsets=[TopicPartition(topic, p, o) for p, o in commit.items()], asynchronous=False)
            assert all(tp.error is None for tp in result), f"commit errors: {result}"
        assert {tp.partition: tp.offset for tp in first.committed(tps, timeout=30)} == committed

        # The member is still connected when the broker dies, as in a real crash.
        broker.kill9()
        broker.restart()
    finally:
        first.close()  # the crashed-away member leaves (or is unknown after the restart)

    second = Consumer(group_consumer_conf(broker.bootstrap, group, **{"client.id": "after-crash"}))
    try:
        got = second.committed(tps, timeout=30)
        assert {tp.partition: tp.offset for tp in got} == committed, f"committed() after kill -9: {got}"
        second.subscribe([topic])
        msgs = consume_until(
            second,
            lambda got: {m.partition() for m in got} == set(range(partitions)),
            "the new member to read from every partition",
        )
        first_offsets = {}
        for m in msgs:
            first_offsets.setdefault(m.partition(), m.offset())
        assert first_offsets == committed, (
            f"after kill -9 the new member started at {first_offsets}, committed offsets were {committed}"
        )
        assert {tp.partition: tp.offset for tp in second.committed(tps, timeout=30)} == committed
    finally:
        second.close()

    # A second client library reads the same committed offsets.
    from kafka import KafkaConsumer
    from kafka import TopicPartition as KpTopicPartition

    kp = KafkaConsumer(
        bootstrap_servers=broker.bootstrap, group_id=group, enable_auto_commit=False, bootstrap_timeout_ms=10_000
    )
    try:
        assert {p: kp.committed(KpTopicPartition(topic, p)) for p in range(partitions)} == committed
    finally:
        kp.close(autocommit=False)


# ---------------------------------------------------------------------------
# Eviction of a member that stops heartbeating
# ---------------------------------------------------------------------------

MEMBER_SCRIPT = r"""
import json, sys
from confluent_kafka import Consumer
bootstrap, group, topic, session_ms = sys.argv[1:5]
c = Consumer({
    "bootstrap.servers": bootstrap, "group.id": group, "client.id": "doomed",
    "enable.auto.commit": False, "auto.offset.reset": "earliest",
    "session.timeout.ms": int(session_ms), "heartbeat.interval.ms": 1000,
})
c.subscribe([topic])
last = None
while True:
    c.consume(num_messages=100, timeout=0.2)
    held = sorted(tp.partition for tp in c.assignment())
    if held != last:
        print(json.dumps(held), flush=True)
        last = held
"""


class MemberProcess:
    """A confluent-kafka group member in its own process; reports its
    assignment as JSON lines on stdout."""

    def __init__(self, tmp_path, bootstrap: str, group: str, topic: str, session_timeout_ms: int):
        script = tmp_path / "member.py"
        script.write_text(MEMBER_SCRIPT)
        self.stderr_path = tmp_path / "member.stderr"
        with open(self.stderr_path, "wb") as stderr:
            self.proc = subprocess.Popen(
                [sys.executable, str(script), bootstrap, group, topic, str(session_timeout_ms)],
                stdout=subprocess.PIPE,
                stderr=stderr,
                start_new_session=True,
            )
        self.assignment: list[int] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.assignment = json.loads(line)

    def assigned(self) -> frozenset[int]:
        return frozenset(self.assignment)

    def summary(self) -> str:
        stderr = self.stderr_path.read_text(errors="replace")[-2000:]
        return f"member process {self.proc.pid}: assigned {self.assignment}, exit {self.proc.poll()}, stderr:\n{stderr}"

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)
        self.reader.join(10)
        self.proc.stdout.close()


@pytest.mark.parametrize("sig", ["SIGSTOP", "SIGKILL"])
def test_silent_member_is_evicted(broker, tmp_path, sig):
    partitions = 4
    bootstrap = broker.bootstrap
    topic, group = unique_name("grp-evict"), unique_name("g-evict")
    create_topic_confluent(bootstrap, topic, partitions)

    doomed = MemberProcess(tmp_path, bootstrap, group, topic, EVICTION_SESSION_TIMEOUT_MS)
    survivor = ConfluentWorker(bootstrap, group, topic, "survivor", session_timeout_ms=EVICTION_SESSION_TIMEOUT_MS)
    survivor.start()
    try:
        wait_for_assignment([doomed, survivor], partitions, [2, 2])
        os.kill(doomed.proc.pid, getattr(signal, sig))
        t0 = time.monotonic()
        # The session timeout is 6 s; 60 s is hang protection only.
        wait_until(
            lambda: survivor.assigned() == frozenset(range(partitions)),
            GROUP_WAIT_S,
            f"the survivor to take over all partitions after {sig} of the other member",
            state=lambda: group_state([survivor]) + "\n  " + doomed.summary(),
        )
        print(f"after {sig}, the survivor held every partition {time.monotonic() - t0:.1f}s later")

        # The survivor really reads the moved partitions.
        records = make_records(400, seed=3)
        acks = produce_confluent(bootstrap, topic, records)
        produced = dict(zip(acks, (r.value for r in records)))
        wait_consumed([survivor], produced)

        admin = AdminClient({"bootstrap.servers": bootstrap})  # must outlive its futures
        desc = admin.describe_consumer_groups([group], request_timeout=30)[group].result(timeout=60)
        assert desc.state == ConsumerGroupState.STABLE, desc
        assert [m.client_id for m in desc.members] == ["survivor"], desc.members
    finally:
        doomed.kill()
        survivor.stop()
    assert survivor.error is None, survivor.error


# ---------------------------------------------------------------------------
# Admin API
# ---------------------------------------------------------------------------


def listed_groups(admin: AdminClient, states=None) -> dict[str, object]:
    kwargs = {"request_timeout": 30}
    if states is not None:
        kwargs["states"] = states
    result = admin.list_consumer_groups(**kwargs).result(timeout=60)
    assert not result.errors, f"list_consumer_groups errors: {result.errors}"
    return {g.group_id: g for g in result.valid}


def test_admin_groups(broker):
    partitions = 4
    bootstrap = broker.bootstrap
    admin = AdminClient({"bootstrap.servers": bootstrap})
    topic, group = unique_name("grp-admin"), unique_name("g-admin")
    create_topic_confluent(bootstrap, topic, partitions)
    records = make_records(1_000, seed=9)
    acks = produce_confluent(bootstrap, topic, records)
    produced = dict(zip(acks, (r.value for r in records)))
    ends = Counter(p for p, _ in acks)

    workers = [ConfluentWorker(bootstrap, group, topic, f"admin-{i}") for i in range(2)]
    for w in workers:
        w.start()
    try:
        wait_for_assignment(workers, partitions, [2, 2])
        wait_consumed(workers, produced)  # each batch is committed before it counts as read

        listed = listed_groups(admin)
        assert group in listed, f"{group} not in {sorted(listed)}"
        assert listed[group].is_simple_consumer_group is False
        assert listed[group].state == ConsumerGroupState.STABLE, listed[group]
        assert group in listed_groups(admin, states={ConsumerGroupState.STABLE})
        assert group not in listed_groups(admin, states={ConsumerGroupState.EMPTY})

        desc = admin.describe_consumer_groups([group], request_timeout=30)[group].result(timeout=60)
        assert desc.group_id == group
        assert desc.state == ConsumerGroupState.STABLE, desc
        assert desc.is_simple_consumer_group is False
        assert desc.partition_assignor in ("range", "roundrobin"), desc.partition_assignor
        assert sorted(m.client_id for m in desc.members) == ["admin-0", "admin-1"], desc.members
        assert len({m.member_id for m in desc.members}) == 2
        by_client = {m.client_id: sorted(tp.partition for tp in m.assignment.topic_partitions) for m in desc.members}
        for w in workers:
            assert by_client[w.name] == sorted(w.assigned()), f"describe says {by_client}, members hold {group_state(workers)}"
        assert all(tp.topic == topic for m in desc.members for tp in m.assignment.topic_partitions)
        assert desc.coordinator is not None and desc.coordinator.id == 0, desc.coordinator

        offsets = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)])[group].result(timeout=60)
        assert offsets.group_id == group
        got = {(tp.topic, tp.partition): tp.offset for tp in offsets.topic_partitions}
        assert got == {(topic, p): ends[p] for p in range(partitions)}, f"committed offsets {got}"
        assert all(tp.error is None for tp in offsets.topic_partitions)

        # Deleting a group with members fails with NON_EMPTY_GROUP (68).
        with pytest.raises(KafkaException) as excinfo:
            admin.delete_consumer_groups([group], request_timeout=30)[group].result(timeout=60)
        assert excinfo.value.args[0].code() == KafkaError.NON_EMPTY_GROUP, excinfo.value
    finally:
        for w in workers:
            w.stop()
    for w in workers:
        assert w.error is None, w.error

    # Both members left: the group is Empty but keeps its offsets.
    listed = listed_groups(admin)
    assert listed[group].state == ConsumerGroupState.EMPTY, listed[group]
    assert group in listed_groups(admin, states={ConsumerGroupState.EMPTY})
    desc = admin.describe_consumer_groups([group], request_timeout=30)[group].result(timeout=60)
    assert desc.state == ConsumerGroupState.EMPTY and not desc.members, desc
    offsets = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)])[group].result(timeout=60)
    assert {tp.partition: tp.offset for tp in offsets.topic_partitions} == {p: ends[p] for p in range(partitions)}

    # Deleting the empty group works; its offsets go with it.
    admin.delete_consumer_groups([group], request_timeout=30)[group].result(timeout=60)
    assert group not in listed_groups(admin)
    offsets = admin.list_consumer_group_offsets(
        [ConsumerGroupTopicPartitions(group, [TopicPartition(topic, p) for p in range(partitions)])]
    )[group].result(timeout=60)
    assert all(tp.offset == OFFSET_INVALID for tp in offsets.topic_partitions), offsets.topic_partitions
