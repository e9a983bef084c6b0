//! # torii-plugins
//!
//! The plugin pipeline and the built-in plugins.
//!
//! - [`factory`]: a plugin is a type implementing [`PluginFactory`] (strict config type, phase,
//!   order, constructor); [`Registration::of`] erases it.
//! - [`builtin`]: the one list of registered plugins.
//! - [`Catalog`]: the registry as the config loader sees it ([`torii_config::PluginCatalog`]):
//!   it contributes plugin schemas to the config schema and builds, per load, the consumer
//!   [`Directory`], one [`Chain`] per route and the consumers' own plugin settings.
//! - [`chain`]: chains compiled at load and run per request.
//! - [`state`]: plugin state (caches, counters) that survives reloads which leave the plugin's
//!   settings unchanged.

pub mod builtin;
pub mod chain;
mod compositions;
pub mod consumers;
pub mod factory;
pub mod flights;
pub mod identity;
pub mod identity_token;
pub mod live;
pub mod state;

pub mod template;
pub use chain::{Chain, Entry, Progress};
pub use consumers::Directory;
pub use factory::{ConfigError, Phase, PluginFactory, Registration};
pub use identity::IdentityHeaders;
pub use identity_token::{Audience, TokenSigner};
pub use live::{ConsumerChange, Consumers};
pub use state::{StateKey, StateRegistry};

use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use torii_config::schema::{Config, PluginMap};
use torii_config::{PluginCatalog, PluginError, Seg};
use torii_core::Consumer;

/// What a plugin constructor gets besides its config.
pub struct BuildCtx<'a> {
    /// The consumers of this load (a changed consumer replaces its entry without a reload).
    pub directory: &'a Arc<Consumers>,
    /// The named upstreams of this load.
    pub upstreams: &'a torii_upstream::Upstreams,
    /// Where upstreams for plugins' URLs come from.
    pub registry: &'a torii_upstream::Registry,
    /// The gateway's Redis, when the config has `redis`.
    pub redis: Option<&'a Arc<torii_store::Redis>>,
    /// `global`, `route:<name>`, `consumer:<name>` or `plan:<name>`.
    pub scope: &'a str,
    /// The route's path parameters, when the plugin is set on a route (templates naming
    /// another parameter are refused).
    pub route_params: Option<&'a [String]>,
    state: &'a StateRegistry,
    plugin: &'static str,
    settings: &'a Value,
    load: &'a Load,
}

/// What the plugin builds of one load share: secret query parameters they name, and the
/// cache's memory tier and counters.
pub(crate) struct Load {
    redact: std::sync::Mutex<Vec<String>>,
    /// `cache` of the config.
    cache_config: torii_config::schema::CacheStore,
    cache: std::sync::Mutex<Option<Arc<torii_cache::Memory>>>,
    cache_shared: std::sync::Mutex<Option<Arc<torii_cache::SharedTier>>>,
    cache_counters: std::sync::Mutex<Vec<(String, Arc<torii_cache::status::Counters>)>>,
    counters: std::sync::Mutex<Vec<Counted>>,
    /// Files plugins read and prepared during this load, by kind and path (see
    /// [`BuildCtx::per_load`]).
    files: std::sync::Mutex<Vec<PerLoad>>,
}

/// Counters a plugin shows on `/metrics` as `torii_<family>_requests_total{scope, result}`.
pub trait ResultCounters: Send + Sync {
    /// The counters' values by result, in a fixed order.
    fn values(&self) -> Vec<(&'static str, u64)>;
}

/// A value made once per load: its type, its key, the value.
type PerLoad = (
    std::any::TypeId,
    String,
    Arc<dyn std::any::Any + Send + Sync>,
);

/// One plugin instance's counters, as registered while building it.
#[derive(Clone)]
pub struct Counted {
    /// The metric family (`mirror` gives `torii_mirror_requests_total`).
    pub family: &'static str,
    /// The plugin's scope (`route:<name>`, `global`, ...).
    pub scope: String,
    /// The values.
    pub counters: Arc<dyn ResultCounters>,
}

impl Load {
    /// Whether no plugin added to what the whole load shares (counters, secret query
    /// parameters, cache tiers).
    fn is_empty(&self) -> bool {
        fn empty<T>(m: &std::sync::Mutex<Vec<T>>) -> bool {
            m.lock().is_ok_and(|v| v.is_empty())
        }
        fn none<T>(m: &std::sync::Mutex<Option<T>>) -> bool {
            m.lock().is_ok_and(|v| v.is_none())
        }
        empty(&self.redact)
            && empty(&self.cache_counters)
            && empty(&self.counters)
            && none(&self.cache)
            && none(&self.cache_shared)
    }

