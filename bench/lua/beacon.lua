-- POST /utm/beacon with a new visitor id and touch id on every request, so every insert is real,
-- each from a client drawn from a pool of random IPv4 and IPv6 addresses (X-Forwarded-For).
-- wrk -s bench/lua/beacon.lua URL -- <run prefix> <random seed> <pool size; 0: one client>
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "") .. "count.lua")

function init(args)
  prefix = (args[1] or "run") .. "-" .. tid .. "-"
  address_pool(args[2], args[3] or "100000")
  counter = 0
  ok = 0
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "text/plain;charset=UTF-8"
end

function request()
  counter = counter + 1
  local id = prefix .. counter
  local campaign = "spring-" .. (counter % 50)
  from_client()
  -- The snippet's body: one touch with its landing URL, referrer and tracked parameters.
  local body = '{"v":"v' .. id .. '","touches":[{"id":"t' .. id .. '","ts":1750000000000,'
    .. '"url":"https://www.example.com/pricing?utm_source=newsletter&utm_medium=email'
    .. '&utm_campaign=' .. campaign .. '","referrer":"https://mail.google.com/",'
    .. '"params":{"utm_source":"newsletter","utm_medium":"email","utm_campaign":"'
    .. campaign .. '"}}]}'
  return wrk.format(nil, nil, nil, body)
end
