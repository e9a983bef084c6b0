//! Reading PEM files named in the config (certificates, keys, CAs), with messages that say
//! what is wrong with the file.

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Reads a certificate chain; at least one certificate.
pub fn certs(path: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let iter = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("cannot read certificate file `{path}`: {e}"))?;
    let certs: Vec<_> = iter
        .collect::<Result<_, _>>()
        .map_err(|e| format!("`{path}` is not a valid PEM certificate file: {e}"))?;
    if certs.is_empty() {
        return Err(format!(
            "`{path}` contains no certificate (expected `-----BEGIN CERTIFICATE-----`)"
        ));
    }
    Ok(certs)
}

/// Reads a private key.
pub fn key(path: &str) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_file(path)
        .map_err(|e| format!("cannot read a private key from `{path}`: {e}"))
}
