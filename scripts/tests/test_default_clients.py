"""Every client with its default settings: kcat, confluent-kafka, kafka-python
3 (idempotent by default), aiokafka and kafkajs each produce to a 3-partition
topic and read it back as a consumer-group member; librdkafka and kafkajs
once more with idempotence switched on. Each record is read exactly once,
at the offset its acknowledgement named where the client reports one."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest

from helpers import create_topic_confluent, run_kcat

COUNT = 300
PARTITIONS = 3
CONSUME_TIMEOUT_S = 60
JS_DIR = Path(__file__).resolve().parents[1] / "js"


def fresh(prefix: str) -> tuple[str, str]:
    tag = uuid.uuid4().hex[:8]
    return f"{prefix}-{tag}", f"{prefix}-group-{tag}"


def assert_exactly_once(values: list[str]) -> None:
    counts = Counter(values)
    dup = {v: c for v, c in counts.items() if c > 1}
    assert not dup, f"read more than once: {dict(list(dup.items())[:5])}"
    assert sorted(map(int, counts)) == list(range(COUNT)), f"read {len(counts)} of {COUNT} distinct records"


def confluent_roundtrip(bootstrap: str, extra: dict) -> None:
    from confluent_kafka import Consumer, Producer

    topic, group = fresh("defaults-confluent")
    create_topic_confluent(bootstrap, topic, PARTITIONS)
    producer = Producer({"bootstrap.servers": bootstrap, **extra})
    acked = {}

    def on_delivery(err, msg):
        assert err is None, err
        acked[msg.value().decode()] = (msg.partition(), msg.offset())

    for i in range(COUNT):
        producer.produce(topic, key=str(i % 7).encode(), value=str(i).encode(), on_delivery=on_delivery)
        producer.poll(0)
    assert producer.flush(30) == 0
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "auto.offset.reset": "earliest"})
    consumer.subscribe([topic])
    read = []
    deadline = time.monotonic() + CONSUME_TIMEOUT_S
    try:
        while len(read) < COUNT and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                continue
            value = msg.value().decode()
            assert acked[value] == (msg.partition(), msg.offset())
            read.append(value)
    finally:
        consumer.close()
    assert_exactly_once(read)


def test_confluent_kafka_defaults(broker):
    confluent_roundtrip(broker.bootstrap, {})


def test_confluent_kafka_idempotent(broker):
    confluent_roundtrip(broker.bootstrap, {"enable.idempotence": True})


def test_kafka_python_defaults(broker):
    """kafka-python 3: idempotent producer, group consumer, all defaults."""
    from kafka import KafkaConsumer, KafkaProducer

    topic, group = fresh("defaults-kafka-python")
    create_topic_confluent(broker.bootstrap, topic, PARTITIONS)
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap)
    assert producer.config["enable_idempotence"], "kafka-python 3 is idempotent by default"
    futures = {str(i): producer.send(topic, key=str(i % 7).encode(), value=str(i).encode()) for i in range(COUNT)}
    producer.flush(30)
    acked = {v: (f.get(30).partition, f.get(30).offset) for v, f in futures.items()}
    producer.close()
    consumer = KafkaConsumer(
        topic, bootstrap_servers=broker.bootstrap, group_id=group, auto_offset_reset="earliest",
        consumer_timeout_ms=CONSUME_TIMEOUT_S * 1000,
    )
    read = []
    try:
        for msg in consumer:
            value = msg.value.decode()
            assert acked[value] == (msg.partition, msg.offset)
            read.append(value)
            if len(read) >= COUNT:
                break
    finally:
        consumer.close()
    assert_exactly_once(read)


def test_aiokafka_defaults(broker):
    aiokafka = pytest.importorskip("aiokafka")
    topic, group = fresh("defaults-aiokafka")
    create_topic_confluent(broker.bootstrap, topic, PARTITIONS)

    async def roundtrip() -> list[str]:
        producer = aiokafka.AIOKafkaProducer(bootstrap_servers=broker.bootstrap)
        await producer.start()
        acked = {}
        try:
            for i in range(COUNT):
                meta = await producer.send_and_wait(topic, key=str(i % 7).encode(), value=str(i).encode())
                acked[str(i)] = (meta.partition, meta.offset)
        finally:
            await producer.stop()
        consumer = aiokafka.AIOKafkaConsumer(
            topic, bootstrap_servers=broker.bootstrap, group_id=group, auto_offset_reset="earliest"
        )
        await consumer.start()
        read = []
        try:
            deadline = time.monotonic() + CONSUME_TIMEOUT_S
            while len(read) < COUNT and time.monotonic() < deadline:
                batches = await consumer.getmany(timeout_ms=500)
                for records in batches.values():
                    for msg in records:
                        value = msg.value.decode()
                        assert acked[value] == (msg.partition, msg.offset)
                        read.append(value)
        finally:
            await consumer.stop()
        return read

    assert_exactly_once(asyncio.run(roundtrip()))


def kafkajs_roundtrip(bootstrap: str, mode: str) -> None:
    if shutil.which("node") is None or not (JS_DIR / "node_modules" / "kafkajs").is_dir():
        pytest.fail("node and scripts/js/node_modules/kafkajs are needed (scripts/test.sh installs them)")
    topic, group = fresh(f"defaults-kafkajs-{mode}")
    create_topic_confluent(bootstrap, topic, PARTITIONS)
    out = subprocess.run(
        ["node", str(JS_DIR / "roundtrip.js"), bootstrap, topic, group, str(COUNT), mode],
        capture_output=True, timeout=120, text=True,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["acked"], "kafkajs reported no acknowledged send"
    assert_exactly_once([value for _, _, value in result["consumed"]])


def test_kafkajs_defaults(broker):
    kafkajs_roundtrip(broker.bootstrap, "defaults")


def test_kafkajs_idempotent(broker):
    kafkajs_roundtrip(broker.bootstrap, "idempotent")


def test_kcat_defaults(broker):
    """kcat (Debian's, an older librdkafka) producing and consuming in a
    group with its defaults."""
    topic, group = fresh("defaults-kcat")
    create_topic_confluent(broker.bootstrap, topic, PARTITIONS)
    lines = "".join(f"{i}\n" for i in range(COUNT)).encode()
    run_kcat(["-b", broker.bootstrap, "-P", "-t", topic], stdin=lines)
    out = subprocess.run(
        ["kcat", "-b", broker.bootstrap, "-G", group, "-o", "beginning", "-e", "-f", "%s\n", topic],
        capture_output=True, timeout=CONSUME_TIMEOUT_S + 30,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    values = [line for line in out.stdout.decode().splitlines() if line]
    assert_exactly_once(values)
