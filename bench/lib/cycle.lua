-- wrk script: every request carries the next value from BENCH_VALUES in header BENCH_HEADER
-- (with BENCH_PREFIX before it), cycling through all of them.
local header = os.getenv("BENCH_HEADER") or "x-bench"
local prefix = os.getenv("BENCH_PREFIX") or ""
local values = {}
for line in io.lines(os.getenv("BENCH_VALUES")) do
  if #line > 0 then values[#values + 1] = prefix .. line end
end
local i = 0
request = function()
  i = i % #values + 1
  return wrk.format("GET", nil, { [header] = values[i] })
end
