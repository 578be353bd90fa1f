#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for a bounded time.
#
#   scripts/fuzz.sh                      # each target 60 s
#   FUZZ_SECONDS=600 scripts/fuzz.sh     # each target 10 min
#   scripts/fuzz.sh selector http_binding  # only these targets
#
# Environment:
#   FUZZ_SECONDS     seconds per target (default 60)
#   FUZZ_SANITIZER   cargo-fuzz sanitizer: none (default) or address, leak, ...
#                    (Loom's crates deny unsafe code, so panics, aborts, timeouts and
#                    out-of-memory are what the targets look for; `none` runs 2-3x faster)
#   FUZZ_JOBS        parallel fuzzing processes per target (default 1)
#
# cargo-fuzz needs nightly compiler flags; on a stable toolchain this script sets
# RUSTC_BOOTSTRAP=1 so stable rustc accepts them. Corpora grow in fuzz/corpus/<target>
# (seeded from fuzz/seeds/<target>); a crash is saved in fuzz/artifacts/<target>/ and makes
# the script exit non-zero after the remaining targets have run.
set -euo pipefail

cd "$(dirname "$0")/.."
seconds="${FUZZ_SECONDS:-60}"
sanitizer="${FUZZ_SANITIZER:-none}"
jobs="${FUZZ_JOBS:-1}"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked
fi
if ! rustc --version | grep -q nightly; then
    export RUSTC_BOOTSTRAP=1
fi

if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo fuzz list)
fi

parallel=()
if [ "$jobs" -gt 1 ]; then
    # libFuzzer writes each job's output to fuzz-<n>.log in the current directory.
    parallel=(-jobs="$jobs" -workers="$jobs")
fi
failed=()
for target in "${targets[@]}"; do
    corpus="fuzz/corpus/$target"
    mkdir -p "$corpus"
    seeds=()
    if [ -d "fuzz/seeds/$target" ]; then
        seeds=("fuzz/seeds/$target")
    fi
    echo "== $target: ${seconds}s" >&2
    if ! cargo fuzz run --sanitizer "$sanitizer" "$target" "$corpus" "${seeds[@]}" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=4096 \
        -print_final_stats=1 "${parallel[@]}"; then
        failed+=("$target")
    fi
done

if [ "${#failed[@]}" -gt 0 ]; then
    echo "fuzz targets that failed: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
    exit 1
fi
echo "every fuzz target ran ${seconds}s without a failure" >&2
