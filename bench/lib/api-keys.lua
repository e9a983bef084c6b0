-- wrk script: GET /hello with an x-api-key header cycling through 1,000 of the 10,000 keys
-- bench/lib/keyauth_config.py gives its consumers (key-0 ... key-9999, every tenth).
local n = 0
request = function()
  n = n + 1
  return wrk.format("GET", "/hello", { ["x-api-key"] = "key-" .. ((n % 1000) * 10) })
end
