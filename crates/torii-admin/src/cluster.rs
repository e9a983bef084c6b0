//! Cluster mode: a node follows the PostgreSQL config store. It listens on the
//! `torii_config` channel (every commit notifies it) and catches up by reading the revisions
//! after its own ([`Admin::sync`]); after every (re)connection, and every
//! [`POLL_INTERVAL`] as a safety net for a notification lost with a connection, it catches
//! up too. While PostgreSQL is unreachable the node keeps serving its running config and
//! retries with backoff (250 ms doubling to [`MAX_BACKOFF`]).

use crate::Admin;
use crate::store::{PgStore, Store, StoreError};
use sqlx::postgres::PgListener;
use std::sync::Arc;
use std::time::Duration;
use torii_config::Runtime;

/// How often a connected node checks the store without a notification.
pub const POLL_INTERVAL: Duration = Duration::from_secs(2);

/// The longest wait between reconnection attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// How long startup waits for PostgreSQL before starting from the last known good copy.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(5);

/// The runtime entities a node starts with: the store's (migrations applied first, for
/// PostgreSQL); when PostgreSQL cannot be reached within [`STARTUP_TIMEOUT`], the last known
/// good copy in the data directory (empty without one), and the node catches up later.
pub async fn initial_runtime(store: &Store) -> Result<Runtime, StoreError> {
    let Store::Postgres(pg, local) = store else {
        return store.load().await;
    };
    let fetched = tokio::time::timeout(STARTUP_TIMEOUT, async {
        pg.migrate().await?;
        pg.load().await
    })
    .await
    .unwrap_or_else(|_| Err(StoreError::Io("PostgreSQL did not answer in time".into())));
    match fetched {
        Ok(rt) => {
            store.keep_last_good(&rt, &[]);
            Ok(rt)
        }
        Err(e) => {
            let last = match local {
                Some(l) => l.load()?,
                None => Runtime::default(),
            };
            tracing::warn!(error = %e, revision = last.revision, "PostgreSQL is unreachable; starting from the last known good config");
            Ok(last)
        }
    }
}

/// Starts following the store (cluster mode only; a no-op otherwise).
pub fn follow(admin: Arc<Admin>) {
    let Store::Postgres(pg, _) = admin.store() else {
        return;
    };
    let pg = pg.clone();
    let admin = Arc::downgrade(&admin);
    tokio::spawn(async move {
        let mut backoff = Duration::from_millis(250);
        let mut migrated = false;
        loop {
            let Some(a) = admin.upgrade() else { return };
            let mut connected = false;
            match session(&pg, &a, &mut migrated, &mut connected).await {
                Ok(()) => return,
                Err(e) => {
                    if connected {
                        backoff = Duration::from_millis(250);
                    }
                    tracing::warn!(error = %e, retry_in = ?backoff, "lost the config store");
                }
            }
            drop(a);
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    });
}

/// One connection's worth of following; returns `Ok` when the gateway is gone.
async fn session(
    pg: &PgStore,
    admin: &Arc<Admin>,
    migrated: &mut bool,
    connected: &mut bool,
) -> Result<(), String> {
    if !*migrated {
        pg.migrate().await.map_err(|e| e.to_string())?;
        *migrated = true;
    }
    let mut listener = PgListener::connect(pg.url())
        .await
        .map_err(|e| e.to_string())?;
    listener
        .listen(crate::store::postgres_channel())
        .await
        .map_err(|e| e.to_string())?;
    *connected = true;
    // A revision this node's file does not accept is logged by `sync` and retried on the
    // next notification or poll; only a lost connection ends the session.
    let _ = admin.sync().await;
    loop {
        if !admin.is_running() {
            return Ok(());
        }
        tokio::select! {
            n = listener.try_recv() => match n {
                Ok(Some(_)) => { let _ = admin.sync().await; }
                // The connection dropped; the next receive reconnects (or fails).
                Ok(None) => {}
                Err(e) => return Err(e.to_string()),
            },
            () = tokio::time::sleep(POLL_INTERVAL) => {
                let _ = admin.sync().await;
            }
        }
    }
}
