//! JSON Web Key Sets fetched from an issuer's `jwks_url`, cached in plugin state (so the
//! cache survives reloads that keep the plugin's settings).
//!
//! - Nothing is fetched at config load; the first token for the issuer fetches the set.
//! - A set is used for its `Cache-Control: max-age`, clamped to `min_ttl`..`max_ttl`. An
//!   expired set keeps being used while a background fetch replaces it (stale keys keep
//!   working when the endpoint is down or answers with errors).
//! - A token naming an unknown `kid` fetches the set again, but fetches start at most once per
//!   `refetch_interval`, and only one runs at a time: requests arriving meanwhile wait for its
//!   result (a flood of unknown kids makes one fetch).
//! - The fetch runs in its own task, so a client going away does not cancel it.

use super::config::{Alg, JwksConfig};
use super::keys::{self, Key};
use bytes::Bytes;
use serde_json::Value;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use torii_upstream::Client as HttpClient;

/// A fetched key set.
#[derive(Debug, Default)]
pub(crate) struct KeySet {
    /// The usable keys.
    pub keys: Vec<Key>,
}

/// Fetch and cache settings of one source.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Settings {
    pub min_ttl: Duration,
    pub max_ttl: Duration,
    pub refetch_interval: Duration,
    pub timeout: Duration,
    pub max_size: usize,
}

impl From<&JwksConfig> for Settings {
    fn from(c: &JwksConfig) -> Self {
        Self {
            min_ttl: c.min_ttl.0,
            max_ttl: c.max_ttl.0,
            refetch_interval: c.refetch_interval.0,
            timeout: c.timeout.0,
            max_size: usize::try_from(c.max_size.0).unwrap_or(usize::MAX),
        }
    }
}

/// One issuer's key set endpoint and its cache.
pub(crate) struct JwksSource {
    url: http::Uri,
    algorithms: Vec<Alg>,
    settings: Settings,
    /// Swapped on every load: the state (and its cached keys) outlives reloads that keep the
    /// jwt settings, but fetches go through the upstream of the current config.
    http: Mutex<HttpClient>,
    state: Mutex<State>,
    /// Held by the running fetch (single flight).
    fetch_lock: Arc<tokio::sync::Mutex<()>>,
}

#[derive(Default)]
struct State {
    keys: Option<Arc<KeySet>>,
    expires: Option<Instant>,
    last_attempt: Option<Instant>,
    completed: u64,
    in_flight: bool,
}

/// What the cache holds right now.
pub(crate) struct Snapshot {
    /// The current set, if one was ever fetched.
    pub keys: Option<Arc<KeySet>>,
    /// Whether a fetch may start now, or one is running that can be joined.
    pub may_fetch: bool,
    /// Fetches completed so far (to join the next one).
    pub completed: u64,
}

impl JwksSource {
    pub fn new(url: http::Uri, algorithms: Vec<Alg>, settings: Settings, http: HttpClient) -> Self {
        Self {
            url,
            algorithms,
            settings,
            http: Mutex::new(http),
            state: Mutex::new(State::default()),
            fetch_lock: Arc::new(tokio::sync::Mutex::new(())),
        }
    }

