#!/usr/bin/env bash
# A single node and a three-node cluster (three NATS servers, R3) side by side on loopback,
# in one run: single-event HTTP appends at 64 connections (wrk) to the single node, to the
# cluster's sequencer and through a follower (forwarded); how soon a follower can read an
# acknowledged append, idle and under load; how long a failover takes after kill -9 of the
# sequencer. Everything shares this machine's cores, so this measures what replication costs,
# not what more machines would add.
#
#   scripts/bench-cluster.sh [SECONDS]     (default 10 s per wrk run)
#   JOIN_EVENTS=1000000 scripts/bench-cluster.sh   also: how long a new node takes to join a
#                                                  cluster of that many events, from nothing
#                                                  and from a snapshot
#
# Needs nats-server and wrk (apt-get install nats-server wrk); ports 7071-7073, 7080,
# 4222-4224, 6222-6224 free. Data under $BENCH_DIR (default: a temporary directory).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-10}"
dir="$(mktemp -d "${BENCH_DIR:-${TMPDIR:-/tmp}}/loom-bench-cluster.XXXXXX")"
loom=target/release/loom
bench=target/release/loom-bench
[ -x "$loom" ] && [ -x "$bench" ] || cargo build --release -p loom-cli -p loom-bench
export LOOM="$loom"
single_pid=""
cleanup() {
  [ -n "$single_pid" ] && kill "$single_pid" 2>/dev/null || true
  scripts/cluster.sh stop "$dir/cluster" >/dev/null 2>&1 || true
  pkill -P $$ wrk 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT

register() {
  curl -sf -X PUT "$1/v1/entities/cart" -H 'content-type: application/json' \
    --data-binary '{"open": true}' >/dev/null
}
appends() { # URL LABEL
  echo "### $2"
  wrk -t2 -c64 -d"${seconds}s" --latency -s tests/interop/wrk_append.lua "$1" |
    grep -E "Requests/sec|^ +(50|90|99)%|Non-2xx|Socket errors" || true
}
role() { curl -s "http://127.0.0.1:$1/v1/cluster" | sed -n 's/.*"role":"\([a-z]*\)".*/\1/p'; }
sequencer_port() {
  for _ in $(seq 1 300); do
    for port in 7071 7072 7073; do
      [ "$(role $port 2>/dev/null)" = sequencer ] && { echo $port; return; }
    done
    sleep 0.05
  done
  echo "no sequencer" >&2
  exit 1
}

echo "## $(date -u +%FT%TZ), commit $(git rev-parse --short HEAD), load $(cut -d' ' -f1-3 /proc/loadavg)"
LOOM_LOG=warn "$loom" serve --data "$dir/single" --listen 127.0.0.1:7080 >"$dir/single.log" 2>&1 &
single_pid=$!
until curl -sf http://127.0.0.1:7080/healthz >/dev/null; do sleep 0.1; done
register http://127.0.0.1:7080
appends http://127.0.0.1:7080 "single node"
kill "$single_pid"
wait "$single_pid" 2>/dev/null || true
single_pid=""

LOOM_LOG=warn scripts/cluster.sh start "$dir/cluster" >/dev/null
seq_port="$(sequencer_port)"
follower_port=7071
[ "$seq_port" = 7071 ] && follower_port=7072
register "http://127.0.0.1:$seq_port"
appends "http://127.0.0.1:$seq_port" "cluster R3: to the sequencer"
appends "http://127.0.0.1:$follower_port" "cluster R3: through a follower (forwarded)"

echo "### follower lag, idle"
"$bench" cluster-lag --sequencer "http://127.0.0.1:$seq_port" \
  --follower "http://127.0.0.1:$follower_port" --appends 2000
echo "### follower lag, beside 32 connections appending to the sequencer"
wrk -t1 -c32 -d"$((seconds * 3))s" -s tests/interop/wrk_append.lua "http://127.0.0.1:$seq_port" >/dev/null &
load=$!
sleep 1
"$bench" cluster-lag --sequencer "http://127.0.0.1:$seq_port" \
  --follower "http://127.0.0.1:$follower_port" --appends 1000
kill "$load" 2>/dev/null || true
wait "$load" 2>/dev/null || true

echo "### failover (lease 2 s, the default)"
for round in 1 2 3; do
  seq_port="$(sequencer_port)"
  node=$((seq_port - 7070))
  started=$(date +%s.%N)
  kill -9 "$(cat "$dir/cluster/loom$node.pid")"
  next="$(sequencer_port)"
  # Acknowledged through the new sequencer.
  until curl -sf -o /dev/null -X POST "http://127.0.0.1:$next/v1/events" \
    -H 'content-type: application/cloudevents+json' \
    --data "{\"specversion\":\"1.0\",\"id\":\"failover-$round\",\"source\":\"bench\",\"type\":\"t\",\"subject\":\"cart/f\",\"data\":{}}"; do
    sleep 0.02
  done
  echo "round $round: loom$node killed; first append acknowledged by loom$((next - 7070)) after $(awk -v a="$(date +%s.%N)" -v b="$started" 'BEGIN { printf "%.2f", a - b }') s"
  LOOM_LOG=warn "$loom" serve --data "$dir/cluster/loom$node" --listen "127.0.0.1:$seq_port" \
    --cluster nats://127.0.0.1:4222,nats://127.0.0.1:4223,nats://127.0.0.1:4224 \
    --node "loom$node" >>"$dir/cluster/loom$node.log" 2>&1 &
  echo $! >"$dir/cluster/loom$node.pid"
  until curl -sf "http://127.0.0.1:$seq_port/healthz" >/dev/null; do sleep 0.1; done
done

[ -n "${JOIN_EVENTS:-}" ] || exit 0
echo "### a new node joins a cluster of $JOIN_EVENTS events"
seq_port="$(sequencer_port)"
awk -v n="$JOIN_EVENTS" 'BEGIN { for (i = 0; i < n; i++)
  printf "{\"specversion\":\"1.0\",\"id\":\"join-%d\",\"source\":\"bench\",\"type\":\"had_item_added\",\"subject\":\"cart/%d\",\"data\":{\"sku\":\"apple\",\"quantity\":1}}\n", i, i % 10000 }' \
  >"$dir/join.ndjson"
