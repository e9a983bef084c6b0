//! One target set of an upstream (its targets, balancer and health), and how targets are
//! built. An upstream holds its current set behind an `ArcSwap`; discovery replaces it whole.

use crate::balance::Balancer;
use crate::connect::Connector;
use crate::health::Health;
use crate::pool::{PoolSettings, TargetPool};
use crate::target::Target;
use std::sync::Arc;
use std::time::Duration;
use torii_config::schema::LoadBalancing;

/// One target set of an upstream: its targets, how they are chosen, and their live state.
pub(crate) struct Members {
    pub(crate) targets: Box<[Target]>,
    pub(crate) balancer: Balancer,
    pub(crate) health: Health,
}

impl Members {
    pub(crate) fn new(
        targets: Vec<Target>,
        weights: &[u32],
        lb: &LoadBalancing,
        health: Health,
    ) -> Self {
        let names: Vec<&str> = targets.iter().map(|t| &*t.name).collect();
        Self {
            balancer: Balancer::new(lb, &names, weights),
            targets: targets.into(),
            health,
        }
    }
}

/// What every target of an upstream is built with.
pub(crate) struct TargetMaker {
    pub(crate) client_tls: Option<Arc<rustls::ClientConfig>>,
    /// `tls.server_name`: instead of the target's own name.
    pub(crate) server_name: Option<String>,
    pub(crate) connect_timeout: Duration,
    pub(crate) settings: PoolSettings,
    /// Discovered targets speak TLS.
    pub(crate) discovered_tls: bool,
}

impl TargetMaker {
    /// The target `name` (`host:port`), connected to at `host:port` (an address or a name)
    /// and known as `known_as` (its TLS server name and, with its port, its Host); with its
    /// pool, or a new one.
    pub(crate) fn make(
        &self,
        name: &str,
        (host, port): (&str, u16),
        tls: bool,
        known_as: &str,
        pool: Option<Arc<TargetPool>>,
    ) -> Result<Target, String> {
        let pool = match pool {
            Some(p) => p,
            None => {
                let tls = match (&self.client_tls, tls) {
                    (Some(c), true) => Some((
                        c.clone(),
                        self.server_name
                            .clone()
                            .unwrap_or_else(|| known_as.to_string()),
                    )),
                    _ => None,
                };
                let connector = Connector::new(host, port, self.connect_timeout, tls)?;
                TargetPool::new(connector, self.settings.clone())
            }
        };
        // Host (and `:authority`) leave out the scheme's default port, as clients do
        // (RFC 9110 4.2.3): some services compare Host with their bare name.
        let default_port = port == if tls { 443 } else { 80 };
        let host = if default_port {
            known_as.to_string()
        } else {
            format!("{known_as}:{port}")
        };
        Ok(Target {
            tls,
            authority: http::HeaderValue::from_str(&host)
                .unwrap_or(http::HeaderValue::from_static("invalid")),
            name: name.into(),
            pool,
        })
    }
}
