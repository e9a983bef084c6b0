//! `forward_auth`: an external service decides about every request.
//!
//! For each request the gateway sends the auth service a request without body carrying the
//! configured client headers (`Authorization` and `Cookie` by default) and the original
//! method, path and host (`X-Forwarded-Method`, `X-Forwarded-Uri`, `X-Forwarded-Host`). The
//! path is the normalised one the router matched, so the service judges exactly the path the
//! upstream will be asked for.
//!
//! - 2xx: allowed. The configured response headers (`copy_headers`) are copied onto the
//!   upstream request, and the consumer is the one named by `consumer_header` or else the
//!   fixed `consumer`.
//! - 3xx and 4xx: refused. The client gets the service's status, body and selected headers
//!   (`client_headers`: `WWW-Authenticate`, `Content-Type` and `Location` by default); gRPC
//!   clients get the gateway's own gRPC error instead.
//! - Anything else, a timeout, a body over 64 KiB or a connection failure: 503
//!   (`AuthUnavailable`). The gateway fails closed and never turns an outage into a 401.
//!
//! Client-sent copies of `copy_headers` are removed before anything else (also in their
//! underscore spelling), so the upstream only ever sees the service's values.
//!
//! Allow decisions can be cached (`cache_ttl`) under a SHA-256 digest of everything the
//! service was sent (method, path and query, host, and every value of every sent header),
//! so an allow for `GET /a` never authorises `DELETE /admin`. Only allows are cached, with
//! their copied headers; responses marked `Cache-Control: no-store` or `no-cache` are not.

#[cfg(test)]
pub(crate) mod testkit;
#[cfg(test)]
mod tests;

use crate::{BuildCtx, ConfigError, Consumers, Phase, PluginFactory};
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Response, StatusCode};
use schemars::JsonSchema;
use serde::Deserialize;
use std::sync::Arc;
use std::time::Duration;
use torii_config::values::{Duration as ConfigDuration, HeaderName as ConfigHeaderName, Method};
use torii_core::{Body, Consumer, ErrorKind, Flow, GatewayError, Identity, Plugin, RequestContext};

/// Largest auth service response body read (a refusal's body is passed on to the client).
pub const MAX_RESPONSE_BODY: usize = 64 * 1024;

/// Longest allowed `cache_ttl`.
pub const MAX_CACHE_TTL: Duration = Duration::from_secs(300);

/// Headers carrying the original request's facts.
static X_FORWARDED_METHOD: HeaderName = HeaderName::from_static("x-forwarded-method");
static X_FORWARDED_URI: HeaderName = HeaderName::from_static("x-forwarded-uri");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Settings of `forward_auth`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ForwardAuthConfig {
    /// URL of the auth service, `http://` or `https://`, with the path (and query) it
    /// answers on: `http://auth.internal:9000/verify`. It is called through an implicit
    /// upstream (the system's TLS roots, default pool and timeouts). Set this or `upstream`.
    #[serde(default)]
    pub url: Option<String>,
    /// The auth service as a named upstream of `upstreams:` (its targets, TLS CA and client
    /// certificate, pool), called on `path`. Set this or `url`.
    #[serde(default)]
    pub upstream: Option<String>,
    /// With `upstream`: the path (and query) the service answers on. Default `/`.
    #[serde(default)]
    pub path: Option<String>,
    /// Method of the request sent to the auth service (it never has a body).
    #[serde(default = "default_method")]
    pub method: Method,
    /// Client request headers sent to the auth service (every value of each, when present).
    /// Every header sent is part of the cache key.
    #[serde(default = "default_request_headers")]
    pub request_headers: Vec<ConfigHeaderName>,
    /// Headers of an allowing (2xx) response copied onto the upstream request, such as
    /// `x-user-id`. Client-sent headers of these names are always removed first.
    #[serde(default)]
    pub copy_headers: Vec<ConfigHeaderName>,
    /// Header of an allowing response holding the consumer id (`consumers[].id`, which
    /// defaults to the name). An id that names no consumer is refused with 401. When the
    /// response lacks the header, `consumer` is used (or the request is refused without it).
    #[serde(default)]
    pub consumer_header: Option<ConfigHeaderName>,
    /// Name of the consumer an allowed request maps to when `consumer_header` is not set or
    /// not in the response. At least one of `consumer` and `consumer_header` is required.
    #[serde(default)]
    pub consumer: Option<String>,
    /// Headers of a refusing (3xx or 4xx) response passed on to the client with the
    /// service's status and body.
    #[serde(default = "default_client_headers")]
    pub client_headers: Vec<ConfigHeaderName>,
    /// Time limit of one call to the auth service (connection, response head and body).
    #[serde(default = "default_timeout")]
    pub timeout: ConfigDuration,
    /// How long an allow decision is remembered; `0s` (the default) asks the service for
    /// every request. At most `5m`.
    #[serde(default = "zero")]
    pub cache_ttl: ConfigDuration,
    /// Most remembered decisions (a decision with more than 1 KiB of copied headers counts
    /// once per KiB).
    #[serde(default = "default_cache_size")]
    pub cache_size: u64,
}

