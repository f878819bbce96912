#!/usr/bin/env bash
# The test command: installs what the tests need, builds Gregor, runs the Rust
# tests, then the real-client integration tests (scripts/tests) against the
# release binary. Idempotent; extra arguments go to pytest, e.g.
#   bash scripts/test.sh -k crash
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO_ROOT="$PWD"

phase() {
    printf '\n==== %s ====\n' "$*"
}

# Run as root, or through sudo when there is one.
as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        echo "error: need root (or sudo) to run: $*" >&2
        exit 1
    fi
}

APT_UPDATED=0
apt_install() {
    if [ "$APT_UPDATED" -eq 0 ]; then
        as_root apt-get update
        APT_UPDATED=1
    fi
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@"
}

phase "1/5 system packages (kcat, libfaketime)"
if command -v kcat >/dev/null 2>&1; then
    echo "kcat present: $(command -v kcat)"
else
    apt_install kcat
fi
# libfaketime steps a broker's wall clock in test_clock_steps.py.
if [ -e /usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1 ] || [ "$(dpkg-query -W -f='${Status}' libfaketime 2>/dev/null)" = "install ok installed" ]; then
    echo "libfaketime present"
else
    apt_install libfaketime
fi

phase "2/5 python test environment (.venv)"
PYTHON="${PYTHON:-python3}"
VENV="$REPO_ROOT/.venv"
REQUIREMENTS="$REPO_ROOT/scripts/requirements.txt"
if [ ! -x "$VENV/bin/python" ]; then
    if ! "$PYTHON" -m venv "$VENV"; then
        # Debian's python3 needs the venv module (ensurepip) as a package.
        rm -rf "$VENV"
        apt_install python3-venv
        "$PYTHON" -m venv "$VENV"
    fi
fi
# Reinstall only when requirements.txt changed since the last install.
STAMP="$VENV/.requirements.sha256"
WANT="$(sha256sum "$REQUIREMENTS" | cut -d' ' -f1)"
if [ "$(cat "$STAMP" 2>/dev/null || true)" != "$WANT" ]; then
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$REQUIREMENTS"
    echo "$WANT" >"$STAMP"
fi
"$VENV/bin/python" -c 'import confluent_kafka, kafka; print("confluent-kafka", confluent_kafka.__version__, "librdkafka", confluent_kafka.libversion()[0], "kafka-python", kafka.__version__)'

# kafkajs for the default-clients tests, with the machine's Node.js.
NODE_DIR="$REPO_ROOT/scripts/js"
if [ ! -d "$NODE_DIR/node_modules/kafkajs" ]; then
    if ! command -v npm >/dev/null 2>&1; then
        apt_install nodejs npm
    fi
    (cd "$NODE_DIR" && npm ci --no-audit --no-fund)
fi

phase "3/5 layer check and cargo build --release --workspace"
# shards/src modules point down only (ARCHITECTURE.md); names file:line.
"$PYTHON" "$REPO_ROOT/scripts/check_layers.py"
cargo build --release --workspace

phase "4/5 cargo test --workspace --release"
cargo test --workspace --release

# Fuzzing runs in CI, or when asked for: ~20 s per target keeps it near a
# minute and a half (plus the cargo-fuzz install and build the first time).
if [ "${CI:-}" = "true" ] || [ -n "${FUZZ_SECONDS:-}" ]; then
    phase "4b/5 fuzz targets (scripts/fuzz.sh)"
    bash "$REPO_ROOT/scripts/fuzz.sh" "${FUZZ_SECONDS:-20}"
else
    # Not fuzzed here, but a broken fuzz target still fails the run.
    phase "4b/5 fuzz targets compile (cargo check, fuzz/)"
    (unset CARGO_TARGET_DIR; cargo check --quiet --manifest-path "$REPO_ROOT/fuzz/Cargo.toml" --bins)
fi

TARGET_DIR="${CARGO_TARGET_DIR:-$REPO_ROOT/target}"
case "$TARGET_DIR" in
    /*) ;;
    *) TARGET_DIR="$REPO_ROOT/$TARGET_DIR" ;;
esac
export GREGOR_BIN="${GREGOR_BIN:-$TARGET_DIR/release/gregor}"
echo "gregor binary: $GREGOR_BIN"

# Other people's suites judge us: kafka-python's own integration tests
# against a fresh Gregor (its sdist from PyPI, cached after the first run).
phase "5a/5 kafka-python's integration suite (scripts/kafka_python_suite/run.py)"
"$VENV/bin/python" "$REPO_ROOT/scripts/kafka_python_suite/run.py"

phase "5/5 real-client tests (pytest scripts/tests)"
exec "$VENV/bin/python" -m pytest -p no:cacheprovider -v -ra --durations=15 "$REPO_ROOT/scripts/tests" "$@"
