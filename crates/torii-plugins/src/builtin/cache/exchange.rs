//! One request through the cache (see the module docs of `cache`).

use super::RouteCache;
use super::tee::{Fill, Tee};
use http::header::{CONTENT_LOCATION, LOCATION};
use http::{HeaderMap, HeaderName, Method, Response, StatusCode, Uri};
use http_body_util::BodyExt;
use std::sync::Arc;
use std::time::Instant;
use torii_cache::flights::{Join, Leader, wait};
use torii_cache::status::{Counters, Status};
use torii_cache::stored::assess;
use torii_cache::{Freshness, Key, Object, Stored, directives, key};
use torii_core::{Body, ErrorKind, ErrorSource, GatewayError, Layered, Next, RequestContext};

type Answer = Result<Response<Body>, GatewayError>;

/// What the store holds for a request.
enum Found {
    /// A stored response, under this key.
    Stored(Key, Arc<Stored>),
    /// Nothing for this request's variant of a resource that varies.
    VaryMiss,
    /// Nothing.
    Miss,
}

static CACHE_STATUS: HeaderName = HeaderName::from_static("cache-status");
static X_CACHE: HeaderName = HeaderName::from_static("x-cache");

fn only_if_cached(req: &http::request::Parts) -> bool {
    directives::has(&req.headers, "only-if-cached")
}

/// A failure that lets a stale response be served (RFC 5861 section 4: what would be a 500,
/// 502, 503 or 504).
fn upstream_failed(r: &Answer) -> bool {
    match r {
        Err(e) => e.kind.source() == ErrorSource::Upstream,
        Ok(resp) => matches!(resp.status().as_u16(), 500 | 502 | 503 | 504),
    }
}

impl RouteCache {
    fn parts<'r>(&self, req: &'r http::request::Parts, ctx: &'r RequestContext) -> key::Parts<'r> {
        key::Parts {
            host: &ctx.host,
            path: &ctx.path,
            query: req.uri.query(),
            headers: &req.headers,
            consumer: ctx
                .consumer
                .as_deref()
                .filter(|c| !c.anonymous)
                .map(|c| &*c.name),
        }
    }

    /// The URL a stored response is purged by: host, path and query.
    fn url(req: &http::request::Parts, ctx: &RequestContext) -> Box<str> {
        let q = req.uri.query();
        let mut u =
            String::with_capacity(ctx.host.len() + ctx.path.len() + q.map_or(0, |q| q.len() + 1));
        u.push_str(&ctx.host);
        u.push_str(&ctx.path);
        if let Some(q) = q {
            u.push('?');
            u.push_str(q);
        }
        u.into_boxed_str()
    }

    /// An authenticated request whose responses the key does not keep apart.
    fn authenticated(&self, ctx: &RequestContext) -> bool {
        !self.spec.consumer && ctx.consumer.as_ref().is_some_and(|c| !c.anonymous)
    }

    fn find(&self, resource: &Key, headers: &HeaderMap) -> Found {
        match self.memory.get(resource) {
            None => Found::Miss,
            Some(Object::Response(s)) => Found::Stored(*resource, s),
            Some(Object::Vary(names)) => {
                let v = key::variant(resource, &names, headers);
                match self.memory.get(&v) {
                    Some(Object::Response(s)) => Found::Stored(v, s),
                    _ => Found::VaryMiss,
                }
            }
        }
    }

    fn decorate(&self, h: &mut HeaderMap, status: &Status) {
        if self.cache_status {
            h.append(CACHE_STATUS.clone(), status.header());
        }
        if self.x_cache {
            h.insert(X_CACHE.clone(), status.short());
        }
    }

