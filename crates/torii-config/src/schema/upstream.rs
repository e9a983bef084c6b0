use crate::values::{Duration, UpstreamUrl};
use schemars::JsonSchema;
use serde::Deserialize;

/// A named upstream service: one shared client (pool, timeouts) used by every route naming it.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Upstream {
    /// Unique name, referenced by routes' `upstream`.
    pub name: String,
    /// The servers of this upstream. At least one, unless `discovery` finds them.
    #[serde(default)]
    pub targets: Vec<Target>,
    /// Where the targets come from instead of `targets` (DNS). Off when absent.
    #[serde(default)]
    pub discovery: Option<Discovery>,
    /// Protocol spoken to the targets.
    #[serde(default)]
    pub protocol: UpstreamProtocol,
    /// The Host header sent upstream: `preserve` keeps the client's, `target` sets the target's
    /// `host:port`.
    #[serde(default)]
    pub host_header: HostHeader,
    /// Timeouts towards this upstream.
    #[serde(default)]
    pub timeouts: UpstreamTimeouts,
    /// The connection pool.
    #[serde(default)]
    pub pool: Pool,
    /// TLS settings for `https://` targets.
    #[serde(default)]
    pub tls: UpstreamTls,
    /// Send this upstream a short-lived JWT signed by the gateway for authenticated requests
    /// (needs `identity.token`).
    #[serde(default)]
    pub identity_token: Option<UpstreamIdentityToken>,
    /// How a target is chosen for each request.
    #[serde(default)]
    pub load_balancing: LoadBalancing,
    /// Passive health: targets that fail repeatedly are taken out of rotation for a while.
    #[serde(default)]
    pub outlier_detection: OutlierDetection,
    /// Trying a failed request again, on another target.
    #[serde(default)]
    pub retries: Retries,
    /// Active health checks: probes sent to every target in the background. Off when absent.
    #[serde(default)]
    pub health_check: Option<HealthCheck>,
    /// The upstream's circuit breaker. Off when absent.
    #[serde(default)]
    pub circuit_breaker: Option<CircuitBreaker>,
    /// At most this many requests in flight to the upstream (a bulkhead). Off when absent.
    #[serde(default)]
    pub concurrency: Option<Concurrency>,
    /// A second try of an idempotent request on another target when the first has not
    /// answered within `delay`; the first answer wins. Off when absent.
    #[serde(default)]
    pub hedging: Option<Hedging>,
}

/// Hedged requests: a slow first try gets a second one on another target, and the first
/// answer wins (the other try is cancelled).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Hedging {
    /// How long the first try may go without a response head before the second is sent
    /// (about the upstream's 95th or 99th percentile latency).
    pub delay: Duration,
}

/// A circuit breaker over all of an upstream's targets: when too many calls fail it opens and
/// requests get 503 at once; after `open_for` a few probe requests decide whether it closes.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct CircuitBreaker {
    /// Opens when at least this share of the calls in `window` failed (percent)...
    pub failure_rate_percent: u32,
    /// ...and the window holds at least this many calls.
    pub minimum_calls: u32,
    /// The sliding window the rate is measured over.
    pub window: Duration,
    /// Also opens after this many failed calls in a row (0: only the rate).
    pub consecutive_failures: u32,
    /// Answers that count as failed calls (besides connect errors, resets and timeouts).
    pub failure_statuses: Vec<u16>,
    /// How long it stays open before letting probes through.
    pub open_for: Duration,
    /// Probe calls let through when half-open; all must succeed to close it.
    pub half_open_calls: u32,
}

impl Default for CircuitBreaker {
    fn default() -> Self {
        Self {
            failure_rate_percent: 50,
            minimum_calls: 20,
            window: Duration::secs(10),
            consecutive_failures: 0,
            failure_statuses: vec![500, 502, 503, 504],
            open_for: Duration::secs(30),
            half_open_calls: 3,
        }
    }
}

