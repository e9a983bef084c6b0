//! `cors`: Cross-Origin Resource Sharing (Fetch standard, "CORS protocol").
//!
//! - Preflights (`OPTIONS` with `Origin` and `Access-Control-Request-Method`) are answered by
//!   the gateway with 204, also on routes that do not list OPTIONS (the router routes a
//!   preflight by the method it asks about, or, when the path does not allow that method, to
//!   a route of the path with `cors`), so a preflight never gets 405. A preflight for a method
//!   the policy or the path does not allow gets the same 204, whose
//!   `Access-Control-Allow-Methods` lists only the methods allowed (by the policy, and by the
//!   path in that case): the browser refuses the actual request. A preflight from an origin
//!   that is not allowed gets 403 and no CORS headers.
//! - Other requests from an allowed origin get `Access-Control-Allow-Origin` (and credentials
//!   and exposed headers) on every response: the upstream's and the gateway's own errors (401,
//!   403, 429, 5xx), so browsers can read them. A disallowed origin gets no CORS headers.
//! - Origins: exact (`https://app.example.com`), wildcard subdomain
//!   (`https://*.example.com`, which does not match `https://example.com`), anchored regular
//!   expressions, or `*`. The `null` origin is only allowed when listed as `null` (`*` does not
//!   cover it). `*` is never sent with credentials: the request's origin is echoed instead.
//! - `Vary: Origin` on every response whose CORS headers depend on the origin.

use crate::{BuildCtx, ConfigError, Phase, PluginFactory};
use http::header::{
    ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE,
    ACCESS_CONTROL_REQUEST_HEADERS, ACCESS_CONTROL_REQUEST_METHOD, ORIGIN, VARY,
};
use http::{HeaderValue, Method, Response, StatusCode};
use schemars::JsonSchema;
use serde::Deserialize;
use std::collections::HashSet;
use std::sync::Arc;
use torii_config::values::{Duration, HeaderName, Method as ConfigMethod, Regex};
use torii_core::{Body, ErrorKind, Flow, GatewayError, Plugin, PreflightMethods, RequestContext};

/// Settings of `cors`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CorsConfig {
    /// Allowed origins: exact (`https://app.example.com`), wildcard subdomain
    /// (`https://*.example.com`), `null` (only when listed), or `*` (any origin but `null`).
    #[serde(default)]
    pub allow_origins: Vec<String>,
    /// Allowed origins as regular expressions, matched against the whole origin.
    #[serde(default)]
    pub allow_origin_regex: Vec<Regex>,
    /// Methods allowed for cross-origin requests.
    #[serde(default = "methods")]
    pub allow_methods: Vec<ConfigMethod>,
    /// Request headers allowed; when empty, the headers a preflight asks for are allowed.
    #[serde(default)]
    pub allow_headers: Vec<HeaderName>,
    /// Response headers the browser may expose to scripts.
    #[serde(default)]
    pub expose_headers: Vec<HeaderName>,
    /// Allow cookies and HTTP authentication (`Access-Control-Allow-Credentials: true`).
    #[serde(default)]
    pub allow_credentials: bool,
    /// How long browsers may cache a preflight answer.
    #[serde(default = "max_age")]
    pub max_age: Duration,
}

fn methods() -> Vec<ConfigMethod> {
    ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]
        .iter()
        .filter_map(|m| ConfigMethod::parse(m).ok())
        .collect()
}
fn max_age() -> Duration {
    Duration::secs(3600)
}

/// The plugin type.
pub struct Cors;

/// A wildcard subdomain pattern: scheme, `.suffix` and the exact port part (`:8443` or empty).
struct Wildcard {
    scheme: String,
    suffix: String,
}

struct CorsPolicy {
    any: bool,
    exact: HashSet<String>,
    wildcards: Vec<Wildcard>,
    regexes: Vec<regex::Regex>,
    credentials: bool,
    methods: Vec<Method>,
    methods_value: HeaderValue,
    headers: Option<(HashSet<String>, HeaderValue)>,
    expose: Option<HeaderValue>,
    max_age: HeaderValue,
}

fn join<'a>(items: impl Iterator<Item = &'a str>) -> Option<HeaderValue> {
    let s = items.collect::<Vec<_>>().join(", ");
    if s.is_empty() {
        None
    } else {
        HeaderValue::from_str(&s).ok()
    }
}

impl PluginFactory for Cors {
    const NAME: &'static str = "cors";
    const PHASE: Phase = Phase::Cors;
    const ORDER: u16 = 10;
    type Config = CorsConfig;

