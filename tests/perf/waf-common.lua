-- Shared by the WAF benchmark scenarios (tests/perf/waf.sh): the headers of a current desktop
-- Chrome on a shop's pages. Host is a name (shop.example), never an IP address (CRS 920350).
local common = {}

function common.browser_headers()
  wrk.headers["Host"] = "shop.example"
  wrk.headers["User-Agent"] =
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36"
  wrk.headers["Accept-Language"] = "nl-BE,nl;q=0.9,en-US;q=0.8,en;q=0.7"
  wrk.headers["Accept-Encoding"] = "gzip, deflate, br, zstd"
  wrk.headers["Cookie"] =
    "sessionid=9f2c4e7a1b8d4c03a6e5f1d2c7b9a804; csrftoken=Xq3vL9mZ2rT8wK1pN6yB4hJ7cF0sD5aG; " ..
    "cart_id=c_81724; _ga=GA1.1.1843920571.1715003412; _ga_5XK2L9QH7M=GS1.1.1715003412.4.1.1715004121.0.0.0"
  wrk.headers["Referer"] = "https://shop.example/category/knitwear?sort=price_asc&page=2"
end

return common
