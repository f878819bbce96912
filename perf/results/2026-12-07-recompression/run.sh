#!/usr/bin/env bash
# The recompression runs of perf/README.md: one broker (--shards 1, CPU 0),
# gregor-perf on CPU 1, the given workloads of this directory in a row.
# Needs target/release/{gregor,gregor-perf} built. Run from anywhere:
#   bash run.sh recompress-producer recompress-lz4 recompress-zstd recompress-gzip   # run 1
#   bash run.sh recompress-lz4 recompress-producer random-producer random-zstd random-lz4   # run 2
set -x
cd "$(dirname "${BASH_SOURCE[0]}")"
REPO="$(git rev-parse --show-toplevel)"
rm -rf data; mkdir data
taskset -c 0 "$REPO"/target/release/gregor serve --shards 1 --data-dir data --listen 127.0.0.1:19092 > broker.log 2>&1 &
BP=$!
sleep 2
for w in "$@"; do
  taskset -c 1 "$REPO"/target/release/gregor-perf run "$w.toml" --bootstrap 127.0.0.1:19092 --broker-pid $BP -q --json > "result-$w.json" 2> "err-$w.txt"
done
kill $BP; wait