started=$(date +%s.%N)
"$loom" append --url "http://127.0.0.1:$seq_port" --batch-size 1000 "$dir/join.ndjson" >/dev/null
head="$(curl -s "http://127.0.0.1:$seq_port/healthz" | sed -n 's/.*"head":\([0-9]*\).*/\1/p')"
echo "appended $JOIN_EVENTS events in batches of 1000 in $(awk -v a="$(date +%s.%N)" -v b="$started" 'BEGIN { printf "%.1f", a - b }') s; head $head"
join() { # PORT NAME LABEL
  local started
  started=$(date +%s.%N)
  LOOM_LOG=warn "$loom" serve --data "$dir/cluster/$2" --listen "127.0.0.1:$1" \
    --cluster nats://127.0.0.1:4222,nats://127.0.0.1:4223,nats://127.0.0.1:4224 \
    --node "$2" >"$dir/cluster/$2.log" 2>&1 &
  echo $! >"$dir/cluster/$2.pid"
  until [ "$(curl -s "http://127.0.0.1:$1/healthz" | sed -n 's/.*"head":\([0-9]*\).*/\1/p')" = "$head" ]; do
    sleep 0.05
  done
  echo "$3: holds all $head events $(awk -v a="$(date +%s.%N)" -v b="$started" 'BEGIN { printf "%.1f", a - b }') s after it started"
  kill "$(cat "$dir/cluster/$2.pid")"
}
join 7074 loom4 "a node from an empty directory, no snapshot (reads the whole stream)"
follower_port=7071
[ "$seq_port" = 7071 ] && follower_port=7072
started=$(date +%s.%N)
"$loom" cluster snapshot --url "http://127.0.0.1:$follower_port"
echo "snapshot taken in $(awk -v a="$(date +%s.%N)" -v b="$started" 'BEGIN { printf "%.1f", a - b }') s"
join 7075 loom5 "a node from an empty directory, from the snapshot (downloads, checks, reads the rest)"
