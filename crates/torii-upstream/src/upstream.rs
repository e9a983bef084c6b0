//! A named upstream service and its one call API.

use crate::balance::Affinity;
use crate::breaker::{Admit, Breaker, BreakerState, Bulkhead};
use crate::codec::encode::ExtraFields;
use crate::discovery::{DiscoveryState, DiscoveryView, Endpoint};
use crate::error::{CallError, Retry, idempotent};
use crate::h1;
use crate::health::{Health, InFlight, TargetView, Verdict};
use crate::members::{Members, TargetMaker};
use crate::pool::{Conn, PoolSettings, TargetPool};
use crate::response::{BodyWatch, Held, ResponseBody, UpstreamResponse};
use crate::retry::RetryPolicy;
use crate::target::Target;
use arc_swap::ArcSwap;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;
use torii_config::schema::{
    DiscoveryScheme, HostHeader, LoadBalancing, OutlierDetection, Upstream as UpstreamConfig,
    UpstreamProtocol,
};
use torii_core::{Body, ErrorKind, GatewayError};

/// A named upstream service: its targets (each with its pool), how they are chosen, and the
/// clocks of an exchange. Built once per config load (reused across reloads that leave its
/// settings alone, see [`crate::Registry`]) and shared by every caller: the proxy, plugins
/// that call out (forward auth, introspection, JWKS), and later composition and mirroring.
pub struct Upstream {
    /// The name.
    pub name: Arc<str>,
    /// The targets, how they are chosen and their live state: one set, replaced whole when
    /// discovery changes it (a call keeps the set it started with).
    members: ArcSwap<Members>,
    /// How discovered targets are built.
    maker: TargetMaker,
    /// For the next target set.
    load_balancing: LoadBalancing,
    /// For the next target set.
    outlier_detection: OutlierDetection,
    /// Where the targets come from, when not from the config.
    discovery: Option<DiscoveryState>,
    /// Retries and their budget.
    retry: RetryPolicy,
    /// The circuit breaker, when configured.
    breaker: Option<Breaker>,
    /// The bulkhead and its size, when configured.
    bulkhead: Option<(Bulkhead, usize)>,
    /// Hedging: the delay before a second try, when configured.
    hedge: Option<Duration>,
    /// Hedges sent.
    hedges: std::sync::atomic::AtomicU64,
    /// Hedges whose answer was used.
    hedge_wins: std::sync::atomic::AtomicU64,
    /// Which Host header is sent.
    pub host_header: HostHeader,
    /// HTTP/2 to the targets.
    pub http2: bool,
    /// Time to the response head.
    pub response_headers_timeout: Duration,
    /// Body idle timeout.
    pub body_idle_timeout: Duration,
}

/// What a call sends besides the request head and body. Small and `Copy` (its larger parts
/// are borrowed): it is copied into every try.
#[derive(Clone, Copy)]
pub struct CallOptions<'a> {
    /// Fields sent after the head's own (the gateway's forwarding fields and request id).
    pub extra: Option<&'a (dyn ExtraFields + Sync)>,
    /// The request asks for a protocol upgrade (WebSocket): a 101 answer hands the
    /// connection over ([`UpstreamResponse::upgraded`]).
    pub upgrade: bool,
    /// Who is asking, for `consistent_hash` keys outside the request head.
    pub affinity: &'a Affinity<'a>,
    /// The caller's own clocks and retry rules (a route's).
    pub policy: &'a CallPolicy,
}

/// A caller's own rules for its calls: a route's `timeouts` and `retry_non_idempotent`. Built
/// at config load.
#[derive(Debug, Default, Clone, Copy)]
pub struct CallPolicy {
    /// Time to the response head of each try, instead of the upstream's.
    pub per_try: Option<Duration>,
    /// A deadline for the whole call, retries included. With it, a try that times out may be
    /// retried within what is left.
    pub total: Option<Duration>,
    /// Retry non-idempotent requests like idempotent ones.
    pub retry_unsafe: bool,
}

