#!/usr/bin/env bash
# The long variant of the kill -9 fault test: 25 kills of `loom serve` under concurrent HTTP
# load on one data directory (the test suite runs 5). Usage: scripts/kill9.sh [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
LOOM_KILL_ROUNDS="${1:-25}" cargo test -p loom-cli --test cli kill9 -- --nocapture
