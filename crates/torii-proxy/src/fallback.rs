//! Masking upstream failures (`routes[].fallback`): first with the last good answer to the
//! same request (`stale`, marked `X-Torii-Fallback: stale`), kept by an exchange stage in the
//! cache's memory tier, then with the route's static answer (marked `X-Torii-Fallback:
//! static`). The masked failure is still logged and counted as an upstream error.

use crate::bodies::Outgoing;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode};
use torii_core::{Body, GatewayError};

/// A route's static fallback, compiled at load.
pub struct StaticFallback {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
    on_errors: Box<[String]>,
    on_status: Box<[u16]>,
}

impl StaticFallback {
    /// Whether the config has a static answer: always, unless only `stale` is set.
    pub fn configured(cfg: &torii_config::schema::Fallback) -> bool {
        cfg.stale.is_none()
            || cfg.status.is_some()
            || !cfg.headers.is_empty()
            || !cfg.body.is_empty()
    }

    /// Compiles the config (validated at load: bad headers cannot reach here, and are skipped).
    pub fn new(cfg: &torii_config::schema::Fallback) -> Self {
        let mut headers = header_map(&cfg.headers);
        headers.insert("x-torii-fallback", HeaderValue::from_static("static"));
        Self {
            status: cfg
                .status
                .and_then(|s| StatusCode::from_u16(s).ok())
                .unwrap_or(StatusCode::OK),
            headers,
            body: Bytes::copy_from_slice(cfg.body.as_bytes()),
            on_errors: cfg.on_errors.clone().into_boxed_slice(),
            on_status: cfg.on_status.clone().into_boxed_slice(),
        }
    }

    /// Whether an upstream answer with `status` is replaced.
    pub fn replaces(&self, status: StatusCode) -> bool {
        self.on_status.contains(&status.as_u16())
    }

    /// The static answer (`head`: without its body).
    pub fn answer(&self, head: bool) -> Response<Outgoing> {
        let body = if head {
            Body::Empty
        } else {
            Body::full(self.body.clone())
        };
        let mut r = Response::new(Outgoing::Gateway(body));
        *r.status_mut() = self.status;
        *r.headers_mut() = self.headers.clone();
        r
    }

    /// The static answer in place of `result` when it is a failure this fallback masks: an
    /// error whose code is in `on_errors`, or an answer whose status is in `on_status`.
    /// `record` is told the code of a masked error (the metrics still count it).
    pub fn mask(
        &self,
        result: Result<Response<Outgoing>, GatewayError>,
        head: bool,
        record: impl FnOnce(&GatewayError),
    ) -> Result<Response<Outgoing>, GatewayError> {
        match result {
            Err(e) if self.on_errors.iter().any(|c| c == e.kind.code()) => {
                tracing::warn!(error = %e, "upstream error masked by the route's fallback");
                record(&e);
                Ok(self.answer(head))
            }
            Ok(r) if self.replaces(r.status()) => {
                tracing::debug!(
                    status = r.status().as_u16(),
                    "upstream answer replaced by the route's fallback"
                );
                Ok(self.answer(head))
            }
            other => other,
        }
    }
}

/// Configured headers (validated at load) as a header map; the fallbacks' and the direct
/// responses' own headers.
pub(crate) fn header_map(headers: &std::collections::BTreeMap<String, String>) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (k, v) in headers {
        if let (Ok(k), Ok(v)) = (
            HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(v),
        ) {
            map.append(k, v);
        }
    }
    map
}

/// The last-good fallback of a route (`routes[].fallback.stale`): an exchange stage, outermost
/// on the route, that keeps each good answer to a GET (2xx, without `no-store`, `Set-Cookie`
/// or `Vary`; `private` only for an identified consumer; up to 1 MiB) in the cache's memory
/// tier, per URL and consumer, whatever its cache fields said. When the route's call fails
/// the way the fallback masks (`on_errors`, `on_status`), the kept answer is sent if it is
/// at most `stale` old, with its `Age` and `X-Torii-Fallback: stale`. The route's static
/// answer, if any, applies when there is none.
pub struct LastGood {
    memory: std::sync::Arc<torii_cache::Memory>,
    max_age: std::time::Duration,
    spec: torii_cache::KeySpec,
    on_errors: Box<[String]>,
    on_status: Box<[u16]>,
    counters: std::sync::Arc<torii_cache::status::Counters>,
    /// The route's upstream error counters: a masked failure still counts.
    errors: Option<std::sync::Arc<crate::metrics::UpstreamErrors>>,
    /// How old a kept copy must be before a new answer replaces it.
    refresh_every: std::time::Duration,
}

/// The largest answer kept.
const LAST_GOOD_MAX: u64 = 1 << 20;

