//! `quota`: a long allowance per key (per consumer, typically) over fixed calendar periods in
//! UTC: an hour, a day, a calendar month, or every N days from an anchor date. Kept in the
//! gateway's Redis, so it survives gateway restarts and is shared by the fleet: one atomic
//! script per request adds the request's cost when it fits (only admitted requests count) and
//! gives the counter the period's lifetime. Answers carry what remains (`RateLimit` headers,
//! or the legacy set); a request over the quota gets 429 `rate_limited` with `Retry-After`
//! until the next period. When Redis does not answer, `on_redis_failure` lets the request
//! through (`fail_open`, default) or refuses it (`fail_closed`, 503), marked and counted as
//! `rate_limit`'s are.
//!
//! Periods follow the gateway's clock (UTC): nodes a second apart count a request at the
//! boundary into neighbouring periods, which moves at most the requests of that second.

use crate::builtin::rate_limit::{
    DEGRADED, HeaderStyle, KeyPart, KeySpec, counter_identity, hex16, key_spec, sf_string,
    shared_key,
};
use crate::{BuildCtx, ConfigError, Phase, PluginFactory};
use http::HeaderValue;
use schemars::JsonSchema;
use serde::Deserialize;
use std::sync::{Arc, LazyLock};
use std::time::{SystemTime, UNIX_EPOCH};
use torii_core::{ErrorKind, Flow, GatewayError, Plugin, RequestContext};
use torii_store::{Fallback, Redis};

/// Settings of `quota`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct QuotaConfig {
    /// Units allowed per period.
    pub limit: u64,
    /// `hour`, `day`, `month` (calendar months, UTC), or `{every: 7d, anchor: 2026-01-05}`.
    pub period: Period,
    /// What is counted apart (as `rate_limit`'s `key`).
    #[serde(default = "default_key")]
    pub key: Vec<KeyPart>,
    /// Units a request counts.
    #[serde(default = "one")]
    pub cost: u32,
    /// `fail_open` (let requests through, marked) or `fail_closed` (503) when Redis does not
    /// answer.
    #[serde(default)]
    pub on_redis_failure: QuotaFailure,
    /// Response headers (as `rate_limit`'s).
    #[serde(default)]
    pub headers: HeaderStyle,
    /// The quota's name in the headers.
    #[serde(default = "default_name")]
    pub name: String,
}

/// A quota period.
#[derive(Debug, Clone, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Period {
    /// From the start of each hour (UTC).
    Hour,
    /// From 00:00 UTC each day.
    Day,
    /// From the first of each calendar month, 00:00 UTC.
    Month,
    /// Every `every` (whole days) from `anchor` (`YYYY-MM-DD`, 00:00 UTC).
    Custom {
        /// The period's length (whole days).
        every: torii_config::values::Duration,
        /// A date a period starts on.
        anchor: String,
    },
}

/// What `quota` does when Redis does not answer.
#[derive(Debug, Clone, Copy, Default, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum QuotaFailure {
    /// Let the request through (marked and counted).
    #[default]
    FailOpen,
    /// Refuse it: 503 `rate_limit_unavailable`.
    FailClosed,
}

fn default_key() -> Vec<KeyPart> {
    vec![KeyPart::Consumer]
}
fn one() -> u32 {
    1
}
fn default_name() -> String {
    "quota".into()
}

/// The plugin type.
pub struct Quota;

impl PluginFactory for Quota {
    const NAME: &'static str = "quota";
    const PHASE: Phase = Phase::Traffic;
    // Also on a consumer or a plan: counted per consumer.
    const PER_CONSUMER: bool = true;
    // After rate_limit and concurrency_limit: a request they refuse never takes quota.
    const ORDER: u16 = 30;
    type Config = QuotaConfig;

