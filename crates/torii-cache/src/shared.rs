//! The shared tier: stored responses kept in the gateway fleet's Redis, so one node's miss
//! fills every node's cache. A node looks in Redis when its memory has nothing, and copies
//! what it finds into memory. Writes happen in the background after the response is stored
//! in memory; objects larger than the tier's limit stay in memory only. Redis failing is a
//! miss (or a skipped write), counted, never an error for the client.
//!
//! Purges reach every node through a Redis stream of purge records (`torii:c:purges`). Each
//! node reads it a few times a second and purges its memory; the records are also kept as
//! bans: an object read from Redis that a ban newer than the object selects is treated as
//! absent and deleted. So a purge needs no index of Redis keys (the way Varnish bans work),
//! and a node that starts later still honours earlier purges (it reads the stream from the
//! start).

use crate::memory::{Purge, Selector};
use crate::stored::wire::{self, Decoded};
use crate::{Key, Memory, Object, Stored, key};
use bytes::Bytes;
use http::{HeaderMap, HeaderName};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant, SystemTime};
use torii_store::Redis;

/// The stream of purge records.
const PURGES: &str = "torii:c:purges";
/// How often a node reads new purge records.
const POLL: Duration = Duration::from_millis(200);

/// A purge and when it was made (wall clock).
struct Ban {
    purge: Purge,
    at: SystemTime,
}

/// Counters of the shared tier (`torii_cache_shared_total{result}`).
#[derive(Debug, Default)]
pub struct SharedCounters {
    /// Objects found.
    pub hits: AtomicU64,
    /// Nothing found.
    pub misses: AtomicU64,
    /// Objects found but purged since they were stored.
    pub banned: AtomicU64,
    /// Objects written.
    pub writes: AtomicU64,
    /// Calls that failed (Redis down, slow or refusing): served from memory only.
    pub errors: AtomicU64,
}

/// The shared tier of one process.
pub struct SharedTier {
    redis: Arc<Redis>,
    memory: Arc<Memory>,
    /// The largest body stored in Redis.
    pub max_object_size: u64,
    /// The longest an object is kept in Redis (and a purge remembered).
    pub max_ttl: Duration,
    bans: Mutex<Vec<Ban>>,
    poller: OnceLock<()>,
    /// The purge records made before this node started have been read: until then a lookup
    /// is a miss (an object purged earlier must not be served).
    ready: std::sync::atomic::AtomicBool,
    /// Its counters.
    pub counters: SharedCounters,
}

fn redis_key(k: &Key) -> String {
    let mut s = String::with_capacity(8 + 64);
    s.push_str("torii:c:");
    for b in k.0 {
        s.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
        s.push(char::from(b"0123456789abcdef"[usize::from(b & 15)]));
    }
    s
}

