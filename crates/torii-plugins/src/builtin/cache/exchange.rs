//! One request through the cache (see the module docs of `cache`).

use super::RouteCache;
use super::tee::{Fill, Tee, Tiers};
use http::HeaderValue;
use http::header::{self, CONTENT_LOCATION, LOCATION};
use http::{HeaderMap, HeaderName, Method, Response, StatusCode, Uri};
use http_body_util::BodyExt;
use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, Instant};
use torii_cache::flights::{Join, Leader, wait};
use torii_cache::status::{Counters, Status};
use torii_cache::stored::{assess, unconditional};
use torii_cache::{Freshness, Key, Object, Part, Stored, directives, key};
use torii_core::{Body, ErrorKind, ErrorSource, GatewayError, Layered, Next, RequestContext};

type Answer = Result<Response<Body>, GatewayError>;

/// What the store holds for a request.
pub(super) enum Found {
    /// A stored response, under this key.
    Stored(Key, Arc<Stored>),
    /// Nothing for this request's variant (this key) of a resource that varies.
    VaryMiss(Key),
    /// The resource's last answer could not be stored: go upstream without waiting.
    Pass,
    /// Nothing.
    Miss,
}

static CACHE_STATUS: HeaderName = HeaderName::from_static("cache-status");
static X_CACHE: HeaderName = HeaderName::from_static("x-cache");

/// How long misses of a resource whose answer could not be stored skip coalescing.
const PASS_FOR: Duration = Duration::from_secs(10);
/// The longest a background refresh may take.
const REFRESH_DEADLINE: Duration = Duration::from_secs(60);

pub(super) fn only_if_cached(req: &http::request::Parts) -> bool {
    directives::has(&req.headers, "only-if-cached")
}

/// Whether the request's own directives let a stale response be served while it is
/// revalidated: not when it asks for a fresh or young one (`no-cache`, `max-age`,
/// `min-fresh`, or `Pragma: no-cache` without `Cache-Control`).
fn allows_stale(req: &http::request::Parts) -> bool {
    let h = &req.headers;
    if !h.contains_key(header::CACHE_CONTROL) {
        return !h
            .get_all(header::PRAGMA)
            .iter()
            .any(|v| v.to_str().is_ok_and(|v| v.contains("no-cache")));
    }
    !directives::all(h).any(|d| {
        ["no-cache", "max-age", "min-fresh"]
            .iter()
            .any(|n| d.name.eq_ignore_ascii_case(n))
    })
}

/// A failure that lets a stale response be served (RFC 5861 section 4: what would be a 500,
/// 502, 503 or 504).
fn upstream_failed(r: &Answer) -> bool {
    match r {
        Err(e) => e.kind.source() == ErrorSource::Upstream,
        Ok(resp) => matches!(resp.status().as_u16(), 500 | 502 | 503 | 504),
    }
}

/// The request fields the cache decides on, found in one pass over the head.
#[derive(Default)]
pub(super) struct Asks {
    /// `Cache-Control` or `Pragma`: the request's own directives.
    pub(super) directives: bool,
    /// `If-Match` or `If-Unmodified-Since`: preconditions the upstream decides on.
    pub(super) preconditions: bool,
    /// `Range` or `If-Range`: about a part of the resource.
    pub(super) partial: bool,
    /// `If-None-Match` or `If-Modified-Since`.
    pub(super) conditional: bool,
}

impl Asks {
    pub(super) fn of(h: &HeaderMap) -> Self {
        let mut a = Self::default();
        for name in h.keys() {
            if name == header::CACHE_CONTROL || name == header::PRAGMA {
                a.directives = true;
            } else if name == header::IF_MATCH || name == header::IF_UNMODIFIED_SINCE {
                a.preconditions = true;
            } else if name == header::RANGE || name == header::IF_RANGE {
                a.partial = true;
            } else if name == header::IF_NONE_MATCH || name == header::IF_MODIFIED_SINCE {
                a.conditional = true;
            }
        }
        a
    }
}

/// One request as the cache handles it.
struct Call<'a> {
    /// The head as the client sent it (its conditionals, HEAD).
    req: &'a http::request::Parts,
    /// The head sent upstream: the client's, or with the query as keyed.
    fwd: Cow<'a, http::request::Parts>,
    ctx: &'a RequestContext,
    resource: Key,
    /// The epoch of the resource's `Vary` marker when the request read it.
    epoch: u64,
    /// The memory tier's purge count when the request came.
    purges: u64,
    status: Status,
}

