//! `oauth2_introspection`: opaque bearer tokens checked at an RFC 7662 introspection endpoint.
//!
//! - The token comes from `Authorization: Bearer <token>`. No such header (or another scheme):
//!   the plugin does nothing and the chain decides (another plugin, the anonymous consumer or
//!   401).
//! - The gateway POSTs `token=<token>&token_type_hint=access_token` to `introspection_url`,
//!   authenticating itself with HTTP Basic (`client_id`, `client_secret`, form-encoded first
//!   as RFC 6749 2.3.1 asks).
//! - `"active": true` (and an `exp` still in the future, an `nbf` in the past): the consumer
//!   is the one whose id is the `consumer_claim` (default `sub`); the response's members are
//!   the identity's claims, `scope` its scopes. Otherwise 401 with
//!   `WWW-Authenticate: Bearer realm="…", error="invalid_token"`.
//! - The endpoint down, a timeout, a status other than 200, a body over 64 KiB or that is not
//!   a JSON object with a boolean `active`: 503 (`AuthUnavailable`). The gateway fails closed.
//!
//! Results are cached under the SHA-256 of the token (raw tokens are never stored): active
//! ones until their `exp`, at most `cache_ttl_max`; inactive ones for `negative_cache_ttl`.

#[cfg(test)]
mod tests;

use super::util::quoted;
use crate::flights::Flights;
use crate::{BuildCtx, ConfigError, Consumers, Phase, PluginFactory};
use base64::Engine as _;
use bytes::Bytes;
use http::StatusCode;
use http::header::{self, HeaderValue};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Map, Value};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use torii_config::values::{ByteSize, Duration as ConfigDuration};
use torii_core::{Consumer, ErrorKind, Flow, GatewayError, Identity, Plugin, RequestContext};

/// Largest introspection response read.
pub const MAX_RESPONSE_BODY: usize = 64 * 1024;

/// Longest allowed `negative_cache_ttl`.
pub const MAX_NEGATIVE_TTL: Duration = Duration::from_secs(30);

/// Longest allowed `cache_ttl_max`.
pub const MAX_CACHE_TTL: Duration = Duration::from_secs(3600);

/// Settings of `oauth2_introspection`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IntrospectionConfig {
    /// The authorization server's token introspection endpoint (RFC 7662), `https://` (or
    /// `http://` for a local sidecar): `https://sso.example/oauth2/introspect`. Set this or
    /// `upstream`.
    #[serde(default)]
    pub introspection_url: Option<String>,
    /// The authorization server as a named upstream of `upstreams:` (its targets, TLS CA and
    /// client certificate, pool), called on `path`. Set this or `introspection_url`.
    #[serde(default)]
    pub upstream: Option<String>,
    /// With `upstream`: the endpoint's path, e.g. `/oauth2/introspect`. Default `/`.
    #[serde(default)]
    pub path: Option<String>,
    /// The gateway's client id at the authorization server (HTTP Basic user).
    pub client_id: String,
    /// The gateway's client secret (HTTP Basic password); write `${VARIABLE}` to keep it out
    /// of the file.
    pub client_secret: String,
    /// Member of the introspection response whose value is the consumer id
    /// (`consumers[].id`, which defaults to the name). A token whose member names no consumer
    /// is refused with 401.
    #[serde(default = "default_consumer_claim")]
    pub consumer_claim: String,
    /// Time limit of one introspection call (connection, response head and body).
    #[serde(default = "default_timeout")]
    pub timeout: ConfigDuration,
    /// Longest time an active token's result is remembered (never past the token's `exp`);
    /// `0s` asks the endpoint for every request. At most `1h`: a revoked token keeps working
    /// until its cached result expires.
    #[serde(default = "default_cache_ttl_max")]
    pub cache_ttl_max: ConfigDuration,
    /// How long an inactive token's result is remembered; `0s` turns it off. At most `30s`.
    #[serde(default = "default_negative_ttl")]
    pub negative_cache_ttl: ConfigDuration,
    /// Most remembered results (a result with more than 1 KiB of claims counts once per KiB).
    #[serde(default = "default_cache_size")]
    pub cache_size: u64,
    /// Longest token accepted; longer ones are refused without calling the endpoint.
    #[serde(default = "default_max_token_size")]
    pub max_token_size: ByteSize,
    /// Remove the `Authorization` header before the request goes upstream.
    #[serde(default = "yes")]
    pub hide_credentials: bool,
    /// Realm named in the `WWW-Authenticate: Bearer` challenge.
    #[serde(default = "default_realm")]
    pub realm: String,
}

