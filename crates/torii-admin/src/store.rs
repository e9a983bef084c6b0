//! The config store: where runtime entities and their history live.
//!
//! - **Local** (`torii run --data-dir DIR`): a single node. `runtime.json` holds the current
//!   entities (replaced atomically: written to a temporary file, synced, renamed), and
//!   `history.jsonl` one line per revision (appended and synced before the change applies).
//! - PostgreSQL (cluster mode) comes with the cluster work of issue 20; it keeps the same
//!   records in tables.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
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
    /// `put`, `delete`, `credential`, `rollback` or `apply`.
    pub action: String,
    /// What changed.
    pub changes: Vec<ItemChange>,
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
}

impl Store {
    /// The runtime entities as last committed.
    pub fn load(&self) -> Result<Runtime, StoreError> {
        match self {
            Self::None => Ok(Runtime::default()),
            Self::Local(s) => s.load(),
        }
    }

    /// Records `record` and makes `next` the current runtime, if the store is still at
    /// `expected`.
    pub fn commit(&self, expected: u64, next: &Runtime, record: &Record) -> Result<(), StoreError> {
        match self {
            Self::None => Err(StoreError::Io(
                "no config store: start torii with --data-dir DIR to keep runtime changes".into(),
            )),
            Self::Local(s) => s.commit(expected, next, record),
        }
    }

    /// Revisions, newest first: at most `limit`, older than `before` when given.
    pub fn history(&self, before: Option<u64>, limit: usize) -> Result<Vec<Record>, StoreError> {
        match self {
            Self::None => Ok(Vec::new()),
            Self::Local(s) => s.history(before, limit),
        }
    }

    /// The records after revision `after`, oldest first (for rollback).
    pub fn since(&self, after: u64) -> Result<Vec<Record>, StoreError> {
        match self {
            Self::None => Ok(Vec::new()),
            Self::Local(s) => {
                let mut all = s.read_history()?;
                all.retain(|r| r.revision > after);
                Ok(all)
            }
        }
    }

    /// One revision.
    pub fn record(&self, revision: u64) -> Result<Option<Record>, StoreError> {
        match self {
            Self::None => Ok(None),
            Self::Local(s) => Ok(s
                .read_history()?
                .into_iter()
                .find(|r| r.revision == revision)),
        }
    }

    /// Whether writes can be kept.
    pub fn writable(&self) -> bool {
        !matches!(self, Self::None)
    }
}

/// The local store: a directory.
#[derive(Debug)]
pub struct LocalStore {
    dir: PathBuf,
    /// Serializes commits of this process (the gateway's change lock already does; this
    /// keeps the store correct on its own).
    lock: Mutex<()>,
}

fn io(what: &str, path: &Path, e: std::io::Error) -> StoreError {
    StoreError::Io(format!("{what} {}: {e}", path.display()))
}

impl LocalStore {
    /// Opens (creating) the directory.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, StoreError> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(|e| io("cannot create", &dir, e))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700));
        }
        let probe = dir.join(".write-test");
        std::fs::write(&probe, b"").map_err(|e| io("cannot write in", &dir, e))?;
        let _ = std::fs::remove_file(&probe);
        Ok(Self {
            dir,
            lock: Mutex::new(()),
        })
    }

    fn current(&self) -> PathBuf {
        self.dir.join("runtime.json")
    }

    fn history_path(&self) -> PathBuf {
        self.dir.join("history.jsonl")
    }

    fn load(&self) -> Result<Runtime, StoreError> {
        let path = self.current();
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                StoreError::Io(format!(
                    "{} is not a runtime entity file: {e}",
                    path.display()
                ))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Runtime::default()),
            Err(e) => Err(io("cannot read", &path, e)),
        }
    }

    fn commit(&self, expected: u64, next: &Runtime, record: &Record) -> Result<(), StoreError> {
        let _g = self
            .lock
            .lock()
            .map_err(|_| StoreError::Io("store lock".into()))?;
        let now = self.load()?.revision;
        if now != expected {
            return Err(StoreError::Conflict(now));
        }
        // History first: a crash between the two leaves a record whose change is not in
        // runtime.json yet, which `load` ignores (the revision there is older) and the next
        // commit overwrites by number. The reverse would lose who made a live change.
        let hist = self.history_path();
        let mut line = serde_json::to_vec(record).map_err(|e| StoreError::Io(e.to_string()))?;
        line.push(b'\n');
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&hist)
            .map_err(|e| io("cannot open", &hist, e))?;
        f.write_all(&line)
            .and_then(|()| f.sync_data())
            .map_err(|e| io("cannot append to", &hist, e))?;
        let path = self.current();
        let tmp = self.dir.join("runtime.json.tmp");
        let bytes = serde_json::to_vec(next).map_err(|e| StoreError::Io(e.to_string()))?;
        let mut t = std::fs::File::create(&tmp).map_err(|e| io("cannot create", &tmp, e))?;
        t.write_all(&bytes)
            .and_then(|()| t.sync_all())
            .map_err(|e| io("cannot write", &tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| io("cannot replace", &path, e))?;
        if let Ok(d) = std::fs::File::open(&self.dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }

    /// Every record, oldest first. Records beyond the current revision (a crash between the
    /// history append and the switch) are left out; for a revision written twice, the last.
    fn read_history(&self) -> Result<Vec<Record>, StoreError> {
        let current = self.load()?.revision;
        let hist = self.history_path();
        let text = match std::fs::read_to_string(&hist) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io("cannot read", &hist, e)),
        };
        let mut out: Vec<Record> = Vec::new();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            // A torn last line (a crash mid-append) is skipped.
            let Ok(r) = serde_json::from_str::<Record>(line) else {
                continue;
            };
            if r.revision > current {
                continue;
            }
            out.retain(|o| o.revision != r.revision);
            out.push(r);
        }
        out.sort_by_key(|r| r.revision);
        Ok(out)
    }

    fn history(&self, before: Option<u64>, limit: usize) -> Result<Vec<Record>, StoreError> {
        let mut all = self.read_history()?;
        all.retain(|r| before.is_none_or(|b| r.revision < b));
        all.reverse();
        all.truncate(limit);
        Ok(all)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn record(revision: u64) -> Record {
        Record {
            revision,
            at: "2026-12-07T00:00:00Z".into(),
            actor: "t".into(),
            action: "put".into(),
            changes: Vec::new(),
        }
    }

    #[test]
    fn commits_survive_reopen_and_stale_expectations_conflict() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStore::open(dir.path()).unwrap();
        let next = Runtime {
            revision: 1,
            ..Runtime::default()
        };
        s.commit(0, &next, &record(1)).unwrap();
        assert!(matches!(
            s.commit(0, &next, &record(1)),
            Err(StoreError::Conflict(1))
        ));
        let again = LocalStore::open(dir.path()).unwrap();
        assert_eq!(again.load().unwrap().revision, 1);
        assert_eq!(again.history(None, 10).unwrap().len(), 1);
    }

    #[test]
    fn a_torn_or_uncommitted_history_line_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStore::open(dir.path()).unwrap();
        let next = Runtime {
            revision: 1,
            ..Runtime::default()
        };
        s.commit(0, &next, &record(1)).unwrap();
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(dir.path().join("history.jsonl"))
            .unwrap();
        let mut two = serde_json::to_vec(&record(2)).unwrap();
        two.extend_from_slice(b"\n{\"revision\": 3, \"at");
        f.write_all(&two).unwrap();
        let h = s.history(None, 10).unwrap();
        assert_eq!(h.iter().map(|r| r.revision).collect::<Vec<_>>(), vec![1]);
    }
}