impl RouteCache {
    pub(super) fn parts<'r>(
        &'r self,
        req: &'r http::request::Parts,
        ctx: &'r RequestContext,
        query: Option<&'r str>,
    ) -> key::Parts<'r> {
        key::Parts {
            route: ctx.route.as_deref().unwrap_or(""),
            listener: &ctx.listener,
            host: &ctx.host,
            path: &ctx.path,
            query,
            headers: &req.headers,
            consumer: ctx
                .consumer
                .as_deref()
                .filter(|c| !c.anonymous)
                .map(|c| &*c.name),
        }
    }

    /// The URL a stored response is purged by: host, path and query (as keyed).
    fn url(call: &Call<'_>) -> Box<str> {
        let q = call.fwd.uri.query();
        let (host, path) = (&call.ctx.host, &call.ctx.path);
        let mut u = String::with_capacity(host.len() + path.len() + q.map_or(0, |q| q.len() + 1));
        u.push_str(host);
        u.push_str(path);
        if let Some(q) = q {
            u.push('?');
            u.push_str(q);
        }
        u.into_boxed_str()
    }

    /// The scope stored responses are purged by: the route that stored them.
    fn scope(ctx: &RequestContext) -> String {
        format!("route:{}", ctx.route.as_deref().unwrap_or(""))
    }

    /// An authenticated request whose responses the key does not keep apart.
    pub(super) fn authenticated(&self, ctx: &RequestContext) -> bool {
        !self.spec.consumer && ctx.consumer.as_ref().is_some_and(|c| !c.anonymous)
    }

    fn tiers(&self) -> Tiers {
        Tiers {
            memory: self.memory.clone(),
            shared: self.shared.clone(),
        }
    }

    /// What memory holds for the resource, and the epoch of its variants.
    pub(super) fn find(&self, resource: &Key, headers: &HeaderMap) -> (Found, u64) {
        match self.memory.get(resource) {
            None => (Found::Miss, 0),
            Some(Object::Response(s)) => (Found::Stored(*resource, s), 0),
            Some(Object::Pass(until)) if Instant::now() < until => (Found::Pass, 0),
            Some(Object::Pass(_)) => (Found::Miss, 0),
            Some(Object::Vary(names, epoch)) => {
                let v = key::variant(resource, epoch, &names, headers);
                match self.memory.get(&v) {
                    Some(Object::Response(s)) => (Found::Stored(v, s), epoch),
                    _ => (Found::VaryMiss(v), epoch),
                }
            }
        }
    }

    pub(super) fn decorate(&self, h: &mut HeaderMap, status: &Status) {
        if self.cache_status {
            h.append(CACHE_STATUS.clone(), status.header());
        }
        if self.x_cache {
            h.insert(X_CACHE.clone(), status.short());
        }
    }

    /// The answer made from a stored response: a 304 when the client's conditional request
    /// matches it, otherwise the response (without its body for HEAD).
    pub(super) fn answer(
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
        } else if let Some(part) = s.range(req) {
            // One range of a stored 200 (RFC 9110 section 14).
            let mut h = s.headers_at(now, 4);
            let (status, body, range) = match part {
                Part::Bytes(first, last, len) => (
                    StatusCode::PARTIAL_CONTENT,
                    s.body.slice(first as usize..=last as usize),
                    format!("bytes {first}-{last}/{len}"),
                ),
                Part::Unsatisfiable(len) => (
                    StatusCode::RANGE_NOT_SATISFIABLE,
                    bytes::Bytes::new(),
                    format!("bytes */{len}"),
                ),
            };
            h.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
            if let Ok(v) = HeaderValue::from_str(&range) {
                h.insert(header::CONTENT_RANGE, v);
            }
            let mut r = Response::new(Body::full(body));
            *r.status_mut() = status;
            *r.headers_mut() = h;
            r
        } else {
            let body = if req.method == Method::HEAD {
                Body::Empty
            } else {
                Body::full(s.body.clone())
            };
            let mut r = Response::new(body);
            *r.status_mut() = s.status;
            // Room for Cache-Status, X-Cache and the request id.
            *r.headers_mut() = s.headers_at(now, 3);
            r
        };
        self.decorate(resp.headers_mut(), &status);
        resp
    }

    fn serve_stale(&self, s: &Stored, call: Call<'_>, result: &Answer) -> Response<Body> {
        Counters::add(&self.counters.stale);
        let mut status = call.status;
        status.fwd_status = result.as_ref().ok().map(|r| r.status().as_u16());
        status.detail = Some("stale-if-error");
        if let Err(e) = result {
            tracing::warn!(error = %e, "upstream failed; stale response served from the cache");
        }
        self.answer(s, call.req, Instant::now(), status)
    }

    pub(super) async fn run<'a>(
        &'a self,
        req: &'a http::request::Parts,
        body: Body,
        ctx: &'a RequestContext,
        next: Next<'a>,
    ) -> Answer {
        let asks = Asks::of(&req.headers);
        if (req.method != Method::GET && req.method != Method::HEAD) || asks.preconditions {
            // Not for the cache: unsafe methods (which invalidate), and preconditions the
            // upstream decides on.
            Counters::add(&self.counters.bypassed);
            let resp = next.run(req, body, ctx).await?;
            if !req.method.is_safe()
                && (resp.status().is_success() || resp.status().is_redirection())
            {
                self.invalidate(req, ctx, resp.headers());
            }
            return Ok(resp);
        }
        // The query as keyed is also what goes upstream.
        let canonical = self.spec.canonical_query(req.uri.query());
        let fwd = match &canonical {
            None => Cow::Borrowed(req),
            Some(q) => Cow::Owned(with_query(req, q)),
        };
        let resource = self.spec.key(&self.parts(req, ctx, fwd.uri.query()));
        let purges = self.memory.purges();
        let (mut found, mut epoch) = self.find(&resource, &req.headers);
        // The rarer paths' futures are boxed (the shared tier's lookup, a wait, a
        // revalidation): this future is moved into the heap on every request, so it stays
        // the size of the common path.
        if let (Found::Miss | Found::VaryMiss(_), Some(t)) = (&found, &self.shared)
            && let Some((k, s, e)) = Box::pin(t.lookup(&resource, &req.headers)).await
        {
            found = Found::Stored(k, s);
            epoch = e;
        }
        let mut status = Status::default();
        if let Found::Stored(key, stored) = &found {
            let now = Instant::now();
            if stored.freshness_for(req, now, asks.directives) == Freshness::Fresh {
                Counters::add(&self.counters.hits);
                status.hit = true;
                return Ok(self.answer(stored, req, now, status));
            }
            // Stale but usable while revalidating: answered now, refreshed once in the
            // background.
            if stored.usable_while_revalidating(now) && (!asks.directives || allows_stale(req)) {
                Counters::add(&self.counters.stale);
                if let Join::Lead(leader) = self.flights.join(*key) {
                    let call = Call {
                        req,
                        fwd,
                        ctx,
                        resource,
                        epoch,
                        purges,
                        status: Status::default(),
                    };
                    self.refresh_in_background(&call, &next, *key, stored, leader);
                }
                status.hit = true;
                status.detail = Some("stale-while-revalidate");
                return Ok(self.answer(stored, req, now, status));
            }
        }
        let only_cached = asks.directives && only_if_cached(req);
        // Only a GET for the whole resource fills the cache for others (a 206 is about a
        // part). A conditional one does when the cache revalidates with its own validators;
        // sent on as it is, its answer (often a 304) is about the client's copy.
        let fills = req.method == Method::GET && !asks.partial;
        // Concurrent misses of this response (the variant's, when the resource varies): one
        // goes upstream, the others wait for it, then look again. A waiter that still finds
        // nothing joins again (it may lead the next fill), at most twice in all, then goes
        // upstream by itself.
        let mut leader = None;
        let mut waits = 0;
        loop {
            let usable = match &found {
                Found::Stored(_, s) => {
                    s.freshness_for(req, Instant::now(), asks.directives) == Freshness::Fresh
                }
                Found::Pass => true,
                _ => false,
            };
            if usable || only_cached {
                break;
            }
            let flight = match &found {
                Found::Stored(k, _) | Found::VaryMiss(k) => *k,
                _ => resource,
            };
            match self.flights.join(flight) {
                Join::Lead(l) if fills && !asks.conditional => {
                    leader = Some(l);
                    break;
                }
                Join::Lead(_) => break,
                Join::Wait(_) if waits == 2 => break,
                Join::Wait(rx) => {
                    waits += 1;
                    Counters::add(&self.counters.coalesced);
                    status.collapsed = true;
                    Box::pin(wait(rx, self.lock_timeout)).await;
                    (found, epoch) = self.find(&resource, &req.headers);
                }
            }
        }
        let mut call = Call {
            req,
            fwd,
            ctx,
            resource,
            epoch,
            purges,
            status,
        };
        match found {
            Found::Stored(key, stored) => {
                let now = Instant::now();
                if stored.freshness_for(req, now, asks.directives) == Freshness::Fresh {
                    Counters::add(&self.counters.hits);
                    call.status.hit = true;
                    return Ok(self.answer(&stored, req, now, call.status));
                }
                if only_cached {
                    return Err(not_cached());
                }
                call.status.fwd = Some("stale");
                if fills && stored.has_validator() {
                    return Box::pin(self.revalidate(call, body, next, key, stored, leader)).await;
                }
                let result = next.run(&call.fwd, body, ctx).await;
                if upstream_failed(&result) && stored.usable_on_error(Instant::now()) {
                    return Ok(self.serve_stale(&stored, call, &result));
                }
                let resp = result?;
                if req.method == Method::HEAD && resp.status() == StatusCode::OK {
                    self.freshen(&call, key, &stored, resp.headers());
                }
                self.store_or_pass(call, resp, fills && !asks.conditional, leader)
            }
            f => {
                if only_cached {
                    return Err(not_cached());
                }
                call.status.fwd = Some(match f {
                    Found::VaryMiss(_) => "vary-miss",
                    Found::Pass => "bypass",
                    _ => "uri-miss",
                });
                let resp = next.run(&call.fwd, body, ctx).await?;
                self.store_or_pass(call, resp, fills && !asks.conditional, leader)
            }
        }
    }

    /// Asks the upstream whether a stale response is still good (a conditional GET with its
    /// validators): a 304 refreshes it, a full answer replaces it, a failure may serve it.
    async fn revalidate<'a>(
        &'a self,
        mut call: Call<'a>,
        body: Body,
        next: Next<'a>,
        key: Key,
        stored: Arc<Stored>,
        leader: Option<Leader>,
    ) -> Answer {
        let reval = stored.revalidation(&call.fwd);
        let result = next.run(&reval, body, call.ctx).await;
        let now = Instant::now();
        if upstream_failed(&result) && stored.usable_on_error(now) {
            return Ok(self.serve_stale(&stored, call, &result));
        }
        let resp = result?;
        if resp.status() != StatusCode::NOT_MODIFIED {
            return self.store_or_pass(call, resp, true, leader);
        }
        call.status.fwd_status = Some(304);
        let (merged, again) = stored.refreshed(
            &call.fwd,
            resp.headers(),
            self.authenticated(call.ctx),
            &self.settings,
        );
        drop(resp);
        match again {
            Ok(s) => {
                Counters::add(&self.counters.hits);
                let s = Arc::new(s);
                self.keep_updated(&call, key, s.clone());
                drop(leader);
                Ok(self.answer(&s, call.req, now, call.status))
            }
            Err("validator-mismatch") => {
                // The 304 is about another representation: fetch the resource whole.
                self.memory.remove(&key);
                call.status.detail = Some("validator-mismatch");
                let resp = next
                    .run(&unconditional(&call.fwd), Body::Empty, call.ctx)
                    .await?;
                self.store_or_pass(call, resp, true, leader)
            }
            Err(reason) => {
                // Answered with the refreshed response this once, no longer kept.
                Counters::add(&self.counters.hits);
                self.memory.remove(&key);
                call.status.detail = Some(reason);
                let mut r = Response::new(if call.req.method == Method::HEAD {
                    Body::Empty
                } else {
                    Body::full(stored.body.clone())
                });
                *r.status_mut() = stored.status;
                *r.headers_mut() = merged;
                self.decorate(r.headers_mut(), &call.status);
                Ok(r)
            }
        }
    }

    /// Keeps a stored response updated in place (by a 304 or a HEAD's answer) under its key.
    fn keep_updated(&self, call: &Call<'_>, key: Key, s: Arc<Stored>) {
        self.tiers()
            .put(call.resource, key, Arc::new([]), call.epoch, call.purges, s);
    }

    /// A `200` to a `HEAD` request for a stale stored `GET` response updates it when it is
    /// about the same representation (RFC 9111 section 4.3.5; `Stored::freshened_by_head`).
    fn freshen(&self, call: &Call<'_>, key: Key, stored: &Stored, head: &HeaderMap) {
        match stored.freshened_by_head(
            &call.fwd,
            head,
            self.authenticated(call.ctx),
            &self.settings,
        ) {
            Some(Ok(s)) => self.keep_updated(call, key, Arc::new(s)),
            // The update may no longer be stored.
            Some(Err(_)) => self.memory.remove(&key),
            None => {}
        }
    }

    /// Refreshes a stale response on a task of its own, with an owned copy of the rest of the
    /// stack; `leader` keeps other refreshes of the resource away until it is done. A 304
    /// refreshes the stored response, a storable answer replaces it, a failure leaves it.
    fn refresh_in_background(
        &self,
        call: &Call<'_>,
        next: &Next<'_>,
        key: Key,
        stored: &Arc<Stored>,
        leader: Leader,
    ) {
        let mut head = if stored.has_validator() {
            stored.revalidation(&call.fwd)
        } else {
            unconditional(&call.fwd)
        };
        // The variant's key is the client's fields', computed before the forwarding fields
        // join the head.
        let client_headers = call.req.headers.clone();
        let Some(stack) = next.detach(&mut head) else {
            return;
        };
        let ctx = call.ctx.clone();
        let stored = stored.clone();
        let tiers = self.tiers();
        let counters = self.counters.clone();
        let settings = self.settings.clone();
        let authenticated = self.authenticated(&ctx);
        let url = Self::url(call);
        let scope = Self::scope(&ctx);
        let (resource, epoch, purges) = (call.resource, call.epoch, call.purges);
        Counters::add(&counters.refreshes);
        tokio::spawn(async move {
            let _leader = leader;
            let refresh = async {
                let result = stack.run(&head, Body::Empty, &ctx).await;
                if upstream_failed(&result) {
                    return;
                }
                let Ok(resp) = result else { return };
                if resp.status() == StatusCode::NOT_MODIFIED {
                    if let (_, Ok(s)) =
                        stored.refreshed(&head, resp.headers(), authenticated, &settings)
                    {
                        tiers.put(resource, key, Arc::new([]), epoch, purges, Arc::new(s));
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
                    Err(_) => tiers.memory.invalidate(&key),
                    Ok(c) => {
                        let limit = usize::try_from(settings.max_object_size).unwrap_or(usize::MAX);
                        let Ok(body) = http_body_util::Limited::new(body, limit).collect().await
                        else {
                            return;
                        };
                        // Trailers: not stored, as in the foreground.
                        if body.trailers().is_some() {
                            return;
                        }
                        let vary: Arc<[HeaderName]> = c.vary().into();
                        let key = if vary.is_empty() {
                            resource
                        } else {
                            key::variant(&resource, epoch, &vary, &client_headers)
                        };
                        let body = bytes::Bytes::copy_from_slice(&body.to_bytes());
                        let stored = c.label(url, &scope).finish(body);
                        if tiers.put(resource, key, vary, epoch, purges, Arc::new(stored)) {
                            Counters::add(&counters.stored);
                        }
                    }
                }
            };
            let _ = tokio::time::timeout(REFRESH_DEADLINE, refresh).await;
        });
    }

    /// A response from the upstream: stored while it streams to the client when it may be
    /// (`fills`: the request was a plain GET), passed through otherwise.
    fn store_or_pass(
        &self,
        mut call: Call<'_>,
        resp: Response<Body>,
        fills: bool,
        leader: Option<Leader>,
    ) -> Answer {
        call.status.fwd_status = Some(resp.status().as_u16());
        Counters::add(&self.counters.misses);
        let (mut parts, body) = resp.into_parts();
        if !fills {
            self.decorate(&mut parts.headers, &call.status);
            return Ok(Response::from_parts(parts, body));
        }
        match assess(
            &call.fwd,
            parts.status,
            &parts.headers,
            self.authenticated(call.ctx),
            &self.settings,
        ) {
            Err(reason) => {
                call.status.detail = Some(reason);
                // Later misses of this resource go upstream at once instead of queueing
                // behind each other for an answer that will not be stored either.
                // (Never in place of a `Vary` marker: its epoch must not be lost.)
                if leader.is_some()
                    && !matches!(self.memory.get(&call.resource), Some(Object::Vary(..)))
                {
                    self.memory
                        .insert(call.resource, Object::Pass(Instant::now() + PASS_FOR));
                }
                self.decorate(&mut parts.headers, &call.status);
                Ok(Response::from_parts(parts, body))
            }
            Ok(candidate) => {
                let candidate = candidate.label(Self::url(&call), &Self::scope(call.ctx));
                let key = if candidate.vary().is_empty() {
                    call.resource
                } else {
                    key::variant(
                        &call.resource,
                        call.epoch,
                        candidate.vary(),
                        &call.req.headers,
                    )
                };
                call.status.stored = true;
                self.decorate(&mut parts.headers, &call.status);
                let fill = Fill {
                    candidate,
                    key,
                    resource: call.resource,
                    epoch: call.epoch,
                    purges: call.purges,
                    tiers: self.tiers(),
                    counters: self.counters.clone(),
                    max: self.settings.max_object_size,
                    _leader: leader,
                    chunks: Vec::new(),
                    len: 0,
                    reserved: Default::default(),
                    expected: super::tee::announced_length(&parts.headers),
                };
                let body = Body::boxed(Layered::new(body, Tee(Some(fill))));
                Ok(Response::from_parts(parts, body))
            }
        }
    }

    /// After an unsafe request succeeded: its URL's stored responses, and those of the
    /// `Location` and `Content-Location` it answered with on the same host, are invalid (RFC
    /// 9111 section 4.4). Every variant goes (the marker's epoch moves on), in the shared
    /// tier too.
    pub(super) fn invalidate(
        &self,
        req: &http::request::Parts,
        ctx: &RequestContext,
        headers: &HeaderMap,
    ) {
        let canonical = self.spec.canonical_query(req.uri.query());
        let mut keys =
            vec![
                self.spec
                    .key(&self.parts(req, ctx, keyed_query(&canonical, req.uri.query()))),
            ];
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
                || uri.path().is_empty()
            {
                continue;
            }
            let canonical = self.spec.canonical_query(uri.query());
            keys.push(self.spec.key(&key::Parts {
                path: uri.path(),
                query: keyed_query(&canonical, uri.query()),
                ..self.parts(req, ctx, None)
            }));
        }
        for k in keys {
            self.memory.invalidate(&k);
            if let Some(t) = &self.shared {
                t.invalidate(k);
            }
        }
    }
}