    /// The process's cache memory tier, made on first use by this load.
    fn memory(&self, state: &StateRegistry) -> Arc<torii_cache::Memory> {
        let mut slot = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(m) = &*slot {
            return m.clone();
        }
        let bytes = self.cache_config.memory.0;
        let m = state.get_or_insert(
            StateKey::new("cache", "process", &Value::from(bytes)),
            || torii_cache::Memory::new(bytes),
        );
        *slot = Some(m.clone());
        m
    }

    /// A load with these cache settings.
    pub(crate) fn new(cache_config: torii_config::schema::CacheStore) -> Self {
        Self {
            redact: std::sync::Mutex::new(Vec::new()),
            cache_config,
            cache: std::sync::Mutex::new(None),
            cache_shared: std::sync::Mutex::new(None),
            cache_counters: std::sync::Mutex::new(Vec::new()),
            counters: std::sync::Mutex::new(Vec::new()),
            files: std::sync::Mutex::new(Vec::new()),
        }
    }
}

impl BuildCtx<'_> {
    /// This instance's long-lived state: the same value across reloads that keep the plugin's
    /// scope and settings.
    pub fn state<T: std::any::Any + Send + Sync>(&self, init: impl FnOnce() -> T) -> Arc<T> {
        self.state
            .get_or_insert(StateKey::new(self.plugin, self.scope, self.settings), init)
    }

    /// Whether these are the settings of a consumer or of a plan (they apply per consumer).
    pub fn per_consumer(&self) -> bool {
        self.scope.starts_with("consumer:") || self.scope.starts_with("plan:")
    }

    /// Where counters are kept apart: the scope, except that the settings of every consumer
    /// and plan count in one place (`consumers`), keyed by the consumer, so a consumer moved
    /// to another plan keeps the usage counted so far.
    pub fn counter_scope(&self) -> &str {
        if self.per_consumer() {
            "consumers"
        } else {
            self.scope
        }
    }

    /// Long-lived state named by the plugin rather than by its settings: the same value for
    /// every load whose instance, in the same counter scope, asks for `name` (counters that
    /// must outlive a change of allowance).
    pub fn state_named<T: std::any::Any + Send + Sync>(
        &self,
        name: &str,
        init: impl FnOnce() -> T,
    ) -> Arc<T> {
        self.state.get_or_insert(
            StateKey::new(
                self.plugin,
                self.counter_scope(),
                &Value::String(name.into()),
            ),
            init,
        )
    }

    /// A client for an outbound service: the named upstream `upstream` when set, otherwise
    /// the implicit upstream of `url`'s scheme and authority (the system's TLS roots, default
    /// pool and timeouts). Errors are for the key that was set.
    pub fn client(
        &self,
        url: Option<&http::Uri>,
        upstream: Option<&str>,
    ) -> Result<torii_upstream::Client, String> {
        match (upstream, url) {
            (Some(name), _) => self
                .upstreams
                .get(name)
                .cloned()
                .map(torii_upstream::Client::new)
                .ok_or_else(|| format!("no upstream is named `{name}`")),
            (None, Some(url)) => self.registry.for_url(url).map(torii_upstream::Client::new),
            (None, None) => Err("neither a URL nor an upstream is set".into()),
        }
    }

    /// Marks a query parameter as secret: the access log redacts its value.
    pub fn redact_query_param(&self, name: &str) {
        let mut r = self.load.redact.lock().unwrap_or_else(|e| e.into_inner());
        if !r.iter().any(|n| n == name) {
            r.push(name.to_string());
        }
    }

    /// The process's cache memory tier (`cache.memory`): one for every route, kept across
    /// reloads that keep its size.
    pub fn cache_memory(&self) -> Arc<torii_cache::Memory> {
        self.load.memory(self.state)
    }

