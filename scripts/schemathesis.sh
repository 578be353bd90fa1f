#!/usr/bin/env bash
# The API contract check by hand, with more examples than CI's: schemathesis (PyPI) with every
# check against the server's own /v1/openapi.json, configured by tests/interop/schemathesis.toml
# (CI runs the same through crates/cli/tests/cli/contract.rs). Starts a release server on a
# temp data dir on loopback and stops it afterwards.
# Usage: scripts/schemathesis.sh [MAX_EXAMPLES]   (default 100 per operation)
set -euo pipefail
cd "$(dirname "$0")/.."
command -v schemathesis >/dev/null || python3 -m pip install --quiet schemathesis
cargo build --release -p loom-cli
data="$(mktemp -d)"
port=7111
./target/release/loom serve --data "$data" --listen "127.0.0.1:$port" --max-wait-ms 1000 &
pid=$!
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$data"' EXIT
for _ in $(seq 50); do curl -sf "127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.2; done
curl -sf -X PUT "127.0.0.1:$port/v1/entities/cart" -H 'content-type: application/json' -d '{"open":true}' >/dev/null
rc=0
schemathesis --config-file tests/interop/schemathesis.toml run \
  "http://127.0.0.1:$port/v1/openapi.json" --checks all --exclude-name 'POST /v1/modules' \
  --max-examples "${1:-100}" --workers 1 || rc=$?
# The server must still be up and healthy.
curl -sf "127.0.0.1:$port/healthz"
echo
exit "$rc"