fn count(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

impl SharedTier {
    /// A tier over `redis`, feeding `memory`.
    pub fn new(
        redis: Arc<Redis>,
        memory: Arc<Memory>,
        max_object_size: u64,
        max_ttl: Duration,
    ) -> Self {
        Self {
            redis,
            memory,
            max_object_size,
            max_ttl,
            bans: Mutex::new(Vec::new()),
            poller: OnceLock::new(),
            ready: std::sync::atomic::AtomicBool::new(false),
            counters: SharedCounters::default(),
        }
    }

    /// Starts reading purge records (once, on the first use: a config that is only validated
    /// starts nothing).
    fn start(self: &Arc<Self>) {
        self.poller.get_or_init(|| {
            let weak = Arc::downgrade(self);
            tokio::spawn(poll(weak));
        });
    }

    async fn get(&self, k: &Key) -> Option<Decoded> {
        let r: Result<Option<Vec<u8>>, _> =
            self.redis.query(redis::cmd("GET").arg(redis_key(k))).await;
        match r {
            Ok(Some(v)) => wire::decode(Bytes::from(v)),
            Ok(None) => None,
            Err(e) => {
                count(&self.counters.errors);
                tracing::debug!(error = %e, "cache: shared tier read failed");
                None
            }
        }
    }

    fn banned(&self, s: &Stored) -> bool {
        let bans = self.bans.lock().unwrap_or_else(|e| e.into_inner());
        bans.iter()
            .any(|b| b.at >= s.stored_wall() && b.purge.selects(s))
    }

    /// Looks `resource` up in Redis (following a `Vary` marker to the request's variant);
    /// what is found is copied into memory. Returns the key, the response and the epoch of
    /// the resource's marker (0 without one).
    pub async fn lookup(
        self: &Arc<Self>,
        resource: &Key,
        headers: &HeaderMap,
    ) -> Option<(Key, Arc<Stored>, u64)> {
        self.start();
        if !self.ready.load(Ordering::Acquire) {
            count(&self.counters.misses);
            return None;
        }
        let mut marker_epoch = 0;
        let (key, found) = match self.get(resource).await {
            Some(Decoded::Response(s)) => (*resource, *s),
            Some(Decoded::Vary(names, epoch)) => {
                marker_epoch = epoch;
                let names: Arc<[HeaderName]> = names.into();
                let v = key::variant(resource, epoch, &names, headers);
                // Never lowers the epoch this node knows.
                match self.memory.get(resource) {
                    Some(Object::Vary(_, e)) if e >= epoch => {}
                    _ => self.memory.insert(*resource, Object::Vary(names, epoch)),
                }
                match self.get(&v).await {
                    Some(Decoded::Response(s)) => (v, *s),
                    _ => {
                        count(&self.counters.misses);
                        return None;
                    }
                }
            }
            None => {
                count(&self.counters.misses);
                return None;
            }
        };
        if self.banned(&found) {
            count(&self.counters.banned);
            let redis = self.redis.clone();
            tokio::spawn(async move {
                let _: Result<i64, _> = redis.query(redis::cmd("DEL").arg(redis_key(&key))).await;
            });
            return None;
        }
        count(&self.counters.hits);
        let found = Arc::new(found);
        self.memory.insert(key, Object::Response(found.clone()));
        Some((key, found, marker_epoch))
    }

    /// The frame a stored response is written as (made before memory takes the response).
    pub fn frame(&self, stored: &Stored) -> Option<(Vec<u8>, u64)> {
        if stored.body.len() as u64 > self.max_object_size {
            return None;
        }
        let ttl = stored.shared_ttl(Instant::now(), self.max_ttl);
        Some((
            stored.encode(),
            u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX),
        ))
    }

    /// Writes a stored response's frame (see [`Self::frame`]; `None`: over the tier's limit)
    /// and its resource's `Vary` marker, in the background.
    pub fn store(
        self: &Arc<Self>,
        resource: Key,
        key: Key,
        vary: &[HeaderName],
        epoch: u64,
        frame: Option<(Vec<u8>, u64)>,
    ) {
        let Some((frame, px)) = frame else { return };
        self.start();
        let marker_px = u64::try_from(self.max_ttl.as_millis()).unwrap_or(u64::MAX);
        let marker = (!vary.is_empty()).then(|| wire::encode_vary(vary, epoch));
        let this = self.clone();
        tokio::spawn(async move {
            if let Some(m) = marker {
                let r: Result<(), _> = this
                    .redis
                    .query(
                        redis::cmd("SET")
                            .arg(redis_key(&resource))
                            .arg(m)
                            .arg("PX")
                            .arg(marker_px),
                    )
                    .await;
                if r.is_err() {
                    count(&this.counters.errors);
                    return;
                }
            }
            let r: Result<(), _> = this
                .redis
                .query(
                    redis::cmd("SET")
                        .arg(redis_key(&key))
                        .arg(frame)
                        .arg("PX")
                        .arg(px),
                )
                .await;
            match r {
                Ok(()) => count(&this.counters.writes),
                Err(e) => {
                    count(&this.counters.errors);
                    tracing::debug!(error = %e, "cache: shared tier write failed");
                }
            }
        });
    }

    /// Invalidates a resource in Redis (after an unsafe request): its response is deleted,
    /// or its marker moves to the next epoch (every variant out of reach).
    pub fn invalidate(self: &Arc<Self>, resource: Key) {
        let this = self.clone();
        tokio::spawn(async move {
            let k = redis_key(&resource);
            let r = match this.get(&resource).await {
                Some(Decoded::Vary(names, e)) => {
                    this.redis
                        .query::<()>(
                            redis::cmd("SET")
                                .arg(&k)
                                .arg(wire::encode_vary(&names, e + 1))
                                .arg("PX")
                                .arg(u64::try_from(this.max_ttl.as_millis()).unwrap_or(u64::MAX)),
                        )
                        .await
                }
                Some(Decoded::Response(_)) => {
                    this.redis.query::<()>(redis::cmd("DEL").arg(&k)).await
                }
                None => Ok(()),
            };
            if r.is_err() {
                count(&this.counters.errors);
            }
        });
    }

    /// Removes what `purge` selects from Redis (as a ban every node applies) and from this
    /// node's memory; other nodes purge their memory when they read the record. Returns how
    /// many responses this node's memory held, and whether the record reached Redis.
    pub async fn purge(&self, purge: Purge) -> (u64, Result<(), String>) {
        let (kind, value) = match &purge.selector {
            Selector::Url(u) => ("url", u.as_str()),
            Selector::Prefix(p) => ("prefix", p.as_str()),
            Selector::Tag(t) => ("tag", t.as_str()),
        };
        let at = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis()
            .to_string();
        // Records older than the longest an object lives in Redis are no longer needed.
        let oldest = SystemTime::now()
            .checked_sub(self.max_ttl)
            .unwrap_or(SystemTime::UNIX_EPOCH)
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis();
        let mut cmd = redis::cmd("XADD");
        cmd.arg(PURGES)
            .arg("MINID")
            .arg("~")
            .arg(format!("{oldest}-0"))
            .arg("*")
            .arg("kind")
            .arg(kind)
            .arg("value")
            .arg(value)
            .arg("scope")
            .arg(purge.scope.as_deref().unwrap_or(""))
            .arg("at")
            .arg(&at);
        let r: Result<String, _> = self.redis.query(&cmd).await;
        let removed = self.memory.purge(&purge);
        self.ban(purge, SystemTime::now());
        (removed, r.map(|_| ()).map_err(|e| e.to_string()))
    }

    fn ban(&self, purge: Purge, at: SystemTime) {
        let mut bans = self.bans.lock().unwrap_or_else(|e| e.into_inner());
        let oldest = SystemTime::now()
            .checked_sub(self.max_ttl)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        bans.retain(|b| b.at >= oldest);
        if !bans.iter().any(|b| b.purge == purge && b.at >= at) {
            bans.push(Ban { purge, at });
        }
    }
}

