//! GCRA (the generic cell rate algorithm): one number per key and limit, the theoretical
//! arrival time (TAT). A limit of `n` requests per `w` spaces requests `w / n` apart and lets
//! a burst of `n` through from rest; unlike a fixed window it never lets 2·n through across a
//! window boundary. Several limits are decided together: a request passes only when every
//! limit has room, and only then does it count (a refused request takes nothing).
//!
//! The same arithmetic runs in process (`LocalStore`) and in Redis (`redis.rs`'s script), in
//! microseconds.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One limit, compiled at load.
#[derive(Debug, Clone)]
pub(crate) struct Limit {
    /// Its name in the `RateLimit` headers (`100/1s` unless named).
    pub(crate) name: String,
    /// Requests per window.
    pub(crate) requests: u64,
    /// The window, in microseconds.
    pub(crate) window_us: u64,
    /// The emission interval `window / requests`, in microseconds (at least 1).
    pub(crate) interval_us: u64,
    /// The start of its `RateLimit` item, built at load: `"name";r=`.
    pub(crate) item_prefix: Box<[u8]>,
}

impl Limit {
    pub(crate) fn new(name: String, requests: u64, window: Duration) -> Self {
        let window_us = u64::try_from(window.as_micros()).unwrap_or(u64::MAX).max(1);
        let item_prefix = format!("{};r=", super::sf_string(&name))
            .into_bytes()
            .into_boxed_slice();
        Self {
            name,
            requests,
            window_us,
            interval_us: (window_us / requests.max(1)).max(1),
            item_prefix,
        }
    }

    /// The same limit shared by `nodes` gateways deciding alone (the `local` fallback).
    pub(crate) fn divided(&self, nodes: u32) -> Self {
        let requests = (self.requests / u64::from(nodes.max(1))).max(1);
        Self::new(
            self.name.clone(),
            requests,
            Duration::from_micros(self.window_us),
        )
    }
}

/// What one limit says about a request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Room {
    /// Requests still allowed now (after this one, when it passed).
    pub(crate) remaining: u64,
    /// Microseconds until the limit is fully available again.
    pub(crate) reset_us: u64,
}

/// The decision on one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Decision {
    pub(crate) allowed: bool,
    /// When refused: microseconds until the request would pass.
    pub(crate) retry_us: u64,
    /// Per limit, in config order.
    pub(crate) rooms: Rooms,
}

/// The rooms of a decision, one per limit, in place (a decision allocates nothing).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Rooms {
    items: [Room; MAX_LIMITS],
    len: usize,
}

impl std::ops::Deref for Rooms {
    type Target = [Room];
    fn deref(&self) -> &[Room] {
        &self.items[..self.len]
    }
}

impl FromIterator<Room> for Rooms {
    fn from_iter<I: IntoIterator<Item = Room>>(iter: I) -> Self {
        let mut r = Rooms::default();
        for room in iter.into_iter().take(MAX_LIMITS) {
            r.items[r.len] = room;
            r.len += 1;
        }
        r
    }
}

/// Decides a request of `cost` at time `now` (µs) against `limits`, whose TATs are `tats`;
/// updates `tats` when it passes.
pub(crate) fn decide(limits: &[Limit], tats: &mut [u64], cost: u64, now: u64) -> Decision {
    let mut allowed = true;
    let mut retry_us = 0;
    let mut next = [0u64; MAX_LIMITS];
    for (i, l) in limits.iter().enumerate() {
        let tat = tats[i].max(now);
        let new = tat.saturating_add(cost.saturating_mul(l.interval_us));
        if new - now > l.window_us {
            allowed = false;
            retry_us = retry_us.max(new - now - l.window_us);
            next[i] = tat;
        } else {
            next[i] = new;
        }
    }
    if allowed {
        tats.copy_from_slice(&next[..limits.len()]);
    }
    let rooms = limits
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let used = tats[i].max(now) - now;
            Room {
                remaining: l.window_us.saturating_sub(used) / l.interval_us,
                reset_us: used,
            }
        })
        .collect();
    Decision {
        allowed,
        retry_us,
        rooms,
    }
}

/// The most limits one plugin instance takes.
pub(crate) const MAX_LIMITS: usize = 8;

