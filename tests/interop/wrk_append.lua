-- Single-event appends in binary mode, a unique (source, id) per request.
local counter = 0
local thread_id = 0
local threads = {}
function setup(thread)
  thread:set("tid", #threads + 1)
  table.insert(threads, thread)
end
function init(args)
  thread_id = tid
end
request = function()
  counter = counter + 1
  local id = thread_id .. "-" .. counter
  local headers = {
    ["ce-specversion"] = "1.0",
    ["ce-id"] = id,
    ["ce-source"] = "wrk",
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
