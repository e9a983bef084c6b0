//! The `redis` policy: one decision is one EVALSHA of a Lua script that runs every limit of
//! the key atomically (GCRA or sliding window, the arithmetic of `algo.rs`), on Redis's own
//! clock (`TIME`), so any number of gateways sharing the Redis decide exactly as one would.
//! The key's limits are stored under one hash tag (`{...}`), so a decision touches one Redis
//! Cluster slot.
//!
//! Stored values: a GCRA limit keeps `tat:interval` (µs; the interval it was counted at, so
//! a changed allowance rescales it); a sliding window keeps `newest c0 c1 ... c10` (the
//! newest sub-window's index and the ring of counts).

use super::algo::{Algorithm, BUCKETS, Decision, Limit, Room};
use std::sync::LazyLock;
use torii_store::{Redis, RedisError};

/// KEYS: one per limit. ARGV[1]: cost; ARGV[2]: the spike-arrest bound (µs); then per limit
/// its algorithm (0 GCRA, 1 sliding window), window, interval or sub-window (µs), requests.
/// Returns allowed (0/1), the retry time, the delay (µs), then per limit: remaining, reset.
static SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(&format!(
        r"
local RING = {ring}
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local cost = tonumber(ARGV[1])
local max_delay = tonumber(ARGV[2])
local allowed, retry, delay = 1, 0, 0
local nexts, ttls, adm, ref = {{}}, {{}}, {{}}, {{}}
for i = 1, #KEYS do
  local base = 2 + 4 * (i - 1)
  local kind = tonumber(ARGV[base + 1])
  local window = tonumber(ARGV[base + 2])
  local step = tonumber(ARGV[base + 3])
  local requests = tonumber(ARGV[base + 4])
  local v = redis.call('GET', KEYS[i])
  if kind == 0 then
    local tat, iv = 0, step
    if v then
      local a, b = string.match(v, '^(%d+):(%d+)$')
      if a then tat, iv = tonumber(a), tonumber(b) end
    end
    if tat < now then tat = now end
    if iv ~= step and tat > now then
      local used = math.floor((tat - now) * step / iv)
      if used > window + max_delay then used = window + max_delay end
      tat = now + used
    end
    local new = tat + cost * step
    local over = new - now - window
    if over < 0 then over = 0 end
    if over > max_delay then
      allowed = 0
      if over - max_delay > retry then retry = over - max_delay end
    elseif over > delay then
      delay = over
    end
    nexts[i] = string.format('%.0f:%.0f', new, step)
    ttls[i] = math.floor((new - now) / 1000) + 1
    local left = window - (new - now)
    if left < 0 then left = 0 end
    adm[i] = {{math.floor(left / step), new - now}}
    left = window - (tat - now)
    if left < 0 then left = 0 end
    ref[i] = {{math.floor(left / step), tat - now}}
  else
    local cur = math.floor(now / step)
    local newest, counts = cur, {{}}
    for k = 0, RING - 1 do counts[k] = 0 end
    if v then
      local j = -1
      for num in string.gmatch(v, '%d+') do
        if j < 0 then newest = tonumber(num) elseif j < RING then counts[j] = tonumber(num) end
        j = j + 1
      end
    end
    if cur > newest then
      local stale = cur - newest
      if stale > RING then stale = RING end
      for k = 0, stale - 1 do counts[(cur - k) % RING] = 0 end
      newest = cur
    end
    local sum = 0
    for k = 0, RING - 1 do sum = sum + counts[k] end
    local oldest = newest - RING + 1
    local function reset()
      for i2 = newest, oldest, -1 do
        if counts[i2 % RING] > 0 then return (i2 + RING) * step - now end
      end
      return 0
    end
    ref[i] = {{math.max(requests - sum, 0), reset()}}
    if sum + cost > requests then
      allowed = 0
      local freed = 0
      for i2 = oldest, newest do
        freed = freed + counts[i2 % RING]
        if sum - freed + cost <= requests then
          local r = (i2 + RING) * step - now
          if r > retry then retry = r end
          break
        end
      end
    end
    counts[newest % RING] = counts[newest % RING] + cost
    adm[i] = {{math.max(requests - sum - cost, 0), reset()}}
    local parts = {{string.format('%.0f', newest)}}
    for k = 0, RING - 1 do parts[#parts + 1] = string.format('%.0f', counts[k]) end
    nexts[i] = table.concat(parts, ' ')
    ttls[i] = math.floor((window + step) / 1000) + 1
  end
end
if allowed == 1 then
  for i = 1, #KEYS do
    redis.call('SET', KEYS[i], nexts[i], 'PX', ttls[i])
  end
else
  delay = 0
end
local out = {{allowed, retry, delay}}
for i = 1, #KEYS do
  local r = ref[i]
  if allowed == 1 then r = adm[i] end
  out[#out + 1] = r[1]
  out[#out + 1] = r[2]
end
return out
",
        ring = BUCKETS + 1
    ))
});

/// The Redis key of each limit for a key named `key` (32 hex digits) of instance `instance`:
/// the key in braces (the hash tag), the limit by its algorithm and window.
pub(crate) fn keys(instance: &str, key: &[u8; 32], limits: &[Limit]) -> Vec<String> {
    let key = std::str::from_utf8(key).unwrap_or("");
    limits
        .iter()
        .map(|l| {
            let kind = match l.algorithm {
                Algorithm::Gcra => 'g',
                Algorithm::SlidingWindow => 's',
            };
            format!("torii:rl:{instance}:{{{key}}}:{kind}{}", l.window_us)
        })
        .collect()
}

/// Decides a request of `cost` for the key whose Redis keys are `keys` (one per limit).
pub(crate) async fn decide(
    redis: &Redis,
    keys: &[String],
    limits: &[Limit],
    cost: u64,
    max_delay: u64,
) -> Result<Decision, RedisError> {
    let int = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    let mut args = Vec::with_capacity(2 + 4 * limits.len());
    args.push(int(cost));
    args.push(int(max_delay));
    for l in limits {
        let (kind, step) = match l.algorithm {
            Algorithm::Gcra => (0, l.interval_us),
            Algorithm::SlidingWindow => (1, l.bucket_us),
        };
        args.extend([kind, int(l.window_us), int(step), int(l.requests)]);
    }
    let key_refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    let out: Vec<i64> = redis.eval(&SCRIPT, &key_refs, &args).await?;
    if out.len() != 3 + 2 * limits.len() {
        return Err(RedisError::Failed(format!(
            "the rate-limit script answered {} values for {} limits",
            out.len(),
            limits.len()
        )));
    }
    let uint = |v: i64| u64::try_from(v).unwrap_or(0);
    let rooms = out[3..]
        .chunks_exact(2)
        .map(|c| Room {
            remaining: uint(c[0]),
            reset_us: uint(c[1]),
        })
        .collect();
    Ok(Decision {
        allowed: out[0] == 1,
        retry_us: uint(out[1]),
        delay_us: uint(out[2]),
        rooms,
    })
}