fn default_method() -> Method {
    Method(http::Method::GET)
}
fn default_request_headers() -> Vec<ConfigHeaderName> {
    vec![
        ConfigHeaderName(header::AUTHORIZATION),
        ConfigHeaderName(header::COOKIE),
    ]
}
fn default_client_headers() -> Vec<ConfigHeaderName> {
    vec![
        ConfigHeaderName(header::WWW_AUTHENTICATE),
        ConfigHeaderName(header::CONTENT_TYPE),
        ConfigHeaderName(header::LOCATION),
    ]
}
fn default_timeout() -> ConfigDuration {
    ConfigDuration::secs(2)
}
fn zero() -> ConfigDuration {
    ConfigDuration::secs(0)
}
fn default_cache_size() -> u64 {
    10_000
}

/// Headers that describe a connection or a message body rather than the request, and so can
/// be neither sent to the auth service nor copied between messages.
fn framing_header(n: &HeaderName) -> bool {
    [
        header::CONNECTION,
        header::CONTENT_LENGTH,
        header::TRANSFER_ENCODING,
        header::TE,
        header::TRAILER,
        header::UPGRADE,
        header::HOST,
        header::EXPECT,
        HeaderName::from_static("keep-alive"),
        HeaderName::from_static("proxy-connection"),
    ]
    .contains(n)
}

/// The plugin type.
pub struct ForwardAuth;

/// Parses the auth service URL: absolute, `http` or `https`, no user info.
pub(crate) fn parse_service_url(s: &str) -> Result<http::Uri, String> {
    let uri: http::Uri = s.parse().map_err(|_| {
        format!("`{s}` is not a URL; write e.g. `http://auth.internal:9000/verify`")
    })?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err(format!("`{s}` must start with `http://` or `https://`")),
    }
    let auth = uri
        .authority()
        .filter(|a| !a.host().is_empty())
        .ok_or_else(|| format!("`{s}` has no host"))?;
    if auth.as_str().contains('@') {
        return Err(format!("`{s}` must not contain user info"));
    }
    Ok(uri)
}

/// The service an outbound plugin calls, from its `url`, or its `upstream` and `path`: the
/// URI its requests carry and the client that sends them.
pub(crate) fn service(
    url: Option<&str>,
    upstream: Option<&str>,
    path: Option<&str>,
    ctx: &BuildCtx<'_>,
) -> Result<(http::Uri, torii_upstream::Client), ConfigError> {
    match (url, upstream) {
        (Some(_), Some(_)) | (None, None) => Err(ConfigError::here(
            "set exactly one of `url` and `upstream`",
            "`url: https://auth.internal/verify`, or `upstream: auth` with `path: /verify`",
        )),
        (Some(url), None) => {
            if path.is_some() {
                return Err(ConfigError::at(
                    "path",
                    "`path` goes with `upstream`",
                    "put the path in `url`",
                ));
            }
            let uri = parse_service_url(url)
                .map_err(|e| ConfigError::at("url", e, "the service's full URL, path included"))?;
            let client = ctx
                .client(Some(&uri), None)
                .map_err(|e| ConfigError::at("url", e, "the service's full URL, path included"))?;
            Ok((uri, client))
        }
        (None, Some(name)) => {
            let client = ctx
                .client(None, Some(name))
                .map_err(|e| ConfigError::at("upstream", e, "name one of `upstreams[].name`"))?;
            let uri = crate::builtin::util::service_path("path", path.unwrap_or("/"), "/verify")?;
            Ok((uri, client))
        }
    }
}

fn names(list: Vec<ConfigHeaderName>) -> Vec<HeaderName> {
    let mut out: Vec<HeaderName> = Vec::with_capacity(list.len());
    for n in list {
        if !out.contains(&n.0) {
            out.push(n.0);
        }
    }
    out
}