static NO_AFFINITY: Affinity<'static> = Affinity {
    client: None,
    consumer: None,
};
static DEFAULT_POLICY: CallPolicy = CallPolicy {
    per_try: None,
    total: None,
    retry_unsafe: false,
};

impl Default for CallOptions<'_> {
    fn default() -> Self {
        Self {
            extra: None,
            upgrade: false,
            affinity: &NO_AFFINITY,
            policy: &DEFAULT_POLICY,
        }
    }
}

impl Upstream {
    pub(crate) fn build(
        cfg: &UpstreamConfig,
        pools: &mut HashMap<String, Weak<TargetPool>>,
    ) -> Result<Self, String> {
        let http2 = cfg.protocol == UpstreamProtocol::Http2;
        let discovered_tls = cfg
            .discovery
            .as_ref()
            .is_some_and(|d| d.dns.scheme == DiscoveryScheme::Https);
        let needs_tls = discovered_tls || cfg.targets.iter().any(|t| t.url.tls);
        let client_tls = if needs_tls {
            Some(
                crate::tls::client_config(&cfg.tls, http2)
                    .map_err(|e| format!("upstream {}: {e}", cfg.name))?,
            )
        } else {
            None
        };
        let maker = TargetMaker {
            client_tls,
            server_name: cfg.tls.server_name.clone(),
            connect_timeout: cfg.timeouts.connect.0,
            settings: PoolSettings {
                max_connections: cfg.pool.max_connections_per_target as usize,
                queue_timeout: cfg.pool.queue_timeout.0,
                idle_timeout: cfg.pool.idle_timeout.0,
                http2,
                max_streams: cfg.pool.max_streams_per_connection as usize,
            },
            discovered_tls,
        };
        let mut targets = Vec::with_capacity(cfg.targets.len());
        for t in &cfg.targets {
            let authority = t.url.authority();
            // Pools are keyed by everything that shapes a connection, so an upstream whose
            // other settings change keeps its pooled connections.
            let key = format!(
                "{}|{}|{}|{:?}|{:?}|{:?}|{}",
                authority,
                t.url.tls,
                http2,
                cfg.pool,
                cfg.timeouts.connect,
                cfg.tls,
                tls_files_fingerprint(cfg)
            );
            let pool = pools.get(&key).and_then(Weak::upgrade);
            let target = maker
                .make(
                    &authority,
                    (&t.url.host, t.url.port),
                    t.url.tls,
                    &t.url.host,
                    pool,
                )
                .map_err(|e| format!("upstream {}: {e}", cfg.name))?;
            pools.insert(key, Arc::downgrade(&target.pool));
            targets.push(target);
        }
        let names: Vec<Arc<str>> = targets.iter().map(|t| t.name.clone()).collect();
        let weights: Vec<u32> = cfg.targets.iter().map(|t| t.weight).collect();
        let health = Health::new(&cfg.name, &names, &cfg.outlier_detection)
            .with_decay(cfg.load_balancing.decay.map(|d| d.0));
        Ok(Self {
            name: cfg.name.as_str().into(),
            members: ArcSwap::from_pointee(Members::new(
                targets,
                &weights,
                &cfg.load_balancing,
                health,
            )),
            maker,
            load_balancing: cfg.load_balancing.clone(),
            outlier_detection: cfg.outlier_detection.clone(),
            discovery: cfg
                .discovery
                .as_ref()
                .map(|d| DiscoveryState::new(String::new(), d.dns.timeout.0)),
            retry: RetryPolicy::new(&cfg.retries),
            breaker: cfg
                .circuit_breaker
                .as_ref()
                .map(|b| Breaker::new(&cfg.name, b)),
            hedge: cfg.hedging.as_ref().map(|h| h.delay.0),
            hedges: Default::default(),
            hedge_wins: Default::default(),
            bulkhead: cfg
                .concurrency
                .as_ref()
                .map(|c| (Bulkhead::new(c), c.max_in_flight as usize)),
            host_header: cfg.host_header,
            http2,
            response_headers_timeout: cfg.timeouts.response_headers.0,
            body_idle_timeout: cfg.timeouts.body_idle.0,
        })
    }

