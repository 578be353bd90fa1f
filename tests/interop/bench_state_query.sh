#!/usr/bin/env bash
# Projection state query latency over HTTP (issue 5): a release `loom serve` on loopback with
# the `cart` projection over CARTS carts × EVENTS events, then wrk with 64 connections for
# DURATION. Bounded in time, loopback only, stops the server at the end.
#
#   tests/interop/bench_state_query.sh            # defaults: 1000 carts, 10 events each, 20s
#   CARTS=1000 EVENTS=10 DURATION=20s THREADS=2 tests/interop/bench_state_query.sh
#   NICE=-10 tests/interop/bench_state_query.sh   # server and wrk ahead of background jobs
#   RT=1 tests/interop/bench_state_query.sh        # server and wrk as SCHED_FIFO (root), so that
#                                                  # other jobs on a shared machine cannot preempt
#   PIN=1 tests/interop/bench_state_query.sh       # server on CPU 0 (one async worker), wrk with
#                                                  # one thread on CPU 1: the load generator no
#                                                  # longer competes with the server for a core
set -euo pipefail
cd "$(dirname "$0")/../.."
CARTS=${CARTS:-1000}
EVENTS=${EVENTS:-10}
DURATION=${DURATION:-20s}
THREADS=${THREADS:-2}
CONNECTIONS=${CONNECTIONS:-64}
PORT=${PORT:-7079}
URL=http://127.0.0.1:$PORT
LOOM=${LOOM:-target/release/loom}
WASM=target/wasm-guests/wasm32-unknown-unknown/guest/cart.wasm
NICE=${NICE:-0}
RUN=(nice -n "$NICE")
if [ "${RT:-0}" = 1 ]; then RUN=(chrt -f 10); NICE="SCHED_FIFO 10"; fi
SERVE_RUN=("${RUN[@]}")
WRK_RUN=("${RUN[@]}")
if [ "${PIN:-0}" = 1 ]; then
  SERVE_RUN=(taskset -c 0 "${RUN[@]}")
  WRK_RUN=(taskset -c 1 "${RUN[@]}")
  THREADS=1
  NICE="$NICE, server pinned to CPU 0, wrk to CPU 1"
fi

command -v wrk >/dev/null || { echo "wrk is needed: apt-get install wrk" >&2; exit 1; }
[ -x "$LOOM" ] || cargo build --release -p loom-cli
[ -f "$WASM" ] || cargo build --target wasm32-unknown-unknown --profile guest -p cart \
  --target-dir target/wasm-guests

DATA=$(mktemp -d)
LOOM_LOG=${LOOM_LOG:-info} "${SERVE_RUN[@]}" "$LOOM" serve --data "$DATA" --listen "127.0.0.1:$PORT" &
SERVER=$!
trap 'kill $SERVER 2>/dev/null; wait $SERVER 2>/dev/null; rm -rf "$DATA"' EXIT
for _ in $(seq 100); do curl -sf "$URL/healthz" >/dev/null && break; sleep 0.1; done

echo '{"open": true}' | "$LOOM" entities put cart - --url "$URL" >/dev/null
python3 - "$CARTS" "$EVENTS" > "$DATA/events.ndjson" <<'PY'
import json, sys
carts, events = int(sys.argv[1]), int(sys.argv[2])
for i in range(events):
    for c in range(carts):
        if i == 0:
            ty, data = "was_created", {}
        else:
            sku = f"sku-{i % 4}"
            ty, data = "had_item_added", {"sku": sku, "name": f"Item {sku}", "price": 100 + i, "quantity": 1}
        print(json.dumps({"specversion": "1.0", "id": f"{c}-{i}", "source": "bench", "type": ty,
                          "subject": f"cart/{c}", "data": data}))
PY
"$LOOM" append "$DATA/events.ndjson" --url "$URL" >/dev/null
"$LOOM" projections put carts --wasm "$WASM" --entity cart --wait --url "$URL"
curl -s "$URL/v1/projections/carts/state/cart/1"; echo
echo "wrk -t$THREADS -c$CONNECTIONS -d$DURATION --latency -s tests/interop/wrk_state.lua $URL (priority: $NICE)"
LOOM_BENCH_CARTS=$CARTS "${WRK_RUN[@]}" wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency \
  -s tests/interop/wrk_state.lua "$URL"
# Server-side time per state read (handler only, no queueing or network), from /metrics.
echo "server-side state read time (loom_projection_state_query_duration_seconds):"
curl -s "$URL/metrics" | grep '^loom_projection_state_query_duration_seconds' | python3 -c '
import sys
rows = [l.split() for l in sys.stdin]
count = next(float(v) for k, v in rows if k.endswith("_count"))
total = next(float(v) for k, v in rows if k.endswith("_sum"))
print(f"  {int(count)} reads, mean {total / count * 1e6:.1f} us")
for k, v in rows:
    if "_bucket" in k:
        le = k.split("\"")[1]
        print(f"  <= {le:>6} s: {float(v) / count * 100:6.2f} %")
'
