//! The two algorithms, in microseconds, and the in-process store. Both refuse what a fixed
//! window would let through twice at its boundary. Several limits are decided together: a
//! request passes only when every limit has room, and only then does it count (a refused
//! request takes nothing).
//!
//! - **GCRA** (the generic cell rate algorithm): one number per key and limit, the theoretical
//!   arrival time (TAT). `n` per `w` spaces requests `w / n` apart and lets a burst of `n`
//!   through from rest. With a `delay` bound (spike arrest), a request that is early by at
//!   most the bound is admitted and held back until its time instead of refused.
//! - **Sliding window**: never more than `n` admitted in any interval of length `w`, whatever
//!   the timing (a guarantee the weighted two-window estimate other gateways use does not
//!   give: it assumes requests were spread evenly). The window is counted in `BUCKETS`
//!   sub-windows of `w / BUCKETS`; the `BUCKETS + 1` newest cover any interval of length `w`,
//!   so their sum bounds what the interval holds. The price: a request may wait up to one
//!   sub-window longer than an exact log of arrivals would make it, with memory of
//!   `BUCKETS + 1` counters per key instead of `n` timestamps.
//!
//! The same arithmetic runs in process (`LocalStore`) and in Redis (`redis.rs`'s script).
//! State is matched to a limit by its algorithm and window, not by its allowance: a reload
//! or a plan change that moves the allowance keeps the usage counted so far (a GCRA state
//! set at another rate is rescaled to the same number of requests).

use std::time::{Duration, Instant};

/// Sub-windows of a sliding window.
pub(crate) const BUCKETS: u64 = 10;
const RING: usize = BUCKETS as usize + 1;

/// The most limits one plugin instance takes.
pub(crate) const MAX_LIMITS: usize = 8;

/// How a limit decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Algorithm {
    Gcra,
    SlidingWindow,
}

/// One limit, compiled at load.
#[derive(Debug, Clone)]
pub(crate) struct Limit {
    /// Its name in the `RateLimit` headers (`100-per-1s` unless named).
    pub(crate) name: String,
    pub(crate) algorithm: Algorithm,
    /// Requests per window.
    pub(crate) requests: u64,
    /// The window, in microseconds.
    pub(crate) window_us: u64,
    /// GCRA's emission interval `window / requests`, in microseconds (at least 1).
    pub(crate) interval_us: u64,
    /// A sliding window's sub-window, `window / BUCKETS` rounded up.
    pub(crate) bucket_us: u64,
    /// The start of its `RateLimit` item, built at load: `"name";r=`.
    pub(crate) item_prefix: Box<[u8]>,
}

impl Limit {
    pub(crate) fn new(name: String, algorithm: Algorithm, requests: u64, window: Duration) -> Self {
        let window_us = u64::try_from(window.as_micros()).unwrap_or(u64::MAX).max(1);
        let item_prefix = format!("{};r=", super::sf_string(&name))
            .into_bytes()
            .into_boxed_slice();
        Self {
            name,
            algorithm,
            requests,
            window_us,
            interval_us: (window_us / requests.max(1)).max(1),
            bucket_us: window_us.div_ceil(BUCKETS).max(1),
            item_prefix,
        }
    }

    /// The same limit shared by `nodes` gateways deciding alone (the `local` fallback).
    pub(crate) fn divided(&self, nodes: u32) -> Self {
        let requests = (self.requests / u64::from(nodes.max(1))).max(1);
        Self::new(
            self.name.clone(),
            self.algorithm,
            requests,
            Duration::from_micros(self.window_us),
        )
    }

    /// Which state belongs to this limit: its algorithm and window.
    fn owns(&self, s: &Slot) -> bool {
        match *s {
            Slot::Empty => false,
            Slot::Gcra { window, .. } => {
                self.algorithm == Algorithm::Gcra && window == self.window_us
            }
            Slot::Sliding { window, .. } => {
                self.algorithm == Algorithm::SlidingWindow && window == self.window_us
            }
        }
    }

    fn empty(&self) -> Slot {
        match self.algorithm {
            Algorithm::Gcra => Slot::Gcra {
                window: self.window_us,
                tat: 0,
                interval: self.interval_us,
            },
            Algorithm::SlidingWindow => Slot::Sliding {
                window: self.window_us,
                newest: 0,
                counts: [0; RING],
            },
        }
    }
}

