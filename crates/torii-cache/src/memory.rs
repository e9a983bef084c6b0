//! The in-process tier: a map bounded by bytes (bodies, fields and a fixed overhead per
//! entry), with S3-FIFO eviction (quick_cache): new entries wait in a probation queue, so a
//! scan of one-off URLs does not push out responses in steady use.

use crate::Key;
use crate::stored::Stored;
use http::HeaderName;
use quick_cache::{Lifecycle, Weighter};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// What a key holds.
#[derive(Clone, Debug)]
pub enum Object {
    /// The resource varies on these request fields: its responses are under variant keys
    /// ([`crate::key::variant`]) of this epoch.
    Vary(Arc<[HeaderName]>, u64),
    /// A response.
    Response(Arc<Stored>),
    /// The resource's last answer could not be stored: until then, misses go upstream at
    /// once instead of waiting for each other ("hit-for-pass").
    Pass(Instant),
}

#[derive(Clone)]
struct Weigh;

impl Weighter<Key, Object> for Weigh {
    fn weight(&self, _: &Key, v: &Object) -> u64 {
        match v {
            Object::Vary(names, _) => 128 + 32 * names.len() as u64,
            Object::Response(s) => s.weight(),
            Object::Pass(_) => 128,
        }
    }
}

/// Counts evictions (entries pushed out for room, and entries too large to admit).
#[derive(Clone, Default)]
struct Evictions(Arc<AtomicU64>);

impl Lifecycle<Key, Object> for Evictions {
    type RequestState = ();

    fn begin_request(&self) {}

    fn on_evict(&self, _: &mut (), _: Key, _: Object) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

/// What a purge removes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// The responses of one URL (host, path and query as stored: every variant, every
    /// consumer's copy).
    Url(String),
    /// Responses whose URL starts with this.
    Prefix(String),
    /// Responses tagged with this surrogate key.
    Tag(String),
}

/// A purge: what it selects, optionally only in one cache (`route:<name>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Purge {
    /// What.
    pub selector: Selector,
    /// Only the responses this cache stored.
    pub scope: Option<String>,
}

impl Purge {
    pub(crate) fn selects(&self, s: &Stored) -> bool {
        if self.scope.as_deref().is_some_and(|sc| sc != &*s.scope) {
            return false;
        }
        match &self.selector {
            Selector::Url(u) => *s.url == **u,
            Selector::Prefix(p) => s.url.starts_with(p.as_str()),
            Selector::Tag(t) => s.tags.iter().any(|x| **x == **t),
        }
    }
}

/// Purges remembered for responses being stored.
const RECENT_PURGES: usize = 64;

type Table = quick_cache::sync::Cache<Key, Object, Weigh, crate::key::KeyHasher, Evictions>;

/// The memory tier of one process, shared by every route's cache.
pub struct Memory {
    table: Table,
    evictions: Arc<AtomicU64>,
    /// Bytes held by responses being stored (bodies collected while they stream), and the
    /// most they may hold together: a quarter of the tier.
    filling: AtomicU64,
    fill_budget: u64,
    /// Purges made so far, and the latest of them: a response being stored when a purge
    /// that selects it is made is not stored.
    purges: AtomicU64,
    recent: std::sync::Mutex<std::collections::VecDeque<(u64, Purge)>>,
    /// The heaviest entry admitted (the table refuses entries over most of a shard).
    max_entry: u64,
}

impl std::fmt::Debug for Memory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Memory")
            .field("entries", &self.table.len())
            .field("bytes", &self.table.weight())
            .finish()
    }
}

impl Memory {
    /// A tier holding at most `bytes` (at least 1 MiB).
    pub fn new(bytes: u64) -> Self {
        let bytes = bytes.max(1 << 20);
        let evictions = Evictions::default();
        let counter = evictions.0.clone();
        // Sized for 16 KiB entries on average; the table grows past that when they are
        // smaller (the bound is the weight).
        let items = usize::try_from(bytes / 16_384)
            .unwrap_or(usize::MAX)
            .max(64);
        // The table refuses an entry heavier than most of one shard: few shards (at most 16,
        // each of at least 80 MiB when the size allows) keep the largest object (64 MiB)
        // admissible; lock contention is not what limits a response cache.
        let fit = (bytes / (80 << 20)).clamp(1, 16);
        // The largest power of two up to `fit`.
        let shards = 1u64 << (63 - fit.leading_zeros());
        // A tenth of each shard is the probation queue new entries enter (S3-FIFO's small
        // queue; quick_cache's default is 3 %, which would push a new response of a few MiB
        // out before its second request).
        let options = quick_cache::OptionsBuilder::new()
            .estimated_items_capacity(items)
            .weight_capacity(bytes)
            .hot_allocation(0.9)
            .shards(usize::try_from(shards).unwrap_or(1))
            .build();
        let table = match options {
            Ok(o) => Table::with_options(o, Weigh, Default::default(), evictions),
            Err(_) => Table::with(items, bytes, Weigh, Default::default(), evictions),
        };
        let max_entry = table.shard_capacity() / 100 * 95;
        Self {
            table,
            evictions: counter,
            max_entry,
            filling: AtomicU64::new(0),
            fill_budget: bytes / 4,
            purges: AtomicU64::new(0),
            recent: std::sync::Mutex::new(std::collections::VecDeque::new()),
        }
    }

    /// The object under `key`.
    pub fn get(&self, key: &Key) -> Option<Object> {
        self.table.get(key)
    }

    /// Stores `object` under `key`, replacing what was there.
    pub fn insert(&self, key: Key, object: Object) {
        self.table.insert(key, object);
    }

