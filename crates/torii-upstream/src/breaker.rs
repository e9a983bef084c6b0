//! The circuit breaker of an upstream (all its targets together) and its bulkhead.
//!
//! The breaker is closed while calls succeed. It opens when the failure rate over a sliding
//! window (ten buckets of `window / 10`) reaches `failure_rate_percent` with at least
//! `minimum_calls` calls, or after `consecutive_failures` failed calls in a row. While open,
//! calls are refused at once (503 `circuit_open` with `Retry-After`). After `open_for` it is
//! half-open: `half_open_calls` probe calls go through; one failure opens it again, all of them
//! succeeding closes it. Each change is logged and counted.
//!
//! The bulkhead is a semaphore of `max_in_flight` places, held by a request until its response
//! body ends, with at most `max_waiting` requests waiting up to `max_wait`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use torii_config::schema::{CircuitBreaker, Concurrency};

const CLOSED: u8 = 0;
const OPEN: u8 = 1;
const HALF_OPEN: u8 = 2;
const BUCKETS: u64 = 10;

/// The breaker's state, as shown by the admin listener and the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls go through.
    Closed,
    /// Calls are refused.
    Open,
    /// Probe calls go through.
    HalfOpen,
}

impl BreakerState {
    /// As written in JSON and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

#[derive(Default)]
struct Bucket {
    id: AtomicU64,
    ok: AtomicU32,
    failed: AtomicU32,
}

pub(crate) struct Breaker {
    rate: u64,
    minimum: u64,
    consecutive_limit: u32,
    statuses: crate::status_set::StatusSet,
    open_ms: u64,
    probes_allowed: u32,
    bucket_ms: u64,
    buckets: [Bucket; BUCKETS as usize],
    state: AtomicU8,
    opened_at: AtomicU64,
    probes: AtomicU32,
    probes_ok: AtomicU32,
    in_a_row: AtomicU32,
    epoch: Instant,
    upstream: Arc<str>,
    /// Times it opened, went half-open and closed.
    pub(crate) transitions: [AtomicU64; 3],
}

/// Whether a call may go.
pub(crate) enum Admit {
    /// Yes; `probe`: as one of the half-open probes.
    Go { probe: bool },
    /// No: open for this many more seconds (at least 1).
    Refuse(u64),
}

impl Breaker {
    pub(crate) fn new(upstream: &str, cfg: &CircuitBreaker) -> Self {
        Self {
            rate: u64::from(cfg.failure_rate_percent.clamp(1, 100)),
            minimum: u64::from(cfg.minimum_calls.max(1)),
            consecutive_limit: cfg.consecutive_failures,
            statuses: crate::status_set::StatusSet::new(&cfg.failure_statuses),
            open_ms: cfg.open_for.0.as_millis() as u64,
            probes_allowed: cfg.half_open_calls.max(1),
            bucket_ms: (cfg.window.0.as_millis() as u64 / BUCKETS).max(1),
            buckets: Default::default(),
            state: AtomicU8::new(CLOSED),
            opened_at: AtomicU64::new(0),
            probes: AtomicU32::new(0),
            probes_ok: AtomicU32::new(0),
            in_a_row: AtomicU32::new(0),
            epoch: Instant::now(),
            upstream: upstream.into(),
            transitions: Default::default(),
        }
    }

