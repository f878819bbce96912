"""Hostile clients against the real broker: random bytes, truncated frames, a
2 GiB length prefix, wrong API keys, slowloris connections and 10,000
connections opened and dropped. The broker must answer with errors or close
those connections, keep serving a well-behaved confluent-kafka producer the
whole time, and give its memory back (RSS before/after is printed).

Raw frames come from the encoders in helpers.py and the bad-frame table in
test_errors.py."""

from __future__ import annotations

import random
import socket
import struct
import threading
import time

import pytest
from confluent_kafka import Producer

from helpers import (
    API_API_VERSIONS,
    API_METADATA,
    RawConnection,
    api_versions_request_body,
    assert_broker_answers,
    confluent_producer_conf,
    consume_confluent,
    create_topic_confluent,
    encode_request,
    split_bootstrap,
    wait_until,
)
from test_errors import BAD_FRAMES

# The broker closes connections idle this long; slowloris tests use it.
IDLE_MS = 3_000
# How long the broker gives a request body once its size is known
# (FRAME_READ_MS_MAX in shards/src/connection.rs), plus slack.
BODY_DEADLINE_S = 30 + 15
SOCKET_REQUEST_MAX_BYTES = 100 * 1024 * 1024
# A correctness bound, far from noise: the claims add up to 800 MiB.
SLOWLORIS_RSS_GROWTH_MAX_BYTES = 128 << 20
CONNECTIONS_TOTAL = 10_000
CONNECTIONS_PER_WAVE = 500
# Hang protection while waiting for the steady producer to make progress.
PROGRESS_TIMEOUT_S = 60


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


class SteadyProducer:
    """A well-behaved client: one acks=all message at a time, each waited
    for, on its own thread, until stopped. Remembers what was acknowledged."""

    def __init__(self, bootstrap: str, topic: str):
        self.topic = topic
        self.producer = Producer(confluent_producer_conf(bootstrap, "none", **{"linger.ms": 0}))
        self.acked: list[bytes] = []
        self.errors: list[str] = []
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        i = 0
        while not self.stopped.is_set():
            value = f"steady-{i}".encode()
            i += 1
            done: list = []
            self.producer.produce(self.topic, value=value, on_delivery=lambda err, msg: done.append(err))
            self.producer.flush(30)
            if done and done[0] is None:
                self.acked.append(value)
            else:
                self.errors.append(f"{value!r}: {done}")
            time.sleep(0.02)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join(60)
        assert not self.thread.is_alive(), "steady producer hung"

    def wait_for_progress(self, what: str) -> None:
        """At least one more message is acknowledged from now on."""
        before = len(self.acked)
        wait_until(lambda: len(self.acked) > before, timeout_s=PROGRESS_TIMEOUT_S, what=f"a produce ack {what}")


@pytest.fixture
def hostile_setup(broker_factory):
    broker = broker_factory("--connections-max-idle-ms", str(IDLE_MS))
    topic = "steady"
    create_topic_confluent(broker.bootstrap, topic, 1)
    steady = SteadyProducer(broker.bootstrap, topic)
    steady.start()
    steady.wait_for_progress("before the hostile clients")
    yield broker, steady
    steady.stop()


def send_and_expect_close(bootstrap: str, data: bytes, *, half_close: bool) -> bytes:
    """Sends `data`; with `half_close` also shuts our write side (the broker
    sees EOF mid-frame). Returns what the broker sent before closing."""
    with RawConnection(bootstrap) as conn:
        try:
            conn.send_raw(data)
        except (BrokenPipeError, ConnectionResetError):
            return b""  # closed before we finished: that is an answer too
        if half_close:
            try:
                conn.sock.shutdown(socket.SHUT_WR)
            except OSError:
                return b""  # the broker closed first (ENOTCONN)
        return conn.wait_closed()


