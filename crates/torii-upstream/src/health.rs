//! The live state of an upstream's targets: requests in flight; passive health checks
//! (outlier detection): a target that fails `consecutive_failures` times in a row is taken out
//! for a time that grows with repeated ejections, within `max_ejection_percent` of the
//! targets, and comes back by itself when its time is up (checked by the next pick, so no
//! timer task runs); and the verdicts of the active health checks (`probe.rs`): a target that
//! fails `unhealthy_threshold` probes in a row is down until it passes `healthy_threshold`.
//! A target takes traffic when it is neither ejected nor down.
//!
//! The request path pays one atomic load per pick while nothing is out (`out == 0`), and one
//! load per answer (a success only writes when it ends a run of failures).

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};
use torii_config::schema::OutlierDetection;

/// One target's state.
#[derive(Default)]
pub struct TargetState {
    in_flight: AtomicU32,
    failures: AtomicU32,
    /// Milliseconds since the upstream's epoch until which the target is out; 0: in.
    out_until: AtomicU64,
    /// Ejections in a row (each one within `max_ejection_time` of the last).
    ejections: AtomicU32,
    /// When the last ejection ended (ms since the epoch).
    last_return: AtomicU64,
    /// Ejections in all, for the metrics.
    ejected_total: AtomicU64,
    /// Down by the active health checks.
    down: std::sync::atomic::AtomicBool,
    /// Probes in a row whose verdict differs from `down` (only the checker writes it).
    contrary: AtomicU32,
}

/// The state of every target of one upstream.
pub(crate) struct Health {
    targets: Box<[Arc<TargetState>]>,
    names: Box<[Arc<str>]>,
    /// Targets out now (ejected).
    out: AtomicUsize,
    /// Targets down now (active health checks).
    down: AtomicUsize,
    epoch: Instant,
    rules: Option<Rules>,
    upstream: Arc<str>,
}

struct Rules {
    consecutive: u32,
    statuses: crate::status_set::StatusSet,
    base: u64,
    max: u64,
    max_out: usize,
}

/// Whether an answer counts for or against its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// It answered.
    Success,
    /// Connect error, reset or timeout before the head, or a failure status.
    Failure,
    /// Says nothing about the target (the gateway's own pool was full, the client's body).
    Neither,
}

impl Health {
    pub(crate) fn new(upstream: &str, names: &[Arc<str>], cfg: &OutlierDetection) -> Self {
        let n = names.len();
        let rules = cfg.enabled.then(|| Rules {
            consecutive: cfg.consecutive_failures.max(1),
            statuses: crate::status_set::StatusSet::new(&cfg.failure_statuses),
            base: cfg.base_ejection_time.0.as_millis() as u64,
            max: cfg.max_ejection_time.0.as_millis() as u64,
            max_out: n * cfg.max_ejection_percent.min(100) as usize / 100,
        });
        Self {
            targets: (0..n).map(|_| Arc::default()).collect(),
            names: names.into(),
            out: AtomicUsize::new(0),
            down: AtomicUsize::new(0),
            epoch: Instant::now(),
            rules,
            upstream: upstream.into(),
        }
    }

    fn now(&self) -> u64 {
        // At least 1, so 0 can mean "in".
        self.epoch.elapsed().as_millis() as u64 + 1
    }

    /// Brings back the targets whose time is up; call before picking. Free while none is out.
    pub(crate) fn refresh(&self) {
        if self.out.load(Relaxed) == 0 {
            return;
        }
        let now = self.now();
        for (i, t) in self.targets.iter().enumerate() {
            let until = t.out_until.load(Relaxed);
            if until != 0
                && until <= now
                && t.out_until
                    .compare_exchange(until, 0, Relaxed, Relaxed)
                    .is_ok()
            {
                self.out.fetch_sub(1, Relaxed);
                t.failures.store(0, Relaxed);
                t.last_return.store(now, Relaxed);
                tracing::info!(upstream = %self.upstream, target = %self.names[i], "target back in rotation after its ejection time");
            }
        }
    }

