//! `ip_restriction`: allow and deny lists of CIDRs (IPv4 and IPv6) applied to the client
//! address the core resolved (the socket peer, or the forwarded address when the peer is a
//! trusted proxy). A deny match wins; with an allow list, other addresses are refused.

use crate::{BuildCtx, ConfigError, Phase, PluginFactory};
use ipnet::IpNet;
use schemars::JsonSchema;
use serde::Deserialize;
use std::sync::Arc;
use torii_config::values::Cidr;
use torii_core::{ErrorKind, Flow, GatewayError, Plugin, RequestContext};

/// Settings of `ip_restriction`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IpRestrictionConfig {
    /// Only these client networks may pass (any when empty).
    #[serde(default)]
    pub allow: Vec<Cidr>,
    /// These client networks are refused (checked first).
    #[serde(default)]
    pub deny: Vec<Cidr>,
}

/// The plugin type.
pub struct IpRestriction;

impl PluginFactory for IpRestriction {
    const NAME: &'static str = "ip_restriction";
    const PHASE: Phase = Phase::Access;
    const ORDER: u16 = 10;
    type Config = IpRestrictionConfig;

    fn build(
        config: IpRestrictionConfig,
        _: &BuildCtx<'_>,
    ) -> Result<Arc<dyn Plugin>, ConfigError> {
        if config.allow.is_empty() && config.deny.is_empty() {
            return Err(ConfigError::here(
                "ip_restriction needs `allow` or `deny`",
                "e.g. `allow: [10.0.0.0/8]` or `deny: [203.0.113.0/24]`",
            ));
        }
        // Normalised (host bits cleared) so containment checks are exact.
        let nets = |v: Vec<Cidr>| v.into_iter().map(|c| c.0.trunc()).collect();
        Ok(Arc::new(IpRules {
            allow: nets(config.allow),
            deny: nets(config.deny),
        }))
    }
}

struct IpRules {
    allow: Vec<IpNet>,
    deny: Vec<IpNet>,
}

impl Plugin for IpRules {
    fn on_request<'a>(
        &'a self,
        _: &'a mut http::request::Parts,
        ctx: &'a mut RequestContext,
    ) -> Result<Flow<'a>, GatewayError> {
        let ip = ctx.client.0;
        if self.deny.iter().any(|n| n.contains(&ip)) {
            return Err(GatewayError::new(
                ErrorKind::Forbidden,
                format!("client {ip} is denied"),
            ));
        }
        if !self.allow.is_empty() && !self.allow.iter().any(|n| n.contains(&ip)) {
            return Err(GatewayError::new(
                ErrorKind::Forbidden,
                format!("client {ip} is not in the allow list"),
            ));
        }
        Ok(Flow::Continue)
    }
}
