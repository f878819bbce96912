set -x  # needs target/release/{gregor,gregor-perf} built
# Run from anywhere: data and results go beside this script.
cd "$(dirname "${BASH_SOURCE[0]}")"
REPO="$(git rev-parse --show-toplevel)"
rm -rf data; mkdir data
taskset -c 0 "$REPO"/target/release/gregor serve --shards 1 --data-dir data --listen 127.0.0.1:19092 > broker.log 2>&1 &
BP=$!
sleep 2
for c in producer lz4 zstd gzip; do
  taskset -c 1 "$REPO"/target/release/gregor-perf run recompress-$c.toml --bootstrap 127.0.0.1:19092 --broker-pid $BP -q --json > result-$c.json 2> err-$c.txt
done
kill $BP; wait
