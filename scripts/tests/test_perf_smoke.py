"""Smoke test of the perf harness: gregor-perf runs its 2-second `smoke`
workload against a real Gregor and reports records produced and consumed.

Only that records flowed is checked, never how fast: benchmarks are not
assertions (DESIGN.md §7). The timeout below is hang protection.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

PERF_TIMEOUT_S = 120  # hang protection only


REPO_ROOT = Path(__file__).resolve().parents[2]


def gregor_perf_bin() -> Path:
    """GREGOR_PERF_BIN, else beside GREGOR_BIN, else target/release/gregor-perf."""
    if os.environ.get("GREGOR_PERF_BIN"):
        return Path(os.environ["GREGOR_PERF_BIN"])
    if os.environ.get("GREGOR_BIN"):
        return Path(os.environ["GREGOR_BIN"]).with_name("gregor-perf")
    target = Path(os.environ.get("CARGO_TARGET_DIR") or REPO_ROOT / "target")
    if not target.is_absolute():
        target = REPO_ROOT / target
    return target / "release" / "gregor-perf"


@pytest.fixture(scope="module")
def perf_bin() -> Path:
    path = gregor_perf_bin()
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.fail(
            f"gregor-perf not found at {path}: run `cargo build --release --workspace` "
            "or set GREGOR_PERF_BIN",
            pytrace=False,
        )
    return path


def run_perf(perf_bin: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(perf_bin), *args],
        capture_output=True,
        text=True,
        timeout=PERF_TIMEOUT_S,
        cwd=cwd,
        # No cached machine limits from the developer's home: a clean run.
        env={**os.environ, "XDG_CACHE_HOME": str(cwd / "cache")},
    )


def test_smoke_workload_produces_and_consumes(broker, perf_bin, tmp_path):
    report_dir = tmp_path / "report"
    proc = run_perf(
        perf_bin,
        "run",
        "smoke",
        "--bootstrap",
        broker.bootstrap,
        "--label",
        "gregor",
        "--json",
        "--quiet",
        "--report",
        str(report_dir),
        cwd=tmp_path,
    )
    assert proc.returncode == 0, f"gregor-perf failed:\n{proc.stderr}\n{proc.stdout}"
    report = json.loads(proc.stdout)
    assert report["workload"]["name"] == "smoke"
    assert report["librdkafka"], "the client version is reported"
    (result,) = report["results"]
    m = result["measured"]
    assert m["errors"] == 0, result["last_errors"]
    assert m["acked"] > 0 and m["acked"] == m["sent"], m
    assert m["produce"]["msgs"] > 0
    assert m["consume"]["msgs"] > 0
    assert m["publish_latency"]["count"] == m["acked"]
    assert m["e2e_latency"]["count"] > 0
    assert m["drained"], "every record acknowledged and read back"
    assert m["consumed_in_window_by_intended"] == [m["acked"]]
    # The report directory has the machine-readable result, the summary and plots.
    for name in ("result.json", "summary.md", "latency-over-time.svg",
                 "throughput-over-time.svg", "latency-distribution.svg"):
        assert (report_dir / name).is_file(), name


def test_bad_input_is_a_one_line_error(broker, perf_bin, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('record_size = "1 KiB"\ntarget_rate = 0\nduration_s = 1\nrecrod_size = 5\n')
    proc = run_perf(perf_bin, "run", str(bad), "--bootstrap", broker.bootstrap, cwd=tmp_path)
    assert proc.returncode != 0
    assert "unknown field `recrod_size`" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "panicked" not in proc.stderr

    # A port nobody listens on: refused at once, one line, non-zero exit.
    proc = run_perf(perf_bin, "run", "smoke", "--bootstrap", "127.0.0.1:1", cwd=tmp_path)
    assert proc.returncode != 0
    assert "cannot connect to bootstrap 127.0.0.1:1" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
