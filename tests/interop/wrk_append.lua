-- Single-event appends in binary mode, a unique (source, id) per request. The source names the
-- run, so that a second run against the same server appends new events instead of retrying
-- the first run's (which the server answers as idempotent retries, without a write).
local counter = 0
local thread_id = 0
local run_id = ""
local threads = {}
-- Made once, in the main state that calls setup, and handed to every thread as `run`.
math.randomseed(os.time() + math.floor(os.clock() * 1e6))
local this_run = string.format("%d-%d", os.time(), math.random(1, 1e9))
function setup(thread)
  thread:set("tid", #threads + 1)
  thread:set("run", this_run)
  table.insert(threads, thread)
end
function init(args)
  thread_id = tid
  run_id = run
end
request = function()
  counter = counter + 1
  local id = thread_id .. "-" .. counter
  local headers = {
    ["ce-specversion"] = "1.0",
    ["ce-id"] = id,
    ["ce-source"] = "wrk-" .. run_id,
    ["ce-type"] = "had_item_added",
    ["ce-subject"] = "cart/" .. (counter % 1000),
    ["content-type"] = "application/json",
  }
  return wrk.format("POST", "/v1/events", headers, '{"sku":"apple","quantity":1}')
end
response = function(status, headers, body)
  if status ~= 201 then
    io.write("unexpected status " .. status .. ": " .. body .. "\n")
  end
end
-- The tail in more detail than `--latency` gives (p99.5, p99.9, max).
done = function(summary, latency, requests)
  for _, p in ipairs({90, 95, 98, 99, 99.5, 99.9}) do
    io.write(string.format("P%g %.2fms\n", p, latency:percentile(p) / 1000))
  end
  io.write(string.format("max %.2fms\n", latency.max / 1000))
end
