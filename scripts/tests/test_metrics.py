"""Issue 7: the metrics endpoint. Scrape /metrics while producing and check
that the counters move and the text parses as Prometheus exposition."""

from __future__ import annotations

import os
import urllib.request

from confluent_kafka import Producer
from prometheus_client.parser import text_string_to_metric_families

from conftest import free_port
from helpers import create_topic_confluent, unique_name


def scrape(port: int, path: str = "/metrics") -> tuple[int, str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
        return response.status, response.read().decode()


def sample_sum(text: str, family: str, **labels) -> float:
    total = 0.0
    for metric in text_string_to_metric_families(text):
        for sample in metric.samples:
            if sample.name == family and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def test_metrics_move_during_produce_and_parse(broker_factory):
    port = free_port()
    broker = broker_factory("--metrics", f"127.0.0.1:{port}")
    assert scrape(port, "/health") == (200, "ok\n")
    assert scrape(port, "/ready")[0] == 200
    topic = unique_name("metered")
    create_topic_confluent(broker.bootstrap, topic, 4)
    _, before = scrape(port)
    assert sample_sum(before, "gregor_produce_bytes_total", topic=topic) == 0

    producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 5, "acks": "all"})
    for i in range(20_000):
        producer.produce(topic, key=b"k%d" % i, value=b"v" * 100)
        if i % 5000 == 0:
            producer.poll(0)
    assert producer.flush(60) == 0

    _, after = scrape(port)
    families = {m.name for m in text_string_to_metric_families(after)}  # parses, or raises
    for family in (
        "gregor_produce_bytes",
        "gregor_produce_records",
        "gregor_request_latency_seconds",
        "gregor_fsync_latency_seconds",
        "gregor_connections",
        "gregor_log_end_offset",
        "gregor_log_size_bytes",
        "gregor_mesh_hops",
        "gregor_request_memory_bytes",
    ):
        assert family in families, f"{family} missing from /metrics"
    assert sample_sum(after, "gregor_produce_records_total", topic=topic) == 20_000
    assert sample_sum(after, "gregor_produce_bytes_total", topic=topic) > 20_000 * 100
    assert sample_sum(after, "gregor_log_end_offset", topic=topic) == 20_000
    assert sample_sum(after, "gregor_request_latency_seconds_count", api="Produce") > 0
    assert sample_sum(after, "gregor_fsync_latency_seconds_count") > 0


def test_metrics_off_and_taken_port_do_not_stop_the_broker(broker_factory):
    port = free_port()
    first = broker_factory("--metrics", f"127.0.0.1:{port}")
    # A second broker asking for the same metrics port still serves Kafka.
    second = broker_factory("--metrics", f"127.0.0.1:{port}")
    create_topic_confluent(second.bootstrap, unique_name("still-serving"), 1)
    assert "metrics endpoint unavailable" in second.log_text()
    off = broker_factory("--metrics", "off")
    create_topic_confluent(off.bootstrap, unique_name("no-metrics"), 1)
    # --metrics off: the only port the broker listens on is Kafka's.
    kafka_port = int(off.bootstrap.rsplit(":", 1)[1])
    assert listening_ports(off.pid) == {kafka_port}, "--metrics off still listens elsewhere"
    assert listening_ports(first.pid) == {int(first.bootstrap.rsplit(":", 1)[1]), port}
    assert scrape(port, "/health")[0] == 200  # still the first broker's
    assert first.is_running()


def listening_ports(pid: int) -> set[int]:
    """TCP ports process `pid` listens on, from /proc (no tools needed)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:["):-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            next(f)
            for line in f:
                fields = line.split()
                local, state, inode = fields[1], fields[3], fields[9]
                if state == "0A" and inode in inodes:  # 0A: LISTEN
                    ports.add(int(local.rsplit(":", 1)[1], 16))
    return ports
