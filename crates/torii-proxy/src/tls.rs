//! TLS with rustls and the aws-lc-rs provider: listener certificates chosen by SNI (exact and
//! wildcard names read from the certificates). Client configs for `https://` upstreams are
//! torii-upstream's.

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::collections::HashMap;
use std::sync::Arc;
use torii_config::schema::{Certificate, Config, ListenerTls, UnknownSni, pem};

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// The certificates of one listener, indexed by name.
#[derive(Debug)]
pub struct CertStore {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// Keyed by the part after `*.`.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    default: Option<Arc<CertifiedKey>>,
}

impl CertStore {
    /// Loads the certificates and keys, the listener's files first, then `extra` (top-level
    /// `certificates`: a name both have is the file's); names come from each leaf's subject
    /// alternative names (DNS), or its common name when it has none.
    pub fn load(cfg: &ListenerTls, extra: &[&Certificate]) -> Result<Self, String> {
        let mut store = CertStore {
            exact: HashMap::new(),
            wildcard: HashMap::new(),
            default: None,
        };
        for files in &cfg.certificates {
            let (ck, names) = certified(
                pem::certs(&files.cert)?,
                pem::key(&files.key)?,
                &format!("`{}`", files.cert),
                &format!("`{}`", files.key),
            )?;
            store.add(&ck, names);
            if store.default.is_none() && cfg.unknown_sni == UnknownSni::Default {
                store.default = Some(ck);
            }
        }
        for c in extra {
            let (ck, names) = certificate(c)?;
            store.add(&ck, names);
        }
        Ok(store)
    }

    fn add(&mut self, ck: &Arc<CertifiedKey>, names: Vec<String>) {
        for n in names {
            let n = n.to_ascii_lowercase();
            match n.strip_prefix("*.") {
                Some(suffix) => self
                    .wildcard
                    .entry(suffix.to_string())
                    .or_insert_with(|| ck.clone()),
                None => self.exact.entry(n).or_insert_with(|| ck.clone()),
            };
        }
    }

    /// The certificate for a server name: exact, then wildcard (one label), then the default.
    pub fn lookup(&self, name: Option<&str>) -> Option<&Arc<CertifiedKey>> {
        let by_name = name.and_then(|n| {
            let n = n.trim_end_matches('.').to_ascii_lowercase();
            self.exact.get(&n).or_else(|| {
                n.split_once('.')
                    .and_then(|(_, rest)| self.wildcard.get(rest))
            })
        });
        by_name.or(self.default.as_ref())
    }

    /// Whether `host` would be served by the same certificate as the connection's SNI (else 421).
    pub fn host_matches_sni(&self, host: &str, sni: &str) -> bool {
        match (self.lookup(Some(host)), self.lookup(Some(sni))) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

/// A chain and key as rustls serves them, checked to belong together, with the leaf's names.
fn certified(
    chain: Vec<rustls_pki_types::CertificateDer<'static>>,
    key: rustls_pki_types::PrivateKeyDer<'static>,
    cert_name: &str,
    key_name: &str,
) -> Result<(Arc<CertifiedKey>, Vec<String>), String> {
    let signing = provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| format!("{key_name}: unsupported private key: {e}"))?;
    let leaf = chain
        .first()
        .ok_or_else(|| format!("{cert_name}: no certificate"))?;
    let names = dns_names(leaf.as_ref()).map_err(|e| format!("{cert_name}: {e}"))?;
    let ck = Arc::new(CertifiedKey::new(chain, signing));
    ck.keys_match()
        .map_err(|e| format!("{key_name} does not belong to {cert_name}: {e}"))?;
    Ok((ck, names))
}

/// A top-level certificate (PEM text) as rustls serves it.
fn certificate(c: &Certificate) -> Result<(Arc<CertifiedKey>, Vec<String>), String> {
    let what = format!("certificate `{}`", c.name);
    certified(
        pem::certs_from_text(&c.cert_pem).map_err(|e| format!("{what}: {e}"))?,
        pem::key_from_text(&c.private_key_pem).map_err(|e| format!("{what}: {e}"))?,
        &format!("{what}'s `cert_pem`"),
        &format!("{what}'s `private_key_pem`"),
    )
}

/// Checks every top-level certificate of `config` as a listener loads it (the key belongs to
/// the certificate, the leaf parses): `(index, message)` for each that does not. Run before
/// an admin API change is stored, so a certificate that a listener could not serve is refused
/// instead of stored.
pub fn check_certificates(config: &Config) -> Vec<(usize, String)> {
    config
        .certificates
        .iter()
        .enumerate()
        .filter_map(|(i, c)| certificate(c).err().map(|e| (i, e)))
        .collect()
}

/// The top-level certificates a listener serves.
pub fn certificates_of<'a>(config: &'a Config, listener: &str) -> Vec<&'a Certificate> {
    config
        .certificates
        .iter()
        .filter(|c| c.listeners.is_empty() || c.listeners.iter().any(|l| l == listener))
        .collect()
}

