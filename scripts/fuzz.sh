#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for SECONDS each (default 30) from
# its committed seed corpus. Installs cargo-fuzz when missing (its own target
# dir; a failed install fails the run). Nightly runs with AddressSanitizer;
# without nightly it runs on stable with no sanitizer. A finding fails it.
#   bash scripts/fuzz.sh [SECONDS]
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
SECONDS_PER_TARGET="${1:-30}"
TARGETS=(request record_batch metadata_log group_records)

# Nightly gives AddressSanitizer; without it (a machine with only the
# stable toolchain) libFuzzer runs on stable with coverage instrumentation and
# no sanitizer: slower to catch memory bugs, but it runs, never "skipped".
# FUZZ_TOOLCHAIN=stable forces the stable path.
if [ "${FUZZ_TOOLCHAIN:-}" != "stable" ] && rustup run nightly rustc --version >/dev/null 2>&1; then
    TOOLCHAIN=(+nightly)
    SANITIZER=()
    echo "fuzz: nightly with AddressSanitizer"
else
    TOOLCHAIN=(+stable)
    SANITIZER=(--sanitizer none)
    echo "fuzz: stable, no sanitizer (no nightly toolchain here)"
fi
if ! cargo fuzz --help >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz (a few minutes on a 2-core machine)"
    started_s=$(date +%s)
    if ! cargo install cargo-fuzz --locked --target-dir "${CARGO_FUZZ_INSTALL_TARGET_DIR:-/tmp/cargo-fuzz-install}"; then
        echo "fuzz: FAILED: cargo install cargo-fuzz failed" >&2
        exit 1
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
    if ! cargo "${TOOLCHAIN[@]}" fuzz run "${SANITIZER[@]}" "$target" "$work" -- \
        -max_total_time="$SECONDS_PER_TARGET" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1; then
        failed+=("$target")
    fi
    rm -rf "$work"
done
if [ "${#failed[@]}" -gt 0 ]; then
    echo "fuzz: findings in: ${failed[*]} (see fuzz/artifacts/)"
    exit 1
fi
