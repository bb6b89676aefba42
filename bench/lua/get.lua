-- GET the URL given to wrk, with no cookie (a new anonymous visitor every time); counts 2xx.
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  ok = 0
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
