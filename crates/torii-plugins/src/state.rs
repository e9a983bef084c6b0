//! State that outlives a config load: caches and counters of plugins.
//!
//! A plugin asks for its state by a key made of its name, its scope and a digest of its
//! settings. A reload that does not change those settings gets the same state back (warm JWKS
//! and credential caches, running counters); state no load asked for is dropped when the new
//! config is in place.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, Mutex};

/// The key of one piece of plugin state.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StateKey {
    plugin: &'static str,
    scope: String,
    digest: u64,
}

impl StateKey {
    /// A key from the plugin name, its scope and its settings (as written).
    pub fn new(plugin: &'static str, scope: &str, settings: &serde_json::Value) -> Self {
        let mut h = DefaultHasher::new();
        // serde_json's map keeps keys sorted, so equal settings print equally.
        settings.to_string().hash(&mut h);
        Self {
            plugin,
            scope: scope.to_string(),
            digest: h.finish(),
        }
    }
}

struct Entry {
    value: Arc<dyn Any + Send + Sync>,
    generation: u64,
}

/// The registry; one per gateway process, shared by all loads.
#[derive(Default)]
pub struct StateRegistry {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<(StateKey, TypeId), Entry>,
    generation: u64,
}

impl StateRegistry {
    /// Starts a load: state used by it is marked with a new generation.
    pub fn begin(&self) -> u64 {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        g.generation += 1;
        g.generation
    }

    /// After a load took effect: drops state that load did not use.
    pub fn retain_generation(&self, generation: u64) {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        g.entries.retain(|_, e| e.generation >= generation);
    }

    /// The state of type `T` under `key`, created by `init` when absent.
    pub fn get_or_insert<T: Any + Send + Sync>(
        &self,
        key: StateKey,
        init: impl FnOnce() -> T,
    ) -> Arc<T> {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let generation = g.generation;
        let key = (key, TypeId::of::<T>());
        if let Some(e) = g.entries.get_mut(&key)
            && let Ok(v) = e.value.clone().downcast::<T>()
        {
            e.generation = generation;
            return v;
        }
        let v = Arc::new(init());
        g.entries.insert(
            key,
            Entry {
                value: v.clone(),
                generation,
            },
        );
        v
    }

    /// Number of entries (tests and metrics).
    pub fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entries
            .len()
    }

    /// Whether there is no state.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