    fn build(c: CorsConfig, _: &BuildCtx<'_>) -> Result<Arc<dyn Plugin>, ConfigError> {
        if c.allow_origins.is_empty() && c.allow_origin_regex.is_empty() {
            return Err(ConfigError::here(
                "cors needs `allow_origins` or `allow_origin_regex`",
                "e.g. `allow_origins: [https://app.example.com]`",
            ));
        }
        let mut policy = CorsPolicy {
            any: false,
            exact: HashSet::new(),
            wildcards: Vec::new(),
            regexes: c.allow_origin_regex.into_iter().map(|r| r.regex).collect(),
            credentials: c.allow_credentials,
            methods: c.allow_methods.iter().map(|m| m.0.clone()).collect(),
            methods_value: join(c.allow_methods.iter().map(|m| m.0.as_str()))
                .unwrap_or(HeaderValue::from_static("GET")),
            headers: None,
            expose: join(c.expose_headers.iter().map(|h| h.0.as_str())),
            max_age: HeaderValue::from(c.max_age.0.as_secs()),
        };
        if !c.allow_headers.is_empty() {
            let names: HashSet<String> = c
                .allow_headers
                .iter()
                .map(|h| h.0.as_str().to_string())
                .collect();
            let value = join(c.allow_headers.iter().map(|h| h.0.as_str())).ok_or_else(|| {
                ConfigError::at("allow_headers", "invalid header list", "list header names")
            })?;
            policy.headers = Some((names, value));
        }
        for (i, o) in c.allow_origins.iter().enumerate() {
            let o = o.trim().to_ascii_lowercase();
            if o == "*" {
                policy.any = true;
            } else if o == "null" {
                policy.exact.insert(o);
            } else if let Some((scheme, rest)) = o.split_once("://") {
                if scheme.is_empty() || rest.is_empty() || rest.contains('/') {
                    return Err(bad_origin(i, &o));
                }
                if let Some(suffix) = rest.strip_prefix("*.") {
                    if suffix.is_empty() || suffix.contains('*') {
                        return Err(bad_origin(i, &o));
                    }
                    policy.wildcards.push(Wildcard {
                        scheme: scheme.to_string(),
                        suffix: format!(".{suffix}"),
                    });
                } else if rest.contains('*') {
                    return Err(bad_origin(i, &o));
                } else {
                    policy.exact.insert(o);
                }
            } else {
                return Err(bad_origin(i, &o));
            }
        }
        if policy.any && policy.credentials {
            return Err(ConfigError::at(
                "allow_credentials",
                "`*` in `allow_origins` together with credentials would let any site read authenticated responses",
                "list the origins that may send credentials, or turn `allow_credentials` off",
            ));
        }
        Ok(Arc::new(policy))
    }
}

fn bad_origin(i: usize, o: &str) -> ConfigError {
    ConfigError::here(
        format!("`{o}` is not an origin"),
        "write `scheme://host[:port]` without a path, `https://*.example.com`, `null` or `*`",
    )
    .in_list("allow_origins", i)
}

/// What the request phase decided, for the response phase.
#[derive(Clone)]
struct CorsDecision {
    /// The allowed origin to echo, or `None` for a disallowed one.
    allowed: Option<HeaderValue>,
}

static STAR: HeaderValue = HeaderValue::from_static("*");
static TRUE: HeaderValue = HeaderValue::from_static("true");
static VARY_ORIGIN: HeaderValue = HeaderValue::from_static("Origin");
static VARY_PREFLIGHT: HeaderValue = HeaderValue::from_static(
    "Origin, Access-Control-Request-Method, Access-Control-Request-Headers",
);

impl CorsPolicy {
    fn allows(&self, origin: &HeaderValue) -> bool {
        let Ok(o) = origin.to_str() else {
            return false;
        };
        let o = o.to_ascii_lowercase();
        if self.exact.contains(&o) {
            return true;
        }
        if o == "null" {
            return false;
        }
        if self.any {
            return true;
        }
        if let Some((scheme, host)) = o.split_once("://") {
            for w in &self.wildcards {
                if scheme == w.scheme
                    && host.len() > w.suffix.len()
                    && host.ends_with(&w.suffix)
                    && !host[..host.len() - w.suffix.len()].contains(['/', ':'])
                {
                    return true;
                }
            }
        }
        self.regexes.iter().any(|r| r.is_match(&o))
    }

