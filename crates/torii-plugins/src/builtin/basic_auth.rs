//! `basic_auth`: RFC 7617 credentials checked against argon2 password hashes.
//!
//! argon2 is slow on purpose (tens of milliseconds), so verification never runs on the async
//! workers: it goes to the blocking pool, at most `max_concurrent_verifications` at a time
//! (waiting at most `verification_queue_timeout`, then 503); concurrent requests with the same
//! credential wait for one verification. Successful verifications are
//! cached for `cache_ttl` under the SHA-256 of `username:password`, and a hit is only used
//! while the consumer still has the same password hash, so a password change takes effect at
//! the next reload. Failures are never cached, and an unknown username is refused at once
//! (without argon2 work, so a flood of made-up usernames costs nothing).

use super::util::quoted;
use crate::flights::Flights;
use crate::{BuildCtx, ConfigError, Consumers, Phase, PluginFactory};
use argon2::{Argon2, PasswordHash, PasswordHasher, PasswordVerifier};
use base64::Engine as _;
use http::HeaderValue;
use schemars::JsonSchema;
use serde::Deserialize;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use torii_config::values::Duration as ConfigDuration;
use torii_core::{Consumer, ErrorKind, Flow, GatewayError, Identity, Plugin, RequestContext};

/// Longest `Authorization: Basic` value accepted.
const MAX_CREDENTIAL_LEN: usize = 4096;

/// The argon2id hash of a password in PHC form (what `torii hash-password` prints).
pub fn hash_password(password: &str) -> Result<String, String> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| format!("hashing failed: {e}"))
}

/// Settings of `basic_auth`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BasicAuthConfig {
    /// Realm named in the `WWW-Authenticate: Basic` challenge.
    #[serde(default = "realm")]
    pub realm: String,
    /// Remove the `Authorization` header before the request goes upstream.
    #[serde(default = "yes")]
    pub hide_credentials: bool,
    /// How long a successful verification is remembered.
    #[serde(default = "ttl")]
    pub cache_ttl: ConfigDuration,
    /// Most remembered verifications.
    #[serde(default = "cache_size")]
    pub cache_size: u64,
    /// Password verifications running at once (each takes a blocking thread).
    #[serde(default = "concurrency")]
    pub max_concurrent_verifications: u32,
    /// How long a request waits for a verification slot before it gets 503.
    #[serde(default = "queue_timeout")]
    pub verification_queue_timeout: ConfigDuration,
}

fn realm() -> String {
    "torii".into()
}
fn yes() -> bool {
    true
}
fn ttl() -> ConfigDuration {
    ConfigDuration::secs(60)
}
fn cache_size() -> u64 {
    10_000
}
fn concurrency() -> u32 {
    4
}
fn queue_timeout() -> ConfigDuration {
    ConfigDuration::secs(5)
}

/// Verifications remembered across requests (and reloads with the same settings).
struct State {
    cache: moka::sync::Cache<[u8; 32], Arc<str>>,
    slots: Arc<tokio::sync::Semaphore>,
    /// Verifications in progress, by digest of credential and hash: concurrent requests with
    /// the same credential wait for one argon2 run instead of each starting their own.
    inflight: Flights<Option<bool>>,
    /// argon2 runs so far (tests).
    verifications: AtomicU64,
}

/// The plugin type.
pub struct BasicAuth;

impl PluginFactory for BasicAuth {
    const NAME: &'static str = "basic_auth";
    const PHASE: Phase = Phase::Authentication;
    const ORDER: u16 = 20;
    type Config = BasicAuthConfig;

    fn build(config: BasicAuthConfig, ctx: &BuildCtx<'_>) -> Result<Arc<dyn Plugin>, ConfigError> {
        if config.max_concurrent_verifications == 0 {
            return Err(ConfigError::at(
                "max_concurrent_verifications",
                "must be at least 1",
                "the default is 4",
            ));
        }
        let challenge = HeaderValue::from_str(&format!(
            "Basic realm={}, charset=\"UTF-8\"",
            quoted(&config.realm)
        ))
        .map_err(|_| ConfigError::at("realm", "not a valid header value", "use printable ASCII"))?;
        let state = ctx.state(|| State {
            cache: moka::sync::Cache::builder()
                .max_capacity(config.cache_size)
                .time_to_live(config.cache_ttl.0)
                .build(),
            slots: Arc::new(tokio::sync::Semaphore::new(
                config.max_concurrent_verifications as usize,
            )),
            inflight: Flights::default(),
            verifications: AtomicU64::new(0),
        });
        Ok(Arc::new(BasicAuthPlugin {
            directory: ctx.directory.clone(),
            state,
            hide: config.hide_credentials,
            queue_timeout: config.verification_queue_timeout.0,
            challenge,
            identity: Arc::new(Identity {
                scheme: "basic_auth",
                ..Default::default()
            }),
        }))
    }
}

