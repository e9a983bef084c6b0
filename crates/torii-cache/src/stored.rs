//! Stored responses: whether a response may be stored (RFC 9111 section 3 as a shared cache),
//! how long it stays fresh, how old it is, and what it takes to use it again (client
//! conditionals, revalidation, merging a 304).
//!
//! The rules come from `http-cache-semantics`: storability, the freshness lifetime (with the
//! heuristic only where the RFC allows one), the request directives (`no-cache`, `max-age`,
//! `min-fresh`, `max-stale`). This module adds what it leaves to the cache: `must-understand`,
//! the RFC 5861 stale permissions, the route's own stale permissions, the `Age` a stored
//! response is served with, and the gateway's rule that an authenticated request is stored
//! only as the RFC allows for requests with `Authorization`.
//!
//! Freshness is decided once, when the response is stored (an instant on the monotonic
//! clock). A request without `Cache-Control` or `Pragma` (nearly all of them) is then answered
//! by comparing two instants; only requests with their own directives ask the policy again.

use crate::directives;
use bytes::Bytes;
use http::header::{self, HeaderName};
use http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use http_cache_semantics::{BeforeRequest, CacheOptions, CachePolicy, RequestLike};
use std::time::{Duration, Instant, SystemTime};

/// What a route allows beyond the response's own directives.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The fraction of the time since `Last-Modified` used as a heuristic freshness lifetime
    /// where the RFC allows one (0.1: the RFC's suggestion).
    pub heuristic: f32,
    /// Serve a stale response for this long past its freshness when the upstream fails (the
    /// response's own `stale-if-error` wins when longer).
    pub stale_if_error: Duration,
    /// Serve a stale response for this long past its freshness while it is refreshed.
    pub stale_while_revalidate: Duration,
    /// The largest body stored.
    pub max_object_size: u64,
}

/// Status codes whose caching rules a cache understands (RFC 9111 section 3: a response
/// whose status is not understood is never stored).
const UNDERSTOOD: &[u16] = &[
    200, 203, 204, 300, 301, 302, 303, 307, 308, 404, 405, 410, 414, 501,
];

/// Fields a 304 never replaces in the stored response (RFC 9111 section 3.2).
const KEPT_ON_304: &[HeaderName] = &[
    header::CONTENT_LENGTH,
    header::CONTENT_ENCODING,
    header::TRANSFER_ENCODING,
    header::CONTENT_RANGE,
];

/// Fields of a 304 answer made from a stored response (RFC 9110 section 15.4.5).
const ON_304: &[HeaderName] = &[
    header::CACHE_CONTROL,
    header::CONTENT_LOCATION,
    header::DATE,
    header::ETAG,
    header::EXPIRES,
    header::VARY,
    header::LAST_MODIFIED,
];

/// A response found storable, waiting for its body.
pub struct Candidate {
    policy: CachePolicy,
    strict: bool,
    stored_wall: SystemTime,
    status: StatusCode,
    headers: HeaderMap,
    vary: Box<[HeaderName]>,
    stored_at: Instant,
    initial_age: Duration,
    fresh_for: Duration,
    stale_if_error: Duration,
    stale_while_revalidate: Duration,
    tags: Box<[Box<str>]>,
    url: Box<str>,
    scope: Box<str>,
}

/// A stored response.
#[derive(Debug)]
pub struct Stored {
    /// The status.
    pub status: StatusCode,
    /// The fields as sent to clients, without `Age`.
    pub headers: HeaderMap,
    /// The body.
    pub body: Bytes,
    policy: CachePolicy,
    stored_at: Instant,
    /// `stored_at` on the wall clock (shared with other nodes through the shared tier).
    stored_wall: SystemTime,
    initial_age: Duration,
    fresh_until: Instant,
    stale_if_error: Duration,
    stale_while_revalidate: Duration,
    etag: Option<HeaderValue>,
    last_modified: Option<SystemTime>,
    /// Surrogate keys (`Surrogate-Key` / `Cache-Tag`), for purges by tag.
    pub tags: Box<[Box<str>]>,
    /// The request fields it varies on.
    vary: Box<[HeaderName]>,
    /// It must not be served stale, whatever a request allows (`must-revalidate`,
    /// `proxy-revalidate`, `s-maxage`, `no-cache`).
    strict: bool,
    /// The URL it answers (host, path and query), for purges by URL and prefix.
    pub url: Box<str>,
    /// The cache that stored it (`route:<name>`, `global`).
    pub scope: Box<str>,
    weight: u64,
}

static GET: Method = Method::GET;

