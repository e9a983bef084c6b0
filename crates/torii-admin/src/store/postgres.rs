//! The PostgreSQL config store (cluster mode). Two tables (`migrations/`): `torii_revisions`,
//! one row per change with each entity before and after, and `torii_entities`, the current
//! entities. A commit takes a transaction-scoped advisory lock, checks the revision it
//! expects, writes both tables and `NOTIFY torii_config, '<revision>'` (delivered when the
//! transaction commits), so revisions are dense and ordered, and writers on different
//! nodes cannot both win.

use super::{ItemChange, Record, StoreError};
use sqlx::Row as _;
use sqlx::postgres::{PgPool, PgPoolOptions};
use std::time::Duration;
use torii_config::{EntityKind, Runtime};

/// The channel nodes listen on.
pub const CHANNEL: &str = "torii_config";

/// Advisory lock key of commits ("torii" in ASCII).
const LOCK_KEY: i64 = 0x0074_6f72_6969;

/// How long a store call waits for a connection.
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a store call may take in all (a partitioned PostgreSQL must not hold the
/// gateway's change lock). A commit cut off by it may still have committed; the node then
/// finds the revision when it catches up.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);

async fn timed<T>(
    f: impl std::future::Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    tokio::time::timeout(CALL_TIMEOUT, f)
        .await
        .unwrap_or_else(|_| {
            Err(StoreError::Io(format!(
                "PostgreSQL did not answer within {CALL_TIMEOUT:?}"
            )))
        })
}

/// A pool of connections to the cluster's PostgreSQL.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
    url: String,
}

fn db(e: sqlx::Error) -> StoreError {
    StoreError::Io(format!("PostgreSQL: {e}"))
}

fn kind_of(s: &str) -> Result<EntityKind, StoreError> {
    EntityKind::from_section(s)
        .ok_or_else(|| StoreError::Io(format!("PostgreSQL holds an unknown entity kind `{s}`")))
}