    /// The clocks of one exchange, with the caller's own response-head time if it has one.
    pub(crate) fn timeouts(&self, per_try: Option<Duration>) -> h1::Timeouts {
        h1::Timeouts {
            response_head: per_try.unwrap_or(self.response_headers_timeout),
            upload_idle: self.body_idle_timeout,
        }
    }

    /// Whether the target's `host:port` replaces the request's Host.
    pub(crate) fn replaces_host(&self) -> bool {
        self.host_header == HostHeader::Target
    }

    /// The current target set.
    pub(crate) fn members(&self) -> Arc<Members> {
        self.members.load_full()
    }

    /// The targets now (a copy: discovery may change them).
    pub fn targets(&self) -> Vec<Target> {
        self.members.load().targets.to_vec()
    }

    /// A target for a request without a head to hash (the balancer's choice among the
    /// targets in rotation); `None` when every target is out.
    pub fn pick(&self) -> Option<Target> {
        self.pick_avoiding(None)
    }

    /// A target other than `avoid` when another one is in rotation (a second attempt);
    /// `avoid` itself otherwise.
    pub fn pick_other(&self, avoid: &Target) -> Option<Target> {
        self.pick_avoiding(Some(&avoid.name))
    }

    fn pick_avoiding(&self, avoid: Option<&str>) -> Option<Target> {
        let m = self.members.load();
        let avoid = avoid.and_then(|a| m.targets.iter().position(|t| *t.name == *a));
        m.health.refresh();
        let i = m
            .balancer
            .pick(&m.health, None, &Affinity::default(), avoid)?;
        m.targets.get(i).cloned()
    }

    /// The live state of every target (in flight, failures, ejection), for metrics and the
    /// admin listener.
    pub fn targets_view(&self) -> Vec<TargetView> {
        self.members.load().health.view()
    }

    /// The discovery's source and last lookups, when discovery finds the targets.
    pub fn discovery_view(&self) -> Option<DiscoveryView> {
        self.discovery.as_ref().map(DiscoveryState::view)
    }
}

impl crate::discovery::Discovered for Upstream {
    fn name(&self) -> &str {
        &self.name
    }

    fn discovery(&self) -> Option<&DiscoveryState> {
        self.discovery.as_ref()
    }

    /// Replaces the target set with `found`: targets that stay keep their pool, connections
    /// and health; new ones get a pool; those that go leave with the last call that uses
    /// them. Calls in flight finish on the set they started with.
    fn set_targets(&self, found: &[Endpoint]) {
        let old = self.members.load_full();
        let mut targets = Vec::with_capacity(found.len());
        let mut weights = Vec::with_capacity(found.len());
        for e in found {
            let name = e.name();
            let target = match old.targets.iter().find(|t| *t.name == *name) {
                Some(t) => t.clone(),
                None => match self.maker.make(
                    &name,
                    (&e.host, e.port),
                    self.maker.discovered_tls,
                    &e.server_name,
                    None,
                ) {
                    Ok(t) => t,
                    Err(error) => {
                        tracing::warn!(upstream = %self.name, target = %name, %error, "discovered target left out");
                        continue;
                    }
                },
            };
            targets.push(target);
            weights.push(e.weight);
        }
        let names: Vec<Arc<str>> = targets.iter().map(|t| t.name.clone()).collect();
        let health = old.health.next(&names, &self.outlier_detection);
        self.members.store(Arc::new(Members::new(
            targets,
            &weights,
            &self.load_balancing,
            health,
        )));
    }
}

impl Upstream {
    /// Retries sent and retries the budget refused, since the upstream was built.
    pub fn retry_counts(&self) -> (u64, u64) {
        (
            self.retry.retried.load(Ordering::Relaxed),
            self.retry.refused.load(Ordering::Relaxed),
        )
    }

