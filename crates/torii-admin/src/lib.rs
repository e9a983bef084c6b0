//! # torii-admin
//!
//! The admin API: REST and JSON on the admin listener, over the same load path as the config
//! file. Runtime entities (consumers, routes, upstreams, global plugin settings) live in a
//! config store ([`store`]); the effective config is the file with them added, and every
//! write loads the whole resulting config before anything is stored or applied, so a refused
//! write changes nothing.
//!
//! - [`entities`]: `/config/{kind}` collections and `/config/{kind}/{name}` resources, with
//!   ETags (`If-Match` / `If-None-Match`) and paging.
//! - [`credentials`]: API keys and basic-auth passwords, accepted once (or generated) and
//!   stored only as hashes.
//! - [`revisions`]: the history, one record per change (who, when, what), and rollback.
//! - [`openapi`]: `/openapi.json`, generated from the config's own JSON Schema.

pub mod apply;
pub mod cluster;
pub mod credentials;
pub mod entities;
pub mod openapi;
mod prepare;
pub mod reply;
mod request;
pub mod revisions;
mod status;
pub mod store;

use bytes::Bytes;
use http::{Method, Request, StatusCode};

use hyper::body::Incoming;
use reply::{ApiError, Reply};
use serde_json::Value;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use store::{ItemChange, Record, Store, StoreError};
use torii_config::{EntityKind, Runtime};
use torii_proxy::Gateway;
use torii_proxy::admin::{AdminApi, Principal};

pub use request::{MAX_BODY, MAX_DEPTH};
pub(crate) use request::{Query, read_json, read_json_or_empty};

/// The admin API of one gateway.
pub struct Admin {
    gw: Weak<Gateway>,
    store: Store,
    env: Arc<dyn torii_config::Env + Send + Sync>,
    openapi: OnceLock<Bytes>,
    /// The running file's elements as written (no `${NAME}` expanded), for reads of
    /// file-owned entities; keyed by the file text it was parsed from.
    file: Mutex<Option<(Arc<str>, Arc<Value>)>>,
}

/// One entity to set (`Some`) or remove (`None`) in a change.
pub type Put = (EntityKind, String, Option<Value>);

