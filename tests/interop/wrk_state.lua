-- wrk script: GET the live state of a random cart of the `carts` projection (carts 0..N-1,
-- N from LOOM_BENCH_CARTS, default 1000). No response() hook, so that wrk spends as little
-- of the shared CPU as it can; its summary reports any non-2xx answer.
-- Used by tests/interop/bench_state_query.sh (see docs/benchmarks.md).
local carts = tonumber(os.getenv("LOOM_BENCH_CARTS") or "1000")

request = function()
  local k = math.random(0, carts - 1)
  return wrk.format("GET", "/v1/projections/carts/state/cart/" .. k)
end
