#!/usr/bin/env bash
# A Loom cluster on loopback: three NATS servers with JetStream (clustered, R3) and three
# `loom serve` nodes joined to them.
#
#   scripts/cluster.sh start [DIR]   start everything (data, logs, pids under DIR,
#                                    default ./loom-cluster); prints the nodes' URLs
#   scripts/cluster.sh stop  [DIR]   stop the Loom nodes (SIGTERM), then the NATS servers
#   scripts/cluster.sh status [DIR]  GET /v1/cluster on every node
#
# Ports: NATS clients 4222-4224, NATS routes 6222-6224, Loom HTTP 7071-7073. Set LOOM to a
# built binary to skip the cargo build (default: target/release/loom, built if missing).
set -euo pipefail
cd "$(dirname "$0")/.."
command="${1:-start}"
dir="$(realpath -m "${2:-./loom-cluster}")"
loom="${LOOM:-target/release/loom}"
nats_urls="nats://127.0.0.1:4222,nats://127.0.0.1:4223,nats://127.0.0.1:4224"

start() {
  command -v nats-server >/dev/null || { echo "nats-server is not installed (apt-get install nats-server)" >&2; exit 1; }
  [ -x "$loom" ] || cargo build --release --bin loom
  mkdir -p "$dir"
  for i in 1 2 3; do
    cat >"$dir/nats$i.conf" <<CONF
server_name: n$i
listen: 127.0.0.1:$((4221 + i))
max_payload: 8MB
jetstream { store_dir: "$dir/nats$i" }
cluster {
  name: loom
  listen: 127.0.0.1:$((6221 + i))
  routes: [nats://127.0.0.1:6222, nats://127.0.0.1:6223, nats://127.0.0.1:6224]
}
CONF
    nats-server -c "$dir/nats$i.conf" >"$dir/nats$i.log" 2>&1 &
    echo $! >"$dir/nats$i.pid"
  done
  for i in 1 2 3; do
    LOOM_LOG="${LOOM_LOG:-info}" "$loom" serve --data "$dir/loom$i" --listen "127.0.0.1:$((7070 + i))" \
      --cluster "$nats_urls" --node "loom$i" >"$dir/loom$i.log" 2>&1 &
    echo $! >"$dir/loom$i.pid"
  done
  for i in 1 2 3; do
    for _ in $(seq 1 300); do
      grep -q "loom listening on" "$dir/loom$i.log" 2>/dev/null && break
      kill -0 "$(cat "$dir/loom$i.pid")" 2>/dev/null || { echo "loom$i exited:" >&2; tail -5 "$dir/loom$i.log" >&2; exit 1; }
      sleep 0.1
    done
    echo "loom$i: http://127.0.0.1:$((7070 + i))"
  done
}

stop() {
  for i in 1 2 3; do
    [ -f "$dir/loom$i.pid" ] && kill "$(cat "$dir/loom$i.pid")" 2>/dev/null || true
  done
  for i in 1 2 3; do
    [ -f "$dir/loom$i.pid" ] && while kill -0 "$(cat "$dir/loom$i.pid")" 2>/dev/null; do sleep 0.1; done
    rm -f "$dir/loom$i.pid"
  done
  for i in 1 2 3; do
    [ -f "$dir/nats$i.pid" ] && kill "$(cat "$dir/nats$i.pid")" 2>/dev/null || true
    rm -f "$dir/nats$i.pid"
  done
  echo "stopped"
}

status() {
  for i in 1 2 3; do
    echo "loom$i: $(curl -s "http://127.0.0.1:$((7070 + i))/v1/cluster" || echo unreachable)"
  done
}

case "$command" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status [DIR]" >&2; exit 2 ;;
esac