    /// Whether some target is out or down (picks must then look at each target).
    pub(crate) fn degraded(&self) -> bool {
        self.out.load(Relaxed) != 0 || self.down.load(Relaxed) != 0
    }

    /// Whether target `i` takes traffic.
    pub(crate) fn is_in(&self, i: usize) -> bool {
        (self.out.load(Relaxed) == 0 && self.down.load(Relaxed) == 0)
            || self
                .targets
                .get(i)
                .is_some_and(|t| t.out_until.load(Relaxed) == 0 && !t.down.load(Relaxed))
    }

    /// Records an active probe of target `i`; `healthy`/`unhealthy`: the thresholds.
    pub(crate) fn probed(&self, i: usize, passed: bool, healthy: u32, unhealthy: u32) {
        let Some(t) = self.targets.get(i) else { return };
        let down = t.down.load(Relaxed);
        if passed != down {
            // The verdict agrees with the state.
            t.contrary.store(0, Relaxed);
            return;
        }
        let n = t.contrary.fetch_add(1, Relaxed) + 1;
        let needed = if down { healthy } else { unhealthy };
        if n < needed.max(1) {
            return;
        }
        t.contrary.store(0, Relaxed);
        t.down.store(!down, Relaxed);
        if down {
            self.down.fetch_sub(1, Relaxed);
            tracing::info!(upstream = %self.upstream, target = %self.names[i], probes = n, "target healthy again (active health check)");
        } else {
            self.down.fetch_add(1, Relaxed);
            tracing::warn!(upstream = %self.upstream, target = %self.names[i], probes = n, "target down (active health check)");
        }
    }

    /// Requests in flight at target `i`.
    pub(crate) fn in_flight(&self, i: usize) -> u32 {
        self.targets.get(i).map_or(0, |t| t.in_flight.load(Relaxed))
    }

    /// Counts a request at target `i` until the guard is dropped (with the response body).
    pub(crate) fn start(&self, i: usize) -> Option<InFlight> {
        let t = self.targets.get(i)?;
        t.in_flight.fetch_add(1, Relaxed);
        Some(InFlight(t.clone()))
    }

    /// Whether `status` counts as a failure of its target.
    pub(crate) fn fails(&self, status: u16) -> bool {
        self.rules
            .as_ref()
            .is_some_and(|r| r.statuses.contains(status))
    }

    /// Records how target `i` answered; ejects it after too many failures in a row.
    pub(crate) fn record(&self, i: usize, verdict: Verdict) {
        let (Some(rules), Some(t)) = (&self.rules, self.targets.get(i)) else {
            return;
        };
        match verdict {
            Verdict::Neither => {}
            Verdict::Success => {
                if t.failures.load(Relaxed) != 0 {
                    t.failures.store(0, Relaxed);
                }
            }
            Verdict::Failure => {
                let n = t.failures.fetch_add(1, Relaxed) + 1;
                if n >= rules.consecutive {
                    self.eject(i, t, rules);
                }
            }
        }
    }

    fn eject(&self, i: usize, t: &TargetState, rules: &Rules) {
        if t.out_until.load(Relaxed) != 0 || rules.base == 0 {
            return;
        }
        // A place among the targets that may be out at once, or none. (Reserved before the
        // target is marked, so `out` never counts less than the marked targets: two requests
        // ejecting the same target at once may briefly hold two places, and a third target's
        // ejection can then be refused until its next failure.)
        if self
            .out
            .fetch_update(Relaxed, Relaxed, |n| (n < rules.max_out).then_some(n + 1))
            .is_err()
        {
            return;
        }
        let now = self.now();
        let streak = if now.saturating_sub(t.last_return.load(Relaxed)) > rules.max {
            1
        } else {
            t.ejections.load(Relaxed).saturating_add(1)
        };
        let time = rules.base.saturating_mul(u64::from(streak)).min(rules.max);
        if t.out_until
            .compare_exchange(0, now + time, Relaxed, Relaxed)
            .is_err()
        {
            // Another request ejected it first.
            self.out.fetch_sub(1, Relaxed);
            return;
        }
        t.ejections.store(streak, Relaxed);
        t.failures.store(0, Relaxed);
        t.ejected_total.fetch_add(1, Relaxed);
        tracing::warn!(upstream = %self.upstream, target = %self.names[i], failures = rules.consecutive, out_for = ?Duration::from_millis(time), "target ejected after failures in a row");
    }

