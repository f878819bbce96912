"""Kafka's newer client-facing admin APIs through kafka-python 3's admin
client: DescribeTopicPartitions with its cursor, ListConfigResources,
DescribeConfigs of BROKER and BROKER_LOGGER, CreatePartitions and
CreateTopics with manual assignments, DescribeLogDirs/AlterReplicaLogDirs on
the one log dir, and client telemetry as a broker without subscriptions."""

from __future__ import annotations

import pytest

from helpers import create_topic_confluent


@pytest.fixture
def admin(broker):
    from kafka.admin import KafkaAdminClient

    client = KafkaAdminClient(bootstrap_servers=broker.bootstrap, bootstrap_timeout_ms=10_000)
    yield client
    client.close()


def test_describe_topic_partitions_pages_with_a_cursor(broker, admin):
    create_topic_confluent(broker.bootstrap, "dtp-a", 5)
    create_topic_confluent(broker.bootstrap, "dtp-b", 2)
    seen = []
    cursor = None
    pages = 0
    while True:
        page = admin.describe_topic_partitions(["dtp-b", "dtp-a"], response_partition_limit=3, cursor=cursor)
        pages += 1
        for topic in page["topics"]:
            assert topic["error_code"] == 0, topic
            for p in topic["partitions"]:
                assert p["leader_id"] == 0 and p["replica_nodes"] == [0] and p["isr_nodes"] == [0]
                seen.append((topic["name"], p["partition_index"]))
        cursor = page["next_cursor"]
        if cursor is None:
            break
        assert pages < 10, "the cursor does not advance"
    # Sorted by name, every partition once, three per page.
    assert seen == [("dtp-a", i) for i in range(5)] + [("dtp-b", i) for i in range(2)]
    assert pages == 3
    missing = admin.describe_topic_partitions(["no-such-topic"])
    assert missing["topics"][0]["error_code"] == 3  # UNKNOWN_TOPIC_OR_PARTITION


def test_list_config_resources_and_broker_configs(broker, admin):
    from kafka.admin import ConfigResource, ConfigResourceType

    create_topic_confluent(broker.bootstrap, "lcr-topic", 1)
    listed = admin.list_config_resources()
    assert "lcr-topic" in listed["topic"]
    assert listed["broker"] == ["0"]
    assert listed["broker_logger"] == ["0"]
    described = admin.describe_configs([ConfigResource(ConfigResourceType.BROKER, "0")], config_filter="all")
    names = {name: c["value"] for name, c in described["broker"]["0"].items()}
    assert names["advertised.listeners"] == f"PLAINTEXT://{broker.bootstrap}"
    assert names["node.id"] == "0"
    assert names["log.retention.ms"] == "604800000"
    loggers = admin.describe_configs([ConfigResource(ConfigResourceType.BROKER_LOGGER, "0")], config_filter="all")
    (resource,) = loggers.values()
    root = resource["0"]["root"]["value"]
    assert root in {"TRACE", "DEBUG", "INFO", "WARN", "ERROR"}, root


def test_manual_assignments_name_the_broker(broker, admin):
    from kafka.admin import NewPartitions, NewTopic
    from kafka.errors import InvalidReplicationAssignmentError as InvalidReplicaAssignmentError

    admin.create_topics([NewTopic("manual", num_partitions=-1, replication_factor=-1,
                                  replica_assignments={0: [0], 1: [0]})])
    admin.create_partitions({"manual": NewPartitions(total_count=4, new_assignments=[[0], [0]])})
    described = admin.describe_topic_partitions(["manual"])
    assert len(described["topics"][0]["partitions"]) == 4
    with pytest.raises(InvalidReplicaAssignmentError):
        admin.create_partitions({"manual": NewPartitions(total_count=5, new_assignments=[[7]])})
    with pytest.raises(InvalidReplicaAssignmentError):
        admin.create_partitions({"manual": NewPartitions(total_count=6, new_assignments=[[0]])})


def test_log_dirs_describe_and_alter(broker, admin):
    from kafka import TopicPartitionReplica
    from kafka.errors import KafkaStorageError, LogDirNotFoundError, NoError

    create_topic_confluent(broker.bootstrap, "logdirs", 2)
    (described,) = admin.describe_log_dirs()
    assert described["broker"] == 0
    (entry,) = described["log_dirs"]
    log_dir = entry["log_dir"]
    sizes = {(t["name"], p["partition_index"]) for t in entry["topics"] for p in t["partitions"]}
    assert {("logdirs", 0), ("logdirs", 1)} <= sizes
    moved = admin.alter_replica_log_dirs({TopicPartitionReplica("logdirs", 0, 0): log_dir})
    assert list(moved.values()) == [NoError]
    elsewhere = admin.alter_replica_log_dirs({TopicPartitionReplica("logdirs", 1, 0): "/nowhere"})
    assert list(elsewhere.values()) in ([LogDirNotFoundError], [KafkaStorageError])


def test_telemetry_without_subscriptions(broker_factory):
    """librdkafka asks for telemetry subscriptions by default (KIP-714); the
    broker answers with none, so the client pushes nothing and works as
    usual. The request metrics show the question was asked and answered."""
    import urllib.request

    from confluent_kafka import Producer

    from conftest import free_port

    port = free_port()
    broker = broker_factory("--metrics", f"127.0.0.1:{port}")
    producer = Producer({"bootstrap.servers": broker.bootstrap})
    producer.produce("telemetry", value=b"v")
    assert producer.flush(30) == 0
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    asked = [line for line in text.splitlines() if 'api="GetTelemetrySubscriptions"' in line and "_count" in line]
    assert asked and float(asked[0].rsplit(" ", 1)[1]) >= 1, "librdkafka did not ask for telemetry"
    pushed = [line for line in text.splitlines() if 'api="PushTelemetry"' in line and "_count" in line]
    assert not pushed or float(pushed[0].rsplit(" ", 1)[1]) == 0, "a client pushed metrics nobody asked for"
