#!/usr/bin/env bash
# Side-by-side benchmark: Loom's ledger vs PostgreSQL 15 (issue 7). Prints a markdown table.
# Installs what it needs (Debian/Ubuntu): postgresql (initdb/pg_ctl), protobuf-compiler.
# Usage: scripts/bench-peers.sh [loom-bench peers flags, e.g. --seconds 2 --events 1000000 --dir /data]
set -euo pipefail
cd "$(dirname "$0")/.."

PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
if [ ! -x "$PG_BIN/initdb" ]; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
    $SUDO apt-get update
    $SUDO apt-get install -y postgresql protobuf-compiler
    PG_BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
fi
# The benchmark runs initdb/pg_ctl as the `postgres` user (runuser) when started as root.
# The PostgreSQL data dir and the Loom data dirs are temp dirs under --dir (default: $TMPDIR),
# so pass --dir on the disk you want to measure; both systems then fsync to the same disk.
#
# UmaDB (`cargo install umadb`) is not part of this run yet: see docs/benchmarks.md.

cargo build --release -p loom-bench
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, load: $(uptime)" >&2
exec ./target/release/loom-bench peers --pg-bin "$PG_BIN" "$@"
