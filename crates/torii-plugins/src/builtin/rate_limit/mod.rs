//! `rate_limit`: several limits at once (100 per second and 5,000 per hour, say) per key
//! (the consumer, the client address with IPv6 grouped by prefix, a header, a JWT claim, the
//! route, or a combination), decided by GCRA (`gcra.rs`: no double burst at a window
//! boundary). `policy: local` decides in process, with a bounded key table; `policy: redis`
//! decides in the gateway's Redis with one atomic script call (`redis.rs`), so a fleet shares
//! one exact limit. When Redis fails or is slower than its time box, `on_redis_failure` says
//! what happens: `fail_open`, `fail_closed` (503 `rate_limit_unavailable`) or `local` (the
//! limit divided by `nodes`); each such answer carries `Torii-RateLimit-Degraded` and is
//! counted (`torii_rate_limit_degraded_total`), so failing open is never silent.
//!
//! Answers carry the IETF draft headers (`RateLimit-Policy`, `RateLimit`, with a partition
//! key) or the legacy `X-RateLimit-*` set; a refused request gets 429 `rate_limited` with
//! `Retry-After`. Only admitted requests count.

mod gcra;
mod redis;

use crate::{BuildCtx, ConfigError, Phase, PluginFactory};
use gcra::{Decision, Limit, LocalStore, MAX_LIMITS};
use http::HeaderValue;
use schemars::JsonSchema;
use serde::Deserialize;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::Arc;
use torii_config::values::Duration;
use torii_core::{ErrorKind, Flow, GatewayError, Plugin, RequestContext};
use torii_store::{Fallback, Redis};

/// Settings of `rate_limit`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// The limits, all applied: a request passes only when each one has room.
    pub limits: Vec<LimitConfig>,
    /// What is counted apart: one or more of `consumer`, `client_address`, `route`,
    /// `{header: NAME}`, `{claim: NAME}`, combined. A request without a part (no consumer,
    /// no such header or claim) is counted by its client address in its place.
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
    /// `local` policy (and the `local` fallback): most keys tracked; beyond it the least
    /// recently used are forgotten, so a flood of random keys cannot exhaust memory.
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