    /// Sends a request to a target chosen by the balancer among those in rotation, and tries
    /// again (on another target when there is one) after a failure that allows it: an error
    /// before the request was processed (any method), a reset before the response head
    /// (idempotent methods), or a status in `retries.on_status` (idempotent methods); not a
    /// timeout.
    /// A retry needs the body again, so only requests whose body is in memory (none, or kept
    /// with [`Body::into_replay`]) are retried; each retry waits a jittered backoff and takes
    /// one from the upstream's retry budget. The last try's answer or error is returned.
    /// Every answer counts for or against its target (outlier detection).
    pub async fn call(
        &self,
        head: &http::request::Parts,
        body: Body,
        options: CallOptions<'_>,
    ) -> Result<UpstreamResponse, CallError> {
        let place = match &self.bulkhead {
            None => None,
            // Boxed, like the deadline and the backoff below: calls that do not use them do not
            // carry their futures' size (every move of the request's future copies it).
            Some((b, _)) => Some(Box::pin(b.enter()).await.ok_or_else(|| {
                CallError::new(
                    GatewayError::new(
                        ErrorKind::UpstreamSaturated,
                        format!("upstream {} has its most requests in flight", self.name),
                    ),
                    Retry::Never,
                )
            })?),
        };
        let mut probe = match self.breaker.as_ref().map(Breaker::admit) {
            None => None,
            Some(Admit::Go { probe }) => Some(probe),
            Some(Admit::Refuse(secs)) => return Err(self.circuit_open(secs)),
        };
        self.retry.deposit();
        let deadline = options
            .policy
            .total
            .map(|t| tokio::time::Instant::now() + t);
        let mut set = self.members.load_full();
        if set.targets.is_empty()
            && let Some(d) = &self.discovery
        {
            // Discovery has not answered yet (the upstream was just built).
            Box::pin(d.first_answer()).await;
            set = self.members.load_full();
        }
        let members = &*set;
        let count = members.balancer.counts_in_flight();
        let timed = members.balancer.measures_latency();
        members.health.refresh();
        let mut next_target =
            members
                .balancer
                .pick(&members.health, Some(head), options.affinity, None);
        let mut body = body;
        let mut attempt = 1;
        loop {
            let Some(i) = next_target else {
                if let (Some(true), Some(b)) = (probe, &self.breaker) {
                    // A probe slot was taken and no call is made: it counts as failed.
                    b.record(false, true);
                }
                return Err(CallError::new(
                    GatewayError::new(
                        ErrorKind::NoHealthyTarget,
                        format!("every target of upstream {} is out of rotation", self.name),
                    ),
                    Retry::Never,
                ));
            };
            let again = (attempt < self.retry.attempts && !options.upgrade)
                .then(|| body.try_clone())
                .flatten();
            let mut in_flight = if count { members.health.start(i) } else { None };
            // A probe whose call is cancelled (the client left) still gets a verdict, so the
            // breaker never stays half-open with its probes spent.
            let mut probe_guard = probe.map(|p| ProbeGuard {
                breaker: self.breaker.as_ref(),
                probe: p,
                done: false,
            });
            let started = timed.then(std::time::Instant::now);
            let tried = i;
            let (i, result, hedge_in_flight) = match deadline {
                None => self.one_try(members, i, head, body, options, count).await,
                Some(at) => {
                    // This try gets what is left of the deadline at most.
                    let left = at.saturating_duration_since(tokio::time::Instant::now());
                    let policy = CallPolicy {
                        per_try: Some(options.policy.per_try.map_or(left, |p| p.min(left))),
                        ..*options.policy
                    };
                    let o = CallOptions {
                        policy: &policy,
                        ..options
                    };
                    match Box::pin(tokio::time::timeout(
                        left,
                        self.one_try(members, i, head, body, o, count),
                    ))
                    .await
                    {
                        Ok(r) => r,
                        Err(_) => (
                            i,
                            Err(CallError::new(
                                GatewayError::new(
                                    ErrorKind::UpstreamTimeout,
                                    format!(
                                        "{} did not answer within the call's deadline",
                                        members.targets[i].name
                                    ),
                                ),
                                Retry::Never,
                            )),
                            None,
                        ),
                    }
                }
            };
            // A hedge answered: its target's in-flight count goes with the answer.
            if hedge_in_flight.is_some() {
                in_flight = hedge_in_flight;
            }
            let target = &members.targets[i];
            let (verdict, retry) = self.judge(&members.health, &result, &head.method, &options);
            // Nothing is left of the deadline for another try.
            let retry = retry && deadline.is_none_or(|at| tokio::time::Instant::now() < at);
            // An answer whose body is still to come succeeds when its body ends (a body that
            // breaks counts against the target: `BodyWatch`).
            let deferred = verdict == Verdict::Success
                && members.health.detects_outliers()
                && matches!(&result, Ok(r) if r.upgraded.is_none());
            if !deferred {
                members.health.record(i, verdict);
            }
            if let Some(at) = started.filter(|_| i == tried) {
                members
                    .health
                    .observe(i, at.elapsed(), verdict == Verdict::Failure);
            }
            if let Some(g) = probe_guard.as_mut() {
                g.record(self.breaker_verdict(&result));
            }
            // A retry needs the body again, a retryable failure, a target to go to (picked
            // before the budget is touched: with none in rotation the client gets this try's
            // own answer), and the budget's leave.
            let retry_to = match again {
                Some(next) if retry => {
                    members.health.refresh();
                    members
                        .balancer
                        .pick(&members.health, Some(head), options.affinity, Some(i))
                        .filter(|&to| to != i || !same_target_is_futile(&result))
                        .map(|to| (to, next))
                }
                _ => None,
            };
            // An open breaker stops retries too (the client gets this try's answer).
            let admitted = || match self.breaker.as_ref().map(Breaker::admit) {
                None => Some(None),
                Some(Admit::Go { probe }) => Some(Some(probe)),
                Some(Admit::Refuse(_)) => None,
            };
            let retry_to = retry_to.and_then(|r| Some((r, admitted()?)));
            match retry_to {
                Some(((to, next), admitted)) if self.retry.withdraw() => {
                    probe = admitted;
                    if deferred {
                        // Its body is dropped unread.
                        members.health.record(i, Verdict::Success);
                    }
                    tracing::debug!(upstream = %self.name, target = %target.name, attempt, "trying again");
                    drop(result);
                    drop(in_flight);
                    let mut wait = self.retry.wait(attempt);
                    if let Some(at) = deadline {
                        wait = wait.min(at.saturating_duration_since(tokio::time::Instant::now()));
                    }
                    Box::pin(tokio::time::sleep(wait)).await;
                    body = next;
                    next_target = Some(to);
                    attempt += 1;
                }
                _ => {
                    // A body that breaks after its head counts against its target too.
                    let watch = deferred.then(|| BodyWatch {
                        members: set.clone(),
                        target: i,
                    });
                    if in_flight.is_none() && place.is_none() && watch.is_none() {
                        return result;
                    }
                    return result.map(|mut r| {
                        let b = std::mem::replace(r.response.body_mut(), ResponseBody::empty());
                        *r.response.body_mut() = b.holding(Held {
                            _in_flight: in_flight,
                            _place: place,
                            watch,
                        });
                        r
                    });
                }
            }
        }
    }

