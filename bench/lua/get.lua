-- GET the URL given to wrk, with no cookie (a new anonymous visitor every time), each request
-- from a client drawn from a pool of random addresses (X-Forwarded-For); counts 2xx.
-- wrk -s bench/lua/get.lua URL -- <random seed> <pool size; 0: one client>
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "") .. "count.lua")

function init(args)
  address_pool(args[1], args[2] or "100000")
  ok = 0
end

function request()
  from_client()
  return wrk.format()
end
