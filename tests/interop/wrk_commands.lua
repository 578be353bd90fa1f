-- Bank deposits as commands (issue 6): POST /v1/commands/account/{key}.
-- LOOM_BENCH_KEYS accounts (opened beforehand); each request picks the next key of its
-- thread's sequence, so 32 connections spread over distinct keys. LOOM_BENCH_KEYS=1: every
-- request goes to the one shared account (contention on a single stream).
local keys = tonumber(os.getenv("LOOM_BENCH_KEYS") or "1024")
local counter = 0
local threads = {}
function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end
function init(args)
  counter = tid * 7919
end
local headers = { ["content-type"] = "application/json" }
local body = '{"type":"deposit","amount":1}'
request = function()
  counter = counter + 1
  return wrk.format("POST", "/v1/commands/account/" .. (counter % keys), headers, body)
end
local bad = 0
response = function(status, headers, body)
  if status ~= 200 then
    bad = bad + 1
    if bad <= 5 then
      io.write("unexpected status " .. status .. ": " .. body .. "\n")
    end
  end
end