    /// One try at target `i`; hedged (see [`Upstream::hedged`]) when the upstream hedges and
    /// the request is idempotent. Which target answered, its result, and that target's
    /// in-flight count when it is not `i`.
    async fn one_try(
        &self,
        members: &Members,
        i: usize,
        head: &http::request::Parts,
        body: Body,
        options: CallOptions<'_>,
        count: bool,
    ) -> (usize, Result<UpstreamResponse, CallError>, Option<InFlight>) {
        if let Some(delay) = self.hedge
            && !options.upgrade
            && idempotent(&head.method)
        {
            // Boxed: calls that are not hedged do not carry two tries' futures.
            return Box::pin(self.hedged(members, i, head, body, options, count, delay)).await;
        }
        (
            i,
            self.call_target(&members.targets[i], head, body, options)
                .await,
            None,
        )
    }

    /// A try at target `i` that gets a second one on another target when it has no response
    /// head after `delay` (and the body can be sent again, another target is in rotation and
    /// the retry budget allows it). The first good answer (not an error, not a status retried)
    /// wins and the other try is cancelled; a bad one waits for the other try's answer.
    #[allow(clippy::too_many_arguments)]
    async fn hedged(
        &self,
        members: &Members,
        i: usize,
        head: &http::request::Parts,
        body: Body,
        options: CallOptions<'_>,
        count: bool,
        delay: Duration,
    ) -> (usize, Result<UpstreamResponse, CallError>, Option<InFlight>) {
        let copy = body.try_clone();
        let first = self.call_target(&members.targets[i], head, body, options);
        tokio::pin!(first);
        let copy = match tokio::time::timeout(delay, &mut first).await {
            Ok(r) => return (i, r, None),
            Err(_) => copy,
        };
        members.health.refresh();
        let other = members
            .balancer
            .pick(&members.health, Some(head), options.affinity, Some(i))
            .filter(|&j| j != i);
        let (Some(copy), Some(j)) = (copy, other) else {
            return (i, first.await, None);
        };
        if !self.retry.withdraw() {
            return (i, first.await, None);
        }
        self.hedges.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(upstream = %self.name, slow = %members.targets[i].name, hedge = %members.targets[j].name, "no answer yet; hedging");
        let in_flight = if count { members.health.start(j) } else { None };
        let second = self.call_target(&members.targets[j], head, copy, options);
        tokio::pin!(second);
        let good = |r: &Result<UpstreamResponse, CallError>| matches!(r, Ok(a) if !self.retry.on_status(a.response.status().as_u16()));
        let lost = |at: usize, r: &Result<UpstreamResponse, CallError>| {
            let (verdict, _) = self.judge(&members.health, r, &head.method, &options);
            members.health.record(at, verdict);
        };
        tokio::select! {
            r = &mut first => {
                if good(&r) {
                    return (i, r, None);
                }
                lost(i, &r);
                let r = second.await;
                if good(&r) {
                    self.hedge_wins.fetch_add(1, Ordering::Relaxed);
                }
                (j, r, in_flight)
            }
            r = &mut second => {
                if good(&r) {
                    self.hedge_wins.fetch_add(1, Ordering::Relaxed);
                    return (j, r, in_flight);
                }
                lost(j, &r);
                drop(in_flight);
                (i, first.await, None)
            }
        }
    }