/// The bulkhead of an upstream: most requests in flight (each until its response body ends),
/// and a bounded wait for a place.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Concurrency {
    /// Most requests in flight to the upstream at once.
    pub max_in_flight: u32,
    /// Requests that may wait for a place; more get 503 at once.
    #[serde(default = "default_max_waiting")]
    pub max_waiting: u32,
    /// The longest a request waits for a place before 503.
    #[serde(default = "default_max_wait")]
    pub max_wait: Duration,
}

fn default_max_waiting() -> u32 {
    100
}
fn default_max_wait() -> Duration {
    Duration::secs(1)
}

/// A source of targets that change while the gateway runs.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Discovery {
    /// Targets from DNS records, looked up again when their TTL runs out.
    pub dns: DnsDiscovery,
}

/// Targets from DNS: the addresses of a name (A and AAAA), or the SRV records of a service.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DnsDiscovery {
    /// The name looked up: `users.internal`, or `_http._tcp.users.internal` for `srv`.
    pub name: String,
    /// `a`: every address (A and AAAA records) is a target on `port`; `srv`: each SRV record
    /// gives a host (whose addresses are the targets), a port and a weight.
    #[serde(default)]
    pub record: DnsRecord,
    /// `a`: the targets' port (default: 80 for `http`, 443 for `https`).
    #[serde(default)]
    pub port: Option<u16>,
    /// `http` or `https`: how the targets are spoken to.
    #[serde(default)]
    pub scheme: DiscoveryScheme,
    /// The DNS servers asked (`ip:port`, in order); empty: those of `/etc/resolv.conf`.
    #[serde(default)]
    pub nameservers: Vec<std::net::SocketAddr>,
    /// An answer is kept for its TTL, but at least this long...
    #[serde(default = "default_min_ttl")]
    pub min_ttl: Duration,
    /// ...and at most this long.
    #[serde(default = "default_max_ttl")]
    pub max_ttl: Duration,
    /// A lookup that takes longer fails.
    #[serde(default = "default_dns_timeout")]
    pub timeout: Duration,
    /// After a failed lookup (the last known targets stay), the next one comes this soon.
    #[serde(default = "default_dns_retry")]
    pub retry_interval: Duration,
}

/// The DNS records of [`DnsDiscovery`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DnsRecord {
    /// A and AAAA.
    #[default]
    A,
    /// SRV (RFC 2782).
    Srv,
}

/// How discovered targets are spoken to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DiscoveryScheme {
    /// Plain HTTP.
    #[default]
    Http,
    /// HTTPS, with the looked-up name as the TLS server name (unless `tls.server_name`).
    Https,
}

fn default_min_ttl() -> Duration {
    Duration::secs(1)
}
fn default_max_ttl() -> Duration {
    Duration::secs(300)
}
fn default_dns_timeout() -> Duration {
    Duration::secs(2)
}
fn default_dns_retry() -> Duration {
    Duration::secs(5)
}

/// Active health checks of an upstream's targets.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    /// What a probe is.
    #[serde(default)]
    pub kind: HealthCheckKind,
    /// `http`: the path (and query) requested with `GET`.
    #[serde(default = "default_health_path")]
    pub path: String,
    /// `http`: statuses that mean healthy.
    #[serde(default = "default_health_statuses")]
    pub expected_statuses: Vec<u16>,
    /// `http`: text the body must contain (within its first 64 KiB).
    #[serde(default)]
    pub expected_body: Option<String>,
    /// `grpc`: the service asked about (`grpc.health.v1.Health/Check`); empty: the server.
    #[serde(default)]
    pub grpc_service: String,
    /// Time between two probes of a target.
    #[serde(default = "default_health_interval")]
    pub interval: Duration,
    /// A probe that takes longer fails.
    #[serde(default = "default_health_timeout")]
    pub timeout: Duration,
    /// Passed probes in a row that bring a target that is down back into rotation.
    #[serde(default = "default_healthy_threshold")]
    pub healthy_threshold: u32,
    /// Failed probes in a row that take a target out of rotation.
    #[serde(default = "default_unhealthy_threshold")]
    pub unhealthy_threshold: u32,
    /// Up to this much random time is added to each interval, so gateways do not probe in step.
    #[serde(default = "default_health_jitter")]
    pub jitter: Duration,
}