struct BasicAuthPlugin {
    directory: Arc<Consumers>,
    state: Arc<State>,
    hide: bool,
    queue_timeout: Duration,
    challenge: HeaderValue,
    identity: Arc<Identity>,
}

/// SHA-256 of `username:password`, then `extra` after a NUL (the hash a verification is
/// against), without building the material in memory.
fn credential_digest(user: &str, pass: &str, extra: &[u8]) -> [u8; 32] {
    let mut d = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    d.update(user.as_bytes());
    d.update(b":");
    d.update(pass.as_bytes());
    if !extra.is_empty() {
        d.update(b"\0");
        d.update(extra);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(d.finish().as_ref());
    out
}

/// `(username, password)` from an `Authorization: Basic` value; `Ok(None)` for other schemes.
fn parse(value: &HeaderValue) -> Result<Option<(String, String)>, &'static str> {
    let v = value.as_bytes();
    let Some(scheme_end) = v.iter().position(|b| *b == b' ' || *b == b'\t') else {
        return if v.eq_ignore_ascii_case(b"basic") {
            Err("empty credentials")
        } else {
            Ok(None)
        };
    };
    if !v[..scheme_end].eq_ignore_ascii_case(b"basic") {
        return Ok(None);
    }
    let token = v[scheme_end..].trim_ascii();
    if token.len() > MAX_CREDENTIAL_LEN {
        return Err("credentials too long");
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(token)
        .map_err(|_| "credentials are not base64")?;
    let text = String::from_utf8(decoded).map_err(|_| "credentials are not UTF-8")?;
    let (user, pass) = text.split_once(':').ok_or("credentials lack `:`")?;
    Ok(Some((user.to_string(), pass.to_string())))
}

impl BasicAuthPlugin {
    /// One argon2 verification on the blocking pool, within the concurrency limit. `None`
    /// when no slot freed up in time (or the task failed).
    async fn verify(&self, pass: String, phc: Arc<str>) -> Option<bool> {
        let slot =
            tokio::time::timeout(self.queue_timeout, self.state.slots.clone().acquire_owned())
                .await
                .ok()?
                .ok()?;
        self.state.verifications.fetch_add(1, Ordering::Relaxed);
        tokio::task::spawn_blocking(move || {
            let _slot = slot;
            PasswordHash::new(&phc)
                .map(|h| {
                    Argon2::default()
                        .verify_password(pass.as_bytes(), &h)
                        .is_ok()
                })
                .unwrap_or(false)
        })
        .await
        .ok()
    }

    fn deny(&self, why: &str) -> GatewayError {
        GatewayError::new(ErrorKind::Unauthorized(Some(self.challenge.clone())), why)
    }

    fn accept(
        &self,
        req: &mut http::request::Parts,
        ctx: &mut RequestContext,
        c: &Arc<Consumer>,
        user: &str,
    ) {
        ctx.consumer = Some(c.clone());
        ctx.credential = Some(torii_core::Credential::Name(Arc::from(user)));
        ctx.identity = Some(self.identity.clone());
        if self.hide {
            req.headers.remove(http::header::AUTHORIZATION);
        }
    }
}

impl Plugin for BasicAuthPlugin {
    fn on_request<'a>(
        &'a self,
        req: &'a mut http::request::Parts,
        ctx: &'a mut RequestContext,
    ) -> Result<Flow<'a>, GatewayError> {
        let Some(value) = req.headers.get(http::header::AUTHORIZATION) else {
            return Ok(Flow::Continue);
        };
        let (user, pass) = match parse(value) {
            Ok(Some(c)) => c,
            Ok(None) => return Ok(Flow::Continue),
            Err(why) => return Err(self.deny(why)),
        };
        let Some((consumer, phc)) = self.directory.by_username(&user) else {
            return Err(self.deny("unknown username"));
        };
        let key = credential_digest(&user, &pass, &[]);
        // The cache is keyed by a digest of the credential; the entry still has to name the
        // consumer's current hash (a password change must not keep the old one working).
        if let Some(cached) = self.state.cache.get(&key)
            && Arc::ptr_eq(&cached, &phc) | (*cached == *phc)
        {
            self.accept(req, ctx, &consumer, &user);
            return Ok(Flow::Continue);
        }
        let flight = credential_digest(&user, &pass, phc.as_bytes());
        Ok(Flow::Wait(Box::pin(async move {
            // `None`: no verification slot in time.
            let outcome = self
                .state
                .inflight
                .run(flight, || self.verify(pass, phc.clone()))
                .await;
            match outcome {
                Some(true) => {}
                Some(false) => return Err(self.deny("wrong password")),
                None => {
                    return Err(GatewayError::new(
                        ErrorKind::AuthUnavailable,
                        "password verification queue full",
                    ));
                }
            }
            self.state.cache.insert(key, phc);
            self.accept(req, ctx, &consumer, &user);
            Ok(None)
        })))
    }

    fn challenge(&self) -> Option<HeaderValue> {
        Some(self.challenge.clone())
    }

    fn discard_credential(&self, req: &mut http::request::Parts) {
        let basic = req
            .headers
            .get(http::header::AUTHORIZATION)
            .is_some_and(|v| !matches!(parse(v), Ok(None)));
        if basic {
            req.headers.remove(http::header::AUTHORIZATION);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn parses_basic_credentials() {
        let v = |s: &str| HeaderValue::from_str(s).unwrap();
        assert_eq!(
            parse(&v("Basic YWxpY2U6czNjcjN0OndpdGg6Y29sb25z")).unwrap(),
            Some(("alice".into(), "s3cr3t:with:colons".into()))
        );
        assert_eq!(
            parse(&v("bAsIc   YTpi")).unwrap(),
            Some(("a".into(), "b".into()))
        );
        assert_eq!(parse(&v("Bearer abc")).unwrap(), None);
        assert!(parse(&v("Basic !!!")).is_err());
        assert!(parse(&v("Basic YWxpY2U=")).is_err(), "no colon");
        assert!(parse(&v("Basic")).is_err());
    }

    fn ctx() -> RequestContext {
        RequestContext::new(
            torii_core::RequestId(HeaderValue::from_static("t")),
            torii_core::ClientAddr("127.0.0.1".parse().unwrap()),
            "127.0.0.1:1".parse().unwrap(),
            "p".into(),
            std::time::Instant::now(),
        )
    }

    /// A burst of requests with the same credential on a cold cache costs one argon2 run, not
    /// one per request; so does a burst with the same wrong password.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_identical_credentials_share_one_verification() {
        let catalog = crate::Catalog::builtin().unwrap();
        let hash = hash_password("pw").unwrap();
        let yaml = format!(
            "listeners:\n  - name: p\n    bind: 127.0.0.1:0\nconsumers:\n  - name: a\n    basic_auth: [{{username: a, password_hash: '{hash}'}}]\nroutes:\n  - name: r\n    match: {{path: /}}\n    direct_response: {{}}\n    plugins:\n      basic_auth: {{}}\n"
        );
        let loaded = torii_config::load_str("t.yaml", &yaml, &|_: &str| None, &catalog).unwrap();
        let state = catalog.state().get_or_insert::<State>(
            crate::StateKey::new("basic_auth", "route:r", &serde_json::json!({})),
            || panic!("the plugin's state is registered under its scope and settings"),
        );
        let burst = |password: &'static str| {
            let mut set = tokio::task::JoinSet::new();
            for _ in 0..20 {
                let chain = loaded.plugins.chains[0].clone();
                set.spawn(async move {
                    let value = format!(
                        "Basic {}",
                        base64::engine::general_purpose::STANDARD.encode(format!("a:{password}"))
                    );
                    let (mut parts, ()) = http::Request::get("/")
                        .header("authorization", value)
                        .body(())
                        .unwrap()
                        .into_parts();
                    let mut cx = ctx();
                    let mut ran = crate::Progress::default();
                    let r = chain.on_request(&mut parts, &mut cx, &mut ran).await;
                    r.is_ok() && cx.consumer.is_some()
                });
            }
            set
        };
        let results = burst("pw").join_all().await;
        assert!(results.iter().all(|ok| *ok), "{results:?}");
        assert_eq!(state.verifications.load(Ordering::Relaxed), 1);
        let results = burst("wrong").join_all().await;
        assert!(results.iter().all(|ok| !*ok));
        assert_eq!(state.verifications.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn hashes_verify() {
        let h = hash_password("pw").unwrap();
        assert!(h.starts_with("$argon2id$"));
        let parsed = PasswordHash::new(&h).unwrap();
        assert!(Argon2::default().verify_password(b"pw", &parsed).is_ok());
        assert!(Argon2::default().verify_password(b"px", &parsed).is_err());
    }
}