/// A purge record of the stream.
fn record(fields: &[(String, String)]) -> Option<(Purge, SystemTime)> {
    let get = |k: &str| fields.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let value = get("value")?;
    let selector = match get("kind")?.as_str() {
        "url" => Selector::Url(value),
        "prefix" => Selector::Prefix(value),
        "tag" => Selector::Tag(value),
        _ => return None,
    };
    let scope = get("scope").filter(|s| !s.is_empty());
    let at = SystemTime::UNIX_EPOCH + Duration::from_millis(get("at")?.parse().ok()?);
    Some((Purge { selector, scope }, at))
}

type Entries = Vec<(String, Vec<(String, String)>)>;

/// Reads purge records: first the whole stream (purges made before this node started still
/// apply to Redis objects), then what is new, a few times a second, for as long as the tier
/// lives.
async fn poll(tier: Weak<SharedTier>) {
    let mut last = String::from("0");
    loop {
        let Some(t) = tier.upgrade() else { return };
        let mut cmd = redis::cmd("XRANGE");
        cmd.arg(PURGES)
            .arg(format!("({last}"))
            .arg("+")
            .arg("COUNT")
            .arg(1000);
        let r: Result<Entries, _> = t.redis.query(&cmd).await;
        match r {
            Ok(entries) => {
                let page = entries.len();
                for (id, fields) in entries {
                    if let Some((purge, at)) = record(&fields) {
                        t.memory.purge(&purge);
                        t.ban(purge, at);
                    }
                    last = id;
                }
                // Every record made so far is applied once a read returns less than a page.
                if page < 1000 {
                    t.ready.store(true, Ordering::Release);
                }
            }
            Err(e) => tracing::debug!(error = %e, "cache: reading purge records failed"),
        }
        drop(t);
        tokio::time::sleep(POLL).await;
    }
}