    /// The process's shared cache tier over the gateway's Redis (`None` without `redis`):
    /// one for every route, kept across reloads that keep the Redis client and its settings.
    pub fn cache_shared(&self) -> Option<Arc<torii_cache::SharedTier>> {
        let redis = self.redis?.clone();
        let mut slot = self
            .load
            .cache_shared
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(t) = &*slot {
            return Some(t.clone());
        }
        let memory = self.cache_memory();
        let c = &self.load.cache_config;
        let (size, ttl) = (c.shared_max_object_size.0, c.shared_max_ttl.0);
        // The same client (its address) and settings: the same tier.
        let identity = serde_json::json!([
            Arc::as_ptr(&redis) as usize,
            size,
            ttl.as_millis() as u64,
            Arc::as_ptr(&memory) as usize
        ]);
        let t = self
            .state
            .get_or_insert(StateKey::new("cache", "shared", &identity), || {
                torii_cache::SharedTier::new(redis, memory, size, ttl)
            });
        *slot = Some(t.clone());
        Some(t)
    }

    /// Shows a plugin's counters on `/metrics` as `torii_<family>_requests_total`, labelled
    /// with this scope and each result.
    pub fn register_counters(&self, family: &'static str, counters: Arc<dyn ResultCounters>) {
        self.load
            .counters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Counted {
                family,
                scope: self.scope.to_string(),
                counters,
            });
    }

    /// Something prepared once per load under `key` (a file read and parsed, say, that many
    /// routes name): the first plugin that asks makes it, the others of the same load share
    /// it. A failure is not kept (each asker reports it at its own key). The next load makes
    /// it again, so a changed file is read on reload.
    pub fn per_load<T: Send + Sync + 'static>(
        &self,
        key: &str,
        make: impl FnOnce() -> Result<T, String>,
    ) -> Result<Arc<T>, String> {
        let id = std::any::TypeId::of::<T>();
        let mut files = self.load.files.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, _, v)) = files.iter().find(|(t, k, _)| *t == id && k == key)
            && let Ok(v) = v.clone().downcast::<T>()
        {
            return Ok(v);
        }
        let v = Arc::new(make()?);
        files.push((id, key.to_string(), v.clone()));
        Ok(v)
    }

    /// Shows a cache's counters on `/metrics`, labelled with this scope.
    pub fn register_cache_counters(&self, c: Arc<torii_cache::status::Counters>) {
        self.load
            .cache_counters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((self.scope.to_string(), c));
    }
}

/// Everything plugins built for one config.
pub struct Compiled {
    /// One chain per route, by route index.
    pub chains: Vec<Arc<Chain>>,
    /// The consumers, with their own plugin settings.
    pub consumers: Arc<Consumers>,
    /// Identity headers.
    pub identity: IdentityHeaders,
    /// The gateway's identity-token signer, when `identity.token` is set.
    pub signer: Option<Arc<TokenSigner>>,
    /// Identity-token settings by upstream name (upstreams that set `identity_token`).
    pub audiences: HashMap<String, Audience>,
    /// Query parameters plugins read secrets from (the access log redacts them too).
    pub redact_query_params: Vec<String>,
    /// The state generation of this load (see [`StateRegistry::retain_generation`]).
    pub generation: u64,
    /// The named upstreams, built before the plugins so plugins can call them.
    pub upstreams: torii_upstream::Upstreams,
    /// The gateway's Redis, when the config has `redis`.
    pub redis: Option<Arc<torii_store::Redis>>,
    /// The cache's memory tier, when a route caches.
    pub cache: Option<Arc<torii_cache::Memory>>,
    /// The cache's shared tier, when a route's cache is shared.
    pub cache_shared: Option<Arc<torii_cache::SharedTier>>,
    /// Each cache's counters, by scope (`route:<name>`, `global`).
    pub cache_counters: Vec<(String, Arc<torii_cache::status::Counters>)>,
    /// Other plugins' counters (see [`BuildCtx::register_counters`]).
    pub counters: Vec<Counted>,
    /// The composition of each route that has `compose`, by route index.
    pub compositions: Vec<Option<Arc<torii_compose::Composition>>>,
}

impl std::fmt::Debug for Compiled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Compiled")
            .field("chains", &self.chains.len())
            .field("consumers", &self.consumers)
            .finish()
    }
}

/// The plugin registry as the config loader uses it.
pub struct Catalog {
    plugins: Vec<Registration>,
    by_name: HashMap<&'static str, usize>,
    state: Arc<StateRegistry>,
    registry: torii_upstream::Registry,
    stores: torii_store::Stores,
    schema: OnceLock<Value>,
}

