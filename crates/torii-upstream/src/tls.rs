//! rustls client configs for `https://` upstream targets (aws-lc-rs provider): the
//! upstream's CA or the system roots, an optional client certificate, ALPN by protocol.

use rustls::crypto::CryptoProvider;
use std::sync::Arc;
use torii_config::schema::{UpstreamTls, pem};

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Builds the client config for an upstream's `https://` targets.
pub fn client_config(cfg: &UpstreamTls, http2: bool) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    match &cfg.ca {
        Some(ca) => {
            for c in pem::certs(ca)? {
                roots.add(c).map_err(|e| format!("`{ca}`: {e}"))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for c in found.certs {
                let _ = roots.add(c);
            }
        }
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
    let mut config = match (&cfg.client_cert, &cfg.client_key) {
        (Some(c), Some(k)) => builder
            .with_client_auth_cert(pem::certs(c)?, pem::key(k)?)
            .map_err(|e| format!("client certificate: {e}"))?,
        _ => builder.with_no_client_auth(),
    };
    config.alpn_protocols = if http2 {
        vec![b"h2".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    Ok(Arc::new(config))
}
