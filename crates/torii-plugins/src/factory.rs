//! Typed plugin factories and their type-erased registration.
//!
//! A plugin is a type implementing [`PluginFactory`]: a strict config type (serde + JSON
//! Schema), a position in the chain, and a constructor that validates and prepares
//! everything at config load. [`Registration::of`] erases the type so the registry can hold
//! all plugins in one list; nothing ever matches on plugin names.

use crate::BuildCtx;
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use std::sync::Arc;
use torii_config::Seg;
use torii_core::Plugin;

/// Where a plugin sits in a chain. Chains run phase by phase, and by
/// [`PluginFactory::ORDER`] inside a phase; the order is data, listed in docs/plugins.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Phase {
    /// Address and client rules that need nothing else: ip_restriction, bot_detection.
    Access,
    /// CORS: answers preflights and decorates responses (also the gateway's own errors).
    Cors,
    /// Request limits: request_size_limit.
    Limits,
    /// Finds the consumer: key_auth, basic_auth, jwt, mtls_auth, introspection, forward_auth.
    Authentication,
    /// Decides with the consumer known: acl.
    Authorization,
    /// Rate limits and quotas.
    Traffic,
    /// Request and response transformation.
    Transform,
}

impl Phase {
    /// Name used in docs and errors.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Access => "access",
            Phase::Cors => "cors",
            Phase::Limits => "limits",
            Phase::Authentication => "authentication",
            Phase::Authorization => "authorization",
            Phase::Traffic => "traffic",
            Phase::Transform => "transform",
        }
    }
}

/// A problem in a plugin's settings, at a path relative to the plugin's config.
#[derive(Debug, Clone)]
pub struct ConfigError {
    /// Relative key path (`keys`, 0, `pem`).
    pub path: Vec<Seg>,
    /// What is wrong.
    pub message: String,
    /// How to fix it.
    pub hint: String,
}

impl ConfigError {
    /// An error at the plugin's own key.
    pub fn here(message: impl Into<String>, hint: impl Into<String>) -> Self {
        Self {
            path: Vec::new(),
            message: message.into(),
            hint: hint.into(),
        }
    }

    /// An error at a key below the plugin's settings.
    pub fn at(key: &str, message: impl Into<String>, hint: impl Into<String>) -> Self {
        Self {
            path: vec![Seg::Key(key.to_string())],
            message: message.into(),
            hint: hint.into(),
        }
    }

    /// Prefixes the path with an index (errors of a list element).
    pub fn in_list(mut self, key: &str, index: usize) -> Self {
        let mut path = vec![Seg::Key(key.to_string()), Seg::Index(index)];
        path.append(&mut self.path);
        self.path = path;
        self
    }
}

/// A plugin type: its config, its place in the chain and how it is built.
pub trait PluginFactory: 'static {
    /// The key under `plugins:`.
    const NAME: &'static str;
    /// Its phase.
    const PHASE: Phase;
    /// Position inside the phase (lower runs first).
    const ORDER: u16;
    /// Whether the plugin may be set per consumer (only plugins after authentication).
    const PER_CONSUMER: bool = false;
    /// The strict config type; its JSON Schema becomes part of the config schema.
    type Config: DeserializeOwned + JsonSchema;

    /// Validates and prepares everything once per load (regexes, keys, tables).
    fn build(config: Self::Config, ctx: &BuildCtx<'_>) -> Result<Arc<dyn Plugin>, ConfigError>;
}

type BuildFn = fn(&serde_json::Value, &BuildCtx<'_>) -> Result<Arc<dyn Plugin>, ConfigError>;

/// A plugin type with its type erased, as the registry holds it.
#[derive(Clone, Copy)]
pub struct Registration {
    /// Config key.
    pub name: &'static str,
    /// Phase.
    pub phase: Phase,
    /// Order inside the phase.
    pub order: u16,
    /// May be set per consumer.
    pub per_consumer: bool,
    pub(crate) schema: fn(&mut schemars::SchemaGenerator) -> schemars::Schema,
    pub(crate) build: BuildFn,
}

impl Registration {
    /// Erases a plugin type.
    pub fn of<F: PluginFactory>() -> Self {
        Self {
            name: F::NAME,
            phase: F::PHASE,
            order: F::ORDER,
            per_consumer: F::PER_CONSUMER,
            schema: |g| g.subschema_for::<F::Config>(),
            build: |value, ctx| {
                let config: F::Config =
                    serde_path_to_error::deserialize(value.clone()).map_err(|e| {
                        let path = e
                            .path()
                            .to_string()
                            .split('.')
                            .filter(|s| !s.is_empty() && *s != "?")
                            .map(|s| Seg::Key(s.to_string()))
                            .collect();
                        ConfigError {
                            path,
                            message: e.inner().to_string(),
                            hint: "see docs/plugins.md for this plugin's keys".into(),
                        }
                    })?;
                F::build(config, ctx)
            },
        }
    }
}
