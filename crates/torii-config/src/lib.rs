//! # torii-config
//!
//! Torii's configuration, in three steps with one direction of flow:
//!
//! 1. **Spanned tree** ([`yaml`]): the YAML text parsed into nodes that know their line and
//!    column; `${NAME}` variables expanded ([`expand`]).
//! 2. **Complete check** ([`check`]): the tree walked against the JSON Schema generated from the
//!    file types ([`schema`]), reporting *every* unknown key, wrong type and bad value at once.
//! 3. **Typed config and cross-checks** ([`validate`]): elements deserialized one by one, then
//!    references, duplicates and route patterns checked, and one router compiled per listener.
//!
//! [`load_source`] (with [`load_file`] / [`load_str`] for a file alone) is the one load path
//! used by startup, `torii validate`, reload (file watch and SIGHUP) and the admin API, whose
//! runtime entities ([`runtime`]) are added to the file's tree before the checks. It is pure
//! and synchronous.

pub mod check;
pub mod diag;
pub mod emit;
pub mod entity;
pub mod expand;
pub mod plugins;
pub mod runtime;
pub mod schema;
mod secrets;
pub mod template;
mod validate;
pub mod values;
pub mod yaml;

pub use diag::{Diagnostic, Diagnostics, Pos};
pub use entity::{check_consumer, check_entity, consumer_diagnostics};
pub use expand::{Env, ProcessEnv};
pub use plugins::{NoPlugins, PluginCatalog, PluginError, Seg};
pub use runtime::{Entities, Entity, EntityKind, Runtime, Source};
pub use schema::Config;
pub use template::PathTemplate;
pub use validate::Routers;

use diag::KeyPath;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::path::Path;
use validate::Partial;
use yaml::{Node, PathSeg};

/// Largest config file accepted.
pub const MAX_CONFIG_BYTES: usize = 16 * 1024 * 1024;

/// A loaded, fully validated config with its compiled routers and plugins.
#[derive(Debug)]
pub struct Loaded<P = ()> {
    /// The typed config.
    pub config: Config,
    /// One router per listener name; values are indices into `config.routes`.
    pub routers: Routers,
    /// What the plugin catalog built (chains, consumers).
    pub plugins: P,
    /// The file text and runtime entities it was loaded from.
    pub source: Source,
}

/// The JSON Schema of the config file with the catalog's plugins (cached by the catalog).
pub fn json_schema<C: PluginCatalog + ?Sized>(catalog: &C) -> Value {
    catalog.config_schema().clone()
}

/// Generates the config schema: the file types, with the `PluginMap` definition replaced by
/// an object of the catalog's plugins (unknown plugin names are then reported like unknown
/// keys, with a "did you mean").
pub fn schema_with<C: PluginCatalog + ?Sized>(catalog: &C) -> Value {
    let mut generator = schemars::generate::SchemaSettings::draft2020_12().into_generator();
    let plugins = catalog.schemas(&mut generator);
    let mut root = generator.into_root_schema_for::<Config>().to_value();
    let properties: serde_json::Map<String, Value> = plugins
        .into_iter()
        .map(|(name, schema)| (name.to_string(), schema.to_value()))
        .collect();
    if let Some(defs) = root.get_mut("$defs").and_then(Value::as_object_mut) {
        defs.insert(
            "PluginMap".into(),
            serde_json::json!({
                "description": "Plugin settings by plugin name; see docs/plugins.md.",
                "type": "object",
                "properties": properties,
                "additionalProperties": false,
            }),
        );
    }
    root
}

/// Reads and loads a config file. `name` in messages is the path as given.
pub fn load_file<C: PluginCatalog + ?Sized>(
    path: &Path,
    env: &dyn Env,
    catalog: &C,
) -> Result<Loaded<C::Output>, Diagnostics> {
    load_file_with(path, std::sync::Arc::default(), env, catalog)
}

/// Reads a config file and loads it with runtime entities.
pub fn load_file_with<C: PluginCatalog + ?Sized>(
    path: &Path,
    runtime: std::sync::Arc<Runtime>,
    env: &dyn Env,
    catalog: &C,
) -> Result<Loaded<C::Output>, Diagnostics> {
    let name = path.display().to_string();
    let text = read_file(path, &name)?;
    let source = Source::file(name, text).with_runtime(runtime);
    load_source(&source, env, catalog)
}

