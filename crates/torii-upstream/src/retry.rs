//! Retries of an upstream: which answers and errors are tried again, the wait between tries
//! (exponential backoff with full jitter) and the budget that keeps retries from multiplying
//! an outage (at most `budget_ratio` of the requests, plus `budget_min_per_second`).

use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};
use torii_config::schema::Retries;

/// Thousandths of a retry, so the ratio needs no floating point on the request path.
const ONE: i64 = 1000;
/// The budget saves up at most this many retries in quiet times.
const MAX_SAVED: i64 = 100 * ONE;

/// The retry settings and budget of one upstream.
pub(crate) struct RetryPolicy {
    pub(crate) attempts: u32,
    statuses: crate::status_set::StatusSet,
    backoff: Duration,
    max_backoff: Duration,
    /// Thousandths of a retry each request adds to the budget.
    per_request: i64,
    tokens: AtomicI64,
    min_per_second: u32,
    second: AtomicU64,
    used_this_second: AtomicU32,
    epoch: Instant,
    /// Retries sent, and retries refused by the budget (for the metrics).
    pub(crate) retried: AtomicU64,
    pub(crate) refused: AtomicU64,
}

impl RetryPolicy {
    pub(crate) fn new(cfg: &Retries) -> Self {
        Self {
            attempts: cfg.attempts.max(1),
            statuses: crate::status_set::StatusSet::new(&cfg.on_status),
            backoff: cfg.backoff.0,
            max_backoff: cfg.max_backoff.0,
            per_request: (cfg.budget_ratio.clamp(0.0, 1.0) * ONE as f64) as i64,
            tokens: AtomicI64::new(0),
            min_per_second: cfg.budget_min_per_second,
            second: AtomicU64::new(0),
            used_this_second: AtomicU32::new(0),
            epoch: Instant::now(),
            retried: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        }
    }

    /// A request starts: it adds its share to the budget.
    pub(crate) fn deposit(&self) {
        if self.per_request > 0 && self.tokens.load(Relaxed) < MAX_SAVED {
            self.tokens.fetch_add(self.per_request, Relaxed);
        }
    }

    /// Whether an answer with `status` is tried again (idempotent requests only).
    pub(crate) fn on_status(&self, status: u16) -> bool {
        self.statuses.contains(status)
    }

    /// Takes one retry from the budget; `false` (and counted) when it is spent.
    pub(crate) fn withdraw(&self) -> bool {
        let ok = self
            .tokens
            .fetch_update(Relaxed, Relaxed, |t| (t >= ONE).then_some(t - ONE))
            .is_ok()
            || self.floor();
        if ok {
            self.retried.fetch_add(1, Relaxed);
        } else {
            self.refused.fetch_add(1, Relaxed);
        }
        ok
    }

    /// One of the retries every second may always make.
    fn floor(&self) -> bool {
        if self.min_per_second == 0 {
            return false;
        }
        let now = self.epoch.elapsed().as_secs() + 1;
        let seen = self.second.load(Relaxed);
        if seen != now
            && self
                .second
                .compare_exchange(seen, now, Relaxed, Relaxed)
                .is_ok()
        {
            self.used_this_second.store(0, Relaxed);
        }
        self.used_this_second.fetch_add(1, Relaxed) < self.min_per_second
    }

    /// The wait before retry number `retry` (1 for the first): a random time up to
    /// `backoff * 2^(retry-1)`, at most `max_backoff` ("full jitter").
    pub(crate) fn wait(&self, retry: u32) -> Duration {
        let ceiling = self
            .backoff
            .saturating_mul(1u32 << (retry.saturating_sub(1)).min(16))
            .min(self.max_backoff);
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(if nanos == 0 {
            0
        } else {
            fastrand::u64(..=nanos)
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_allows_its_share_plus_the_floor() {
        let cfg = Retries {
            budget_ratio: 0.2,
            budget_min_per_second: 3,
            ..Retries::default()
        };
        let p = RetryPolicy::new(&cfg);
        for _ in 0..100 {
            p.deposit();
        }
        // 20 % of 100 requests, then the 3 of this second.
        let granted = (0..100).filter(|_| p.withdraw()).count();
        assert_eq!(granted, 23);
        assert_eq!(p.refused.load(Relaxed), 77);
    }

    #[test]
    fn waits_grow_and_stay_under_the_cap() {
        let p = RetryPolicy::new(&Retries::default());
        for _ in 0..200 {
            assert!(p.wait(1) <= Duration::from_millis(25));
            assert!(p.wait(3) <= Duration::from_millis(100));
            assert!(p.wait(30) <= Duration::from_millis(250));
        }
    }
}
