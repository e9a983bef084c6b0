//! Config reload triggers: a debounced watch on the config file's directory (so editors'
//! rename-on-save and Kubernetes ConfigMap symlink swaps are seen) and SIGHUP. Both go through
//! the same load function as startup and `torii validate`.

use crate::Gateway;
use notify::{RecursiveMode, Watcher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
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

/// Watches the config file's directory and reloads after changes settle (debounced).
pub fn watch(
    gw: Arc<Gateway>,
    path: PathBuf,
    debounce: Duration,
) -> notify::Result<notify::RecommendedWatcher> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let file_name = path.file_name().map(|f| f.to_os_string());
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if let Ok(ev) = res {
            let relevant = ev.paths.iter().any(|p| {
                p.file_name().map(|f| f.to_os_string()) == file_name
                    || p.file_name().is_some_and(|f| f == "..data")
            });
            if relevant && !matches!(ev.kind, notify::EventKind::Access(_)) {
                let _ = tx.send(());
            }
        }
    })?;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    watcher.watch(&dir, RecursiveMode::NonRecursive)?;
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
            let _ = reload_from(&gw, &path, &torii_config::ProcessEnv).await;
        }
    });
    Ok(watcher)
}