fn default_consumer_claim() -> String {
    "sub".into()
}
fn default_timeout() -> ConfigDuration {
    ConfigDuration::secs(2)
}
fn default_cache_ttl_max() -> ConfigDuration {
    ConfigDuration::secs(300)
}
fn default_negative_ttl() -> ConfigDuration {
    ConfigDuration::secs(5)
}
fn default_cache_size() -> u64 {
    10_000
}
fn default_max_token_size() -> ByteSize {
    ByteSize::kib(4)
}
fn yes() -> bool {
    true
}
fn default_realm() -> String {
    "torii".into()
}

/// The plugin type.
pub struct Introspection;

impl PluginFactory for Introspection {
    const NAME: &'static str = "oauth2_introspection";
    const PHASE: Phase = Phase::Authentication;
    const ORDER: u16 = 50;
    type Config = IntrospectionConfig;

    fn build(
        config: IntrospectionConfig,
        ctx: &BuildCtx<'_>,
    ) -> Result<Arc<dyn Plugin>, ConfigError> {
        let (url, http) = super::forward_auth::service(
            config.introspection_url.as_deref(),
            config.upstream.as_deref(),
            config.path.as_deref(),
            ctx,
        )
        .map_err(|mut e| {
            // The URL's key is named differently here.
            for seg in &mut e.path {
                if *seg == torii_config::Seg::Key("url".into()) {
                    *seg = torii_config::Seg::Key("introspection_url".into());
                }
            }
            e.message = e.message.replace("`url`", "`introspection_url`");
            e
        })?;
        if config.client_id.is_empty() {
            return Err(ConfigError::at(
                "client_id",
                "must not be empty",
                "the client id the authorization server issued to the gateway",
            ));
        }
        if config.client_secret.is_empty() {
            return Err(ConfigError::at(
                "client_secret",
                "must not be empty",
                "write `client_secret: ${INTROSPECTION_SECRET}` and set the variable",
            ));
        }
        if config.consumer_claim.is_empty() {
            return Err(ConfigError::at(
                "consumer_claim",
                "must not be empty",
                "the default is `sub`",
            ));
        }
        if config.timeout.0.is_zero() {
            return Err(ConfigError::at(
                "timeout",
                "must be longer than 0s",
                "the default is 2s",
            ));
        }
        if config.cache_ttl_max.0 > MAX_CACHE_TTL {
            return Err(ConfigError::at(
                "cache_ttl_max",
                "must be at most 1h",
                "revoked tokens keep working while cached; the default is 5m",
            ));
        }
        if config.negative_cache_ttl.0 > MAX_NEGATIVE_TTL {
            return Err(ConfigError::at(
                "negative_cache_ttl",
                "must be at most 30s",
                "a token that just became valid is refused while its old result is cached; the default is 5s",
            ));
        }
        let caching = !config.cache_ttl_max.0.is_zero() || !config.negative_cache_ttl.0.is_zero();
        if caching && config.cache_size == 0 {
            return Err(ConfigError::at(
                "cache_size",
                "must be at least 1 while a cache TTL is set",
                "the default is 10000",
            ));
        }
        let max_token = usize::try_from(config.max_token_size.0).unwrap_or(usize::MAX);
        if max_token == 0 {
            return Err(ConfigError::at(
                "max_token_size",
                "must be at least 1B",
                "the default is 4KiB",
            ));
        }
        let challenge = HeaderValue::from_str(&format!("Bearer realm={}", quoted(&config.realm)))
            .map_err(|_| {
            ConfigError::at("realm", "not a valid header value", "use printable ASCII")
        })?;
        let invalid = HeaderValue::from_str(&format!(
            "Bearer realm={}, error=\"invalid_token\"",
            quoted(&config.realm)
        ))
        .map_err(|_| ConfigError::at("realm", "not a valid header value", "use printable ASCII"))?;
        let enc = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
        let basic = base64::engine::general_purpose::STANDARD.encode(format!(
            "{}:{}",
            enc(&config.client_id),
            enc(&config.client_secret)
        ));
        let mut client_auth = HeaderValue::from_str(&format!("Basic {basic}")).map_err(|_| {
            ConfigError::at("client_id", "not usable in a header", "use printable ASCII")
        })?;
        client_auth.set_sensitive(true);
        let cache = caching.then(|| {
            let size = config.cache_size;
            ctx.state(|| State {
                cache: moka::sync::Cache::builder()
                    .max_capacity(size)
                    .weigher(|_, v: &Arc<Cached>| v.weight)
                    .expire_after(ByTtl)
                    .build(),
            })
        });
        Ok(Arc::new(IntrospectionPlugin {
            url,
            client_auth,
            consumer_claim: config.consumer_claim,
            timeout: config.timeout.0,
            positive_ttl: config.cache_ttl_max.0,
            negative_ttl: config.negative_cache_ttl.0,
            max_token,
            hide: config.hide_credentials,
            directory: ctx.directory.clone(),
            http,
            cache,
            challenge,
            invalid,
            inflight: Flights::default(),
        }))
    }
}