/// A part of the key.
#[derive(Debug, Clone, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum KeyPart {
    /// The authenticated consumer.
    Consumer,
    /// The client address (after trusted proxies; IPv6 by `ipv6_prefix`).
    ClientAddress,
    /// The route.
    Route,
    /// A request header's value.
    Header(String),
    /// A claim of the verified token (JWT, introspection).
    Claim(String),
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
    const ORDER: u16 = 10;
    type Config = RateLimitConfig;

    fn build(config: RateLimitConfig, ctx: &BuildCtx<'_>) -> Result<Arc<dyn Plugin>, ConfigError> {
        if config.limits.is_empty() || config.limits.len() > MAX_LIMITS {
            return Err(ConfigError::at(
                "limits",
                format!("between 1 and {MAX_LIMITS} limits are needed"),
                "e.g. `limits: [{requests: 100, per: 1s}, {requests: 5000, per: 1h}]`",
            ));
        }
        let mut limits = Vec::with_capacity(config.limits.len());
        for (i, l) in config.limits.iter().enumerate() {
            if l.requests == 0 {
                return Err(ConfigError::at(
                    "requests",
                    "must be at least 1",
                    "e.g. `requests: 100`",
                )
                .in_list("limits", i));
            }
            if l.per.0 < std::time::Duration::from_millis(1) {
                return Err(
                    ConfigError::at("per", "must be at least 1ms", "e.g. `per: 1s`")
                        .in_list("limits", i),
                );
            }
            let name = l
                .name
                .clone()
                .unwrap_or_else(|| format!("{}-per-{}", l.requests, short(l.per.0)));
            limits.push(Limit::new(name, l.requests, l.per.0));
        }
        if config.key.is_empty() {
            return Err(ConfigError::at(
                "key",
                "the key needs at least one part",
                "e.g. `key: [consumer]` or `key: [client_address]`",
            ));
        }
        if config.ipv6_prefix > 128 {
            return Err(ConfigError::at("ipv6_prefix", "at most 128", "e.g. `64`"));
        }
        for part in &config.key {
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
        if config.cost == 0 || config.nodes == 0 {
            let k = if config.cost == 0 { "cost" } else { "nodes" };
            return Err(ConfigError::at(k, "must be at least 1", "e.g. `1`"));
        }
        for (i, l) in limits.iter().enumerate() {
            let share = l.divided(config.nodes).requests;
            if u64::from(config.cost) > share {
                return Err(ConfigError::at(
                    "cost",
                    format!(
                        "a request costing {} can never pass `limits[{i}]` ({} per window{})",
                        config.cost,
                        share,
                        if config.nodes > 1 {
                            " per node in the `local` fallback"
                        } else {
                            ""
                        }
                    ),
                    "lower `cost`, or raise the limit's `requests`",
                ));
            }
            // GCRA spaces requests by whole microseconds: refuse a rate whose rounding would let
            // more than 1 % extra through.
            if l.window_us % l.requests != 0 && l.interval_us < 100 {
                return Err(ConfigError::at(
                    "requests",
                    format!(
                        "{} per {} µs spaces requests {:.2} µs apart, too finely for whole microseconds (it would admit {:.0} % more)",
                        l.requests,
                        l.window_us,
                        l.window_us as f64 / l.requests as f64,
                        (l.requests as f64 * l.interval_us as f64 / l.window_us as f64 - 1.0).abs() * 100.0
                    ),
                    "use a rate that divides the window evenly (e.g. 500000 per 1s), or at most 10,000 per second",
                )
                .in_list("limits", i));
            }
        }
        let longest = limits
            .iter()
            .map(|l| std::time::Duration::from_micros(l.window_us))
            .max()
            .unwrap_or_default();
        let max_keys = config.max_keys.max(1);
        // The local table survives reloads that keep the settings (and the scope).
        // The local tables survive reloads that keep the settings (and the scope). One state
        // value: the registry keys state by plugin, scope and settings, not by type.
        let tables = ctx.state(|| Tables {
            local: LocalStore::new(max_keys, longest),
            fallback: LocalStore::new(max_keys, longest),
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
        // This instance's counters: its scope (global, a route, a consumer), limits and key,
        // hashed into its Redis keys and key hashes, so two instances never share counters.
        let instance =
            stable_hash(format!("{}|{:?}|{:?}", ctx.scope, config.limits, config.key).as_bytes());
        let fallback: Box<[Limit]> = limits.iter().map(|l| l.divided(config.nodes)).collect();
        let fallback_policy_header = policy_header(&fallback);
        let policy_header = policy_header(&limits);
        Ok(Arc::new(Limiter {
            limits: limits.into(),
            fallback,
            key: config.key.into(),
            ipv6_prefix: config.ipv6_prefix,
            cost: u64::from(config.cost),
            headers: config.headers,
            tables,
            redis,
            on_failure: config.on_redis_failure,
            instance,
            policy_header,
            fallback_policy_header,
        }))
    }
}

/// The in-process tables: the `local` policy's, and the `local` fallback's.
struct Tables {
    local: LocalStore,
    fallback: LocalStore,
}

struct Limiter {
    limits: Box<[Limit]>,
    /// The limits divided by `nodes`, for the `local` fallback.
    fallback: Box<[Limit]>,
    key: Box<[KeyPart]>,
    ipv6_prefix: u8,
    cost: u64,
    headers: HeaderStyle,
    tables: Arc<Tables>,
    redis: Option<Arc<Redis>>,
    on_failure: OnFailure,
    instance: u64,
    /// `RateLimit-Policy`, built at load.
    policy_header: Option<HeaderValue>,
    /// The same for the `local` fallback's divided limits.
    fallback_policy_header: Option<HeaderValue>,
}

/// What the response phase adds to the answer.
#[derive(Clone)]
struct Outcome {
    decision: Decision,
    /// The limits the decision was made against (the fallback's when degraded to `local`).
    fallback: bool,
    degraded: Option<&'static str>,
    key: u64,
}

impl Limiter {
    /// The request's key, hashed (never stored or sent as written: a client address or a
    /// token claim stays in the process).
    fn key(&self, req: &http::request::Parts, ctx: &RequestContext) -> u64 {
        key_hash(&self.key, self.instance, self.ipv6_prefix, req, ctx)
    }

    fn redis_keys(&self, key: u64) -> Vec<String> {
        (0..self.limits.len())
            .map(|i| format!("torii:rl:{:016x}:{{{key:016x}}}:{i}", self.instance))
            .collect()
    }

    /// The decision's consequence: `Ok` to go on (the outcome kept for the response phase),
    /// or the 429.
    fn settle(&self, outcome: Outcome, ctx: &mut RequestContext) -> Result<(), GatewayError> {
        let allowed = outcome.decision.allowed;
        let retry = outcome.decision.retry_us;
        ctx.extensions.insert(outcome);
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
        key: u64,
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
                    retry_us: 0,
                    rooms: Default::default(),
                },
                fallback: false,
                degraded: Some(policy),
                key,
            }),
            OnFailure::Local => Ok(Outcome {
                decision: self.tables.fallback.decide(key, &self.fallback, self.cost),
                fallback: true,
                degraded: Some(policy),
                key,
            }),
        }
    }
}

