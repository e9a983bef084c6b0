//! What the request path knows about a client connection and its listener.

use crate::forwarding;
use std::net::SocketAddr;
use std::sync::Arc;
use torii_config::schema::ListenerLimits;

/// What a running listener reads for each new connection; swapped on reload.
pub struct ListenerSettings {
    /// The listener's name (a reload may rename a listener whose address did not change).
    pub name: Arc<str>,
    /// Its limits.
    pub limits: ListenerLimits,
}

/// Per-connection facts the pipeline needs.
pub struct ConnInfo {
    /// The listener's current name and limits (a reload may rename a listener that keeps its
    /// socket; requests on existing connections then use the new name).
    pub listener: Arc<arc_swap::ArcSwap<ListenerSettings>>,
    /// TCP peer.
    pub peer: SocketAddr,
    /// `http` or `https`.
    pub proto: &'static str,
    /// The peer's forwarding header values, rendered once.
    pub forwarding: forwarding::PeerForwarding,
    /// TLS facts, on a TLS listener.
    pub tls: Option<TlsConn>,
    /// The connection's slot (cap and count); a WebSocket tunnel keeps it.
    pub slot: Arc<crate::ConnSlot>,
    /// Bytes moved and requests in flight, for the connection's watchdog.
    pub(crate) activity: Arc<crate::io::Activity>,
}

/// What the pipeline needs to know about a TLS connection.
pub struct TlsConn {
    /// The SNI the client sent.
    pub sni: Option<String>,
    /// The listener's certificates at handshake time.
    pub store: Arc<crate::tls::CertStore>,
    /// The client's verified certificate (mutual TLS), read once per connection.
    pub client_cert: Option<Arc<torii_core::ClientCert>>,
}
