//! The compiled config snapshot: everything the request path needs, built once per load and
//! swapped atomically on reload. Requests read it once each (not once per connection), so an
//! old keep-alive or HTTP/2 connection sees new routes after a reload.
//!
//! Long-lived state (upstream pools, metric series) is not in here: it lives in registries
//! keyed by stable identity and is only referenced.

use crate::Loaded;
use crate::metrics::{Metrics, RouteMetrics, UpstreamErrors};
use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use ipnet::IpNet;
use std::collections::HashMap;
use std::sync::Arc;
use torii_config::PathTemplate;
use torii_config::schema::Rewrite as RewriteConfig;
use torii_plugins::{Chain, Consumers, IdentityHeaders};
use torii_router::Router;

impl Action {
    /// The upstream the request went to: `arm` is what [`Action::pick`] chose.
    pub fn arm(&self, arm: usize) -> Option<&Arm> {
        match self {
            Action::Proxy(a) => Some(a),
            Action::Split(s) => s.arm(arm),
            Action::Direct { .. } | Action::Compose(_) => None,
        }
    }

    /// The upstream for this request (an index for [`Action::arm`]); `None` for a direct
    /// answer.
    pub fn pick(
        &self,
        req: &http::request::Parts,
        ctx: &torii_core::RequestContext,
    ) -> Option<usize> {
        match self {
            Action::Proxy(_) => Some(0),
            Action::Split(s) => Some(s.pick(req, ctx)),
            Action::Direct { .. } | Action::Compose(_) => None,
        }
    }
}

pub use crate::split::Arm;

/// What a route does.
pub enum Action {
    /// Proxy to an upstream.
    Proxy(Arm),
    /// Proxy to one of several upstreams, by weight (`split`).
    Split(Box<crate::split::Split>),
    /// Answer with a composition of backend calls.
    Compose(Arc<torii_compose::Composition>),
    /// Answer directly.
    Direct {
        /// Status.
        status: StatusCode,
        /// Headers.
        headers: HeaderMap,
        /// Body.
        body: Bytes,
    },
}

/// A path rewrite.
pub enum Rewrite {
    /// Remove a prefix on a segment boundary.
    StripPrefix(String),
    /// Render a template over the route parameters.
    Template(PathTemplate),
}

/// A compiled route.
pub struct CompiledRoute {
    /// Name (log and metric label).
    pub name: Arc<str>,
    /// What it does.
    pub action: Action,
    /// Optional rewrite.
    pub rewrite: Option<Rewrite>,
    /// Metric handles.
    pub metrics: RouteMetrics,
    /// The route's plugins, compiled at load.
    pub chain: Arc<Chain>,
    /// The static answer that masks upstream failures, when configured.
    pub fallback: Option<Box<crate::fallback::StaticFallback>>,
    /// The exchange stack: the last-good fallback when configured (outermost), then the
    /// chain's exchange plugins.
    pub stages: Box<[Arc<dyn torii_core::Plugin>]>,
    /// The route's own rules for its upstream calls (`timeouts`, `retry_non_idempotent`).
    pub call: torii_upstream::CallPolicy,
    /// Its deprecation, when its API is deprecated.
    pub(crate) deprecation: Option<Box<crate::evolution::Deprecated>>,
}

/// Per-listener view: its router and trusted proxies.
pub struct ListenerView {
    /// Routes of this listener.
    pub router: Router<usize>,
    /// Trusted proxies.
    pub trusted: Vec<IpNet>,
    /// TLS termination, when configured.
    pub tls: Option<crate::tls::ListenerTlsRuntime>,
}