/// Results remembered across requests (and reloads with the same settings).
struct State {
    cache: moka::sync::Cache<[u8; 32], Arc<Cached>>,
}

/// A remembered result with its lifetime.
struct Cached {
    verdict: Verdict,
    ttl: Duration,
    weight: u32,
}

/// Per-entry lifetimes.
struct ByTtl;

impl moka::Expiry<[u8; 32], Arc<Cached>> for ByTtl {
    fn expire_after_create(
        &self,
        _: &[u8; 32],
        value: &Arc<Cached>,
        _: std::time::Instant,
    ) -> Option<Duration> {
        Some(value.ttl)
    }
}

/// What the endpoint said about a token.
#[derive(Debug)]
enum Verdict {
    /// Active: the consumer id (from the consumer claim), the identity and `exp`.
    Active {
        consumer_id: Option<String>,
        identity: Arc<Identity>,
        exp: Option<u64>,
    },
    /// Inactive, expired or not yet valid.
    Inactive(&'static str),
}

/// Seconds since the Unix epoch, with a fraction.
fn now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
}

/// A time member (`exp`, `nbf`) in whole seconds; `Err` when present but not a number.
fn seconds(claims: &Map<String, Value>, name: &str) -> Result<Option<u64>, String> {
    match claims.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_u64()
            .or_else(|| n.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))
            .map(Some)
            .ok_or_else(|| format!("`{name}` is not a time")),
        Some(_) => Err(format!("`{name}` is not a number")),
    }
}

/// Scopes from `scope` (space-separated, RFC 7662) or, when absent, `scp` (a list or a
/// space-separated string).
fn scopes(claims: &Map<String, Value>) -> Vec<String> {
    match claims.get("scope").or_else(|| claims.get("scp")) {
        Some(Value::String(s)) => s.split_whitespace().map(String::from).collect(),
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_str)
            .map(String::from)
            .collect(),
        _ => Vec::new(),
    }
}

/// The consumer id a member holds: a non-empty string, or an integer written out.
fn claim_id(claims: &Map<String, Value>, name: &str) -> Option<String> {
    match claims.get(name)? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) if n.is_i64() || n.is_u64() => Some(n.to_string()),
        _ => None,
    }
}

