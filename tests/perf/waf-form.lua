-- Scenario (b): a checkout address form, 16 fields, application/x-www-form-urlencoded.
package.path = os.getenv("WAF_PERF_LUA_DIR") .. "/?.lua;" .. package.path
local common = require("waf-common")

wrk.method = "POST"
wrk.path = "/checkout/address"
common.browser_headers()
wrk.headers["Accept"] = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
wrk.headers["Origin"] = "https://shop.example"
wrk.body = table.concat({
  "first_name=Aoife",
  "last_name=Murphy",
  "company=",
  "email=aoife.murphy%40example.ie",
  "phone=%2B353+87+123+4567",
  "address_line1=14+Harbour+View",
  "address_line2=Apt.+3B",
  "city=Cork",
  "state=Co.+Cork",
  "postal_code=T12+X7P2",
  "country=IE",
  "delivery_notes=Please+leave+the+parcel+with+the+neighbour+at+no.+12+if+I%27m+not+home",
  "shipping_method=standard",
  "newsletter=on",
  "terms=on",
  "csrf_token=b7e2c9f14a3d8e6f",
}, "&")
