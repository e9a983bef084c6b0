//! Service discovery: where an upstream's targets come from when they change while the
//! gateway runs. A source ([`Discover`]) answers with the targets it finds and how long the
//! answer holds; one background task per upstream asks it again when that time is up (within
//! `min_ttl`..`max_ttl`), and hands each changed answer to the upstream, which swaps in a new
//! target set (targets that stay keep their pool and health; calls in flight finish on the set
//! they started with). A failed lookup, or an answer with no target, keeps the last known
//! targets; it is logged and counted, and asked again after `retry_interval`.
//!
//! DNS (A/AAAA and SRV, `dns.rs`) is the one source today; others (Consul, Kubernetes
//! EndpointSlices) implement [`Discover`] and need nothing from balancing, health or breakers.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

/// One target a source found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The address connected to: an IP address (IPv6 in brackets) or a host name.
    pub host: String,
    /// The port.
    pub port: u16,
    /// Relative share of requests.
    pub weight: u32,
    /// The name the target is known by: the TLS server name, and the Host sent with
    /// `host_header: target`.
    pub server_name: String,
}

impl Endpoint {
    /// `host:port`: the target's name in logs, metrics and the admin listener.
    pub fn name(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// What a source found.
#[derive(Debug, Clone)]
pub struct Found {
    /// The targets.
    pub endpoints: Vec<Endpoint>,
    /// How long the answer holds (its TTL), before the task's bounds.
    pub valid_for: Duration,
}

/// A future a source returns.
pub type Finding<'a> = Pin<Box<dyn Future<Output = Result<Found, String>> + Send + 'a>>;

/// A source of targets.
pub trait Discover: Send + Sync + 'static {
    /// What is asked, for logs and the admin listener (`dns a users.internal:8080`).
    fn describe(&self) -> String;
    /// Looks the targets up now.
    fn find(&self) -> Finding<'_>;
}

/// When a source is asked again.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    /// An answer is used at least this long...
    pub min_ttl: Duration,
    /// ...and at most this long.
    pub max_ttl: Duration,
    /// A lookup that takes longer fails.
    pub timeout: Duration,
    /// After a failure, the next lookup comes this soon.
    pub retry_interval: Duration,
}

/// What the admin listener shows of an upstream's discovery.
#[derive(Debug, Clone, Default)]
pub struct DiscoveryView {
    /// The source (`dns a users.internal:8080`).
    pub source: String,
    /// Since the last lookup that found targets.
    pub last_success: Option<Duration>,
    /// The last failure, when it came after the last success.
    pub last_error: Option<String>,
    /// Lookups that found targets.
    pub resolutions: u64,
    /// Lookups that failed or found nothing (the last known targets stayed).
    pub failures: u64,
    /// Times the target set changed.
    pub changes: u64,
}

/// The discovery state an upstream keeps: for the admin listener, and for calls that come
/// before the first answer (they wait for it, up to the lookup timeout).
pub(crate) struct DiscoveryState {
    status: Mutex<Status>,
    first: tokio::sync::watch::Sender<bool>,
    /// How long a call waits for the first answer.
    pub(crate) first_wait: Duration,
}

#[derive(Default)]
struct Status {
    source: String,
    last_success: Option<Instant>,
    last_error: Option<String>,
    resolutions: u64,
    failures: u64,
    changes: u64,
}

impl DiscoveryState {
    pub(crate) fn new(source: String, first_wait: Duration) -> Self {
        Self {
            status: Mutex::new(Status {
                source,
                ..Status::default()
            }),
            first: tokio::sync::watch::Sender::new(false),
            first_wait,
        }
    }

    /// Waits until the first lookup has answered (found targets or failed), at most
    /// `first_wait`.
    pub(crate) async fn first_answer(&self) {
        let mut rx = self.first.subscribe();
        let _ = tokio::time::timeout(self.first_wait, rx.wait_for(|done| *done)).await;
    }

    fn answered(&self) {
        self.first.send_replace(true);
    }

    fn update(&self, f: impl FnOnce(&mut Status)) {
        if let Ok(mut s) = self.status.lock() {
            f(&mut s);
        }
    }

    pub(crate) fn view(&self) -> DiscoveryView {
        let Ok(s) = self.status.lock() else {
            return DiscoveryView::default();
        };
        DiscoveryView {
            source: s.source.clone(),
            last_success: s.last_success.map(|t| t.elapsed()),
            last_error: s.last_error.clone(),
            resolutions: s.resolutions,
            failures: s.failures,
            changes: s.changes,
        }
    }
}

/// What discovery feeds: an upstream (the task knows nothing else of it).
pub(crate) trait Discovered: Send + Sync + 'static {
    /// Its name, for logs.
    fn name(&self) -> &str;
    /// Its discovery state.
    fn discovery(&self) -> Option<&DiscoveryState>;
    /// Replaces its targets.
    fn set_targets(&self, found: &[Endpoint]);
}

/// Starts asking `source` for the targets of `up`, when a runtime is running (not under
/// `torii validate`). The task holds the upstream weakly and ends with it.
pub(crate) fn start<U: Discovered>(up: &Arc<U>, source: Box<dyn Discover>, schedule: Schedule) {
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let up: Weak<U> = Arc::downgrade(up);
    rt.spawn(run(up, source, schedule));
}

async fn run<U: Discovered>(up: Weak<U>, source: Box<dyn Discover>, schedule: Schedule) {
    let mut last: Vec<Endpoint> = Vec::new();
    if let Some(state) = up.upgrade().as_deref().and_then(U::discovery) {
        let source = source.describe();
        state.update(|s| s.source = source);
    }
    loop {
        let result = match tokio::time::timeout(schedule.timeout, source.find()).await {
            Ok(Ok(found)) if found.endpoints.is_empty() => {
                Err("the answer holds no target".to_string())
            }
            Ok(r) => r,
            Err(_) => Err(format!("no answer within {:?}", schedule.timeout)),
        };
        let wait = {
            let Some(up) = up.upgrade() else { return };
            let Some(state) = up.discovery() else { return };
            match result {
                Ok(mut found) => {
                    // One order, so an answer that lists the same targets differently (DNS
                    // round robin) changes nothing.
                    found
                        .endpoints
                        .sort_by(|a, b| (&a.host, a.port).cmp(&(&b.host, b.port)));
                    found
                        .endpoints
                        .dedup_by(|a, b| a.host == b.host && a.port == b.port);
                    let changed = found.endpoints != last;
                    if changed {
                        tracing::info!(upstream = %up.name(), source = %source.describe(), targets = found.endpoints.len(), "discovered targets changed");
                        up.set_targets(&found.endpoints);
                        last = found.endpoints;
                    }
                    state.update(|s| {
                        s.last_success = Some(Instant::now());
                        s.last_error = None;
                        s.resolutions += 1;
                        s.changes += u64::from(changed);
                    });
                    found
                        .valid_for
                        .clamp(schedule.min_ttl, schedule.max_ttl.max(schedule.min_ttl))
                }
                Err(e) => {
                    tracing::warn!(upstream = %up.name(), source = %source.describe(), error = %e, kept = last.len(), "discovery failed; keeping the last known targets");
                    state.update(|s| {
                        s.last_error = Some(e);
                        s.failures += 1;
                    });
                    schedule.retry_interval
                }
            }
            // The upstream is not held while the task sleeps.
        };
        if let Some(state) = up.upgrade().as_deref().and_then(U::discovery) {
            state.answered();
        }
        tokio::time::sleep(wait).await;
    }
}