    /// Stores a response under `key`; when it varies (`vary` not empty), `resource` gets the
    /// marker of `epoch` that leads to its variants. Nothing is stored when the resource was
    /// invalidated since the request read its epoch, or when the response is heavier than
    /// the table admits. Returns whether it was stored.
    pub fn put(
        &self,
        resource: Key,
        key: Key,
        vary: Arc<[HeaderName]>,
        epoch: u64,
        stored: Arc<Stored>,
    ) -> bool {
        if stored.weight() > self.max_entry {
            return false;
        }
        if let Some(Object::Vary(_, e)) = self.get(&resource)
            && e > epoch
        {
            return false;
        }
        if !vary.is_empty() {
            self.insert(resource, Object::Vary(vary, epoch));
        }
        self.insert(key, Object::Response(stored));
        true
    }

    /// Invalidates a resource (RFC 9111 section 4.4): its response, or every variant at once
    /// (its marker's epoch moves on).
    pub fn invalidate(&self, resource: &Key) {
        match self.get(resource) {
            Some(Object::Vary(names, e)) => self.insert(*resource, Object::Vary(names, e + 1)),
            Some(_) => self.remove(resource),
            None => {}
        }
    }

    /// How many purges were made so far (see [`Self::purged_since`]).
    pub fn purges(&self) -> u64 {
        self.purges.load(Ordering::Acquire)
    }

    /// Whether a purge made after the count `since` (see [`Self::purges`]) selects `s`; also
    /// when too many purges were made since to tell.
    pub fn purged_since(&self, since: u64, s: &Stored) -> bool {
        if self.purges() == since {
            return false;
        }
        let recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        if recent.front().is_none_or(|(n, _)| *n > since + 1) {
            return true;
        }
        recent.iter().any(|(n, p)| *n > since && p.selects(s))
    }

    /// Takes `n` bytes of the budget of responses being stored; `false` (nothing taken) when
    /// it is spent: that response then streams through unstored.
    pub fn reserve_fill(&self, n: u64) -> bool {
        let before = self.filling.fetch_add(n, Ordering::Relaxed);
        if before + n > self.fill_budget {
            self.filling.fetch_sub(n, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// Gives `n` bytes of that budget back.
    pub fn release_fill(&self, n: u64) {
        self.filling.fetch_sub(n, Ordering::Relaxed);
    }

    /// Bytes held by responses being stored now.
    pub fn filling(&self) -> u64 {
        self.filling.load(Ordering::Relaxed)
    }

    /// The heaviest entry admitted.
    pub fn max_entry(&self) -> u64 {
        self.max_entry
    }

    /// Removes what is under `key`.
    pub fn remove(&self, key: &Key) {
        self.table.remove(key);
    }

    /// A tier whose responses being stored may hold at most `bytes` together (tests).
    pub fn with_fill_budget(mut self, bytes: u64) -> Self {
        self.fill_budget = bytes;
        self
    }

    /// Removes every stored response that `purge` selects; returns how many.
    pub fn purge(&self, purge: &Purge) -> u64 {
        {
            let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
            let n = self.purges.fetch_add(1, Ordering::AcqRel) + 1;
            recent.push_back((n, purge.clone()));
            if recent.len() > RECENT_PURGES {
                recent.pop_front();
            }
        }
        let removed = AtomicU64::new(0);
        self.table.retain(|_, v| match v {
            Object::Response(s) if purge.selects(s) => {
                removed.fetch_add(1, Ordering::Relaxed);
                false
            }
            _ => true,
        });
        removed.into_inner()
    }

    /// Bytes held (by the entries' weights).
    pub fn bytes(&self) -> u64 {
        self.table.weight()
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// The most bytes held.
    pub fn capacity(&self) -> u64 {
        self.table.capacity()
    }

    /// Entries evicted so far.
    pub fn evictions(&self) -> u64 {
        self.evictions.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fill_budget_is_shared_and_given_back() {
        let m = Memory::new(4 << 20);
        assert_eq!(m.fill_budget, 1 << 20);
        assert!(m.reserve_fill(600 << 10));
        assert!(!m.reserve_fill(600 << 10));
        assert_eq!(m.filling(), 600 << 10);
        m.release_fill(600 << 10);
        assert!(m.reserve_fill(600 << 10));
        // Large tiers keep the largest object admissible.
        assert!(Memory::new(256 << 20).max_entry() > 64 << 20);
    }
}

#[cfg(test)]
mod admission {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::stored::{Settings, assess};
    use bytes::Bytes;

    /// A new entry of a few percent of the tier survives its insertion (the probation queue
    /// is a tenth of the tier, not quick_cache's default 3 %).
    #[test]
    fn a_half_mib_answer_stays_in_an_8_mib_tier() {
        let m = Memory::new(8 << 20);
        let req = http::Request::get("/a").body(()).unwrap().into_parts().0;
        let mut h = http::HeaderMap::new();
        h.insert(
            "cache-control",
            http::HeaderValue::from_static("max-age=60"),
        );
        let s = Settings {
            heuristic: 0.1,
            stale_if_error: std::time::Duration::ZERO,
            stale_while_revalidate: std::time::Duration::ZERO,
            max_object_size: 4 << 20,
        };
        let st = assess(&req, http::StatusCode::OK, &h, false, &s)
            .unwrap()
            .finish(Bytes::from(vec![0u8; 512 << 10]));
        assert!(m.put(Key([1; 32]), Key([1; 32]), Arc::new([]), 0, Arc::new(st)));
        assert!(
            m.get(&Key([1; 32])).is_some(),
            "len {} weight {}",
            m.len(),
            m.bytes()
        );
    }
}