    /// Hedges sent, and hedges whose answer was the one used, since the upstream was built.
    pub fn hedge_counts(&self) -> Option<(u64, u64)> {
        self.hedge.map(|_| {
            (
                self.hedges.load(Ordering::Relaxed),
                self.hedge_wins.load(Ordering::Relaxed),
            )
        })
    }

    fn circuit_open(&self, secs: u64) -> CallError {
        let after = http::HeaderValue::from(secs);
        CallError::new(
            GatewayError::new(
                ErrorKind::CircuitOpen(after),
                format!("circuit breaker of upstream {} is open", self.name),
            ),
            Retry::Never,
        )
    }

    /// How a try went for the circuit breaker: `None` when it says nothing about the upstream.
    fn breaker_verdict(&self, result: &Result<UpstreamResponse, CallError>) -> Option<bool> {
        let b = self.breaker.as_ref()?;
        match result {
            Ok(r) => Some(!b.fails(r.response.status().as_u16())),
            Err(e) => match e.error.kind {
                ErrorKind::UpstreamConnect
                | ErrorKind::UpstreamReset
                | ErrorKind::UpstreamTimeout => Some(false),
                _ => None,
            },
        }
    }

    /// The circuit breaker's state, when the upstream has one.
    pub fn breaker_state(&self) -> Option<BreakerState> {
        self.breaker.as_ref().map(Breaker::state)
    }

