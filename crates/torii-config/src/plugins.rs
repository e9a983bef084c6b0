//! The seam between the config loader and the plugins.
//!
//! The loader does not know any plugin. A [`PluginCatalog`] (the registry in `torii-plugins`)
//! contributes each plugin's config schema, so the one complete check covers plugin settings
//! with line-precise errors, and then builds everything plugins need from the checked config
//! (chains, consumer indexes) in the same load. Its errors carry key paths and are reported
//! like every other config error; the running config stays in place when any is found.

use crate::schema::Config;
use serde_json::Value;

/// One segment of a key path reported by a catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg {
    /// A map key.
    Key(String),
    /// A sequence index.
    Index(usize),
}

/// A problem found while building plugins, at a key path from the document root.
#[derive(Debug, Clone)]
pub struct PluginError {
    /// Where (from the root: `routes`, 3, `plugins`, `jwt`, `keys`, 0).
    pub path: Vec<Seg>,
    /// What is wrong.
    pub message: String,
    /// How to fix it.
    pub hint: String,
}

impl PluginError {
    /// A new error.
    pub fn new(path: Vec<Seg>, message: impl Into<String>, hint: impl Into<String>) -> Self {
        Self {
            path,
            message: message.into(),
            hint: hint.into(),
        }
    }
}

/// What the loader asks of the plugin registry.
pub trait PluginCatalog: Sync {
    /// What a successful build produces (compiled chains, consumers); kept in [`crate::Loaded`].
    type Output;

    /// Every registered plugin's name and config schema; nested types go into `generator`'s
    /// definitions.
    fn schemas(
        &self,
        generator: &mut schemars::SchemaGenerator,
    ) -> Vec<(&'static str, schemars::Schema)>;

    /// The whole config schema, cached by the catalog: `crate::schema_with(self)` once.
    fn config_schema(&self) -> &Value;

    /// Builds the plugins of a config that passed every other check.
    fn build(&self, config: &Config) -> Result<Self::Output, Vec<PluginError>>;
}

/// A catalog with no plugins, for tools and tests that only need the core config.
#[derive(Debug, Default)]
pub struct NoPlugins;

impl PluginCatalog for NoPlugins {
    type Output = ();
    fn schemas(&self, _: &mut schemars::SchemaGenerator) -> Vec<(&'static str, schemars::Schema)> {
        Vec::new()
    }
    fn config_schema(&self) -> &Value {
        static SCHEMA: std::sync::OnceLock<Value> = std::sync::OnceLock::new();
        SCHEMA.get_or_init(|| crate::schema_with(self))
    }
    fn build(&self, config: &Config) -> Result<(), Vec<PluginError>> {
        let mut errors = Vec::new();
        let mut unknown = |path: Vec<Seg>, map: &crate::schema::PluginMap| {
            for name in map.0.keys() {
                let mut p = path.clone();
                p.push(Seg::Key(name.clone()));
                errors.push(PluginError::new(
                    p,
                    format!("unknown plugin `{name}`"),
                    "this build has no plugins",
                ));
            }
        };
        unknown(vec![Seg::Key("plugins".into())], &config.plugins);
        for (i, r) in config.routes.iter().enumerate() {
            unknown(
                vec![
                    Seg::Key("routes".into()),
                    Seg::Index(i),
                    Seg::Key("plugins".into()),
                ],
                &r.plugins,
            );
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}
