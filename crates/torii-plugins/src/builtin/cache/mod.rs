//! `cache`: a shared HTTP cache (RFC 9111) around the route's upstream call, in the exchange
//! stage. The rules and the store are torii-cache's; this module reads the settings, and
//! [`exchange`] runs a request through the cache: fresh hits answered from memory (with 304s
//! to clients' conditional requests), stale entries revalidated with their validators,
//! concurrent misses coalesced into one upstream request, stale responses served when the
//! upstream fails and the response or the route allows it, and stored responses invalidated
//! by unsafe requests to their URL. See docs/caching.md.

mod exchange;
mod shortcut;
pub mod tee;

use crate::{BuildCtx, ConfigError, Phase, PluginFactory};
use http::HeaderName;
use schemars::JsonSchema;
use serde::Deserialize;
use std::sync::Arc;
use std::time::Duration as StdDuration;
use torii_cache::key::{KeySpec, Query};
use torii_cache::status::Counters;
use torii_cache::{Memory, Settings};
use torii_config::values::{ByteSize, Duration};
use torii_core::Plugin;

/// Settings of `cache`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    /// What makes two requests share a stored response.
    #[serde(default)]
    pub key: KeyConfig,
    /// The largest body stored (bigger ones stream through, never held whole). Default 1MiB,
    /// at most 64MiB.
    #[serde(default = "default_max_object_size")]
    pub max_object_size: ByteSize,
    /// Serve a stored response up to this long past its freshness when the upstream fails
    /// (connection refused, timeout, 500/502/503/504, circuit open), even when the response
    /// did not say `stale-if-error` (a longer `stale-if-error` in the response wins). Never
    /// for responses with `must-revalidate`, `proxy-revalidate`, `s-maxage` or `no-cache`,
    /// nor for stored 5xx answers. Default 1m; `0s` leaves it to the responses.
    #[serde(default = "default_stale_if_error")]
    pub stale_if_error: Duration,
    /// Serve a stored response up to this long past its freshness while one request
    /// refreshes it in the background (a longer `stale-while-revalidate` in the response
    /// wins). Same exceptions as `stale_if_error`. Default 0s: only the response's own.
    #[serde(default = "zero")]
    pub stale_while_revalidate: Duration,
    /// How long a miss waits for a concurrent request for the same key to fill it, before it
    /// goes upstream itself. Default 5s.
    #[serde(default = "default_lock_timeout")]
    pub lock_timeout: Duration,
    /// The fraction of the time since `Last-Modified` used as the freshness lifetime of a
    /// response without explicit freshness, where the RFC allows a heuristic. Default 0.1,
    /// between 0 and 1 (0: no heuristic freshness).
    #[serde(default = "default_heuristic")]
    pub heuristic: f32,
    /// Keep responses in the gateway's Redis too (the top-level `redis`), so every gateway
    /// node shares them, and purges reach every node. Bodies over
    /// `cache.shared_max_object_size` stay in memory. Default false.
    #[serde(default)]
    pub shared: bool,
    /// Add `Cache-Status` (RFC 9211) to the responses the cache handled. Default true.
    #[serde(default = "yes")]
    pub cache_status: bool,
    /// Add `X-Cache: HIT | MISS | STALE` too. Default false.
    #[serde(default)]
    pub x_cache: bool,
}

/// The parts of a key.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    /// Include the host. Default true.
    #[serde(default = "yes")]
    pub host: bool,
    /// The query: `as_sent` (default), `sorted` (parameter order ignored), `ignored`, or a
    /// list of the parameters that count (others ignored).
    #[serde(default)]
    pub query: QueryConfig,
    /// Request headers whose values are part of the key (beyond what responses' `Vary` asks).
    #[serde(default)]
    pub headers: Vec<torii_config::values::HeaderName>,
    /// Keep each consumer's responses apart. Without it, responses to authenticated requests
    /// are stored only when they say they may be shared (`public`, `s-maxage` or
    /// `must-revalidate`). Default false.
    #[serde(default)]
    pub consumer: bool,
}

impl Default for KeyConfig {
    fn default() -> Self {
        Self {
            host: true,
            query: QueryConfig::default(),
            headers: Vec::new(),
            consumer: false,
        }
    }
}

/// The query's part of a key.
#[derive(Debug, Deserialize, JsonSchema, Default)]
#[serde(untagged)]
pub enum QueryConfig {
    /// `as_sent`, `sorted` or `ignored`.
    Mode(QueryMode),
    /// Only these parameters.
    Only(Vec<String>),
    /// As sent.
    #[default]
    #[serde(skip)]
    Default,
}

/// How the whole query counts.
#[derive(Debug, Deserialize, JsonSchema, Clone, Copy)]
#[serde(rename_all = "snake_case")]
pub enum QueryMode {
    /// The query string as sent.
    AsSent,
    /// Every parameter, in sorted order.
    Sorted,
    /// Not at all.
    Ignored,
}