fn read_file(path: &Path, name: &str) -> Result<String, Diagnostics> {
    let one = |msg: String, hint: &str| {
        Diagnostics::new(
            name,
            "",
            vec![Diagnostic::new(None, "", msg).with_hint(hint)],
        )
    };
    let meta = std::fs::metadata(path).map_err(|e| {
        one(
            format!("cannot read the config file: {e}"),
            "check the path given with --config / TORII_CONFIG",
        )
    })?;
    if meta.len() > MAX_CONFIG_BYTES as u64 {
        return Err(one(
            format!(
                "the config file is {} bytes; the limit is {MAX_CONFIG_BYTES}",
                meta.len()
            ),
            "split large route sets or remove unused entries",
        ));
    }
    let bytes = std::fs::read(path).map_err(|e| {
        one(
            format!("cannot read the config file: {e}"),
            "check the path and its permissions",
        )
    })?;
    String::from_utf8(bytes).map_err(|_| {
        one(
            "the config file is not UTF-8".into(),
            "save the file as UTF-8",
        )
    })
}

/// Loads a config from text. Every problem is reported, each with file, line, key path and a hint.
pub fn load_str<C: PluginCatalog + ?Sized>(
    name: &str,
    src: &str,
    env: &dyn Env,
    catalog: &C,
) -> Result<Loaded<C::Output>, Diagnostics> {
    load_source(&Source::file(name, src), env, catalog)
}

/// Loads the file text of `source` with its runtime entities added (see [`runtime`]). Problems
/// in the file are reported with line and key path; problems in a runtime entity with a JSON
/// pointer into the config store ([`Diagnostic::pointer`]).
pub fn load_source<C: PluginCatalog + ?Sized>(
    source: &Source,
    env: &dyn Env,
    catalog: &C,
) -> Result<Loaded<C::Output>, Diagnostics> {
    let (name, src) = (source.name.as_str(), &*source.text);
    let mut tree =
        yaml::parse(src).map_err(|d| Diagnostics::new(name, src, d).redacting_lines())?;
    let mut errors = Vec::new();
    expand::expand_tree(&mut tree, env, &KeyPath::root(), &mut errors);
    // Runtime values are not expanded: `${NAME}` in them is text, never the environment.
    let placement = runtime::merge(&mut tree, &source.runtime, &mut errors);
    let locate = |errs: Vec<Diagnostic>| -> Vec<Diagnostic> {
        errs.into_iter().map(|d| placement.locate(d)).collect()
    };
    let prunes = check::check(catalog.config_schema(), &tree, &mut errors);

    // Drop what was already reported, then deserialize element by element so the cross-checks
    // still see everything that is valid.
    // (A valid config has nothing to prune: then the tree is not copied first.)
    let mut json = if prunes.is_empty() {
        tree.to_json()
    } else {
        let mut pruned = tree.clone();
        for p in &prunes {
            pruned.remove(p);
        }
        pruned.to_json()
    };
    // The element sections are moved out (each element deserialized from its own value);
    // what is left is the rest of the document.
    let mut take = |key: &str| json.as_object_mut().and_then(|o| o.remove(key));
    let (listeners, upstreams, routes) = (take("listeners"), take("upstreams"), take("routes"));
    let mut partial = Partial::default();
    if listeners.is_none() {
        partial.broken_names.insert("listeners".into());
    }
    partial.listeners = elements(
        &tree,
        "listeners",
        listeners,
        &mut partial.broken_names,
        &mut errors,
    );
    partial.upstreams = elements(
        &tree,
        "upstreams",
        upstreams,
        &mut partial.broken_names,
        &mut errors,
    );
    partial.routes = elements(
        &tree,
        "routes",
        routes,
        &mut partial.broken_names,
        &mut errors,
    );
    partial.versioning = json.get("versioning").is_some_and(|v| !v.is_null());
    let routers = validate::validate(&tree, &partial, &mut errors);
    if !errors.is_empty() {
        return Err(Diagnostics::new(name, src, locate(errors)).redacting(&tree));
    }
    // Everything checked: the whole document deserializes (the rest of the sections).
    let mut rest = json;
    if let Some(obj) = rest.as_object_mut() {
        for key in ["listeners", "upstreams", "routes"] {
            obj.insert(key.into(), Value::Array(Vec::new()));
        }
    }
    let rest: Config = deserialize(&tree, &[], rest)
        .map_err(|d| Diagnostics::new(name, src, locate(vec![d])).redacting(&tree))?;
    let config = validate::assemble(partial, rest);
    let server_errors = validate::server(&tree, &config);
    if !server_errors.is_empty() {
        return Err(Diagnostics::new(name, src, locate(server_errors)).redacting(&tree));
    }
    let plugins = catalog.build(&config).map_err(|errs| {
        let diags = errs
            .into_iter()
            .map(|e| plugin_diagnostic(&tree, e))
            .collect();
        Diagnostics::new(name, src, locate(diags)).redacting(&tree)
    })?;
    Ok(Loaded {
        config,
        routers,
        plugins,
        source: source.clone(),
    })
}