    /// Fetches go through `http` from now on (a reload may have changed the upstream).
    pub fn set_client(&self, http: HttpClient) {
        *self.http.lock().unwrap_or_else(|e| e.into_inner()) = http;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn allowed(&self, st: &State, now: Instant) -> bool {
        st.last_attempt
            .is_none_or(|t| now.saturating_duration_since(t) >= self.settings.refetch_interval)
    }

    /// The cached set and whether a fetch may run now. Starts a background fetch when the set
    /// has expired (the expired set is still returned).
    pub fn snapshot(self: &Arc<Self>) -> Snapshot {
        let now = Instant::now();
        let (snap, refresh) = {
            let st = self.lock();
            let allowed = self.allowed(&st, now);
            let expired = st.expires.is_some_and(|e| now >= e);
            (
                Snapshot {
                    keys: st.keys.clone(),
                    may_fetch: st.in_flight || allowed,
                    completed: st.completed,
                },
                expired && st.keys.is_some() && allowed && !st.in_flight,
            )
        };
        if refresh && let Ok(rt) = tokio::runtime::Handle::try_current() {
            let this = self.clone();
            let seen = snap.completed;
            rt.spawn(async move {
                this.refresh(seen).await;
            });
        }
        snap
    }

    /// Fetches the set again unless a fetch completed since `seen` or the rate limit forbids
    /// it; returns the set current afterwards. Concurrent callers share one fetch.
    pub async fn refresh(self: &Arc<Self>, seen: u64) -> Option<Arc<KeySet>> {
        let guard = self.fetch_lock.clone().lock_owned().await;
        {
            let mut st = self.lock();
            if st.completed != seen || !self.allowed(&st, Instant::now()) {
                return st.keys.clone();
            }
            st.last_attempt = Some(Instant::now());
            st.in_flight = true;
        }
        let this = self.clone();
        let task = tokio::spawn(async move {
            let _guard = guard;
            let result = this.fetch().await;
            let mut st = this.lock();
            st.in_flight = false;
            st.completed += 1;
            match result {
                Ok((set, ttl)) => {
                    tracing::debug!(url = %this.url, keys = set.keys.len(), ttl_secs = ttl.as_secs(), "jwt: key set fetched");
                    st.keys = Some(Arc::new(set));
                    st.expires = Instant::now().checked_add(ttl);
                }
                Err(e) => {
                    tracing::warn!(url = %this.url, error = %e, cached = st.keys.is_some(), "jwt: key set fetch failed");
                }
            }
        });
        if task.await.is_err() {
            // The fetch task panicked or was cancelled; never leave the flag set.
            self.lock().in_flight = false;
        }
        self.lock().keys.clone()
    }

    async fn fetch(&self) -> Result<(KeySet, Duration), String> {
        let req = http::Request::get(self.url.clone())
            .header(
                http::header::ACCEPT,
                "application/jwk-set+json, application/json",
            )
            .header(http::header::USER_AGENT, "torii")
            .body(Bytes::new())
            .map_err(|e| e.to_string())?;
        let http = self.http.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let resp = http
            .call(req, self.settings.timeout, self.settings.max_size)
            .await
            .map_err(|e| e.to_string())?;
        if resp.status() != http::StatusCode::OK {
            return Err(format!("status {}", resp.status()));
        }
        let ttl = ttl(resp.headers(), &self.settings);
        let set = parse_set(resp.body(), &self.algorithms)?;
        Ok((set, ttl))
    }
}

/// The lifetime of a fetched set: `max-age` (0 for `no-cache` / `no-store`), `min_ttl` when
/// absent, clamped to `min_ttl`..`max_ttl`.
pub(crate) fn ttl(headers: &http::HeaderMap, s: &Settings) -> Duration {
    let mut age = None;
    for v in headers.get_all(http::header::CACHE_CONTROL) {
        let Ok(v) = v.to_str() else { continue };
        for d in v.split(',') {
            let d = d.trim();
            if d.eq_ignore_ascii_case("no-cache") || d.eq_ignore_ascii_case("no-store") {
                age = Some(0);
            } else if let Some((k, n)) = d.split_once('=')
                && k.trim().eq_ignore_ascii_case("max-age")
                && age != Some(0)
                && let Ok(n) = n.trim().trim_matches('"').parse::<u64>()
            {
                age = Some(n);
            }
        }
    }
    let t = age.map_or(s.min_ttl, Duration::from_secs);
    t.max(s.min_ttl).min(s.max_ttl.max(s.min_ttl))
}

/// Parses a JWKS body. Keys that are malformed, not for signatures, or fit none of the
/// issuer's algorithms are skipped; a set with no usable key is an error (the cached set is
/// then kept).
pub(crate) fn parse_set(body: &[u8], algorithms: &[Alg]) -> Result<KeySet, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    let list = v
        .get("keys")
        .and_then(Value::as_array)
        .ok_or("no `keys` list")?;
    let mut keys = Vec::new();
    let mut skipped = Vec::new();
    for (i, k) in list.iter().enumerate() {
        let Some(obj) = k.as_object() else {
            skipped.push(format!("#{i}: not an object"));
            continue;
        };
        match keys::from_jwk(obj) {
            Ok(Some(jwk)) if !jwk.material_is_secret() => {
                match keys::build(jwk.kid, jwk.material, jwk.pin, algorithms) {
                    Ok(key) => keys.push(key),
                    Err(e) => skipped.push(format!("#{i}: {e}")),
                }
            }
            Ok(Some(_)) => skipped.push(format!("#{i}: symmetric keys are not taken from a JWKS")),
            Ok(None) => {}
            Err(e) => skipped.push(format!("#{i}: {e}")),
        }
    }
    if !skipped.is_empty() {
        tracing::debug!(skipped = ?skipped, "jwt: key set entries skipped");
    }
    if keys.is_empty() {
        return Err(format!(
            "no usable key in the set ({} entries{})",
            list.len(),
            if skipped.is_empty() {
                String::new()
            } else {
                format!("; {}", skipped.join("; "))
            }
        ));
    }
    Ok(KeySet { keys })
}