/// The request as the policy crate sees it: the key already says it asks for the stored
/// resource (a key may ignore parts of the URI, such as tracking parameters), and only the
/// fields its rules read are kept: `Cache-Control`, `Pragma`, the fields the response varies
/// on, and whether there was an `Authorization` (not its value). The policy keeps this view
/// with the stored response (in memory and in the shared tier), so no credential, cookie or
/// other client field is stored, and clients that spell `Host` differently still match.
struct Presented<'a> {
    req: &'a http::request::Parts,
    headers: HeaderMap,
}

impl<'a> Presented<'a> {
    fn new(req: &'a http::request::Parts, vary: &[HeaderName]) -> Self {
        let mut headers = HeaderMap::new();
        for name in [header::CACHE_CONTROL, header::PRAGMA]
            .iter()
            .chain(vary.iter())
        {
            let secret = [
                header::AUTHORIZATION,
                header::PROXY_AUTHORIZATION,
                header::COOKIE,
            ]
            .contains(name);
            for v in req.headers.get_all(name) {
                // The variant key has matched the value already: a credential named by
                // `Vary` is kept as a marker, never as its value.
                headers.append(
                    name.clone(),
                    if secret {
                        HeaderValue::from_static("present")
                    } else {
                        copied(v)
                    },
                );
            }
        }
        if req.headers.contains_key(header::AUTHORIZATION) {
            headers.insert(header::AUTHORIZATION, HeaderValue::from_static("present"));
        }
        Self { req, headers }
    }
}

impl RequestLike for Presented<'_> {
    fn uri(&self) -> Uri {
        self.req.uri.clone()
    }
    fn is_same_uri(&self, _: &Uri) -> bool {
        true
    }
    fn method(&self) -> &Method {
        // HEAD is answered from a stored GET.
        if self.req.method == Method::HEAD {
            &GET
        } else {
            &self.req.method
        }
    }
    fn headers(&self) -> &HeaderMap {
        &self.headers
    }
}

/// A field value in an allocation of its own: a value sliced from a connection's read buffer
/// would keep the whole buffer alive for as long as the response is stored.
fn copied(v: &HeaderValue) -> HeaderValue {
    HeaderValue::from_bytes(v.as_bytes()).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// The longest freshness or stale window taken from a response (2^31 seconds, the RFC's
/// delta-seconds cap): longer values are read as this, and instants stay far from overflow.
const MAX_DELTA: Duration = Duration::from_secs(1 << 31);

fn options(s: &Settings) -> CacheOptions {
    CacheOptions {
        shared: true,
        cache_heuristic: s.heuristic,
        // `immutable` says nothing of freshness (RFC 8246): no lifetime of its own.
        immutable_min_time_to_live: Duration::ZERO,
        ..CacheOptions::default()
    }
}

/// The `Vary` field names of a response (lowercase), or `None` for `Vary: *` (never matches).
fn vary(headers: &HeaderMap) -> Option<Box<[HeaderName]>> {
    let mut names = Vec::new();
    for v in headers.get_all(header::VARY) {
        let Ok(v) = v.to_str() else { return None };
        for n in v.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            if n == "*" {
                return None;
            }
            let name = HeaderName::from_bytes(n.as_bytes()).ok()?;
            if !names.contains(&name) {
                names.push(name);
            }
        }
    }
    Some(names.into_boxed_slice())
}

/// Surrogate keys of a response: space-separated in `Surrogate-Key`, comma-separated in
/// `Cache-Tag`.
fn tags(headers: &HeaderMap) -> Box<[Box<str>]> {
    let mut out: Vec<Box<str>> = Vec::new();
    for (name, sep) in [("surrogate-key", ' '), ("cache-tag", ',')] {
        for v in headers.get_all(name).iter().filter_map(|v| v.to_str().ok()) {
            for t in v.split(sep).map(str::trim).filter(|t| !t.is_empty()) {
                if !out.iter().any(|o| &**o == t) {
                    out.push(t.into());
                }
            }
        }
    }
    out.into_boxed_slice()
}

/// Why a response was not stored (shown in `Cache-Status` as `detail`).
pub type NotStored = &'static str;

/// The response directives a storage decision needs, read in one pass (names compared
/// without case, RFC 9111 section 5.2).
#[derive(Default)]
struct Directives {
    no_store: bool,
    private: bool,
    public: bool,
    no_cache: bool,
    s_maxage: bool,
    max_age: bool,
    must_revalidate: bool,
    proxy_revalidate: bool,
    must_understand: bool,
    stale_if_error: Option<Duration>,
    stale_while_revalidate: Option<Duration>,
}

