"""The operator CLI (`gregor topic|produce|consume|group|cluster`) against a
real broker: JSON output, exit codes and the error cases."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from conftest import default_gregor_bin, free_port
from helpers import unique_name, watermarks

CLI_TIMEOUT_S = 60  # hang protection per CLI call


def gregor(broker, *args: str, stdin: bytes | None = None, check: bool = True, bootstrap: str | None = None):
    env = dict(os.environ)
    env.pop("GREGOR_BROKERS", None)
    proc = subprocess.run(
        [str(default_gregor_bin()), "--brokers", bootstrap or broker.bootstrap, *args],
        input=stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        timeout=CLI_TIMEOUT_S,
        env=env,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"gregor {' '.join(args)} exited {proc.returncode}\nstderr: {proc.stderr.decode(errors='replace')}"
        )
    return proc


def gjson(broker, *args: str, stdin: bytes | None = None):
    return json.loads(gregor(broker, "--format", "json", *args, stdin=stdin).stdout)


def json_lines(out: bytes) -> list[dict]:
    return [json.loads(line) for line in out.decode().splitlines() if line.strip()]


def assert_fails(proc, *needles: str) -> str:
    err = proc.stderr.decode(errors="replace").strip()
    assert proc.returncode != 0, f"expected failure, got exit 0; stdout {proc.stdout!r}"
    assert len(err.splitlines()) == 1, f"error is not one line: {err!r}"
    for needle in needles:
        assert needle in err, f"{needle!r} not in {err!r}"
    return err


@pytest.fixture
def cli_broker(broker_factory):
    # No initial rebalance delay: group joins answer at once.
    return broker_factory("--group-initial-rebalance-delay-ms", "0", "--auto-create-topics", "false")


def test_topic_commands(cli_broker):
    b = cli_broker
    name = unique_name("cli-topic")
    created = gjson(b, "topic", "create", name, "-p", "3", "-c", "retention.ms=123456")
    assert created["topic"] == name and created["partitions"] == 3

    listed = gjson(b, "topic", "list")
    assert {"name": name, "partitions": 3, "replication_factor": 1, "internal": False} in listed

    described = gjson(b, "topic", "describe", name)
    assert [p["partition"] for p in described["partitions"]] == [0, 1, 2]
    assert all(p["leader"] == 0 and p["high_watermark"] == 0 for p in described["partitions"])
    assert described["configs"]["retention.ms"]["value"] == "123456"
    assert described["configs"]["retention.ms"]["source"] == "DYNAMIC_TOPIC_CONFIG"

    gjson(b, "topic", "alter-config", name, "--set", "cleanup.policy=compact", "--delete", "retention.ms")
    configs = gjson(b, "topic", "describe", name)["configs"]
    assert configs["cleanup.policy"]["value"] == "compact"
    assert configs["retention.ms"]["source"] == "DEFAULT_CONFIG"

    added = gjson(b, "topic", "add-partitions", name, "-n", "2")
    assert added["partitions"] == 5
    assert len(gjson(b, "topic", "describe", name)["partitions"]) == 5

    # Error cases: one line naming the problem and the fix, non-zero exit.
    assert_fails(gregor(b, "topic", "create", name, check=False), "TOPIC_ALREADY_EXISTS", "gregor topic describe")
    assert_fails(
        gregor(b, "topic", "create", unique_name("bad"), "-c", "no.such.key=1", check=False),
        "INVALID_CONFIG",
        "no.such.key",
    )
    assert_fails(
        gregor(b, "topic", "alter-config", name, "--set", "no.such.key=1", check=False), "INVALID_CONFIG"
    )
    assert_fails(gregor(b, "topic", "describe", "no-such-topic", check=False), "does not exist", "gregor topic")

    assert gjson(b, "topic", "delete", name) == {"topic": name, "deleted": True}
    assert name not in [t["name"] for t in gjson(b, "topic", "list")]
    assert_fails(gregor(b, "topic", "delete", name, check=False), "UNKNOWN_TOPIC_OR_PARTITION")


def test_cluster_commands(cli_broker):
    b = cli_broker
    info = gjson(b, "cluster", "info")
    assert info["controller"] == 0
    assert info["brokers"] == [{"id": 0, "address": b.bootstrap, "rack": None}]
    assert info["api_versions"]["Produce"]["max"] >= 9

    configs = gjson(b, "cluster", "config", "get")
    assert configs["broker"] == 0 and "log.retention.ms" in configs["configs"]
    one = gjson(b, "cluster", "config", "get", "log.segment.bytes")
    assert list(one["configs"]) == ["log.segment.bytes"]

    # Dynamic broker configs are not supported: a clear error, exit non-zero.
    assert_fails(
        gregor(b, "cluster", "config", "set", "log.retention.ms=1000", check=False), "INVALID_REQUEST", "--config"
    )
    # A pattern is only for produce/consume.
    assert_fails(gregor(b, "--format", "%v", "cluster", "info", check=False), "table or json")


def test_unreachable_broker(tmp_path):
    port = free_port()
    proc = subprocess.run(
        [str(default_gregor_bin()), "--brokers", f"127.0.0.1:{port}", "topic", "list"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        timeout=CLI_TIMEOUT_S,
    )
    assert_fails(proc, f"cannot reach 127.0.0.1:{port}", "connection refused", "gregor serve")
    # GREGOR_BROKERS is the default for --brokers.
    env = dict(os.environ, GREGOR_BROKERS=f"127.0.0.1:{port}")
    proc = subprocess.run(
        [str(default_gregor_bin()), "cluster", "info"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
        timeout=CLI_TIMEOUT_S,
    )
    assert_fails(proc, f"127.0.0.1:{port}")


def test_produce_consume(cli_broker):
    b = cli_broker
    name = unique_name("cli-pc")
    gjson(b, "topic", "create", name, "-p", "2")

    acks = json_lines(gregor(b, "--format", "json", "produce", name, "-v", "-p", "0", stdin=b"a\nb\nc\n").stdout)
    assert [(a["partition"], a["offset"]) for a in acks] == [(0, 0), (0, 1), (0, 2)]
    out = gregor(
        b, "--format", "%k|%v|%h\\n", "produce", name, "-v", "-p", "1", "-z", "zstd", "-H", "src=cli",
        stdin=b"k1|v1|x=1\nk2|v2|\n",
    ).stdout.decode()
    assert out.split() == [f"{name}/1@0", f"{name}/1@1"]
    summary = json.loads(gregor(b, "--format", "json", "produce", name, "--acks", "1", "-z", "gzip", stdin=b"d\ne\n").stdout)
    assert summary == {"topic": name, "produced": 2}
    file = b.workdir / "blob.bin"
    file.write_bytes(b"line1\nline2\n")
    gregor(b, "produce", name, "--file", str(file), "-p", "0", "-k", "filekey")
    assert watermarks(b.bootstrap, name, 0)[1] + watermarks(b.bootstrap, name, 1)[1] == 8

    records = json_lines(gregor(b, "--format", "json", "consume", name, "-e").stdout)
    assert len(records) == 8
    by_offset = {(r["partition"], r["offset"]): r for r in records}
    assert [by_offset[(0, o)]["value"] for o in range(3)] == ["a", "b", "c"]
    assert by_offset[(1, 0)]["key"] == "k1" and by_offset[(1, 0)]["headers"] == {"x": "1", "src": "cli"}
    assert by_offset[(1, 1)]["value"] == "v2"
    blob = [r for r in records if r["key"] == "filekey"]
    assert len(blob) == 1 and blob[0]["value"] == "line1\nline2\n"

    # kcat-like pattern, -p, -o OFFSET, -n.
    out = gregor(b, "--format", "%p:%o:%k=%v\\n", "consume", name, "-p", "1", "-o", "1", "-n", "1").stdout
    assert out == b"1:1:k2=v2\n"
    out = gregor(b, "consume", name, "-p", "0", "-o", "-1", "-e").stdout
    assert out.count(b"\n") >= 1 and out.endswith(b"line1\nline2\n\n")
    # @timestamp far in the future: nothing to read.
    assert gregor(b, "consume", name, "-o", "@99999999999999", "-e").stdout == b""
    assert gregor(b, "consume", name, "-o", "end", "-e").stdout == b""

    assert_fails(gregor(b, "produce", "no-such-topic", stdin=b"x\n", check=False), "does not exist", "gregor topic create")
    assert_fails(gregor(b, "consume", "no-such-topic", "-e", check=False), "does not exist")
    assert_fails(gregor(b, "produce", name, "-z", "brotli", stdin=b"x\n", check=False), "unknown compression")
    assert_fails(gregor(b, "consume", name, "-o", "sometime", check=False), "beginning, end")


def test_groups(cli_broker):
    b = cli_broker
    name = unique_name("cli-grp")
    group = unique_name("g")
    gjson(b, "topic", "create", name, "-p", "2")
    gregor(b, "produce", name, "-p", "0", stdin=b"a\nb\nc\n")
    gregor(b, "produce", name, "-p", "1", stdin=b"d\n")

    first = json_lines(gregor(b, "--format", "json", "consume", name, "-g", group, "-n", "2").stdout)
    assert len(first) == 2
    rest = json_lines(gregor(b, "--format", "json", "consume", name, "-g", group, "-e").stdout)
    assert len(rest) == 2
    assert sorted(r["value"] for r in first + rest) == ["a", "b", "c", "d"]

    groups = gjson(b, "group", "list")
    assert {"group": group, "protocol_type": "consumer", "state": "Empty"} in groups

    described = gjson(b, "group", "describe", group)
    assert described["state"] == "Empty" and described["members"] == []
    lag = {(o["topic"], o["partition"]): (o["committed_offset"], o["lag"]) for o in described["offsets"]}
    assert lag == {(name, 0): (3, 0), (name, 1): (1, 0)}

    gregor(b, "produce", name, "-p", "1", stdin=b"e\n")
    described = gjson(b, "group", "describe", group)
    assert {o["partition"]: o["lag"] for o in described["offsets"]} == {0: 0, 1: 1}

    sought = gjson(b, "group", "seek", group, "--to", "beginning", "--topic", name)
    assert sought["offsets"] == [{"partition": 0, "offset": 0}, {"partition": 1, "offset": 0}]
    assert len(json_lines(gregor(b, "--format", "json", "consume", name, "-g", group, "-e").stdout)) == 5
    sought = gjson(b, "group", "seek", group, "--to", "1", "--topic", name, "-p", "0")
    assert sought["offsets"] == [{"partition": 0, "offset": 1}]
    gjson(b, "group", "seek", group, "--to", "end", "--topic", name)
    assert {o["partition"]: o["lag"] for o in gjson(b, "group", "describe", group)["offsets"]} == {0: 0, 1: 0}

    assert gjson(b, "group", "delete", group) == {"group": group, "deleted": True}
    assert_fails(gregor(b, "group", "delete", group, check=False), "does not exist")
    assert_fails(gregor(b, "group", "describe", unique_name("nogroup"), check=False), "does not exist")
    assert_fails(gregor(b, "group", "seek", group, "--to", "end", "--topic", "no-such-topic", check=False), "does not exist")
