#!/bin/bash
BIN=$1; LABEL=$2
pkill -f "gregor dev" ; sleep 0.5
rm -rf /work/lat/dev; mkdir -p /work/lat/dev
taskset -c 0 $BIN/gregor dev -b 3 --shards 1 --port 19092 --dir /work/lat/dev > /work/lat/dev.log 2>&1 &
DP=$!
sleep 6
PIDS=$(pgrep -P $DP | tr '\n' ' ')
echo "brokers: $PIDS"
cpu() { local t=0; for p in $PIDS; do t=$((t + $(awk '{print $14+$15}' /proc/$p/stat))); done; echo $t; }
for p in $PIDS; do taskset -p $p | tail -1; done
(sleep 14; for m in 19644 19744 19844; do curl -s 127.0.0.1:$m/metrics > /work/lat/m3-$m.txt; done) &
C0=$(cpu); T0=$(date +%s.%N)
taskset -c 1 $BIN/gregor-perf run latency-50mbps --bootstrap 127.0.0.1:19092 -q --set duration_s=15 --set warmup_s=3 --set replication_factor=3 --set target_rate=${RATE:-50MB} > /work/lat/out-$LABEL.txt 2>&1
C1=$(cpu); T1=$(date +%s.%N)
echo "brokers CPU total: $(echo "($C1-$C0)/100/($T1-$T0)*100" | bc -l | cut -c1-5)% of one core over $(echo "$T1-$T0"|bc) s"
for p in $PIDS; do echo "pid $p: $(awk '{print $14+$15}' /proc/$p/stat) ticks"; done
kill -INT $DP; wait $DP 2>/dev/null
grep -iE "publish|end-to-end|records|MB/s" /work/lat/out-$LABEL.txt | head -12
