//! The `redis` policy: one decision is one EVALSHA of a Lua script that runs GCRA over every
//! limit of the key atomically, on Redis's own clock (`TIME`), so any number of gateways
//! sharing the Redis decide exactly as one would. The key's limits are stored under one hash
//! tag (`{...}`), so a decision touches one Redis Cluster slot.

use super::gcra::{Decision, Limit, Room};
use std::sync::LazyLock;
use torii_store::{Redis, RedisError};

/// KEYS: one per limit. ARGV[1]: cost; then per limit its interval and window (µs).
/// Returns allowed (0/1), the retry time (µs), then per limit: remaining, reset (µs).
static SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local cost = tonumber(ARGV[1])
local n = #KEYS
local tats = {}
local allowed = 1
local retry = 0
for i = 1, n do
  local step = tonumber(ARGV[2 * i])
  local window = tonumber(ARGV[2 * i + 1])
  local tat = tonumber(redis.call('GET', KEYS[i]) or '0')
  if tat < now then tat = now end
  local new = tat + cost * step
  if new - now > window then
    allowed = 0
    if new - now - window > retry then retry = new - now - window end
    tats[i] = tat
  else
    tats[i] = new
  end
end
if allowed == 1 then
  for i = 1, n do
    redis.call('SET', KEYS[i], string.format('%.0f', tats[i]), 'PX', math.floor((tats[i] - now) / 1000) + 1)
  end
end
local out = {allowed, retry}
for i = 1, n do
  local step = tonumber(ARGV[2 * i])
  local window = tonumber(ARGV[2 * i + 1])
  local used = tats[i] - now
  out[#out + 1] = math.floor((window - used) / step)
  out[#out + 1] = used
end
return out
",
    )
});

/// Decides a request of `cost` for the key whose Redis keys are `keys` (one per limit).
pub(crate) async fn decide(
    redis: &Redis,
    keys: &[String],
    limits: &[Limit],
    cost: u64,
) -> Result<Decision, RedisError> {
    let mut args = Vec::with_capacity(1 + 2 * limits.len());
    args.push(i64::try_from(cost).unwrap_or(i64::MAX));
    for l in limits {
        args.push(i64::try_from(l.interval_us).unwrap_or(i64::MAX));
        args.push(i64::try_from(l.window_us).unwrap_or(i64::MAX));
    }
    let key_refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    let out: Vec<i64> = redis.eval(&SCRIPT, &key_refs, &args).await?;
    if out.len() != 2 + 2 * limits.len() {
        return Err(RedisError::Failed(format!(
            "the rate-limit script answered {} values for {} limits",
            out.len(),
            limits.len()
        )));
    }
    let rooms = out[2..]
        .chunks_exact(2)
        .map(|c| Room {
            remaining: u64::try_from(c[0]).unwrap_or(0),
            reset_us: u64::try_from(c[1]).unwrap_or(0),
        })
        .collect();
    Ok(Decision {
        allowed: out[0] == 1,
        retry_us: u64::try_from(out[1]).unwrap_or(0),
        rooms,
    })
}
