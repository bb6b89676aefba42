-- GET the URL given to wrk, with no cookie (a new anonymous visitor every time); counts 2xx.
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "") .. "count.lua")

function init(args)
  ok = 0
end
