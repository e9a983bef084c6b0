//! `basic_auth`: RFC 7617 credentials checked against argon2 password hashes.
//!
//! argon2 is slow on purpose (tens of milliseconds), so verification never runs on the async
//! workers: it goes to the blocking pool, at most `max_concurrent_verifications` at a time
//! (waiting at most `verification_queue_timeout`, then 503). Successful verifications are
//! cached for `cache_ttl` under the SHA-256 of `username:password`, and a hit is only used
//! while the consumer still has the same password hash, so a password change takes effect at
//! the next reload. Failures are never cached, and an unknown username is refused at once
//! (without argon2 work, so a flood of made-up usernames costs nothing).

use super::util::quoted;
use crate::{BuildCtx, ConfigError, Directory, Phase, PluginFactory};
use argon2::{Argon2, PasswordHash, PasswordHasher, PasswordVerifier};
use base64::Engine as _;
use http::HeaderValue;
use schemars::JsonSchema;
use serde::Deserialize;
use std::sync::Arc;
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
    directory: Arc<Directory>,
    state: Arc<State>,
    hide: bool,
    queue_timeout: Duration,
    challenge: HeaderValue,
    identity: Arc<Identity>,
}

/// `(username, password)` from an `Authorization: Basic` value; `Ok(None)` for other schemes.
fn parse(value: &HeaderValue) -> Result<Option<(String, String)>, &'static str> {
    let v = value.as_bytes();
    let Some(scheme_end) = v.iter().position(|b| *b == b' ') else {
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
    fn deny(&self, why: &str) -> GatewayError {
        GatewayError::new(ErrorKind::Unauthorized(Some(self.challenge.clone())), why)
    }

    fn accept(&self, req: &mut http::request::Parts, ctx: &mut RequestContext, c: &Arc<Consumer>) {
        ctx.consumer = Some(c.clone());
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
        let mut material = Vec::with_capacity(user.len() + pass.len() + 1);
        material.extend_from_slice(user.as_bytes());
        material.push(b':');
        material.extend_from_slice(pass.as_bytes());
        let key = crate::consumers::key_digest(&material);
        // The cache is keyed by a digest of the credential; the entry still has to name the
        // consumer's current hash (a password change must not keep the old one working).
        if let Some(cached) = self.state.cache.get(&key)
            && Arc::ptr_eq(&cached, phc) | (*cached == **phc)
        {
            self.accept(req, ctx, consumer);
            return Ok(Flow::Continue);
        }
        let consumer = consumer.clone();
        let phc = phc.clone();
        Ok(Flow::Wait(Box::pin(async move {
            let slot =
                tokio::time::timeout(self.queue_timeout, self.state.slots.clone().acquire_owned())
                    .await
                    .map_err(|_| {
                        GatewayError::new(
                            ErrorKind::AuthUnavailable,
                            "password verification queue full",
                        )
                    })?
                    .map_err(|_| {
                        GatewayError::new(ErrorKind::Internal, "verification slots closed")
                    })?;
            let hash = phc.clone();
            let ok = tokio::task::spawn_blocking(move || {
                let _slot = slot;
                PasswordHash::new(&hash)
                    .map(|h| {
                        Argon2::default()
                            .verify_password(pass.as_bytes(), &h)
                            .is_ok()
                    })
                    .unwrap_or(false)
            })
            .await
            .map_err(|_| GatewayError::new(ErrorKind::Internal, "verification task failed"))?;
            if !ok {
                return Err(self.deny("wrong password"));
            }
            self.state.cache.insert(key, phc);
            self.accept(req, ctx, &consumer);
            Ok(None)
        })))
    }

    fn challenge(&self) -> Option<HeaderValue> {
        Some(self.challenge.clone())
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

    #[test]
    fn hashes_verify() {
        let h = hash_password("pw").unwrap();
        assert!(h.starts_with("$argon2id$"));
        let parsed = PasswordHash::new(&h).unwrap();
        assert!(Argon2::default().verify_password(b"pw", &parsed).is_ok());
        assert!(Argon2::default().verify_password(b"px", &parsed).is_err());
    }
}
