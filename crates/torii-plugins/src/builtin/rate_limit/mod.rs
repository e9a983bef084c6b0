//! `rate_limit`: several limits at once (100 per second and 5,000 per hour, say) per key
//! (`key.rs`: the consumer, the credential, the client address with IPv6 grouped by prefix, a
//! header, a JWT claim, the route, or a combination), decided by GCRA or a sliding window
//! (`algo.rs`: neither lets a double burst through at a window boundary), optionally holding
//! early requests back instead of refusing them (spike arrest). `policy: local` decides in process, with a bounded key table; `policy: redis`
//! decides in the gateway's Redis with one atomic script call (`redis.rs`), so a fleet shares
//! one exact limit. When Redis fails or is slower than its time box, `on_redis_failure` says
//! what happens: `fail_open`, `fail_closed` (503 `rate_limit_unavailable`) or `local` (the
//! limit divided by `nodes`); each such answer carries `Torii-RateLimit-Degraded` and is
//! counted (`torii_rate_limit_degraded_total`), so failing open is never silent.
//!
//! Answers carry the IETF draft headers (`RateLimit-Policy`, `RateLimit`, with a partition
//! key) or the legacy `X-RateLimit-*` set; a refused request gets 429 `rate_limited` with
//! `Retry-After`. Only admitted requests count.

mod algo;
mod headers;
mod key;
mod redis;

pub(crate) use headers::sf_string;
pub use key::KeyPart;
pub(crate) use key::{KeySpec, LocalKeys, counter_identity, hex16, shared_key};

use crate::{BuildCtx, ConfigError, Phase, PluginFactory};
use algo::{Algorithm, Decision, Limit, LocalStore, MAX_LIMITS};
use headers::{policy_header, ratelimit_header, short};
use http::HeaderValue;
use schemars::JsonSchema;
use serde::Deserialize;
use std::sync::Arc;
use torii_config::values::Duration;
use torii_core::{ErrorKind, Flow, GatewayError, Join, Plugin, RequestContext};
use torii_store::{Fallback, Redis};

/// Settings of `rate_limit`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// The limits, all applied: a request passes only when each one has room.
    pub limits: Vec<LimitConfig>,
    /// `gcra` (a burst of the limit from rest, then requests spaced evenly) or
    /// `sliding_window` (never more than the limit in any interval of the window's length).
    #[serde(default)]
    pub algorithm: AlgorithmConfig,
    /// Spike arrest (`gcra` only): a request early by at most this long is held back until
    /// its time instead of refused. Unset: refused.
    #[serde(default)]
    pub delay: Option<Duration>,
    /// What is counted apart: one or more of `consumer`, `credential`, `client_address`,
    /// `route`, `{header: NAME}`, `{claim: NAME}`, combined. A request without a part (no
    /// consumer, no such header or claim) is counted by its client address in its place.
    /// Set on a consumer or a plan, the consumer is always part of the key.
    #[serde(default = "default_key")]
    pub key: Vec<KeyPart>,
    /// IPv6 client addresses count by their first this many bits (a /64 is one subscriber).
    #[serde(default = "default_ipv6_prefix")]
    pub ipv6_prefix: u8,
    /// `local` (in this process) or `redis` (shared by every gateway using the same Redis).
    #[serde(default)]
    pub policy: Policy,
    /// `redis` policy: what happens when Redis fails or is slower than `redis.timeout`.
    #[serde(default)]
    pub on_redis_failure: OnFailure,
    /// `on_redis_failure: local`: the gateways sharing the limit; each allows its share.
    #[serde(default = "one")]
    pub nodes: u32,
    /// How many units a request counts (a heavy endpoint can count 10).
    #[serde(default = "one")]
    pub cost: u32,
    /// Response headers: `draft` (`RateLimit-Policy`, `RateLimit`), `legacy`
    /// (`X-RateLimit-Limit`, `-Remaining`, `-Reset`), `both` or `none`.
    #[serde(default)]
    pub headers: HeaderStyle,
    /// `local` policy (and the `local` fallback): most keys tracked; beyond it keys seen once
    /// are let go first (S3-FIFO), so a flood of random keys cannot exhaust memory nor push out
    /// keys in steady use.
    #[serde(default = "default_max_keys")]
    pub max_keys: u64,
}

/// One limit.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LimitConfig {
    /// Requests allowed per `per` (and as a burst from rest).
    pub requests: u64,
    /// The window.
    pub per: Duration,
    /// Its name in the `RateLimit` headers (default: `<requests>-per-<per>`).
    #[serde(default)]
    pub name: Option<String>,
}