/// One limit's state for one key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) enum Slot {
    #[default]
    Empty,
    /// GCRA: the TAT, and the interval it was counted at.
    Gcra {
        window: u64,
        tat: u64,
        interval: u64,
    },
    /// Sliding window: the newest sub-window's index and the ring of counts (index `i` is at
    /// `i % RING`).
    Sliding {
        window: u64,
        newest: u64,
        counts: [u32; RING],
    },
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
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Decision {
    pub(crate) allowed: bool,
    /// When refused: microseconds until the request would pass.
    pub(crate) retry_us: u64,
    /// When admitted with spike arrest: microseconds to hold the request back.
    pub(crate) delay_us: u64,
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

/// One limit's verdict on a request: whether it fits, the state if it is admitted, the wait
/// (`retry` when it does not fit, `delay` when it fits late), and the room either way.
struct Verdict {
    fits: bool,
    next: Slot,
    retry: u64,
    delay: u64,
    room_if_admitted: Room,
    room_if_refused: Room,
}

fn gcra(l: &Limit, s: Slot, cost: u64, now: u64, max_delay: u64) -> Verdict {
    let (tat, interval) = match s {
        Slot::Gcra { tat, interval, .. } => (tat, interval),
        _ => (0, l.interval_us),
    };
    let mut tat = tat.max(now);
    if interval != l.interval_us && tat > now {
        // Counted at another rate (the allowance changed): the same number of requests at
        // this one, never more than a window and the spike-arrest backlog.
        let used = u128::from(tat - now) * u128::from(l.interval_us) / u128::from(interval.max(1));
        let most = l.window_us.saturating_add(max_delay);
        tat = now + u64::try_from(used).unwrap_or(u64::MAX).min(most);
    }
    let new = tat.saturating_add(cost.saturating_mul(l.interval_us));
    let room = |t: u64| {
        let used = t - now;
        Room {
            remaining: l.window_us.saturating_sub(used) / l.interval_us,
            reset_us: used,
        }
    };
    let over = (new - now).saturating_sub(l.window_us);
    Verdict {
        fits: over <= max_delay,
        next: Slot::Gcra {
            window: l.window_us,
            tat: new,
            interval: l.interval_us,
        },
        retry: over.saturating_sub(max_delay),
        delay: over,
        room_if_admitted: room(new),
        room_if_refused: room(tat),
    }
}

fn sliding(l: &Limit, s: Slot, cost: u64, now: u64) -> Verdict {
    let cur = now / l.bucket_us;
    let (mut newest, mut counts) = match s {
        Slot::Sliding { newest, counts, .. } => (newest, counts),
        _ => (cur, [0; RING]),
    };
    if cur > newest {
        // Sub-windows that passed with nothing counted, and those now out of the window.
        let stale = (cur - newest).min(RING as u64);
        for k in 0..stale {
            counts[((cur - k) % RING as u64) as usize] = 0;
        }
        newest = cur;
    }
    let sum: u64 = counts.iter().map(|&c| u64::from(c)).sum();
    let fits = sum + cost <= l.requests;
    // When a sub-window leaves the window: index `i` stops counting at `(i + RING) · bucket`.
    let leaves = |i: u64| ((i + RING as u64) * l.bucket_us).saturating_sub(now);
    let oldest = newest.saturating_sub(BUCKETS);
    let reset = |counts: &[u32; RING]| {
        (oldest..=newest)
            .rev()
            .find(|i| counts[(i % RING as u64) as usize] > 0)
            .map_or(0, leaves)
    };
    let mut retry = 0;
    if !fits {
        let mut freed = 0;
        for i in oldest..=newest {
            freed += u64::from(counts[(i % RING as u64) as usize]);
            if sum - freed + cost <= l.requests {
                retry = leaves(i);
                break;
            }
        }
    }
    let room_if_refused = Room {
        remaining: l.requests.saturating_sub(sum),
        reset_us: reset(&counts),
    };
    let mut after = counts;
    let slot = &mut after[(newest % RING as u64) as usize];
    *slot = slot.saturating_add(u32::try_from(cost).unwrap_or(u32::MAX));
    Verdict {
        fits,
        next: Slot::Sliding {
            window: l.window_us,
            newest,
            counts: after,
        },
        retry,
        delay: 0,
        room_if_admitted: Room {
            remaining: l.requests.saturating_sub(sum + cost),
            reset_us: reset(&after),
        },
        room_if_refused,
    }
}

/// Decides a request of `cost` at time `now` (µs) against `limits`, whose state is `slots`
/// (any order; states of limits no longer configured are dropped); updates `slots` when it
/// passes. `max_delay` is the spike-arrest bound (GCRA limits only; 0 refuses what is early).
pub(crate) fn decide(
    limits: &[Limit],
    slots: &mut Vec<Slot>,
    cost: u64,
    now: u64,
    max_delay: u64,
) -> Decision {
    // Fast path: the state is laid out as the limits are (it always is, but after a change).
    let aligned = slots.len() == limits.len()
        && limits
            .iter()
            .zip(slots.iter())
            .all(|(l, s)| *s == Slot::Empty || l.owns(s));
    if !aligned {
        let old = std::mem::take(slots);
        slots.extend(
            limits
                .iter()
                .map(|l| old.iter().copied().find(|s| l.owns(s)).unwrap_or(l.empty())),
        );
    }
    decide_aligned(limits, slots, cost, now, max_delay)
}

/// [`decide`] on state laid out as the limits are.
fn decide_aligned(
    limits: &[Limit],
    slots: &mut [Slot],
    cost: u64,
    now: u64,
    max_delay: u64,
) -> Decision {
    let mut allowed = true;
    let mut retry_us = 0;
    let mut delay_us = 0;
    let mut verdicts: [Option<Verdict>; MAX_LIMITS] = Default::default();
    for (i, l) in limits.iter().enumerate().take(MAX_LIMITS) {
        let v = match l.algorithm {
            Algorithm::Gcra => gcra(l, slots[i], cost, now, max_delay),
            Algorithm::SlidingWindow => sliding(l, slots[i], cost, now),
        };
        if !v.fits {
            allowed = false;
            retry_us = retry_us.max(v.retry);
        }
        delay_us = delay_us.max(v.delay);
        verdicts[i] = Some(v);
    }
    let rooms = verdicts
        .iter()
        .take(limits.len())
        .enumerate()
        .filter_map(|(i, v)| {
            let v = v.as_ref()?;
            if allowed {
                slots[i] = v.next;
                Some(v.room_if_admitted)
            } else {
                Some(v.room_if_refused)
            }
        })
        .collect();
    Decision {
        allowed,
        retry_us,
        delay_us: if allowed { delay_us } else { 0 },
        rooms,
    }
}

/// One key's state in process: a single limit's slot in place (the common case: no second
/// allocation and one less pointer to follow per request), or several.
#[derive(Debug, Clone)]
pub(crate) enum Stored {
    One(Slot),
    Many(Vec<Slot>),
}

impl Stored {
    fn new(limits: &[Limit]) -> Self {
        match limits {
            [l] => Stored::One(l.empty()),
            _ => Stored::Many(limits.iter().map(Limit::empty).collect()),
        }
    }

    fn decide(&mut self, limits: &[Limit], cost: u64, now: u64, max_delay: u64) -> Decision {
        if let (Stored::One(s), [l]) = (&mut *self, limits) {
            if !(*s == Slot::Empty || l.owns(s)) {
                *s = l.empty();
            }
            return decide_aligned(limits, std::slice::from_mut(s), cost, now, max_delay);
        }
        // The limits changed from one to several: the state moves to a list.
        if let Stored::One(s) = *self {
            *self = Stored::Many(vec![s]);
        }
        match self {
            Stored::Many(v) => decide(limits, v, cost, now, max_delay),
            Stored::One(_) => Decision::default(),
        }
    }
}

/// Per-key state in process, bounded by `max_keys`. The table is quick_cache's S3-FIFO: a new
/// key enters a small probation queue and is kept only once it is used again, so a flood of
/// one-off keys churns the probation queue and leaves the keys in steady use alone; a key the
/// table let go is judged as from rest when it returns. A decision is one hash probe under
/// the key's shard lock, with the state changed where the table keeps it (`Cache::entry`): no
/// per-key lock or reference count, and no pointer to follow to a state kept elsewhere. With
/// many keys each of those was a cache miss per request.
pub(crate) struct LocalStore {
    /// Keys are already hashes (with a random seed, `key.rs`): foldhash spreads them.
    keys: quick_cache::sync::Cache<
        u64,
        Stored,
        quick_cache::UnitWeighter,
        foldhash::fast::RandomState,
    >,
    epoch: Instant,
}

/// Where the in-process clock starts, in µs: far enough from zero that a sliding window's
/// oldest sub-window index never goes below it.
const CLOCK_BASE_US: u64 = 1 << 40;

impl LocalStore {
    pub(crate) fn new(max_keys: u64) -> Self {
        let items = usize::try_from(max_keys).unwrap_or(usize::MAX).max(1);
        Self {
            keys: quick_cache::sync::Cache::with(
                items,
                max_keys.max(1),
                quick_cache::UnitWeighter,
                foldhash::fast::RandomState::default(),
                quick_cache::sync::DefaultLifecycle::default(),
            ),
            epoch: Instant::now(),
        }
    }

    /// Decides a request with key hash `key` against `limits`.
    pub(crate) fn decide(&self, key: u64, limits: &[Limit], cost: u64, max_delay: u64) -> Decision {
        let now =
            CLOCK_BASE_US + u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX / 2);
        use quick_cache::sync::{EntryAction, EntryResult};
        let found = self.keys.entry(&key, None, |_, stored| {
            EntryAction::Retain(stored.decide(limits, cost, now, max_delay))
        });
        match found {
            EntryResult::Retained(d) => d,
            EntryResult::Vacant(place) => {
                // A new key: decided from rest; a request for the same key meanwhile waits
                // for this state and then decides on it.
                let mut stored = Stored::new(limits);
                let d = stored.decide(limits, cost, now, max_delay);
                let _ = place.insert(stored);
                d
            }
            // The callback never asks to remove or replace, and there is no time-out; should
            // that change, a decision from rest is what a key the table let go gets too.
            EntryResult::Removed(..) | EntryResult::Replaced(..) | EntryResult::Timeout => {
                Stored::new(limits).decide(limits, cost, now, max_delay)
            }
        }
    }

    /// Keys tracked now.
    #[cfg(test)]
    pub(crate) fn len(&self) -> u64 {
        self.keys.len() as u64
    }
}

#[cfg(test)]
mod tests;