    fn build(config: QuotaConfig, ctx: &BuildCtx<'_>) -> Result<Arc<dyn Plugin>, ConfigError> {
        if config.limit == 0 || config.cost == 0 {
            let k = if config.limit == 0 { "limit" } else { "cost" };
            return Err(ConfigError::at(
                k,
                "must be at least 1",
                "e.g. `limit: 10000`",
            ));
        }
        if u64::from(config.cost) > config.limit {
            return Err(ConfigError::at(
                "cost",
                format!(
                    "a request costing {} can never fit a quota of {}",
                    config.cost, config.limit
                ),
                "lower `cost`, or raise `limit`",
            ));
        }
        let spec = key_spec(&config.key, 64, ctx)?;
        let period = match &config.period {
            Period::Hour => Window::Every {
                secs: 3600,
                anchor: 0,
            },
            Period::Day => Window::Every {
                secs: 86_400,
                anchor: 0,
            },
            Period::Month => Window::Month,
            Period::Custom { every, anchor } => {
                let secs = every.0.as_secs();
                if secs == 0
                    || secs % 86_400 != 0
                    || every.0.subsec_nanos() != 0
                    || secs > 3660 * 86_400
                {
                    return Err(ConfigError::at(
                        "period",
                        "`every` must be a whole number of days, at most 3660",
                        "e.g. `period: {every: 7d, anchor: 2026-01-05}`",
                    ));
                }
                let anchor = parse_date(anchor).ok_or_else(|| {
                    ConfigError::at(
                        "period",
                        format!("`{anchor}` is not a date"),
                        "write the anchor as YYYY-MM-DD (a day a period starts, UTC)",
                    )
                })?;
                Window::Every {
                    secs: i64::try_from(secs).unwrap_or(i64::MAX),
                    anchor,
                }
            }
        };
        let redis = ctx.redis.cloned().ok_or_else(|| {
            ConfigError::here(
                "`quota` keeps its counters in Redis and needs the top-level `redis` settings",
                "add `redis: {url: redis://127.0.0.1:6379}` at the top level",
            )
        })?;
        // What is counted (scope, key, period), not how much is allowed: a consumer moved to
        // a plan with another limit keeps this period's usage.
        let identity = counter_identity(&format!(
            "quota|{}|{:?}|{}|{:?}",
            ctx.counter_scope(),
            spec.parts,
            spec.per_consumer,
            config.period
        ));
        Ok(Arc::new(QuotaPlugin {
            limit: config.limit,
            window: period,
            spec,
            cost: u64::from(config.cost),
            fail_closed: config.on_redis_failure == QuotaFailure::FailClosed,
            headers: config.headers,
            name: sf_string(&config.name),
            redis,
            identity,
            prefix: hex16(&identity),
        }))
    }
}

/// A period, compiled.
#[derive(Debug, Clone, Copy)]
enum Window {
    /// Every `secs` seconds from `anchor` (Unix seconds).
    Every { secs: i64, anchor: i64 },
    /// Calendar months, UTC.
    Month,
}

impl Window {
    /// The period holding `now` (Unix seconds): its start and end.
    fn around(self, now: i64) -> (i64, i64) {
        match self {
            Window::Every { secs, anchor } => {
                let start = anchor + (now - anchor).div_euclid(secs) * secs;
                (start, start + secs)
            }
            Window::Month => {
                let (y, m, _) = civil_from_days(now.div_euclid(86_400));
                let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
                (
                    days_from_civil(y, m, 1) * 86_400,
                    days_from_civil(ny, nm, 1) * 86_400,
                )
            }
        }
    }
}

struct QuotaPlugin {
    limit: u64,
    window: Window,
    spec: KeySpec,
    cost: u64,
    fail_closed: bool,
    headers: HeaderStyle,
    /// The name as a structured-field string.
    name: String,
    redis: Arc<Redis>,
    identity: [u8; 16],
    /// `identity` in hex: the start of the counters' names.
    prefix: String,
}