/// The algorithm of every limit of one `rate_limit`.
#[derive(Debug, Clone, Copy, Default, Deserialize, JsonSchema, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum AlgorithmConfig {
    /// The generic cell rate algorithm.
    #[default]
    Gcra,
    /// A sliding window counted in ten sub-windows.
    SlidingWindow,
}

/// Where decisions are made.
#[derive(Debug, Clone, Copy, Default, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Policy {
    /// In this process.
    #[default]
    Local,
    /// In the gateway's Redis (top-level `redis`).
    Redis,
}

/// What the `redis` policy does when Redis does not answer in time.
#[derive(Debug, Clone, Copy, Default, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum OnFailure {
    /// Decide in process with the limits divided by `nodes`.
    #[default]
    Local,
    /// Let the request through.
    FailOpen,
    /// Refuse it: 503 `rate_limit_unavailable`.
    FailClosed,
}

/// Which rate-limit headers answers carry.
#[derive(Debug, Clone, Copy, Default, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum HeaderStyle {
    /// `RateLimit-Policy` and `RateLimit` (draft-ietf-httpapi-ratelimit-headers).
    #[default]
    Draft,
    /// `X-RateLimit-Limit`, `X-RateLimit-Remaining`, `X-RateLimit-Reset`.
    Legacy,
    /// Both sets.
    Both,
    /// None.
    None,
}

fn default_key() -> Vec<KeyPart> {
    vec![KeyPart::Consumer]
}
fn default_ipv6_prefix() -> u8 {
    64
}
fn one() -> u32 {
    1
}
fn default_max_keys() -> u64 {
    100_000
}

/// Header names, parsed at compile time (a `&str` name is parsed again on every insert).
pub(crate) const DEGRADED: http::HeaderName =
    http::HeaderName::from_static("torii-ratelimit-degraded");
const RATELIMIT_POLICY: http::HeaderName = http::HeaderName::from_static("ratelimit-policy");
const RATELIMIT: http::HeaderName = http::HeaderName::from_static("ratelimit");
const X_LIMIT: http::HeaderName = http::HeaderName::from_static("x-ratelimit-limit");
const X_REMAINING: http::HeaderName = http::HeaderName::from_static("x-ratelimit-remaining");
const X_RESET: http::HeaderName = http::HeaderName::from_static("x-ratelimit-reset");

/// The plugin type.
pub struct RateLimit;

impl PluginFactory for RateLimit {
    const NAME: &'static str = "rate_limit";
    const PHASE: Phase = Phase::Traffic;
    // Also on a consumer or a plan: counted per consumer.
    const PER_CONSUMER: bool = true;
    const ORDER: u16 = 10;
    type Config = RateLimitConfig;

    fn build(config: RateLimitConfig, ctx: &BuildCtx<'_>) -> Result<Arc<dyn Plugin>, ConfigError> {
        let algorithm = match config.algorithm {
            AlgorithmConfig::Gcra => Algorithm::Gcra,
            AlgorithmConfig::SlidingWindow => Algorithm::SlidingWindow,
        };
        let limits = limits(&config, algorithm)?;
        let spec = key_spec(&config.key, config.ipv6_prefix, ctx)?;
        if config.cost == 0 || config.nodes == 0 {
            let k = if config.cost == 0 { "cost" } else { "nodes" };
            return Err(ConfigError::at(k, "must be at least 1", "e.g. `1`"));
        }
        check_cost(&limits, config.cost, config.nodes)?;
        let max_delay = match (config.delay, algorithm) {
            (None, _) => 0,
            (Some(d), Algorithm::Gcra) => {
                // Held requests keep their connections: bounded by the shortest window and a
                // minute, so a key cannot park an hour of requests.
                let shortest = limits.iter().map(|l| l.window_us).min().unwrap_or(0);
                let us = u64::try_from(d.0.as_micros()).unwrap_or(u64::MAX);
                if us > shortest || us > 60_000_000 {
                    return Err(ConfigError::at(
                        "delay",
                        "spike arrest holds requests at most the shortest limit's window, and at most 1m",
                        "e.g. `delay: 500ms`",
                    ));
                }
                us
            }
            (Some(_), Algorithm::SlidingWindow) => {
                return Err(ConfigError::at(
                    "delay",
                    "spike arrest spaces requests, which a sliding window does not do",
                    "use `algorithm: gcra` with `delay`, or remove `delay`",
                ));
            }
        };
        let max_keys = config.max_keys.max(1);
        // The counters' identity: what is counted apart (scope and key), not how much is
        // allowed, so changing an allowance (a reload, a consumer's new plan) keeps the usage
        // counted so far. Each limit's state is found by its algorithm and window.
        let identity = counter_identity(&format!(
            "rate_limit|{}|{:?}|{}|{}",
            ctx.counter_scope(),
            spec.parts,
            spec.ipv6_prefix,
            spec.per_consumer
        ));
        // The in-process tables (with their random hash seeds) outlive reloads that keep the
        // identity and the table size.
        let tables = ctx.state_named(&format!("{}|{max_keys}", hex16(&identity)), || Tables {
            keys: LocalKeys::new(),
            local: LocalStore::new(max_keys),
            fallback: LocalStore::new(max_keys),
        });
        let redis = match config.policy {
            Policy::Local => None,
            Policy::Redis => Some(ctx.redis.cloned().ok_or_else(|| {
                ConfigError::at(
                    "policy",
                    "`policy: redis` needs the top-level `redis` settings",
                    "add `redis: {url: redis://127.0.0.1:6379}` at the top level, or use `policy: local`",
                )
            })?),
        };
        let fallback: Box<[Limit]> = limits.iter().map(|l| l.divided(config.nodes)).collect();
        let fallback_policy_header = policy_header(&fallback);
        let policy_header = policy_header(&limits);
        Ok(Arc::new(Limiter {
            limits: limits.into(),
            fallback,
            spec,
            cost: u64::from(config.cost),
            max_delay,
            headers: config.headers,
            tables,
            redis,
            on_failure: config.on_redis_failure,
            identity,
            redis_prefix: hex16(&identity),
            policy_header,
            fallback_policy_header,
        }))
    }
}

