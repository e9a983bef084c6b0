//! Gateway-signed identity tokens: once a request is authenticated, upstreams that ask for it
//! (`upstreams[].identity_token`) receive a short-lived JWT (ES256 or EdDSA) naming the
//! consumer, signed by the gateway, with their own `aud` (and optionally `iss` and key). The
//! public keys are served as a JWKS so services can verify tokens without sharing secrets.
//!
//! Signing is done with aws-lc-rs directly (the keys are the gateway's own, the format is a
//! fixed compact JWS): no key parsing or JSON assembly beyond one payload per token. Tokens
//! are cached per (consumer, audience, issuer, key, copied claims) and reused for half their
//! lifetime, so steady traffic signs once per consumer and upstream every `ttl / 2`.

use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair,
};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use torii_config::schema::{IdentityToken, SigningAlgorithm};
use torii_config::{PluginError, Seg};
use torii_core::{Consumer, Identity};

enum Signer {
    Es256(EcdsaKeyPair),
    EdDsa(Ed25519KeyPair),
}

struct Key {
    /// The encoded protected header, `{"alg":..,"kid":..,"typ":"JWT"}`.
    header: String,
    signer: Signer,
}

impl Key {
    fn sign(&self, msg: &[u8]) -> Option<Vec<u8>> {
        match &self.signer {
            Signer::Es256(k) => k
                .sign(&aws_lc_rs::rand::SystemRandom::new(), msg)
                .ok()
                .map(|s| s.as_ref().to_vec()),
            Signer::EdDsa(k) => Some(k.sign(msg).as_ref().to_vec()),
        }
    }
}

/// One upstream's token settings, resolved at load.
#[derive(Debug, Clone)]
pub struct Audience {
    audience: String,
    issuer: String,
    kid: String,
}

/// The signer of a config.
pub struct TokenSigner {
    header: HeaderName,
    issuer: String,
    ttl: Duration,
    default_kid: String,
    keys: HashMap<String, Key>,
    copy_claims: Vec<String>,
    jwks_path: String,
    jwks: Bytes,
    cache: moka::sync::Cache<[u8; 32], (HeaderValue, Instant)>,
}

impl std::fmt::Debug for TokenSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSigner")
            .field("issuer", &self.issuer)
            .field("keys", &self.keys.len())
            .finish()
    }
}

fn key_path(i: usize, k: &str) -> Vec<Seg> {
    vec![
        Seg::Key("identity".into()),
        Seg::Key("token".into()),
        Seg::Key("keys".into()),
        Seg::Index(i),
        Seg::Key(k.into()),
    ]
}

fn load_key(alg: SigningAlgorithm, path: &str) -> Result<(Signer, serde_json::Value), String> {
    use rustls::pki_types::PrivateKeyDer;
    let der = torii_config::schema::pem::key(path)?;
    let bad =
        |e: &dyn std::fmt::Display| format!("`{path}` is not a usable {alg:?} private key: {e}");
    match alg {
        SigningAlgorithm::ES256 => {
            let pair = match &der {
                PrivateKeyDer::Pkcs8(d) => {
                    EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, d.secret_pkcs8_der())
                }
                PrivateKeyDer::Sec1(d) => EcdsaKeyPair::from_private_key_der(
                    &ECDSA_P256_SHA256_FIXED_SIGNING,
                    d.secret_sec1_der(),
                ),
                _ => return Err(bad(&"expected a P-256 key (PKCS#8 or SEC1)")),
            }
            .map_err(|e| bad(&e))?;
            // Uncompressed point: 0x04 || X || Y.
            let point = pair.public_key().as_ref();
            if point.len() != 65 {
                return Err(bad(&"not a P-256 key"));
            }
            let jwk = serde_json::json!({
                "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256",
                "x": B64.encode(&point[1..33]), "y": B64.encode(&point[33..]),
            });
            Ok((Signer::Es256(pair), jwk))
        }
        SigningAlgorithm::EdDSA => {
            let PrivateKeyDer::Pkcs8(d) = &der else {
                return Err(bad(&"expected an Ed25519 key in PKCS#8"));
            };
            let pair = Ed25519KeyPair::from_pkcs8(d.secret_pkcs8_der()).map_err(|e| bad(&e))?;
            let jwk = serde_json::json!({
                "kty": "OKP", "crv": "Ed25519", "use": "sig", "alg": "EdDSA",
                "x": B64.encode(pair.public_key().as_ref()),
            });
            Ok((Signer::EdDsa(pair), jwk))
        }
    }
}

