-- Shared by the wrk scripts: numbers the threads, counts 2xx answers, prints one BENCH line.
-- Load it first: dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "") .. "count.lua")
local threads = {}
local n = 0

function setup(thread)
  n = n + 1
  thread:set("tid", n)
  table.insert(threads, thread)
end

function response(status, headers, body)
  if status >= 200 and status < 300 then
    ok = ok + 1
  end
end

function done(summary, latency, requests)
  local good = 0
  for _, thread in ipairs(threads) do
    good = good + thread:get("ok")
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH {"ok":%d,"requests":%d,"duration_us":%d,"socket_errors":%d,"p50_us":%d,"p99_us":%d}\n',
    good, summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
