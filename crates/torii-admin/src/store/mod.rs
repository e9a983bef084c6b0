//! The config store: where runtime entities and their history live.
//!
//! - [`LocalStore`] (`torii run --data-dir DIR`): a single node, files in a directory.
//! - [`PgStore`] (`torii run --database-url URL`): cluster mode. Every node reads and
//!   writes the same PostgreSQL; a commit notifies the others (`NOTIFY torii_config`), which
//!   catch up by reading the revisions after theirs ([`crate::cluster`]). With `--data-dir`
//!   too, a node keeps its last known good entities there and starts from them when
//!   PostgreSQL is down.

mod local;
mod postgres;

pub use local::LocalStore;
pub use postgres::PgStore;

/// The PostgreSQL channel commits are announced on.
pub fn postgres_channel() -> &'static str {
    postgres::CHANNEL
}

use serde::{Deserialize, Serialize};
use serde_json::Value;
use torii_config::{EntityKind, Runtime};

/// One entity a revision changed: its value before and after (`None`: absent).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ItemChange {
    /// The kind.
    pub kind: EntityKind,
    /// The name.
    pub name: String,
    /// The value before the change.
    pub before: Option<Value>,
    /// The value after the change.
    pub after: Option<Value>,
}

/// One revision of the config store: who changed what, when.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// The new revision.
    pub revision: u64,
    /// When (RFC 3339, UTC).
    pub at: String,
    /// Who: the admin token's name (`local` without tokens).
    pub actor: String,
    /// `put`, `delete`, `credential` or `rollback`.
    pub action: String,
    /// What changed.
    pub changes: Vec<ItemChange>,
}

impl Record {
    /// Applies this record's changes to `rt` (which must be at the previous revision).
    pub fn apply_to(&self, rt: &mut Runtime) {
        for c in &self.changes {
            let map = rt.entities.entry(c.kind).or_default();
            match &c.after {
                Some(v) => {
                    map.insert(
                        c.name.clone(),
                        torii_config::Entity {
                            value: v.clone(),
                            revision: self.revision,
                        },
                    );
                }
                None => {
                    map.remove(&c.name);
                }
            }
        }
        rt.entities.retain(|_, m| !m.is_empty());
        rt.revision = self.revision;
        rt.at = Some(self.at.clone());
    }
}

/// The net change of consecutive records: per entity, its value before the first and after
/// the last, in the order entities were first changed (unchanged ones left out).
pub fn net_changes(records: &[Record]) -> Vec<ItemChange> {
    let mut out: Vec<ItemChange> = Vec::new();
    let mut at: std::collections::HashMap<(EntityKind, &str), usize> =
        std::collections::HashMap::new();
    for r in records {
        for c in &r.changes {
            match at.get(&(c.kind, c.name.as_str())) {
                Some(&i) => out[i].after = c.after.clone(),
                None => {
                    at.insert((c.kind, c.name.as_str()), out.len());
                    out.push(c.clone());
                }
            }
        }
    }
    out.retain(|c| c.before != c.after);
    out
}

/// Why the store refused or failed a commit.
#[derive(Debug)]
pub enum StoreError {
    /// Another writer committed first: the store is at this revision.
    Conflict(u64),
    /// The store could not be read or written.
    Io(String),
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Conflict(r) => write!(f, "the config store moved on to revision {r}"),
            Self::Io(e) => write!(f, "{e}"),
        }
    }
}

/// A config store.
#[derive(Debug)]
pub enum Store {
    /// No store: the admin API reads, and refuses writes (nothing could survive a restart).
    None,
    /// A directory on this node.
    Local(LocalStore),
    /// PostgreSQL shared by a fleet, with an optional local copy of the last known good
    /// entities.
    Postgres(PgStore, Option<LocalStore>),
}

impl Store {
    /// The runtime entities as last committed.
    pub async fn load(&self) -> Result<Runtime, StoreError> {
        match self {
            Self::None => Ok(Runtime::default()),
            Self::Local(s) => s.load(),
            Self::Postgres(p, _) => p.load().await,
        }
    }

    /// Records `record` and makes `next` the current runtime, if the store is still at
    /// `expected`.
    pub async fn commit(
        &self,
        expected: u64,
        next: &Runtime,
        record: &Record,
    ) -> Result<(), StoreError> {
        match self {
            Self::None => Err(StoreError::Io(
                "no config store: start torii with --data-dir DIR to keep runtime changes".into(),
            )),
            Self::Local(s) => s.commit(expected, next, record),
            Self::Postgres(p, _) => p.commit(expected, record).await,
        }
    }

    /// Revisions, newest first: at most `limit`, older than `before` when given.
    pub async fn history(
        &self,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<Record>, StoreError> {
        match self {
            Self::None => Ok(Vec::new()),
            Self::Local(s) => s.history(before, limit),
            Self::Postgres(p, _) => p.history(before, limit).await,
        }
    }

    /// The records after revision `after`, oldest first.
    pub async fn since(&self, after: u64) -> Result<Vec<Record>, StoreError> {
        match self {
            Self::None => Ok(Vec::new()),
            Self::Local(s) => {
                let mut all = s.read_history()?;
                all.retain(|r| r.revision > after);
                Ok(all)
            }
            Self::Postgres(p, _) => p.since(after).await,
        }
    }

    /// One revision.
    pub async fn record(&self, revision: u64) -> Result<Option<Record>, StoreError> {
        match self {
            Self::None => Ok(None),
            Self::Local(s) => Ok(s
                .read_history()?
                .into_iter()
                .find(|r| r.revision == revision)),
            Self::Postgres(p, _) => p.record(revision).await,
        }
    }

    /// Keeps `rt` as this node's last known good entities (cluster mode with a data
    /// directory): `records` are the revisions that led to it from the last one kept
    /// (appended; empty: `rt` is written whole). A failure is logged, the node keeps running.
    pub fn keep_last_good(&self, rt: &Runtime, records: &[Record]) {
        if let Self::Postgres(_, Some(local)) = self
            && let Err(e) = local.keep(rt, records)
        {
            tracing::warn!(error = %e, "cannot keep the last known good config");
        }
    }

    /// Releases local files for another process (the gateway stopped).
    pub fn close(&self) {
        match self {
            Self::Local(l) | Self::Postgres(_, Some(l)) => l.close(),
            _ => {}
        }
    }

    /// Whether writes can be kept.
    pub fn writable(&self) -> bool {
        !matches!(self, Self::None)
    }

    /// `none`, `local` or `postgres`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Local(_) => "local",
            Self::Postgres(..) => "postgres",
        }
    }
}
