use crate::values::{Duration, UpstreamUrl};
use schemars::JsonSchema;
use serde::Deserialize;

/// A named upstream service: one shared client (pool, timeouts) used by every route naming it.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Upstream {
    /// Unique name, referenced by routes' `upstream`.
    pub name: String,
    /// The servers of this upstream. At least one.
    pub targets: Vec<Target>,
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
