//! The local store (`torii run --data-dir DIR`): `history.jsonl` holds one line per revision
//! (appended and synced: that is the commit), and `runtime.json` a checkpoint of the entities
//! at some revision (replaced atomically: written to a temporary file, synced, renamed). The
//! current entities are the checkpoint with the records after it replayed. A commit appends
//! one line, so its cost does not grow with the number of entities; the checkpoint is
//! rewritten once every [`CHECKPOINT_EVERY`] revisions, which bounds the replay at startup.
//!
//! In cluster mode the same directory is the node's last known good copy
//! ([`LocalStore::keep`]): the records it applied from PostgreSQL are appended the same way,
//! and the journal is cut back at each checkpoint (PostgreSQL keeps the history).
//!
//! `journal` marks a directory in this format. A directory written by an older Torii (where
//! `runtime.json` was always current and a history line above it was a change that failed)
//! is converted when opened: such lines are dropped, then the mark is written.

use super::{Record, StoreError};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use torii_config::Runtime;

/// Revisions between two checkpoints of `runtime.json`.
pub const CHECKPOINT_EVERY: u64 = 1024;

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
    /// The revisions of the store and of its checkpoint, once read: the directory is locked
    /// to this process, so a commit need not read the files again.
    at: Mutex<Option<At>>,
}

/// Where the store is.
#[derive(Debug, Clone, Copy)]
struct At {
    /// The last committed revision.
    revision: u64,
    /// The revision in `runtime.json`.
    checkpoint: u64,
}

fn io(what: &str, path: &Path, e: std::io::Error) -> StoreError {
    StoreError::Io(format!("{what} {}: {e}", path.display()))
}

