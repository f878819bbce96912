"""pytest fixtures: start the real `gregor` binary on a free port with a temp
data dir, and stop it (always) at teardown.

Environment:
  GREGOR_BIN               path of the gregor binary (default: target/release/gregor)
  GREGOR_TEST_EXTRA_ARGS   extra `gregor serve` arguments for every broker (shell words)
  RUST_LOG                 passed through; defaults to "info"
"""

from __future__ import annotations

import atexit
import os
import shlex
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 30  # hang protection: the broker must accept TCP by then
STOP_TIMEOUT_S = 30  # hang protection: a SIGTERM'd broker must exit by then
TEST_TIMEOUT_S = 900  # hang protection per test (pytest-timeout), never a performance bound
LOG_TAIL_LINES = 80

_live_brokers: set["Broker"] = set()


def default_gregor_bin() -> Path:
    if os.environ.get("GREGOR_BIN"):
        return Path(os.environ["GREGOR_BIN"])
    target = Path(os.environ.get("CARGO_TARGET_DIR") or REPO_ROOT / "target")
    if not target.is_absolute():
        target = REPO_ROOT / target
    return target / "release" / "gregor"


# Ports the harness hands out come from below the kernel's ephemeral range
# (32768-60999 by default), so no client's outgoing connection can take one
# between the check and the broker's bind, and each is handed out once per
# run. A broker also listens on ports derived from its Kafka port (replica
# fetches on +10+shard in a cluster), so a port is chosen with those free too.
_PORT_RANGE = (12_000, 32_000)
_ports_handed_out: set[int] = set()

# Offsets from a broker's Kafka port that it may listen on: the port itself
# and one replication port per shard (up to 8 shards).
BROKER_PORT_OFFSETS = (0, *range(10, 18))


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def free_port(offsets: tuple[int, ...] = (0,)) -> int:
    """A TCP port P on 127.0.0.1 such that P + every offset is free right
    now, outside the ephemeral range and not handed out before in this run."""
    import random

    rng = random.Random()
    top = _PORT_RANGE[1] - max(offsets)
    for _ in range(10_000):
        port = rng.randrange(_PORT_RANGE[0], top)
        wanted = [port + offset for offset in offsets]
        if any(p in _ports_handed_out for p in wanted):
            continue
        if all(_bindable(p) for p in wanted):
            _ports_handed_out.update(wanted)
            return port
    raise RuntimeError(f"no free port set {offsets} in {_PORT_RANGE}")