/// The query a key is built with: the canonical one when the key has one (none when it is
/// empty, as the forwarded head then has no `?`), else the request's own.
pub(super) fn keyed_query<'q>(
    canonical: &'q Option<String>,
    own: Option<&'q str>,
) -> Option<&'q str> {
    match canonical {
        Some(c) => (!c.is_empty()).then_some(c.as_str()),
        None => own,
    }
}

/// The head with `query` in place of its own (none when empty).
fn with_query(req: &http::request::Parts, query: &str) -> http::request::Parts {
    let mut r = req.clone();
    let path = req.uri.path();
    let pq = if query.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{query}")
    };
    let mut parts = req.uri.clone().into_parts();
    if let Ok(pq) = pq.parse() {
        parts.path_and_query = Some(pq);
        if let Ok(u) = Uri::from_parts(parts) {
            r.uri = u;
        }
    }
    r
}

fn not_cached() -> GatewayError {
    GatewayError::new(
        ErrorKind::NotCached,
        "only-if-cached, and no usable stored response",
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn req(fields: &[(&'static str, &'static str)]) -> http::request::Parts {
        let mut b = http::Request::get("/");
        for (k, v) in fields {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    #[test]
    fn stale_while_revalidate_yields_only_to_directives_that_want_a_fresh_answer() {
        assert!(allows_stale(&req(&[])));
        assert!(allows_stale(&req(&[
            ("cache-control", "nothing-to-see-here"),
            ("pragma", "foo")
        ])));
        assert!(allows_stale(&req(&[("cache-control", "max-stale")])));
        assert!(!allows_stale(&req(&[("cache-control", "no-cache")])));
        assert!(!allows_stale(&req(&[("cache-control", "Max-Age=0")])));
        assert!(!allows_stale(&req(&[("cache-control", "min-fresh=5")])));
        assert!(!allows_stale(&req(&[("pragma", "no-cache")])));
        let a = Asks::of(&req(&[("range", "bytes=0-1"), ("if-none-match", "\"x\"")]).headers);
        assert!(a.partial && a.conditional && !a.directives && !a.preconditions);
    }
}