/// One compiled config.
pub struct Snapshot {
    /// By listener name.
    pub listeners: foldhash::HashMap<String, ListenerView>,
    /// By route index.
    pub routes: Vec<CompiledRoute>,
    /// Largest request body.
    pub max_body: u64,
    /// Request bodies with a Content-Length up to this are read whole before the upstream call.
    pub body_buffer: u64,
    /// The named upstreams of this config (for `/metrics` and `/upstreams`).
    pub upstreams: torii_upstream::Upstreams,
    /// The gateway's Redis (for `/metrics` and `/redis`), when configured.
    pub redis: Option<Arc<torii_store::Redis>>,
    /// The response cache's memory tier and each cache's counters (for `/metrics`).
    pub cache: Option<Arc<torii_cache::Memory>>,
    /// The cache's shared tier (Redis), when a route's cache is shared.
    pub cache_shared: Option<Arc<torii_cache::SharedTier>>,
    /// Each cache's counters, by scope.
    pub cache_counters: Vec<(String, Arc<torii_cache::status::Counters>)>,
    /// Where requests name their API version (`versioning`).
    pub(crate) versioning: Option<crate::evolution::Versions>,
    /// Other plugins' counters, shown on `/metrics`.
    pub plugin_counters: Vec<torii_plugins::Counted>,
    /// Read-ahead of upstream response bodies (`None`: off).
    pub spool: Option<Arc<crate::spool::Spooling>>,
    /// Query parameters redacted in logs.
    pub redact: Vec<String>,
    /// Metrics of requests no route took.
    pub unrouted: RouteMetrics,
    /// The consumers (with their own plugin settings): changed in place by a consumer
    /// change through the admin API, without a new snapshot.
    pub consumers: Arc<Consumers>,
    /// Identity headers (stripped from every request, set after authentication).
    pub identity: Arc<IdentityHeaders>,
    /// Signs identity tokens and serves their JWKS.
    pub signer: Option<Arc<torii_plugins::TokenSigner>>,
    /// The config it was built from.
    pub config: torii_config::Config,
    /// The file text and runtime entities of that config (replaced, with the consumers, by
    /// a consumer change that does not make a new snapshot).
    pub source: arc_swap::ArcSwap<torii_config::Source>,
}

impl Snapshot {
    /// Compiles a loaded config (its upstreams were built with its plugins, reusing unchanged
    /// ones). Fails (changing nothing) when a listener certificate or key cannot be loaded.
    pub fn build(loaded: Loaded, metrics: &Metrics) -> Result<Self, String> {
        let Loaded {
            mut config,
            mut routers,
            plugins,
            source,
        } = loaded;
        // The consumers live in `plugins.consumers` (changed there in place); a copy here
        // would go stale and cost memory at 100,000 consumers.
        config.consumers = Vec::new();
        // A route without its chain would run without its plugins (no authentication):
        // refuse the config instead.
        if plugins.chains.len() != config.routes.len() {
            return Err(format!(
                "{} plugin chains for {} routes",
                plugins.chains.len(),
                config.routes.len()
            ));
        }
        let mut chains = plugins.chains.into_iter();
        let mut compositions = plugins.compositions.into_iter();
        let mut tls = HashMap::new();
        for l in &config.listeners {
            if let Some(t) = &l.tls {
                tls.insert(
                    l.name.clone(),
                    crate::tls::server_config(t, &crate::tls::certificates_of(&config, &l.name))
                        .map_err(|e| format!("listener {}: {e}", l.name))?,
                );
            }
        }
        let upstreams = &plugins.upstreams;
        let mut errors: HashMap<String, Arc<UpstreamErrors>> = HashMap::new();
        let routes = config
            .routes
            .iter()
            .map(|r| {
                let mut arm = |name: &str| {
                    let upstream = upstreams.get(name)?.clone();
                    let errors = errors
                        .entry(name.to_string())
                        .or_insert_with(|| Arc::new(metrics.upstream_errors(name)))
                        .clone();
                    Some(Arm {
                        upstream,
                        errors,
                        audience: plugins.audiences.get(name).cloned(),
                    })
                };
                let composition = compositions.next().flatten();
                let action = match (&r.upstream, &r.split, &r.direct_response) {
                    _ if r.compose.is_some() => match composition {
                        Some(c) => Action::Compose(c),
                        None => direct(500, &Default::default(), ""),
                    },
                    (Some(name), _, _) => match arm(name) {
                        Some(a) => Action::Proxy(a),
                        None => direct(502, &Default::default(), ""),
                    },
                    (None, Some(s), _) => match crate::split::Split::new(s, arm) {
                        Some(s) => Action::Split(Box::new(s)),
                        None => direct(502, &Default::default(), ""),
                    },
                    (None, None, Some(d)) => direct(d.status, &d.headers, &d.body),
                    (None, None, None) => direct(500, &Default::default(), ""),
                };
                let pattern = r
                    .matches
                    .path
                    .as_deref()
                    .or(r.matches.path_prefix.as_deref())
                    .unwrap_or("/");
                let rewrite = r.rewrite.as_ref().and_then(|rw: &RewriteConfig| {
                    match (&rw.strip_prefix, &rw.path) {
                        (Some(p), _) => {
                            Some(Rewrite::StripPrefix(p.trim_end_matches('/').to_string()))
                        }
                        (None, Some(t)) => PathTemplate::compile(t, pattern)
                            .ok()
                            .map(Rewrite::Template),
                        _ => None,
                    }
                });
                // Lengths checked above: every route has its chain.
                let chain: Arc<Chain> = chains.next().unwrap_or_default();
                // The masked failures still count as the upstream's errors (on a split route
                // the stage does not know which upstream failed: they are logged only).
                let upstream_errors = match &action {
                    Action::Proxy(a) => Some(a.errors.clone()),
                    _ => None,
                };
                let last_good =
                    r.fallback
                        .as_ref()
                        .zip(plugins.cache.as_ref())
                        .and_then(|(f, m)| {
                            crate::fallback::LastGood::new(f, m.clone(), upstream_errors)
                        });
                let stages: Box<[Arc<dyn torii_core::Plugin>]> = last_good
                    .into_iter()
                    .map(|l| Arc::new(l) as Arc<dyn torii_core::Plugin>)
                    .chain(chain.stages().iter().cloned())
                    .collect();
                CompiledRoute {
                    name: r.name.as_str().into(),
                    action,
                    rewrite,
                    metrics: metrics.route(&r.name),
                    chain,
                    stages,
                    fallback: r
                        .fallback
                        .as_ref()
                        .filter(|f| crate::fallback::StaticFallback::configured(f))
                        .map(|f| Box::new(crate::fallback::StaticFallback::new(f))),
                    call: torii_upstream::CallPolicy {
                        per_try: r.timeouts.response_headers.map(|d| d.0),
                        total: r.timeouts.total.map(|d| d.0),
                        retry_unsafe: r.retry_non_idempotent,
                    },
                    deprecation: r
                        .deprecation
                        .as_ref()
                        .map(|d| Box::new(crate::evolution::Deprecated::new(d))),
                }
            })
            .collect();
        let listeners = config
            .listeners
            .iter()
            .map(|l| {
                let router = match routers.remove(&l.name) {
                    Some(r) => r,
                    None => Router::build(Vec::new())
                        .map_err(|_| format!("listener {}: no router", l.name))?,
                };
                let view = ListenerView {
                    router,
                    trusted: l.trusted_proxies.iter().map(|c| c.0).collect(),
                    tls: tls.remove(&l.name),
                };
                Ok((l.name.clone(), view))
            })
            .collect::<Result<_, String>>()?;
        Ok(Self {
            listeners,
            routes,
            max_body: config.server.max_request_body.0,
            body_buffer: config.server.request_body_buffer.0,
            spool: spooling(&config.server.response_buffering, metrics),
            upstreams: plugins.upstreams.clone(),
            redis: plugins.redis.clone(),
            cache: plugins.cache.clone(),
            cache_shared: plugins.cache_shared.clone(),
            cache_counters: plugins.cache_counters.clone(),
            plugin_counters: plugins.counters.clone(),
            versioning: config
                .versioning
                .as_ref()
                .and_then(crate::evolution::Versions::new),
            redact: {
                let mut r = config.access_log.redact_query_params.clone();
                for q in plugins.redact_query_params {
                    if !r.contains(&q) {
                        r.push(q);
                    }
                }
                r
            },
            consumers: plugins.consumers,
            identity: Arc::new(plugins.identity),
            signer: plugins.signer,
            unrouted: metrics.route("<none>"),
            config,
            source: arc_swap::ArcSwap::from_pointee(source),
        })
    }
}

