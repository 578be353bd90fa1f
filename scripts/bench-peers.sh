#!/usr/bin/env bash
# Side-by-side benchmark: Loom's ledger vs PostgreSQL 15, and UmaDB with UMADB=1 (issue 7).
# Prints a markdown table.
# Installs what it needs (Debian/Ubuntu): postgresql (initdb/pg_ctl), protobuf-compiler, wrk.
# Usage: scripts/bench-peers.sh [loom-bench peers flags, e.g. --seconds 2 --events 1000000 --dir /data]
#        UMADB=1 scripts/bench-peers.sh ...   # also UmaDB: installs protoc and `umadb` if missing
#                                             # and builds loom-bench with `--features umadb`
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
if [ ! -x "$PG_BIN/initdb" ]; then
    $SUDO apt-get update
    $SUDO apt-get install -y postgresql protobuf-compiler
    PG_BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
fi
# The benchmark runs initdb/pg_ctl as the `postgres` user (runuser) when started as root.
# The PostgreSQL data dir and the Loom data dirs are temp dirs under --dir (default: $TMPDIR),
# so pass --dir on the disk you want to measure; both systems then fsync to the same disk.

FEATURES=()
if [ "${UMADB:-0}" = 1 ]; then
    # The UmaDB server and its Rust client both build a gRPC stack that needs protoc.
    if ! command -v protoc >/dev/null; then
        $SUDO apt-get update
        $SUDO apt-get install -y protobuf-compiler
    fi
    # The benchmark finds the server through UMADB_BIN, then PATH, then ~/.cargo/bin, and
    # starts it itself per workload (loopback, temp data dir under --dir).
    if [ -z "${UMADB_BIN:-}" ] && ! command -v umadb >/dev/null \
        && [ ! -x "${CARGO_HOME:-$HOME/.cargo}/bin/umadb" ]; then
        cargo install umadb --locked
    fi
    FEATURES=(--features umadb)
fi

# W6 loads `loom serve` with wrk.
if ! command -v wrk >/dev/null; then
    $SUDO apt-get update
    $SUDO apt-get install -y wrk
fi

# The HTTP rows (W1–W3, W6) run the release `loom serve`.
cargo build --release -p loom-bench -p loom-cli "${FEATURES[@]}"
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, load: $(uptime)" >&2
exec ./target/release/loom-bench peers --pg-bin "$PG_BIN" "$@"
