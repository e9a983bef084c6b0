-- wrk script: GET /hello with an x-client header cycling through 1,000 values, so a keyed
-- plugin (rate_limit, concurrency_limit) tracks 1,000 distinct keys under load.
local n = 0
request = function()
  n = n + 1
  return wrk.format("GET", "/hello", { ["x-client"] = "client-" .. (n % 1000) })
end