impl Admin {
    /// Installs the admin API on `gw`'s admin listener. `env` expands the file's `${NAME}`s
    /// when a write reloads it (the same environment as startup).
    pub fn install(
        gw: &Arc<Gateway>,
        store: Store,
        env: Arc<dyn torii_config::Env + Send + Sync>,
    ) -> Arc<Self> {
        let admin = Arc::new(Self {
            gw: Arc::downgrade(gw),
            store,
            env,
            openapi: OnceLock::new(),
            file: Mutex::new(None),
        });
        gw.install_admin_api(admin.clone());
        admin
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Whether the gateway is still there.
    pub fn is_running(&self) -> bool {
        self.gw.strong_count() > 0
    }

    fn gateway(&self) -> Result<Arc<Gateway>, ApiError> {
        self.gw.upgrade().ok_or_else(|| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "stopping",
                "the gateway is stopping",
            )
        })
    }

    /// The plugin catalog (the config schema with every plugin's settings).
    pub(crate) fn catalog(&self) -> Result<Arc<torii_plugins::Catalog>, ApiError> {
        Ok(self.gateway()?.shared().catalog.clone())
    }

    /// What the running config was loaded from (file text and runtime entities).
    fn source(&self) -> Result<Arc<torii_config::Source>, ApiError> {
        Ok(self.gateway()?.shared().snapshot.load().source.load_full())
    }

    /// The running runtime entities.
    pub fn runtime(&self) -> Result<Arc<Runtime>, ApiError> {
        Ok(self.source()?.runtime.clone())
    }

    /// The file's elements as written, parsed once per file text.
    pub(crate) fn file_json(&self) -> Result<Arc<Value>, ApiError> {
        let text = self.source()?.text.clone();
        let mut cached = self
            .file
            .lock()
            .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "lock"))?;
        if let Some((t, v)) = &*cached
            && Arc::ptr_eq(t, &text)
        {
            return Ok(v.clone());
        }
        let v = Arc::new(
            torii_config::yaml::parse(&text)
                .map(|n| n.to_json())
                .unwrap_or(Value::Null),
        );
        *cached = Some((text, v.clone()));
        Ok(v)
    }

    /// Applies a change: under the gateway's change lock, `plan` looks at the running
    /// runtime entities and says what to set (or refuses); the whole resulting config is
    /// loaded; only then is it recorded in the store and applied. Returns the new runtime
    /// entities and the record.
    pub async fn change(
        &self,
        who: &Principal,
        action: &str,
        plan: impl FnMut(&Runtime) -> Result<Vec<Put>, ApiError>,
    ) -> Result<(Arc<Runtime>, Record), ApiError> {
        self.change_or_check(who, action, false, plan).await
    }

    /// [`Admin::change`], or with `dry_run` everything up to and including the load of the
    /// resulting config but nothing stored or applied (the record says what would change).
    pub async fn change_or_check(
        &self,
        who: &Principal,
        action: &str,
        dry_run: bool,
        mut plan: impl FnMut(&Runtime) -> Result<Vec<Put>, ApiError>,
    ) -> Result<(Arc<Runtime>, Record), ApiError> {
        if !self.store.writable() && !dry_run {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "read_only",
                "this gateway has no config store, so runtime changes could not survive a restart",
            )
            .hint("start torii with --data-dir DIR (or TORII_DATA_DIR) to allow changes through the admin API"));
        }
        let gw = self.gateway()?;
        let _changing = gw.lock_changes().await;
        // In a cluster another node may have written since this one caught up: then catch
        // up and plan again (preconditions are checked against the newer entities).
        let mut attempts = 0;
        let (next, record, prepared, snap) = loop {
            attempts += 1;
            let snap = gw.shared().snapshot.load_full();
            let current = snap.source.load().runtime.clone();
            let (next, record) = self.plan_next(&current, who, action, &mut plan)?;
            if record.changes.is_empty() {
                return Ok((current, record));
            }
            let next = Arc::new(next);
            let prepared = self
                .prepare(&gw, &snap, next.clone(), &record.changes)
                .await
                .map_err(prepare::Refused::api_error)?;
            if dry_run {
                return Ok((current, record));
            }
            match self.store.commit(current.revision, &next, &record).await {
                Ok(()) => break (next, record, prepared, snap),
                Err(StoreError::Conflict(r)) if attempts < 3 => {
                    tracing::info!(
                        at = current.revision,
                        store = r,
                        "the config store moved on; catching up before the write"
                    );
                    if let Err(e) = self.catch_up(&gw).await {
                        return Err(ApiError::new(
                            StatusCode::SERVICE_UNAVAILABLE,
                            "store_unavailable",
                            format!("cannot catch up with the config store: {e}"),
                        ));
                    }
                }
                Err(StoreError::Conflict(r)) => {
                    return Err(ApiError::new(
                        StatusCode::CONFLICT,
                        "store_conflict",
                        format!("other writers keep changing the config store (now at revision {r}); nothing was changed"),
                    )
                    .hint("retry the request"));
                }
                Err(StoreError::Io(e)) => {
                    return Err(ApiError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "store_unavailable",
                        format!(
                            "the config store could not record the change, so nothing was applied: {e}"
                        ),
                    ));
                }
            }
        };
        let revision = record.revision;
        if let Err(e) = self.put_in_place(&gw, &snap, prepared, next.clone()).await {
            // Recorded but not running: a reload or the next change applies it.
            tracing::error!(target: "torii::audit", revision, error = %e, "a stored change could not be applied");
            return Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "apply_failed",
                format!("revision {revision} was stored but could not be applied: {e}"),
            ));
        }
        self.store
            .keep_last_good(&next, std::slice::from_ref(&record));
        tracing::info!(
            target: "torii::audit",
            revision,
            actor = %record.actor,
            action = %record.action,
            changes = ?record.changes.iter().map(|c| format!("{}/{}", c.kind.section(), c.name)).collect::<Vec<_>>(),
            "config changed"
        );
        Ok((next, record))
    }

    /// The runtime entities after `plan`'s changes, and the record of them.
    fn plan_next(
        &self,
        current: &Runtime,
        who: &Principal,
        action: &str,
        plan: &mut impl FnMut(&Runtime) -> Result<Vec<Put>, ApiError>,
    ) -> Result<(Runtime, Record), ApiError> {
        let puts = plan(current)?;
        let revision = current.revision + 1;
        let mut changes = Vec::new();
        for (kind, name, value) in puts {
            let before = current.get(kind, &name).map(|e| e.value.clone());
            if before == value {
                continue;
            }
            changes.push(ItemChange {
                kind,
                name,
                before,
                after: value,
            });
        }
        let record = Record {
            revision,
            at: now(),
            actor: who.name.clone(),
            action: action.into(),
            changes,
        };
        let mut next = current.clone();
        record.apply_to(&mut next);
        Ok((next, record))
    }

    /// Catches up with the config store (cluster mode): takes the change lock, reads the
    /// revisions after the running one and applies them. Returns the running revision.
    pub async fn sync(&self) -> Result<u64, String> {
        let gw = self.gateway().map_err(|e| e.message)?;
        let _changing = gw.lock_changes().await;
        self.catch_up(&gw).await
    }

    /// [`Admin::sync`] with the change lock held.
    async fn catch_up(&self, gw: &Gateway) -> Result<u64, String> {
        let snap = gw.shared().snapshot.load_full();
        let current = snap.source.load().runtime.clone();
        let pg = match &self.store {
            Store::Postgres(pg, _) => pg,
            // A local store ahead of the running config (a change stored but not applied):
            // apply what it holds.
            Store::Local(l) => {
                let stored = l.load().map_err(|e| e.to_string())?;
                if stored.revision == current.revision {
                    return Ok(current.revision);
                }
                return self
                    .load_and_apply(gw, &snap, stored, current.revision, None)
                    .await;
            }
            Store::None => return Ok(current.revision),
        };
        // The revision this node runs must still be the store's (same number, same time):
        // a store restored from a backup and written again reuses numbers.
        if current.revision > 0
            && let Some(at) = &current.at
        {
            let same = pg
                .record(current.revision)
                .await
                .map_err(|e| e.to_string())?
                .is_some_and(|r| &r.at == at);
            if !same {
                tracing::warn!(
                    revision = current.revision,
                    "the config store no longer has the revision this node runs (restored from a backup?); reloading it whole"
                );
                let whole = pg.load().await.map_err(|e| e.to_string())?;
                return self
                    .load_and_apply(gw, &snap, whole, current.revision, None)
                    .await;
            }
        }
        let records = pg
            .since(current.revision)
            .await
            .map_err(|e| e.to_string())?;
        let dense = records
            .iter()
            .enumerate()
            .all(|(i, r)| r.revision == current.revision + 1 + i as u64);
        let (next, records) = if records.is_empty() {
            // Nothing newer, unless the store went back (restored from a backup).
            if pg.revision().await.map_err(|e| e.to_string())? >= current.revision {
                return Ok(current.revision);
            }
            (pg.load().await.map_err(|e| e.to_string())?, None)
        } else if dense {
            let mut next = (*current).clone();
            for r in &records {
                r.apply_to(&mut next);
            }
            (next, Some(records))
        } else {
            (pg.load().await.map_err(|e| e.to_string())?, None)
        };
        self.load_and_apply(gw, &snap, next, current.revision, records.as_deref())
            .await
    }

    /// The one load path, on a blocking thread (a large config takes a while to check).
    async fn load(
        &self,
        gw: &Gateway,
        source: torii_config::Source,
    ) -> Result<Result<torii_proxy::Loaded, torii_config::Diagnostics>, String> {
        let catalog = gw.shared().catalog.clone();
        let env = self.env.clone();
        tokio::task::spawn_blocking(move || torii_config::load_source(&source, &*env, &*catalog))
            .await
            .map_err(|e| e.to_string())
    }

    /// Applies `next` (catch-up): built from `records` (the revisions after the running one)
    /// when they change consumers only, otherwise loaded with the running file (`None`: not
    /// known, a whole reload).
    async fn load_and_apply(
        &self,
        gw: &Gateway,
        snap: &torii_proxy::snapshot::Snapshot,
        next: Runtime,
        running: u64,
        records: Option<&[Record]>,
    ) -> Result<u64, String> {
        let revision = next.revision;
        let next = Arc::new(next);
        let changes = records.map(store::net_changes).unwrap_or_default();
        match self.prepare(gw, snap, next.clone(), &changes).await {
            Ok(p) => {
                self.put_in_place(gw, snap, p, next.clone()).await?;
                self.store
                    .keep_last_good(&next, records.unwrap_or_default());
                tracing::info!(revision, "caught up with the config store");
                Ok(revision)
            }
            Err(refused) => {
                gw.reload_rejected();
                let d = refused.describe();
                tracing::error!(
                    revision,
                    "the config store's entities do not load with this node's file; keeping revision {running}:\n{d}"
                );
                Err(d)
            }
        }
    }

    async fn route(&self, req: Request<Incoming>, who: Principal) -> Result<Reply, ApiError> {
        let path = req.uri().path().to_string();
        let segs: Vec<String> = path
            .trim_start_matches('/')
            .split('/')
            .map(|s| {
                percent_encoding::percent_decode_str(s)
                    .decode_utf8_lossy()
                    .into_owned()
            })
            .collect();
        let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
        let method = req.method().clone();
        let get = method == Method::GET || method == Method::HEAD;
        match segs.as_slice() {
            ["openapi.json"] if get => Ok(self.openapi_reply()),
            ["openapi.json"] => Err(ApiError::method("GET")),
            ["status"] if get => self.status().await,
            ["status"] => Err(ApiError::method("GET")),
            ["config"] if get => self.config_summary(),
            ["config"] => Err(ApiError::method("GET")),
            ["config", "apply"] if method == Method::POST => {
                let (parts, body) = req.into_parts();
                let body = read_json(body).await?;
                apply::apply(self, &who, parts.uri.query(), &parts.headers, body).await
            }
            ["config", "apply"] => Err(ApiError::method("POST")),
            ["config", "export"] if get => apply::export(self, req.uri().query()),
            ["config", "export"] => Err(ApiError::method("GET")),
            ["config", "revisions"] if get => revisions::list(self, req.uri().query()).await,
            ["config", "revisions"] => Err(ApiError::method("GET")),
            ["config", "revisions", n] if get => revisions::get(self, n).await,
            ["config", "revisions", _] => Err(ApiError::method("GET")),
            ["config", "revisions", n, "rollback"] if method == Method::POST => {
                revisions::rollback(self, &who, n, req.headers()).await
            }
            ["config", "revisions", _, "rollback"] => Err(ApiError::method("POST")),
            ["config", kind] => {
                let kind = entity_kind(kind)?;
                if get {
                    entities::list(self, kind, req.uri().query())
                } else {
                    Err(ApiError::method("GET"))
                }
            }
            ["config", kind, name] => {
                let kind = entity_kind(kind)?;
                let name = name.to_string();
                match method {
                    Method::GET | Method::HEAD => entities::get(self, kind, &name),
                    Method::PUT => {
                        let (parts, body) = req.into_parts();
                        let body = read_json(body).await?;
                        entities::put(self, &who, kind, &name, &parts.headers, body).await
                    }
                    Method::DELETE => {
                        entities::delete(self, &who, kind, &name, req.headers()).await
                    }
                    _ => Err(ApiError::method("GET, PUT, DELETE")),
                }
            }
            ["config", "consumers", name, "keys"] => {
                if method != Method::POST {
                    return Err(ApiError::method("POST"));
                }
                let name = name.to_string();
                let (parts, body) = req.into_parts();
                let body = read_json_or_empty(body).await?;
                credentials::add_key(self, &who, &name, &parts.headers, body).await
            }
            ["config", "consumers", name, "basic_auth"] => {
                if method != Method::POST {
                    return Err(ApiError::method("POST"));
                }
                let name = name.to_string();
                let (parts, body) = req.into_parts();
                let body = read_json(body).await?;
                credentials::add_password(self, &who, &name, &parts.headers, body).await
            }
            _ => Err(ApiError::not_found(format!(
                "no admin resource at {path}; see /openapi.json"
            ))),
        }
    }
}

impl AdminApi for Admin {
    fn stop(&self) {
        self.store.close();
    }

    fn serves(&self, path: &str) -> bool {
        path == "/openapi.json"
            || path == "/status"
            || path == "/config"
            || path.starts_with("/config/")
    }

    fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        who: Principal,
    ) -> std::pin::Pin<Box<dyn Future<Output = Reply> + Send + 'static>> {
        Box::pin(async move {
            match self.route(req, who).await {
                Ok(r) => r,
                Err(e) => e.into_reply(),
            }
        })
    }
}

fn entity_kind(s: &str) -> Result<EntityKind, ApiError> {
    EntityKind::from_section(s).ok_or_else(|| {
        ApiError::not_found(format!(
            "no collection `{s}`: use upstreams, routes, consumers, plugins or certificates"
        ))
    })
}

/// Now, RFC 3339 UTC.
/// Microseconds, as PostgreSQL keeps them: the text must read back the same from the store.
fn now() -> String {
    let t = time::OffsetDateTime::now_utc();
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.microsecond()
    )
}
