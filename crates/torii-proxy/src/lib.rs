//! # torii-proxy
//!
//! Torii's data plane. [`Gateway::start`] binds the listeners and the admin listener for a
//! loaded config; [`Gateway::apply`] swaps in a new one (hot reload); [`Gateway::shutdown`]
//! drains. The request path is in [`pipeline`]; upstream clients and pools are torii-upstream's.
//!
//! State that must survive reloads (upstream pools, metric series) lives in registries owned by
//! [`Shared`], keyed by stable identity; the config [`snapshot::Snapshot`] only references it.

pub mod admin;
pub mod bodies;
pub mod conn;
mod evolution;
mod exchange;
pub mod fallback;
pub mod forwarding;
pub mod framing;
mod io;
pub mod pipeline;
pub mod reload;
mod server;
pub mod snapshot;
pub mod split;
pub mod spool;
pub mod tls;
mod tunnel;
pub mod upstream_status;
mod watchdog;

pub use torii_telemetry::{access_log, metrics};

use arc_swap::ArcSwap;
use snapshot::Snapshot;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::{Mutex, Notify, watch};
use torii_plugins::Catalog;

/// A config loaded through the plugin catalog.
pub type Loaded = torii_config::Loaded<torii_plugins::Compiled>;

/// State shared by every connection of a gateway.
pub struct Shared {
    /// The current config snapshot, read once per request.
    pub snapshot: ArcSwap<Snapshot>,
    /// Metrics.
    pub metrics: Arc<metrics::Metrics>,
    /// Access log.
    pub access_log: access_log::AccessLog,
    /// The plugin catalog every load goes through (its state registry outlives reloads).
    pub catalog: Arc<Catalog>,
    /// The admin API, once installed (see [`Gateway::install_admin_api`]).
    pub admin_api: std::sync::OnceLock<Arc<dyn admin::AdminApi>>,
    ready: AtomicBool,
    shutdown: watch::Sender<bool>,
    active: AtomicUsize,
    drained: Notify,
}

/// One client connection's slot: its share of the listener's connection cap and of the open
/// connection count. Held by the connection and, after a WebSocket upgrade, by the tunnel, so
/// upgraded connections still count and shutdown waits for them.
pub struct ConnSlot {
    _permit: tokio::sync::OwnedSemaphorePermit,
    shared: Arc<Shared>,
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        self.shared.metrics.open_connections.decrement(1.0);
        if self.shared.active.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.shared.drained.notify_waiters();
        }
    }
}

impl Shared {
    /// Whether `/readyz` says ready.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }
    fn track_connection(
        self: &Arc<Self>,
        permit: tokio::sync::OwnedSemaphorePermit,
    ) -> Arc<ConnSlot> {
        self.active.fetch_add(1, Ordering::AcqRel);
        self.metrics.open_connections.increment(1.0);
        Arc::new(ConnSlot {
            _permit: permit,
            shared: self.clone(),
        })
    }
    /// The Prometheus text of `/metrics`: the gateway's metrics and the live state of the
    /// running config's upstreams.
    pub fn metrics_text(&self) -> String {
        self.metrics
            .access_log_dropped
            .absolute(self.access_log.dropped());
        let mut out = self.metrics.render();
        upstream_status::render_metrics(&self.snapshot.load(), &mut out);
        out
    }
    /// Open client connections.
    pub fn active_connections(&self) -> usize {
        self.active.load(Ordering::Acquire)
    }
}

/// A running gateway.
pub struct Gateway {
    shared: Arc<Shared>,
    /// Held while a config change is loaded and applied (file reloads, admin API writes,
    /// cluster updates), so none applies a mix older than another's.
    changes: Mutex<()>,
    listeners: Mutex<HashMap<String, server::RunningListener>>,
    admin: Option<SocketAddr>,
}

impl Gateway {
    /// Binds every listener and the admin listener, and starts serving `loaded`.
    /// `loaded` must come from `catalog` (reloads go through it too).
    pub async fn start(loaded: Loaded, catalog: Arc<Catalog>) -> std::io::Result<Arc<Self>> {
        let cfg = &loaded.config;
        let access_log = if cfg.access_log.enabled {
            access_log::AccessLog::open(&cfg.access_log.path, cfg.access_log.buffer_lines as usize)?
        } else {
            access_log::AccessLog::disabled()
        };
        let admin_cfg = cfg.admin.clone();
        let metrics = metrics::Metrics::new();
        let generation = loaded.plugins.generation;
        let snap = Snapshot::build(loaded, &metrics).map_err(std::io::Error::other)?;
        catalog.state().retain_generation(generation);
        let (shutdown, _) = watch::channel(false);
        let shared = Arc::new(Shared {
            snapshot: ArcSwap::from_pointee(snap),
            metrics,
            access_log,
            catalog,
            admin_api: std::sync::OnceLock::new(),
            ready: AtomicBool::new(false),
            shutdown,
            active: AtomicUsize::new(0),
            drained: Notify::new(),
        });
        let admin = if admin_cfg.enabled {
            Some(admin::start(admin_cfg.bind.0, shared.clone(), admin_cfg.tls.as_ref()).await?)
        } else {
            None
        };
        let gw = Arc::new(Self {
            shared: shared.clone(),
            changes: Mutex::new(()),
            listeners: Mutex::new(HashMap::new()),
            admin,
        });
        gw.sync_listeners().await?;
        shared.ready.store(true, Ordering::Release);
        Ok(gw)
    }

