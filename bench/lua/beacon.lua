-- POST /utm/beacon with a new visitor id and touch id on every request, so every insert is real.
-- wrk -s bench/lua/beacon.lua URL -- <run prefix>
local threads = {}
local n = 0

function setup(thread)
  n = n + 1
  thread:set("tid", n)
  table.insert(threads, thread)
end

function init(args)
  prefix = (args[1] or "run") .. "-" .. tid .. "-"
  counter = 0
  ok = 0
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "text/plain;charset=UTF-8"
end

function request()
  counter = counter + 1
  local id = prefix .. counter
  local campaign = "spring-" .. (counter % 50)
  -- The snippet's body: one touch with its landing URL, referrer and tracked parameters.
  local body = '{"v":"v' .. id .. '","touches":[{"id":"t' .. id .. '","ts":1750000000000,'
    .. '"url":"https://www.example.com/pricing?utm_source=newsletter&utm_medium=email'
    .. '&utm_campaign=' .. campaign .. '","referrer":"https://mail.google.com/",'
    .. '"params":{"utm_source":"newsletter","utm_medium":"email","utm_campaign":"'
    .. campaign .. '"}}]}'
  return wrk.format(nil, nil, nil, body)
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