/// Reads an introspection response. `Err`: the response is unusable (the endpoint is then
/// treated as unavailable).
fn parse(body: &[u8], consumer_claim: &str, now: Duration) -> Result<Verdict, String> {
    let claims: Map<String, Value> =
        serde_json::from_slice(body).map_err(|e| format!("response is not a JSON object: {e}"))?;
    let active = claims
        .get("active")
        .and_then(Value::as_bool)
        .ok_or("`active` is missing or not a boolean")?;
    if !active {
        return Ok(Verdict::Inactive("inactive token"));
    }
    let exp = seconds(&claims, "exp")?;
    let nbf = seconds(&claims, "nbf")?;
    let secs = now.as_secs();
    if exp.is_some_and(|e| e <= secs) {
        return Ok(Verdict::Inactive("expired token"));
    }
    if nbf.is_some_and(|n| n > secs) {
        return Ok(Verdict::Inactive("token not yet valid"));
    }
    let consumer_id = claim_id(&claims, consumer_claim);
    let scopes = scopes(&claims);
    Ok(Verdict::Active {
        consumer_id,
        identity: Arc::new(Identity {
            scheme: "oauth2_introspection",
            claims: Some(claims),
            scopes,
        }),
        exp,
    })
}

struct IntrospectionPlugin {
    url: http::Uri,
    client_auth: HeaderValue,
    consumer_claim: String,
    timeout: Duration,
    positive_ttl: Duration,
    negative_ttl: Duration,
    max_token: usize,
    hide: bool,
    directory: Arc<Consumers>,
    http: torii_upstream::Client,
    cache: Option<Arc<State>>,
    challenge: HeaderValue,
    invalid: HeaderValue,
    /// Introspections in progress by token digest: concurrent requests with the same token
    /// share one call to the endpoint.
    inflight: Flights<Result<Arc<Cached>, String>>,
}

/// The bearer token of a request: `None` when there is no `Authorization: Bearer` header.
fn bearer(req: &http::request::Parts) -> Option<Result<&str, &'static str>> {
    let v = req.headers.get(header::AUTHORIZATION)?.as_bytes();
    const SCHEME: &[u8] = b"bearer";
    let n = SCHEME.len();
    if v.len() < n || !v[..n].eq_ignore_ascii_case(SCHEME) {
        return None;
    }
    if v.len() > n && v[n] != b' ' && v[n] != b'\t' {
        // `Bearerx ...` is another scheme.
        return None;
    }
    let token = v[n..].trim_ascii();
    if token.is_empty() {
        return Some(Err("empty bearer token"));
    }
    if token.iter().any(|b| !b.is_ascii_graphic()) {
        return Some(Err("malformed bearer token"));
    }
    Some(std::str::from_utf8(token).map_err(|_| "malformed bearer token"))
}

impl IntrospectionPlugin {
    fn reject(&self, why: &str) -> GatewayError {
        GatewayError::new(
            ErrorKind::Unauthorized(Some(self.invalid.clone())),
            format!("oauth2_introspection: {why}"),
        )
    }

    /// How long a verdict is remembered (zero: not at all).
    fn ttl(&self, verdict: &Verdict, now: Duration) -> Duration {
        match verdict {
            Verdict::Inactive(_) => self.negative_ttl,
            Verdict::Active { exp: None, .. } => self.positive_ttl,
            Verdict::Active { exp: Some(e), .. } => Duration::from_secs(*e)
                .saturating_sub(now)
                .min(self.positive_ttl),
        }
    }