/// The kind of an active health check.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum HealthCheckKind {
    /// `GET path`, a status in `expected_statuses`, the body containing `expected_body`.
    #[default]
    Http,
    /// A TCP connection (and the TLS handshake for `https://` targets).
    Tcp,
    /// `grpc.health.v1.Health/Check` answering `SERVING` (needs `protocol: http2`).
    Grpc,
}

fn default_health_path() -> String {
    "/".into()
}
fn default_health_statuses() -> Vec<u16> {
    vec![200]
}
fn default_health_interval() -> Duration {
    Duration::secs(10)
}
fn default_health_timeout() -> Duration {
    Duration::secs(2)
}
fn default_healthy_threshold() -> u32 {
    2
}
fn default_unhealthy_threshold() -> u32 {
    3
}
fn default_health_jitter() -> Duration {
    Duration::secs(1)
}

/// How a target is chosen for each request.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LoadBalancing {
    /// The algorithm.
    #[serde(default)]
    pub algorithm: Algorithm,
    /// `consistent_hash`: where the key comes from.
    #[serde(default)]
    pub hash_on: Option<HashOn>,
    /// `consistent_hash`: a target with more than this factor times the average requests in
    /// flight is passed over for the key's next target (bounded load; 1.25 is a common value).
    /// Off when absent.
    #[serde(default)]
    pub bounded_load: Option<f64>,
    /// `peak_ewma`: how fast a target's latency estimate forgets a slow answer (the time
    /// constant of its exponential decay; default 10s).
    #[serde(default)]
    pub decay: Option<Duration>,
}

/// A load-balancing algorithm.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Algorithm {
    /// Smooth weighted round robin: weights 3 and 1 send A, A, B, A, ...
    #[default]
    RoundRobin,
    /// The less busy of two targets chosen at random by weight (requests in flight per
    /// weight).
    LeastRequests,
    /// A target chosen at random by weight.
    Random,
    /// The cheaper of two targets chosen at random by weight, the cost being a target's
    /// latency estimate (peak EWMA: a slower answer counts at once, a faster one little by
    /// little) times its requests in flight plus one.
    PeakEwma,
    /// A Maglev table over the targets: the same key always reaches the same target while it
    /// is available; removing one of N targets moves about 1/N of the keys.
    ConsistentHash,
}

/// Where the key of `consistent_hash` comes from. A request without it is balanced by round
/// robin.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum HashOn {
    /// A request header's value.
    Header(String),
    /// A cookie's value.
    Cookie(String),
    /// A query parameter's value.
    Query(String),
    /// The request path (without the query).
    Path,
    /// The client's address (as the gateway saw it, after trusted proxies).
    ClientAddress,
    /// The authenticated consumer's name.
    Consumer,
}

/// Passive health checks (outlier detection).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct OutlierDetection {
    /// Watch the targets at all.
    pub enabled: bool,
    /// Failures in a row that take a target out: connect errors, resets and timeouts before
    /// the response head, and answers with a status in `failure_statuses`.
    pub consecutive_failures: u32,
    /// Answers that count as failures.
    pub failure_statuses: Vec<u16>,
    /// How long a target stays out the first time; each further ejection within
    /// `max_ejection_time` of the last one adds this again.
    pub base_ejection_time: Duration,
    /// The longest a target stays out.
    pub max_ejection_time: Duration,
    /// At most this share of the targets (percent) is out at once: past it, failing targets
    /// keep getting traffic (so an upstream with one target never loses it to ejection).
    pub max_ejection_percent: u32,
}

impl Default for OutlierDetection {
    fn default() -> Self {
        Self {
            enabled: true,
            consecutive_failures: 5,
            failure_statuses: vec![502, 503, 504],
            base_ejection_time: Duration::secs(30),
            max_ejection_time: Duration::secs(300),
            max_ejection_percent: 50,
        }
    }
}

