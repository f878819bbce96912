"""The metadata quorum on one node: cluster metadata lives in a Raft log
(`__metadata/quorum.log`), a lone voter elects itself at once, metadata
survives restarts and kill -9, and a data dir from before the quorum keeps
its topics and records."""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path

from confluent_kafka.admin import AdminClient, NewTopic

from conftest import free_port
from helpers import consume_confluent, make_records, produce_confluent, verify_log, watermarks

FIXTURES = Path(__file__).parent / "fixtures"


def topic_partitions(bootstrap: str) -> dict[str, int]:
    md = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10)
    return {name: len(t.partitions) for name, t in md.topics.items() if t.error is None}


def create(bootstrap: str, name: str, partitions: int, timeout_s: float = 30) -> None:
    """CreateTopics, retried while the quorum has no leader (NOT_CONTROLLER
    is retriable; clients retry it too)."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            for future in admin.create_topics([NewTopic(name, partitions, 1)]).values():
                future.result(timeout=15)
            return
        except Exception as e:  # confluent wraps the KafkaError
            if "NOT_CONTROLLER" not in str(e) or time.monotonic() > deadline:
                raise


LEADER_LINE = re.compile(r"metadata quorum leader term=(\d+) leader=Some\((\d+)\)")


def quorum_leader(broker) -> tuple[int, int] | None:
    """(term, leader) as this broker last logged it."""
    found = LEADER_LINE.findall(broker.log_since_last_start())
    return (int(found[-1][0]), int(found[-1][1])) if found else None


def wait_for_one_leader(brokers, timeout_s: float = 20, newer_than: int = 0) -> int:
    """The node every broker names as leader of one term above `newer_than`."""
    deadline = time.monotonic() + timeout_s
    while True:
        seen = {quorum_leader(b) for b in brokers}
        if len(seen) == 1 and None not in seen and next(iter(seen))[0] > newer_than:
            return next(iter(seen))[1]
        if time.monotonic() > deadline:
            raise AssertionError(f"no single quorum leader: {seen}")
        time.sleep(0.05)


def wait_for_topic(broker, name: str, partitions: int, timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while topic_partitions(broker.bootstrap).get(name) != partitions:
        if time.monotonic() > deadline:
            raise AssertionError(
                f"{broker.bootstrap} does not list {name} with {partitions} partitions: "
                f"{topic_partitions(broker.bootstrap)}\n{broker.log_tail()}"
            )
        time.sleep(0.1)


def test_metadata_is_a_raft_log_that_survives_kill_9(broker):
    create(broker.bootstrap, "q1", 3)
    quorum_log = broker.data_dir / "__metadata" / "quorum.log"
    assert quorum_log.is_file()
    assert not (broker.data_dir / "__metadata" / "metadata.snapshot").exists()
    # The first start commits the bootstrap entry; the node then elects
    # itself in a later term.
    assert "metadata quorum leader term=2 leader=Some(0) this_node=0" in broker.log_text()
    for round in range(2):
        broker.kill9()
        broker.start()
        assert topic_partitions(broker.bootstrap).get("q1") == 3, broker.log_tail()
        # Each start is a new election in a later term.
        assert f"metadata quorum leader term={round + 3}" in broker.log_text()
    create(broker.bootstrap, "q2", 2)
    broker.restart()
    topics = topic_partitions(broker.bootstrap)
    assert topics.get("q1") == 3 and topics.get("q2") == 2, topics


def test_data_dir_from_before_the_quorum_keeps_its_topics_and_records(broker_factory):
    broker = broker_factory(shards=1, start=False)
    shutil.copytree(FIXTURES / "data-dir-before-quorum", broker.data_dir)
    broker.start()
    assert "moved the single-node metadata into the quorum log" in broker.log_text()
    assert not (broker.data_dir / "__metadata" / "metadata.log").exists()
    assert topic_partitions(broker.bootstrap).get("before-quorum") == 2
    got = consume_confluent(broker.bootstrap, "before-quorum", [0, 1])
    for partition in (0, 1):
        assert [(r.key, r.value) for r in got[partition]] == [
            (b"k%d" % i, b"v%d" % i) for i in range(partition, 6, 2)
        ]
    # Writes go on at the next offsets, and the migrated metadata (with its
    # topic config) survives a restart from the quorum log alone.
    produce_confluent(broker.bootstrap, "before-quorum", make_records(4, seed=5), partitions=[0] * 4)
    broker.restart()
    assert "moved the single-node metadata" not in broker.log_since_last_start()
    assert watermarks(broker.bootstrap, "before-quorum", 0) == (0, 7)
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    from confluent_kafka.admin import ConfigResource

    resource = ConfigResource(ConfigResource.Type.TOPIC, "before-quorum")
    configs = admin.describe_configs([resource])[resource].result(timeout=10)
    assert configs["retention.ms"].value == "-1"


def cli_quorum(gregor_bin, bootstrap: str) -> dict:
    """`gregor cluster quorum --format json` (DescribeQuorum)."""
    import json
    import subprocess

    out = subprocess.run(
        [str(gregor_bin), "-b", bootstrap, "cluster", "quorum", "--format", "json"],
        capture_output=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr.decode()
    return json.loads(out.stdout)


def test_three_voters_agree_on_metadata_through_a_leader_failover(cluster_factory, gregor_bin):
    brokers = cluster_factory(3)
    leader = wait_for_one_leader(brokers)
    # DescribeQuorum, asked of any broker, answers from the leader.
    wait_until(
        "every voter caught up",
        lambda: all(v["lag"] == 0 for v in cli_quorum(gregor_bin, brokers[0].bootstrap)["voters"]),
    )
    quorum = cli_quorum(gregor_bin, brokers[2].bootstrap)
    assert quorum["leader"] == leader and [v["id"] for v in quorum["voters"]] == [1, 2, 3], quorum
    by_id = {b.node_id: b for b in brokers}
    # A follower forwards the admin op to the leader's controller.
    follower = next(b for b in brokers if b.node_id != leader)
    create(follower.bootstrap, "agreed", 3)
    for b in brokers:
        wait_for_topic(b, "agreed", 3)

    # kill -9 the leader: the other two elect one of them, in a later term,
    # and keep taking metadata changes.
    term = quorum_leader(by_id[leader])[0]
    by_id[leader].kill9()
    survivors = [b for b in brokers if b.node_id != leader]
    new_leader = wait_for_one_leader(survivors, newer_than=term)
    assert new_leader != leader
    create(survivors[0].bootstrap, "after-failover", 2)
    for b in survivors:
        wait_for_topic(b, "after-failover", 2)

    # The old leader comes back as a follower and catches up from the log.
    by_id[leader].start()
    wait_for_topic(by_id[leader], "after-failover", 2)
    wait_for_topic(by_id[leader], "agreed", 3)


def partition_leaders(bootstrap: str, topic: str) -> dict[int, int]:
    md = AdminClient({"bootstrap.servers": bootstrap}).list_topics(topic, timeout=10)
    return {p.id: p.leader for p in md.topics[topic].partitions.values()}


def live_broker_ids(bootstrap: str) -> set[int]:
    md = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10)
    return set(md.brokers)


def wait_until(what: str, check, timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        time.sleep(0.1)


def test_partitions_spread_over_brokers_and_a_dead_broker_is_fenced(cluster_factory):
    brokers = cluster_factory(
        3, "--broker-heartbeat-interval-ms", 100, "--broker-session-timeout-ms", 1000
    )
    bootstrap = ",".join(b.bootstrap for b in brokers)
    assert live_broker_ids(bootstrap) == {1, 2, 3}
    create(brokers[0].bootstrap, "spread", 6)
    leaders = partition_leaders(bootstrap, "spread")
    assert sorted(leaders.values()) == [1, 1, 2, 2, 3, 3], leaders
    # Default clients find each partition's leader and produce and read there.
    records = make_records(600, seed=3)
    acks = produce_confluent(bootstrap, "spread", records)
    verify_log(records, acks, consume_confluent(bootstrap, "spread", range(6)), 6)

    # kill -9 broker 3: the quorum fences it once its session expires; its
    # partitions (one replica each) have no leader until it returns.
    victim = brokers[2]
    victim.kill9()
    survivors = ",".join(b.bootstrap for b in brokers[:2])
    wait_until("broker 3 is fenced", lambda: live_broker_ids(survivors) == {1, 2})
    orphaned = {p for p, leader in leaders.items() if leader == 3}
    # A shard applies an entry's records one by one (FenceBroker, then each
    # PartitionChange), so a Metadata answer may fall between them: wait.
    wait_until(
        "broker 3's partitions have no leader",
        lambda: {p for p, leader in partition_leaders(survivors, "spread").items() if leader == -1} == orphaned,
    )
    assert {p for p, leader in partition_leaders(survivors, "spread").items() if leader == -1} == orphaned

    # Back, it registers again, is unfenced and leads its partitions again
    # with every record it had.
    victim.start()
    wait_until("broker 3 leads again", lambda: partition_leaders(bootstrap, "spread") == leaders)
    verify_log(records, acks, consume_confluent(bootstrap, "spread", range(6)), 6)


def test_a_consumer_group_works_across_brokers(cluster_factory):
    """The cluster makes __consumer_offsets on the first FindCoordinator; the
    group's coordinator is the leader of its offsets partition, wherever it
    is; a default confluent consumer joins, reads everything, commits, and a
    second one in the group resumes after the commits."""
    from confluent_kafka import Consumer

    brokers = cluster_factory(3, "--offsets-topic-num-partitions", 6)
    bootstrap = ",".join(b.bootstrap for b in brokers)
    create(brokers[1].bootstrap, "grouped", 3)
    records = make_records(300, seed=11)
    produce_confluent(bootstrap, "grouped", records)

    def consume_in_group(expected: int) -> int:
        consumer = Consumer(
            {"bootstrap.servers": bootstrap, "group.id": "cluster-group", "auto.offset.reset": "earliest"}
        )
        consumer.subscribe(["grouped"])
        got = 0
        deadline = time.monotonic() + 30
        try:
            while got < expected and time.monotonic() < deadline:
                msg = consumer.poll(0.5)
                if msg is not None and msg.error() is None:
                    got += 1
            # Nothing beyond what was expected turns up.
            for _ in range(3):
                msg = consumer.poll(0.3)
                if msg is not None and msg.error() is None:
                    got += 1
            consumer.commit(asynchronous=False)
        finally:
            consumer.close()
        return got

    assert consume_in_group(300) == 300
    leaders = set(partition_leaders(bootstrap, "__consumer_offsets").values())
    assert leaders == {1, 2, 3}, leaders
    extra = make_records(30, seed=12)
    produce_confluent(bootstrap, "grouped", extra)
    assert consume_in_group(30) == 30


def test_gregor_dev_runs_a_local_cluster_until_ctrl_c(gregor_bin, tmp_path):
    import signal
    import subprocess

    # Kafka ports base, base+100, base+200; controllers +1; replica fetches
    # +10; metrics +552: a base whose ports are all free now, below the
    # kernel's ephemeral range so no client connection takes one meanwhile.
    offsets = tuple(100 * i + offset for i in range(3) for offset in (0, 1, 10, 552))
    base = free_port(offsets)
    dev = subprocess.Popen(
        [str(gregor_bin), "dev", "--brokers", "3", "--port", str(base), "--dir", str(tmp_path / "dev")],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    bootstrap = ",".join(f"127.0.0.1:{base + 100 * i}" for i in range(3))
    def logs() -> str:
        return "\n".join(
            f"--- node {n}:\n" + (tmp_path / "dev" / f"node-{n}.log").read_text()[-3000:]
            for n in (1, 2, 3)
            if (tmp_path / "dev" / f"node-{n}.log").exists()
        )

    try:
        try:
            wait_until("3 brokers serve", lambda: _quietly(lambda: live_broker_ids(bootstrap)) == {1, 2, 3}, 30)
        except AssertionError as e:
            raise AssertionError(f"{e}\n{logs()}") from None
        create(f"127.0.0.1:{base}", "dev-topic", 3)
        records = make_records(90, seed=4)
        acks = produce_confluent(bootstrap, "dev-topic", records)
        verify_log(records, acks, consume_confluent(bootstrap, "dev-topic", range(3)), 3)
    finally:
        dev.send_signal(signal.SIGINT)
        out, _ = dev.communicate(timeout=30)
    assert dev.returncode == 0, out.decode()
    for node in (1, 2, 3):
        log = (tmp_path / "dev" / f"node-{node}.log").read_text()
        assert "clean shutdown" in log, log[-2000:]


def _quietly(check):
    try:
        return check()
    except Exception:
        return None
