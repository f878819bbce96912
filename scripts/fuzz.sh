#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for SECONDS each (default 30) from
# its corpus in fuzz/corpus/<target>, after replaying the inputs that once
# crashed it (fuzz/regressions/<target>/). Installs cargo-fuzz when missing
# (its own target dir; a failed install fails the run). Nightly runs with AddressSanitizer;
# without nightly it runs on stable with no sanitizer. A finding fails it.
#   bash scripts/fuzz.sh [SECONDS]      (FUZZ_TARGETS="request ..." for some)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
SECONDS_PER_TARGET="${1:-30}"
TARGETS=(${FUZZ_TARGETS:-request record_batch metadata_log group_records})

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
summary=()
for target in "${TARGETS[@]}"; do
    corpus="fuzz/corpus/$target"
    regressions="fuzz/regressions/$target"
    mkdir -p "$regressions"
    # Every input that once crashed a target is replayed first (each run
    # once): a fix that regresses fails here before any fuzzing.
    if [ -n "$(ls -A "$regressions")" ]; then
        echo "==== replay $target: $(ls -A "$regressions" | wc -l) saved inputs ===="
        if ! cargo "${TOOLCHAIN[@]}" fuzz run "${SANITIZER[@]}" "$target" "$regressions" -- \
            -runs=0 -rss_limit_mb=2048 -timeout=10; then
            failed+=("$target (replay)")
            continue
        fi
    fi
    echo "==== fuzz $target for ${SECONDS_PER_TARGET}s ===="
    before=$(ls -A "$corpus" | wc -l)
    log="$(mktemp)"
    # libFuzzer adds the inputs that reach new coverage to the first corpus
    # directory: they stay in fuzz/corpus/<target> (commit them to keep
    # them; a CI clone drops them). A crashing input is saved in
    # fuzz/regressions/<target>/, where the next run replays it.
    if ! cargo "${TOOLCHAIN[@]}" fuzz run "${SANITIZER[@]}" "$target" "$corpus" -- \
        -max_total_time="$SECONDS_PER_TARGET" -rss_limit_mb=2048 -timeout=10 \
        -artifact_prefix="$regressions/" -print_final_stats=1 2>&1 | tee "$log"; then
        failed+=("$target")
    fi
    executions=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    summary+=("$target: ${SECONDS_PER_TARGET} s, ${executions:-?} executions, $(( $(ls -A "$corpus" | wc -l) - before )) new corpus entries (now $(ls -A "$corpus" | wc -l))")
    rm -f "$log"
done
echo "==== fuzz summary ($( [ "${#SANITIZER[@]}" -eq 0 ] && echo "nightly, AddressSanitizer" || echo "stable, no sanitizer")) ===="
if [ "${#summary[@]}" -gt 0 ]; then printf 'fuzz: %s\n' "${summary[@]}"; fi
if [ "${#failed[@]}" -gt 0 ]; then
    echo "fuzz: findings in: ${failed[*]} (inputs saved under fuzz/regressions/)"
    exit 1
fi