def test_random_bytes_and_truncated_frames(hostile_setup):
    broker, steady = hostile_setup
    rng = random.Random(20240611)
    # Random bytes: whatever the broker makes of them, EOF ends it.
    for _ in range(200):
        garbage = rng.randbytes(rng.randint(1, 4096))
        send_and_expect_close(broker.bootstrap, garbage, half_close=True)
    steady.wait_for_progress("after random bytes")

    # A valid request cut at every byte: no answer, and the broker closes at EOF.
    frame = encode_request(API_API_VERSIONS, 3, 9, api_versions_request_body(3), flexible_header=True)
    for cut in range(len(frame)):
        received = send_and_expect_close(broker.bootstrap, frame[:cut], half_close=True)
        assert received == b"", f"answered a request cut at {cut} of {len(frame)} bytes"
    # The table of bad frames from test_errors: the broker closes unprompted.
    for name, bad in BAD_FRAMES.items():
        send_and_expect_close(broker.bootstrap, bad, half_close=False)
    steady.wait_for_progress("after truncated and bad frames")
    assert_broker_answers(broker.bootstrap)


@pytest.mark.parametrize("size", [0x7FFF_FFFF, 0x8000_0000, 0xFFFF_FFFF, SOCKET_REQUEST_MAX_BYTES + 1])
def test_huge_length_prefix_closes(hostile_setup, size):
    """2 GiB (and its signed and unsigned neighbours) is refused before any
    body is read: the connection closes while we still send nothing."""
    broker, steady = hostile_setup
    before = rss_bytes(broker.pid)
    send_and_expect_close(broker.bootstrap, struct.pack(">I", size), half_close=False)
    after = rss_bytes(broker.pid)
    print(f"length prefix {size:#x}: RSS {before >> 20} MiB -> {after >> 20} MiB")
    assert after < before + (64 << 20), "the broker allocated for a frame it refused"
    steady.wait_for_progress("after a huge length prefix")


@pytest.mark.parametrize("count", [0x7FFF_FFFF, 0x0300_0473])
def test_array_length_claiming_billions_of_elements(hostile_setup, count):
    """A 20-byte Metadata v1 whose topics array claims billions of entries:
    kafka-protocol sizes the array before decoding it (a ~154 GB request
    for 2^31 topics), which once aborted the whole broker. It must close
    the connection and keep serving, with memory where it was."""
    broker, steady = hostile_setup
    before = rss_bytes(broker.pid)
    body = struct.pack(">i", count) + b"seed"
    send_and_expect_close(broker.bootstrap, encode_request(API_METADATA, 1, 7, body), half_close=False)
    after = rss_bytes(broker.pid)
    print(f"topics count {count:#x}: RSS {before >> 20} MiB -> {after >> 20} MiB")
    assert broker.is_running(), "the broker died on a malformed array length"
    assert after < before + (64 << 20)
    steady.wait_for_progress("after an array length claiming billions of elements")
    assert_broker_answers(broker.bootstrap)


@pytest.mark.parametrize("api_key", [-1, 67, 1000, 32767])
def test_wrong_api_keys(hostile_setup, api_key):
    """An API key the broker does not serve, and a served key at a version it
    lacks, close the connection without an answer (Kafka does the same: the
    request cannot be parsed), never a hang; later requests still work."""
    broker, steady = hostile_setup
    with RawConnection(broker.bootstrap) as conn:
        conn.send_raw(encode_request(api_key, 0, 77, b""))
        assert conn.wait_closed() == b"", "an unknown API key was answered"
    with RawConnection(broker.bootstrap) as conn:
        conn.send_raw(encode_request(API_METADATA, 99, 78, b""))
        assert conn.wait_closed() == b"", "Metadata v99 was answered"
    steady.wait_for_progress("after wrong API keys")
    assert_broker_answers(broker.bootstrap)


# What shows that the broker closed a connection: a reset or a broken pipe
# on send, EOF or a reset on receive. A timeout of our own does not.
BROKER_CLOSED = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError)


