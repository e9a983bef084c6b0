//! `mirror`: a share of a route's requests is copied to a shadow upstream, fire and forget,
//! to try a new service on real traffic. The copy never delays or fails the client's request:
//! it is sent on a task of its own, its answer is read and dropped, and at most
//! `max_in_flight` copies run at once (a copy over that is dropped and counted). Only bodies already in memory are copied (the gateway reads bodies
//! with a known length up to `server.body_buffer` before the upstream call); a streamed or
//! larger body is never held back for a copy: such requests are skipped and counted.

use crate::{BuildCtx, ConfigError, Phase, PluginFactory, ResultCounters};
use http_body_util::BodyExt;
use schemars::JsonSchema;
use serde::Deserialize;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use torii_config::values::{ByteSize, Duration as Dur};
use torii_core::{Body, ExchangeFuture, Next, Plugin, RequestContext};
use torii_upstream::{Affinity, CallOptions, CallPolicy, Upstream};

/// Settings of `mirror`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MirrorConfig {
    /// The shadow upstream (by name) that gets the copies.
    pub upstream: String,
    /// The share of requests copied, in percent (0 to 100).
    #[serde(default = "all")]
    pub percent: f64,
    /// The largest request body copied (at most 16 MiB); requests with a larger or streamed
    /// body are not copied.
    #[serde(default = "max_body")]
    pub max_body: ByteSize,
    /// Copies in flight at most; one more is dropped.
    #[serde(default = "max_in_flight")]
    pub max_in_flight: u32,
    /// The longest a copy may take, its answer read whole (1ms to 5m).
    #[serde(default = "timeout")]
    pub timeout: Dur,
}

fn all() -> f64 {
    100.0
}
fn max_body() -> ByteSize {
    ByteSize(64 << 10)
}
fn max_in_flight() -> u32 {
    100
}
fn timeout() -> Dur {
    Dur::secs(5)
}

/// The plugin type.
pub struct Mirror;

/// A copy's deadline at most.
const MAX_TIMEOUT: Duration = Duration::from_secs(300);
/// The largest body copied at most.
const MAX_BODY: u64 = 16 << 20;

fn bad(key: &str, message: String, hint: &str) -> ConfigError {
    ConfigError::at(key, message, hint)
}

impl PluginFactory for Mirror {
    const NAME: &'static str = "mirror";
    const PHASE: Phase = Phase::Transform;
    // After the request transformations: the shadow sees what the upstream sees.
    const ORDER: u16 = 90;
    type Config = MirrorConfig;

    fn build(c: MirrorConfig, ctx: &BuildCtx<'_>) -> Result<Arc<dyn Plugin>, ConfigError> {
        let Some(upstream) = ctx.upstreams.get(&c.upstream) else {
            let mut known: Vec<&str> = ctx.upstreams.keys().map(String::as_str).collect();
            known.sort_unstable();
            return Err(bad(
                "upstream",
                format!("unknown upstream `{}`", c.upstream),
                &format!("known upstreams: {}", known.join(", ")),
            ));
        };
        if !(0.0..=100.0).contains(&c.percent) {
            return Err(bad(
                "percent",
                format!("{} is not a percentage", c.percent),
                "give a share from 0 to 100, e.g. `percent: 10`",
            ));
        }
        if c.max_body.0 > MAX_BODY {
            return Err(bad(
                "max_body",
                format!("{} bytes is above 16 MiB", c.max_body.0),
                "copies are held in memory: keep them small, e.g. `max_body: 64KiB`",
            ));
        }
        if c.max_in_flight == 0 {
            return Err(bad(
                "max_in_flight",
                "0 copies in flight would drop every copy".to_string(),
                "e.g. `max_in_flight: 100`",
            ));
        }
        if c.timeout.0.is_zero() || c.timeout.0 > MAX_TIMEOUT {
            return Err(bad(
                "timeout",
                format!("{:?} is not from 1ms to 5m", c.timeout.0),
                "e.g. `timeout: 5s`",
            ));
        }
        let counters = Arc::new(Counters::default());
        ctx.register_counters("mirror", counters.clone());
        Ok(Arc::new(Shadow {
            upstream: upstream.clone(),
            threshold: if c.percent >= 100.0 {
                u64::MAX
            } else {
                (c.percent / 100.0 * u64::MAX as f64) as u64
            },
            max_body: c.max_body.0,
            permits: Arc::new(tokio::sync::Semaphore::new(c.max_in_flight as usize)),
            timeout: c.timeout.0,
            counters,
        }))
    }
}

