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

/// Loads `path` and applies it; a broken config is logged and counted, the old one stays.
pub async fn reload_from(gw: &Gateway, path: &Path, env: &(dyn Env + Sync)) -> Result<(), String> {
    match torii_config::load_file(path, env) {
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

/// Watches the config file and the files it names, and reloads after changes settle.
pub fn watch(
    gw: Arc<Gateway>,
    path: PathBuf,
    debounce: Duration,
) -> notify::Result<Arc<Mutex<notify::RecommendedWatcher>>> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let files = Arc::new(Mutex::new(watched_files(&gw, &path)));
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
    let watcher = Arc::new(Mutex::new(watcher));
    let mut dirs: HashSet<PathBuf> = HashSet::new();
    if let (Ok(mut w), Ok(f)) = (watcher.lock(), files.lock()) {
        for file in f.iter() {
            let d = dir_of(file);
            if dirs.insert(d.clone()) {
                w.watch(&d, RecursiveMode::NonRecursive)?;
            }
        }
    }
    let w2 = watcher.clone();
    tokio::spawn(async move {
        let mut dirs = dirs;
        while rx.recv().await.is_some() {
            // Debounce: wait until no event arrived for `debounce`.
            loop {
                match tokio::time::timeout(debounce, rx.recv()).await {
                    Ok(Some(())) => continue,
                    Ok(None) => return,
                    Err(_) => break,
                }
            }
            if reload_from(&gw, &path, &torii_config::ProcessEnv)
                .await
                .is_ok()
            {
                // Follow files the new config names.
                let now = watched_files(&gw, &path);
                if let Ok(mut w) = w2.lock() {
                    for file in &now {
                        let d = dir_of(file);
                        if dirs.insert(d.clone()) {
                            let _ = w.watch(&d, RecursiveMode::NonRecursive);
                        }
                    }
                }
                if let Ok(mut f) = files.lock() {
                    *f = now;
                }
            }
        }
    });
    Ok(watcher)
}
