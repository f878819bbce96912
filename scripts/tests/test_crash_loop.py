"""CI's run of scripts/crash-loop: 10 SIGKILL/restart/verify cycles with
several acks=all producers on several partitions (the script's default is
100; run it by hand for more). The script exits non-zero on any acknowledged
record lost, duplicated or moved, or on offsets that are not dense."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from conftest import REPO_ROOT

CI_CYCLES = 10
CRASH_LOOP_SEED = int(os.environ.get("GREGOR_CRASH_SEED", "4242"))
SCRIPT_TIMEOUT_S = 900  # hang protection only


def test_crash_loop_ci_cycles(gregor_bin, tmp_path):
    cmd = [
        sys.executable,
        str(REPO_ROOT / "scripts" / "crash-loop"),
        "--cycles",
        str(CI_CYCLES),
        "--seed",
        str(CRASH_LOOP_SEED),
        "--binary",
        str(gregor_bin),
        "--workdir",
        str(tmp_path / "crash-loop"),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=SCRIPT_TIMEOUT_S)
    out = proc.stdout
    print(out)
    assert proc.returncode == 0, f"crash-loop failed (exit {proc.returncode}):\n{out[-6000:]}\n{proc.stderr[-3000:]}"
    totals = re.search(r"^TOTALS (.*)$", out, re.MULTILINE)
    assert totals, f"no TOTALS line in:\n{out[-3000:]}"
    fields = dict(kv.split("=", 1) for kv in totals.group(1).split())
    assert int(fields["cycles"]) == CI_CYCLES
    assert int(fields["lost"]) == 0 and int(fields["duplicates"]) == 0
    assert int(fields["acked"]) > 0
    assert len(re.findall(r"^cycle \d+: ", out, re.MULTILINE)) == CI_CYCLES
