#!/usr/bin/env bash
# Commands over HTTP (issue 6): a release `loom serve` on loopback with the bank decider bound
# to `account` (the example's closed registration), KEYS accounts opened beforehand, then wrk
# with CONNECTIONS connections sending deposit commands for DURATION: once spread over the
# KEYS accounts, once all on one shared account. Bounded in time, loopback only, stops the
# server at the end, then checks that every account's stored events fold to the deposits
# acknowledged (no lost or duplicated deposit).
#
#   tests/interop/bench_commands.sh                    # defaults: 1024 accounts, 32 conns, 15s
#   KEYS=1024 CONNECTIONS=32 DURATION=15s THREADS=2 tests/interop/bench_commands.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
KEYS=${KEYS:-1024}
DURATION=${DURATION:-15s}
THREADS=${THREADS:-2}
CONNECTIONS=${CONNECTIONS:-32}
PORT=${PORT:-7081}
URL=http://127.0.0.1:$PORT
LOOM=${LOOM:-target/release/loom}
WASM=target/wasm-guests/wasm32-unknown-unknown/guest/bank.wasm

command -v wrk >/dev/null || { echo "wrk is needed: apt-get install wrk" >&2; exit 1; }
[ -x "$LOOM" ] || cargo build --release -p loom-cli
[ -f "$WASM" ] || cargo build --target wasm32-unknown-unknown --profile guest -p bank \
  --target-dir target/wasm-guests

DATA=$(mktemp -d)
LOOM_LOG=${LOOM_LOG:-warn} "$LOOM" serve --data "$DATA" --listen "127.0.0.1:$PORT" &
SERVER=$!
trap 'kill $SERVER 2>/dev/null; wait $SERVER 2>/dev/null; rm -rf "$DATA"' EXIT
for _ in $(seq 100); do curl -sf "$URL/healthz" >/dev/null && break; sleep 0.1; done

"$LOOM" entities put account examples/bank/entity.json --url "$URL" >/dev/null
"$LOOM" deciders put account --wasm "$WASM" --url "$URL"
# Open the accounts with one batch of commands' worth of events (one append, not timed).
python3 - "$KEYS" > "$DATA/open.ndjson" <<'PY'
import json, sys
for k in range(int(sys.argv[1])):
    print(json.dumps({"specversion": "1.0", "id": f"open-{k}", "source": "bench", "type": "was_opened",
                      "subject": f"account/{k}", "data": {"owner": f"owner-{k}"}}))
PY
"$LOOM" append "$DATA/open.ndjson" --url "$URL" >/dev/null
"$LOOM" command account 0 '{"type":"deposit","amount":1}' --url "$URL"

run() {
  local keys=$1
  echo
  echo "== $2: LOOM_BENCH_KEYS=$keys wrk -t$THREADS -c$CONNECTIONS -d$DURATION --latency -s tests/interop/wrk_commands.lua $URL"
  local before
  before=$(curl -s "$URL/metrics" | awk '/^loom_commands_total\{outcome="ok"\}/ {print $2}')
  LOOM_BENCH_KEYS=$keys wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency \
    -s tests/interop/wrk_commands.lua "$URL"
  curl -s "$URL/metrics" | grep -E '^loom_(commands_total|commits_total|appends_total)'
  local after
  after=$(curl -s "$URL/metrics" | awk '/^loom_commands_total\{outcome="ok"\}/ {print $2}')
  echo "commands acknowledged in this run: $((after - before))"
}
run "$KEYS" "distinct keys ($KEYS accounts)"
run 1 "one shared key (account/0)"

# Every deposit acknowledged is in the ledger once: the credited total equals the ok count.
# A command whose client wrk dropped at the end of a run still runs to its end on the server
# (and is counted then); give those a moment, so that the count and the ledger are read at rest.
sleep 1
OK=$(curl -s "$URL/metrics" | awk '/^loom_commands_total\{outcome="ok"\}/ {print $2}')
CREDITS=$("$LOOM" events --url "$URL" --json 2>/dev/null \
  | python3 -c 'import json,sys
n=0
for line in sys.stdin:
    line=line.strip()
    if not line: continue
    v=json.loads(line)
    for e in (v if isinstance(v,list) else [v]):
        if e.get("type")=="was_credited": n+=e["data"]["amount"]
print(n)')
OK_AFTER=$(curl -s "$URL/metrics" | awk '/^loom_commands_total\{outcome="ok"\}/ {print $2}')
echo "acknowledged deposits (metrics ok count): $OK; credited in the ledger: $CREDITS"
[ "$OK" = "$OK_AFTER" ] || { echo "commands still running while checking ($OK, then $OK_AFTER)" >&2; exit 1; }
[ "$OK" = "$CREDITS" ] || { echo "MISMATCH" >&2; exit 1; }