/// The limits, checked and compiled.
fn limits(config: &RateLimitConfig, algorithm: Algorithm) -> Result<Vec<Limit>, ConfigError> {
    if config.limits.is_empty() || config.limits.len() > MAX_LIMITS {
        return Err(ConfigError::at(
            "limits",
            format!("between 1 and {MAX_LIMITS} limits are needed"),
            "e.g. `limits: [{requests: 100, per: 1s}, {requests: 5000, per: 1h}]`",
        ));
    }
    let mut limits: Vec<Limit> = Vec::with_capacity(config.limits.len());
    for (i, l) in config.limits.iter().enumerate() {
        if l.requests == 0 {
            return Err(
                ConfigError::at("requests", "must be at least 1", "e.g. `requests: 100`")
                    .in_list("limits", i),
            );
        }
        if l.per.0 < std::time::Duration::from_millis(1) {
            return Err(
                ConfigError::at("per", "must be at least 1ms", "e.g. `per: 1s`")
                    .in_list("limits", i),
            );
        }
        if algorithm == Algorithm::SlidingWindow && l.requests > u64::from(u32::MAX) {
            return Err(ConfigError::at(
                "requests",
                format!("a sliding window counts at most {} per window", u32::MAX),
                "use `algorithm: gcra` for larger allowances",
            )
            .in_list("limits", i));
        }
        let name = l
            .name
            .clone()
            .unwrap_or_else(|| format!("{}-per-{}", l.requests, short(l.per.0)));
        let limit = Limit::new(name, algorithm, l.requests, l.per.0);
        if limits.iter().any(|o| o.window_us == limit.window_us) {
            return Err(ConfigError::at(
                "per",
                "another limit has the same window; the smaller allowance alone decides",
                "keep one limit per window",
            )
            .in_list("limits", i));
        }
        // GCRA spaces requests by whole microseconds: refuse a rate whose rounding would let
        // more than 1 % extra through.
        if algorithm == Algorithm::Gcra
            && !limit.window_us.is_multiple_of(limit.requests)
            && limit.interval_us < 100
        {
            return Err(ConfigError::at(
                "requests",
                format!(
                    "{} per {} µs spaces requests {:.2} µs apart, too finely for whole microseconds (it would admit {:.0} % more)",
                    limit.requests,
                    limit.window_us,
                    limit.window_us as f64 / limit.requests as f64,
                    (limit.requests as f64 * limit.interval_us as f64 / limit.window_us as f64 - 1.0).abs() * 100.0
                ),
                "use a rate that divides the window evenly (e.g. 500000 per 1s), or at most 10,000 per second",
            )
            .in_list("limits", i));
        }
        limits.push(limit);
    }
    Ok(limits)
}