    /// The answer made from a stored response: a 304 when the client's conditional request
    /// matches it, otherwise the response (without its body for HEAD).
    fn answer(
        &self,
        s: &Stored,
        req: &http::request::Parts,
        now: Instant,
        mut status: Status,
    ) -> Response<Body> {
        status.ttl = Some(s.ttl(now));
        let mut resp = if s.not_modified_for(req) {
            let mut r = Response::new(Body::Empty);
            *r.status_mut() = StatusCode::NOT_MODIFIED;
            *r.headers_mut() = s.not_modified_headers(now);
            r
        } else {
            let body = if req.method == Method::HEAD {
                Body::Empty
            } else {
                Body::full(s.body.clone())
            };
            let mut r = Response::new(body);
            *r.status_mut() = s.status;
            *r.headers_mut() = s.headers_at(now);
            r
        };
        self.decorate(resp.headers_mut(), &status);
        resp
    }

    fn serve_stale(
        &self,
        s: &Stored,
        req: &http::request::Parts,
        now: Instant,
        mut status: Status,
        result: &Answer,
    ) -> Response<Body> {
        Counters::add(&self.counters.stale);
        status.fwd_status = result.as_ref().ok().map(|r| r.status().as_u16());
        status.detail = Some("stale-if-error");
        if let Err(e) = result {
            tracing::warn!(error = %e, "upstream failed; stale response served from the cache");
        }
        self.answer(s, req, now, status)
    }

