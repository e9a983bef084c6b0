//! `concurrency_limit`: at most `max_in_flight` requests per key (the consumer, the client
//! address, the route, a header) at once. Past it, up to `max_waiting` requests wait (at most
//! `max_wait`) for a place; the rest are refused at once with 429 `rate_limited` or 503
//! `concurrency_limited`. A request holds its place until its response body has ended or the
//! client went away (the place rides on the response body through the exchange stage).
//!
//! Places are per process (a tokio semaphore per key, in a bounded table: `max_keys`, least
//! recently used forgotten beyond it, idle keys after 10 minutes; a key forgotten while its
//! requests run starts a fresh count, so keep `max_keys` above the keys active at once).

use crate::builtin::rate_limit::{KeyPart, KeySpec, LocalKeys};
use crate::{BuildCtx, ConfigError, Phase, PluginFactory};
use http::HeaderValue;
use schemars::JsonSchema;
use serde::Deserialize;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use torii_core::stage::{ExchangeFuture, Next};
use torii_core::{Body, ErrorKind, Flow, GatewayError, Plugin, RequestContext};

/// Settings of `concurrency_limit`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConcurrencyLimitConfig {
    /// Requests in flight per key at most.
    pub max_in_flight: u32,
    /// Requests that may wait for a place per key; more are refused at once.
    #[serde(default)]
    pub max_waiting: u32,
    /// The longest a request waits for a place.
    #[serde(default = "default_max_wait")]
    pub max_wait: torii_config::values::Duration,
    /// What is counted apart (as `rate_limit`'s `key`): `consumer`, `client_address`,
    /// `route`, `{header: NAME}`, `{claim: NAME}`.
    #[serde(default = "default_key")]
    pub key: Vec<KeyPart>,
    /// The answer when no place is free: `429` (`rate_limited`, with `Retry-After: 1`) or
    /// `503` (`concurrency_limited`).
    #[serde(default = "default_status")]
    pub status: u16,
    /// Most keys tracked.
    #[serde(default = "default_max_keys")]
    pub max_keys: u64,
}

fn default_max_wait() -> torii_config::values::Duration {
    torii_config::values::Duration::millis(0)
}
fn default_key() -> Vec<KeyPart> {
    vec![KeyPart::Consumer]
}
fn default_status() -> u16 {
    429
}
fn default_max_keys() -> u64 {
    100_000
}

/// The plugin type.
pub struct ConcurrencyLimit;

impl PluginFactory for ConcurrencyLimit {
    const NAME: &'static str = "concurrency_limit";
    const PHASE: Phase = Phase::Traffic;
    // Also on a consumer or a plan: counted per consumer.
    const PER_CONSUMER: bool = true;
    const ORDER: u16 = 20;
    type Config = ConcurrencyLimitConfig;

    fn build(
        config: ConcurrencyLimitConfig,
        ctx: &BuildCtx<'_>,
    ) -> Result<Arc<dyn Plugin>, ConfigError> {
        if config.max_in_flight == 0 {
            return Err(ConfigError::at(
                "max_in_flight",
                "must be at least 1",
                "e.g. `max_in_flight: 10`",
            ));
        }
        if config.status != 429 && config.status != 503 {
            return Err(ConfigError::at(
                "status",
                format!("{} is neither 429 nor 503", config.status),
                "use `status: 429` (the client sends too much) or `status: 503`",
            ));
        }
        let spec = crate::builtin::rate_limit::key_spec(&config.key, 64, ctx)?;
        let max_keys = config.max_keys.max(1);
        let table = ctx.state(|| Table {
            hashing: LocalKeys::new(),
            keys: moka::sync::Cache::builder()
                .max_capacity(max_keys)
                .time_to_idle(Duration::from_secs(600))
                .build(),
        });
        Ok(Arc::new(Limiter {
            max_in_flight: config.max_in_flight as usize,
            max_waiting: config.max_waiting as usize,
            max_wait: config.max_wait.0,
            spec,
            refuse_429: config.status == 429,
            table,
        }))
    }
}

struct Table {
    /// Key hashing with a random seed (clients cannot make two keys share places).
    hashing: LocalKeys,
    keys: moka::sync::Cache<u64, Arc<Slots>>,
}

struct Slots {
    places: Arc<Semaphore>,
    waiting: AtomicUsize,
}

struct Limiter {
    max_in_flight: usize,
    max_waiting: usize,
    max_wait: Duration,
    spec: KeySpec,
    refuse_429: bool,
    table: Arc<Table>,
}

/// A request in a key's queue.
struct Queued(Arc<Slots>);

impl Drop for Queued {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The request's place, taken by the exchange stage to ride on the response body.
struct Place(Mutex<Option<OwnedSemaphorePermit>>);

impl Limiter {
    fn refused(&self) -> GatewayError {
        let kind = if self.refuse_429 {
            ErrorKind::RateLimited(HeaderValue::from_static("1"))
        } else {
            ErrorKind::ConcurrencyLimited
        };
        GatewayError::new(kind, "too many requests in flight for this key")
    }
}

impl Plugin for Limiter {
    fn on_request<'a>(
        &'a self,
        req: &'a mut http::request::Parts,
        ctx: &'a mut RequestContext,
    ) -> Result<Flow<'a>, GatewayError> {
        let key = self.table.hashing.hash(&self.spec, &[0; 16], req, ctx);
        let slots = self.table.keys.get_with(key, || {
            Arc::new(Slots {
                places: Arc::new(Semaphore::new(self.max_in_flight)),
                waiting: AtomicUsize::new(0),
            })
        });
        if let Ok(p) = slots.places.clone().try_acquire_owned() {
            ctx.extensions.insert(Arc::new(Place(Mutex::new(Some(p)))));
            return Ok(Flow::Continue);
        }
        if self.max_wait.is_zero()
            || slots
                .waiting
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                    (n < self.max_waiting).then_some(n + 1)
                })
                .is_err()
        {
            return Err(self.refused());
        }
        // Leaves the queue however the wait ends (a place, the time limit, or the client gone
        // and the future dropped).
        let queued = Queued(slots.clone());
        Ok(Flow::Wait(Box::pin(async move {
            let got =
                tokio::time::timeout(self.max_wait, slots.places.clone().acquire_owned()).await;
            drop(queued);
            match got {
                Ok(Ok(p)) => {
                    ctx.extensions.insert(Arc::new(Place(Mutex::new(Some(p)))));
                    Ok(None)
                }
                _ => Err(self.refused()),
            }
        })))
    }

    fn wraps_exchange(&self) -> bool {
        true
    }

    fn exchange<'a>(
        &'a self,
        req: &'a http::request::Parts,
        body: Body,
        ctx: &'a RequestContext,
        next: Next<'a>,
    ) -> ExchangeFuture<'a> {
        let place = ctx
            .extensions
            .get::<Arc<Place>>()
            .and_then(|p| p.0.lock().ok()?.take());
        Box::pin(async move {
            let resp = next.run(req, body, ctx).await?;
            Ok(match place {
                // The place is given back when the body ends or is dropped.
                Some(p) => resp.map(|b| {
                    Body::boxed(Holding {
                        inner: b,
                        _place: p,
                    })
                }),
                None => resp,
            })
        })
    }
}

/// A response body that keeps its request's place until it is dropped.
struct Holding {
    inner: Body,
    _place: OwnedSemaphorePermit,
}

impl http_body::Body for Holding {
    type Data = bytes::Bytes;
    type Error = torii_core::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
