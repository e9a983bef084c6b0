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
use std::sync::atomic::{
    AtomicBool, AtomicU32, AtomicU64, AtomicUsize,
    Ordering::{Relaxed, SeqCst},
};
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
    down: AtomicBool,
    /// Probes in a row whose verdict differs from `down` (only the checker writes it).
    contrary: AtomicU32,
    /// No longer a target (discovery removed it): it is never counted out or down again.
    retired: AtomicBool,
    /// Peak EWMA: the latency estimate in nanoseconds (`f64` bits), as of `rtt_at`.
    rtt: AtomicU64,
    /// Peak EWMA: when `rtt` was last updated (ns since the upstream's epoch).
    rtt_at: AtomicU64,
}

/// Peak EWMA: a failed answer counts as this slow at least, so a target that fails fast does
/// not look like the best one.
const FAILURE_RTT: Duration = Duration::from_secs(1);
/// Peak EWMA: the decay when none is configured.
const DEFAULT_DECAY: Duration = Duration::from_secs(10);

/// The state of every target of one target set of an upstream. When discovery changes the
/// set, the next `Health` keeps the state of the targets that stay ([`Health::next`]).
pub(crate) struct Health {
    targets: Box<[Arc<TargetState>]>,
    names: Box<[Arc<str>]>,
    shared: Arc<Shared>,
    rules: Option<Rules>,
    /// Peak EWMA: the time constant of the latency estimates' decay, in nanoseconds.
    decay_ns: f64,
}