/// What happened to requests, by result.
#[derive(Default)]
struct Counters {
    /// Copies sent and answered (any status).
    sent: AtomicU64,
    /// Copies that failed or ran out of time.
    failed: AtomicU64,
    /// Copies dropped: `max_in_flight` were running.
    dropped: AtomicU64,
    /// Requests not copied: their body was streamed or over `max_body`.
    skipped: AtomicU64,
}

impl ResultCounters for Counters {
    fn values(&self) -> Vec<(&'static str, u64)> {
        let l = |c: &AtomicU64| c.load(Ordering::Relaxed);
        vec![
            ("sent", l(&self.sent)),
            ("failed", l(&self.failed)),
            ("dropped", l(&self.dropped)),
            ("skipped", l(&self.skipped)),
        ]
    }
}

struct Shadow {
    upstream: Arc<Upstream>,
    threshold: u64,
    max_body: u64,
    permits: Arc<tokio::sync::Semaphore>,
    timeout: Duration,
    counters: Arc<Counters>,
}

static MIRRORED: http::HeaderName = http::HeaderName::from_static("x-torii-mirror");

impl Shadow {
    /// Starts a copy of the request, when it is to be copied and can be.
    fn copy(&self, req: &http::request::Parts, body: &Body) {
        if self.threshold == 0
            || (self.threshold != u64::MAX && fastrand::u64(..) >= self.threshold)
        {
            return;
        }
        let small = http_body::Body::size_hint(body)
            .exact()
            .is_some_and(|n| n <= self.max_body);
        let Some(copy) = body.try_clone().filter(|_| small) else {
            Counters::add(&self.counters.skipped);
            return;
        };
        let Ok(permit) = self.permits.clone().try_acquire_owned() else {
            Counters::add(&self.counters.dropped);
            return;
        };
        let mut head = req.clone();
        head.headers
            .insert(MIRRORED.clone(), http::HeaderValue::from_static("1"));
        let (upstream, counters, timeout) =
            (self.upstream.clone(), self.counters.clone(), self.timeout);
        tokio::spawn(async move {
            let _permit = permit;
            let call = async {
                let options = CallOptions {
                    extra: None,
                    upgrade: false,
                    affinity: &Affinity {
                        client: None,
                        consumer: None,
                    },
                    policy: &CallPolicy::default(),
                };
                let resp = upstream.call(&head, copy, options).await.ok()?;
                // Read to the end (so the connection is reused), frame by frame: nothing of
                // it is kept.
                let mut body = resp.response.into_body();
                while let Some(frame) = body.frame().await {
                    frame.ok()?;
                }
                Some(())
            };
            match tokio::time::timeout(timeout, call).await {
                Ok(Some(_)) => Counters::add(&counters.sent),
                _ => Counters::add(&counters.failed),
            }
        });
    }
}

impl Counters {
    fn add(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }
}

impl Plugin for Shadow {
    fn wraps_exchange(&self) -> bool {
        true
    }

    fn exchange_only(&self) -> bool {
        true
    }

    fn exchange<'a>(
        &'a self,
        req: &'a http::request::Parts,
        body: Body,
        ctx: &'a RequestContext,
        next: Next<'a>,
    ) -> ExchangeFuture<'a> {
        self.copy(req, &body);
        next.run(req, body, ctx)
    }
}