fn check_names(key: &str, list: &[HeaderName], extra: &[&HeaderName]) -> Result<(), ConfigError> {
    for (i, n) in list.iter().enumerate() {
        if framing_header(n) || extra.contains(&n) {
            return Err(ConfigError::here(
                format!("`{n}` cannot be used here"),
                "connection, framing and X-Forwarded-Method/Uri/Host headers are set by the gateway",
            )
            .in_list(key, i));
        }
    }
    Ok(())
}

impl PluginFactory for ForwardAuth {
    const NAME: &'static str = "forward_auth";
    const PHASE: Phase = Phase::Authentication;
    const ORDER: u16 = 60;
    type Config = ForwardAuthConfig;

    fn build(
        config: ForwardAuthConfig,
        ctx: &BuildCtx<'_>,
    ) -> Result<Arc<dyn Plugin>, ConfigError> {
        let (url, http) = service(
            config.url.as_deref(),
            config.upstream.as_deref(),
            config.path.as_deref(),
            ctx,
        )?;
        if config.timeout.0.is_zero() {
            return Err(ConfigError::at(
                "timeout",
                "must be longer than 0s",
                "the default is 2s",
            ));
        }
        if config.cache_ttl.0 > MAX_CACHE_TTL {
            return Err(ConfigError::at(
                "cache_ttl",
                "must be at most 5m",
                "a long cache keeps revoked sessions working; `30s` is a common choice",
            ));
        }
        if config.cache_size == 0 && !config.cache_ttl.0.is_zero() {
            return Err(ConfigError::at(
                "cache_size",
                "must be at least 1 when `cache_ttl` is set",
                "the default is 10000",
            ));
        }
        let send = names(config.request_headers);
        check_names(
            "request_headers",
            &send,
            &[&X_FORWARDED_METHOD, &X_FORWARDED_URI, &X_FORWARDED_HOST],
        )?;
        let copy = names(config.copy_headers);
        check_names("copy_headers", &copy, &[])?;
        let client = names(config.client_headers);
        check_names("client_headers", &client, &[])?;
        if config.consumer.is_none() && config.consumer_header.is_none() {
            return Err(ConfigError::here(
                "forward_auth needs `consumer_header` or `consumer` (or both)",
                "`consumer_header: x-consumer` reads the consumer id from the service's answer; \
                 `consumer: <name>` maps every allowed request to one consumer",
            ));
        }
        let fixed = match &config.consumer {
            None => None,
            Some(name) => Some(ctx.directory.pin(name).ok_or_else(|| {
                ConfigError::at(
                    "consumer",
                    format!("no consumer is named `{name}`"),
                    "declare it under `consumers:`",
                )
            })?),
        };
        let cache = if config.cache_ttl.0.is_zero() {
            None
        } else {
            let ttl = config.cache_ttl.0;
            let size = config.cache_size;
            Some(ctx.state(|| {
                State {
                    cache: moka::sync::Cache::builder()
                        .max_capacity(size)
                        .weigher(|_, v: &Arc<Allowed>| v.weight())
                        .time_to_live(ttl)
                        .build(),
                }
            }))
        };
        Ok(Arc::new(ForwardAuthPlugin {
            url,
            method: config.method.0,
            send: send.into(),
            copy: copy.into(),
            client: client.into(),
            consumer_header: config.consumer_header.map(|h| h.0),
            fixed,
            directory: ctx.directory.clone(),
            http,
            timeout: config.timeout.0,
            cache,
            identity: Arc::new(Identity {
                scheme: "forward_auth",
                ..Default::default()
            }),
            inflight: Default::default(),
        }))
    }
}

/// Allow decisions remembered across requests (and reloads with the same settings).
struct State {
    cache: moka::sync::Cache<[u8; 32], Arc<Allowed>>,
}

/// What an allowing answer said.
#[derive(Debug)]
struct Allowed {
    /// The value of `consumer_header`, when configured and present.
    consumer_id: Option<Box<str>>,
    /// The `copy_headers` of the answer, in order.
    headers: Vec<(HeaderName, HeaderValue)>,
}

impl Allowed {
    fn weight(&self) -> u32 {
        let bytes: usize = self
            .headers
            .iter()
            .map(|(n, v)| n.as_str().len() + v.len())
            .sum::<usize>()
            + self.consumer_id.as_ref().map_or(0, |c| c.len());
        1 + u32::try_from(bytes / 1024).unwrap_or(u32::MAX - 1)
    }
}

