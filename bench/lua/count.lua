-- Shared by the wrk scripts: numbers the threads, counts 2xx answers, prints one BENCH line, and
-- makes the pool of client addresses the requests come from.
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

local function ipv4()
  -- 11.0.0.0 to 223.255.255.255 without 127/8 (loopback): public unicast, as clients are.
  local a = math.random(11, 222)
  if a >= 127 then a = a + 1 end
  return a .. "." .. math.random(0, 255) .. "." .. math.random(0, 255) .. "." .. math.random(1, 254)
end

local function ipv6()
  -- 2001::/16 to 3fff::/16, global unicast, random groups throughout (so a /64 of its own).
  return string.format("%x:%x:%x:%x:%x:%x:%x:%x", math.random(0x2001, 0x3fff),
    math.random(0, 0xffff), math.random(0, 0xffff), math.random(0, 0xffff),
    math.random(0, 0xffff), math.random(0, 0xffff), math.random(0, 0xffff),
    math.random(0, 0xffff))
end

-- A pool of `size` random client addresses, half IPv4, half IPv6, seeded by `seed` and the
-- thread's number; client_address() then gives one of them at random (nil for an empty pool:
-- every request from the one address of the load generator).
function address_pool(seed, size)
  math.randomseed((tonumber(seed) or os.time()) + tid * 7919)
  pool = {}
  pool_size = tonumber(size) or 0
  for k = 1, pool_size do
    pool[k] = (k % 2 == 0) and ipv4() or ipv6()
  end
end

-- Sets X-Forwarded-For (the app is behind ProxyFix(x_for=1)) to a client of the pool.
function from_client()
  if pool_size > 0 then
    wrk.headers["X-Forwarded-For"] = pool[math.random(1, pool_size)]
  end
end