/// What the response phase reports.
#[derive(Clone)]
struct Used {
    /// Units used in this period (after this request, when admitted).
    used: u64,
    /// Seconds until the period ends.
    reset: u64,
    /// The period's length in seconds.
    window: u64,
    degraded: Option<&'static str>,
    /// The partition key shown to the client.
    pk: u64,
}

/// KEYS[1]: the period's counter. ARGV: cost, limit, lifetime (ms). Returns {admitted, used}.
static SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
local cost = tonumber(ARGV[1])
if used + cost > tonumber(ARGV[2]) then
  return {0, used}
end
used = redis.call('INCRBY', KEYS[1], cost)
if used == cost then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
end
return {1, used}
",
    )
});

impl Plugin for QuotaPlugin {
    fn on_request<'a>(
        &'a self,
        req: &'a mut http::request::Parts,
        ctx: &'a mut RequestContext,
    ) -> Result<Flow<'a>, GatewayError> {
        let (name, pk, _) = shared_key(&self.spec, &self.identity, req, ctx);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        let (start, end) = self.window.around(now);
        let name = std::str::from_utf8(&name).unwrap_or("");
        let counter = format!("torii:q:{}:{{{name}}}:{start}", self.prefix);
        // The counter outlives its period by a minute, for clocks a little behind.
        let lifetime_ms = (end - now + 60) * 1000;
        Ok(Flow::Wait(Box::pin(async move {
            let args = [
                i64::try_from(self.cost).unwrap_or(i64::MAX),
                i64::try_from(self.limit).unwrap_or(i64::MAX),
                lifetime_ms,
            ];
            let answer: Result<Vec<i64>, _> =
                self.redis.eval(&SCRIPT, &[counter.as_str()], &args).await;
            let reset = u64::try_from(end - now).unwrap_or(0);
            let window = u64::try_from(end - start).unwrap_or(0);
            match answer {
                Ok(v) if v.len() == 2 => {
                    let used = u64::try_from(v[1]).unwrap_or(0);
                    ctx.extensions.insert(Used {
                        used,
                        reset,
                        window,
                        degraded: None,
                        pk,
                    });
                    if v[0] == 1 {
                        Ok(None)
                    } else {
                        Err(GatewayError::new(
                            ErrorKind::RateLimited(HeaderValue::from(reset.max(1))),
                            format!("quota used up; it renews in {reset} s"),
                        ))
                    }
                }
                other => {
                    let error = match other {
                        Err(e) => e.to_string(),
                        Ok(v) => format!("the quota script answered {} values", v.len()),
                    };
                    let (policy, f) = if self.fail_closed {
                        ("fail_closed", Fallback::FailClosed)
                    } else {
                        ("fail_open", Fallback::FailOpen)
                    };
                    self.redis.note_fallback(f);
                    ctx.extensions.insert(Used {
                        used: 0,
                        reset,
                        window,
                        degraded: Some(policy),
                        pk,
                    });
                    if self.fail_closed {
                        Err(GatewayError::new(
                            ErrorKind::RateLimitUnavailable,
                            format!("the quota's store is unavailable: {error}"),
                        ))
                    } else {
                        Ok(None)
                    }
                }
            }
        })))
    }

    fn on_response(&self, resp: &mut http::response::Parts, ctx: &RequestContext) {
        let Some(u) = ctx.extensions.get::<Used>() else {
            return;
        };
        let h = &mut resp.headers;
        if let Some(policy) = u.degraded {
            h.insert(DEGRADED, HeaderValue::from_static(policy));
            return;
        }
        let remaining = self.limit.saturating_sub(u.used);
        if matches!(self.headers, HeaderStyle::Draft | HeaderStyle::Both) {
            use base64::Engine;
            let pk = base64::engine::general_purpose::STANDARD.encode(u.pk.to_be_bytes());
            let policy = format!("{};q={};w={}", self.name, self.limit, u.window);
            let now = format!("{};r={remaining};t={};pk=:{pk}:", self.name, u.reset);
            // A route may also have `rate_limit`: its items come first, the quota's after.
            append(h, "ratelimit-policy", &policy);
            append(h, "ratelimit", &now);
        }
        if matches!(self.headers, HeaderStyle::Legacy | HeaderStyle::Both) {
            h.insert("x-quota-limit", HeaderValue::from(self.limit));
            h.insert("x-quota-remaining", HeaderValue::from(remaining));
            h.insert("x-quota-reset", HeaderValue::from(u.reset));
        }
    }
}