struct ForwardAuthPlugin {
    url: http::Uri,
    method: http::Method,
    send: Box<[HeaderName]>,
    copy: Box<[HeaderName]>,
    client: Box<[HeaderName]>,
    consumer_header: Option<HeaderName>,
    fixed: Option<Arc<Consumer>>,
    directory: Arc<Consumers>,
    http: torii_upstream::Client,
    timeout: Duration,
    cache: Option<Arc<State>>,
    identity: Arc<Identity>,
    /// Calls in progress by cache key.
    inflight: crate::flights::Flights<Result<Response<Bytes>, String>>,
}

/// The request is gRPC: refusals are then the gateway's own gRPC-shaped errors.
fn is_grpc(req: &http::request::Parts) -> bool {
    req.headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// Whether an allowing answer may be cached (not `no-store` / `no-cache`).
fn cacheable(headers: &HeaderMap) -> bool {
    !headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|d| d.trim().split('=').next().unwrap_or("").trim())
        .any(|d| d.eq_ignore_ascii_case("no-store") || d.eq_ignore_ascii_case("no-cache"))
}

fn unavailable(detail: impl Into<String>) -> GatewayError {
    GatewayError::new(ErrorKind::AuthUnavailable, detail)
}

impl ForwardAuthPlugin {
    /// Removes client-sent copies of the headers the auth service provides, in both spellings.
    fn strip_copies(&self, headers: &mut HeaderMap) {
        // Every spelling, whichever way the config and the client write `_` and `-`.
        crate::identity::remove_spellings(headers, self.copy.iter());
    }

    /// The `X-Forwarded-Uri` value: the normalised path the router matched, and the query.
    fn forwarded_uri(
        req: &http::request::Parts,
        ctx: &RequestContext,
    ) -> Result<HeaderValue, GatewayError> {
        let path = if ctx.path.is_empty() {
            req.uri.path()
        } else {
            ctx.path.as_str()
        };
        let s = match req.uri.query() {
            Some(q) => format!("{path}?{q}"),
            None => path.to_string(),
        };
        HeaderValue::try_from(s).map_err(|_| {
            GatewayError::new(ErrorKind::BadRequest, "forward_auth: unusable request URI")
        })
    }

    /// The cache key: SHA-256 over everything the service is sent, each field length-prefixed.
    fn cache_key(&self, req: &http::request::Parts, host: &str, uri: &HeaderValue) -> [u8; 32] {
        let mut d = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        let mut field = |b: &[u8]| {
            d.update(&(b.len() as u64).to_be_bytes());
            d.update(b);
        };
        field(req.method.as_str().as_bytes());
        field(uri.as_bytes());
        field(host.as_bytes());
        for n in self.send.iter() {
            let values = req.headers.get_all(n);
            field(&(values.iter().count() as u64).to_be_bytes());
            for v in values {
                field(v.as_bytes());
            }
        }
        let mut out = [0u8; 32];
        out.copy_from_slice(d.finish().as_ref());
        out
    }

    /// The request sent to the auth service.
    fn outbound(
        &self,
        req: &http::request::Parts,
        host: &str,
        uri: HeaderValue,
    ) -> Result<http::Request<Bytes>, GatewayError> {
        let mut out = http::Request::new(Bytes::new());
        *out.method_mut() = self.method.clone();
        *out.uri_mut() = self.url.clone();
        let h = out.headers_mut();
        for n in self.send.iter() {
            let values = req.headers.get_all(n);
            if *n == header::COOKIE && values.iter().nth(1).is_some() {
                // HTTP/2 clients split cookies over several fields; an HTTP/1.1 message
                // carries one (RFC 9113 8.2.3), and many services read only the first.
                let mut joined = Vec::new();
                for (i, v) in values.iter().enumerate() {
                    if i > 0 {
                        joined.extend_from_slice(b"; ");
                    }
                    joined.extend_from_slice(v.as_bytes());
                }
                if let Ok(v) = HeaderValue::from_bytes(&joined) {
                    h.insert(header::COOKIE, v);
                }
                continue;
            }
            for v in values {
                h.append(n.clone(), v.clone());
            }
        }
        let method = HeaderValue::from_str(req.method.as_str()).map_err(|_| {
            GatewayError::new(ErrorKind::BadRequest, "forward_auth: unusable method")
        })?;
        h.insert(X_FORWARDED_METHOD.clone(), method);
        h.insert(X_FORWARDED_URI.clone(), uri);
        if !host.is_empty()
            && let Ok(v) = HeaderValue::from_str(host)
        {
            h.insert(X_FORWARDED_HOST.clone(), v);
        }
        h.insert(header::USER_AGENT, HeaderValue::from_static("torii"));
        Ok(out)
    }