impl Plugin for Limiter {
    fn on_request<'a>(
        &'a self,
        req: &'a mut http::request::Parts,
        ctx: &'a mut RequestContext,
    ) -> Result<Flow<'a>, GatewayError> {
        let key = self.key(req, ctx);
        let Some(redis) = &self.redis else {
            let decision = self.tables.local.decide(key, &self.limits, self.cost);
            self.settle(
                Outcome {
                    decision,
                    fallback: false,
                    degraded: None,
                    key,
                },
                ctx,
            )?;
            return Ok(Flow::Continue);
        };
        let keys = self.redis_keys(key);
        Ok(Flow::Wait(Box::pin(async move {
            let outcome = match redis::decide(redis, &keys, &self.limits, self.cost).await {
                Ok(decision) => Outcome {
                    decision,
                    fallback: false,
                    degraded: None,
                    key,
                },
                Err(e) => match self.degraded(redis, key, &e) {
                    Ok(o) => o,
                    Err(refused) => {
                        // fail_closed: the 503 says why too.
                        ctx.extensions.insert(Outcome {
                            decision: Decision {
                                allowed: false,
                                retry_us: 0,
                                rooms: Default::default(),
                            },
                            fallback: false,
                            degraded: Some("fail_closed"),
                            key,
                        });
                        return Err(refused);
                    }
                },
            };
            self.settle(outcome, ctx)?;
            Ok(None)
        })))
    }

    fn on_response(&self, resp: &mut http::response::Parts, ctx: &RequestContext) {
        let Some(o) = ctx.extensions.get::<Outcome>() else {
            return;
        };
        let h = &mut resp.headers;
        if let Some(policy) = o.degraded {
            h.insert(DEGRADED, HeaderValue::from_static(policy));
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
                first_items(h, RATELIMIT_POLICY, p.clone());
            }
            if let Some(v) = ratelimit_header(limits, &o.decision, o.key) {
                first_items(h, RATELIMIT, v);
            }
        }
        if matches!(self.headers, HeaderStyle::Legacy | HeaderStyle::Both) {
            // The most constraining limit: the fewest requests left.
            if let Some((l, room)) = limits
                .iter()
                .zip(o.decision.rooms.iter())
                .min_by_key(|(_, r)| r.remaining)
            {
                h.insert(X_LIMIT, HeaderValue::from(l.requests));
                h.insert(X_REMAINING, HeaderValue::from(room.remaining));
                h.insert(
                    X_RESET,
                    HeaderValue::from(room.reset_us.div_ceil(1_000_000)),
                );
            }
        }
    }
}

/// Sets a structured-field list header to `v`, keeping the items already there (a `quota` on
/// the same route adds its own) after it.
fn first_items(h: &mut http::HeaderMap, name: http::HeaderName, v: HeaderValue) {
    match h.get(&name) {
        None => {
            h.insert(name, v);
        }
        Some(old) => {
            let mut both = Vec::with_capacity(v.len() + 2 + old.len());
            both.extend_from_slice(v.as_bytes());
            both.extend_from_slice(b", ");
            both.extend_from_slice(old.as_bytes());
            if let Ok(joined) = HeaderValue::from_bytes(&both) {
                h.insert(name, joined);
            }
        }
    }
}

/// `RateLimit-Policy: "100-per-1s";q=100;w=1, ...` (a structured-field list: each policy's
/// name, quota and window in seconds).
fn policy_header(limits: &[Limit]) -> Option<HeaderValue> {
    let items: Vec<String> = limits
        .iter()
        .map(|l| {
            format!(
                "{};q={};w={}",
                sf_string(&l.name),
                l.requests,
                l.window_us.div_ceil(1_000_000)
            )
        })
        .collect();
    HeaderValue::from_str(&items.join(", ")).ok()
}