/// Writes a file and syncs it.
fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let mut t = std::fs::File::create(path).map_err(|e| io("cannot create", path, e))?;
    t.write_all(bytes)
        .and_then(|()| t.sync_all())
        .map_err(|e| io("cannot write", path, e))
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
        let store = Self {
            dir,
            lock: Mutex::new(Some(lock)),
            commits: Mutex::new(()),
            at: Mutex::new(None),
        };
        store.convert()?;
        Ok(store)
    }

    /// Marks the directory as a journal; converts one written by an older Torii first.
    fn convert(&self) -> Result<(), StoreError> {
        let mark = self.dir.join("journal");
        if mark.exists() {
            return Ok(());
        }
        if self.current().exists() {
            let current = self.read_checkpoint()?.revision;
            let hist = self.history_path();
            if let Ok(text) = std::fs::read_to_string(&hist) {
                let kept: String = text
                    .lines()
                    .filter(|l| {
                        serde_json::from_str::<Record>(l).is_ok_and(|r| r.revision <= current)
                    })
                    .flat_map(|l| [l, "\n"])
                    .collect();
                let tmp = self.dir.join("history.jsonl.tmp");
                write_synced(&tmp, kept.as_bytes())?;
                std::fs::rename(&tmp, &hist).map_err(|e| io("cannot replace", &hist, e))?;
            }
        }
        write_synced(
            &mark,
            b"torii config store: runtime.json is a checkpoint, history.jsonl the journal\n",
        )?;
        self.sync_dir();
        Ok(())
    }

    fn sync_dir(&self) {
        if let Ok(d) = std::fs::File::open(&self.dir) {
            let _ = d.sync_all();
        }
    }

    fn at(&self) -> Result<At, StoreError> {
        if let Some(a) = *self
            .at
            .lock()
            .map_err(|_| StoreError::Io("store lock".into()))?
        {
            return Ok(a);
        }
        self.load()?;
        self.at
            .lock()
            .map_err(|_| StoreError::Io("store lock".into()))?
            .ok_or_else(|| StoreError::Io("store state".into()))
    }

    fn set_at(&self, a: At) {
        if let Ok(mut g) = self.at.lock() {
            *g = Some(a);
        }
    }

    /// Releases the directory for another process (the gateway stopped).
    pub fn close(&self) {
        if let Ok(mut l) = self.lock.lock() {
            *l = None;
        }
    }

    fn is_open(&self) -> bool {
        self.lock.lock().is_ok_and(|l| l.is_some())
    }

    fn current(&self) -> PathBuf {
        self.dir.join("runtime.json")
    }

    fn history_path(&self) -> PathBuf {
        self.dir.join("history.jsonl")
    }

    /// The checkpoint in `runtime.json` (empty when it does not exist yet).
    fn read_checkpoint(&self) -> Result<Runtime, StoreError> {
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

    /// The entities: the checkpoint with the records after it replayed. Only the journal's
    /// tail is parsed (lines are appended in revision order), so the replay is bounded by
    /// [`CHECKPOINT_EVERY`], not by the length of the history.
    pub fn load(&self) -> Result<Runtime, StoreError> {
        let mut rt = self.read_checkpoint()?;
        let checkpoint = rt.revision;
        let hist = self.history_path();
        let text = match std::fs::read_to_string(&hist) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(io("cannot read", &hist, e)),
        };
        let mut tail = Vec::new();
        for line in text.lines().rev().filter(|l| !l.trim().is_empty()) {
            // A torn line (a crash mid-append) is skipped.
            let Ok(r) = serde_json::from_str::<Record>(line) else {
                continue;
            };
            if r.revision <= checkpoint {
                break;
            }
            tail.push(r);
        }
        for r in tail.iter().rev() {
            if r.revision == rt.revision + 1 {
                r.apply_to(&mut rt);
            }
        }
        self.set_at(At {
            revision: rt.revision,
            checkpoint,
        });
        Ok(rt)
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
        if !self.is_open() {
            return Err(StoreError::Io("the local store is closed".into()));
        }
        let at = self.at()?;
        if at.revision != expected {
            return Err(StoreError::Conflict(at.revision));
        }
        self.append(record)?;
        let at = At {
            revision: record.revision,
            ..at
        };
        self.set_at(at);
        if at.revision >= at.checkpoint + CHECKPOINT_EVERY {
            // The record is committed; a failed checkpoint only means a longer replay.
            if let Err(e) = self.checkpoint(next) {
                tracing::warn!(error = %e, "cannot write the config store's checkpoint");
            }
        }
        Ok(())
    }

    /// Keeps `rt` as this node's last known good entities (cluster mode): `records` (the
    /// revisions it applied, in order) are appended when they follow what is kept, otherwise
    /// (a whole reload) `rt` is written whole.
    pub(crate) fn keep(&self, rt: &Runtime, records: &[Record]) -> Result<(), StoreError> {
        let _g = self
            .commits
            .lock()
            .map_err(|_| StoreError::Io("store lock".into()))?;
        if !self.is_open() {
            return Ok(());
        }
        let at = self.at()?;
        let follows = !records.is_empty()
            && records
                .iter()
                .enumerate()
                .all(|(i, r)| r.revision == at.revision + 1 + i as u64)
            && records.last().map(|r| r.revision) == Some(rt.revision);
        if follows && rt.revision < at.checkpoint + CHECKPOINT_EVERY {
            for r in records {
                self.append(r)?;
            }
            self.set_at(At {
                revision: rt.revision,
                ..at
            });
            return Ok(());
        }
        // PostgreSQL keeps the history: the journal goes, first (a crash before the new
        // checkpoint leaves the older checkpoint alone, never old records on a new one).
        let hist = self.history_path();
        match std::fs::remove_file(&hist) {
            Ok(()) => self.sync_dir(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io("cannot remove", &hist, e)),
        }
        self.checkpoint(rt)
    }

    /// Appends one record to the journal and syncs it.
    fn append(&self, record: &Record) -> Result<(), StoreError> {
        let hist = self.history_path();
        let mut line = serde_json::to_vec(record).map_err(|e| StoreError::Io(e.to_string()))?;
        line.push(b'\n');
        let created = !hist.exists();
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&hist)
            .map_err(|e| io("cannot open", &hist, e))?;
        if created {
            self.sync_dir();
        }
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
        Ok(())
    }

    /// Replaces `runtime.json` atomically (temporary file, sync, rename, directory sync).
    fn checkpoint(&self, next: &Runtime) -> Result<(), StoreError> {
        let path = self.current();
        let tmp = self.dir.join("runtime.json.tmp");
        let bytes = serde_json::to_vec(next).map_err(|e| StoreError::Io(e.to_string()))?;
        write_synced(&tmp, &bytes)?;
        std::fs::rename(&tmp, &path).map_err(|e| io("cannot replace", &path, e))?;
        self.sync_dir();
        self.set_at(At {
            revision: next.revision,
            checkpoint: next.revision,
        });
        Ok(())
    }

    /// Every record in the journal, oldest first; a torn line (a crash mid-append) is
    /// skipped, and of a revision written twice (by an older version that crashed between
    /// its two writes) the last one counts.
    fn read_records(&self) -> Result<Vec<Record>, StoreError> {
        let hist = self.history_path();
        let text = match std::fs::read_to_string(&hist) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io("cannot read", &hist, e)),
        };
        let mut out = std::collections::BTreeMap::new();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let Ok(r) = serde_json::from_str::<Record>(line) else {
                continue;
            };
            out.insert(r.revision, r);
        }
        Ok(out.into_values().collect())
    }

    /// Every committed record, oldest first.
    pub(crate) fn read_history(&self) -> Result<Vec<Record>, StoreError> {
        let current = self.at()?.revision;
        let mut all = self.read_records()?;
        all.retain(|r| r.revision <= current);
        Ok(all)
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
    fn a_torn_line_is_ignored_and_a_whole_one_is_committed() {
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
        s.close();
        let s = LocalStore::open(dir.path()).unwrap();
        assert_eq!(s.load().unwrap().revision, 2);
        let h = s.history(None, 10).unwrap();
        assert_eq!(h.iter().map(|r| r.revision).collect::<Vec<_>>(), vec![2, 1]);
    }

    fn put(revision: u64, name: &str) -> Record {
        Record {
            changes: vec![super::super::ItemChange {
                kind: torii_config::EntityKind::Consumers,
                name: name.into(),
                before: None,
                after: Some(serde_json::json!({"groups": [revision.to_string()]})),
            }],
            ..record(revision)
        }
    }

    #[test]
    fn commits_append_and_a_checkpoint_is_written_every_so_often() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStore::open(dir.path()).unwrap();
        let mut rt = Runtime::default();
        let n = CHECKPOINT_EVERY + 5;
        for r in 1..=n {
            let rec = put(r, &format!("c{}", r % 7));
            rec.apply_to(&mut rt);
            s.commit(r - 1, &rt, &rec).unwrap();
            // No checkpoint before the threshold: a commit is one appended line.
            if r < CHECKPOINT_EVERY {
                assert!(!dir.path().join("runtime.json").exists());
            }
        }
        let checkpoint: Runtime =
            serde_json::from_slice(&std::fs::read(dir.path().join("runtime.json")).unwrap())
                .unwrap();
        assert_eq!(checkpoint.revision, CHECKPOINT_EVERY);
        s.close();
        let again = LocalStore::open(dir.path()).unwrap();
        assert_eq!(again.load().unwrap(), rt, "checkpoint + journal replay");
        assert_eq!(again.history(None, usize::MAX).unwrap().len() as u64, n);
    }

    #[test]
    fn a_cluster_nodes_copy_appends_what_follows_and_rewrites_after_a_jump() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStore::open(dir.path()).unwrap();
        let mut rt = Runtime::default();
        let (one, two) = (put(1, "a"), put(2, "b"));
        one.apply_to(&mut rt);
        two.apply_to(&mut rt);
        s.keep(&rt, &[one, two]).unwrap();
        assert!(!dir.path().join("runtime.json").exists());
        assert_eq!(s.load().unwrap(), rt);
        // A whole reload (revision 9, say after a restore): written whole, journal cut.
        let mut whole = rt.clone();
        put(9, "z").apply_to(&mut whole);
        s.keep(&whole, &[]).unwrap();
        assert!(!dir.path().join("history.jsonl").exists());
        s.close();
        let again = LocalStore::open(dir.path()).unwrap();
        assert_eq!(again.load().unwrap(), whole);
    }

    #[test]
    fn a_directory_of_the_older_format_is_converted_without_reviving_a_failed_change() {
        let dir = tempfile::tempdir().unwrap();
        // runtime.json was always current; history line 2 is a change whose runtime.json
        // write failed (the client was told nothing was applied).
        let mut rt = Runtime::default();
        let one = put(1, "a");
        one.apply_to(&mut rt);
        std::fs::write(
            dir.path().join("runtime.json"),
            serde_json::to_vec(&rt).unwrap(),
        )
        .unwrap();
        let mut lines = serde_json::to_vec(&one).unwrap();
        lines.push(b'\n');
        lines.extend(serde_json::to_vec(&put(2, "b")).unwrap());
        lines.push(b'\n');
        std::fs::write(dir.path().join("history.jsonl"), lines).unwrap();
        let s = LocalStore::open(dir.path()).unwrap();
        assert_eq!(s.load().unwrap(), rt);
        assert_eq!(s.history(None, 10).unwrap().len(), 1);
        assert!(dir.path().join("journal").exists());
        // The next commit is revision 2 again, and it is the one that counts.
        let mut next = rt.clone();
        let two = put(2, "c");
        two.apply_to(&mut next);
        s.commit(1, &next, &two).unwrap();
        s.close();
        let again = LocalStore::open(dir.path()).unwrap();
        assert_eq!(again.load().unwrap(), next);
    }
}