    /// Times the breaker opened, went half-open and closed.
    pub fn breaker_transitions(&self) -> [u64; 3] {
        self.breaker.as_ref().map_or([0; 3], |b| {
            [0, 1, 2].map(|i| b.transitions[i].load(Ordering::Relaxed))
        })
    }

    /// The bulkhead's requests in flight, waiting, and refused so far.
    pub fn bulkhead_load(&self) -> Option<(usize, usize, u64)> {
        self.bulkhead.as_ref().map(|(b, max)| {
            let (in_flight, waiting) = b.load(*max);
            (in_flight, waiting, b.refused.load(Ordering::Relaxed))
        })
    }

    /// How a try went: for its target's health, and whether it may be tried again.
    fn judge(
        &self,
        health: &Health,
        result: &Result<UpstreamResponse, CallError>,
        method: &http::Method,
        options: &CallOptions<'_>,
    ) -> (Verdict, bool) {
        let repeatable = options.policy.retry_unsafe || idempotent(method);
        match result {
            Ok(r) => {
                let status = r.response.status().as_u16();
                let failed = health.fails(status);
                (
                    if failed {
                        Verdict::Failure
                    } else {
                        Verdict::Success
                    },
                    self.retry.on_status(status) && repeatable,
                )
            }
            Err(e) => (
                match e.error.kind {
                    ErrorKind::UpstreamConnect
                    | ErrorKind::UpstreamReset
                    | ErrorKind::UpstreamTimeout => Verdict::Failure,
                    _ => Verdict::Neither,
                },
                // A timed-out try is repeated only within a total deadline: without one, a
                // retry would double the client's wait.
                (e.error.kind != ErrorKind::UpstreamTimeout || options.policy.total.is_some())
                    && match e.retry {
                        Retry::Safe => true,
                        Retry::Idempotent => repeatable,
                        Retry::Never => false,
                    },
            ),
        }
    }

    /// Sends a request to `target` and waits for the response head; the body streams as it is
    /// read. The call only reads `head`: the same head can be sent again (a retry on another
    /// target with a body kept by [`Body::into_replay`], a mirror, a fan-out), and
    /// [`CallError::retry`] says whether that is safe.
    ///
    /// `head` carries an origin-form URI and the client's Host; the target's `host:port` is
    /// sent instead when the upstream says `host_header: target` (or the head has no Host).
    /// For HTTP/2 the URI gets the scheme and authority. A reused HTTP/1.1 connection that
    /// turns out to be closed by the upstream (the keep-alive race) is retried once on a fresh
    /// connection when the request is idempotent and its body was not consumed, so that race
    /// never becomes a client error.
    pub async fn call_target(
        &self,
        target: &Target,
        head: &http::request::Parts,
        body: Body,
        options: CallOptions<'_>,
    ) -> Result<UpstreamResponse, CallError> {
        match target.pool.checkout().await.map_err(CallError::not_sent)? {
            Conn::H2(lease) => {
                // Boxed: the HTTP/1.1 path's future does not carry the HTTP/2 exchange's size.
                Box::pin(crate::h2::exchange(
                    self.timeouts(options.policy.per_try),
                    self.replaces_host(),
                    target,
                    head,
                    body,
                    options.extra,
                    lease,
                ))
                .await
            }
            Conn::H1 { mut conn, reused } => {
                let retry = reused && idempotent(&head.method);
                let writer = conn.prepare(
                    head,
                    body,
                    &target.authority,
                    self.replaces_host(),
                    options.extra,
                );
                conn.arm(self.timeouts(options.policy.per_try));
                // The write waits until the other ready connections of this runtime have
                // prepared their requests, so the upstream writes of one scheduler pass go out
                // together: an upstream on the same CPU is then woken once per batch instead
                // of once per request (measured in docs/performance.md). A request without a
                // body on plain TCP is written by the thread's flusher task (h1::flush); the
                // rest yield, then write from this task.
                let (conn, writer, write_failed) = match h1::flush::hand_over(conn, writer).await {
                    h1::flush::Handed::Written(conn, writer, failed) => (conn, writer, failed),
                    h1::flush::Handed::Declined(conn, writer) => {
                        tokio::task::yield_now().await;
                        (conn, writer, None)
                    }
                };
                let method = &head.method;
                let upgrade = options.upgrade;
                let exchange = |conn: Box<h1::Connection>, writer, write_failed, reused| {
                    conn.send(
                        writer,
                        write_failed,
                        method,
                        target.pool.clone(),
                        reused,
                        upgrade,
                    )
                };
                match exchange(conn, writer, write_failed, reused).await {
                    Err(h1::Failure {
                        error,
                        retry: Some(writer),
                    }) if retry => {
                        tracing::debug!(target = %target.name, %error, "reused connection was closed by the upstream; retrying on a fresh one");
                        let Conn::H1 { mut conn, .. } =
                            target.pool.fresh().await.map_err(CallError::not_sent)?
                        else {
                            return Err(CallError::new(
                                GatewayError::new(
                                    ErrorKind::Internal,
                                    "unexpected HTTP/2 connection",
                                ),
                                Retry::Never,
                            ));
                        };
                        conn.arm(self.timeouts(options.policy.per_try));
                        answer(exchange(conn, writer, None, false).await, target)
                    }
                    sent => answer(sent, target),
                }
            }
        }
    }
}

