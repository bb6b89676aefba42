-- POST /login/<email> carrying the visitor cookie with 10 pending touches, new ids on every
-- request (so all 10 LeadSource rows are real inserts). The cookie is the collector's format:
-- base64url (RFC 4648 section 5, no padding) of compact JSON {"v": ..., "t": [touch, ...]}.
-- Each request logs in the next of <users> users (bench-0@example.com, ...), as a site's logins
-- are of different people: one user logging in from 32 connections at once would measure the
-- per-user lock of the rollup (rollup.py), which serialises the writes of one user.
-- The host app has Flask-WTF's CSRFProtect: every login posts the form's csrf_token with the
-- session cookie holding its secret (both fetched once from the app's GET /csrf by run.py).
-- wrk -s bench/lua/login.lua URL/login/ -- <run prefix> <cookie name> <users> <session cookie>
--   <csrf token> <random seed> <pool size of client addresses>
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "") .. "count.lua")
local alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
local sources = {"google", "newsletter", "facebook", "partner", "bing"}
local mediums = {"cpc", "email", "social", "referral", "cpc"}

local function b64url(data)
  local out = {}
  for i = 1, #data, 3 do
    local a, b, c = data:byte(i, i + 2)
    local v = a * 65536 + (b or 0) * 256 + (c or 0)
    local d1 = math.floor(v / 262144) % 64
    local d2 = math.floor(v / 4096) % 64
    local d3 = math.floor(v / 64) % 64
    local d4 = v % 64
    out[#out + 1] = alphabet:sub(d1 + 1, d1 + 1) .. alphabet:sub(d2 + 1, d2 + 1)
    if b then out[#out + 1] = alphabet:sub(d3 + 1, d3 + 1) end
    if c then out[#out + 1] = alphabet:sub(d4 + 1, d4 + 1) end
  end
  return table.concat(out)
end

function init(args)
  prefix = (args[1] or "run") .. "-" .. tid .. "-"
  cookie_name = args[2] or "utm_tracker"
  users = tonumber(args[3] or "1000")
  counter = 0
  ok = 0
  session = args[4] or ""
  address_pool(args[6], args[7] or "100000")
  -- Each wrk (one per gunicorn, all with tid 1) starts at its own user, from its seed: in
  -- lockstep they would log the same user in on both servers at once.
  first_user = (tonumber(args[6]) or 0) % users
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
  wrk.body = "csrf_token=" .. (args[5] or "")
end

function request()
  counter = counter + 1
  local id = prefix .. counter
  local touches = {}
  for k = 1, 10 do
    local s = (k % 5) + 1
    touches[k] = '{"id":"t' .. id .. '-' .. k .. '","ts":' .. (1750000000000 + k * 60000)
      .. ',"url":"https://www.example.com/p?utm_source=' .. sources[s] .. '&utm_medium='
      .. mediums[s] .. '&utm_campaign=c' .. k .. '","params":{"utm_source":"' .. sources[s]
      .. '","utm_medium":"' .. mediums[s] .. '","utm_campaign":"c' .. k .. '"}}'
  end
  local json = '{"v":"v' .. id .. '","t":[' .. table.concat(touches, ",") .. ']}'
  local user = (first_user + tid * 7919 + counter) % users
  local path = wrk.path .. "bench-" .. user .. "@example.com"
  local cookie = cookie_name .. "=" .. b64url(json)
  if session ~= "" then cookie = session .. "; " .. cookie end
  wrk.headers["Cookie"] = cookie
  from_client()
  return wrk.format(nil, path)
end