/// Per-key TATs in process: bounded by `max_keys` (least recently used keys are forgotten
/// beyond it) and by idleness (a key unused for the longest window is forgotten: its TATs
/// are in the past by then, so forgetting it changes no decision).
pub(crate) struct LocalStore {
    /// Keys are already hashes: foldhash, not moka's default SipHash, spreads them.
    keys: moka::sync::Cache<u64, Arc<Mutex<[u64; MAX_LIMITS]>>, foldhash::fast::RandomState>,
    epoch: Instant,
}

impl LocalStore {
    pub(crate) fn new(max_keys: u64, longest: Duration) -> Self {
        Self {
            keys: moka::sync::Cache::builder()
                .max_capacity(max_keys)
                // moka refuses idle times of centuries: a year is the most kept.
                .time_to_idle(
                    longest.clamp(Duration::from_secs(1), Duration::from_secs(365 * 86_400)),
                )
                .build_with_hasher(foldhash::fast::RandomState::default()),
            epoch: Instant::now(),
        }
    }

    /// Decides a request with key hash `key` against `limits`.
    pub(crate) fn decide(&self, key: u64, limits: &[Limit], cost: u64) -> Decision {
        let now = u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX);
        let slot = self
            .keys
            .get_with(key, || Arc::new(Mutex::new([0; MAX_LIMITS])));
        let mut tats = match slot.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        decide(limits, &mut tats[..limits.len()], cost, now)
    }

    /// Keys tracked now (approximate: moka counts lazily).
    #[cfg(test)]
    pub(crate) fn len(&self) -> u64 {
        self.keys.run_pending_tasks();
        self.keys.entry_count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(n: u64, secs: u64) -> Limit {
        Limit::new(format!("{n}/{secs}s"), n, Duration::from_secs(secs))
    }

    #[test]
    fn a_burst_of_the_limit_passes_then_requests_are_spaced() {
        let l = [limit(10, 1)];
        let mut tats = [0u64];
        let now = 1_000_000_000;
        for i in 0..10 {
            let d = decide(&l, &mut tats, 1, now);
            assert!(d.allowed, "request {i}");
            assert_eq!(d.rooms[0].remaining, 9 - i);
        }
        let d = decide(&l, &mut tats, 1, now);
        assert!(!d.allowed);
        assert_eq!(d.retry_us, 100_000);
        // 100 ms later, one more.
        assert!(decide(&l, &mut tats, 1, now + 100_000).allowed);
        assert!(!decide(&l, &mut tats, 1, now + 100_000).allowed);
    }

    #[test]
    fn no_double_burst_at_a_window_boundary() {
        // A fixed window lets 10 through at 0.99 s and 10 more at 1.01 s; GCRA does not.
        let l = [limit(10, 1)];
        let mut tats = [0u64];
        let start = 5_000_000;
        let mut passed = 0;
        for t in [990_000u64, 1_010_000] {
            for _ in 0..10 {
                passed += u32::from(decide(&l, &mut tats, 1, start + t).allowed);
            }
        }
        assert_eq!(passed, 10);
    }

    #[test]
    fn refused_requests_take_nothing_and_every_limit_must_have_room() {
        let l = [limit(3, 1), limit(5, 60)];
        let mut tats = [0u64, 0];
        let now = 10_000_000;
        for _ in 0..3 {
            assert!(decide(&l, &mut tats, 1, now).allowed);
        }
        let before = tats;
        let d = decide(&l, &mut tats, 1, now);
        assert!(!d.allowed);
        assert_eq!(tats, before, "a refused request counts nowhere");
        // The per-second limit refills; the per-minute one has 2 left.
        let later = now + 2_000_000;
        assert!(decide(&l, &mut tats, 1, later).allowed);
        assert!(decide(&l, &mut tats, 1, later).allowed);
        let d = decide(&l, &mut tats, 1, later);
        assert!(!d.allowed, "the per-minute limit is used up");
        assert_eq!(d.rooms[1].remaining, 0);
    }

    #[test]
    fn a_cost_counts_several_units() {
        let l = [limit(10, 1)];
        let mut tats = [0u64];
        assert!(decide(&l, &mut tats, 10, 1).allowed);
        assert!(!decide(&l, &mut tats, 1, 1).allowed);
        let mut tats = [0u64];
        assert!(
            !decide(&l, &mut tats, 11, 1).allowed,
            "more than the burst never passes"
        );
    }

    #[test]
    fn the_local_store_stays_bounded() {
        let store = LocalStore::new(1000, Duration::from_secs(60));
        let l = [limit(5, 1)];
        for k in 0..20_000u64 {
            store.decide(k, &l, 1);
        }
        assert!(store.len() <= 1000, "{}", store.len());
    }
}