    /// `*` only without credentials; otherwise the origin itself.
    fn allow_origin_value<'a>(&'a self, origin: &'a HeaderValue) -> &'a HeaderValue {
        if self.any && !self.credentials && origin.as_bytes() != b"null" {
            &STAR
        } else {
            origin
        }
    }

    fn varies(&self) -> bool {
        !(self.any && !self.credentials && self.exact.is_empty())
    }

    /// The preflight answer. `routable`: the methods of the path, when the requested method
    /// is not one of them; only methods in both lists are then announced.
    fn preflight(
        &self,
        req: &http::request::Parts,
        origin: &HeaderValue,
        routable: Option<&[Method]>,
    ) -> Response<Body> {
        let mut resp = Response::new(Body::Empty);
        *resp.status_mut() = StatusCode::NO_CONTENT;
        let h = resp.headers_mut();
        h.insert(
            ACCESS_CONTROL_ALLOW_ORIGIN,
            self.allow_origin_value(origin).clone(),
        );
        if self.credentials {
            h.insert(ACCESS_CONTROL_ALLOW_CREDENTIALS, TRUE.clone());
        }
        let methods = match routable {
            None => Some(self.methods_value.clone()),
            Some(routable) => join(
                self.methods
                    .iter()
                    .filter(|m| routable.contains(m))
                    .map(Method::as_str),
            ),
        };
        if let Some(m) = methods {
            h.insert(ACCESS_CONTROL_ALLOW_METHODS, m);
        }
        match &self.headers {
            Some((_, value)) => {
                h.insert(ACCESS_CONTROL_ALLOW_HEADERS, value.clone());
            }
            None => {
                if let Some(asked) = req.headers.get(ACCESS_CONTROL_REQUEST_HEADERS) {
                    h.insert(ACCESS_CONTROL_ALLOW_HEADERS, asked.clone());
                }
            }
        }
        h.insert(ACCESS_CONTROL_MAX_AGE, self.max_age.clone());
        h.insert(VARY, VARY_PREFLIGHT.clone());
        resp
    }
}

impl Plugin for CorsPolicy {
    fn on_request<'a>(
        &'a self,
        req: &'a mut http::request::Parts,
        ctx: &'a mut RequestContext,
    ) -> Result<Flow<'a>, GatewayError> {
        let Some(origin) = req.headers.get(ORIGIN) else {
            // The answer still depends on the origin: caches must key on it.
            ctx.extensions.insert(CorsDecision { allowed: None });
            return Ok(Flow::Continue);
        };
        let allowed = self.allows(origin);
        let is_preflight = req.method == Method::OPTIONS
            && req.headers.contains_key(ACCESS_CONTROL_REQUEST_METHOD);
        if is_preflight {
            if !allowed {
                return Err(GatewayError::new(
                    ErrorKind::Forbidden,
                    "CORS origin not allowed",
                ));
            }
            // A method the policy (or the path) does not allow still gets the ordinary answer,
            // which does not list it: the browser then refuses the actual request (Fetch
            // standard, CORS-preflight fetch). Never 405, and no 403 for an allowed origin.
            let routable = ctx
                .extensions
                .get::<PreflightMethods>()
                .map(|m| m.0.as_slice());
            let resp = self.preflight(req, origin, routable);
            return Ok(Flow::Respond(resp));
        }
        ctx.extensions.insert(CorsDecision {
            allowed: allowed.then(|| origin.clone()),
        });
        Ok(Flow::Continue)
    }

    fn on_response(&self, resp: &mut http::response::Parts, ctx: &RequestContext) {
        let Some(decision) = ctx.extensions.get::<CorsDecision>() else {
            return;
        };
        let h = &mut resp.headers;
        // The gateway's answer replaces whatever the upstream said about CORS.
        for name in [
            ACCESS_CONTROL_ALLOW_ORIGIN,
            ACCESS_CONTROL_ALLOW_CREDENTIALS,
            ACCESS_CONTROL_EXPOSE_HEADERS,
        ] {
            h.remove(name);
        }
        if self.varies() {
            h.append(VARY, VARY_ORIGIN.clone());
        }
        let Some(origin) = &decision.allowed else {
            return;
        };
        h.insert(
            ACCESS_CONTROL_ALLOW_ORIGIN,
            self.allow_origin_value(origin).clone(),
        );
        if self.credentials {
            h.insert(ACCESS_CONTROL_ALLOW_CREDENTIALS, TRUE.clone());
        }
        if let Some(e) = &self.expose {
            h.insert(ACCESS_CONTROL_EXPOSE_HEADERS, e.clone());
        }
    }

    fn answers_preflight(&self) -> bool {
        true
    }
}