/// Retries: a failed try is sent again, to another target when there is one.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Retries {
    /// Tries in all, the first included (1: no retries).
    pub attempts: u32,
    /// Answers that are tried again (idempotent methods only).
    pub on_status: Vec<u16>,
    /// The wait before the first retry; each further one doubles it, with random jitter.
    pub backoff: Duration,
    /// The longest wait between tries.
    pub max_backoff: Duration,
    /// Retry budget: retries are at most this share of requests (0.2: 20 %)...
    pub budget_ratio: f64,
    /// ...plus this many retries per second (so a quiet upstream can still retry).
    pub budget_min_per_second: u32,
}

impl Default for Retries {
    fn default() -> Self {
        Self {
            attempts: 2,
            on_status: vec![502, 503, 504],
            backoff: Duration::millis(25),
            max_backoff: Duration::millis(250),
            budget_ratio: 0.2,
            budget_min_per_second: 10,
        }
    }
}

/// The gateway-signed identity token for one upstream.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpstreamIdentityToken {
    /// The `aud` claim: the name the service checks the token was made for.
    pub audience: String,
    /// The `iss` claim; `identity.token.issuer` when absent.
    #[serde(default)]
    pub issuer: Option<String>,
    /// The `kid` of the key that signs; `identity.token.signing_key` when absent.
    #[serde(default)]
    pub key: Option<String>,
}

/// TLS towards `https://` targets. The server certificate is always verified.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTls {
    /// PEM file of the CA(s) to trust; the system's roots when absent.
    #[serde(default)]
    pub ca: Option<String>,
    /// PEM certificate chain presented to the upstream (mutual TLS).
    #[serde(default)]
    pub client_cert: Option<String>,
    /// PEM private key of `client_cert`.
    #[serde(default)]
    pub client_key: Option<String>,
    /// Name to verify the upstream's certificate against (and send as SNI); the target's host
    /// when absent.
    #[serde(default)]
    pub server_name: Option<String>,
}

/// One server of an upstream.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// Base URL: `http://host:port` (or `https://`).
    pub url: UpstreamUrl,
    /// Relative share of requests (weighted round robin).
    #[serde(default = "one")]
    pub weight: u32,
}

fn one() -> u32 {
    1
}

/// Protocol spoken to an upstream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum UpstreamProtocol {
    /// HTTP/1.1 with keep-alive.
    #[default]
    Http1,
    /// HTTP/2 (prior knowledge on `http://`, ALPN on `https://`); needed for gRPC.
    Http2,
}

/// Which Host header the upstream receives.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum HostHeader {
    /// The client's Host.
    #[default]
    Preserve,
    /// The target's `host:port`.
    Target,
}

/// Timeouts towards an upstream. There is no total deadline on a stream by default.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamTimeouts {
    /// Establishing a TCP (and TLS) connection; 502 beyond.
    pub connect: Duration,
    /// From sending the request to receiving the response head; 504 beyond.
    pub response_headers: Duration,
    /// No body bytes in either direction for this long ends the exchange (stream reset or
    /// connection closed).
    pub body_idle: Duration,
}

impl Default for UpstreamTimeouts {
    fn default() -> Self {
        Self {
            connect: Duration::secs(5),
            response_headers: Duration::secs(30),
            body_idle: Duration::secs(60),
        }
    }
}

/// The pooled keep-alive connections to one upstream.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Pool {
    /// Open connections per target at most (in use plus idle). Further requests wait.
    pub max_connections_per_target: u32,
    /// How long a request waits for a free connection before failing with 503.
    pub queue_timeout: Duration,
    /// An idle pooled connection is closed after this long. Keep it below the upstream's own
    /// keep-alive timeout.
    pub idle_timeout: Duration,
    /// HTTP/2 upstreams: requests in flight on one connection before another connection is
    /// opened (up to `max_connections_per_target`). Keep it at or below the upstream's
    /// `SETTINGS_MAX_CONCURRENT_STREAMS` (RFC 9113 recommends peers allow at least 100).
    pub max_streams_per_connection: u32,
}

impl Default for Pool {
    fn default() -> Self {
        Self {
            max_connections_per_target: 256,
            queue_timeout: Duration::secs(5),
            idle_timeout: Duration::secs(60),
            max_streams_per_connection: 100,
        }
    }
}
