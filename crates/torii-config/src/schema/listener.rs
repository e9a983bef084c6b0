use crate::values::{ByteSize, Cidr, Duration, SocketAddr};
use schemars::JsonSchema;
use serde::Deserialize;

/// A socket clients connect to.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Listener {
    /// Unique name, used by routes' `listeners` and in logs and metrics.
    pub name: String,
    /// Address and port to bind, e.g. `0.0.0.0:8080`.
    pub bind: SocketAddr,
    /// Peers whose X-Forwarded-For / Forwarded headers are believed. The client address is the
    /// right-most address not in this list.
    #[serde(default)]
    pub trusted_proxies: Vec<Cidr>,
    /// Connection and request limits.
    #[serde(default)]
    pub limits: ListenerLimits,
    /// TLS termination; plain HTTP when absent.
    #[serde(default)]
    pub tls: Option<ListenerTls>,
}

/// TLS termination on a listener (rustls, TLS 1.2 and 1.3, ALPN `h2` and `http/1.1`).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListenerTls {
    /// Certificates. The one whose names (subject alternative names, exact or `*.` wildcard)
    /// match the client's SNI is used; the first one is the default. Files are watched and
    /// reloaded on change.
    pub certificates: Vec<CertificateFiles>,
    /// What a client whose SNI matches no certificate (or that sends no SNI) gets.
    #[serde(default)]
    pub unknown_sni: UnknownSni,
    /// Ask clients for certificates (mutual TLS); `mtls_auth` maps them to consumers.
    #[serde(default)]
    pub client_auth: Option<ClientAuth>,
}

/// Client certificates on a TLS listener.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClientAuth {
    /// PEM file with the CA certificates client certificates must chain to.
    pub ca: String,
    /// Refuse the handshake without a valid client certificate. When false, a client may
    /// connect without one (routes with `mtls_auth` then answer 401); a certificate that is
    /// presented must still be valid.
    #[serde(default)]
    pub required: bool,
}

/// A TLS certificate given as PEM text (what the admin API stores): served by TLS listeners
/// next to their own certificate files, for the names in the certificate (subject alternative
/// names, exact or `*.` wildcard; the common name when it has none). A listener's own files
/// win for a name both have, and its first file stays the default.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Certificate {
    /// Unique name.
    pub name: String,
    /// The certificate chain as PEM text, leaf first.
    pub cert_pem: String,
    /// The private key as PEM text (PKCS#8, PKCS#1 or SEC1). Reads through the admin API show
    /// `<redacted>` instead.
    pub private_key_pem: String,
    /// The TLS listeners that serve it, by name; every TLS listener when empty.
    #[serde(default)]
    pub listeners: Vec<String>,
}

/// A certificate chain and its private key, as PEM files.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CertificateFiles {
    /// PEM file with the certificate chain, leaf first.
    pub cert: String,
    /// PEM file with the private key (PKCS#8, PKCS#1 or SEC1).
    pub key: String,
}

/// Answer to an SNI that matches no certificate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum UnknownSni {
    /// Use the first (default) certificate.
    #[default]
    Default,
    /// Refuse the handshake.
    Reject,
}

/// Limits of one listener. Every one is finite.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ListenerLimits {
    /// Open client connections at most; further connections wait in the kernel backlog.
    pub max_connections: u32,
    /// Time for a client to send the complete request head (also covers a connection that never
    /// sends a byte, the TLS handshake and HTTP/1-versus-HTTP/2 detection). The connection is
    /// closed beyond. On HTTP/1.1 it also bounds the wait for the next request on a keep-alive
    /// connection.
    pub header_read_timeout: Duration,
    /// A connection that moved no byte in either direction for this long is closed gracefully
    /// (in-flight exchanges finish; HTTP/2 gets GOAWAY).
    pub idle_timeout: Duration,
    /// Largest request head (request line plus headers); 431 beyond.
    pub max_header_bytes: ByteSize,
    /// Most headers in one request; 431 beyond.
    pub max_headers: u32,
    /// HTTP/2: concurrent streams per connection.
    pub h2_max_concurrent_streams: u32,
    /// HTTP/2: largest header list (decoded); the stream is refused beyond.
    pub h2_max_header_list_size: ByteSize,
    /// HTTP/2: streams a client may reset before the connection is closed (rapid-reset defence).
    pub h2_max_pending_reset_streams: u32,
    /// Slowest transfer accepted while the gateway waits on the client (reading its request
    /// body, or writing a response it does not read fast enough): fewer bytes than this per
    /// second, over `transfer_rate_window`, and the connection is closed. `0B` turns it off.
    pub min_transfer_rate: ByteSize,
    /// The window over which `min_transfer_rate` is measured.
    pub transfer_rate_window: Duration,
}

impl Default for ListenerLimits {
    fn default() -> Self {
        Self {
            max_connections: 10_000,
            header_read_timeout: Duration::secs(10),
            idle_timeout: Duration::secs(60),
            max_header_bytes: ByteSize::kib(64),
            max_headers: 100,
            h2_max_concurrent_streams: 200,
            h2_max_header_list_size: ByteSize::kib(64),
            h2_max_pending_reset_streams: 50,
            min_transfer_rate: ByteSize::kib(1),
            transfer_rate_window: Duration::secs(10),
        }
    }
}