impl Directives {
    fn read<'a>(all: impl Iterator<Item = directives::Directive<'a>>) -> Self {
        let mut d = Self::default();
        let secs = |v: Option<&str>| {
            v.and_then(|v| v.parse::<u64>().ok())
                .map(Duration::from_secs)
        };
        for x in all {
            let n = x.name;
            let is = |s: &str| n.eq_ignore_ascii_case(s);
            match () {
                _ if is("no-store") => d.no_store = true,
                _ if is("private") => d.private = true,
                _ if is("public") => d.public = true,
                _ if is("no-cache") => d.no_cache = true,
                _ if is("s-maxage") => d.s_maxage = true,
                _ if is("max-age") => d.max_age = true,
                _ if is("must-revalidate") => d.must_revalidate = true,
                _ if is("proxy-revalidate") => d.proxy_revalidate = true,
                _ if is("must-understand") => d.must_understand = true,
                _ if is("stale-if-error") => d.stale_if_error = secs(x.value),
                _ if is("stale-while-revalidate") => d.stale_while_revalidate = secs(x.value),
                _ => {}
            }
        }
        d
    }

    /// Directives that forbid serving it stale (RFC 9111 sections 4.2.4, 5.2.2.2, 5.2.2.4,
    /// 5.2.2.8, 5.2.2.10).
    fn strict(&self) -> bool {
        self.must_revalidate || self.proxy_revalidate || self.s_maxage || self.no_cache
    }
}

static CDN_CACHE_CONTROL: HeaderName = HeaderName::from_static("cdn-cache-control");

/// The response fields the storage decision starts from, found in one pass over the names
/// (most answers a cache sees are refused on these alone).
#[derive(Default)]
struct Seen {
    cache_control: bool,
    cdn_cache_control: bool,
    set_cookie: bool,
    expires: bool,
    validator: bool,
}

impl Seen {
    fn of(headers: &HeaderMap) -> Self {
        let mut s = Self::default();
        for name in headers.keys() {
            if name == header::CACHE_CONTROL {
                s.cache_control = true;
            } else if name == header::SET_COOKIE {
                s.set_cookie = true;
            } else if name == header::EXPIRES {
                s.expires = true;
            } else if name == header::ETAG || name == header::LAST_MODIFIED {
                s.validator = true;
            } else if name == CDN_CACHE_CONTROL {
                s.cdn_cache_control = true;
            }
        }
        s
    }
}

/// `CDN-Cache-Control` (RFC 9213), when present and a valid structured-field dictionary:
/// it then replaces `Cache-Control` for this cache. An invalid one is ignored whole.
fn cdn_cache_control(headers: &HeaderMap) -> Option<String> {
    let mut out = String::new();
    for v in headers.get_all(&CDN_CACHE_CONTROL) {
        let v = v.to_str().ok()?;
        for member in v.split(',') {
            let m = member.trim_matches([' ', '\t']);
            let (key, value) = match m.split_once('=') {
                Some((k, v)) => (k, Some(v)),
                None => (m, None),
            };
            let key_ok = key
                .bytes()
                .next()
                .is_some_and(|b| b.is_ascii_lowercase() || b == b'*')
                && key
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-.*".contains(&b));
            let value_ok = value.is_none_or(|v| {
                !v.is_empty()
                    && (v.bytes().all(|b| b.is_ascii_digit())
                        || (v.starts_with('"') && v.ends_with('"') && v.len() >= 2)
                        || v.bytes().all(|b| {
                            b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~:/".contains(&b)
                        }))
            });
            if !key_ok || !value_ok {
                return None;
            }
            if !out.is_empty() {
                out.push_str(", ");
            }
            out.push_str(m);
        }
    }
    (!out.is_empty()).then_some(out)
}

