//! The file schema: serde types that mirror the YAML shape. Unknown keys are rejected, every
//! timeout and limit has a finite default, and the JSON Schema is generated from these types.

mod compose;
mod consumer;
mod listener;
mod route;
mod upstream;

pub use compose::*;
pub use consumer::*;
pub use listener::*;
pub use route::*;
pub use upstream::*;

/// PEM checks shared by the validator: every certificate and key file is read and parsed at load.
pub mod pem;

use crate::values::{ByteSize, Duration, SocketAddr};
use schemars::JsonSchema;
use serde::Deserialize;

/// The root of a Torii config file.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where clients connect. At least one listener is required.
    pub listeners: Vec<Listener>,
    /// Named upstream services that routes send requests to.
    #[serde(default)]
    pub upstreams: Vec<Upstream>,
    /// The routing table.
    #[serde(default)]
    pub routes: Vec<Route>,
    /// Process-wide settings: shutdown, limits shared by all listeners.
    #[serde(default)]
    pub server: Server,
    /// The admin listener (metrics, health and readiness).
    #[serde(default)]
    pub admin: Admin,
    /// The JSON access log.
    #[serde(default)]
    pub access_log: AccessLog,
    /// Plugins for every route (a route's own settings for a plugin replace these).
    #[serde(default)]
    pub plugins: PluginMap,
    /// API consumers and their credentials.
    #[serde(default)]
    pub consumers: Vec<Consumer>,
    /// TLS certificates served by TLS listeners besides their own files, chosen by SNI
    /// (usually created through the admin API, `/config/certificates`).
    #[serde(default)]
    pub certificates: Vec<Certificate>,
    /// Plans: named sets of plugin settings (limits and quotas, typically) that consumers
    /// belong to with `plan`.
    #[serde(default)]
    pub plans: Vec<Plan>,
    /// The identity headers sent upstream after authentication.
    #[serde(default)]
    pub identity: Identity,
    /// The shared Redis of a gateway fleet (rate limits and quotas with `policy: redis`).
    /// Off when absent.
    #[serde(default)]
    pub redis: Option<RedisConfig>,
    /// The response cache's process-wide settings (the `cache` plugin turns caching on per
    /// route).
    #[serde(default)]
    pub cache: CacheStore,
    /// Where requests name the API version that `routes[].match.version` selects by. Off
    /// when absent.
    #[serde(default)]
    pub versioning: Option<Versioning>,
}

/// Where the API version of a request is read: exactly one of `header`, `query` and
/// `accept`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Versioning {
    /// A request header holding the version (`api-version: 2`).
    #[serde(default)]
    pub header: Option<crate::values::HeaderName>,
    /// A query parameter holding the version (`?version=2`).
    #[serde(default)]
    pub query: Option<String>,
    /// A media type in `Accept` with `{version}` where the version stands:
    /// `application/vnd.example.v{version}+json` reads `2` from
    /// `Accept: application/vnd.example.v2+json`.
    #[serde(default)]
    pub accept: Option<String>,
    /// The version of requests that name none. Without it, such a request that no
    /// unversioned route takes gets 400 `version_required`.
    #[serde(default)]
    pub default: Option<String>,
}

/// Where the `cache` plugin keeps responses.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct CacheStore {
    /// Bytes of responses held in this process's memory, for every route together (bodies,
    /// fields and a small overhead per entry). When full, the least useful entries go
    /// (S3-FIFO). Default 256MiB, at least 1MiB.
    pub memory: ByteSize,
    /// The largest body kept in the shared tier (the gateway's `redis`, for routes whose
    /// cache says `shared: true`); larger ones stay in memory only. Default 256KiB.
    pub shared_max_object_size: ByteSize,
    /// The longest a response is kept in the shared tier, and a purge remembered there.
    /// Default 1d.
    pub shared_max_ttl: Duration,
}

impl Default for CacheStore {
    fn default() -> Self {
        Self {
            memory: ByteSize(256 << 20),
            shared_max_object_size: ByteSize(256 << 10),
            shared_max_ttl: Duration::secs(86_400),
        }
    }
}

/// The gateway's one Redis client.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://[user:password@]host:port/db`, or `rediss://` for TLS.
    #[serde(default = "default_redis_url")]
    pub url: String,
    /// A Redis Cluster: its seed nodes (`redis://host:port` each) instead of `url`.
    #[serde(default)]
    pub cluster_nodes: Vec<String>,
    /// Every call waits at most this long; then the caller's failure policy applies.
    #[serde(default = "default_redis_timeout")]
    pub timeout: Duration,
    /// Opening a connection waits at most this long.
    #[serde(default = "default_redis_connect_timeout")]
    pub connect_timeout: Duration,
    /// After 3 failed calls in a row, calls fail at once for this long, then one tries again.
    #[serde(default = "default_redis_recheck")]
    pub recheck_interval: Duration,
    /// TLS files for `rediss://` URLs: the CA to trust (the system's roots when absent) and a
    /// client certificate for mutual TLS.
    #[serde(default)]
    pub tls: Option<RedisTls>,
}

/// TLS files of the Redis connection (PEM).
#[derive(Debug, Clone, Deserialize, JsonSchema, PartialEq, Eq, Hash)]
#[serde(deny_unknown_fields)]
pub struct RedisTls {
    /// PEM file of the CA(s) that signed the server's certificate.
    #[serde(default)]
    pub ca: Option<String>,
    /// PEM certificate chain presented to Redis (mutual TLS; with `client_key`).
    #[serde(default)]
    pub client_cert: Option<String>,
    /// PEM private key of `client_cert`.
    #[serde(default)]
    pub client_key: Option<String>,
}

