//! `jwt`: bearer tokens (JWS, compact form) verified against configured issuers.
//!
//! - The token comes from a header (`Authorization: Bearer`), a cookie or a query parameter.
//!   No token: the plugin does nothing and the chain decides (anonymous consumer or 401).
//! - The unverified `iss` claim only selects an issuer's settings; the token is then verified
//!   with that issuer's keys and algorithm allow-list. The `alg` header must be in the list
//!   (`none` never is; HMAC and public-key algorithms are never mixed for an issuer, so a
//!   public key can never be used as an HMAC secret). `kid` is only a lookup key; the `jwk`,
//!   `jku`, `x5u` and `x5c` headers are ignored.
//! - Claims are checked (`exp`, `nbf` with leeway, `iss`, `aud`, required claims), and the
//!   consumer is the one whose id is the consumer claim, before any key lookup, so tokens that
//!   would be refused anyway never trigger a key set fetch.
//! - Keys come inline (PEM, JWK, secret) and/or from a JWKS URL ([`jwks`]), fetched lazily.
//!
//! Failures are 401 with `WWW-Authenticate: Bearer realm="…", error="invalid_token"`; when an
//! issuer's key set cannot be obtained at all (endpoint down, nothing cached) the request is
//! refused with 503 (`AuthUnavailable`), never let through.

mod config;
mod jwks;
mod keys;
mod verify;

#[cfg(test)]
mod tests;

pub use config::{Alg, IssuerConfig, JwksConfig, JwtConfig, KeyConfig};

use super::util::{query_param, quoted};
use crate::{BuildCtx, ConfigError, Consumers, Phase, PluginFactory};
use http::HeaderValue;
use jwks::{JwksSource, KeySet, Settings};
use keys::Key;
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::sync::{Arc, Once};
use torii_config::Seg;
use torii_core::{Consumer, ErrorKind, Flow, GatewayError, Identity, Plugin, RequestContext};
use verify::Token;

/// Most keys tried for one token when its `kid` does not single one out.
pub const MAX_CANDIDATE_KEYS: usize = 8;

/// The plugin type.
pub struct Jwt;

static PROVIDER: Once = Once::new();

/// jsonwebtoken needs its process-wide crypto provider chosen before first use; installing
/// fails harmlessly when something else already did.
fn install_provider() {
    PROVIDER.call_once(|| {
        let _ = jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER.install_default();
    });
}

impl PluginFactory for Jwt {
    const NAME: &'static str = "jwt";
    const PHASE: Phase = Phase::Authentication;
    const ORDER: u16 = 30;
    type Config = JwtConfig;

