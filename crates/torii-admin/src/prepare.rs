//! What a change needs before it is stored: the whole resulting config loaded (any change of
//! routes, upstreams or global plugins), or, for a change of consumers only, the changed
//! consumers checked and built against the running ones. The second never rebuilds routers,
//! chains or upstreams and costs the same at 10 consumers and at 100,000: the running
//! snapshot keeps everything and only its consumer directory and runtime entities are
//! replaced ([`torii_proxy::snapshot::Snapshot::change_consumers`]).

use crate::Admin;
use crate::reply::ApiError;
use crate::store::ItemChange;
use std::sync::Arc;
use torii_config::{Diagnostic, EntityKind, Runtime};
use torii_proxy::Gateway;
use torii_proxy::snapshot::Snapshot;

/// A change ready to be applied.
pub(crate) enum Prepared {
    /// Consumers only: the new directory of the running snapshot.
    Consumers(Box<torii_plugins::Directory>),
    /// The whole config, loaded.
    Full(Box<torii_proxy::Loaded>),
}

/// Why a change cannot be prepared.
pub(crate) enum Refused {
    /// The resulting config is not valid (diagnostics of the file, or pointers into the
    /// store).
    Invalid(String, Vec<Diagnostic>),
    /// The load itself failed (a task panicked).
    Internal(String),
}

impl Refused {
    pub(crate) fn api_error(self) -> ApiError {
        match self {
            Self::Invalid(file, items) => ApiError::invalid_items(&file, &items),
            Self::Internal(e) => {
                ApiError::new(http::StatusCode::INTERNAL_SERVER_ERROR, "internal", e)
            }
        }
    }

    pub(crate) fn describe(&self) -> String {
        match self {
            Self::Invalid(file, items) => items
                .iter()
                .map(|d| {
                    format!(
                        "{file}: {}: {}",
                        d.pointer.as_deref().unwrap_or(&d.path),
                        d.message
                    )
                })
                .collect::<Vec<_>>()
                .join("\n"),
            Self::Internal(e) => e.clone(),
        }
    }
}

impl Admin {
    /// Prepares `changes` (which turn the running runtime entities into `next`).
    pub(crate) async fn prepare(
        &self,
        gw: &Gateway,
        snap: &Snapshot,
        next: Arc<Runtime>,
        changes: &[ItemChange],
    ) -> Result<Prepared, Refused> {
        if let Some(d) = self.consumers_only(gw, snap, changes)? {
            return Ok(Prepared::Consumers(Box::new(d)));
        }
        let source = snap.source.load().with_runtime(next);
        let file = source.name.clone();
        match self.load(gw, source).await {
            Err(e) => Err(Refused::Internal(e)),
            Ok(Err(d)) => Err(Refused::Invalid(d.file.clone(), d.items)),
            Ok(Ok(l)) => {
                // What only building the TLS configs finds (a key that is not the
                // certificate's), before anything is stored.
                let bad = torii_proxy::tls::check_certificates(&l.config);
                if bad.is_empty() {
                    return Ok(Prepared::Full(Box::new(l)));
                }
                let items = bad
                    .into_iter()
                    .map(|(i, message)| {
                        let name = l.config.certificates.get(i).map_or("", |c| c.name.as_str());
                        Diagnostic::new(None, format!("certificates[{i}]"), message)
                            .with_hint("send the certificate chain and the private key that belong together")
                            .at_pointer(format!("/certificates/{}", torii_config::runtime::escape(name)))
                    })
                    .collect();
                Err(Refused::Invalid(file, items))
            }
        }
    }

    /// A change of consumers only, built against the running consumers; `None` when the
    /// change needs a full load (other kinds, or a consumer copied at load).
    fn consumers_only(
        &self,
        gw: &Gateway,
        snap: &Snapshot,
        changes: &[ItemChange],
    ) -> Result<Option<torii_plugins::Directory>, Refused> {
        if changes.is_empty() || changes.iter().any(|c| c.kind != EntityKind::Consumers) {
            return Ok(None);
        }
        let catalog = &gw.shared().catalog;
        let file = snap.source.load().name.clone();
        let mut parsed = Vec::with_capacity(changes.len());
        let mut invalid = Vec::new();
        for c in changes {
            // The value before was loaded when it was written; if it no longer reads as a
            // consumer (a newer schema), the whole config is loaded instead.
            let before = match &c.before {
                None => None,
                Some(v) => match serde_json::from_value(v.clone()) {
                    Ok(b) => Some(b),
                    Err(_) => return Ok(None),
                },
            };
            let after = match &c.after {
                None => None,
                Some(v) => match torii_config::check_consumer(&c.name, v, &**catalog) {
                    Ok(a) => Some(a),
                    Err(mut d) => {
                        invalid.append(&mut d);
                        None
                    }
                },
            };
            parsed.push((before, after));
        }
        if !invalid.is_empty() {
            return Err(Refused::Invalid(file, invalid));
        }
        match catalog.change_consumers(&snap.consumers, &parsed) {
            Ok(d) => Ok(d),
            Err(errors) => {
                let mut items = Vec::new();
                let mut by_change: Vec<Vec<torii_config::PluginError>> =
                    (0..changes.len()).map(|_| Vec::new()).collect();
                for (i, e) in errors {
                    if let Some(v) = by_change.get_mut(i) {
                        v.push(e);
                    }
                }
                for (c, errs) in changes.iter().zip(by_change) {
                    if errs.is_empty() {
                        continue;
                    }
                    let value = c.after.clone().unwrap_or_default();
                    items.extend(torii_config::consumer_diagnostics(&c.name, &value, errs));
                }
                Err(Refused::Invalid(file, items))
            }
        }
    }

    /// Applies a prepared change whose result is `next`. The change lock is held and `snap`
    /// is the running snapshot.
    pub(crate) async fn put_in_place(
        &self,
        gw: &Gateway,
        snap: &Snapshot,
        prepared: Prepared,
        next: Arc<Runtime>,
    ) -> Result<(), String> {
        match prepared {
            Prepared::Consumers(d) => {
                snap.change_consumers(*d, next);
                Ok(())
            }
            Prepared::Full(loaded) => gw.apply(*loaded).await,
        }
    }
}