/// What the policy crate is given: the response with its cache fields made unambiguous.
/// `Cache-Control` is rewritten with lowercase names (or replaced by `CDN-Cache-Control`),
/// without `no-store` when `must-understand` overrides it; `Age` is its first value; an
/// `Expires` that is not an HTTP date means "already expired" (RFC 9111 section 5.3); a
/// status the crate does not know, stored here because of explicit freshness, is shown as 200
/// (the status only decides storability there, which is decided here).
fn policy_view(
    status: StatusCode,
    headers: &HeaderMap,
    cc: &[(String, Option<String>)],
    must_understand: bool,
    now: SystemTime,
) -> http::Response<()> {
    let mut r = http::Response::new(());
    *r.status_mut() = if UNDERSTOOD.contains(&status.as_u16()) {
        status
    } else {
        StatusCode::OK
    };
    let mut h = headers.clone();
    h.remove(header::CACHE_CONTROL);
    h.remove(header::PRAGMA);
    // The policy is kept with the stored answer (in Redis too): never a cookie.
    h.remove(header::SET_COOKIE);
    let line = cc
        .iter()
        .filter(|(n, _)| !(must_understand && n == "no-store"))
        .map(|(n, v)| match v {
            Some(v)
                if v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) =>
            {
                format!("{n}={v}")
            }
            Some(v) => format!("{n}=\"{}\"", v.replace(['"', ','], "")),
            None => n.clone(),
        })
        .collect::<Vec<_>>()
        .join(", ");
    if let Ok(v) = HeaderValue::from_str(&line)
        && !line.is_empty()
    {
        h.insert(header::CACHE_CONTROL, v);
    } else if cc.is_empty()
        && let Some(p) = headers.get(header::PRAGMA)
    {
        // Pragma counts only without Cache-Control.
        h.insert(header::PRAGMA, p.clone());
    }
    // The age the response arrived with (RFC 9111 section 4.2.3): its `Age` (the first
    // value), or its apparent age (how long before now the origin dated it) when that is
    // larger. The policy crate reads only `Age`, so the view carries the larger. Whole
    // seconds, as `Date` has no more. The time the request itself took (`response_delay`)
    // is not known here and counts as zero.
    let said = headers.get(header::AGE).and_then(|age| {
        age.to_str()
            .ok()
            .and_then(|a| a.split(',').next())
            .map(str::trim)
            .and_then(|a| a.parse::<u64>().ok())
    });
    let apparent = headers
        .get(header::DATE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v).ok())
        .and_then(|date| now.duration_since(date).ok())
        .map_or(0, |d| d.as_secs());
    h.remove(header::AGE);
    let age = said
        .into_iter()
        .chain((apparent > 0).then_some(apparent))
        .max();
    if let Some(a) = age {
        h.insert(header::AGE, HeaderValue::from(a.min(1 << 31)));
    }
    let expires_ok = {
        let mut lines = headers.get_all(header::EXPIRES).iter();
        match (lines.next(), lines.next()) {
            (None, _) => true,
            (Some(v), None) => v
                .to_str()
                .ok()
                .is_some_and(|v| httpdate::parse_http_date(v).is_ok()),
            (Some(_), Some(_)) => false,
        }
    };
    if !expires_ok {
        h.insert(header::EXPIRES, HeaderValue::from_static("0"));
    }
    *r.headers_mut() = h;
    r
}

/// Whether the answer to `req` may be stored, and if so how long it stays fresh.
/// `authenticated`: an authentication plugin identified the client and the key does not
/// keep consumers apart; such a response is stored only when it says it may be shared
/// (`public`, `s-maxage` or `must-revalidate`), as the RFC requires for `Authorization`.
pub fn assess(
    req: &http::request::Parts,
    status: StatusCode,
    headers: &HeaderMap,
    authenticated: bool,
    s: &Settings,
) -> Result<Candidate, NotStored> {
    if req.method != Method::GET {
        return Err("method");
    }
    let code = status.as_u16();
    if code < 200 || code == 206 || code == 304 {
        return Err("status");
    }
    let seen = Seen::of(headers);
    // The cache's own field wins over Cache-Control when it is valid.
    let cdn = seen
        .cdn_cache_control
        .then(|| cdn_cache_control(headers))
        .flatten()
        .map(|line| {
            let mut m = HeaderMap::new();
            if let Ok(v) = HeaderValue::from_str(&line) {
                m.insert(header::CACHE_CONTROL, v);
            }
            m
        });
    let source = cdn.as_ref().unwrap_or(headers);
    // Read in place: most answers a cache sees are refused below, before any copy.
    let d = if seen.cache_control || cdn.is_some() {
        Directives::read(directives::all(source))
    } else {
        Directives::default()
    };
    let understood = UNDERSTOOD.contains(&code);
    if d.must_understand && !understood {
        return Err("must-understand");
    }
    if d.no_store && !(d.must_understand && understood) {
        return Err("no-store");
    }
    if d.private {
        return Err("private");
    }
    if authenticated && !(d.public || d.s_maxage || d.must_revalidate) {
        return Err("authenticated");
    }
    if seen.set_cookie && !d.public {
        return Err("set-cookie");
    }
    // A status the cache does not know by default needs explicit freshness (RFC 9111
    // section 3); its freshness is then only what it says.
    let explicit = d.max_age || d.s_maxage || seen.expires || d.public;
    if !(understood || explicit) {
        return Err("status");
    }
    let own_stale = d.stale_if_error.is_some() || d.stale_while_revalidate.is_some();
    let validator = seen.validator;
    if !(explicit || validator || own_stale) {
        // No freshness (not even a heuristic one: that needs Last-Modified), nothing to
        // revalidate with: it could never be used. Decided before any copy is made.
        return Err("no-freshness");
    }
    let vary = vary(headers).ok_or("vary-star")?;
    if let Some(n) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        && n > s.max_object_size
    {
        return Err("too-large");
    }
    let cc: Vec<(String, Option<String>)> = directives::all(source)
        .map(|d| (d.name.to_ascii_lowercase(), d.value.map(str::to_string)))
        .collect();
    let now = SystemTime::now();
    let view = policy_view(status, headers, &cc, d.must_understand, now);
    let policy = CachePolicy::new_options(&Presented::new(req, &vary), &view, now, options(s));
    if !policy.is_storable() {
        return Err("not-storable");
    }
    let fresh_for = policy.time_to_live(now).min(MAX_DELTA);
    if fresh_for.is_zero() && !validator && !own_stale {
        // Stale at once and nothing to revalidate with: it could never be used.
        return Err("no-freshness");
    }
    // The fields as served: `Age` is computed when served, and a cookie is never handed to
    // the next client (a `public` response with `Set-Cookie` is stored without it).
    let mut stored_headers = HeaderMap::with_capacity(headers.len());
    for (k, v) in headers {
        if k != header::AGE && k != header::SET_COOKIE {
            stored_headers.append(k.clone(), copied(v));
        }
    }
    let permit = |own: Option<Duration>, route: Duration| {
        if d.strict() {
            Duration::ZERO
        } else {
            own.map_or(route, |o| o.max(route)).min(MAX_DELTA)
        }
    };
    Ok(Candidate {
        status,
        strict: d.strict(),
        vary,
        stored_at: Instant::now(),
        stored_wall: now,
        initial_age: policy.age(now),
        fresh_for,
        stale_if_error: if code >= 500 {
            // A stale error is no better than a fresh one.
            Duration::ZERO
        } else {
            permit(d.stale_if_error, s.stale_if_error)
        },
        stale_while_revalidate: permit(d.stale_while_revalidate, s.stale_while_revalidate),
        tags: tags(headers),
        headers: stored_headers,
        policy,
        url: Box::default(),
        scope: Box::default(),
    })
}

