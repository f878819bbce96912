"""A step of the wall clock (NTP, a resumed VM) moves no timer: the broker
keeps its session with the metadata quorum and a group keeps its members.
The broker runs under libfaketime, whose offset file the test rewrites;
the monotonic clock is left alone, as a real clock step leaves it."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from helpers import (
    create_topic_confluent,
    consume_confluent,
    make_records,
    produce_confluent,
    unique_name,
    verify_log,
)

LIBFAKETIME = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1")

# Longer than every session involved: the broker's (9 s) and the
# consumer's (45 s, librdkafka's default).
STEP_S = 120


@pytest.mark.skipif(not LIBFAKETIME.exists(), reason="libfaketime is not installed (scripts/test.sh installs it)")
@pytest.mark.parametrize("step_s", [STEP_S, -STEP_S])
def test_a_wall_clock_step_expires_no_session(broker_factory, tmp_path, step_s):
    from confluent_kafka import Consumer

    offset_file = tmp_path / "faketime"
    offset_file.write_text("+0\n")
    broker = broker_factory(start=False)
    broker.extra_env = {
        "LD_PRELOAD": str(LIBFAKETIME),
        "FAKETIME_TIMESTAMP_FILE": str(offset_file),
        "FAKETIME_NO_CACHE": "1",
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
    }
    broker.start()
    topic = unique_name("clock-step")
    create_topic_confluent(broker.bootstrap, topic, 2)
    first = make_records(40, seed=11)
    acks = produce_confluent(broker.bootstrap, topic, first)

    assignments = []
    consumer = Consumer(
        {
            "bootstrap.servers": broker.bootstrap,
            "group.id": unique_name("clock-step-group"),
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([topic], on_assign=lambda c, parts: assignments.append(len(parts)))
    try:
        deadline = time.monotonic() + 60
        while not assignments:
            assert time.monotonic() < deadline, "the consumer never joined its group"
            consumer.poll(0.2)

        offset_file.write_text(f"{step_s:+d}\n")
        # Two of the consumer's heartbeats (3 s apart) and several of the
        # broker's session checks happen in this window.
        until = time.monotonic() + 8
        while time.monotonic() < until:
            consumer.poll(0.2)
        assert assignments == [2], f"the group rebalanced after the clock step: assignments {assignments}"
    finally:
        consumer.close()

    assert "broker fenced" not in broker.log_text(), broker.log_tail()
    second = make_records(40, seed=12)
    acks += produce_confluent(broker.bootstrap, topic, second)
    verify_log(first + second, acks, consume_confluent(broker.bootstrap, topic, range(2)), 2)