    fn build(config: JwtConfig, ctx: &BuildCtx<'_>) -> Result<Arc<dyn Plugin>, ConfigError> {
        install_provider();
        check_settings(&config)?;
        if let Some(q) = &config.query {
            ctx.redact_query_param(q);
        }
        let mut prepared = Vec::with_capacity(config.issuers.len());
        for (i, issuer) in config.issuers.iter().enumerate() {
            if config.issuers[..i]
                .iter()
                .any(|o| o.issuer == issuer.issuer)
            {
                return Err(ConfigError::at(
                    "issuer",
                    format!("issuer `{}` is listed twice", issuer.issuer),
                    "merge the two entries",
                )
                .in_list("issuers", i));
            }
            prepared.push(prepare_issuer(issuer).map_err(|e| e.in_list("issuers", i))?);
        }
        let settings = Settings::from(&config.jwks);
        // Key sets are fetched through the implicit upstream of each URL (the same pools,
        // TLS and limits as every other outbound call).
        let mut clients = Vec::with_capacity(prepared.len());
        for (i, p) in prepared.iter().enumerate() {
            clients.push(match (&p.jwks_url, &p.jwks_upstream) {
                (None, _) => None,
                (Some(_), Some(name)) => Some(ctx.client(None, Some(name)).map_err(|e| {
                    ConfigError::at("jwks_upstream", e, "name one of `upstreams[].name`")
                        .in_list("issuers", i)
                })?),
                (Some(url), None) => Some(ctx.client(Some(url), None).map_err(|e| {
                    ConfigError::at("jwks_url", e, "write an absolute http:// or https:// URL")
                        .in_list("issuers", i)
                })?),
            });
        }
        let sources = ctx.state(|| JwksState {
            sources: prepared
                .iter()
                .zip(clients.iter().cloned())
                .map(|(p, client)| {
                    p.jwks_url.clone().zip(client).map(|(url, client)| {
                        Arc::new(JwksSource::new(url, p.algorithms.clone(), settings, client))
                    })
                })
                .collect(),
        });
        // Kept state keeps its cached keys, but fetches use this load's upstreams.
        for (source, client) in sources.sources.iter().zip(clients) {
            if let (Some(source), Some(client)) = (source, client) {
                source.set_client(client);
            }
        }
        let issuers = prepared
            .into_iter()
            .zip(config.issuers)
            .enumerate()
            .map(|(i, (p, c))| Issuer {
                iss: c.issuer,
                audiences: c.audiences,
                algorithms: p.algorithms,
                keys: p.keys,
                jwks: sources.sources.get(i).cloned().flatten(),
            })
            .collect();
        let realm = quoted(&config.realm);
        let challenge = HeaderValue::from_str(&format!("Bearer realm={realm}")).map_err(|_| {
            ConfigError::at("realm", "not a valid header value", "use printable ASCII")
        })?;
        let invalid =
            HeaderValue::from_str(&format!("Bearer realm={realm}, error=\"invalid_token\""))
                .map_err(|_| {
                    ConfigError::at("realm", "not a valid header value", "use printable ASCII")
                })?;
        Ok(Arc::new(JwtPlugin {
            issuers,
            header: config.header.0,
            scheme: config.header_scheme,
            cookie: config.cookie,
            query: config.query,
            leeway: config.leeway.0.as_secs(),
            require_exp: config.require_exp,
            required: config.required_claims,
            consumer_claim: config.consumer_claim,
            max_token: usize::try_from(config.max_token_size.0).unwrap_or(usize::MAX),
            directory: ctx.directory.clone(),
            challenge,
            invalid,
            hide: config.hide_credentials,
            verified: (!config.verified_cache_ttl.0.is_zero()).then(|| {
                moka::sync::Cache::builder()
                    .max_capacity(config.verified_cache_size)
                    .time_to_live(config.verified_cache_ttl.0)
                    .build()
            }),
        }))
    }
}

/// A token that passed every check, remembered by its digest.
struct Verified {
    consumer_id: Arc<str>,
    identity: Arc<Identity>,
    exp: Option<f64>,
    nbf: Option<f64>,
}

fn check_settings(c: &JwtConfig) -> Result<(), ConfigError> {
    if c.issuers.is_empty() {
        return Err(ConfigError::at(
            "issuers",
            "at least one issuer is needed",
            "add `issuers: [{issuer: ..., algorithms: [RS256], jwks_url: ...}]`",
        ));
    }
    if c.header_scheme.bytes().any(|b| !b.is_ascii_graphic()) {
        return Err(ConfigError::at(
            "header_scheme",
            "the scheme is one word of printable ASCII",
            "use `Bearer`, or an empty string for a header holding only the token",
        ));
    }
    for (key, v) in [("cookie", &c.cookie), ("query", &c.query)] {
        if v.as_deref().is_some_and(str::is_empty) {
            return Err(ConfigError::at(
                key,
                "the name is empty",
                "give a name or remove the key",
            ));
        }
    }
    if c.consumer_claim.is_empty() {
        return Err(ConfigError::at(
            "consumer_claim",
            "the claim name is empty",
            "use `sub` (the default) or the claim holding the consumer id",
        ));
    }
    if c.max_token_size.0 == 0 {
        return Err(ConfigError::at(
            "max_token_size",
            "the size must be positive",
            "the default is `8KiB`",
        ));
    }
    let jwks_err = |key: &str, message: &str, hint: &str| ConfigError {
        path: vec![Seg::Key("jwks".into()), Seg::Key(key.into())],
        message: message.into(),
        hint: hint.into(),
    };
    if c.jwks.min_ttl > c.jwks.max_ttl {
        return Err(jwks_err(
            "min_ttl",
            "`min_ttl` is longer than `max_ttl`",
            "the defaults are `5m` and `24h`",
        ));
    }
    if c.jwks.timeout.0.is_zero() {
        return Err(jwks_err(
            "timeout",
            "the timeout must be positive",
            "the default is `5s`",
        ));
    }
    if c.jwks.max_size.0 == 0 {
        return Err(jwks_err(
            "max_size",
            "the size must be positive",
            "the default is `1MiB`",
        ));
    }
    Ok(())
}

