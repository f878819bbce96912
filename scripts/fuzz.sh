#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for SECONDS each (default 30) from
# its committed seed corpus. Installs cargo-fuzz when missing (its own target
# dir); skips, with a message and exit 0, when no nightly toolchain or the
# install fails: fuzzing is an extra, not a gate on machines without it.
#   bash scripts/fuzz.sh [SECONDS]
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
SECONDS_PER_TARGET="${1:-30}"
TARGETS=(request record_batch metadata_log group_records)

if ! rustup run nightly rustc --version >/dev/null 2>&1; then
    echo "fuzz: skipped: no nightly toolchain (rustup toolchain install nightly)"
    exit 0
fi
if ! cargo fuzz --help >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz (a few minutes on a 2-core machine)"
    started_s=$(date +%s)
    if ! cargo install cargo-fuzz --locked --target-dir "${CARGO_FUZZ_INSTALL_TARGET_DIR:-/tmp/cargo-fuzz-install}"; then
        echo "fuzz: skipped: cargo install cargo-fuzz failed"
        exit 0
    fi
    echo "fuzz: cargo-fuzz installed in $(( $(date +%s) - started_s )) s"
fi

# The fuzz crate keeps its own target dir (fuzz/target): it is built with
# sanitizer flags that would invalidate the main build's cache.
unset CARGO_TARGET_DIR
failed=()
for target in "${TARGETS[@]}"; do
    echo "==== fuzz $target for ${SECONDS_PER_TARGET}s ===="
    # A scratch copy of the corpus: new inputs found in CI are not committed.
    work="$(mktemp -d)"
    cp -r "fuzz/corpus/$target/." "$work/"
    # A finding fails the run after the other targets had their turn; the
    # input is saved under fuzz/artifacts/<target>/.
    if ! cargo +nightly fuzz run "$target" "$work" -- \
        -max_total_time="$SECONDS_PER_TARGET" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1; then
        failed+=("$target")
    fi
    rm -rf "$work"
done
if [ "${#failed[@]}" -gt 0 ]; then
    echo "fuzz: findings in: ${failed[*]} (see fuzz/artifacts/)"
    exit 1
fi
