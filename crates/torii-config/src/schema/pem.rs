//! Reading PEM files named in the config (certificates, keys, CAs), with messages that say
//! what is wrong with the file. Files are read with a size limit (a path such as `/dev/zero`
//! must not exhaust memory).

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::io::Read;

/// Largest PEM file accepted.
pub const MAX_PEM_BYTES: u64 = 1024 * 1024;

/// Reads a whole PEM file, refusing anything larger than [`MAX_PEM_BYTES`].
pub fn read(path: &str) -> Result<Vec<u8>, String> {
    // Only regular files: a device or FIFO (`/dev/stdin`, `/dev/zero`) could block or never end.
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot read `{path}`: {e}"))?;
    if !meta.is_file() {
        return Err(format!("`{path}` is not a regular file"));
    }
    let file = std::fs::File::open(path).map_err(|e| format!("cannot read `{path}`: {e}"))?;
    let mut bytes = Vec::new();
    file.take(MAX_PEM_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read `{path}`: {e}"))?;
    if bytes.len() as u64 > MAX_PEM_BYTES {
        return Err(format!(
            "`{path}` is larger than {MAX_PEM_BYTES} bytes; is it really a PEM file?"
        ));
    }
    Ok(bytes)
}

/// Reads a certificate chain; at least one certificate.
pub fn certs(path: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let bytes = read(path)?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("`{path}` is not a valid PEM certificate file: {e}"))?;
    if certs.is_empty() {
        return Err(format!(
            "`{path}` contains no certificate (expected `-----BEGIN CERTIFICATE-----`)"
        ));
    }
    Ok(certs)
}

/// Largest PEM text accepted inline (`certificates[].cert_pem`, `private_key_pem`).
pub const MAX_PEM_TEXT: usize = 64 * 1024;

/// A certificate chain from PEM text; at least one certificate.
pub fn certs_from_text(text: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    if text.len() > MAX_PEM_TEXT {
        return Err(format!(
            "longer than {MAX_PEM_TEXT} bytes; is it really a PEM certificate chain?"
        ));
    }
    // The parser skips sections that are not certificates: a key pasted here would be kept
    // (and shown) as if it were public.
    if text.contains("PRIVATE KEY-----") {
        return Err("contains a private key; the key belongs in `private_key_pem`".into());
    }
    let certs: Vec<_> = CertificateDer::pem_slice_iter(text.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("not a valid PEM certificate chain: {e}"))?;
    if certs.is_empty() {
        return Err("no certificate (expected `-----BEGIN CERTIFICATE-----`)".into());
    }
    Ok(certs)
}

/// A private key from PEM text. The message never quotes the text.
pub fn key_from_text(text: &str) -> Result<PrivateKeyDer<'static>, String> {
    if text.len() > MAX_PEM_TEXT {
        return Err(format!(
            "longer than {MAX_PEM_TEXT} bytes; is it really a PEM private key?"
        ));
    }
    PrivateKeyDer::from_pem_slice(text.as_bytes())
        .map_err(|_| "not a PEM private key (PKCS#8, PKCS#1 or SEC1)".to_string())
}

/// Reads a private key.
pub fn key(path: &str) -> Result<PrivateKeyDer<'static>, String> {
    let bytes = read(path)?;
    PrivateKeyDer::from_pem_slice(&bytes)
        .map_err(|e| format!("cannot read a private key from `{path}`: {e}"))
}

/// A digest of the contents of the given files (missing files count as empty), so a reload
/// notices a changed certificate even when its path did not change.
pub fn fingerprint<'a>(paths: impl IntoIterator<Item = &'a str>) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for p in paths {
        p.hash(&mut h);
        read(p).unwrap_or_default().hash(&mut h);
    }
    h.finish()
}
