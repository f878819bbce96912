#!/usr/bin/env python3
"""Scale figures for many partitions on one node (issue 21): creation time,
RSS per partition, descriptors in use, idle CPU (with 10 long-polling
consumers), start-up time after a clean stop and after kill -9, and produce
throughput to a few hot partitions while the rest sit idle.

    .venv/bin/python scripts/partition_scale.py [--topics 1000] [--partitions 100]
        [--gregor target/release/gregor] [--shards 1] [--cpu 0]

Prints one line per figure (and a JSON summary at the end). The data dir is
a temp dir under --tmp (default: /tmp), removed at the end.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def descriptors(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


class Gregor:
    def __init__(self, binary: str, data: Path, shards: int, cpu: str | None, extra: list[str]):
        self.binary, self.data, self.shards, self.cpu, self.extra = binary, data, shards, cpu, extra
        self.port = free_port()
        self.log = data.parent / "gregor.log"
        self.proc: subprocess.Popen | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> float:
        cmd = [self.binary, "serve", "--data-dir", str(self.data), "--listen", self.bootstrap,
               "--shards", str(self.shards), "--metrics", "off", *self.extra]
        if self.cpu is not None:
            cmd = ["taskset", "-c", self.cpu, *cmd]
        offset = self.log.stat().st_size if self.log.exists() else 0
        started = time.monotonic()
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                         env={**os.environ, "RUST_LOG": "warn,shards::broker=info"})
        # Serving = the broker says so (its listeners accept before its
        # partitions are open).
        deadline = started + 600
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()[-3000:]
            with open(self.log, "rb") as log:
                log.seek(offset)
                if b"gregor is serving" in log.read():
                    return time.monotonic() - started
            time.sleep(0.01)
        raise TimeoutError("gregor did not serve within 600 s")

    def stop(self, sig=signal.SIGTERM) -> None:
        self.proc.send_signal(sig)
        self.proc.wait(timeout=600)


def measure_reopen(g: Gregor, args, say) -> None:
    targets = [(f"scale-{t}", p) for t in range(args.topics) for p in range(args.partitions)][:2000]
    producer = Producer({"bootstrap.servers": g.bootstrap, "acks": 1, "linger.ms": 0})

    def round_trips() -> list[float]:
        took = []
        for topic, partition in targets:
            started = time.perf_counter()
            producer.produce(topic, value=b"v", partition=partition)
            producer.flush(10)
            took.append(time.perf_counter() - started)
        return sorted(took)

    round_trips()  # the files exist and the client knows every leader
    time.sleep(6)  # idle: every file closes (--segment-file-idle-ms 2000)
    closed = round_trips()
    opened = round_trips()
    say("produce_to_closed_file_p50_us", closed[len(closed) // 2] * 1e6, "us")
    say("produce_to_open_file_p50_us", opened[len(opened) // 2] * 1e6, "us")
    say("reopen_cost_p50_us", (closed[len(closed) // 2] - opened[len(opened) // 2]) * 1e6, "us")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--topics", type=int, default=1000)
    ap.add_argument("--partitions", type=int, default=100)
    ap.add_argument("--gregor", default=str(Path(__file__).resolve().parent.parent / "target/release/gregor"))
    ap.add_argument("--shards", type=int, default=1)
    ap.add_argument("--cpu", default="0", help="cores for the broker (taskset); '' for none")
    ap.add_argument("--tmp", default="/tmp")
    ap.add_argument("--idle-s", type=float, default=30)
    ap.add_argument("--hot-records", type=int, default=200_000)
    ap.add_argument("--reopen-only", action="store_true",
                    help="only the cost of reopening an idle partition's file: one acks=1 produce to each "
                         "of 2,000 idle partitions (files closed), then again (files open)")
    args = ap.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="gregor-scale-", dir=args.tmp))
    figures: dict[str, float] = {}

    def say(name: str, value: float, unit: str) -> None:
        figures[name] = value
        print(f"{name}: {value:,.3f} {unit}", flush=True)

    extra = ["--segment-file-idle-ms", "2000", "--cleaner-backoff-ms", "1000"] if args.reopen_only else []
    g = Gregor(args.gregor, workdir / "data", args.shards, args.cpu or None, extra)
    try:
        g.start()
        pid = g.proc.pid
        time.sleep(1)
        rss_before, fds_before = rss_bytes(pid), descriptors(pid)
        admin = AdminClient({"bootstrap.servers": g.bootstrap})
        total = args.topics * args.partitions
        started = time.monotonic()
        batch = 50
        for first in range(0, args.topics, batch):
            names = [f"scale-{i}" for i in range(first, min(first + batch, args.topics))]
            futures = admin.create_topics([NewTopic(n, args.partitions, 1) for n in names], operation_timeout=120)
            for f in futures.values():
                f.result(timeout=300)
        say("create_s", time.monotonic() - started, f"s for {total} partitions")
        if args.reopen_only:
            measure_reopen(g, args, say)
            return
        time.sleep(2)
        say("rss_per_partition_bytes", (rss_bytes(pid) - rss_before) / total, "B")
        say("descriptors_after_create", descriptors(pid), f"(before: {fds_before})")
        cpu0 = cpu_seconds(pid)
        time.sleep(args.idle_s)
        say("idle_cpu_percent", 100 * (cpu_seconds(pid) - cpu0) / args.idle_s, "% of a core")
        consumers = []
        for i in range(10):
            c = Consumer({"bootstrap.servers": g.bootstrap, "group.id": f"idle-{i}", "auto.offset.reset": "latest"})
            c.subscribe(sorted({f"scale-{(i + 10 * k) % args.topics}" for k in range(10)}))
            consumers.append(c)
        settle = time.monotonic() + 15
        while time.monotonic() < settle:
            for c in consumers:
                c.poll(0.05)
        cpu0 = cpu_seconds(pid)
        end = time.monotonic() + args.idle_s
        while time.monotonic() < end:
            for c in consumers:
                c.poll(0.05)
        say("idle_cpu_10_consumers_percent", 100 * (cpu_seconds(pid) - cpu0) / args.idle_s, "% of a core")
        for c in consumers:
            c.close()
        say("descriptors_idle", descriptors(pid), "")
        # Hot partitions: 4 partitions of one topic take the load.
        admin.create_topics([NewTopic("hot", 4, 1)])["hot"].result(timeout=60)
        producer = Producer({"bootstrap.servers": g.bootstrap, "linger.ms": 5})
        value = b"x" * 1024
        started = time.monotonic()
        for i in range(args.hot_records):
            while True:
                try:
                    producer.produce("hot", value=value, partition=i % 4)
                    break
                except BufferError:
                    producer.poll(0.01)
        producer.flush(120)
        elapsed = time.monotonic() - started
        say("hot_produce_mb_s", args.hot_records * 1024 / elapsed / 1e6, "MB/s (1 KiB, 4 hot partitions)")
        del producer
        consumer = Consumer({"bootstrap.servers": g.bootstrap, "group.id": "hot-reader", "enable.auto.commit": False})
        consumer.assign([TopicPartition("hot", p, OFFSET_BEGINNING) for p in range(4)])
        got, started = 0, time.monotonic()
        while got < args.hot_records and time.monotonic() - started < 300:
            for m in consumer.consume(10_000, 1.0):
                if m.error() is None:
                    got += 1
        say("hot_consume_mb_s", got * 1024 / (time.monotonic() - started) / 1e6, "MB/s (1 KiB, 4 hot partitions)")
        consumer.close()
        del consumer, admin
        started = time.monotonic()
        g.stop(signal.SIGTERM)
        say("clean_stop_s", time.monotonic() - started, "s")
        say("start_after_clean_stop_s", g.start(), "s")
        say("descriptors_after_restart", descriptors(g.proc.pid), "")
        g.stop(signal.SIGKILL)
        say("start_after_kill9_s", g.start(), "s")
        g.stop(signal.SIGTERM)
    finally:
        if g.proc and g.proc.poll() is None:
            g.proc.kill()
        print(json.dumps(figures))
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
