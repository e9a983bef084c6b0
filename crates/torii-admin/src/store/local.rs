//! The local store (`torii run --data-dir DIR`): `runtime.json` holds the current entities
//! (replaced atomically: written to a temporary file, synced, renamed), and `history.jsonl`
//! one line per revision (appended and synced before the change applies). In cluster mode
//! the same `runtime.json` is the node's last known good copy.

use super::{Record, StoreError};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use torii_config::Runtime;

/// The local store: a directory.
#[derive(Debug)]
pub struct LocalStore {
    dir: PathBuf,
    /// An exclusive lock on `DIR/.lock` for as long as the store is open: two processes on
    /// one data directory would both write the same revision.
    /// Released by [`LocalStore::close`] (a stopped gateway); commits then fail.
    lock: Mutex<Option<std::fs::File>>,
    /// Serializes commits of this process (the gateway's change lock already does; this
    /// keeps the store correct on its own).
    commits: Mutex<()>,
    /// The revision in `runtime.json`, once read: the directory is locked to this process, so
    /// a commit need not parse the whole file again to check it.
    revision: Mutex<Option<u64>>,
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
        let lock_path = dir.join(".lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| io("cannot write in", &dir, e))?;
        lock.try_lock().map_err(|_| {
            StoreError::Io(format!(
                "{} is in use by another torii process; give each process its own data directory",
                dir.display()
            ))
        })?;
        Ok(Self {
            dir,
            lock: Mutex::new(Some(lock)),
            commits: Mutex::new(()),
            revision: Mutex::new(None),
        })
    }

    /// The revision in `runtime.json`.
    fn revision(&self) -> Result<u64, StoreError> {
        let mut cached = self
            .revision
            .lock()
            .map_err(|_| StoreError::Io("store lock".into()))?;
        if let Some(r) = *cached {
            return Ok(r);
        }
        let r = self.load()?.revision;
        *cached = Some(r);
        Ok(r)
    }

    /// Releases the directory for another process (the gateway stopped).
    pub fn close(&self) {
        if let Ok(mut l) = self.lock.lock() {
            *l = None;
        }
    }

    fn current(&self) -> PathBuf {
        self.dir.join("runtime.json")
    }

    fn history_path(&self) -> PathBuf {
        self.dir.join("history.jsonl")
    }

    /// The entities in `runtime.json` (none when it does not exist yet).
    pub fn load(&self) -> Result<Runtime, StoreError> {
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

    pub(crate) fn commit(
        &self,
        expected: u64,
        next: &Runtime,
        record: &Record,
    ) -> Result<(), StoreError> {
        let _g = self
            .commits
            .lock()
            .map_err(|_| StoreError::Io("store lock".into()))?;
        if self.lock.lock().map_or(true, |l| l.is_none()) {
            return Err(StoreError::Io("the local store is closed".into()));
        }
        let now = self.revision()?;
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
            .read(true)
            .append(true)
            .open(&hist)
            .map_err(|e| io("cannot open", &hist, e))?;
        // A torn last line (a crash or a full disk mid-append) must not swallow this record.
        let len = f.metadata().map_err(|e| io("cannot read", &hist, e))?.len();
        if len > 0 {
            use std::io::{Read as _, Seek as _, SeekFrom};
            let mut last = [0u8; 1];
            f.seek(SeekFrom::Start(len - 1))
                .and_then(|_| f.read_exact(&mut last))
                .map_err(|e| io("cannot read", &hist, e))?;
            if last[0] != b'\n' {
                line.insert(0, b'\n');
            }
        }
        if let Err(e) = f.write_all(&line).and_then(|()| f.sync_data()) {
            let _ = f.set_len(len);
            return Err(io("cannot append to", &hist, e));
        }
        self.save(next)
    }

    /// Replaces `runtime.json` atomically (temporary file, sync, rename, directory sync).
    pub(crate) fn save(&self, next: &Runtime) -> Result<(), StoreError> {
        let path = self.current();
        let tmp = self.dir.join("runtime.json.tmp");
        let bytes = serde_json::to_vec(next).map_err(|e| StoreError::Io(e.to_string()))?;
        let mut t = std::fs::File::create(&tmp).map_err(|e| io("cannot create", &tmp, e))?;
        t.write_all(&bytes)
            .and_then(|()| t.sync_all())
            .map_err(|e| io("cannot write", &tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| io("cannot replace", &path, e))?;
        if let Ok(mut r) = self.revision.lock() {
            *r = Some(next.revision);
        }
        if let Ok(d) = std::fs::File::open(&self.dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }

    /// Every record, oldest first. Records beyond the current revision (a crash between the
    /// history append and the switch) are left out; for a revision written twice, the last.
    pub(crate) fn read_history(&self) -> Result<Vec<Record>, StoreError> {
        let current = self.revision()?;
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

    pub(crate) fn history(
        &self,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<Record>, StoreError> {
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
        s.close();
        let again = LocalStore::open(dir.path()).unwrap();
        assert_eq!(again.load().unwrap().revision, 1);
        assert_eq!(again.history(None, 10).unwrap().len(), 1);
    }

    #[test]
    fn a_second_process_cannot_open_the_same_directory() {
        let dir = tempfile::tempdir().unwrap();
        let _s = LocalStore::open(dir.path()).unwrap();
        let e = LocalStore::open(dir.path()).unwrap_err().to_string();
        assert!(e.contains("in use"), "{e}");
    }

    #[test]
    fn a_torn_line_does_not_swallow_the_next_record() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStore::open(dir.path()).unwrap();
        let one = Runtime {
            revision: 1,
            ..Runtime::default()
        };
        s.commit(0, &one, &record(1)).unwrap();
        std::fs::OpenOptions::new()
            .append(true)
            .open(dir.path().join("history.jsonl"))
            .unwrap()
            .write_all(b"{\"revision\": 2, \"at")
            .unwrap();
        let two = Runtime {
            revision: 2,
            ..Runtime::default()
        };
        s.commit(1, &two, &record(2)).unwrap();
        let h = s.history(None, 10).unwrap();
        assert_eq!(h.iter().map(|r| r.revision).collect::<Vec<_>>(), vec![2, 1]);
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