def _trickle(sock: socket.socket, frame: tuple[bytes, bytes], closed: list, i: int, stop: threading.Event) -> None:
    """Sends the head at once, then the rest one byte per second, then waits
    for the broker to close. The frames never complete (their size says more
    than is sent), so only a deadline of the broker's can close them."""
    head, rest = frame
    try:
        sock.sendall(head)
        for byte in rest:
            if stop.is_set():
                return
            sock.send(bytes([byte]))
            stop.wait(1.0)
        sock.settimeout(BODY_DEADLINE_S)
        while True:
            data = sock.recv(65536)
            if not data:
                closed[i] = True
                return
            # An answer to an incomplete frame would be a broker bug.
            raise AssertionError(f"the broker answered an incomplete frame: {data[:32]!r}")
    except BROKER_CLOSED:
        closed[i] = True
    except (socket.timeout, OSError):
        # Still open at our deadline (or closed by us at the test's end).
        return


def _open_slowloris(bootstrap: str, frames: list[tuple[bytes, bytes]]) -> tuple[list[socket.socket], list[bool], list[threading.Thread], threading.Event]:
    socks = [socket.create_connection(split_bootstrap(bootstrap), timeout=BODY_DEADLINE_S) for _ in frames]
    closed = [False] * len(frames)
    stop = threading.Event()
    threads = [
        threading.Thread(target=_trickle, args=(s, f, closed, i, stop), daemon=True)
        for i, (s, f) in enumerate(zip(socks, frames))
    ]
    for t in threads:
        t.start()
    return socks, closed, threads, stop


def _wait_all_closed(socks, closed, threads, stop, timeout_s: float) -> None:
    """Each slowloris connection is closed by the broker (the trickle notices
    a failed send, or reads EOF)."""
    for s in socks:
        s.settimeout(timeout_s)
    deadline = time.monotonic() + timeout_s
    for t in threads:
        t.join(max(0.1, deadline - time.monotonic()))
    stop.set()
    for s in socks:
        s.close()
    assert all(closed), f"{closed.count(False)} slowloris connections still open after {timeout_s}s"


def test_slowloris_size_prefix(hostile_setup):
    """Three bytes of a size prefix at one byte per second, then silence: only
    the broker's deadline for a frame's start (connections.max.idle.ms here)
    closes it."""
    broker, steady = hostile_setup
    prefix = encode_request(API_API_VERSIONS, 0, 5, b"")[:3]
    socks, closed, threads, stop = _open_slowloris(broker.bootstrap, [(b"", prefix)] * 20)
    steady.wait_for_progress("while prefixes trickle in")
    _wait_all_closed(socks, closed, threads, stop, timeout_s=len(prefix) + IDLE_MS / 1000 + 15)


