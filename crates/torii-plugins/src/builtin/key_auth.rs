//! `key_auth`: API keys from a header or a query parameter, looked up by SHA-256 digest in the
//! consumer directory (a hash-map read, then a constant-time comparison of the digests).

use super::util::{append_query_param, query_param, quoted, remove_query_param};
use crate::{BuildCtx, ConfigError, Consumers, Phase, PluginFactory};
use http::HeaderValue;
use schemars::JsonSchema;
use serde::Deserialize;
use std::sync::Arc;
use torii_config::values::HeaderName;
use torii_core::{ErrorKind, Flow, GatewayError, Identity, Plugin, RequestContext};

/// Longest key accepted; longer values are refused without hashing.
pub use crate::consumers::MAX_KEY_LEN;

/// Settings of `key_auth`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyAuthConfig {
    /// Headers the key is read from, first present wins.
    #[serde(default = "default_headers")]
    pub header_names: Vec<HeaderName>,
    /// Query parameters the key is read from when no header has it. Empty by default: keys in
    /// URLs end up in browser histories and third-party logs (Torii's own access log redacts
    /// them).
    #[serde(default)]
    pub query_names: Vec<String>,
    /// Remove the key from the request before it goes upstream.
    #[serde(default = "yes")]
    pub hide_credentials: bool,
    /// Realm named in the `WWW-Authenticate` challenge.
    #[serde(default = "realm")]
    pub realm: String,
}

fn default_headers() -> Vec<HeaderName> {
    vec![HeaderName(http::HeaderName::from_static("x-api-key"))]
}
fn yes() -> bool {
    true
}
fn realm() -> String {
    "torii".into()
}

/// The plugin type.
pub struct KeyAuth;

impl PluginFactory for KeyAuth {
    const NAME: &'static str = "key_auth";
    const PHASE: Phase = Phase::Authentication;
    const ORDER: u16 = 10;
    type Config = KeyAuthConfig;

    fn build(config: KeyAuthConfig, ctx: &BuildCtx<'_>) -> Result<Arc<dyn Plugin>, ConfigError> {
        if config.header_names.is_empty() && config.query_names.is_empty() {
            return Err(ConfigError::here(
                "key_auth needs at least one header or query parameter to read the key from",
                "set `header_names: [x-api-key]`",
            ));
        }
        for q in &config.query_names {
            ctx.redact_query_param(q);
        }
        let challenge = HeaderValue::from_str(&format!("ApiKey realm={}", quoted(&config.realm)))
            .map_err(|_| {
            ConfigError::at("realm", "not a valid header value", "use printable ASCII")
        })?;
        Ok(Arc::new(KeyAuthPlugin {
            headers: config.header_names.into_iter().map(|h| h.0).collect(),
            query: config.query_names,
            hide: config.hide_credentials,
            directory: ctx.directory.clone(),
            challenge,
            identity: Arc::new(Identity {
                scheme: "key_auth",
                ..Default::default()
            }),
        }))
    }
}

struct KeyAuthPlugin {
    headers: Vec<http::HeaderName>,
    query: Vec<String>,
    hide: bool,
    directory: Arc<Consumers>,
    challenge: HeaderValue,
    identity: Arc<Identity>,
}

impl Plugin for KeyAuthPlugin {
    fn on_request<'a>(
        &'a self,
        req: &'a mut http::request::Parts,
        ctx: &'a mut RequestContext,
    ) -> Result<Flow<'a>, GatewayError> {
        let mut found = None;
        let mut from = None;
        for (i, h) in self.headers.iter().enumerate() {
            if let Some(v) = req.headers.get(h) {
                found = Some(crate::consumers::key_digest_checked(v.as_bytes()));
                from = Some(Location::Header(i));
                break;
            }
        }
        if found.is_none() {
            for (i, q) in self.query.iter().enumerate() {
                if let Some(v) = query_param(req, q) {
                    found = Some(crate::consumers::key_digest_checked(v.as_bytes()));
                    from = Some(Location::Query(i, v.into_owned()));
                    break;
                }
            }
        }
        let Some(digest) = found else {
            return Ok(Flow::Continue);
        };
        let (consumer, digest) = digest
            .and_then(|d| Some((self.directory.by_key_digest(&d)?, d)))
            .ok_or_else(|| {
                GatewayError::new(
                    ErrorKind::Unauthorized(Some(self.challenge.clone())),
                    "invalid API key",
                )
            })?;
        ctx.consumer = Some(consumer);
        ctx.credential = Some(torii_core::Credential::Digest(digest));
        ctx.identity = Some(self.identity.clone());
        // Every configured key location goes: a key beside the verified one (another header,
        // a query parameter, a second value of the same field) was never checked and must not
        // reach the upstream. Without `hide_credentials` the verified key alone is put back.
        let kept = if self.hide { None } else { from };
        // The common case: the key in one header, once, and nowhere else: it stays as it is.
        if let Some(Location::Header(i)) = &kept
            && self.only_at(req, *i)
        {
            return Ok(Flow::Continue);
        }
        // The verified value (the field's first, as read above), taken before the fields go.
        let header = match &kept {
            Some(Location::Header(i)) => self
                .headers
                .get(*i)
                .and_then(|h| Some((h.clone(), req.headers.get(h)?.clone()))),
            _ => None,
        };
        self.discard_credential(req);
        if let Some((h, v)) = header {
            req.headers.insert(h, v);
        }
        match kept {
            Some(Location::Header(_)) => {}
            Some(Location::Query(i, v)) => {
                if let Some(q) = self.query.get(i) {
                    append_query_param(req, q, &v);
                }
            }
            None => {}
        }
        Ok(Flow::Continue)
    }

    fn challenge(&self) -> Option<HeaderValue> {
        Some(self.challenge.clone())
    }

    fn discard_credential(&self, req: &mut http::request::Parts) {
        for h in &self.headers {
            req.headers.remove(h);
        }
        for q in &self.query {
            if query_param(req, q).is_some() {
                remove_query_param(req, q);
            }
        }
    }
}

impl KeyAuthPlugin {
    /// Whether the request carries a key at the header location `i` only: one value, no
    /// other configured header or query parameter.
    fn only_at(&self, req: &http::request::Parts, i: usize) -> bool {
        self.headers.iter().enumerate().all(|(j, h)| {
            let mut values = req.headers.get_all(h).iter();
            if j == i {
                values.next().is_some() && values.next().is_none()
            } else {
                values.next().is_none()
            }
        }) && self.query.iter().all(|q| query_param(req, q).is_none())
    }
}

/// Where the verified key was found: a header or a query parameter (index into the plugin's
/// lists, and the value).
enum Location {
    /// The index of the header (the field's first value was the key).
    Header(usize),
    Query(usize, String),
}