/// Adds `item` to a structured-field list header (a second list member when the header is
/// already there).
fn append(h: &mut http::HeaderMap, name: &'static str, item: &str) {
    let value = match h.get(name).and_then(|v| v.to_str().ok()) {
        Some(v) => format!("{v}, {item}"),
        None => item.to_string(),
    };
    if let Ok(v) = HeaderValue::from_str(&value) {
        h.insert(name, v);
    }
}

/// `YYYY-MM-DD` as Unix seconds at 00:00 UTC.
fn parse_date(s: &str) -> Option<i64> {
    let mut it = s.trim().splitn(3, '-');
    let y: i64 = it.next()?.parse().ok()?;
    let m: u32 = it.next()?.parse().ok()?;
    let d: u32 = it.next()?.parse().ok()?;
    if !(1970..=9999).contains(&y) || !(1..=12).contains(&m) || d == 0 || d > 31 {
        return None;
    }
    let days = days_from_civil(y, m, d);
    // Reject dates that do not exist (2026-02-30).
    (civil_from_days(days) == (y, m, d)).then_some(days * 86_400)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm; written
/// here because only these two conversions are needed, not a calendar crate).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day since 1970-01-01.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn calendar_arithmetic() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(
            parse_date("2024-02-29"),
            Some(days_from_civil(2024, 2, 29) * 86_400)
        );
        assert_eq!(parse_date("2026-02-29"), None, "not a leap year");
        assert_eq!(parse_date("2026-13-01"), None);
        for d in [-1000, 0, 19_000, 20_454, 100_000] {
            let (y, m, dd) = civil_from_days(d);
            assert_eq!(days_from_civil(y, m, dd), d);
        }
    }

    #[test]
    fn periods_start_and_end_where_they_should() {
        // 2026-12-06 15:30:00 UTC.
        let now = days_from_civil(2026, 12, 6) * 86_400 + 15 * 3600 + 1800;
        let day = Window::Every {
            secs: 86_400,
            anchor: 0,
        };
        assert_eq!(
            day.around(now),
            (
                days_from_civil(2026, 12, 6) * 86_400,
                days_from_civil(2026, 12, 7) * 86_400
            )
        );
        let hour = Window::Every {
            secs: 3600,
            anchor: 0,
        };
        assert_eq!(hour.around(now).1 - now, 1800);
        // December runs into January of the next year.
        assert_eq!(
            Window::Month.around(now),
            (
                days_from_civil(2026, 12, 1) * 86_400,
                days_from_civil(2027, 1, 1) * 86_400
            )
        );
        // February of a leap year.
        let feb = days_from_civil(2028, 2, 10) * 86_400;
        let (s, e) = Window::Month.around(feb);
        assert_eq!((e - s) / 86_400, 29);
        // Every 7 days from a Monday.
        let anchor = parse_date("2026-01-05").unwrap();
        let week = Window::Every {
            secs: 7 * 86_400,
            anchor,
        };
        let (s, e) = week.around(now);
        assert_eq!(e - s, 7 * 86_400);
        assert!(s <= now && now < e);
        assert_eq!((s - anchor) % (7 * 86_400), 0);
        // Before the anchor too.
        let early = anchor - 86_400;
        let (s, _) = week.around(early);
        assert_eq!(s, anchor - 7 * 86_400);
    }
}