    pub(super) async fn run<'a>(
        &'a self,
        req: &'a http::request::Parts,
        body: Body,
        ctx: &'a RequestContext,
        next: Next<'a>,
    ) -> Answer {
        if req.method != Method::GET && req.method != Method::HEAD {
            Counters::add(&self.counters.bypassed);
            let resp = next.run(req, body, ctx).await?;
            if !req.method.is_safe()
                && (resp.status().is_success() || resp.status().is_redirection())
            {
                self.invalidate(req, ctx, resp.headers());
            }
            return Ok(resp);
        }
        let resource = self.spec.key(&self.parts(req, ctx));
        let mut status = Status::default();
        let mut found = self.find(&resource, &req.headers);
        let mut now = Instant::now();
        let fresh = |f: &Found, now| match f {
            Found::Stored(_, s) => s.freshness(req, now) == Freshness::Fresh,
            _ => false,
        };
        // Stale but usable while revalidating: answered now, refreshed once in the background.
        if let Found::Stored(key, stored) = &found
            && !req.headers.contains_key(http::header::CACHE_CONTROL)
            && !req.headers.contains_key(http::header::PRAGMA)
            && !fresh(&found, now)
            && stored.usable_while_revalidating(now)
        {
            Counters::add(&self.counters.stale);
            if let Join::Lead(leader) = self.flights.join(resource) {
                self.refresh_in_background(req, ctx, &next, resource, *key, stored, leader);
            }
            status.hit = true;
            status.detail = Some("stale-while-revalidate");
            return Ok(self.answer(stored, req, now, status));
        }
        let mut leader = None;
        if !fresh(&found, now) && req.method == Method::GET && !only_if_cached(req) {
            // Concurrent misses for this resource: one goes upstream, the others wait once.
            match self.flights.join(resource) {
                Join::Lead(l) => leader = Some(l),
                Join::Wait(rx) => {
                    Counters::add(&self.counters.coalesced);
                    status.collapsed = true;
                    wait(rx, self.lock_timeout).await;
                    found = self.find(&resource, &req.headers);
                    now = Instant::now();
                }
            }
        }
        match found {
            Found::Stored(key, stored) => {
                if stored.freshness(req, now) == Freshness::Fresh {
                    Counters::add(&self.counters.hits);
                    status.hit = true;
                    return Ok(self.answer(&stored, req, now, status));
                }
                if only_if_cached(req) {
                    return Err(not_cached());
                }
                status.fwd = Some("stale");
                if req.method == Method::GET && stored.has_validator() {
                    return self
                        .revalidate(req, body, ctx, next, resource, key, stored, status, leader)
                        .await;
                }
                let result = next.run(req, body, ctx).await;
                if upstream_failed(&result) && stored.usable_on_error(Instant::now()) {
                    return Ok(self.serve_stale(&stored, req, Instant::now(), status, &result));
                }
                self.store_or_pass(req, ctx, result?, resource, status, leader)
            }
            f => {
                if only_if_cached(req) {
                    return Err(not_cached());
                }
                status.fwd = Some(match f {
                    Found::VaryMiss => "vary-miss",
                    _ => "uri-miss",
                });
                let resp = next.run(req, body, ctx).await?;
                self.store_or_pass(req, ctx, resp, resource, status, leader)
            }
        }
    }

    /// Asks the upstream whether a stale response is still good (a conditional GET with its
    /// validators): a 304 refreshes it, a full answer replaces it, a failure may serve it.
    #[allow(clippy::too_many_arguments)]
    async fn revalidate<'a>(
        &'a self,
        req: &'a http::request::Parts,
        body: Body,
        ctx: &'a RequestContext,
        next: Next<'a>,
        resource: Key,
        key: Key,
        stored: Arc<Stored>,
        mut status: Status,
        leader: Option<Leader>,
    ) -> Answer {
        let reval = stored.revalidation(req);
        let result = next.run(&reval, body, ctx).await;
        let now = Instant::now();
        if upstream_failed(&result) && stored.usable_on_error(now) {
            return Ok(self.serve_stale(&stored, req, now, status, &result));
        }
        let resp = result?;
        if resp.status() != StatusCode::NOT_MODIFIED {
            return self.store_or_pass(req, ctx, resp, resource, status, leader);
        }
        status.fwd_status = Some(304);
        let (merged, again) =
            stored.refreshed(req, resp.headers(), self.authenticated(ctx), &self.settings);
        Counters::add(&self.counters.hits);
        let fresh = match again {
            Ok(s) => {
                let s = Arc::new(s);
                self.memory.insert(key, Object::Response(s.clone()));
                s
            }
            Err(reason) => {
                // Answered with the refreshed response this once, no longer kept.
                self.memory.remove(&key);
                status.detail = Some(reason);
                let mut h = merged;
                h.remove(http::header::AGE);
                let mut r = Response::new(if req.method == Method::HEAD {
                    Body::Empty
                } else {
                    Body::full(stored.body.clone())
                });
                *r.status_mut() = stored.status;
                *r.headers_mut() = h;
                self.decorate(r.headers_mut(), &status);
                return Ok(r);
            }
        };
        drop(leader);
        Ok(self.answer(&fresh, req, now, status))
    }

    /// Refreshes a stale response on a task of its own, with an owned copy of the rest of the
    /// stack; `leader` keeps other refreshes of the resource away until it is done. A 304
    /// refreshes the stored response, a storable answer replaces it, a failure leaves it.
    #[allow(clippy::too_many_arguments)]
    fn refresh_in_background(
        &self,
        req: &http::request::Parts,
        ctx: &RequestContext,
        next: &Next<'_>,
        resource: Key,
        key: Key,
        stored: &Arc<Stored>,
        leader: Leader,
    ) {
        let mut head = if stored.has_validator() {
            stored.revalidation(req)
        } else {
            let mut r = req.clone();
            r.method = Method::GET;
            r
        };
        let Some(stack) = next.detach(&mut head) else {
            return;
        };
        let ctx = ctx.clone();
        let stored = stored.clone();
        let memory = self.memory.clone();
        let counters = self.counters.clone();
        let settings = self.settings.clone();
        let authenticated = self.authenticated(&ctx);
        let url = Self::url(req, &ctx);
        let scope = self.spec.namespace.clone();
        Counters::add(&counters.refreshes);
        tokio::spawn(async move {
            let _leader = leader;
            let result = stack.run(&head, Body::Empty, &ctx).await;
            if upstream_failed(&result) {
                return;
            }
            let Ok(resp) = result else { return };
            if resp.status() == StatusCode::NOT_MODIFIED {
                if let (_, Ok(s)) =
                    stored.refreshed(&head, resp.headers(), authenticated, &settings)
                {
                    memory.insert(key, Object::Response(Arc::new(s)));
                }
                return;
            }
            let (parts, body) = resp.into_parts();
            match assess(
                &head,
                parts.status,
                &parts.headers,
                authenticated,
                &settings,
            ) {
                Err(_) => memory.remove(&key),
                Ok(c) => {
                    let limit = usize::try_from(settings.max_object_size).unwrap_or(usize::MAX);
                    let Ok(body) = http_body_util::Limited::new(body, limit).collect().await else {
                        return;
                    };
                    let vary: Arc<[HeaderName]> = c.vary().into();
                    let key = if vary.is_empty() {
                        resource
                    } else {
                        key::variant(&resource, &vary, &head.headers)
                    };
                    memory.put(
                        resource,
                        key,
                        vary,
                        c.label(url, &scope).finish(body.to_bytes()),
                    );
                    Counters::add(&counters.stored);
                }
            }
        });
    }

    /// A response from the upstream: stored while it streams to the client when it may be,
    /// passed through otherwise.
    fn store_or_pass(
        &self,
        req: &http::request::Parts,
        ctx: &RequestContext,
        resp: Response<Body>,
        resource: Key,
        mut status: Status,
        leader: Option<Leader>,
    ) -> Answer {
        status.fwd_status = Some(resp.status().as_u16());
        Counters::add(&self.counters.misses);
        let (mut parts, body) = resp.into_parts();
        if req.method != Method::GET {
            // HEAD misses go upstream as they are and are not stored.
            self.decorate(&mut parts.headers, &status);
            return Ok(Response::from_parts(parts, body));
        }
        match assess(
            req,
            parts.status,
            &parts.headers,
            self.authenticated(ctx),
            &self.settings,
        ) {
            Err(reason) => {
                status.detail = Some(reason);
                self.decorate(&mut parts.headers, &status);
                Ok(Response::from_parts(parts, body))
            }
            Ok(candidate) => {
                let candidate = candidate.label(Self::url(req, ctx), &self.spec.namespace);
                let key = if candidate.vary().is_empty() {
                    resource
                } else {
                    key::variant(&resource, candidate.vary(), &req.headers)
                };
                status.stored = true;
                self.decorate(&mut parts.headers, &status);
                let fill = Fill {
                    candidate,
                    key,
                    resource,
                    memory: self.memory.clone(),
                    counters: self.counters.clone(),
                    max: self.settings.max_object_size,
                    _leader: leader,
                    chunks: Vec::new(),
                    len: 0,
                };
                let body = Body::boxed(Layered::new(body, Tee(Some(fill))));
                Ok(Response::from_parts(parts, body))
            }
        }
    }

    /// After an unsafe request succeeded: its URL's stored responses, and those of the
    /// `Location` and `Content-Location` it answered with on the same host, are invalid (RFC
    /// 9111 section 4.4).
    fn invalidate(&self, req: &http::request::Parts, ctx: &RequestContext, headers: &HeaderMap) {
        let parts = self.parts(req, ctx);
        self.memory.remove(&self.spec.key(&parts));
        for name in [LOCATION, CONTENT_LOCATION] {
            let Some(uri) = headers
                .get(&name)
                .and_then(|v| v.to_str().ok())
                .and_then(|s| s.parse::<Uri>().ok())
            else {
                continue;
            };
            if uri
                .host()
                .is_some_and(|h| !h.eq_ignore_ascii_case(&ctx.host))
            {
                continue;
            }
            if uri.path().is_empty() {
                continue;
            }
            let k = self.spec.key(&key::Parts {
                path: uri.path(),
                query: uri.query(),
                ..self.parts(req, ctx)
            });
            self.memory.remove(&k);
        }
    }
}

fn not_cached() -> GatewayError {
    GatewayError::new(
        ErrorKind::NotCached,
        "only-if-cached, and no usable stored response",
    )
}