class Broker:
    """One `gregor serve` process with its own data dir, port and log file."""

    def __init__(self, binary: Path, workdir: Path, extra_args=(), shards: int | None = 2):
        self.binary = Path(binary)
        self.workdir = workdir
        self.data_dir = workdir / "data"
        self.log_path = workdir / "gregor.log"  # beside (not inside) the data dir
        self.port = free_port(BROKER_PORT_OFFSETS)
        self.shards = shards
        self.extra_args = [str(a) for a in extra_args]
        self.proc: subprocess.Popen | None = None
        # RLIMIT_NOFILE (soft and hard) to start the process with, if set.
        self.open_file_limit: int | None = None
        # Extra environment variables for the process.
        self.extra_env: dict[str, str] = {}
        self.starts = 0
        # True while the harness believes the process should be running; a
        # process that exits on its own meanwhile has crashed.
        self.expected_running = False

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def command(self) -> list[str]:
        cmd = [
            str(self.binary),
            "serve",
            "--data-dir",
            str(self.data_dir),
            "--listen",
            self.bootstrap,
            *(["--shards", str(self.shards)] if self.shards is not None else []),
            *self.extra_args,
        ]
        cmd += shlex.split(os.environ.get("GREGOR_TEST_EXTRA_ARGS", ""))
        return cmd

    def is_running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def crashed(self) -> bool:
        """The process exited although the harness did not stop it."""
        return self.expected_running and self.proc is not None and self.proc.poll() is not None

    def start(self, timeout_s: float = START_TIMEOUT_S, wait: bool = True) -> None:
        """Starts the process and (wait=True) waits until it serves. Brokers
        of one cluster start together (wait=False, then wait_ready): each
        serves only once the metadata quorum counts it live."""
        assert not self.is_running(), "broker already running"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.starts += 1
        cmd = self.command()
        env = dict(os.environ)
        env.setdefault("RUST_LOG", "info")
        env.setdefault("RUST_BACKTRACE", "1")
        env.update(self.extra_env)
        with open(self.log_path, "ab") as log:
            log.write(f"\n===== harness: start #{self.starts}: {shlex.join(cmd)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.workdir,
                # Own process group: Ctrl-C on pytest does not hit the broker
                # before the harness stops it.
                start_new_session=True,
                preexec_fn=self._limit_open_files if self.open_file_limit else None,
            )
        _live_brokers.add(self)
        self.expected_running = True
        if wait:
            self.wait_ready(timeout_s)

    def _limit_open_files(self) -> None:
        import resource

        resource.setrlimit(resource.RLIMIT_NOFILE, (self.open_file_limit, self.open_file_limit))

    def wait_ready(self, timeout_s: float = START_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            rc = self.proc.poll()
            if rc is not None:
                self.expected_running = False
                pytest.fail(
                    f"gregor exited with code {rc} during start-up\n{self.log_tail()}",
                    pytrace=False,
                )
            # Ready = this start logged "gregor is serving" and the port
            # answers (a killed broker's listener can linger briefly).
            if "gregor is serving" in self.log_since_last_start():
                try:
                    with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                        return
                except OSError:
                    pass
            if time.monotonic() > deadline:
                self._sigkill()
                pytest.fail(
                    f"gregor did not accept TCP connections on {self.bootstrap} within {timeout_s}s\n"
                    f"{self.log_tail()}",
                    pytrace=False,
                )
            time.sleep(0.05)

    def log_since_last_start(self) -> str:
        text = self.log_text()
        marker = f"===== harness: start #{self.starts}:"
        index = text.rfind(marker)
        return text[index:] if index >= 0 else ""

    def _sigkill(self) -> None:
        self.expected_running = False
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(timeout=STOP_TIMEOUT_S)
        _live_brokers.discard(self)

    def kill9(self) -> None:
        """SIGKILL the broker and reap it (a crash: no shutdown code runs)."""
        assert self.is_running(), f"kill9 on a broker that is not running\n{self.log_tail()}"
        self._sigkill()
        self._log_marker("SIGKILL sent")

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> int:
        """SIGTERM and wait for a clean exit; returns the exit code. A broker that
        does not exit within `timeout_s` is SIGKILLed and the test fails."""
        assert self.proc is not None, "stop on a broker never started"
        self.expected_running = False
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self._sigkill()
                pytest.fail(
                    f"gregor did not exit within {timeout_s}s of SIGTERM\n{self.log_tail()}",
                    pytrace=False,
                )
        _live_brokers.discard(self)
        self._log_marker(f"stopped, exit code {self.proc.returncode}")
        return self.proc.returncode

    def restart(self, timeout_s: float = START_TIMEOUT_S) -> None:
        """Start again with the same data dir and port (stopping it first if it
        still runs)."""
        if self.is_running():
            self.stop()
        self.start(timeout_s)

    def _log_marker(self, text: str) -> None:
        with open(self.log_path, "ab") as log:
            log.write(f"===== harness: {text}\n".encode())

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        tail = "\n".join(self.log_text().splitlines()[-lines:])
        return f"--- last {lines} lines of {self.log_path} ---\n{tail}\n--- end of log ---"

    def teardown(self) -> None:
        """Stop the process whatever state it is in. A broker that does not
        stop within STOP_TIMEOUT_S of SIGTERM is killed, and that fails the
        test: a shutdown hang is a bug, not a slow stop."""
        if self.proc is None or self.proc.poll() is not None:
            _live_brokers.discard(self)
            return
        self.proc.send_signal(signal.SIGTERM)
        hung = False
        try:
            self.proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            hung = True
            self.proc.kill()
            self.proc.wait()
        self.expected_running = False
        _live_brokers.discard(self)
        if hung:
            raise AssertionError(
                f"gregor did not stop within {STOP_TIMEOUT_S}s of SIGTERM\n{self.log_tail()}"
            )


@atexit.register
def _kill_leftover_brokers() -> None:
    # Only if pytest itself is torn down abruptly (e.g. a hang timeout).
    for b in list(_live_brokers):
        if b.proc is not None and b.proc.poll() is None:
            b.proc.kill()
            b.proc.wait()


def pytest_collection_modifyitems(config, items):
    # Hang protection for every test, if pytest-timeout is installed.
    if not config.pluginmanager.hasplugin("timeout"):
        return
    for item in items:
        if item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(TEST_TIMEOUT_S))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.failed:
        for b in getattr(item, "_gregor_brokers", ()):
            report.sections.append((f"gregor log ({b.bootstrap})", b.log_tail()))
    return report