    /// The shared state.
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// The bound address of a listener (the real port when the config said 0).
    pub async fn listener_addr(&self, name: &str) -> Option<SocketAddr> {
        self.listeners.lock().await.get(name).map(|l| l.addr)
    }

    /// The admin listener's address.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin
    }

    /// Installs the admin API on the admin listener (once; later calls are ignored).
    pub fn install_admin_api(&self, api: Arc<dyn admin::AdminApi>) {
        let _ = self.shared.admin_api.set(api);
    }

    /// Takes the config-change lock: load and apply while holding it.
    pub async fn lock_changes(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.changes.lock().await
    }

    /// Binds listeners that are new or whose address changed, updates limits of kept ones, and
    /// stops accepting on removed ones. New sockets are bound before anything is swapped, so a
    /// bind failure leaves everything as it was.
    async fn sync_listeners(&self) -> std::io::Result<()> {
        let snap = self.shared.snapshot.load_full();
        let mut running = self.listeners.lock().await;
        let wanted: Vec<&str> = snap
            .config
            .listeners
            .iter()
            .map(|l| l.name.as_str())
            .collect();
        // A listener renamed without changing its address keeps its socket.
        for l in &snap.config.listeners {
            if running.contains_key(&l.name) {
                continue;
            }
            let old = running
                .iter()
                .find(|(n, r)| !wanted.contains(&n.as_str()) && r.configured == l.bind.0)
                .map(|(n, _)| n.clone());
            if let Some(old) = old.and_then(|n| running.remove(&n)) {
                running.insert(l.name.clone(), old);
            }
        }
        let mut fresh = HashMap::new();
        for l in &snap.config.listeners {
            let keep = running
                .get(&l.name)
                .is_some_and(|r| r.configured == l.bind.0);
            if !keep {
                match server::start(&l.name, l.bind.0, l.limits.clone(), self.shared.clone()).await
                {
                    Ok(r) => {
                        fresh.insert(l.name.clone(), r);
                    }
                    Err(e) => {
                        for (_, r) in fresh {
                            r.stop_accepting();
                        }
                        return Err(std::io::Error::new(
                            e.kind(),
                            format!("listener {} on {}: {e}", l.name, l.bind.0),
                        ));
                    }
                }
            }
        }
        running.retain(|name, r| {
            let keep = wanted.contains(&name.as_str()) && !fresh.contains_key(name);
            if !keep {
                r.stop_accepting();
            }
            keep
        });
        for l in &snap.config.listeners {
            if let Some(r) = running.get(&l.name) {
                r.settings.store(Arc::new(conn::ListenerSettings {
                    name: l.name.as_str().into(),
                    limits: l.limits.clone(),
                }));
                r.changed.notify_one();
            }
        }
        running.extend(fresh);
        Ok(())
    }

    /// Applies a new config: compile, bind new listeners, swap. In-flight requests finish on
    /// the snapshot they started with. On error the old config keeps serving.
    pub async fn apply(&self, loaded: Loaded) -> Result<(), String> {
        let generation = loaded.plugins.generation;
        let new = match Snapshot::build(loaded, &self.shared.metrics) {
            Ok(s) => Arc::new(s),
            Err(e) => {
                self.shared.metrics.reloads_failed.increment(1);
                return Err(e);
            }
        };
        let old = self.shared.snapshot.swap(new);
        if let Err(e) = self.sync_listeners().await {
            self.shared.snapshot.store(old);
            let _ = self.sync_listeners().await;
            self.shared.metrics.reloads_failed.increment(1);
            return Err(e.to_string());
        }
        // Plugin state the new config does not use (changed settings, removed routes) goes.
        self.shared.catalog.state().retain_generation(generation);
        self.shared.metrics.reloads_ok.increment(1);
        Ok(())
    }

    /// Records a reload that failed before it could be applied (a broken config).
    pub fn reload_rejected(&self) {
        self.shared.metrics.reloads_failed.increment(1);
    }

    /// Stops accepting, fails readiness, asks connections to finish (HTTP/1.1 closes after the
    /// in-flight response, HTTP/2 sends GOAWAY), and waits up to `grace` for them to end.
    pub async fn shutdown(&self, grace: Duration) {
        self.shared.ready.store(false, Ordering::Release);
        if let Some(api) = self.shared.admin_api.get() {
            api.stop();
        }
        for r in self.listeners.lock().await.values() {
            r.stop_accepting();
        }
        let _ = self.shared.shutdown.send(true);
        let deadline = tokio::time::Instant::now() + grace;
        loop {
            let notified = self.shared.drained.notified();
            if self.shared.active_connections() == 0 {
                return;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                tracing::warn!(
                    open = self.shared.active_connections(),
                    "grace period over; closing remaining connections"
                );
                return;
            }
        }
    }
}