fn default_redis_url() -> String {
    "redis://127.0.0.1:6379".into()
}
fn default_redis_timeout() -> Duration {
    Duration::millis(10)
}
fn default_redis_connect_timeout() -> Duration {
    Duration::secs(1)
}
fn default_redis_recheck() -> Duration {
    Duration::millis(500)
}

/// Process-wide settings.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Server {
    /// On SIGTERM/SIGINT: how long in-flight requests may take to finish before the process exits.
    pub shutdown_grace_period: Duration,
    /// Largest request body accepted on any route (413 beyond; sent before reading the body when
    /// Content-Length already exceeds it).
    pub max_request_body: ByteSize,
    /// A request body with a Content-Length up to this size is read whole before an upstream
    /// connection is taken, so a client that sends its body slowly never holds one (0: always
    /// stream). Bodies without a length (chunked, gRPC streams) are always streamed.
    pub request_body_buffer: ByteSize,
    /// Read-ahead of upstream response bodies, so a client that reads slowly does not hold an
    /// upstream connection.
    pub response_buffering: ResponseBuffering,
    /// Watch the config file's directory and reload on change.
    pub watch_config: bool,
}

impl Default for Server {
    fn default() -> Self {
        Self {
            shutdown_grace_period: Duration::secs(30),
            max_request_body: ByteSize::mib(10),
            request_body_buffer: ByteSize::kib(64),
            response_buffering: ResponseBuffering::default(),
            watch_config: true,
        }
    }
}

/// Read-ahead ("spooling") of upstream response bodies: the gateway reads a response from its
/// upstream as fast as the upstream sends it, into memory and then into a temporary file, and
/// gives it to the client at the client's pace, so the upstream connection is free as soon as
/// the upstream has sent everything. Responses whose length is at most `memory` are not
/// spooled (socket buffers take them), nor gRPC, `text/event-stream` and responses marked
/// `X-Accel-Buffering: no`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ResponseBuffering {
    /// Read ahead at all.
    pub enabled: bool,
    /// Bytes of one response held in memory before the rest goes to a temporary file.
    pub memory: ByteSize,
    /// Bytes of one response held on disk (0: memory only). Beyond it the gateway reads from
    /// the upstream only as fast as the client reads.
    pub max_temp_file: ByteSize,
    /// Bytes on disk for all responses together; beyond it responses are not spooled further.
    pub max_temp_total: ByteSize,
    /// Directory of the temporary files (unlinked at creation, so nothing is left behind);
    /// the system's temporary directory when unset.
    pub temp_dir: Option<String>,
}

impl Default for ResponseBuffering {
    fn default() -> Self {
        Self {
            enabled: true,
            memory: ByteSize::kib(128),
            max_temp_file: ByteSize::gib(1),
            max_temp_total: ByteSize::gib(4),
            temp_dir: None,
        }
    }
}

/// The admin listener: `/metrics` (Prometheus text), `/healthz`, `/readyz`, live state, and
/// the admin API (`/config/...`, `/openapi.json`; see docs/admin-api.md).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Admin {
    /// Serve the admin endpoints.
    pub enabled: bool,
    /// Address of the admin listener; loopback by default, keep it private. A non-loopback
    /// address needs `tokens`.
    pub bind: SocketAddr,
    /// Who may use the admin listener: with any token listed, every endpoint but `/healthz`
    /// and `/readyz` needs `Authorization: Bearer <token>`. Without tokens (loopback only)
    /// every local client may read and write.
    pub tokens: Vec<AdminToken>,
    /// Serve the admin listener over TLS (HTTP/1.1). With `client_auth.required`, only
    /// clients with a certificate from that CA get in (mutual TLS); without tokens they act
    /// as `cert:<common name>` with read and write. Read at startup only.
    pub tls: Option<ListenerTls>,
}

impl Default for Admin {
    fn default() -> Self {
        Self {
            enabled: true,
            bind: SocketAddr(std::net::SocketAddr::from(([127, 0, 0, 1], 9901))),
            tokens: Vec::new(),
            tls: None,
        }
    }
}

/// One admin API token, stored as a hash.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AdminToken {
    /// Who holds it: recorded as the author of every change made with it.
    pub name: String,
    /// `sha256:<64 hex digits>` of the token, as printed by `torii hash-key --generate`.
    pub token_hash: String,
    /// `read_write` (default) or `read_only` (GET and HEAD only).
    #[serde(default)]
    pub role: AdminRole,
}

/// What an admin token may do.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AdminRole {
    /// Read and change.
    #[default]
    ReadWrite,
    /// Read only.
    ReadOnly,
}

/// The JSON access log: one line per request, written when the response body has ended.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct AccessLog {
    /// Write access-log lines.
    pub enabled: bool,
    /// `stdout`, or a file path (appended to).
    pub path: String,
    /// Lines that may wait for the writer; when full, lines are dropped (and counted) rather
    /// than slowing requests down.
    pub buffer_lines: u32,
    /// Query parameters whose values are replaced by `REDACTED` in the logged path.
    pub redact_query_params: Vec<String>,
}

impl Default for AccessLog {
    fn default() -> Self {
        Self {
            enabled: true,
            path: "stdout".to_string(),
            buffer_lines: 16384,
            redact_query_params: [
                "api_key",
                "apikey",
                "key",
                "token",
                "access_token",
                "password",
                "secret",
                "signature",
            ]
            .into_iter()
            .map(String::from)
            .collect(),
        }
    }
}
