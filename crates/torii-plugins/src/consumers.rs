//! The consumer directory: every consumer of a config and the indexes credentials are looked
//! up in, built once per load. Lookups are hash-map reads, never scans over consumers.

use argon2::PasswordHash;
use http::HeaderValue;
use std::collections::HashMap;
use std::sync::Arc;
use subtle::ConstantTimeEq;
use torii_config::schema::Consumer as ConsumerConfig;
use torii_config::{PluginError, Seg};
use torii_core::{Consumer, ConsumerHeaders};

/// Length of an API-key digest (SHA-256).
pub const KEY_DIGEST_LEN: usize = 32;

/// SHA-256 of an API key: keys are high-entropy secrets, so a fast digest is enough (a slow
/// password hash would only burn CPU per request); only digests are stored.
pub fn key_digest(key: &[u8]) -> [u8; KEY_DIGEST_LEN] {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, key);
    let mut out = [0u8; KEY_DIGEST_LEN];
    out.copy_from_slice(d.as_ref());
    out
}

/// Longest key accepted; longer values are refused without hashing.
pub const MAX_KEY_LEN: usize = 1024;

/// The digest of a presented key, or `None` when it is empty or longer than
/// [`MAX_KEY_LEN`] (refused without hashing).
pub fn key_digest_checked(key: &[u8]) -> Option<[u8; KEY_DIGEST_LEN]> {
    (!key.is_empty() && key.len() <= MAX_KEY_LEN).then(|| key_digest(key))
}