fn dns_names(der: &[u8]) -> Result<Vec<String>, String> {
    use x509_parser::prelude::*;
    let (_, cert) =
        X509Certificate::from_der(der).map_err(|e| format!("cannot parse the certificate: {e}"))?;
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for gn in &san.value.general_names {
            if let GeneralName::DNSName(d) = gn {
                names.push((*d).to_string());
            }
        }
    }
    if names.is_empty() {
        for cn in cert.subject().iter_common_name() {
            if let Ok(s) = cn.as_str() {
                names.push(s.to_string());
            }
        }
    }
    Ok(names)
}

/// The facts of a verified client certificate (rustls already checked it chains to the
/// listener's client CA): common name, RFC 4514 subject, and subject alternative names.
pub fn client_cert(der: &[u8]) -> Option<torii_core::ClientCert> {
    use x509_parser::prelude::*;
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    let common_name = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_string);
    let mut sans = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for gn in &san.value.general_names {
            match gn {
                GeneralName::DNSName(d) | GeneralName::RFC822Name(d) | GeneralName::URI(d) => {
                    sans.push((*d).to_string())
                }
                GeneralName::IPAddress(b) => {
                    let ip = match b.len() {
                        4 => <[u8; 4]>::try_from(*b).ok().map(std::net::IpAddr::from),
                        16 => <[u8; 16]>::try_from(*b).ok().map(std::net::IpAddr::from),
                        _ => None,
                    };
                    if let Some(ip) = ip {
                        sans.push(ip.to_string());
                    }
                }
                _ => {}
            }
        }
    }
    Some(torii_core::ClientCert {
        common_name,
        subject: cert.subject().to_string(),
        sans,
    })
}

#[derive(Debug)]
struct Resolver(Arc<CertStore>);

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.lookup(hello.server_name()).cloned()
    }
}

/// A listener's TLS: the rustls config and the store it resolves from.
pub struct ListenerTlsRuntime {
    /// For the acceptor.
    pub config: Arc<rustls::ServerConfig>,
    /// For the 421 check.
    pub store: Arc<CertStore>,
}

/// Builds a listener's TLS config (ALPN h2 then http/1.1), with the top-level certificates
/// it serves (`extra`).
pub fn server_config(
    cfg: &ListenerTls,
    extra: &[&Certificate],
) -> Result<ListenerTlsRuntime, String> {
    let store = Arc::new(CertStore::load(cfg, extra)?);
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = match &cfg.client_auth {
        None => builder.with_no_client_auth(),
        Some(auth) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in pem::certs(&auth.ca)? {
                roots.add(c).map_err(|e| format!("`{}`: {e}", auth.ca))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider(),
            );
            let verifier = if auth.required {
                verifier
            } else {
                verifier.allow_unauthenticated()
            };
            builder.with_client_cert_verifier(
                verifier
                    .build()
                    .map_err(|e| format!("client CA `{}`: {e}", auth.ca))?,
            )
        }
    };
    let mut config = builder.with_cert_resolver(Arc::new(Resolver(store.clone())));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(ListenerTlsRuntime {
        config: Arc::new(config),
        store,
    })
}
