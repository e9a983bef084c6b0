//! `acl`: authorization once the consumer is known. Allow or deny by consumer groups, require
//! token scopes, require claim values. Anything that fails gets 403; a route with `acl` but no
//! consumer (no authentication plugin ran) gets 403 too, never a silent pass.

use crate::{BuildCtx, ConfigError, Phase, PluginFactory};
use schemars::JsonSchema;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use torii_core::{ErrorKind, Flow, GatewayError, Plugin, RequestContext};

/// Settings of `acl`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AclConfig {
    /// The consumer must be in one of these groups (any group when empty).
    #[serde(default)]
    pub allow_groups: Vec<String>,
    /// Consumers in any of these groups are refused (checked first).
    #[serde(default)]
    pub deny_groups: Vec<String>,
    /// Scopes the token must carry, all of them (from `scope` or `scp`).
    #[serde(default)]
    pub require_scopes: Vec<String>,
    /// Claims the token must carry, each with one of the listed values (a claim that is an
    /// array matches when any element is listed).
    #[serde(default)]
    pub require_claims: BTreeMap<String, Vec<String>>,
}

/// The plugin type.
pub struct Acl;

impl PluginFactory for Acl {
    const NAME: &'static str = "acl";
    const PHASE: Phase = Phase::Authorization;
    const ORDER: u16 = 10;
    const PER_CONSUMER: bool = false;
    type Config = AclConfig;

    fn build(c: AclConfig, _: &BuildCtx<'_>) -> Result<Arc<dyn Plugin>, ConfigError> {
        if c.allow_groups.is_empty()
            && c.deny_groups.is_empty()
            && c.require_scopes.is_empty()
            && c.require_claims.is_empty()
        {
            return Err(ConfigError::here(
                "acl needs at least one rule",
                "e.g. `allow_groups: [admin]`",
            ));
        }
        Ok(Arc::new(AclRules(c)))
    }
}

struct AclRules(AclConfig);

fn forbidden(why: impl Into<String>) -> GatewayError {
    GatewayError::new(ErrorKind::Forbidden, why)
}

fn claim_matches(value: &serde_json::Value, allowed: &[String]) -> bool {
    match value {
        serde_json::Value::String(s) => allowed.iter().any(|a| a == s),
        serde_json::Value::Array(items) => items
            .iter()
            .any(|i| i.as_str().is_some_and(|s| allowed.iter().any(|a| a == s))),
        serde_json::Value::Bool(b) => allowed
            .iter()
            .any(|a| a == if *b { "true" } else { "false" }),
        serde_json::Value::Number(n) => allowed.iter().any(|a| *a == n.to_string()),
        _ => false,
    }
}

impl Plugin for AclRules {
    fn on_request<'a>(
        &'a self,
        _: &'a mut http::request::Parts,
        ctx: &'a mut RequestContext,
    ) -> Result<Flow<'a>, GatewayError> {
        let rules = &self.0;
        let Some(consumer) = &ctx.consumer else {
            return Err(forbidden("acl needs an authenticated consumer"));
        };
        let in_group = |names: &[String]| {
            consumer
                .groups
                .iter()
                .any(|g| names.iter().any(|n| **n == **g))
        };
        if in_group(&rules.deny_groups) {
            return Err(forbidden("consumer group denied"));
        }
        if !rules.allow_groups.is_empty() && !in_group(&rules.allow_groups) {
            return Err(forbidden("consumer not in an allowed group"));
        }
        if !rules.require_scopes.is_empty() || !rules.require_claims.is_empty() {
            let Some(identity) = &ctx.identity else {
                return Err(forbidden("no token scopes or claims"));
            };
            if let Some(missing) = rules
                .require_scopes
                .iter()
                .find(|s| !identity.scopes.iter().any(|have| have == *s))
            {
                return Err(forbidden(format!("missing scope {missing}")));
            }
            for (claim, allowed) in &rules.require_claims {
                let ok = identity
                    .claims
                    .as_ref()
                    .and_then(|c| c.get(claim))
                    .is_some_and(|v| claim_matches(v, allowed));
                if !ok {
                    return Err(forbidden(format!("claim {claim} not allowed")));
                }
            }
        }
        Ok(Flow::Continue)
    }
}