    /// A snapshot of every target, for metrics and the admin listener.
    pub(crate) fn view(&self) -> Vec<TargetView> {
        let now = self.now();
        self.targets
            .iter()
            .zip(self.names.iter())
            .map(|(t, name)| {
                let until = t.out_until.load(Relaxed);
                TargetView {
                    name: name.clone(),
                    down: t.down.load(Relaxed),
                    in_flight: t.in_flight.load(Relaxed),
                    failures_in_a_row: t.failures.load(Relaxed),
                    ejected_for: (until > now).then(|| Duration::from_millis(until - now)),
                    ejections: t.ejected_total.load(Relaxed),
                }
            })
            .collect()
    }
}

/// What one target looks like now.
#[derive(Debug, Clone)]
pub struct TargetView {
    /// `host:port`.
    pub name: Arc<str>,
    /// Down by the active health checks.
    pub down: bool,
    /// Requests in flight (counted only by algorithms that use it).
    pub in_flight: u32,
    /// Failures since its last success.
    pub failures_in_a_row: u32,
    /// Out of rotation for this much longer.
    pub ejected_for: Option<Duration>,
    /// Times it was ejected.
    pub ejections: u64,
}

/// A request in flight at a target; dropped with the response body.
pub struct InFlight(Arc<TargetState>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Relaxed);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn health(n: usize, percent: u32) -> Health {
        let names: Vec<Arc<str>> = (0..n).map(|i| format!("t{i}").into()).collect();
        let cfg = OutlierDetection {
            consecutive_failures: 3,
            max_ejection_percent: percent,
            base_ejection_time: torii_config::values::Duration::millis(50),
            max_ejection_time: torii_config::values::Duration::secs(1),
            ..OutlierDetection::default()
        };
        Health::new("up", &names, &cfg)
    }

    #[test]
    fn failures_in_a_row_eject_and_a_success_resets_the_run() {
        let h = health(4, 50);
        h.record(0, Verdict::Failure);
        h.record(0, Verdict::Failure);
        h.record(0, Verdict::Success);
        h.record(0, Verdict::Failure);
        h.record(0, Verdict::Failure);
        assert!(h.is_in(0), "the run was broken by a success");
        h.record(0, Verdict::Failure);
        assert!(!h.is_in(0));
        assert!(h.is_in(1));
        assert_eq!(h.view()[0].ejections, 1);
        // Neither (a full pool) says nothing.
        for _ in 0..10 {
            h.record(1, Verdict::Neither);
        }
        assert!(h.is_in(1));
    }

    #[test]
    fn the_panic_threshold_keeps_traffic_flowing() {
        let h = health(4, 50);
        for t in 0..4 {
            for _ in 0..3 {
                h.record(t, Verdict::Failure);
            }
        }
        let out = (0..4).filter(|&t| !h.is_in(t)).count();
        assert_eq!(out, 2, "at most half of the targets are out");
        // One target alone is never ejected at 50 %.
        let one = health(1, 50);
        for _ in 0..10 {
            one.record(0, Verdict::Failure);
        }
        assert!(one.is_in(0));
    }

    #[test]
    fn an_ejected_target_comes_back_and_repeat_ejections_last_longer() {
        let h = health(2, 50);
        for _ in 0..3 {
            h.record(0, Verdict::Failure);
        }
        assert!(!h.is_in(0));
        let first = h.view()[0].ejected_for.unwrap();
        assert!(first <= Duration::from_millis(50));
        std::thread::sleep(Duration::from_millis(60));
        h.refresh();
        assert!(h.is_in(0));
        for _ in 0..3 {
            h.record(0, Verdict::Failure);
        }
        let second = h.view()[0].ejected_for.unwrap();
        assert!(second > Duration::from_millis(50), "{second:?}");
    }
}
