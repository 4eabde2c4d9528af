-- Scenario (a): a browser opening a product page (GET with a query string, browser headers,
-- cookies).
package.path = os.getenv("WAF_PERF_LUA_DIR") .. "/?.lua;" .. package.path
local common = require("waf-common")

wrk.method = "GET"
wrk.path = "/products/merino-wool-crew-neck-sweater-navy?ref=home_carousel&variant=38472&color=navy&size=M"
common.browser_headers()
wrk.headers["Accept"] =
  "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,image/apng,*/*;q=0.8," ..
  "application/signed-exchange;v=b3;q=0.7"
