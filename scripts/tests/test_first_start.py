"""The README's first command, run as a newcomer runs it: `gregor serve` with
no flags and no GREGOR_* variables, from a fresh working directory, so the
data goes to the relative ./gregor-data. It must serve on 127.0.0.1:9092,
take a record and give it back, and stop cleanly on SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time

import pytest

from helpers import Rec, consume_confluent, produce_confluent

DEFAULT_LISTEN = ("127.0.0.1", 9092)
DEFAULT_METRICS = ("127.0.0.1", 9644)
START_TIMEOUT_S = 30


def port_is_free(address: tuple[str, int]) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(address)
        except OSError:
            return False
    return True


def test_serve_with_no_flags_from_a_fresh_directory(tmp_path, gregor_bin):
    if not (port_is_free(DEFAULT_LISTEN) and port_is_free(DEFAULT_METRICS)):
        pytest.skip("127.0.0.1:9092 or :9644 is taken on this machine")
    env = {k: v for k, v in os.environ.items() if not k.startswith("GREGOR_")}
    log_path = tmp_path / "gregor.log"
    workdir = tmp_path / "newcomer"
    workdir.mkdir()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [str(gregor_bin), "serve"],
            cwd=workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            assert proc.poll() is None, f"gregor serve exited: {log_path.read_text()[-2000:]}"
            try:
                socket.create_connection(DEFAULT_LISTEN, timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, f"not serving after {START_TIMEOUT_S}s: {log_path.read_text()[-2000:]}"
                time.sleep(0.1)
        bootstrap = "%s:%d" % DEFAULT_LISTEN
        records = [Rec(b"k", b"hello from a newcomer", ())]
        acks = produce_confluent(bootstrap, "first-start", records)
        assert len(acks) == 1
        consumed = consume_confluent(bootstrap, "first-start", [0])
        assert [r.value for r in consumed[0]] == [b"hello from a newcomer"]
        assert (workdir / "gregor-data" / "first-start-0").is_dir(), "data is not in ./gregor-data"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, log_path.read_text()[-2000:]
        assert (workdir / "gregor-data" / ".clean-shutdown").exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