/// The stored form of a key: `sha256:<64 lowercase hex digits>` (what `torii hash-key` prints).
pub fn format_key_hash(key: &[u8]) -> String {
    let mut s = String::from("sha256:");
    for b in key_digest(key) {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// A new random API key: 256 bits from the system's CSPRNG, base64url without padding.
pub fn generate_key() -> Result<String, String> {
    use base64::Engine as _;
    let mut bytes = [0u8; 32];
    aws_lc_rs::rand::fill(&mut bytes)
        .map_err(|_| "the system random generator failed".to_string())?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// Parses `sha256:<hex>`.
pub fn parse_key_hash(s: &str) -> Result<[u8; KEY_DIGEST_LEN], String> {
    let hex = s.strip_prefix("sha256:").ok_or_else(|| {
        "not a key hash (`sha256:` and 64 hex digits); it may be a raw key".to_string()
    })?;
    if hex.len() != KEY_DIGEST_LEN * 2 {
        return Err(format!(
            "a key hash has {} hex digits after `sha256:`, this one has {}",
            KEY_DIGEST_LEN * 2,
            hex.len()
        ));
    }
    let mut out = [0u8; KEY_DIGEST_LEN];
    for (i, chunk) in hex.as_bytes().chunks(2).enumerate() {
        let pair = std::str::from_utf8(chunk).map_err(|_| "not hex".to_string())?;
        out[i] = u8::from_str_radix(pair, 16)
            .map_err(|_| "the key hash has characters that are not hex digits".to_string())?;
    }
    Ok(out)
}

/// Every consumer, with credential indexes.
#[derive(Default)]
pub struct Directory {
    consumers: Vec<Arc<Consumer>>,
    by_name: HashMap<String, usize>,
    by_id: HashMap<Arc<str>, usize>,
    /// By SHA-256 digest. foldhash rather than SipHash: the keys are digests of configured
    /// secrets (uniform, and no client can add one), so a fast hash cannot be steered into
    /// long probes, and this lookup runs on every key_auth request.
    by_key: HashMap<[u8; KEY_DIGEST_LEN], usize, foldhash::fast::RandomState>,
    by_username: HashMap<String, (usize, Arc<str>)>,
    by_cert_name: HashMap<String, usize>,
}

impl std::fmt::Debug for Directory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Directory")
            .field("consumers", &self.consumers.len())
            .finish()
    }
}

fn seg(k: &str) -> Seg {
    Seg::Key(k.to_string())
}

/// Builds the header values of a consumer's identity.
pub fn consumer_headers(name: &str, id: &str, groups: &[Arc<str>]) -> Option<ConsumerHeaders> {
    let joined = groups.iter().map(|g| &**g).collect::<Vec<_>>().join(",");
    Some(ConsumerHeaders {
        id: HeaderValue::from_str(id).ok()?,
        name: HeaderValue::from_str(name).ok()?,
        groups: if groups.is_empty() {
            None
        } else {
            Some(HeaderValue::from_str(&joined).ok()?)
        },
    })
}

impl Directory {
    /// Builds the directory, reporting duplicate names, ids, keys, usernames and certificate
    /// names, and malformed hashes, at their key paths.
    pub fn build(list: &[ConsumerConfig]) -> Result<Self, Vec<PluginError>> {
        let mut d = Directory::default();
        let mut errors = Vec::new();
        for (i, c) in list.iter().enumerate() {
            let base = vec![seg("consumers"), Seg::Index(i)];
            let at = |keys: &[Seg]| {
                let mut p = base.clone();
                p.extend_from_slice(keys);
                p
            };
            let id: Arc<str> = c.id.as_deref().unwrap_or(&c.name).into();
            let groups: Vec<Arc<str>> = c.groups.iter().map(|g| Arc::from(g.as_str())).collect();
            let Some(headers) = consumer_headers(&c.name, &id, &groups) else {
                errors.push(PluginError::new(
                    at(&[seg("name")]),
                    "the consumer's name, id or groups contain characters not allowed in a header value",
                    "use printable ASCII",
                ));
                continue;
            };
            if c.name.is_empty() || groups.iter().any(|g| g.is_empty() || g.contains(',')) {
                errors.push(PluginError::new(
                    at(&[seg("name")]),
                    "consumer names and groups must be non-empty, and groups cannot contain `,`",
                    "rename it",
                ));
            }
            let name_taken = d.by_name.insert(c.name.clone(), i).is_some();
            if name_taken {
                errors.push(PluginError::new(
                    at(&[seg("name")]),
                    format!("consumer `{}` is declared twice", c.name),
                    "consumer names must be unique",
                ));
            }
            if d.by_id.insert(id.clone(), i).is_some() && !name_taken {
                errors.push(PluginError::new(
                    at(&[seg("id")]),
                    format!("consumer id `{id}` is used twice"),
                    "ids must be unique (the id defaults to the name)",
                ));
            }
            for (k, hash) in c.keys.iter().enumerate() {
                match parse_key_hash(hash) {
                    Ok(digest) => {
                        if d.by_key.insert(digest, i).is_some() {
                            errors.push(PluginError::new(
                                at(&[seg("keys"), Seg::Index(k)]),
                                "this key hash is used twice",
                                "every API key must belong to one consumer",
                            ));
                        }
                    }
                    Err(e) => errors.push(PluginError::new(
                        at(&[seg("keys"), Seg::Index(k)]),
                        e,
                        "store keys as hashes: run `torii hash-key` and paste its output",
                    )),
                }
            }
            for (k, cred) in c.basic_auth.iter().enumerate() {
                let hash: Arc<str> = match PasswordHash::new(&cred.password_hash) {
                    Ok(h) if h.algorithm.as_str().starts_with("argon2") => {
                        cred.password_hash.as_str().into()
                    }
                    _ => {
                        errors.push(PluginError::new(
                            at(&[seg("basic_auth"), Seg::Index(k), seg("password_hash")]),
                            "not an argon2 password hash",
                            "run `torii hash-password` and paste its output (`$argon2id$v=19$...`)",
                        ));
                        continue;
                    }
                };
                if d.by_username
                    .insert(cred.username.clone(), (i, hash))
                    .is_some()
                {
                    errors.push(PluginError::new(
                        at(&[seg("basic_auth"), Seg::Index(k), seg("username")]),
                        format!("username `{}` is used twice", cred.username),
                        "usernames must be unique across consumers",
                    ));
                }
            }
            for (k, name) in c.certificate_names.iter().enumerate() {
                if d.by_cert_name.insert(name.clone(), i).is_some() {
                    errors.push(PluginError::new(
                        at(&[seg("certificate_names"), Seg::Index(k)]),
                        format!("certificate name `{name}` is used twice"),
                        "each certificate name must identify one consumer",
                    ));
                }
            }
            d.consumers.push(Arc::new(Consumer {
                index: i,
                name: c.name.as_str().into(),
                id,
                groups,
                headers,
                anonymous: false,
            }));
        }
        if errors.is_empty() {
            Ok(d)
        } else {
            Err(errors)
        }
    }

    /// All consumers, by index.
    pub fn all(&self) -> &[Arc<Consumer>] {
        &self.consumers
    }

    /// The consumer owning an API key, given the key's digest. The map finds the candidate by
    /// digest; the digests are then compared in constant time.
    pub fn by_key_digest(&self, digest: &[u8; KEY_DIGEST_LEN]) -> Option<&Arc<Consumer>> {
        let (stored, i) = self.by_key.get_key_value(digest)?;
        if bool::from(stored.ct_eq(digest)) {
            self.consumers.get(*i)
        } else {
            None
        }
    }

    /// The consumer and password hash (a checked argon2 PHC string) of a basic-auth username.
    pub fn by_username(&self, username: &str) -> Option<(&Arc<Consumer>, &Arc<str>)> {
        let (i, hash) = self.by_username.get(username)?;
        Some((self.consumers.get(*i)?, hash))
    }

    /// The consumer with this id.
    pub fn by_id(&self, id: &str) -> Option<&Arc<Consumer>> {
        self.consumers.get(*self.by_id.get(id)?)
    }

    /// The consumer with this name.
    pub fn by_name(&self, name: &str) -> Option<&Arc<Consumer>> {
        self.consumers.get(*self.by_name.get(name)?)
    }

    /// The consumer a certificate name (common name or SAN) belongs to.
    pub fn by_cert_name(&self, name: &str) -> Option<&Arc<Consumer>> {
        self.consumers.get(*self.by_cert_name.get(name)?)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn key_hash_round_trip() {
        let h = format_key_hash(b"secret-key");
        assert!(h.starts_with("sha256:") && h.len() == 7 + 64);
        assert_eq!(parse_key_hash(&h).unwrap(), key_digest(b"secret-key"));
        assert!(parse_key_hash("sha256:abcd").is_err());
        // No part of what may be a raw key is echoed.
        let e = parse_key_hash("plain-key-value").unwrap_err();
        assert!(e.contains("not a key hash") && !e.contains("plain"), "{e}");
        let e = parse_key_hash(&format!("sha256:{}", "zq".repeat(32))).unwrap_err();
        assert!(!e.contains("zq"), "{e}");
        assert!(parse_key_hash(&h.replace("sha256:", "md5:")).is_err());
    }
}