/// A good answer kept as a route's fallback (`routes[].fallback.stale`), whatever its cache
/// fields say: a 2xx answer to a GET, without `no-store`, `Set-Cookie` or `Vary`, and
/// without `private` unless the key keeps consumers apart (`per_consumer`). It is never
/// fresh: it is only served when the upstream fails.
pub fn keep(
    req: &http::request::Parts,
    status: StatusCode,
    headers: &HeaderMap,
    per_consumer: bool,
) -> Result<Candidate, NotStored> {
    if req.method != Method::GET {
        return Err("method");
    }
    // A whole answer only: not a part (206), nor an answer to a request for a part.
    if !status.is_success() || status == StatusCode::PARTIAL_CONTENT {
        return Err("status");
    }
    if req.headers.contains_key(header::RANGE) || req.headers.contains_key(header::IF_RANGE) {
        return Err("partial");
    }
    // A request that carried credentials the gateway did not check (a cookie, an
    // `Authorization` passed on) may have got a page for that user only: kept only when an
    // authentication plugin identified the consumer (who is then part of the key).
    let credentials = [
        header::AUTHORIZATION,
        header::PROXY_AUTHORIZATION,
        header::COOKIE,
    ]
    .iter()
    .any(|n| req.headers.contains_key(n));
    if credentials && !per_consumer {
        return Err("credentials");
    }
    let d = Directives::read(directives::all(headers));
    if d.no_store {
        return Err("no-store");
    }
    if d.private && !per_consumer {
        return Err("private");
    }
    if headers.contains_key(header::SET_COOKIE) {
        return Err("set-cookie");
    }
    if headers.contains_key(header::VARY) {
        return Err("vary");
    }
    let now = SystemTime::now();
    let mut view = http::Response::new(());
    *view.status_mut() = status;
    let presented = Presented::new(req, &[]);
    let policy = CachePolicy::new_options(&presented, &view, now, CacheOptions::default());
    let mut stored_headers = HeaderMap::with_capacity(headers.len());
    for (k, v) in headers {
        if k != header::AGE {
            stored_headers.append(k.clone(), copied(v));
        }
    }
    Ok(Candidate {
        policy,
        strict: false,
        stored_wall: now,
        status,
        headers: stored_headers,
        vary: Box::default(),
        stored_at: Instant::now(),
        initial_age: Duration::ZERO,
        fresh_for: Duration::ZERO,
        stale_if_error: Duration::ZERO,
        stale_while_revalidate: Duration::ZERO,
        tags: Box::default(),
        url: Box::default(),
        scope: Box::default(),
    })
}

impl Candidate {
    /// The `Vary` field names (empty: the response does not vary).
    pub fn vary(&self) -> &[HeaderName] {
        &self.vary
    }

    /// Names what it will be stored as: its URL (host, path, query) and the cache's scope.
    pub fn label(mut self, url: Box<str>, scope: &str) -> Self {
        self.url = url;
        self.scope = scope.into();
        self
    }