impl LastGood {
    /// The stage of a route's fallback, when it has `stale`.
    pub fn new(
        cfg: &torii_config::schema::Fallback,
        memory: std::sync::Arc<torii_cache::Memory>,
        errors: Option<std::sync::Arc<crate::metrics::UpstreamErrors>>,
    ) -> Option<Self> {
        let max_age = cfg.stale?.0;
        Some(Self {
            memory,
            max_age,
            refresh_every: (max_age / 10).clamp(
                std::time::Duration::from_secs(1),
                std::time::Duration::from_secs(60),
            ),
            spec: torii_cache::KeySpec {
                namespace: "fallback".into(),
                host: true,
                query: torii_cache::key::Query::AsSent,
                headers: Box::new([]),
                consumer: true,
            },
            on_errors: cfg.on_errors.clone().into_boxed_slice(),
            on_status: cfg.on_status.clone().into_boxed_slice(),
            counters: Default::default(),
            errors,
        })
    }

    fn masks(&self, r: &Result<Response<Body>, GatewayError>) -> bool {
        match r {
            Err(e) => self.on_errors.iter().any(|c| c == e.kind.code()),
            Ok(resp) => self.on_status.contains(&resp.status().as_u16()),
        }
    }
}

impl torii_core::Plugin for LastGood {
    fn wraps_exchange(&self) -> bool {
        true
    }

    fn exchange<'a>(
        &'a self,
        req: &'a http::request::Parts,
        body: Body,
        ctx: &'a torii_core::RequestContext,
        next: torii_core::Next<'a>,
    ) -> torii_core::ExchangeFuture<'a> {
        Box::pin(async move {
            if req.method != http::Method::GET {
                return next.run(req, body, ctx).await;
            }
            let consumer = ctx
                .consumer
                .as_deref()
                .filter(|c| !c.anonymous)
                .map(|c| &*c.name);
            let key = self.spec.key(&torii_cache::key::Parts {
                route: ctx.route.as_deref().unwrap_or(""),
                listener: &ctx.listener,
                host: &ctx.host,
                path: &ctx.path,
                query: req.uri.query(),
                headers: &req.headers,
                consumer,
            });
            let purges = self.memory.purges();
            let result = next.run(req, body, ctx).await;
            if self.masks(&result) {
                let now = std::time::Instant::now();
                if let Some(torii_cache::Object::Response(s)) = self.memory.get(&key)
                    && s.stored_for(now) <= self.max_age
                {
                    if let Err(e) = &result {
                        tracing::warn!(error = %e, "upstream error masked by the last good answer");
                        if let Some(errors) = &self.errors {
                            errors.record(e.kind.code());
                        }
                    }
                    let mut r = Response::new(Body::full(s.body.clone()));
                    *r.status_mut() = s.status;
                    let mut h = s.headers_at(now, 3);
                    h.insert("x-torii-fallback", HeaderValue::from_static("stale"));
                    *r.headers_mut() = h;
                    return Ok(r);
                }
                return result;
            }
            let resp = result?;
            // A copy kept recently is good enough: hot URLs (and cache hits) are not copied
            // again on every request, at most once per a tenth of `stale` (1 s to 60 s).
            if let Some(torii_cache::Object::Response(s)) = self.memory.get(&key)
                && s.stored_for(std::time::Instant::now()) < self.refresh_every
            {
                return Ok(resp);
            }
            match torii_cache::stored::keep(req, resp.status(), resp.headers(), consumer.is_some())
            {
                Err(_) => Ok(resp),
                Ok(c) => {
                    // Named as the cache names its responses, so purges reach it.
                    let q = req.uri.query();
                    let mut url = String::with_capacity(ctx.host.len() + ctx.path.len() + 1);
                    url.push_str(&ctx.host);
                    url.push_str(&ctx.path);
                    if let Some(q) = q {
                        url.push('?');
                        url.push_str(q);
                    }
                    let scope = format!("route:{}", ctx.route.as_deref().unwrap_or(""));
                    let c = c.label(url.into_boxed_str(), &scope);
                    let (parts, body) = resp.into_parts();
                    let fill = torii_plugins::builtin::cache::tee::Fill {
                        candidate: c,
                        key,
                        resource: key,
                        epoch: 0,
                        purges,
                        tiers: torii_plugins::builtin::cache::tee::Tiers {
                            memory: self.memory.clone(),
                            shared: None,
                        },
                        counters: self.counters.clone(),
                        max: LAST_GOOD_MAX,
                        _leader: None,
                        chunks: Vec::new(),
                        len: 0,
                        reserved: Default::default(),
                        expected: torii_plugins::builtin::cache::tee::announced_length(
                            &parts.headers,
                        ),
                    };
                    let body = torii_plugins::builtin::cache::tee::Tee::wrap(body, fill);
                    Ok(Response::from_parts(parts, body))
                }
            }
        })
    }
}
