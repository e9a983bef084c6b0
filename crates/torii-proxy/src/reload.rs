//! Config reload triggers: a debounced watch on the directories of the config file and of the
//! certificate, key and CA files it names (so editors' rename-on-save and Kubernetes ConfigMap
//! symlink swaps are seen), and SIGHUP. Both go through the same load function as startup and
//! `torii validate`.

use crate::Gateway;
use notify::{RecursiveMode, Watcher};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use torii_config::Env;

/// Loads `path` with the running runtime entities (admin API) and applies it; a broken config
/// is logged and counted, the old one stays.
pub async fn reload_from(gw: &Gateway, path: &Path, env: &(dyn Env + Sync)) -> Result<(), String> {
    let _changing = gw.lock_changes().await;
    let runtime = gw.shared().snapshot.load().source.load().runtime.clone();
    match torii_config::load_file_with(path, runtime, env, &*gw.shared().catalog) {
        Ok(loaded) => {
            let r = gw.apply(loaded).await;
            match &r {
                Ok(()) => tracing::info!(path = %path.display(), "config reloaded"),
                Err(e) => {
                    tracing::error!(path = %path.display(), error = %e, "reload failed; keeping the running config")
                }
            }
            r
        }
        Err(d) => {
            gw.reload_rejected();
            tracing::error!(path = %path.display(), "config rejected; keeping the running config:\n{d}");
            Err(d.to_string())
        }
    }
}

/// Files whose change triggers a reload: the config and every PEM file it names.
fn watched_files(gw: &Gateway, config: &Path) -> HashSet<PathBuf> {
    let snap = gw.shared().snapshot.load();
    let mut files: HashSet<PathBuf> = HashSet::new();
    files.insert(absolute(config));
    for l in &snap.config.listeners {
        if let Some(a) = l.tls.as_ref().and_then(|t| t.client_auth.as_ref()) {
            files.insert(absolute(Path::new(&a.ca)));
        }
        for c in l.tls.iter().flat_map(|t| &t.certificates) {
            files.insert(absolute(Path::new(&c.cert)));
            files.insert(absolute(Path::new(&c.key)));
        }
    }
    for u in &snap.config.upstreams {
        for f in [&u.tls.ca, &u.tls.client_cert, &u.tls.client_key]
            .into_iter()
            .flatten()
        {
            files.insert(absolute(Path::new(f)));
        }
    }
    files
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

fn dir_of(p: &Path) -> PathBuf {
    p.parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf()
}

/// A running file watcher. Keep it alive for as long as reloads on file change are wanted.
pub struct ConfigWatch {
    gw: Arc<Gateway>,
    path: PathBuf,
    files: Arc<Mutex<HashSet<PathBuf>>>,
    dirs: Mutex<HashSet<PathBuf>>,
    watcher: Mutex<notify::RecommendedWatcher>,
}

impl ConfigWatch {
    /// Follows the files the running config names (call after any reload, e.g. on SIGHUP):
    /// newly named certificate or CA files are watched from now on.
    pub fn refresh(&self) {
        let now = watched_files(&self.gw, &self.path);
        if let (Ok(mut w), Ok(mut dirs)) = (self.watcher.lock(), self.dirs.lock()) {
            for file in &now {
                let d = dir_of(file);
                if !dirs.contains(&d) && w.watch(&d, RecursiveMode::NonRecursive).is_ok() {
                    dirs.insert(d);
                }
            }
        }
        if let Ok(mut f) = self.files.lock() {
            *f = now;
        }
    }
}

/// Watches the config file and the files it names, and reloads after changes settle.
pub fn watch(
    gw: Arc<Gateway>,
    path: PathBuf,
    debounce: Duration,
) -> notify::Result<Arc<ConfigWatch>> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let files = Arc::new(Mutex::new(HashSet::new()));
    let seen = files.clone();
    let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        let Ok(ev) = res else { return };
        if matches!(ev.kind, notify::EventKind::Access(_)) {
            return;
        }
        let Ok(files) = seen.lock() else { return };
        // `..data` is the symlink Kubernetes swaps when a ConfigMap or Secret changes.
        let relevant = ev
            .paths
            .iter()
            .any(|p| files.contains(p) || p.file_name().is_some_and(|f| f == "..data"));
        if relevant {
            let _ = tx.send(());
        }
    })?;
    let cw = Arc::new(ConfigWatch {
        gw: gw.clone(),
        path: path.clone(),
        files,
        dirs: Mutex::new(HashSet::new()),
        watcher: Mutex::new(watcher),
    });
    // The config file's own directory must be watchable; the others are best effort.
    cw.watcher
        .lock()
        .map_err(|_| notify::Error::generic("watcher poisoned"))?
        .watch(&dir_of(&absolute(&path)), RecursiveMode::NonRecursive)?;
    cw.refresh();
    let task = cw.clone();
    tokio::spawn(async move {
        while rx.recv().await.is_some() {
            // Debounce: wait until no event arrived for `debounce`.
            loop {
                match tokio::time::timeout(debounce, rx.recv()).await {
                    Ok(Some(())) => continue,
                    Ok(None) => return,
                    Err(_) => break,
                }
            }
            if reload_from(&task.gw, &task.path, &torii_config::ProcessEnv)
                .await
                .is_ok()
            {
                task.refresh();
            }
        }
    });
    Ok(cw)
}
