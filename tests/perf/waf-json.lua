-- Scenario (c): a single-page app placing an order, 8 KiB of application/json
-- (tests/perf/data/order-8k.json).
package.path = os.getenv("WAF_PERF_LUA_DIR") .. "/?.lua;" .. package.path
local common = require("waf-common")

local file = assert(io.open(os.getenv("WAF_PERF_LUA_DIR") .. "/data/order-8k.json", "rb"))
local body = file:read("*a")
file:close()

wrk.method = "POST"
wrk.path = "/api/orders"
common.browser_headers()
wrk.headers["Accept"] = "application/json, text/plain, */*"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Origin"] = "https://shop.example"
wrk.body = body