def test_slowloris_body_holding_request_memory(hostile_setup):
    """Bodies trickling in at one byte per second, some claiming the largest
    request size, so their claims exceed a shard's request-memory budget: the
    body deadline closes them, and until then the well-behaved producer on a
    fresh connection is still served."""
    broker, steady = hostile_setup
    # A large claim: a Produce frame header that says 100 MiB is coming.
    # Size prefixes arrive at once, bodies trickle.
    big = (struct.pack(">i", SOCKET_REQUEST_MAX_BYTES), struct.pack(">hhi", 0, 9, 1) + b"\x00" * 64)
    small = (struct.pack(">i", 200), b"\x00" * 64)
    frames = [big] * 8 + [small] * 8
    before = rss_bytes(broker.pid)
    socks, closed, threads, stop = _open_slowloris(broker.bootstrap, frames)
    # A fresh producer connection (the steady one may sit on either shard).
    probe = Producer(confluent_producer_conf(broker.bootstrap, "none"))
    for i in range(20):
        probe.produce("steady", value=f"probe-{i}".encode())
    assert probe.flush(BODY_DEADLINE_S * 2) == 0, "produce stalled behind slowloris connections"
    still_open = closed.count(False)
    # Measured while the connections are open: memory a broker allocated per
    # claim is released when the deadline closes them.
    while_open = rss_bytes(broker.pid)
    steady.wait_for_progress("while bodies trickle in")
    _wait_all_closed(socks, closed, threads, stop, timeout_s=BODY_DEADLINE_S * 2)
    after = rss_bytes(broker.pid)
    print(
        f"slowloris: {still_open} of {len(frames)} still open when the probe finished; "
        f"RSS {before >> 20} -> {while_open >> 20} (open) -> {after >> 20} MiB"
    )
    assert still_open > 0, "the probe only finished after the slowloris connections were closed"
    # Memory follows the bytes that arrived, not the 800 MiB the prefixes
    # claimed: a broker that allocated per claim would grow by hundreds.
    for when, rss in (("while they were open", while_open), ("after they closed", after)):
        assert rss - before < SLOWLORIS_RSS_GROWTH_MAX_BYTES, (
            f"RSS grew by {(rss - before) >> 20} MiB {when}; the slowloris bodies claimed "
            f"{8 * SOCKET_REQUEST_MAX_BYTES >> 20} MiB"
        )


def test_connection_churn_and_memory(hostile_setup):
    """10,000 connections opened and dropped in waves (some reset, some after
    half a frame): the broker keeps serving and its RSS returns near where it
    started."""
    broker, steady = hostile_setup
    rng = random.Random(7)
    address = split_bootstrap(broker.bootstrap)
    half_frame = encode_request(API_API_VERSIONS, 0, 8, b"")[:7]
    rss_before = rss_bytes(broker.pid)
    rss_peak = rss_before
    opened = 0
    for _wave in range(CONNECTIONS_TOTAL // CONNECTIONS_PER_WAVE):
        socks = []
        for _ in range(CONNECTIONS_PER_WAVE):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.settimeout(15)
            s.connect(address)
            socks.append(s)
        opened += len(socks)
        rss_peak = max(rss_peak, rss_bytes(broker.pid))
        for s in socks:
            kind = rng.randrange(3)
            if kind == 1:
                # Close with RST instead of FIN.
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            elif kind == 2:
                try:
                    s.send(half_frame)
                except OSError:
                    pass
            s.close()
    assert opened == CONNECTIONS_TOTAL
    steady.wait_for_progress("after connection churn")
    assert_broker_answers(broker.bootstrap)
    # Connections close asynchronously on the broker: wait for RSS to settle
    # (hang protection only; the bound is checked once).
    time.sleep(2)
    rss_after = rss_bytes(broker.pid)
    print(
        f"RSS before churn {rss_before / 2**20:.1f} MiB, peak {rss_peak / 2**20:.1f} MiB, "
        f"after {rss_after / 2**20:.1f} MiB ({CONNECTIONS_TOTAL} connections)"
    )
    assert rss_after < 2 * rss_before + (64 << 20), "broker memory did not come back after the churn"


def test_steady_client_reads_everything_back(hostile_setup):
    """After a mix of the above, every acknowledged message is in the log, once."""
    broker, steady = hostile_setup
    rng = random.Random(3)
    for _ in range(50):
        send_and_expect_close(broker.bootstrap, rng.randbytes(rng.randint(1, 512)), half_close=True)
    send_and_expect_close(broker.bootstrap, struct.pack(">I", 0x7FFF_FFFF), half_close=False)
    steady.wait_for_progress("after the mix")
    steady.stop()
    assert not steady.errors, f"steady producer errors: {steady.errors[:5]}"
    consumed = consume_confluent(broker.bootstrap, "steady", [0])[0]
    values = [r.value for r in consumed]
    assert values == steady.acked, f"{len(values)} consumed vs {len(steady.acked)} acknowledged"