/// An issuer checked and its inline keys built.
struct Prepared {
    algorithms: Vec<Alg>,
    keys: Vec<Key>,
    /// The key set's URI: absolute with `jwks_url`, the path with `jwks_upstream`.
    jwks_url: Option<http::Uri>,
    /// The named upstream that serves the key set.
    jwks_upstream: Option<String>,
}

fn prepare_issuer(c: &IssuerConfig) -> Result<Prepared, ConfigError> {
    if c.issuer.is_empty() {
        return Err(ConfigError::at(
            "issuer",
            "the issuer is empty",
            "give the exact `iss` value of the tokens",
        ));
    }
    let mut algorithms: Vec<Alg> = Vec::with_capacity(c.algorithms.len());
    for a in &c.algorithms {
        if !algorithms.contains(a) {
            algorithms.push(*a);
        }
    }
    if algorithms.is_empty() {
        return Err(ConfigError::at(
            "algorithms",
            "at least one algorithm is needed",
            "list the algorithms this issuer signs with, e.g. `[RS256]`",
        ));
    }
    let hmac = algorithms.iter().any(|a| a.is_hmac());
    if hmac && algorithms.iter().any(|a| !a.is_hmac()) {
        return Err(ConfigError::at(
            "algorithms",
            "HMAC (HS*) and public-key algorithms cannot be mixed for one issuer",
            "use either HS* with `secret` keys or RS*/PS*/ES*/EdDSA with public keys",
        ));
    }
    if c.jwks_url.is_some() && c.jwks_upstream.is_some() {
        return Err(ConfigError::at(
            "jwks_upstream",
            "`jwks_url` and `jwks_upstream` are both set",
            "keep one: `jwks_url: https://...` or `jwks_upstream: NAME` with `jwks_path`",
        ));
    }
    if c.jwks_path.is_some() && c.jwks_upstream.is_none() {
        return Err(ConfigError::at(
            "jwks_path",
            "`jwks_path` goes with `jwks_upstream`",
            "put the path in `jwks_url`, or name the upstream in `jwks_upstream`",
        ));
    }
    let jwks_url = match (&c.jwks_url, &c.jwks_upstream) {
        (None, None) => None,
        (Some(_), _) | (_, Some(_)) if hmac => {
            return Err(ConfigError::at(
                if c.jwks_url.is_some() {
                    "jwks_url"
                } else {
                    "jwks_upstream"
                },
                "HMAC secrets are not fetched from a key set",
                "give the secret inline: `keys: [{secret: ${JWT_SECRET}}]`",
            ));
        }
        (Some(u), None) => Some(parse_url(u).map_err(|m| {
            ConfigError::at("jwks_url", m, "write an absolute http:// or https:// URL")
        })?),
        (_, Some(_)) => {
            let path = c.jwks_path.as_deref().unwrap_or("/.well-known/jwks.json");
            Some(crate::builtin::util::service_path(
                "jwks_path",
                path,
                "/.well-known/jwks.json",
            )?)
        }
    };
    if c.keys.is_empty() && jwks_url.is_none() {
        return Err(ConfigError::here(
            "the issuer has no keys",
            "add `jwks_url` (or `jwks_upstream`) or inline `keys`",
        ));
    }
    let mut keys: Vec<Key> = Vec::with_capacity(c.keys.len());
    for (k, kc) in c.keys.iter().enumerate() {
        let key = inline_key(kc, &algorithms).map_err(|e| e.in_list("keys", k))?;
        if let Some(kid) = &key.kid
            && keys.iter().any(|o| o.kid.as_ref() == Some(kid))
        {
            return Err(ConfigError::at(
                "kid",
                format!("kid `{kid}` is used twice"),
                "key ids must be unique within an issuer",
            )
            .in_list("keys", k));
        }
        keys.push(key);
    }
    Ok(Prepared {
        algorithms,
        keys,
        jwks_url,
        jwks_upstream: c.jwks_upstream.clone(),
    })
}