fn plugin_diagnostic(tree: &Node, e: PluginError) -> Diagnostic {
    let segs: Vec<PathSeg<'_>> = e
        .path
        .iter()
        .map(|s| match s {
            Seg::Key(k) => PathSeg::Key(k),
            Seg::Index(i) => PathSeg::Index(*i),
        })
        .collect();
    let mut path = String::new();
    for s in &segs {
        match s {
            PathSeg::Key(k) if path.is_empty() => path.push_str(k),
            PathSeg::Key(k) => {
                path.push('.');
                path.push_str(k);
            }
            PathSeg::Index(i) => path.push_str(&format!("[{i}]")),
        }
    }
    Diagnostic::new(Some(tree.pos_at(&segs)), path, e.message).with_hint(e.hint)
}

fn elements<T: DeserializeOwned>(
    tree: &Node,
    section: &'static str,
    value: Option<Value>,
    broken: &mut std::collections::HashSet<String>,
    errors: &mut Vec<Diagnostic>,
) -> Vec<Option<T>> {
    let Some(Value::Array(items)) = value else {
        return Vec::new();
    };
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            let name = item.get("name").and_then(Value::as_str).map(String::from);
            match deserialize(tree, &[PathSeg::Key(section), PathSeg::Index(i)], item) {
                Ok(v) => Some(v),
                Err(d) => {
                    if let Some(name) = name {
                        broken.insert(name);
                    }
                    // The schema check already reported why, unless it missed something.
                    if !errors
                        .iter()
                        .any(|e| e.path.starts_with(&format!("{section}[{i}]")))
                    {
                        errors.push(d);
                    }
                    None
                }
            }
        })
        .collect()
}

fn deserialize<T: DeserializeOwned>(
    tree: &Node,
    base: &[PathSeg<'_>],
    value: Value,
) -> Result<T, Diagnostic> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let inner = e.path().to_string();
        let mut segs: Vec<PathSeg<'_>> = base.to_vec();
        let parts: Vec<String> = inner
            .split('.')
            .filter(|s| !s.is_empty() && *s != "?")
            .map(String::from)
            .collect();
        let mut owned: Vec<(Option<String>, Option<usize>)> = Vec::new();
        for part in &parts {
            let (key, idx) = match part.split_once('[') {
                Some((k, rest)) => (k.to_string(), rest.trim_end_matches(']').parse().ok()),
                None => (part.clone(), None),
            };
            owned.push((Some(key), idx));
        }
        for (k, idx) in &owned {
            if let Some(k) = k {
                segs.push(PathSeg::Key(k));
            }
            if let Some(i) = idx {
                segs.push(PathSeg::Index(*i));
            }
        }
        let mut path = String::new();
        for s in &segs {
            match s {
                PathSeg::Key(k) if path.is_empty() => path.push_str(k),
                PathSeg::Key(k) => {
                    path.push('.');
                    path.push_str(k);
                }
                PathSeg::Index(i) => path.push_str(&format!("[{i}]")),
            }
        }
        Diagnostic::new(Some(tree.pos_at(&segs)), path, e.inner().to_string())
    })
}

#[cfg(test)]
mod tests;