impl Catalog {
    /// The built-in plugins with fresh state.
    pub fn builtin() -> Result<Self, String> {
        Self::new(builtin::registrations())
    }

    /// A catalog of the given plugins.
    pub fn new(plugins: Vec<Registration>) -> Result<Self, String> {
        let by_name = plugins
            .iter()
            .enumerate()
            .map(|(i, r)| (r.name, i))
            .collect();
        Ok(Self {
            plugins,
            by_name,
            state: Arc::new(StateRegistry::default()),
            registry: torii_upstream::Registry::default(),
            stores: torii_store::Stores::default(),
            schema: OnceLock::new(),
        })
    }

    /// The registered plugins, in registration order.
    pub fn plugins(&self) -> &[Registration] {
        &self.plugins
    }

    /// The state registry shared by every load of this catalog.
    pub fn state(&self) -> &Arc<StateRegistry> {
        &self.state
    }

    #[allow(clippy::too_many_arguments)]
    fn build_map(
        &self,
        upstreams: &torii_upstream::Upstreams,
        redis: Option<&Arc<torii_store::Redis>>,
        load: &Load,
        map: &PluginMap,
        base: &[Seg],
        scope: &str,
        directory: &Arc<Consumers>,
        consumer_scope: bool,
        route_params: Option<&[String]>,
        errors: &mut Vec<PluginError>,
    ) -> HashMap<&'static str, Entry> {
        let mut out = HashMap::new();
        for (name, settings) in &map.0 {
            let mut path = base.to_vec();
            path.push(Seg::Key(name.clone()));
            let Some(reg) = self
                .by_name
                .get(name.as_str())
                .and_then(|i| self.plugins.get(*i))
            else {
                errors.push(PluginError::new(
                    path,
                    format!("unknown plugin `{name}`"),
                    "see docs/plugins.md for the list",
                ));
                continue;
            };
            if consumer_scope && !reg.per_consumer {
                errors.push(PluginError::new(
                    path,
                    format!("`{name}` cannot be set per consumer"),
                    "consumer settings apply after authentication; set it on the route or globally",
                ));
                continue;
            }
            let ctx = BuildCtx {
                directory,
                upstreams,
                registry: &self.registry,
                redis,
                scope,
                route_params,
                state: &self.state,
                plugin: reg.name,
                settings,
                load,
            };
            match (reg.build)(settings, &ctx) {
                Ok(plugin) => {
                    out.insert(
                        reg.name,
                        Entry {
                            name: reg.name,
                            phase: reg.phase,
                            order: reg.order,
                            plugin,
                        },
                    );
                }
                Err(e) => {
                    path.extend(e.path);
                    errors.push(PluginError::new(path, e.message, e.hint));
                }
            }
        }
        out
    }
}

fn key(k: &str) -> Seg {
    Seg::Key(k.to_string())
}

impl Catalog {
    /// Plans: each built once; its instances serve every consumer of the plan (their
    /// counters are keyed by the consumer). Returns them by index, and their indexes by name.
    fn build_plans(
        &self,
        config: &Config,
        upstreams: &torii_upstream::Upstreams,
        redis: Option<&Arc<torii_store::Redis>>,
        load: &Load,
        directory: &Arc<Consumers>,
        errors: &mut Vec<PluginError>,
    ) -> (Vec<chain::Settings>, HashMap<String, usize>) {
        let mut plans = Vec::with_capacity(config.plans.len());
        let mut plan_index = HashMap::new();
        for (i, p) in config.plans.iter().enumerate() {
            let map = self.build_map(
                upstreams,
                redis,
                load,
                &p.plugins,
                &[key("plans"), Seg::Index(i), key("plugins")],
                &format!("plan:{}", p.name),
                directory,
                true,
                None,
                errors,
            );
            plans.push(map);
            if plan_index.insert(p.name.clone(), i).is_some() {
                errors.push(PluginError::new(
                    vec![key("plans"), Seg::Index(i), key("name")],
                    format!("plan `{}` is declared twice", p.name),
                    "plan names must be unique",
                ));
            }
        }
        (plans, plan_index)
    }
}