    /// What an allowing answer said.
    fn allowed(&self, headers: &HeaderMap) -> Allowed {
        let consumer_id = self
            .consumer_header
            .as_ref()
            .and_then(|n| headers.get(n))
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(Box::from);
        let mut copied = Vec::new();
        for n in self.copy.iter() {
            for v in headers.get_all(n) {
                copied.push((n.clone(), v.clone()));
            }
        }
        Allowed {
            consumer_id,
            headers: copied,
        }
    }

    /// The consumer of an allowed request.
    fn consumer(&self, allowed: &Allowed) -> Result<Arc<Consumer>, GatewayError> {
        match &allowed.consumer_id {
            Some(id) => self.directory.by_id(id).ok_or_else(|| {
                GatewayError::new(
                    ErrorKind::Unauthorized(None),
                    "forward_auth: the consumer header names no consumer",
                )
            }),
            None => self.fixed.clone().ok_or_else(|| {
                GatewayError::new(
                    ErrorKind::Unauthorized(None),
                    "forward_auth: the answer has no consumer header",
                )
            }),
        }
    }

    /// Lets an allowed request through: its consumer, identity and copied headers.
    fn accept(
        &self,
        req: &mut http::request::Parts,
        ctx: &mut RequestContext,
        allowed: &Allowed,
    ) -> Result<(), GatewayError> {
        let consumer = self.consumer(allowed)?;
        for (n, v) in &allowed.headers {
            req.headers.append(n.clone(), v.clone());
        }
        ctx.consumer = Some(consumer);
        ctx.identity = Some(self.identity.clone());
        Ok(())
    }

    /// The client's answer to a refusal: the service's status, body and selected headers.
    fn refusal(&self, resp: Response<Bytes>, grpc: bool) -> Result<Response<Body>, GatewayError> {
        let (parts, body) = resp.into_parts();
        if grpc {
            let kind = if parts.status == StatusCode::UNAUTHORIZED {
                ErrorKind::Unauthorized(parts.headers.get(header::WWW_AUTHENTICATE).cloned())
            } else {
                ErrorKind::Forbidden
            };
            return Err(GatewayError::new(
                kind,
                format!("forward_auth: refused with {}", parts.status),
            ));
        }
        let mut out = Response::new(Body::full(body));
        *out.status_mut() = parts.status;
        for n in self.client.iter() {
            for v in parts.headers.get_all(n) {
                out.headers_mut().append(n.clone(), v.clone());
            }
        }
        Ok(out)
    }
}

impl Plugin for ForwardAuthPlugin {
    fn strip_headers(&self, req: &mut http::request::Parts) {
        self.strip_copies(&mut req.headers);
    }

    fn strips_headers(&self) -> bool {
        !self.copy.is_empty()
    }

    fn on_request<'a>(
        &'a self,
        req: &'a mut http::request::Parts,
        ctx: &'a mut RequestContext,
    ) -> Result<Flow<'a>, GatewayError> {
        // First, whatever happens next: the upstream must only see the service's values.
        self.strip_copies(&mut req.headers);
        let uri = Self::forwarded_uri(req, ctx)?;
        let key = self.cache_key(req, &ctx.host, &uri);
        if let Some(state) = &self.cache
            && let Some(hit) = state.cache.get(&key)
        {
            self.accept(req, ctx, &hit)?;
            return Ok(Flow::Continue);
        }
        let outbound = self.outbound(req, &ctx.host, uri)?;
        let grpc = is_grpc(req);
        Ok(Flow::Wait(Box::pin(async move {
            // Identical requests (same cache key: method, URI, host, sent headers) in flight at
            // once share one call to the service.
            let answer = self
                .inflight
                .run(key, || async {
                    self.http
                        .call(outbound, self.timeout, MAX_RESPONSE_BODY)
                        .await
                        .map_err(|e| format!("forward_auth: {e}"))
                })
                .await;
            let resp = answer.map_err(unavailable)?;
            let status = resp.status();
            if status.is_success() {
                let allowed = Arc::new(self.allowed(resp.headers()));
                self.accept(req, ctx, &allowed)?;
                if let Some(state) = &self.cache
                    && cacheable(resp.headers())
                {
                    state.cache.insert(key, allowed);
                }
                Ok(None)
            } else if status.is_client_error() || status.is_redirection() {
                self.refusal(resp, grpc).map(Some)
            } else {
                Err(unavailable(format!(
                    "forward_auth: the auth service answered {status}"
                )))
            }
        })))
    }
}
