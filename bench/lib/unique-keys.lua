-- wrk script: GET /hello with an x-client header that is new on every request (a flood of
-- distinct keys), to check that a keyed plugin's table stays bounded.
local n = 0
request = function()
  n = n + 1
  return wrk.format("GET", "/hello", { ["x-client"] = "flood-" .. n })
end