@pytest.fixture(scope="session")
def gregor_bin() -> Path:
    path = default_gregor_bin()
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.fail(
            f"gregor binary not found at {path}: run `cargo build --release` or set GREGOR_BIN",
            pytrace=False,
        )
    return path


@pytest.fixture
def broker_factory(request, tmp_path, gregor_bin):
    """make(*extra_args, shards=2, start=True) -> a started Broker (shards=None:
    no --shards, the broker's own default). All brokers made are stopped at
    teardown; a broker that died on its own fails the test."""
    brokers: list[Broker] = []
    request.node._gregor_brokers = brokers

    def make(*extra_args, shards: int | None = 2, start: bool = True) -> Broker:
        workdir = tmp_path / f"broker{len(brokers)}"
        workdir.mkdir()
        b = Broker(gregor_bin, workdir, extra_args, shards)
        brokers.append(b)
        if start:
            b.start()
        return b

    yield make

    crashed = [b for b in brokers if b.crashed()]
    hung = []
    for b in brokers:
        try:
            b.teardown()
        except AssertionError as e:
            hung.append(str(e))
    if hung:
        pytest.fail("\n".join(hung), pytrace=False)
    if crashed:
        details = "\n".join(
            f"gregor on {b.bootstrap} exited on its own with code {b.proc.returncode}\n{b.log_tail()}"
            for b in crashed
        )
        pytest.fail(details, pytrace=False)


@pytest.fixture
def broker(broker_factory) -> Broker:
    """A started broker with default settings (auto-create topics on)."""
    return broker_factory()


# Short quorum timeouts for tests (Kafka's default is 1000 ms): elections
# after 250-500 ms without a leader.
TEST_ELECTION_TIMEOUT_MS = 250


@pytest.fixture
def cluster_factory(broker_factory):
    """make(count, *extra_args, shards=1, start=True) -> Brokers with node ids
    1..count, every one a voter of one metadata quorum (controller listeners on
    free ports), started one after the other. `shards` may list a count per
    broker (unequal shard counts)."""

    def make(count: int, *extra_args, shards: int | list[int] | None = 1, start: bool = True) -> list[Broker]:
        controller_ports = [free_port() for _ in range(count)]
        voters = ",".join(f"{i + 1}@127.0.0.1:{port}" for i, port in enumerate(controller_ports))
        brokers = []
        for i, port in enumerate(controller_ports):
            b = broker_factory(
                "--node-id", i + 1,
                "--controller-listen", f"127.0.0.1:{port}",
                "--controller-quorum-voters", voters,
                "--controller-quorum-election-timeout-ms", TEST_ELECTION_TIMEOUT_MS,
                "--metrics", "off",
                *extra_args,
                shards=shards[i] if isinstance(shards, list) else shards,
                start=False,
            )
            b.node_id = i + 1
            brokers.append(b)
        if start:
            for b in brokers:
                b.start(wait=False)
            for b in brokers:
                b.wait_ready()
        return brokers

    return make
