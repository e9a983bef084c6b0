//! `mtls_auth`: the consumer is the owner of the client certificate. The listener's
//! `tls.client_auth` asks for and verifies certificates against its CA during the handshake;
//! this plugin maps a verified certificate's common name or subject alternative names to a
//! consumer's `certificate_names`. No certificate: no credential (the chain decides between
//! the anonymous consumer and 401). A certificate that names no consumer: 401.

use super::util::quoted;
use crate::{BuildCtx, ConfigError, Consumers, Phase, PluginFactory};
use http::HeaderValue;
use schemars::JsonSchema;
use serde::Deserialize;
use std::sync::Arc;
use torii_core::{ErrorKind, Flow, GatewayError, Identity, Plugin, RequestContext};

/// Which certificate names identify the consumer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum MatchOn {
    /// The subject alternative names first, then the common name, then the whole subject
    /// (RFC 4514 form, e.g. `CN=alice,O=Example`).
    #[default]
    Any,
    /// Only the common name.
    CommonName,
    /// Only the subject alternative names (DNS, URI, e-mail, IP).
    San,
    /// Only the whole subject (RFC 4514 form).
    Subject,
}

/// Settings of `mtls_auth`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MtlsAuthConfig {
    /// Which certificate names are matched against consumers' `certificate_names`.
    #[serde(default)]
    pub match_on: MatchOn,
    /// Realm named in the `WWW-Authenticate` challenge.
    #[serde(default = "realm")]
    pub realm: String,
}

fn realm() -> String {
    "torii".into()
}

/// The plugin type.
pub struct MtlsAuth;

impl PluginFactory for MtlsAuth {
    const NAME: &'static str = "mtls_auth";
    const PHASE: Phase = Phase::Authentication;
    const ORDER: u16 = 5;
    type Config = MtlsAuthConfig;

    fn build(c: MtlsAuthConfig, ctx: &BuildCtx<'_>) -> Result<Arc<dyn Plugin>, ConfigError> {
        let challenge =
            HeaderValue::from_str(&format!("ClientCertificate realm={}", quoted(&c.realm)))
                .map_err(|_| {
                    ConfigError::at("realm", "not a valid header value", "use printable ASCII")
                })?;
        Ok(Arc::new(Mtls {
            match_on: c.match_on,
            directory: ctx.directory.clone(),
            challenge,
            identity: Arc::new(Identity {
                scheme: "mtls_auth",
                ..Default::default()
            }),
        }))
    }
}

struct Mtls {
    match_on: MatchOn,
    directory: Arc<Consumers>,
    challenge: HeaderValue,
    identity: Arc<Identity>,
}

impl Plugin for Mtls {
    fn on_request<'a>(
        &'a self,
        _: &'a mut http::request::Parts,
        ctx: &'a mut RequestContext,
    ) -> Result<Flow<'a>, GatewayError> {
        let Some(cert) = ctx.client_cert.clone() else {
            return Ok(Flow::Continue);
        };
        let by_san = || {
            cert.sans
                .iter()
                .find_map(|n| self.directory.by_cert_name(n))
        };
        let by_cn = || {
            cert.common_name
                .as_deref()
                .and_then(|n| self.directory.by_cert_name(n))
        };
        let by_subject = || self.directory.by_cert_name(&cert.subject);
        let found = match self.match_on {
            MatchOn::Any => by_san().or_else(by_cn).or_else(by_subject),
            MatchOn::CommonName => by_cn(),
            MatchOn::San => by_san(),
            MatchOn::Subject => by_subject(),
        };
        let consumer = found.ok_or_else(|| {
            GatewayError::new(
                ErrorKind::Unauthorized(Some(self.challenge.clone())),
                format!("certificate {} names no consumer", cert.subject),
            )
        })?;
        ctx.consumer = Some(consumer.clone());
        ctx.identity = Some(self.identity.clone());
        Ok(Flow::Continue)
    }

    fn challenge(&self) -> Option<HeaderValue> {
        Some(self.challenge.clone())
    }
}