    /// The stored response, with its body. The body should own its allocation: one sliced
    /// from a connection's buffer would keep the whole buffer alive while stored.
    pub fn finish(self, body: Bytes) -> Stored {
        let etag = self.headers.get(header::ETAG).cloned();
        let last_modified = self
            .headers
            .get(header::LAST_MODIFIED)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| httpdate::parse_http_date(v).ok());
        let weight = weight(&self.headers, &body, &self.url, &self.scope);
        Stored {
            status: self.status,
            headers: self.headers,
            body,
            policy: self.policy,
            stored_at: self.stored_at,
            stored_wall: self.stored_wall,
            initial_age: self.initial_age,
            fresh_until: later(self.stored_at, self.fresh_for),
            stale_if_error: self.stale_if_error,
            stale_while_revalidate: self.stale_while_revalidate,
            etag,
            last_modified,
            tags: self.tags,
            vary: self.vary,
            strict: self.strict,
            url: self.url,
            scope: self.scope,
            weight,
        }
    }
}

/// The request head as a GET for the whole resource, without the fields that make an answer
/// about a part or a precondition: what the cache sends when it fills or refreshes an entry,
/// so that what it stores is the resource.
pub fn unconditional(req: &http::request::Parts) -> http::request::Parts {
    let mut r = req.clone();
    r.method = Method::GET;
    for name in [
        header::IF_NONE_MATCH,
        header::IF_MODIFIED_SINCE,
        header::IF_MATCH,
        header::IF_UNMODIFIED_SINCE,
        header::IF_RANGE,
        header::RANGE,
    ] {
        r.headers.remove(name);
    }
    r
}

/// `at + d`, or far in the future when that does not fit.
fn later(at: Instant, d: Duration) -> Instant {
    at.checked_add(d)
        .or_else(|| at.checked_add(MAX_DELTA))
        .unwrap_or(at)
}

/// The bytes a stored response holds, roughly: its fields twice (the policy keeps a copy),
/// its body, its names and a fixed overhead.
pub(crate) fn weight(headers: &HeaderMap, body: &Bytes, url: &str, scope: &str) -> u64 {
    let fields: u64 = headers
        .iter()
        .map(|(k, v)| (k.as_str().len() + v.len() + 32) as u64)
        .sum();
    512 + (url.len() + scope.len()) as u64 + body.len() as u64 + 2 * fields
}

/// The answer to a `Range` request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// Bytes `first..=last` of a body of this length: 206.
    Bytes(u64, u64, u64),
    /// Nothing of a body of this length: 416.
    Unsatisfiable(u64),
}

/// Whether a stored response answers a request as it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    /// Use it.
    Fresh,
    /// It must be revalidated or fetched again first (stale, or the request's directives
    /// ask for that).
    Stale,
}

impl Stored {
    /// Whether the stored response may answer `req` without asking the upstream.
    pub fn freshness(&self, req: &http::request::Parts, now: Instant) -> Freshness {
        let h = &req.headers;
        let directives = h.contains_key(header::CACHE_CONTROL) || h.contains_key(header::PRAGMA);
        self.freshness_for(req, now, directives)
    }

    /// The same, told whether the request has `Cache-Control` or `Pragma` (a caller that
    /// looked at the head already).
    pub fn freshness_for(
        &self,
        req: &http::request::Parts,
        now: Instant,
        directives: bool,
    ) -> Freshness {
        if !directives {
            return if now < self.fresh_until {
                Freshness::Fresh
            } else {
                Freshness::Stale
            };
        }
        match self
            .policy
            .before_request(&Presented::new(req, &self.vary), SystemTime::now())
        {
            // The crate lets `max-stale` take responses that must be revalidated once stale.
            BeforeRequest::Fresh(_) if self.strict && now >= self.fresh_until => Freshness::Stale,
            BeforeRequest::Fresh(_) => Freshness::Fresh,
            BeforeRequest::Stale { .. } => Freshness::Stale,
        }
    }

    /// The response's age in seconds now (the `Age` field it is served with).
    pub fn age(&self, now: Instant) -> u64 {
        (self.initial_age + now.saturating_duration_since(self.stored_at)).as_secs()
    }

    /// Seconds of freshness left (negative: stale for that long).
    pub fn ttl(&self, now: Instant) -> i64 {
        if now < self.fresh_until {
            (self.fresh_until - now).as_secs() as i64
        } else {
            -((now - self.fresh_until).as_secs() as i64)
        }
    }