    fn now(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    pub(crate) fn state(&self) -> BreakerState {
        match self.state.load(SeqCst) {
            OPEN => BreakerState::Open,
            HALF_OPEN => BreakerState::HalfOpen,
            _ => BreakerState::Closed,
        }
    }

    /// Whether `status` counts as a failed call.
    pub(crate) fn fails(&self, status: u16) -> bool {
        self.statuses.contains(status)
    }

    /// Whether a call may go now.
    pub(crate) fn admit(&self) -> Admit {
        match self.state.load(SeqCst) {
            CLOSED => Admit::Go { probe: false },
            OPEN => {
                let until = self.opened_at.load(SeqCst) + self.open_ms;
                let now = self.now();
                if now < until {
                    return Admit::Refuse((until - now).div_ceil(1000).max(1));
                }
                if self
                    .state
                    .compare_exchange(OPEN, HALF_OPEN, SeqCst, SeqCst)
                    .is_ok()
                {
                    self.transitions[1].fetch_add(1, SeqCst);
                    tracing::info!(upstream = %self.upstream, probes = self.probes_allowed, "circuit breaker half-open: letting probe calls through");
                }
                self.admit_probe()
            }
            _ => self.admit_probe(),
        }
    }

    fn admit_probe(&self) -> Admit {
        if self.probes.fetch_add(1, SeqCst) < self.probes_allowed {
            Admit::Go { probe: true }
        } else {
            Admit::Refuse(1)
        }
    }

    /// Records how a call went (`probe`: admitted as a half-open probe).
    pub(crate) fn record(&self, ok: bool, probe: bool) {
        if probe {
            if !ok {
                if self
                    .state
                    .compare_exchange(HALF_OPEN, OPEN, SeqCst, SeqCst)
                    .is_ok()
                {
                    self.open_now("a probe call failed");
                }
            } else if self.probes_ok.fetch_add(1, SeqCst) + 1 >= self.probes_allowed
                && self.state.load(SeqCst) == HALF_OPEN
            {
                self.close();
            }
            return;
        }
        if self.state.load(SeqCst) != CLOSED {
            // An answer to a call admitted before the breaker opened.
            return;
        }
        let id = self.now() / self.bucket_ms;
        let bucket = &self.buckets[(id % BUCKETS) as usize];
        if bucket.id.load(SeqCst) != id && bucket.id.swap(id, SeqCst) != id {
            bucket.ok.store(0, SeqCst);
            bucket.failed.store(0, SeqCst);
        }
        if ok {
            bucket.ok.fetch_add(1, SeqCst);
            if self.in_a_row.load(SeqCst) != 0 {
                self.in_a_row.store(0, SeqCst);
            }
            return;
        }
        bucket.failed.fetch_add(1, SeqCst);
        let in_a_row = self.in_a_row.fetch_add(1, SeqCst) + 1;
        let (mut calls, mut failed) = (0u64, 0u64);
        for b in &self.buckets {
            if b.id.load(SeqCst) + BUCKETS > id {
                calls += u64::from(b.ok.load(SeqCst)) + u64::from(b.failed.load(SeqCst));
                failed += u64::from(b.failed.load(SeqCst));
            }
        }
        let by_rate = calls >= self.minimum && failed * 100 >= self.rate * calls;
        let by_run = self.consecutive_limit > 0 && in_a_row >= self.consecutive_limit;
        if (by_rate || by_run)
            && self
                .state
                .compare_exchange(CLOSED, OPEN, SeqCst, SeqCst)
                .is_ok()
        {
            self.open_now(if by_run {
                "failed calls in a row"
            } else {
                "failure rate over the window"
            });
        }
    }

    fn open_now(&self, why: &'static str) {
        self.probes.store(0, SeqCst);
        self.probes_ok.store(0, SeqCst);
        self.opened_at.store(self.now(), SeqCst);
        self.transitions[0].fetch_add(1, SeqCst);
        tracing::warn!(upstream = %self.upstream, reason = why, open_for = ?Duration::from_millis(self.open_ms), "circuit breaker open: refusing calls");
    }

    fn close(&self) {
        if self
            .state
            .compare_exchange(HALF_OPEN, CLOSED, SeqCst, SeqCst)
            .is_ok()
        {
            for b in &self.buckets {
                b.ok.store(0, SeqCst);
                b.failed.store(0, SeqCst);
            }
            self.in_a_row.store(0, SeqCst);
            self.transitions[2].fetch_add(1, SeqCst);
            tracing::info!(upstream = %self.upstream, "circuit breaker closed: the probe calls succeeded");
        }
    }
}

/// The bulkhead: most requests in flight and a bounded wait.
pub(crate) struct Bulkhead {
    places: Arc<Semaphore>,
    waiting: AtomicUsize,
    max_waiting: usize,
    max_wait: Duration,
    pub(crate) refused: AtomicU64,
}

impl Bulkhead {
    pub(crate) fn new(cfg: &Concurrency) -> Self {
        Self {
            places: Arc::new(Semaphore::new(cfg.max_in_flight.max(1) as usize)),
            waiting: AtomicUsize::new(0),
            max_waiting: cfg.max_waiting as usize,
            max_wait: cfg.max_wait.0,
            refused: AtomicU64::new(0),
        }
    }