fn parse_url(u: &str) -> Result<http::Uri, String> {
    let uri: http::Uri = u.parse().map_err(|_| format!("`{u}` is not a URL"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err(format!("`{u}` is not an http:// or https:// URL")),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(format!("`{u}` has no host"));
    }
    Ok(uri)
}

fn inline_key(kc: &KeyConfig, algorithms: &[Alg]) -> Result<Key, ConfigError> {
    let given = [kc.pem.is_some(), kc.jwk.is_some(), kc.secret.is_some()];
    if given.iter().filter(|g| **g).count() != 1 {
        return Err(ConfigError::here(
            "a key needs exactly one of `pem`, `jwk` and `secret`",
            "write one key per list entry",
        ));
    }
    if let Some(pem) = &kc.pem {
        let material = keys::from_pem(pem)
            .map_err(|m| ConfigError::at("pem", m, "paste the issuer's public key in PEM form"))?;
        return keys::build(kc.kid.clone(), material, None, algorithms)
            .map_err(|m| ConfigError::at("pem", m, "check the issuer's `algorithms`"));
    }
    if let Some(jwk) = &kc.jwk {
        let hint = "give a public JWK: `kty` and `n`/`e`, `crv`/`x`/`y`, or `k` for HMAC";
        if jwk.contains_key("d") || jwk.contains_key("p") {
            return Err(ConfigError::at(
                "jwk",
                "this JWK holds a private key",
                "give only the public part (remove `d`, `p`, `q`, `dp`, `dq`, `qi`)",
            ));
        }
        let parsed = keys::from_jwk(jwk)
            .map_err(|m| ConfigError::at("jwk", m, hint))?
            .ok_or_else(|| {
                ConfigError::at(
                    "jwk",
                    "the JWK is not for signature verification (`use` / `key_ops`)",
                    hint,
                )
            })?;
        let kid = kc.kid.clone().or(parsed.kid);
        return keys::build(kid, parsed.material, parsed.pin, algorithms)
            .map_err(|m| ConfigError::at("jwk", m, "check the issuer's `algorithms`"));
    }
    let secret = kc.secret.as_deref().unwrap_or_default();
    if secret.contains("-----BEGIN") {
        // A public key used as an HMAC secret is the classic key-confusion setup.
        return Err(ConfigError::at(
            "secret",
            "the secret is a PEM key, not an HMAC secret",
            "for RS*/PS*/ES*/EdDSA put the key under `pem`; for HS* use a long random secret",
        ));
    }
    keys::build(
        kc.kid.clone(),
        keys::Material::Secret(secret.as_bytes().to_vec()),
        None,
        algorithms,
    )
    .map_err(|m| {
        ConfigError::at(
            "secret",
            m,
            "use a long random secret from a variable: `secret: ${JWT_SECRET}`",
        )
    })
}

/// Long-lived state: one key set source per issuer with a `jwks_url`.
struct JwksState {
    sources: Vec<Option<Arc<JwksSource>>>,
}

struct Issuer {
    iss: String,
    audiences: Vec<String>,
    algorithms: Vec<Alg>,
    keys: Vec<Key>,
    jwks: Option<Arc<JwksSource>>,
}

struct JwtPlugin {
    issuers: Vec<Issuer>,
    header: http::HeaderName,
    scheme: String,
    cookie: Option<String>,
    query: Option<String>,
    leeway: u64,
    require_exp: bool,
    required: Vec<String>,
    consumer_claim: String,
    max_token: usize,
    directory: Arc<Consumers>,
    challenge: HeaderValue,
    invalid: HeaderValue,
    /// Verified tokens by SHA-256 of the token (see `verified_cache_ttl`).
    verified: Option<moka::sync::Cache<[u8; 32], Arc<Verified>>>,
    /// Remove the token before the request goes upstream.
    hide: bool,
}

/// Outcome of a signature check against the keys at hand.
#[derive(Debug, PartialEq, Eq)]
enum Found {
    Verified,
    Rejected,
    NoKey,
}

impl JwtPlugin {
    fn reject(&self, why: &str) -> GatewayError {
        GatewayError::new(
            ErrorKind::Unauthorized(Some(self.invalid.clone())),
            format!("jwt: {why}"),
        )
    }

    fn unavailable(&self, issuer: &Issuer) -> GatewayError {
        GatewayError::new(
            ErrorKind::AuthUnavailable,
            format!("jwt: no keys could be obtained for issuer `{}`", issuer.iss),
        )
    }

    /// The presented token: `None` when there is no credential for this plugin.
    fn presented<'r>(
        &self,
        req: &'r http::request::Parts,
    ) -> Option<Result<Cow<'r, str>, &'static str>> {
        if let Some(v) = req.headers.get(&self.header) {
            let b = v.as_bytes();
            let rest = if self.scheme.is_empty() {
                Some(b)
            } else {
                let n = self.scheme.len();
                (b.len() >= n
                    && b[..n].eq_ignore_ascii_case(self.scheme.as_bytes())
                    && b.get(n).is_none_or(|c| *c == b' ' || *c == b'\t'))
                .then(|| &b[n..])
            };
            // A header with another scheme (`Basic ...`) is another plugin's credential.
            if let Some(rest) = rest {
                return Some(match std::str::from_utf8(rest) {
                    Ok(s) if !s.trim().is_empty() => Ok(Cow::Borrowed(s.trim())),
                    _ => Err("malformed token"),
                });
            }
        }
        if let Some(name) = &self.cookie {
            for v in req.headers.get_all(http::header::COOKIE) {
                let Ok(v) = v.to_str() else { continue };
                for pair in v.split(';') {
                    if let Some((k, val)) = pair.trim().split_once('=')
                        && k.trim() == name
                    {
                        return Some(Ok(Cow::Borrowed(val.trim().trim_matches('"'))));
                    }
                }
            }
        }
        if let Some(q) = &self.query
            && let Some(v) = query_param(req, q)
        {
            return Some(Ok(v));
        }
        None
    }

    /// The keys a token may be verified with, in order: those whose `kid` is the token's, or
    /// (with `fallback`, or when the token names no kid) keys without an id; at most
    /// [`MAX_CANDIDATE_KEYS`].
    fn check_signature(
        &self,
        issuer: &Issuer,
        token: &Token,
        alg: Alg,
        fetched: Option<&KeySet>,
        fallback: bool,
    ) -> Found {
        let fitting = || {
            issuer
                .keys
                .iter()
                .chain(fetched.into_iter().flat_map(|s| s.keys.iter()))
                .filter(move |k| k.fits(alg))
        };
        let mut tried = 0usize;
        let mut verify = |k: &Key| {
            tried += 1;
            k.verify(alg, token.signing_input.as_bytes(), &token.signature)
        };
        let ok = match &token.kid {
            Some(kid) => {
                let mut exact = fitting()
                    .filter(|k| k.kid.as_deref() == Some(kid.as_str()))
                    .take(MAX_CANDIDATE_KEYS)
                    .peekable();
                if exact.peek().is_some() {
                    exact.any(&mut verify)
                } else if fallback {
                    fitting()
                        .filter(|k| k.kid.is_none())
                        .take(MAX_CANDIDATE_KEYS)
                        .any(&mut verify)
                } else {
                    false
                }
            }
            None => fitting().take(MAX_CANDIDATE_KEYS).any(&mut verify),
        };
        match (ok, tried) {
            (true, _) => Found::Verified,
            (false, 0) => Found::NoKey,
            (false, _) => Found::Rejected,
        }
    }

    /// Sets the consumer and identity of a verified token.
    fn accept(
        &self,
        ctx: &mut RequestContext,
        consumer: Arc<Consumer>,
        claims: Map<String, Value>,
        digest: Option<[u8; 32]>,
    ) {
        let scopes = verify::scopes(&claims);
        // The same numeric reading as the claim checks (integers and fractions).
        let time = |k: &str| claims.get(k).and_then(Value::as_f64);
        let (exp, nbf) = (time("exp"), time("nbf"));
        let identity = Arc::new(Identity {
            scheme: "jwt",
            claims: Some(claims),
            scopes,
        });
        if let (Some(cache), Some(d)) = (&self.verified, digest) {
            cache.insert(
                d,
                Arc::new(Verified {
                    consumer_id: consumer.id.clone(),
                    identity: identity.clone(),
                    exp,
                    nbf,
                }),
            );
        }
        ctx.consumer = Some(consumer);
        ctx.identity = Some(identity);
    }

    /// With `hide_credentials`: removes the token's header (when it carries our scheme) and
    /// query parameter.
    fn hide(&self, req: &mut http::request::Parts) {
        if self.hide {
            self.remove_token(req);
        }
    }

    /// Removes the token's header (when it carries our scheme) and query parameter.
    fn remove_token(&self, req: &mut http::request::Parts) {
        let ours = req.headers.get(&self.header).is_some_and(|v| {
            let b = v.as_bytes();
            let n = self.scheme.len();
            self.scheme.is_empty()
                || (b.len() >= n && b[..n].eq_ignore_ascii_case(self.scheme.as_bytes()))
        });
        if ours {
            req.headers.remove(&self.header);
        }
        if let Some(q) = &self.query {
            super::util::remove_query_param(req, q);
        }
    }

    /// A token verified before: still within `exp`/`nbf` (with leeway) and its consumer still
    /// declared.
    fn remembered(&self, digest: &[u8; 32], ctx: &mut RequestContext) -> bool {
        let Some(hit) = self.verified.as_ref().and_then(|c| c.get(digest)) else {
            return false;
        };
        // Exactly the rules of `verify::check_claims`.
        let (now, leeway) = (verify::now() as f64, self.leeway as f64);
        if hit.exp.is_some_and(|e| now >= e + leeway) || hit.nbf.is_some_and(|n| now + leeway < n) {
            return false;
        }
        let Some(consumer) = self.directory.by_id(&hit.consumer_id) else {
            return false;
        };
        ctx.consumer = Some(consumer);
        ctx.identity = Some(hit.identity.clone());
        true
    }
}