/// A half-open probe call of the breaker: its verdict is recorded once, and a call that never
/// finished (cancelled) counts as failed.
struct ProbeGuard<'a> {
    breaker: Option<&'a Breaker>,
    probe: bool,
    done: bool,
}

impl ProbeGuard<'_> {
    /// Records the call's verdict; a call that says nothing about the upstream (its pool was
    /// full) counts as failed for a probe, so the breaker cannot stay half-open.
    fn record(&mut self, ok: Option<bool>) {
        self.done = true;
        if let Some(b) = self.breaker {
            match ok {
                Some(ok) => b.record(ok, self.probe),
                None if self.probe => b.record(false, true),
                None => {}
            }
        }
    }
}

impl Drop for ProbeGuard<'_> {
    fn drop(&mut self) {
        if !self.done
            && self.probe
            && let Some(b) = self.breaker
        {
            b.record(false, true);
        }
    }
}

/// Whether trying the same target again cannot help: its pool was full (the wait would
/// repeat) or it could not be connected to (a connect timeout would repeat too).
fn same_target_is_futile(result: &Result<UpstreamResponse, CallError>) -> bool {
    matches!(result, Err(e) if matches!(e.error.kind, ErrorKind::UpstreamPoolExhausted | ErrorKind::UpstreamConnect))
}

/// The outcome of one HTTP/1.1 exchange.
fn answer(
    sent: Result<h1::Answer, h1::Failure>,
    target: &Target,
) -> Result<UpstreamResponse, CallError> {
    let (response, upgraded) = match sent {
        Err(mut f) => {
            if f.error.kind == ErrorKind::UpstreamTimeout {
                f.error.detail = format!("{} {}", target.name, f.error.detail);
            }
            return Err(CallError::sent(f.error));
        }
        Ok(h1::Answer::Response(r)) => (r.map(ResponseBody::h1), None),
        Ok(h1::Answer::Upgraded(head, up)) => (head.map(|()| ResponseBody::empty()), Some(up)),
    };
    Ok(UpstreamResponse {
        response,
        upgraded,
        target: target.name.clone(),
    })
}

pub(crate) fn tls_files_fingerprint(cfg: &UpstreamConfig) -> u64 {
    let t = &cfg.tls;
    torii_config::schema::pem::fingerprint(
        [&t.ca, &t.client_cert, &t.client_key]
            .into_iter()
            .flatten()
            .map(String::as_str),
    )
}