    /// Applies a verdict: the consumer and identity of an active token, or 401.
    fn settle(
        &self,
        req: &mut http::request::Parts,
        ctx: &mut RequestContext,
        verdict: &Verdict,
    ) -> Result<(), GatewayError> {
        let (consumer_id, identity, exp) = match verdict {
            Verdict::Inactive(why) => return Err(self.reject(why)),
            Verdict::Active {
                consumer_id,
                identity,
                exp,
            } => (consumer_id, identity, exp),
        };
        // A cached result outliving its token (the TTL is cut to `exp`; belt and braces).
        if exp.is_some_and(|e| e <= now().as_secs()) {
            return Err(self.reject("expired token"));
        }
        let consumer: Arc<Consumer> = consumer_id
            .as_deref()
            .and_then(|id| self.directory.by_id(id))
            .ok_or_else(|| self.reject("the consumer claim names no consumer"))?;
        ctx.consumer = Some(consumer);
        ctx.identity = Some(identity.clone());
        if self.hide {
            req.headers.remove(header::AUTHORIZATION);
        }
        Ok(())
    }

    /// The introspection request for a token.
    fn outbound(&self, token: &str) -> Result<http::Request<Bytes>, GatewayError> {
        let form = form_urlencoded::Serializer::new(String::new())
            .append_pair("token", token)
            .append_pair("token_type_hint", "access_token")
            .finish();
        http::Request::post(self.url.clone())
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(header::ACCEPT, "application/json")
            .header(header::AUTHORIZATION, self.client_auth.clone())
            .header(header::USER_AGENT, "torii")
            .body(Bytes::from(form))
            .map_err(|_| GatewayError::new(ErrorKind::Internal, "oauth2_introspection: request"))
    }
}

impl IntrospectionPlugin {
    /// One call to the introspection endpoint; the result is cached by token digest.
    async fn introspect(
        &self,
        outbound: http::Request<Bytes>,
        key: [u8; 32],
    ) -> Result<Arc<Cached>, String> {
        let resp = self
            .http
            .call(outbound, self.timeout, MAX_RESPONSE_BODY)
            .await
            .map_err(|e| format!("oauth2_introspection: {e}"))?;
        if resp.status() != StatusCode::OK {
            return Err(format!(
                "oauth2_introspection: the endpoint answered {}",
                resp.status()
            ));
        }
        let now = now();
        let verdict = parse(resp.body(), &self.consumer_claim, now)
            .map_err(|e| format!("oauth2_introspection: {e}"))?;
        let ttl = self.ttl(&verdict, now);
        let cached = Arc::new(Cached {
            verdict,
            ttl,
            weight: 1 + u32::try_from(resp.body().len() / 1024).unwrap_or(u32::MAX - 1),
        });
        if let Some(state) = &self.cache
            && !ttl.is_zero()
        {
            state.cache.insert(key, cached.clone());
        }
        Ok(cached)
    }
}

fn unavailable(detail: impl Into<String>) -> GatewayError {
    GatewayError::new(ErrorKind::AuthUnavailable, detail)
}

impl Plugin for IntrospectionPlugin {
    fn on_request<'a>(
        &'a self,
        req: &'a mut http::request::Parts,
        ctx: &'a mut RequestContext,
    ) -> Result<Flow<'a>, GatewayError> {
        let token = match bearer(req) {
            None => return Ok(Flow::Continue),
            Some(Err(why)) => return Err(self.reject(why)),
            Some(Ok(t)) => t,
        };
        if token.len() > self.max_token {
            return Err(self.reject("token too large"));
        }
        let key = crate::consumers::key_digest(token.as_bytes());
        let outbound = match self.cache.as_ref().and_then(|s| s.cache.get(&key)) {
            Some(hit) => {
                self.settle(req, ctx, &hit.verdict)?;
                return Ok(Flow::Continue);
            }
            None => self.outbound(token)?,
        };
        Ok(Flow::Wait(Box::pin(async move {
            let result = self
                .inflight
                .run(key, || self.introspect(outbound, key))
                .await;
            let cached = result.map_err(unavailable)?;
            self.settle(req, ctx, &cached.verdict)?;
            Ok(None)
        })))
    }

    fn challenge(&self) -> Option<HeaderValue> {
        Some(self.challenge.clone())
    }

    fn discard_credential(&self, req: &mut http::request::Parts) {
        if bearer(req).is_some() {
            req.headers.remove(header::AUTHORIZATION);
        }
    }
}