/// `RateLimit: "100-per-1s";r=42;t=1;pk=:...:, ...`: per policy, what remains, the seconds
/// until it is whole again, and the partition key (the key's hash, never the key itself).
/// Written into a buffer on the stack from the items' prefixes built at load, with no
/// formatting machinery, then copied once into the header: this runs on every answer.
fn ratelimit_header(limits: &[Limit], d: &Decision, key: u64) -> Option<HeaderValue> {
    use base64::Engine;
    let mut pk = [0u8; 12];
    let pk_len = base64::engine::general_purpose::STANDARD
        .encode_slice(key.to_be_bytes(), &mut pk)
        .ok()?;
    let mut out = Buf::default();
    let mut num = itoa::Buffer::new();
    for (i, (l, r)) in limits.iter().zip(d.rooms.iter()).enumerate() {
        if i > 0 {
            out.put(b", ");
        }
        out.put(&l.item_prefix);
        out.put(num.format(r.remaining).as_bytes());
        out.put(b";t=");
        out.put(num.format(r.reset_us.div_ceil(1_000_000)).as_bytes());
        out.put(b";pk=:");
        out.put(&pk[..pk_len]);
        out.put(b":");
    }
    HeaderValue::from_bytes(out.bytes()).ok()
}

/// A header value being written: on the stack up to 512 bytes, on the heap past it (long
/// policy names).
struct Buf {
    stack: [u8; 512],
    len: usize,
    heap: Vec<u8>,
}

impl Default for Buf {
    fn default() -> Self {
        Self {
            stack: [0; 512],
            len: 0,
            heap: Vec::new(),
        }
    }
}

impl Buf {
    fn put(&mut self, b: &[u8]) {
        if self.heap.is_empty() && self.len + b.len() <= self.stack.len() {
            self.stack[self.len..self.len + b.len()].copy_from_slice(b);
            self.len += b.len();
        } else {
            if self.heap.is_empty() {
                self.heap.extend_from_slice(&self.stack[..self.len]);
            }
            self.heap.extend_from_slice(b);
        }
    }

    fn bytes(&self) -> &[u8] {
        if self.heap.is_empty() {
            &self.stack[..self.len]
        } else {
            &self.heap
        }
    }
}

/// A structured-field string (RFC 9651 3.3.3): quoted, with `"` and `\` escaped; other
/// characters outside printable ASCII are dropped.
pub(crate) fn sf_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars().filter(|c| (' '..='~').contains(c)) {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// `1s`, `5m`, `1h`, `1d`, `250ms`: a window as its name shows it.
fn short(d: std::time::Duration) -> String {
    let ms = d.as_millis();
    match ms {
        _ if ms.is_multiple_of(86_400_000) => format!("{}d", ms / 86_400_000),
        _ if ms.is_multiple_of(3_600_000) => format!("{}h", ms / 3_600_000),
        _ if ms.is_multiple_of(60_000) => format!("{}m", ms / 60_000),
        _ if ms.is_multiple_of(1000) => format!("{}s", ms / 1000),
        _ => format!("{ms}ms"),
    }
}

/// The hash of a request's key made of `parts` (also `concurrency_limit`'s): each part's value,
/// or the client address (IPv6 by its first `ipv6_prefix` bits) in place of a missing one.
pub(crate) fn key_hash(
    parts: &[KeyPart],
    seed: u64,
    ipv6_prefix: u8,
    req: &http::request::Parts,
    ctx: &RequestContext,
) -> u64 {
    use std::hash::Hasher;
    let mut h = foldhash::fast::FixedState::with_seed(seed).build_hasher();
    for part in parts {
        let found: Option<&[u8]> = match part {
            KeyPart::Consumer => ctx.consumer.as_ref().map(|c| c.name.as_bytes()),
            KeyPart::Route => Some(ctx.route.as_deref().unwrap_or("").as_bytes()),
            KeyPart::Header(name) => req.headers.get(name.as_str()).map(HeaderValue::as_bytes),
            KeyPart::Claim(name) => ctx
                .identity
                .as_ref()
                .and_then(|i| i.claims.as_ref())
                .and_then(|c| c.get(name))
                .and_then(|v| v.as_str())
                .map(str::as_bytes),
            KeyPart::ClientAddress => None,
        };
        match found {
            Some(b) => {
                h.write_u8(1);
                h.write(b);
                h.write_u8(0xff);
            }
            None => {
                h.write_u8(2);
                match ctx.client.0 {
                    IpAddr::V4(a) => h.write(&a.octets()),
                    IpAddr::V6(a) => match a.to_ipv4_mapped() {
                        Some(v4) => h.write(&v4.octets()),
                        None => {
                            let p = u32::from(ipv6_prefix.min(128));
                            let masked = if p == 0 {
                                0
                            } else {
                                u128::from(a) & (u128::MAX << (128 - p))
                            };
                            h.write(&masked.to_be_bytes());
                        }
                    },
                }
            }
        }
    }
    h.finish()
}

pub(crate) fn stable_hash(b: &[u8]) -> u64 {
    foldhash::fast::FixedState::with_seed(0x7261_7465).hash_one(b)
}