impl PgStore {
    /// A pool for `url` that connects when first used (so a node can start while
    /// PostgreSQL is down). A URL that does not parse is an error.
    pub fn new(url: &str) -> Result<Self, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(4)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_lazy(url)
            .map_err(|e| StoreError::Io(format!("the database URL: {e}")))?;
        Ok(Self {
            pool,
            url: url.to_string(),
        })
    }

    /// The URL (for the listener's own connection).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// `revision`, bounded by [`CALL_TIMEOUT`].
    pub async fn revision(&self) -> Result<u64, StoreError> {
        timed(self.revision_untimed()).await
    }

    /// `load`, bounded by [`CALL_TIMEOUT`].
    pub async fn load(&self) -> Result<Runtime, StoreError> {
        timed(self.load_untimed()).await
    }

    /// `commit`, bounded by [`CALL_TIMEOUT`].
    pub async fn commit(&self, expected: u64, record: &Record) -> Result<(), StoreError> {
        timed(self.commit_untimed(expected, record)).await
    }

    /// `since`, bounded by [`CALL_TIMEOUT`].
    pub async fn since(&self, after: u64) -> Result<Vec<Record>, StoreError> {
        timed(self.since_untimed(after)).await
    }

    /// `history`, bounded by [`CALL_TIMEOUT`].
    pub async fn history(
        &self,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<Record>, StoreError> {
        timed(self.history_untimed(before, limit)).await
    }

    /// `record`, bounded by [`CALL_TIMEOUT`].
    pub async fn record(&self, revision: u64) -> Result<Option<Record>, StoreError> {
        timed(self.record_untimed(revision)).await
    }

    /// Applies the shipped migrations (idempotent; serialized by sqlx's advisory lock).
    pub async fn migrate(&self) -> Result<(), StoreError> {
        sqlx::migrate!("./migrations")
            .run(&self.pool)
            .await
            .map_err(|e| StoreError::Io(format!("PostgreSQL migrations: {e}")))
    }

    /// The current revision.
    async fn revision_untimed(&self) -> Result<u64, StoreError> {
        let r: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(revision), 0) FROM torii_revisions")
            .fetch_one(&self.pool)
            .await
            .map_err(db)?;
        Ok(r as u64)
    }

    /// Every current entity, read in one snapshot with its revision.
    async fn load_untimed(&self) -> Result<Runtime, StoreError> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        let latest = sqlx::query(&format!(
            "SELECT {} FROM torii_revisions ORDER BY revision DESC LIMIT 1",
            Self::COLUMNS
        ))
        .fetch_optional(&mut *tx)
        .await
        .map_err(db)?;
        let (revision, at) = match &latest {
            Some(row) => {
                let r = Self::record_of(row)?;
                (r.revision as i64, Some(r.at))
            }
            None => (0, None),
        };
        let rows = sqlx::query("SELECT kind, name, value, revision FROM torii_entities")
            .fetch_all(&mut *tx)
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)?;
        let mut rt = Runtime {
            revision: revision as u64,
            at,
            ..Runtime::default()
        };
        for row in rows {
            let kind = kind_of(row.try_get::<&str, _>("kind").map_err(db)?)?;
            let name: String = row.try_get("name").map_err(db)?;
            let value: serde_json::Value = row.try_get("value").map_err(db)?;
            let revision: i64 = row.try_get("revision").map_err(db)?;
            rt.entities.entry(kind).or_default().insert(
                name,
                torii_config::Entity {
                    value,
                    revision: revision as u64,
                },
            );
        }
        Ok(rt)
    }

    /// Writes `record` if the store is at `expected`, and notifies every node.
    async fn commit_untimed(&self, expected: u64, record: &Record) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(LOCK_KEY)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        let now: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(revision), 0) FROM torii_revisions")
            .fetch_one(&mut *tx)
            .await
            .map_err(db)?;
        if now as u64 != expected {
            return Err(StoreError::Conflict(now as u64));
        }
        let rev = record.revision as i64;
        let changes =
            serde_json::to_value(&record.changes).map_err(|e| StoreError::Io(e.to_string()))?;
        sqlx::query(
            "INSERT INTO torii_revisions (revision, at, actor, action, changes) VALUES ($1, $2::timestamptz, $3, $4, $5)",
        )
        .bind(rev)
        .bind(&record.at)
        .bind(&record.actor)
        .bind(&record.action)
        .bind(changes)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        for c in &record.changes {
            match &c.after {
                Some(v) => sqlx::query(
                    "INSERT INTO torii_entities (kind, name, value, revision) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (kind, name) DO UPDATE SET value = EXCLUDED.value, revision = EXCLUDED.revision",
                )
                .bind(c.kind.section())
                .bind(&c.name)
                .bind(v)
                .bind(rev)
                .execute(&mut *tx)
                .await
                .map_err(db)?,
                None => sqlx::query("DELETE FROM torii_entities WHERE kind = $1 AND name = $2")
                    .bind(c.kind.section())
                    .bind(&c.name)
                    .execute(&mut *tx)
                    .await
                    .map_err(db)?,
            };
        }
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHANNEL)
            .bind(rev.to_string())
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(())
    }

    fn record_of(row: &sqlx::postgres::PgRow) -> Result<Record, StoreError> {
        let changes: serde_json::Value = row.try_get("changes").map_err(db)?;
        let changes: Vec<ItemChange> = serde_json::from_value(changes)
            .map_err(|e| StoreError::Io(format!("a stored revision does not parse: {e}")))?;
        Ok(Record {
            revision: row.try_get::<i64, _>("revision").map_err(db)? as u64,
            at: row.try_get("at_text").map_err(db)?,
            actor: row.try_get("actor").map_err(db)?,
            action: row.try_get("action").map_err(db)?,
            changes,
        })
    }

    const COLUMNS: &'static str = "revision, actor, action, changes, \
        to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') AS at_text";

    /// The records after `after`, oldest first.
    async fn since_untimed(&self, after: u64) -> Result<Vec<Record>, StoreError> {
        let q = format!(
            "SELECT {} FROM torii_revisions WHERE revision > $1 ORDER BY revision",
            Self::COLUMNS
        );
        let rows = sqlx::query(&q)
            .bind(after as i64)
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        rows.iter().map(Self::record_of).collect()
    }

    /// Newest first.
    async fn history_untimed(
        &self,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<Record>, StoreError> {
        let q = format!(
            "SELECT {} FROM torii_revisions WHERE revision < $1 ORDER BY revision DESC LIMIT $2",
            Self::COLUMNS
        );
        let rows = sqlx::query(&q)
            .bind(before.map_or(i64::MAX, |b| b as i64))
            .bind(limit as i64)
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        rows.iter().map(Self::record_of).collect()
    }

    /// One revision.
    async fn record_untimed(&self, revision: u64) -> Result<Option<Record>, StoreError> {
        let q = format!(
            "SELECT {} FROM torii_revisions WHERE revision = $1",
            Self::COLUMNS
        );
        let row = sqlx::query(&q)
            .bind(revision as i64)
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        row.as_ref().map(Self::record_of).transpose()
    }
}