impl Snapshot {
    /// Applies a consumer change built by [`torii_plugins::Catalog::change_consumers`]: the
    /// directory requests look consumers up in, and the runtime entities it came from. No
    /// router, chain or upstream is rebuilt. The caller holds the gateway's change lock.
    pub fn change_consumers(
        &self,
        directory: torii_plugins::Directory,
        runtime: Arc<torii_config::Runtime>,
    ) {
        self.consumers.install(Arc::new(directory));
        let source = self.source.load().with_runtime(runtime);
        self.source.store(Arc::new(source));
    }
}

fn spooling(
    c: &torii_config::schema::ResponseBuffering,
    metrics: &Metrics,
) -> Option<Arc<crate::spool::Spooling>> {
    c.enabled.then(|| {
        Arc::new(crate::spool::Spooling {
            memory: usize::try_from(c.memory.0).unwrap_or(usize::MAX),
            max_file: c.max_temp_file.0,
            max_total: c.max_temp_total.0,
            dir: c
                .temp_dir
                .as_ref()
                .map_or_else(std::env::temp_dir, std::path::PathBuf::from),
            on_disk: metrics.spool_on_disk.clone(),
            gauge: metrics.spool_disk_bytes.clone(),
            spooled: metrics.responses_spooled.clone(),
        })
    })
}

/// The header map of a configured answer (`direct_response`, `fallback`). The validator
/// rejects bad names and values, so none are skipped here in practice.
fn direct(status: u16, headers: &std::collections::BTreeMap<String, String>, body: &str) -> Action {
    Action::Direct {
        status: StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        headers: crate::fallback::header_map(headers),
        body: Bytes::copy_from_slice(body.as_bytes()),
    }
}
