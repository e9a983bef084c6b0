//! The live consumer set of one load: the [`Directory`] requests look consumers up in, behind
//! an atomic pointer, and what is needed to build a changed consumer without loading the
//! whole config again.
//!
//! A consumer changed through the admin API is checked and built here (its identity, its
//! credentials against everyone else's, its own plugin settings), and the new directory is
//! swapped in: routers, chains and upstreams stay as they are, and the cost does not grow
//! with the number of consumers. What a single consumer cannot be changed without (a route's
//! `anonymous` consumer, copied into its chain at load) makes the change a full load instead.

use crate::chain::Settings;
use crate::consumers::{Directory, SettingsOf};
use crate::{Catalog, Load};
use arc_swap::ArcSwap;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock};
use torii_config::schema::Consumer as ConsumerConfig;
use torii_config::{PluginError, Seg};
use torii_core::Consumer;

/// The consumers of one load, as requests see them.
#[derive(Default)]
pub struct Consumers {
    current: ArcSwap<Directory>,
    /// Names of consumers copied at load (a route's or a plugin's anonymous consumer).
    pinned: Mutex<HashSet<Arc<str>>>,
    build: OnceLock<Builder>,
}

/// What the load that made a [`Consumers`] had for building consumers' plugin settings.
pub(crate) struct Builder {
    /// By plan index: its settings.
    pub(crate) plans: Vec<Settings>,
    /// Plan indexes by name.
    pub(crate) plan_index: HashMap<String, usize>,
    pub(crate) upstreams: torii_upstream::Upstreams,
    pub(crate) redis: Option<Arc<torii_store::Redis>>,
    pub(crate) cache: torii_config::schema::CacheStore,
}

impl std::fmt::Debug for Consumers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumers")
            .field("directory", &*self.current.load())
            .finish()
    }
}

/// A change of one consumer: its config before (`None`: new) and after (`None`: removed).
pub type ConsumerChange = (Option<ConsumerConfig>, Option<ConsumerConfig>);

impl Consumers {
    /// The directory requests use now.
    pub fn directory(&self) -> Arc<Directory> {
        self.current.load_full()
    }

    /// Makes `d` the directory requests use.
    pub fn install(&self, d: Arc<Directory>) {
        self.current.store(d);
    }

    /// The consumer owning an API key, given its digest.
    pub fn by_key_digest(
        &self,
        digest: &[u8; crate::consumers::KEY_DIGEST_LEN],
    ) -> Option<Arc<Consumer>> {
        self.current.load().by_key_digest(digest).cloned()
    }

    /// The consumer and password hash of a basic-auth username.
    pub fn by_username(&self, username: &str) -> Option<(Arc<Consumer>, Arc<str>)> {
        let d = self.current.load();
        let (c, h) = d.by_username(username)?;
        Some((c.clone(), h.clone()))
    }

    /// The consumer with this id.
    pub fn by_id(&self, id: &str) -> Option<Arc<Consumer>> {
        self.current.load().by_id(id).cloned()
    }

    /// The consumer a certificate name belongs to.
    pub fn by_cert_name(&self, name: &str) -> Option<Arc<Consumer>> {
        self.current.load().by_cert_name(name).cloned()
    }

    /// The consumer with this name, copied by a plugin or route at load: changing it later
    /// takes a full load (the copy would go stale otherwise).
    pub fn pin(&self, name: &str) -> Option<Arc<Consumer>> {
        let c = self.current.load().by_name(name).cloned()?;
        self.pinned
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(c.name.clone());
        Some(c)
    }

    fn pinned(&self, name: &str) -> bool {
        self.pinned
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(name)
    }

    pub(crate) fn set_builder(&self, b: Builder) {
        let _ = self.build.set(b);
    }
}

impl Catalog {
    /// The directory after `changes`, built against the load that made `consumers` (its
    /// plans, upstreams and Redis): each changed consumer is checked as a full load would
    /// check it, its plugin settings built, its credentials checked against everyone else's.
    /// `Ok(None)`: the change needs a full load (a consumer copied at load, or settings that
    /// add to what the whole load shares, such as counters on `/metrics`). Errors carry the
    /// change's position and a key path under `consumers[0]`.
    pub fn change_consumers(
        &self,
        consumers: &Arc<Consumers>,
        changes: &[ConsumerChange],
    ) -> Result<Option<Directory>, Vec<(usize, PluginError)>> {
        let Some(b) = consumers.build.get() else {
            return Ok(None);
        };
        let touches_pinned = changes.iter().any(|(before, after)| {
            [before, after]
                .into_iter()
                .flatten()
                .any(|c| consumers.pinned(&c.name))
        });
        if touches_pinned {
            return Ok(None);
        }
        let load = Load::new(b.cache.clone());
        let mut errors = Vec::new();
        let mut built: Vec<Option<SettingsOf>> = Vec::with_capacity(changes.len());
        for (i, (_, after)) in changes.iter().enumerate() {
            let Some(c) = after else {
                built.push(None);
                continue;
            };
            let mut errs = Vec::new();
            let own = self.build_map(
                &b.upstreams,
                b.redis.as_ref(),
                &load,
                &c.plugins,
                &[
                    Seg::Key("consumers".into()),
                    Seg::Index(0),
                    Seg::Key("plugins".into()),
                ],
                &format!("consumer:{}", c.name),
                consumers,
                true,
                None,
                &mut errs,
            );
            let settings = crate::consumer_settings(c, own, &b.plans, &b.plan_index, 0, &mut errs);
            errors.extend(errs.into_iter().map(|e| (i, e)));
            built.push(Some(settings));
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        if !load.is_empty() {
            return Ok(None);
        }
        let current = consumers.current.load();
        let pairs = changes
            .iter()
            .zip(built)
            .map(|((before, after), s)| (before.as_ref(), after.as_ref().zip(s)))
            .collect();
        current.changed(pairs).map(Some)
    }
}
