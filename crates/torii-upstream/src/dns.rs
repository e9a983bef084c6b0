//! DNS as a discovery source (hickory-resolver): the A and AAAA records of a name, each
//! address a target on the configured port; or the SRV records of a service, each giving a
//! host (whose addresses are the targets), a port and a weight. Only the SRV records of the
//! best (lowest) priority are used, as RFC 2782 asks; the others are fallbacks a client
//! contacts only when those are unreachable, which outlier detection and health checks cover.
//! The answer holds for its smallest TTL.

use crate::discovery::{Discover, Endpoint, Finding, Found};
use hickory_resolver::TokioResolver;
use hickory_resolver::config::{
    LookupIpStrategy, NameServerConfig, NameServerConfigGroup, ResolverConfig, ResolverOpts,
};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::xfer::Protocol;
use std::net::IpAddr;
use std::time::{Duration, Instant};
use torii_config::schema::{DiscoveryScheme, DnsDiscovery, DnsRecord};

/// Looks up one name.
pub(crate) struct DnsSource {
    resolver: TokioResolver,
    /// The name as written (without a final dot): the targets' server name for `a`.
    name: String,
    /// The name with a final dot, so no search domain is tried.
    fqdn: String,
    record: DnsRecord,
    port: u16,
}

impl DnsSource {
    /// The source of `cfg`: its name servers, or those of `/etc/resolv.conf`.
    pub(crate) fn new(cfg: &DnsDiscovery) -> Result<Self, String> {
        let (config, mut opts) = if cfg.nameservers.is_empty() {
            hickory_resolver::system_conf::read_system_conf()
                .map_err(|e| format!("reading the system's DNS settings: {e}"))?
        } else {
            let servers: Vec<NameServerConfig> = cfg
                .nameservers
                .iter()
                .flat_map(|addr| {
                    [Protocol::Udp, Protocol::Tcp].map(|protocol| NameServerConfig {
                        socket_addr: *addr,
                        protocol,
                        tls_dns_name: None,
                        http_endpoint: None,
                        trust_negative_responses: true,
                        bind_addr: None,
                    })
                })
                .collect();
            (
                ResolverConfig::from_parts(None, vec![], NameServerConfigGroup::from(servers)),
                ResolverOpts::default(),
            )
        };
        // Every lookup goes to the servers: the task keeps the answer for its TTL itself.
        opts.cache_size = 0;
        opts.timeout = cfg.timeout.0;
        opts.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
        let mut builder =
            TokioResolver::builder_with_config(config, TokioConnectionProvider::default());
        *builder.options_mut() = opts;
        let name = cfg.name.trim_end_matches('.').to_string();
        Ok(Self {
            resolver: builder.build(),
            fqdn: format!("{name}."),
            name,
            record: cfg.record,
            port: cfg.port.unwrap_or(match cfg.scheme {
                DiscoveryScheme::Http => 80,
                DiscoveryScheme::Https => 443,
            }),
        })
    }

    async fn addresses(&self, name: &str) -> Result<(Vec<IpAddr>, Instant), String> {
        match self.resolver.lookup_ip(name).await {
            Ok(l) => Ok((l.iter().collect(), l.valid_until())),
            Err(e) if is_no_records(&e) => Ok((vec![], Instant::now())),
            Err(e) => Err(format!("{name}: {e}")),
        }
    }

    async fn lookup(&self) -> Result<Found, String> {
        let now = Instant::now();
        let mut until = now + Duration::from_secs(3600);
        let mut endpoints = Vec::new();
        match self.record {
            DnsRecord::A => {
                let (ips, valid) = self.addresses(&self.fqdn).await?;
                until = until.min(valid);
                endpoints.extend(
                    ips.into_iter()
                        .map(|ip| endpoint(ip, self.port, 1, &self.name)),
                );
            }
            DnsRecord::Srv => {
                let srv = self
                    .resolver
                    .srv_lookup(self.fqdn.as_str())
                    .await
                    .map_err(|e| format!("{}: {e}", self.name))?;
                until = until.min(srv.as_lookup().valid_until());
                let best = srv.iter().map(|r| r.priority()).min();
                for r in srv.iter().filter(|r| Some(r.priority()) == best) {
                    let host = r.target().to_utf8();
                    let host = host.trim_end_matches('.');
                    // "." means the service is decidedly not available here (RFC 2782).
                    if host.is_empty() {
                        continue;
                    }
                    // A host that cannot be looked up leaves out its own targets, not the
                    // others (an answer with none at all keeps the last known targets).
                    let (ips, valid) = match self.addresses(&format!("{host}.")).await {
                        Ok(found) => found,
                        Err(e) => {
                            tracing::warn!(name = %self.name, %host, error = %e, "SRV target host not resolved; left out");
                            continue;
                        }
                    };
                    until = until.min(valid);
                    // Weight 0 is "rarely chosen" in RFC 2782: the smallest share here.
                    let weight = u32::from(r.weight()).max(1);
                    // The targets are known by the service's own domain, not the host names the
                    // (unauthenticated) SRV answer gave: TLS verifies against it (RFC 6125,
                    // RFC 7673 without DNSSEC), and Host carries it.
                    let domain = service_domain(&self.name);
                    endpoints.extend(
                        ips.into_iter()
                            .map(|ip| endpoint(ip, r.port(), weight, domain)),
                    );
                }
            }
        }
        Ok(Found {
            endpoints,
            valid_for: until.saturating_duration_since(now),
        })
    }
}

impl Discover for DnsSource {
    fn describe(&self) -> String {
        match self.record {
            DnsRecord::A => format!("dns a {}:{}", self.name, self.port),
            DnsRecord::Srv => format!("dns srv {}", self.name),
        }
    }

    fn find(&self) -> Finding<'_> {
        Box::pin(self.lookup())
    }
}

/// `billing.internal` for `_http._tcp.billing.internal`: the name without its leading
/// underscore labels.
fn service_domain(name: &str) -> &str {
    let mut rest = name;
    while let Some(label) = rest.strip_prefix('_') {
        match label.split_once('.') {
            Some((_, after)) => rest = after,
            None => break,
        }
    }
    rest
}

fn endpoint(ip: IpAddr, port: u16, weight: u32, server_name: &str) -> Endpoint {
    Endpoint {
        host: match ip {
            IpAddr::V4(v4) => v4.to_string(),
            IpAddr::V6(v6) => format!("[{v6}]"),
        },
        port,
        weight,
        server_name: server_name.to_string(),
    }
}

/// The name exists without such records, or does not exist: an empty answer.
fn is_no_records(e: &hickory_resolver::ResolveError) -> bool {
    e.is_no_records_found() || e.is_nx_domain()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_service_domain_drops_the_underscore_labels() {
        assert_eq!(
            super::service_domain("_http._tcp.billing.internal"),
            "billing.internal"
        );
        assert_eq!(
            super::service_domain("billing.internal"),
            "billing.internal"
        );
        assert_eq!(super::service_domain("_x"), "_x");
    }
}