/// A consumer's plugin settings from its own (`own`) and its plan's: the plan alone when it
/// has none of its own (chains then run the plan's part compiled at load), else the plan's
/// with its own over them. `i` is its position, for errors.
pub(crate) fn consumer_settings(
    c: &torii_config::schema::Consumer,
    own: chain::Settings,
    plans: &[chain::Settings],
    plan_index: &HashMap<String, usize>,
    i: usize,
    errors: &mut Vec<PluginError>,
) -> consumers::SettingsOf {
    let plan = c
        .plan
        .as_deref()
        .and_then(|name| plan_index.get(name).copied());
    let mut map = match c.plan.as_deref() {
        None => HashMap::new(),
        Some(name) => match plan.and_then(|p| plans.get(p)) {
            Some(p) => p.clone(),
            None => {
                errors.push(PluginError::new(
                    vec![key("consumers"), Seg::Index(i), key("plan")],
                    format!("no plan is named `{name}`"),
                    "declare it under `plans:` (or remove `plan`)",
                ));
                HashMap::new()
            }
        },
    };
    if own.is_empty() && plan.is_some() {
        return (plan, None);
    }
    map.extend(own);
    if map.is_empty() {
        (None, None)
    } else {
        (None, Some(Arc::new(map)))
    }
}

impl PluginCatalog for Catalog {
    type Output = Compiled;

    fn schemas(
        &self,
        generator: &mut schemars::SchemaGenerator,
    ) -> Vec<(&'static str, schemars::Schema)> {
        self.plugins
            .iter()
            .map(|r| (r.name, (r.schema)(generator)))
            .collect()
    }

    fn config_schema(&self) -> &Value {
        self.schema.get_or_init(|| torii_config::schema_with(self))
    }