impl TokenSigner {
    /// Loads the keys; errors carry their key paths.
    pub fn build(c: &IdentityToken) -> Result<Self, Vec<PluginError>> {
        let mut errors = Vec::new();
        let mut keys = HashMap::new();
        let mut jwks = Vec::new();
        if c.keys.is_empty() {
            errors.push(PluginError::new(
                vec![
                    Seg::Key("identity".into()),
                    Seg::Key("token".into()),
                    Seg::Key("keys".into()),
                ],
                "identity tokens need at least one signing key",
                "add `keys: [{kid: k1, algorithm: ES256, private_key: gateway-key.pem}]`",
            ));
        }
        for (i, k) in c.keys.iter().enumerate() {
            match load_key(k.algorithm, &k.private_key) {
                Ok((signer, mut jwk)) => {
                    jwk["kid"] = serde_json::Value::String(k.kid.clone());
                    jwks.push(jwk);
                    let alg = match k.algorithm {
                        SigningAlgorithm::ES256 => "ES256",
                        SigningAlgorithm::EdDSA => "EdDSA",
                    };
                    let header = serde_json::json!({"alg": alg, "kid": k.kid, "typ": "JWT"});
                    if keys
                        .insert(
                            k.kid.clone(),
                            Key {
                                header: B64.encode(header.to_string()),
                                signer,
                            },
                        )
                        .is_some()
                    {
                        errors.push(PluginError::new(
                            key_path(i, "kid"),
                            format!("key id `{}` is used twice", k.kid),
                            "give every key its own `kid`",
                        ));
                    }
                }
                Err(e) => errors.push(PluginError::new(
                    key_path(i, "private_key"),
                    e,
                    "generate one with `openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256` (ES256) or `openssl genpkey -algorithm ed25519` (EdDSA)",
                )),
            }
        }
        let default_kid = c
            .signing_key
            .clone()
            .or_else(|| c.keys.first().map(|k| k.kid.clone()))
            .unwrap_or_default();
        if c.signing_key.is_some() && !c.keys.iter().any(|k| k.kid == default_kid) {
            errors.push(PluginError::new(
                vec![
                    Seg::Key("identity".into()),
                    Seg::Key("token".into()),
                    Seg::Key("signing_key".into()),
                ],
                format!("no key has kid `{default_kid}`"),
                "name one of `keys[].kid`",
            ));
        }
        if !c.jwks_path.starts_with('/') {
            errors.push(PluginError::new(
                vec![
                    Seg::Key("identity".into()),
                    Seg::Key("token".into()),
                    Seg::Key("jwks_path".into()),
                ],
                "the JWKS path must start with `/`",
                "e.g. `/.well-known/torii/jwks.json`",
            ));
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Self {
            header: c.header.0.clone(),
            issuer: c.issuer.clone(),
            ttl: c.ttl.0.max(Duration::from_secs(1)),
            default_kid,
            keys,
            copy_claims: c.copy_claims.clone(),
            jwks_path: c.jwks_path.clone(),
            jwks: Bytes::from(serde_json::json!({ "keys": jwks }).to_string()),
            cache: moka::sync::Cache::builder().max_capacity(100_000).build(),
        })
    }

    /// Resolves an upstream's settings; `None` when its key id is unknown.
    pub fn audience(&self, u: &torii_config::schema::UpstreamIdentityToken) -> Option<Audience> {
        let kid = u.key.clone().unwrap_or_else(|| self.default_kid.clone());
        self.keys.contains_key(&kid).then(|| Audience {
            audience: u.audience.clone(),
            issuer: u.issuer.clone().unwrap_or_else(|| self.issuer.clone()),
            kid,
        })
    }

    /// The header the token goes in.
    pub fn header(&self) -> &HeaderName {
        &self.header
    }

    /// Where the JWKS is served, and its body.
    pub fn jwks(&self) -> (&str, &Bytes) {
        (&self.jwks_path, &self.jwks)
    }

    /// A token for this consumer and audience (cached for half its lifetime).
    pub fn token(
        &self,
        consumer: &Consumer,
        identity: Option<&Identity>,
        aud: &Audience,
    ) -> Option<HeaderValue> {
        let copied: Vec<(&str, &serde_json::Value)> = match identity.and_then(|i| i.claims.as_ref())
        {
            Some(claims) => self
                .copy_claims
                .iter()
                .filter_map(|c| claims.get(c).map(|v| (c.as_str(), v)))
                .collect(),
            None => Vec::new(),
        };
        let mut material = Vec::with_capacity(128);
        // Everything of the consumer the token carries: a consumer changed without a reload
        // (its groups, or its id reused under another name) must not get the old token.
        for part in [
            &*consumer.id,
            &*consumer.name,
            &aud.audience,
            &aud.issuer,
            &aud.kid,
        ] {
            material.extend_from_slice(part.as_bytes());
            material.push(0);
        }
        for g in &consumer.groups {
            material.extend_from_slice(g.as_bytes());
            material.push(1);
        }
        material.push(u8::from(consumer.anonymous));
        for (k, v) in &copied {
            material.extend_from_slice(k.as_bytes());
            material.push(0);
            material.extend_from_slice(v.to_string().as_bytes());
            material.push(0);
        }
        let cache_key = crate::consumers::key_digest(&material);
        let now = Instant::now();
        if let Some((token, made)) = self.cache.get(&cache_key)
            && now.duration_since(made) < self.ttl / 2
        {
            return Some(token);
        }
        let key = self.keys.get(&aud.kid)?;
        let iat = SystemTime::now().duration_since(UNIX_EPOCH).ok()?.as_secs();
        let mut payload = serde_json::Map::new();
        payload.insert("iss".into(), aud.issuer.clone().into());
        payload.insert("aud".into(), aud.audience.clone().into());
        payload.insert("sub".into(), (*consumer.id).into());
        payload.insert("name".into(), (*consumer.name).into());
        payload.insert(
            "groups".into(),
            consumer
                .groups
                .iter()
                .map(|g| serde_json::Value::from(&**g))
                .collect(),
        );
        if consumer.anonymous {
            payload.insert("anonymous".into(), true.into());
        }
        payload.insert("iat".into(), iat.into());
        payload.insert("nbf".into(), iat.into());
        payload.insert("exp".into(), (iat + self.ttl.as_secs()).into());
        for (k, v) in copied {
            payload.entry(k.to_string()).or_insert_with(|| v.clone());
        }
        let mut jws = String::with_capacity(512);
        jws.push_str(&key.header);
        jws.push('.');
        jws.push_str(&B64.encode(serde_json::Value::Object(payload).to_string()));
        let sig = key.sign(jws.as_bytes())?;
        jws.push('.');
        jws.push_str(&B64.encode(sig));
        let value = HeaderValue::from_str(&jws).ok()?;
        self.cache.insert(cache_key, (value.clone(), now));
        Some(value)
    }
}

/// Shared handle.
pub type SharedSigner = Arc<TokenSigner>;