fn default_max_object_size() -> ByteSize {
    ByteSize(1 << 20)
}
fn zero() -> Duration {
    Duration(StdDuration::ZERO)
}
fn default_stale_if_error() -> Duration {
    Duration::secs(60)
}
fn default_lock_timeout() -> Duration {
    Duration::secs(5)
}
fn default_heuristic() -> f32 {
    0.1
}
fn yes() -> bool {
    true
}

/// Largest `max_object_size`.
pub const MAX_OBJECT_LIMIT: u64 = 64 << 20;

/// The plugin type.
pub struct Cache;

/// One configured cache.
pub(crate) struct RouteCache {
    spec: KeySpec,
    settings: Settings,
    lock_timeout: StdDuration,
    cache_status: bool,
    x_cache: bool,
    memory: Arc<Memory>,
    shared: Option<Arc<torii_cache::SharedTier>>,
    flights: Arc<torii_cache::flights::Flights>,
    counters: Arc<Counters>,
}

impl PluginFactory for Cache {
    const NAME: &'static str = "cache";
    const PHASE: Phase = Phase::Traffic;
    // After the limits: a hit is still counted and limited.
    const ORDER: u16 = 90;
    type Config = CacheConfig;

    fn build(c: CacheConfig, ctx: &BuildCtx<'_>) -> Result<Arc<dyn Plugin>, ConfigError> {
        if c.max_object_size.0 == 0 || c.max_object_size.0 > MAX_OBJECT_LIMIT {
            return Err(ConfigError::at(
                "max_object_size",
                format!("must be between 1B and {}MiB", MAX_OBJECT_LIMIT >> 20),
                "larger bodies stream through unstored; e.g. `max_object_size: 1MiB`",
            ));
        }
        if !(0.0..=1.0).contains(&c.heuristic) || c.heuristic.is_nan() {
            return Err(ConfigError::at(
                "heuristic",
                "must be between 0 and 1",
                "0.1 caches a response unchanged for 10 days for one day",
            ));
        }
        if c.lock_timeout.0.is_zero() || c.lock_timeout.0 > StdDuration::from_secs(60) {
            return Err(ConfigError::at(
                "lock_timeout",
                "must be between 1ms and 60s",
                "how long concurrent misses wait for the first one; e.g. `lock_timeout: 5s`",
            ));
        }
        let query = match c.key.query {
            QueryConfig::Default | QueryConfig::Mode(QueryMode::AsSent) => Query::AsSent,
            QueryConfig::Mode(QueryMode::Sorted) => Query::Sorted,
            QueryConfig::Mode(QueryMode::Ignored) => Query::Ignored,
            QueryConfig::Only(mut names) => {
                if names.iter().any(String::is_empty) {
                    return Err(ConfigError::at(
                        "key",
                        "`query` lists an empty parameter name",
                        "list the parameters that select the response, e.g. `query: [page]`",
                    ));
                }
                names.sort();
                names.dedup();
                Query::Only(names.into_boxed_slice())
            }
        };
        let headers: Vec<HeaderName> = c.key.headers.into_iter().map(|h| h.0).collect();
        let memory = ctx.cache_memory();
        let shared = if c.shared {
            Some(ctx.cache_shared().ok_or_else(|| {
                ConfigError::at(
                    "shared",
                    "the shared tier needs the gateway's Redis",
                    "add a top-level `redis: {url: redis://host:6379}`, or remove `shared`",
                )
            })?)
        } else {
            None
        };
        let counters = Arc::new(Counters::default());
        ctx.register_cache_counters(counters.clone());
        Ok(Arc::new(RouteCache {
            spec: KeySpec {
                namespace: ctx.scope.to_string(),
                host: c.key.host,
                query,
                headers: headers.into_boxed_slice(),
                consumer: c.key.consumer,
            },
            settings: Settings {
                heuristic: c.heuristic,
                stale_if_error: c.stale_if_error.0,
                stale_while_revalidate: c.stale_while_revalidate.0,
                max_object_size: c.max_object_size.0,
            },
            lock_timeout: c.lock_timeout.0,
            cache_status: c.cache_status,
            x_cache: c.x_cache,
            memory,
            shared,
            flights: ctx.state(Default::default),
            counters,
        }))
    }
}

impl Plugin for RouteCache {
    fn wraps_exchange(&self) -> bool {
        true
    }

    fn exchange_only(&self) -> bool {
        true
    }

    fn exchange<'a>(
        &'a self,
        req: &'a http::request::Parts,
        body: torii_core::Body,
        ctx: &'a torii_core::RequestContext,
        next: torii_core::Next<'a>,
    ) -> torii_core::ExchangeFuture<'a> {
        Box::pin(self.run(req, body, ctx, next))
    }

    fn before_exchange(
        &self,
        req: &http::request::Parts,
        ctx: &torii_core::RequestContext,
    ) -> torii_core::Before {
        self.before(req, ctx)
    }

    fn after_exchange(
        &self,
        req: &http::request::Parts,
        status: http::StatusCode,
        headers: &mut http::HeaderMap,
        note: u64,
        ctx: &torii_core::RequestContext,
    ) {
        self.after(req, status, headers, note, ctx);
    }
}