    fn build(&self, config: &Config) -> Result<Compiled, Vec<PluginError>> {
        let generation = self.state.begin();
        // Secret query parameters of this build (a catalog may serve concurrent loads: this
        // list is the build's own).
        let load = Load::new(config.cache.clone());
        // A route's last-good fallback keeps its answers in the cache's memory tier.
        if config
            .routes
            .iter()
            .any(|r| r.fallback.as_ref().is_some_and(|f| f.stale.is_some()))
        {
            load.memory(&self.state);
        }
        let mut errors = Vec::new();
        // Upstreams first: plugins are handed the ones they name.
        let upstreams = match self.registry.build(&config.upstreams) {
            Ok(u) => u,
            Err(e) => {
                errors.push(PluginError::new(
                    vec![key("upstreams")],
                    e,
                    "check the upstream's TLS files (`tls.ca`, `tls.client_cert`, `tls.client_key`)",
                ));
                Default::default()
            }
        };
        // The shared Redis, kept across reloads that leave its settings alone.
        let redis = match config.redis.as_ref().map(|r| self.stores.redis(r)) {
            None => None,
            Some(Ok(r)) => Some(r),
            Some(Err(e)) => {
                errors.push(PluginError::new(
                    vec![key("redis"), key("url")],
                    e,
                    "write `redis://host:6379` (or `rediss://` for TLS)",
                ));
                None
            }
        };
        // The live consumer set: plans and consumers' own settings are built first (they
        // do not look consumers up), then the directory with them, then everything else.
        let directory = Arc::new(Consumers::default());
        let plan_settings = self.build_plans(
            config,
            &upstreams,
            redis.as_ref(),
            &load,
            &directory,
            &mut errors,
        );
        let (plans, plan_index) = plan_settings;
        let mut settings = Vec::with_capacity(config.consumers.len());
        for (i, c) in config.consumers.iter().enumerate() {
            let own = self.build_map(
                &upstreams,
                redis.as_ref(),
                &load,
                &c.plugins,
                &[key("consumers"), Seg::Index(i), key("plugins")],
                &format!("consumer:{}", c.name),
                &directory,
                true,
                None,
                &mut errors,
            );
            settings.push(consumer_settings(
                c,
                own,
                &plans,
                &plan_index,
                i,
                &mut errors,
            ));
        }
        let mut settings = settings.into_iter();
        match Directory::build(&config.consumers, |_| settings.next().unwrap_or_default()) {
            Ok(d) => directory.install(Arc::new(d)),
            Err(mut e) => errors.append(&mut e),
        }
        let global = self.build_map(
            &upstreams,
            redis.as_ref(),
            &load,
            &config.plugins,
            &[key("plugins")],
            "global",
            &directory,
            false,
            None,
            &mut errors,
        );
        let mut chains = Vec::with_capacity(config.routes.len());
        for (i, r) in config.routes.iter().enumerate() {
            let base = [key("routes"), Seg::Index(i)];
            let own = self.build_map(
                &upstreams,
                redis.as_ref(),
                &load,
                &r.plugins,
                &[base[0].clone(), base[1].clone(), key("plugins")],
                &format!("route:{}", r.name),
                &directory,
                false,
                Some(&template::pattern_params(
                    r.matches
                        .path
                        .as_deref()
                        .or(r.matches.path_prefix.as_deref())
                        .unwrap_or("/"),
                )),
                &mut errors,
            );
            for (k, name) in r.disable_plugins.iter().enumerate() {
                if !self.by_name.contains_key(name.as_str()) {
                    errors.push(PluginError::new(
                        vec![
                            base[0].clone(),
                            base[1].clone(),
                            key("disable_plugins"),
                            Seg::Index(k),
                        ],
                        format!("unknown plugin `{name}`"),
                        "see docs/plugins.md for the list",
                    ));
                }
            }
            let mut entries: HashMap<&'static str, Entry> = global
                .iter()
                .filter(|(name, _)| !r.disable_plugins.iter().any(|d| d == *name))
                .map(|(k, v)| (*k, v.clone()))
                .collect();
            entries.extend(own);
            let anonymous = match &r.anonymous {
                None => None,
                Some(name) => match directory.pin(name) {
                    Some(c) => Some(Arc::new(Consumer {
                        anonymous: true,
                        name: c.name.clone(),
                        id: c.id.clone(),
                        groups: c.groups.clone(),
                        headers: c.headers.clone(),
                        plan: c.plan,
                        settings: c.settings.clone(),
                    })),
                    None => {
                        errors.push(PluginError::new(
                            vec![base[0].clone(), base[1].clone(), key("anonymous")],
                            format!("no consumer is named `{name}`"),
                            "declare it under `consumers:`",
                        ));
                        None
                    }
                },
            };
            chains.push(Arc::new(Chain::new(
                entries.into_values().collect(),
                anonymous,
                &plans,
            )));
        }
        let signer = match &config.identity.token {
            None => None,
            Some(t) => match TokenSigner::build(t) {
                Ok(s) => Some(Arc::new(s)),
                Err(mut e) => {
                    errors.append(&mut e);
                    None
                }
            },
        };
        let mut audiences = HashMap::new();
        for (i, u) in config.upstreams.iter().enumerate() {
            let Some(t) = &u.identity_token else { continue };
            let at = |k: Option<&str>| {
                let mut p = vec![key("upstreams"), Seg::Index(i), key("identity_token")];
                p.extend(k.map(key));
                p
            };
            match (&signer, &config.identity.token) {
                (Some(s), _) => match s.audience(t) {
                    Some(a) => {
                        audiences.insert(u.name.clone(), a);
                    }
                    None => errors.push(PluginError::new(
                        at(Some("key")),
                        "no signing key has this kid",
                        "name one of `identity.token.keys[].kid`",
                    )),
                },
                (None, None) => errors.push(PluginError::new(
                    at(None),
                    "identity tokens are not configured",
                    "add `identity: {token: {issuer: ..., keys: [...]}}`",
                )),
                (None, Some(_)) => {} // the token settings' own errors are reported
            }
        }
        errors.append(&mut identity::check(&config.identity));
        let identity = IdentityHeaders::new(&config.identity);
        let compositions = compositions::build(
            config,
            &upstreams,
            &identity,
            (signer.as_ref(), &audiences),
            &self.state,
            &mut errors,
        );
        if !errors.is_empty() {
            return Err(errors);
        }
        directory.set_builder(live::Builder {
            plans,
            plan_index,
            upstreams: upstreams.clone(),
            redis: redis.clone(),
            cache: config.cache.clone(),
        });
        Ok(Compiled {
            compositions,
            signer,
            audiences,
            chains,
            consumers: directory,
            identity,
            redact_query_params: load.redact.into_inner().unwrap_or_else(|e| e.into_inner()),
            cache: load.cache.into_inner().unwrap_or_else(|e| e.into_inner()),
            cache_shared: load
                .cache_shared
                .into_inner()
                .unwrap_or_else(|e| e.into_inner()),
            cache_counters: load
                .cache_counters
                .into_inner()
                .unwrap_or_else(|e| e.into_inner()),
            counters: load
                .counters
                .into_inner()
                .unwrap_or_else(|e| e.into_inner()),
            generation,
            upstreams,
            redis,
        })
    }
}

#[cfg(test)]
mod tests;