    fn stale_for(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.fresh_until)
    }

    /// Whether it may be served when the upstream failed.
    pub fn usable_on_error(&self, now: Instant) -> bool {
        self.stale_for(now) <= self.stale_if_error
    }

    /// Whether it may be served while it is refreshed.
    pub fn usable_while_revalidating(&self, now: Instant) -> bool {
        self.stale_for(now) <= self.stale_while_revalidate
    }

    /// How long it may still be kept: fresh, then stale but usable, and then still useful for
    /// revalidation while it has a validator.
    pub fn keep_until(&self) -> Instant {
        later(
            self.fresh_until,
            self.stale_if_error.max(self.stale_while_revalidate),
        )
    }

    /// How long the shared tier keeps it: while fresh or usable stale, and ten minutes more
    /// when it has a validator to revalidate with; at most `max`, at least a second.
    pub fn shared_ttl(&self, now: Instant, max: Duration) -> Duration {
        let mut until = self.keep_until();
        if self.has_validator() {
            until = later(until, Duration::from_secs(600));
        }
        until
            .saturating_duration_since(now)
            .clamp(Duration::from_secs(1), max.max(Duration::from_secs(1)))
    }

    /// How long ago it was stored.
    pub fn stored_for(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.stored_at)
    }

    /// When it was stored, on the wall clock.
    pub fn stored_wall(&self) -> SystemTime {
        self.stored_wall
    }

    /// Whether it has a validator (`ETag` or `Last-Modified`) to revalidate with.
    pub fn has_validator(&self) -> bool {
        self.etag.is_some() || self.last_modified.is_some()
    }

    /// Its weight in the memory tier (bytes, roughly).
    pub fn weight(&self) -> u64 {
        self.weight
    }

    /// The fields it is served with: the stored ones and `Age`, with room for `extra` more
    /// (the cache's own), so adding them does not grow the map again.
    pub fn headers_at(&self, now: Instant, extra: usize) -> HeaderMap {
        let mut h = HeaderMap::with_capacity(self.headers.len() + 1 + extra);
        for (k, v) in &self.headers {
            h.append(k.clone(), v.clone());
        }
        h.insert(header::AGE, HeaderValue::from(self.age(now)));
        h
    }

    /// Whether the client's conditional request (`If-None-Match`, else `If-Modified-Since`
    /// on GET and HEAD) is answered 304 by this response (RFC 9110 section 13.2.2).
    pub fn not_modified_for(&self, req: &http::request::Parts) -> bool {
        // Preconditions apply to 2xx responses only (RFC 9110 section 13.2.1).
        if (req.method != Method::GET && req.method != Method::HEAD) || !self.status.is_success() {
            return false;
        }
        let h = &req.headers;
        if h.contains_key(header::IF_NONE_MATCH) {
            let Some(etag) = &self.etag else {
                return false;
            };
            let ours = opaque(etag.as_bytes());
            return h
                .get_all(header::IF_NONE_MATCH)
                .iter()
                .flat_map(|v| v.as_bytes().split(|b| *b == b','))
                .map(|t| t.trim_ascii())
                .any(|t| t == b"*" || opaque(t) == ours);
        }
        match (
            &self.last_modified,
            h.get(header::IF_MODIFIED_SINCE)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| httpdate::parse_http_date(v).ok()),
        ) {
            (Some(lm), Some(since)) => *lm <= since,
            _ => false,
        }
    }

    /// The part of this response a `Range` request asks for (RFC 9110 section 14), when the
    /// cache answers it with 206 (or 416): one `bytes` range of a stored 200, and an
    /// `If-Range` that matches (a strong `ETag`, or the exact `Last-Modified` date). `None`:
    /// answer with the whole response (always allowed), for several ranges, another unit, a
    /// syntax error or an `If-Range` that does not match.
    pub fn range(&self, req: &http::request::Parts) -> Option<Part> {
        if self.status != StatusCode::OK || req.method != Method::GET {
            return None;
        }
        let spec = req.headers.get(header::RANGE)?.to_str().ok()?;
        if let Some(cond) = req.headers.get(header::IF_RANGE) {
            let cond = cond.as_bytes();
            let matches = if cond.starts_with(b"\"") || cond.starts_with(b"W/") {
                // A strong comparison: weak tags never match.
                self.etag
                    .as_ref()
                    .is_some_and(|e| !e.as_bytes().starts_with(b"W/") && e.as_bytes() == cond)
            } else {
                self.headers
                    .get(header::LAST_MODIFIED)
                    .is_some_and(|lm| lm.as_bytes() == cond)
            };
            if !matches {
                return None;
            }
        }
        let ranges = spec.trim().strip_prefix("bytes=")?;
        if ranges.contains(',') {
            return None;
        }
        let len = self.body.len() as u64;
        let (first, last) = ranges.trim().split_once('-')?;
        let (start, end) = match (first.trim(), last.trim()) {
            ("", "") => return None,
            // The last n bytes.
            ("", n) => {
                let n: u64 = n.parse().ok()?;
                if n == 0 {
                    return Some(Part::Unsatisfiable(len));
                }
                (len.saturating_sub(n), len.checked_sub(1)?)
            }
            (a, b) => {
                let a: u64 = a.parse().ok()?;
                let b: u64 = if b.is_empty() {
                    u64::MAX
                } else {
                    b.parse().ok()?
                };
                if b < a {
                    return None;
                }
                if a >= len {
                    return Some(Part::Unsatisfiable(len));
                }
                (a, b.min(len - 1))
            }
        };
        Some(Part::Bytes(start, end, len))
    }

    /// The fields of a 304 made from this response.
    pub fn not_modified_headers(&self, now: Instant) -> HeaderMap {
        let mut h = HeaderMap::with_capacity(ON_304.len() + 2);
        for name in ON_304 {
            for v in self.headers.get_all(name) {
                h.append(name.clone(), v.clone());
            }
        }
        h.insert(header::AGE, HeaderValue::from(self.age(now)));
        h
    }

    /// The head of the cache's own conditional request for this response: the client's head
    /// without its conditionals and range, with this response's validators.
    pub fn revalidation(&self, req: &http::request::Parts) -> http::request::Parts {
        let mut r = unconditional(req);
        if let Some(e) = &self.etag {
            r.headers.insert(header::IF_NONE_MATCH, e.clone());
        }
        if let Some(lm) = self.headers.get(header::LAST_MODIFIED) {
            r.headers.insert(header::IF_MODIFIED_SINCE, lm.clone());
        }
        r
    }

    /// The stored response updated by a 304 to the cache's revalidation (RFC 9111 section
    /// 4.3.4): the 304's fields replace the stored ones (but the body's own), and freshness
    /// starts again. `Err` when the updated response may no longer be stored (the caller
    /// still answers this request with it).
    pub fn refreshed(
        &self,
        req: &http::request::Parts,
        not_modified: &HeaderMap,
        authenticated: bool,
        s: &Settings,
    ) -> (HeaderMap, Result<Stored, NotStored>) {
        // A 304 whose strong validator is not this response's is about another
        // representation: it must not update this one (RFC 9111 section 4.3.4).
        if let (Some(new), Some(old)) = (not_modified.get(header::ETAG), &self.etag)
            && !new.as_bytes().starts_with(b"W/")
            && opaque(new.as_bytes()) != opaque(old.as_bytes())
        {
            return (self.headers.clone(), Err("validator-mismatch"));
        }
        let mut merged = self.headers.clone();
        for name in not_modified.keys() {
            if KEPT_ON_304.contains(name) {
                continue;
            }
            merged.remove(name);
            for v in not_modified.get_all(name) {
                merged.append(name.clone(), v.clone());
            }
        }
        // The update's own `Date`, or now (RFC 9110 section 6.6.1): the stored one would
        // make the refreshed response as old as it was (its apparent age).
        if !not_modified.contains_key(header::DATE)
            && let Ok(now) = HeaderValue::from_str(&httpdate::fmt_http_date(SystemTime::now()))
        {
            merged.insert(header::DATE, now);
        }
        let mut get = req.clone();
        get.method = Method::GET;
        let stored = assess(&get, self.status, &merged, authenticated, s).map(|c| {
            c.label(self.url.clone(), &self.scope)
                .finish(self.body.clone())
        });
        merged.remove(header::AGE);
        (merged, stored)
    }
}

