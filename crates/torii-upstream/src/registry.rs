//! Upstreams kept across reloads: a config load asks the registry for its upstreams, and gets
//! the same `Arc<Upstream>` (the same pools and pooled connections) for every upstream whose
//! settings did not change and that a running config or plugin still holds.

use crate::pool::TargetPool;
use crate::upstream::{Upstream, tls_files_fingerprint};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use torii_config::schema::{
    HostHeader, Pool, Target, Upstream as UpstreamConfig, UpstreamProtocol, UpstreamTimeouts,
    UpstreamTls,
};
use torii_config::values::UpstreamUrl;

/// Upstreams by name, as one config load sees them.
pub type Upstreams = HashMap<String, Arc<Upstream>>;

/// Built upstreams and pools, held weakly: whatever a running config (or a plugin of it)
/// still uses is reused by the next load, the rest goes away with its last user. A load that
/// fails therefore changes nothing that is running.
#[derive(Default)]
pub struct Registry {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// By fingerprint: the settings and the contents of the TLS files they name.
    upstreams: HashMap<String, Weak<Upstream>>,
    /// By everything that shapes a connection (see `Upstream::build`).
    pools: HashMap<String, Weak<TargetPool>>,
}

impl Registry {
    /// The upstreams of a config: unchanged ones that are still in use are reused (same
    /// pools), the others are built. An error (an unreadable CA file, a bad client key) names
    /// the upstream.
    pub fn build(&self, configs: &[UpstreamConfig]) -> Result<Upstreams, String> {
        let mut inner = self
            .inner
            .lock()
            .map_err(|_| "upstream registry poisoned".to_string())?;
        let mut out = HashMap::with_capacity(configs.len());
        for cfg in configs {
            out.insert(cfg.name.clone(), inner.get_or_build(cfg)?);
        }
        inner.forget_dropped();
        Ok(out)
    }

    /// The upstream behind a plugin's `url:` (an auth service, a JWKS endpoint): the URL's
    /// one target, `host_header: target`, the system's TLS roots and the default timeouts and
    /// pool. Plugins naming the same scheme and authority share it, across reloads too.
    pub fn for_url(&self, url: &http::Uri) -> Result<Arc<Upstream>, String> {
        let scheme = url.scheme_str().unwrap_or("http");
        let authority = url
            .authority()
            .ok_or_else(|| format!("`{url}` has no host"))?;
        let target = UpstreamUrl::parse(&format!("{scheme}://{authority}"))?;
        let cfg = UpstreamConfig {
            name: format!("{scheme}://{authority}"),
            targets: vec![Target {
                url: target,
                weight: 1,
            }],
            protocol: UpstreamProtocol::Http1,
            host_header: HostHeader::Target,
            timeouts: UpstreamTimeouts::default(),
            pool: Pool::default(),
            tls: UpstreamTls::default(),
            identity_token: None,
            load_balancing: Default::default(),
            outlier_detection: Default::default(),
            retries: Default::default(),
            health_check: None,
            circuit_breaker: None,
            concurrency: None,
            discovery: None,
            hedging: None,
        };
        let mut inner = self
            .inner
            .lock()
            .map_err(|_| "upstream registry poisoned".to_string())?;
        inner.get_or_build(&cfg)
    }
}

impl Inner {
    fn get_or_build(&mut self, cfg: &UpstreamConfig) -> Result<Arc<Upstream>, String> {
        // The contents of CA and client-certificate files count too: a rotated file with the
        // same path must rebuild the client.
        let fingerprint = format!("{cfg:?}|{}", tls_files_fingerprint(cfg));
        if let Some(up) = self.upstreams.get(&fingerprint).and_then(Weak::upgrade) {
            return Ok(up);
        }
        let up = Arc::new(Upstream::build(cfg, &mut self.pools)?);
        crate::probe::start(&up, cfg.health_check.as_ref());
        if let Some(d) = &cfg.discovery {
            let source = crate::dns::DnsSource::new(&d.dns)
                .map_err(|e| format!("upstream {}: discovery: {e}", cfg.name))?;
            let schedule = crate::discovery::Schedule {
                min_ttl: d.dns.min_ttl.0,
                max_ttl: d.dns.max_ttl.0,
                timeout: d.dns.timeout.0,
                retry_interval: d.dns.retry_interval.0,
            };
            crate::discovery::start(&up, Box::new(source), schedule);
        }
        self.upstreams.insert(fingerprint, Arc::downgrade(&up));
        Ok(up)
    }

    fn forget_dropped(&mut self) {
        self.upstreams.retain(|_, u| u.strong_count() > 0);
        self.pools.retain(|_, p| p.strong_count() > 0);
    }
}