/// What every target set of one upstream shares: a call that started on an older set still
/// counts its target's ejection where the current set sees it.
struct Shared {
    /// Targets out now (ejected).
    out: AtomicUsize,
    /// Targets down now (active health checks).
    down: AtomicUsize,
    /// The clock of `out_until`.
    epoch: Instant,
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
        let shared = Arc::new(Shared {
            out: AtomicUsize::new(0),
            down: AtomicUsize::new(0),
            epoch: Instant::now(),
            upstream: upstream.into(),
        });
        Self {
            targets: names.iter().map(|_| Arc::default()).collect(),
            names: names.into(),
            rules: Self::rules(cfg, names.len()),
            shared,
            decay_ns: DEFAULT_DECAY.as_nanos() as f64,
        }
    }

    /// With latency estimates (peak EWMA) that decay with time constant `decay`.
    pub(crate) fn with_decay(mut self, decay: Option<Duration>) -> Self {
        let d = decay.unwrap_or(DEFAULT_DECAY).max(Duration::from_millis(1));
        self.decay_ns = d.as_nanos() as f64;
        self
    }

    fn nanos(&self) -> u64 {
        u64::try_from(self.shared.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Peak EWMA: records that target `i` answered (its head) after `rtt`, or failed. A
    /// slower answer than the estimate replaces it at once; a faster one moves it by the share
    /// of the decay time that passed since the last answer.
    pub(crate) fn observe(&self, i: usize, rtt: Duration, failed: bool) {
        let Some(t) = self.targets.get(i) else { return };
        let now = self.nanos();
        let rtt = if failed { rtt.max(FAILURE_RTT) } else { rtt }.as_nanos() as f64;
        let prev = f64::from_bits(t.rtt.load(Relaxed));
        let at = t.rtt_at.swap(now, Relaxed);
        let next = if rtt > prev {
            rtt
        } else {
            let w = (-(now.saturating_sub(at) as f64) / self.decay_ns).exp();
            prev * w + rtt * (1.0 - w)
        };
        t.rtt.store(next.to_bits(), Relaxed);
    }

    /// Peak EWMA: what sending one more request to target `i` costs: its latency estimate,
    /// decayed to now (a target that has not answered for a while gets tried again), times its
    /// requests in flight plus one. A target with no estimate yet counts 1 µs.
    pub(crate) fn cost(&self, i: usize) -> f64 {
        let Some(t) = self.targets.get(i) else {
            return f64::MAX;
        };
        let since = self.nanos().saturating_sub(t.rtt_at.load(Relaxed));
        let estimate =
            f64::from_bits(t.rtt.load(Relaxed)) * (-(since as f64) / self.decay_ns).exp();
        estimate.max(1_000.0) * f64::from(t.in_flight.load(Relaxed).saturating_add(1))
    }

    fn rules(cfg: &OutlierDetection, n: usize) -> Option<Rules> {
        cfg.enabled.then(|| Rules {
            consecutive: cfg.consecutive_failures.max(1),
            statuses: crate::status_set::StatusSet::new(&cfg.failure_statuses),
            base: cfg.base_ejection_time.0.as_millis() as u64,
            max: cfg.max_ejection_time.0.as_millis() as u64,
            max_out: n * cfg.max_ejection_percent.min(100) as usize / 100,
        })
    }

    /// The state of a new target set, `names`: targets that stay keep their state (in flight,
    /// failures, ejection, down); those that go are retired, and no longer count as out or down.
    pub(crate) fn next(&self, names: &[Arc<str>], cfg: &OutlierDetection) -> Self {
        let kept = |name: &Arc<str>| {
            self.names
                .iter()
                .position(|n| n == name)
                .map(|i| self.targets[i].clone())
        };
        let targets: Box<[Arc<TargetState>]> =
            names.iter().map(|n| kept(n).unwrap_or_default()).collect();
        for (t, name) in self.targets.iter().zip(self.names.iter()) {
            if !names.contains(name) {
                self.shared.retire(t);
            }
        }
        Self {
            targets,
            names: names.into(),
            rules: Self::rules(cfg, names.len()),
            shared: self.shared.clone(),
            decay_ns: self.decay_ns,
        }
    }

    fn now(&self) -> u64 {
        self.shared.now()
    }

    /// Brings back the targets whose time is up; call before picking. Free while none is out.
    pub(crate) fn refresh(&self) {
        if self.shared.out.load(Relaxed) == 0 {
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
                self.shared.out.fetch_sub(1, Relaxed);
                t.failures.store(0, Relaxed);
                t.last_return.store(now, Relaxed);
                tracing::info!(upstream = %self.shared.upstream, target = %self.names[i], "target back in rotation after its ejection time");
            }
        }
    }

    /// Whether some target is out or down (picks must then look at each target).
    pub(crate) fn degraded(&self) -> bool {
        self.shared.out.load(Relaxed) != 0 || self.shared.down.load(Relaxed) != 0
    }

    /// Whether target `i` takes traffic.
    pub(crate) fn is_in(&self, i: usize) -> bool {
        !self.degraded()
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
        let shared = &self.shared;
        if down {
            if t.down.swap(false, SeqCst) {
                shared.down.fetch_sub(1, Relaxed);
            }
            tracing::info!(upstream = %shared.upstream, target = %self.names[i], probes = n, "target healthy again (active health check)");
        } else if !t.down.swap(true, SeqCst) {
            shared.down.fetch_add(1, Relaxed);
            // Retired meanwhile (a probe of an older target set): `retire` may have looked
            // before the mark; one of the two takes it back.
            if t.retired.load(SeqCst) && t.down.swap(false, SeqCst) {
                shared.down.fetch_sub(1, Relaxed);
                return;
            }
            tracing::warn!(upstream = %shared.upstream, target = %self.names[i], probes = n, "target down (active health check)");
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

    /// Whether outlier detection is on.
    pub(crate) fn detects_outliers(&self) -> bool {
        self.rules.is_some()
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
        let out = &self.shared.out;
        if out
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
            .compare_exchange(0, now + time, SeqCst, Relaxed)
            .is_err()
        {
            // Another request ejected it first.
            out.fetch_sub(1, Relaxed);
            return;
        }
        // Retired meanwhile (a call that started on an older target set): `retire` may have
        // looked before the mark; one of the two takes it back.
        if t.retired.load(SeqCst) {
            if t.out_until
                .compare_exchange(now + time, 0, SeqCst, Relaxed)
                .is_ok()
            {
                out.fetch_sub(1, Relaxed);
            }
            return;
        }
        t.ejections.store(streak, Relaxed);
        t.failures.store(0, Relaxed);
        t.ejected_total.fetch_add(1, Relaxed);
        tracing::warn!(upstream = %self.shared.upstream, target = %self.names[i], failures = rules.consecutive, out_for = ?Duration::from_millis(time), "target ejected after failures in a row");
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

impl Shared {
    fn now(&self) -> u64 {
        // At least 1, so 0 can mean "in".
        self.epoch.elapsed().as_millis() as u64 + 1
    }

    /// Takes a target that discovery removed out of the counts, for good. (Its marks are
    /// cleared after `retired` is set, and `eject`/`probed` look at `retired` after marking:
    /// whichever comes second sees the other, so the counts never keep a retired target.)
    fn retire(&self, t: &TargetState) {
        t.retired.store(true, SeqCst);
        if t.out_until.swap(0, SeqCst) != 0 {
            self.out.fetch_sub(1, Relaxed);
        }
        if t.down.swap(false, SeqCst) {
            self.down.fetch_sub(1, Relaxed);
        }
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
    fn a_new_target_set_keeps_the_state_of_targets_that_stay() {
        let h = health(3, 100);
        for _ in 0..3 {
            h.record(0, Verdict::Failure);
        }
        h.probed(1, false, 1, 1);
        assert!(!h.is_in(0) && !h.is_in(1));
        // t0 stays (ejected), t1 goes (it was down), t3 comes.
        let names: Vec<Arc<str>> = ["t3", "t0", "t2"].map(Arc::from).to_vec();
        let next = h.next(&names, &OutlierDetection::default());
        assert!(next.is_in(0), "a new target is in");
        assert!(!next.is_in(1), "t0 is still ejected");
        assert!(next.is_in(2));
        assert_eq!(
            next.shared.down.load(Relaxed),
            0,
            "the retired t1 no longer counts"
        );
        assert_eq!(next.shared.out.load(Relaxed), 1);
        // A call that started on the old set ejects a target that has since gone: not counted.
        for _ in 0..3 {
            h.record(1, Verdict::Failure);
        }
        assert_eq!(next.shared.out.load(Relaxed), 1);
        assert_eq!(h.view()[1].ejected_for, None);
        let gone: Vec<Arc<str>> = ["t3"].map(Arc::from).to_vec();
        let last = next.next(&gone, &OutlierDetection::default());
        assert_eq!(last.shared.out.load(Relaxed), 0);
        assert!(!last.degraded());
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
