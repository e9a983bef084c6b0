//! Connections to an upstream target: TCP with a connect timeout, then TLS for `https://`.

use rustls_pki_types::ServerName;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use torii_core::{ErrorKind, GatewayError};

/// Any byte stream an upstream connection can run on (`Any`: a plain TCP stream is told
/// apart by downcasting).
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin + std::any::Any {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

/// The stream type of upstream connections (plain TCP or TLS over TCP).
pub type Stream = Box<dyn Io>;

/// Connects to one target.
#[derive(Clone)]
pub struct Connector {
    host: String,
    port: u16,
    authority: String,
    timeout: Duration,
    tls: Option<(tokio_rustls::TlsConnector, ServerName<'static>)>,
}

impl Connector {
    /// A connector for `host:port`; with `tls`, TLS verified against `server_name`.
    pub fn new(
        host: &str,
        port: u16,
        timeout: Duration,
        tls: Option<(Arc<rustls::ClientConfig>, String)>,
    ) -> Result<Self, String> {
        let tls = match tls {
            Some((config, name)) => {
                let bare = name
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_string();
                let server_name = ServerName::try_from(bare)
                    .map_err(|e| format!("`{name}` is not a valid TLS server name: {e}"))?;
                Some((tokio_rustls::TlsConnector::from(config), server_name))
            }
            None => None,
        };
        Ok(Self {
            host: host.to_string(),
            port,
            authority: format!("{host}:{port}"),
            timeout,
            tls,
        })
    }

    /// `host:port`.
    pub fn authority(&self) -> &str {
        &self.authority
    }

    /// Opens a connection (TCP_NODELAY on; TLS handshake for https) within the connect timeout.
    pub async fn connect(&self) -> Result<Stream, GatewayError> {
        let host = self.host.trim_start_matches('[').trim_end_matches(']');
        let fut = async {
            let tcp = TcpStream::connect((host, self.port)).await.map_err(|e| {
                GatewayError::new(
                    ErrorKind::UpstreamConnect,
                    format!("connect to {}: {e}", self.authority),
                )
            })?;
            let _ = tcp.set_nodelay(true);
            match &self.tls {
                None => Ok(Box::new(tcp) as Stream),
                Some((connector, name)) => connector
                    .connect(name.clone(), tcp)
                    .await
                    .map(|s| Box::new(s) as Stream)
                    .map_err(|e| {
                        GatewayError::new(
                            ErrorKind::UpstreamConnect,
                            format!("TLS handshake with {}: {e}", self.authority),
                        )
                    }),
            }
        };
        match tokio::time::timeout(self.timeout, fut).await {
            Ok(r) => r,
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