/// The key's parts, checked (also `quota`'s and `concurrency_limit`'s).
pub(crate) fn key_spec(
    parts: &[KeyPart],
    ipv6_prefix: u8,
    ctx: &BuildCtx<'_>,
) -> Result<KeySpec, ConfigError> {
    if parts.is_empty() {
        return Err(ConfigError::at(
            "key",
            "the key needs at least one part",
            "e.g. `key: [consumer]` or `key: [client_address]`",
        ));
    }
    if ipv6_prefix > 128 {
        return Err(ConfigError::at("ipv6_prefix", "at most 128", "e.g. `64`"));
    }
    for part in parts {
        if let KeyPart::Header(h) = part
            && http::HeaderName::from_bytes(h.as_bytes()).is_err()
        {
            return Err(ConfigError::at(
                "key",
                format!("`{h}` is not a header name"),
                "write a header name such as `x-api-client`",
            ));
        }
    }
    Ok(KeySpec {
        parts: parts.into(),
        ipv6_prefix,
        per_consumer: ctx.per_consumer(),
    })
}

/// A cost that can never pass a limit is a config error.
fn check_cost(limits: &[Limit], cost: u32, nodes: u32) -> Result<(), ConfigError> {
    for (i, l) in limits.iter().enumerate() {
        let share = l.divided(nodes).requests;
        if u64::from(cost) > share {
            return Err(ConfigError::at(
                "cost",
                format!(
                    "a request costing {cost} can never pass `limits[{i}]` ({share} per window{})",
                    if nodes > 1 {
                        " per node in the `local` fallback"
                    } else {
                        ""
                    }
                ),
                "lower `cost`, or raise the limit's `requests`",
            ));
        }
    }
    Ok(())
}

/// The in-process state: the key hashing (random seeds), the `local` policy's table, and the
/// `local` fallback's.
struct Tables {
    keys: LocalKeys,
    local: LocalStore,
    fallback: LocalStore,
}

struct Limiter {
    limits: Box<[Limit]>,
    /// The limits divided by `nodes`, for the `local` fallback.
    fallback: Box<[Limit]>,
    spec: KeySpec,
    cost: u64,
    /// The spike-arrest bound (µs; 0: none).
    max_delay: u64,
    headers: HeaderStyle,
    tables: Arc<Tables>,
    redis: Option<Arc<Redis>>,
    on_failure: OnFailure,
    identity: [u8; 16],
    /// `identity` as hex, the start of this instance's Redis keys.
    redis_prefix: String,
    /// `RateLimit-Policy`, built at load.
    policy_header: Option<HeaderValue>,
    /// The same for the `local` fallback's divided limits.
    fallback_policy_header: Option<HeaderValue>,
}

/// A decision and how it was made: what the answer reports.
struct Outcome {
    decision: Decision,
    /// The limits the decision was made against (the fallback's when degraded to `local`).
    fallback: bool,
    degraded: Option<&'static str>,
    /// The partition key shown to the client.
    pk: u64,
}

impl Limiter {
    /// The decision's consequence: `Ok` to go on, or the 429; its report goes into the
    /// answer's fields either way.
    fn settle(&self, outcome: Outcome, ctx: &mut RequestContext) -> Result<(), GatewayError> {
        let allowed = outcome.decision.allowed;
        let retry = outcome.decision.retry_us;
        self.report(&outcome, &mut ctx.response_fields);
        if allowed {
            return Ok(());
        }
        let secs = retry.div_ceil(1_000_000).max(1);
        Err(GatewayError::new(
            ErrorKind::RateLimited(HeaderValue::from(secs)),
            format!("rate limit reached; retry in {secs} s"),
        ))
    }

    fn degraded(
        &self,
        redis: &Redis,
        local_key: u64,
        pk: u64,
        error: &torii_store::RedisError,
    ) -> Result<Outcome, GatewayError> {
        let (policy, fallback) = match self.on_failure {
            OnFailure::FailOpen => ("fail_open", Fallback::FailOpen),
            OnFailure::FailClosed => ("fail_closed", Fallback::FailClosed),
            OnFailure::Local => ("local", Fallback::Local),
        };
        // Counted where the metrics of the Redis are (`torii_rate_limit_degraded_total`).
        redis.note_fallback(fallback);
        tracing::debug!(%error, policy, "rate limit decided without redis");
        match self.on_failure {
            OnFailure::FailClosed => Err(GatewayError::new(
                ErrorKind::RateLimitUnavailable,
                format!("the rate limiter's store is unavailable: {error}"),
            )),
            OnFailure::FailOpen => Ok(Outcome {
                decision: Decision {
                    allowed: true,
                    ..Decision::default()
                },
                fallback: false,
                degraded: Some(policy),
                pk,
            }),
            OnFailure::Local => Ok(Outcome {
                decision: self.tables.fallback.decide(
                    local_key,
                    &self.fallback,
                    self.cost,
                    self.max_delay,
                ),
                fallback: true,
                degraded: Some(policy),
                pk,
            }),
        }
    }

