//! TCP connections to an upstream target, with a connect timeout.

use std::time::Duration;
use tokio::net::TcpStream;
use torii_core::{ErrorKind, GatewayError};

/// The stream type of upstream connections.
pub type Stream = TcpStream;

/// Connects to one target.
#[derive(Debug, Clone)]
pub struct Connector {
    host: String,
    port: u16,
    authority: String,
    timeout: Duration,
}

impl Connector {
    /// A connector for `host:port`.
    pub fn new(host: &str, port: u16, timeout: Duration) -> Self {
        Self {
            host: host.to_string(),
            port,
            authority: format!("{host}:{port}"),
            timeout,
        }
    }

    /// `host:port`.
    pub fn authority(&self) -> &str {
        &self.authority
    }

    /// Opens a TCP connection (TCP_NODELAY on) within the connect timeout.
    pub async fn connect(&self, _http2: bool) -> Result<Stream, GatewayError> {
        let host = self.host.trim_start_matches('[').trim_end_matches(']');
        match tokio::time::timeout(self.timeout, TcpStream::connect((host, self.port))).await {
            Ok(Ok(s)) => {
                let _ = s.set_nodelay(true);
                Ok(s)
            }
            Ok(Err(e)) => Err(GatewayError::new(
                ErrorKind::UpstreamConnect,
                format!("connect to {}: {e}", self.authority),
            )),
            Err(_) => Err(GatewayError::new(
                ErrorKind::UpstreamConnect,
                format!(
                    "connect to {} timed out after {:?}",
                    self.authority, self.timeout
                ),
            )),
        }
    }
}