    /// A place, or `None` (counted) when the wait queue is full or the wait ran out.
    pub(crate) async fn enter(&self) -> Option<OwnedSemaphorePermit> {
        if let Ok(p) = self.places.clone().try_acquire_owned() {
            return Some(p);
        }
        let got = if self.waiting.fetch_add(1, SeqCst) < self.max_waiting {
            tokio::time::timeout(self.max_wait, self.places.clone().acquire_owned())
                .await
                .ok()
                .and_then(Result::ok)
        } else {
            None
        };
        self.waiting.fetch_sub(1, SeqCst);
        if got.is_none() {
            self.refused.fetch_add(1, SeqCst);
        }
        got
    }

    /// Requests in flight and waiting.
    pub(crate) fn load(&self, max: usize) -> (usize, usize) {
        (
            max.saturating_sub(self.places.available_permits()),
            self.waiting.load(SeqCst),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker(consecutive: u32) -> Breaker {
        Breaker::new(
            "up",
            &CircuitBreaker {
                minimum_calls: 10,
                consecutive_failures: consecutive,
                open_for: torii_config::values::Duration::millis(30),
                half_open_calls: 2,
                ..CircuitBreaker::default()
            },
        )
    }

    #[test]
    fn the_failure_rate_opens_it_only_past_the_minimum() {
        let b = breaker(0);
        for _ in 0..4 {
            b.record(true, false);
            b.record(false, false);
        }
        assert_eq!(
            b.state(),
            BreakerState::Closed,
            "8 calls: under the minimum"
        );
        b.record(true, false);
        b.record(false, false);
        assert_eq!(b.state(), BreakerState::Open, "10 calls, half failed");
        assert!(matches!(b.admit(), Admit::Refuse(1)));
    }

    #[test]
    fn failures_in_a_row_open_it_and_probes_close_it() {
        let b = breaker(3);
        for _ in 0..3 {
            b.record(false, false);
        }
        assert_eq!(b.state(), BreakerState::Open);
        std::thread::sleep(Duration::from_millis(40));
        // Two probes, then refusals.
        assert!(matches!(b.admit(), Admit::Go { probe: true }));
        assert!(matches!(b.admit(), Admit::Go { probe: true }));
        assert!(matches!(b.admit(), Admit::Refuse(_)));
        assert_eq!(b.state(), BreakerState::HalfOpen);
        b.record(true, true);
        b.record(true, true);
        assert_eq!(b.state(), BreakerState::Closed);
        assert!(matches!(b.admit(), Admit::Go { probe: false }));
        let t: Vec<u64> = b.transitions.iter().map(|t| t.load(SeqCst)).collect();
        assert_eq!(t, [1, 1, 1]);
    }

    #[test]
    fn a_failed_probe_opens_it_again() {
        let b = breaker(1);
        b.record(false, false);
        std::thread::sleep(Duration::from_millis(40));
        assert!(matches!(b.admit(), Admit::Go { probe: true }));
        b.record(false, true);
        assert_eq!(b.state(), BreakerState::Open);
        assert!(matches!(b.admit(), Admit::Refuse(_)));
    }
}