impl Plugin for JwtPlugin {
    fn on_request<'a>(
        &'a self,
        req: &'a mut http::request::Parts,
        ctx: &'a mut RequestContext,
    ) -> Result<Flow<'a>, GatewayError> {
        let raw = match self.presented(req) {
            None => return Ok(Flow::Continue),
            Some(Err(why)) => return Err(self.reject(why)),
            Some(Ok(t)) => t,
        };
        if raw.len() > self.max_token {
            return Err(self.reject("token too large"));
        }
        let digest = self
            .verified
            .is_some()
            .then(|| crate::consumers::key_digest(raw.as_bytes()));
        if let Some(d) = &digest
            && self.remembered(d, ctx)
        {
            self.hide(req);
            return Ok(Flow::Continue);
        }
        let token = verify::parse(&raw).map_err(|why| self.reject(why))?;
        drop(raw);

        // The unverified `iss` only picks the settings the token is then verified with.
        let issuer = if let [only] = self.issuers.as_slice() {
            only
        } else {
            let iss = token.claims.get("iss").and_then(Value::as_str);
            self.issuers
                .iter()
                .find(|i| Some(i.iss.as_str()) == iss)
                .ok_or_else(|| self.reject("unknown issuer"))?
        };
        let alg = Alg::from_name(&token.alg)
            .filter(|a| issuer.algorithms.contains(a))
            .ok_or_else(|| self.reject("algorithm not allowed for the issuer"))?;
        let rules = verify::Rules {
            issuer: &issuer.iss,
            audiences: &issuer.audiences,
            leeway: self.leeway,
            require_exp: self.require_exp,
            required: &self.required,
        };
        verify::check_claims(&token.claims, &rules, verify::now())
            .map_err(|why| self.reject(why))?;
        let consumer = verify::claim_id(&token.claims, &self.consumer_claim)
            .and_then(|id| self.directory.by_id(&id))
            .ok_or_else(|| self.reject("the consumer claim names no consumer"))?;

        let Some(source) = &issuer.jwks else {
            return match self.check_signature(issuer, &token, alg, None, true) {
                Found::Verified => {
                    self.accept(ctx, consumer, token.claims, digest);
                    self.hide(req);
                    Ok(Flow::Continue)
                }
                _ => Err(self.reject("bad signature or no matching key")),
            };
        };
        let snap = source.snapshot();
        match &snap.keys {
            // First use: fetch the set (or join the running fetch).
            None if snap.may_fetch => {}
            // Nothing cached and a fetch failed recently: inline keys only.
            None => {
                return match self.check_signature(issuer, &token, alg, None, true) {
                    Found::Verified => {
                        self.accept(ctx, consumer, token.claims, digest);
                        self.hide(req);
                        Ok(Flow::Continue)
                    }
                    Found::Rejected => Err(self.reject("bad signature")),
                    Found::NoKey => Err(self.unavailable(issuer)),
                };
            }
            Some(set) => match self.check_signature(issuer, &token, alg, Some(set), false) {
                Found::Verified => {
                    self.accept(ctx, consumer, token.claims, digest);
                    self.hide(req);
                    return Ok(Flow::Continue);
                }
                Found::Rejected => return Err(self.reject("bad signature")),
                // Unknown kid: the keys may have been rotated; fetch again.
                Found::NoKey if snap.may_fetch => {}
                Found::NoKey => {
                    return match self.check_signature(issuer, &token, alg, Some(set), true) {
                        Found::Verified => {
                            self.accept(ctx, consumer, token.claims, digest);
                            self.hide(req);
                            Ok(Flow::Continue)
                        }
                        _ => Err(self.reject("unknown key id or bad signature")),
                    };
                }
            },
        }
        let source = source.clone();
        let seen = snap.completed;
        Ok(Flow::Wait(Box::pin(async move {
            let set = source.refresh(seen).await;
            match self.check_signature(issuer, &token, alg, set.as_deref(), true) {
                Found::Verified => {
                    self.accept(ctx, consumer, token.claims, digest);
                    self.hide(req);
                    Ok(None)
                }
                Found::NoKey if set.is_none() => Err(self.unavailable(issuer)),
                Found::Rejected | Found::NoKey => {
                    Err(self.reject("unknown key id or bad signature"))
                }
            }
        })))
    }

    fn challenge(&self) -> Option<HeaderValue> {
        Some(self.challenge.clone())
    }

    fn discard_credential(&self, req: &mut http::request::Parts) {
        self.remove_token(req);
    }
}