    /// The answer's fields for a decision: the degraded marker, the draft's `RateLimit-Policy`
    /// and `RateLimit` (first in their lists: a `quota` on the route keeps its items after
    /// them), or the legacy set for the most constraining limit. Decided with the request,
    /// added to whatever answer it gets (`RequestContext::apply_response_fields`).
    fn report(&self, o: &Outcome, out: &mut Vec<(http::HeaderName, HeaderValue, Join)>) {
        if let Some(policy) = o.degraded {
            out.push((DEGRADED, HeaderValue::from_static(policy), Join::Replace));
        }
        if o.decision.rooms.is_empty() {
            return;
        }
        let limits = if o.fallback {
            &self.fallback
        } else {
            &self.limits
        };
        if matches!(self.headers, HeaderStyle::Draft | HeaderStyle::Both) {
            let policy = if o.fallback {
                &self.fallback_policy_header
            } else {
                &self.policy_header
            };
            if let Some(p) = policy {
                out.push((RATELIMIT_POLICY, p.clone(), Join::ListFirst));
            }
            if let Some(v) = ratelimit_header(limits, &o.decision, o.pk) {
                out.push((RATELIMIT, v, Join::ListFirst));
            }
        }
        if matches!(self.headers, HeaderStyle::Legacy | HeaderStyle::Both) {
            // The most constraining limit: the fewest requests left.
            if let Some((l, room)) = limits
                .iter()
                .zip(o.decision.rooms.iter())
                .min_by_key(|(_, r)| r.remaining)
            {
                let reset = room.reset_us.div_ceil(1_000_000);
                out.push((X_LIMIT, HeaderValue::from(l.requests), Join::Replace));
                out.push((
                    X_REMAINING,
                    HeaderValue::from(room.remaining),
                    Join::Replace,
                ));
                out.push((X_RESET, HeaderValue::from(reset), Join::Replace));
            }
        }
    }

    /// The rest of an admitted request: held back first when spike arrest delays it.
    fn admitted(outcome: &Outcome) -> Option<std::time::Duration> {
        let d = outcome.decision.delay_us;
        (outcome.decision.allowed && d > 0).then(|| std::time::Duration::from_micros(d))
    }
}

impl Plugin for Limiter {
    fn on_request<'a>(
        &'a self,
        req: &'a mut http::request::Parts,
        ctx: &'a mut RequestContext,
    ) -> Result<Flow<'a>, GatewayError> {
        let Some(redis) = &self.redis else {
            let key = self.tables.keys.hash(&self.spec, &self.identity, req, ctx);
            let outcome = Outcome {
                decision: self
                    .tables
                    .local
                    .decide(key, &self.limits, self.cost, self.max_delay),
                fallback: false,
                degraded: None,
                pk: self.tables.keys.shown(key),
            };
            let delay = Self::admitted(&outcome);
            self.settle(outcome, ctx)?;
            return Ok(match delay {
                None => Flow::Continue,
                Some(d) => Flow::Wait(Box::pin(async move {
                    tokio::time::sleep(d).await;
                    Ok(None)
                })),
            });
        };
        let (name, pk, local_key) = shared_key(&self.spec, &self.identity, req, ctx);
        let keys = redis::keys(&self.redis_prefix, &name, &self.limits);
        Ok(Flow::Wait(Box::pin(async move {
            let outcome =
                match redis::decide(redis, &keys, &self.limits, self.cost, self.max_delay).await {
                    Ok(decision) => Outcome {
                        decision,
                        fallback: false,
                        degraded: None,
                        pk,
                    },
                    Err(e) => match self.degraded(redis, local_key, pk, &e) {
                        Ok(o) => o,
                        Err(refused) => {
                            // fail_closed: the 503 says why too.
                            let closed = Outcome {
                                decision: Decision::default(),
                                fallback: false,
                                degraded: Some("fail_closed"),
                                pk,
                            };
                            self.report(&closed, &mut ctx.response_fields);
                            return Err(refused);
                        }
                    },
                };
            let delay = Self::admitted(&outcome);
            self.settle(outcome, ctx)?;
            if let Some(d) = delay {
                tokio::time::sleep(d).await;
            }
            Ok(None)
        })))
    }
}