impl Stored {
    /// The stored `GET` response updated by a `200` answer to a `HEAD` request for it (RFC
    /// 9111 section 4.3.5): when the `HEAD` answer carries a validator, every validator it
    /// carries (`ETag`, `Last-Modified`) match the stored response's, and its
    /// `Content-Length`, if any, the stored body's length, its fields update the stored ones
    /// as a 304's would. Only a stored `200` is updated. `None` when they do
    /// not match (the stored response then stays as it is: stale, it is revalidated on its
    /// next use).
    pub fn freshened_by_head(
        &self,
        req: &http::request::Parts,
        head: &HeaderMap,
        authenticated: bool,
        s: &Settings,
    ) -> Option<Result<Stored, NotStored>> {
        let same = |name: &HeaderName| match (head.get(name), self.headers.get(name)) {
            (Some(new), Some(old)) => new == old,
            (Some(_), None) => false,
            (None, _) => true,
        };
        // The length the HEAD announces is compared with the stored body's.
        let length = head.get(header::CONTENT_LENGTH).is_none_or(|v| {
            v.to_str()
                .ok()
                .and_then(|v| v.trim().parse::<usize>().ok())
                .is_some_and(|n| n == self.body.len())
        });
        let validated = head.contains_key(header::ETAG) || head.contains_key(header::LAST_MODIFIED);
        // Only a stored 200 is about the representation a HEAD's 200 describes.
        (self.status == StatusCode::OK
            && validated
            && same(&header::ETAG)
            && same(&header::LAST_MODIFIED)
            && length)
            .then(|| self.refreshed(req, head, authenticated, s).1)
    }
}

/// An entity tag without its weakness marker (weak comparison, RFC 9110 section 8.8.3.2).
fn opaque(tag: &[u8]) -> &[u8] {
    tag.strip_prefix(b"W/").unwrap_or(tag)
}

pub mod wire;

#[cfg(test)]
mod tests;
