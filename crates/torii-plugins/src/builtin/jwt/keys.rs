//! Verification keys: parsed once (from inline PEM, JWK or secret, or from a fetched JWKS)
//! into ready-to-use verifiers, one per accepted algorithm the key fits.
//!
//! A key never serves two families: an RSA key cannot verify an `HS256` token (its PEM is not
//! a secret here), and an issuer's keys are built only for that issuer's algorithms.

use super::config::{Alg, Family};
use aws_lc_rs::signature::{self as sig, ParsedPublicKey, RsaPublicKeyComponents};
use aws_lc_rs::{encoding::AsDer, hmac};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};

/// One key, ready to verify signatures.
pub(crate) struct Key {
    /// Its id, if it has one.
    pub kid: Option<Box<str>>,
    /// One verifier per algorithm this key serves.
    verifiers: Vec<(Alg, Verifier)>,
}

enum Verifier {
    Hmac(Box<hmac::Key>),
    Public(ParsedPublicKey),
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key")
            .field("kid", &self.kid)
            .field(
                "algorithms",
                &self
                    .verifiers
                    .iter()
                    .map(|(a, _)| a.name())
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Key {
    /// Whether this key serves `alg`.
    pub fn fits(&self, alg: Alg) -> bool {
        self.verifiers.iter().any(|(a, _)| *a == alg)
    }

    /// Whether `signature` is a valid `alg` signature of `message` by this key (HMAC compared
    /// in constant time).
    pub fn verify(&self, alg: Alg, message: &[u8], signature: &[u8]) -> bool {
        let Some((_, v)) = self.verifiers.iter().find(|(a, _)| *a == alg) else {
            return false;
        };
        match v {
            Verifier::Hmac(k) => hmac::verify(k, message, signature).is_ok(),
            Verifier::Public(k) => k.verify_sig(message, signature).is_ok(),
        }
    }

    /// The algorithms it serves (diagnostics).
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn algorithms(&self) -> Vec<Alg> {
        self.verifiers.iter().map(|(a, _)| *a).collect()
    }
}

/// Key material before it is bound to algorithms.
pub(crate) enum Material {
    /// An HMAC secret.
    Secret(Vec<u8>),
    /// RSA, as DER (PKCS#1 or SubjectPublicKeyInfo).
    RsaDer(Vec<u8>),
    /// RSA, as modulus and exponent (big-endian).
    RsaComponents { n: Vec<u8>, e: Vec<u8> },
    /// EC: an uncompressed point (or SubjectPublicKeyInfo) on P-256 or P-384.
    Ec(Family, Vec<u8>),
    /// Ed25519: the raw 32-byte public key.
    Ed25519(Vec<u8>),
}

impl std::fmt::Debug for Material {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never prints key bytes (secrets).
        f.write_str(self.describe())
    }
}

impl Material {
    fn family(&self) -> Family {
        match self {
            Material::Secret(_) => Family::Hmac,
            Material::RsaDer(_) | Material::RsaComponents { .. } => Family::Rsa,
            Material::Ec(f, _) => *f,
            Material::Ed25519(_) => Family::Ed25519,
        }
    }

    fn describe(&self) -> &'static str {
        match self.family() {
            Family::Hmac => "an HMAC secret",
            Family::Rsa => "an RSA key",
            Family::P256 => "an EC P-256 key",
            Family::P384 => "an EC P-384 key",
            Family::Ed25519 => "an Ed25519 key",
        }
    }
}

/// Minimum HMAC secret length for an algorithm: its hash size (RFC 7518, 3.2).
pub(crate) fn min_secret_len(alg: Alg) -> usize {
    match alg {
        Alg::Hs384 => 48,
        Alg::Hs512 => 64,
        _ => 32,
    }
}

/// Binds material to the algorithms it serves among `allowed` (further limited to `pin`, a
/// JWK's own `alg`). Fails when the material is malformed, too weak, or serves none of them.
pub(crate) fn build(
    kid: Option<String>,
    material: Material,
    pin: Option<Alg>,
    allowed: &[Alg],
) -> Result<Key, String> {
    let family = material.family();
    let algs: Vec<Alg> = allowed
        .iter()
        .copied()
        .filter(|a| a.family() == family && pin.is_none_or(|p| p == *a))
        .collect();
    if algs.is_empty() {
        let names: Vec<&str> = allowed.iter().map(|a| a.name()).collect();
        return Err(match pin {
            Some(p) if p.family() != family => format!(
                "the key is {} but its `alg` is {}",
                material.describe(),
                p.name()
            ),
            Some(p) => format!(
                "the key is pinned to {} by its `alg`, which is not among the issuer's algorithms ({})",
                p.name(),
                names.join(", ")
            ),
            None => format!(
                "the key is {}, which serves none of the issuer's algorithms ({})",
                material.describe(),
                names.join(", ")
            ),
        });
    }
    let mut verifiers = Vec::with_capacity(algs.len());
    for alg in algs {
        let v = match &material {
            Material::Secret(s) => {
                let min = min_secret_len(alg);
                if s.len() < min {
                    return Err(format!(
                        "the secret is {} bytes; {} needs at least {min}",
                        s.len(),
                        alg.name()
                    ));
                }
                let h = match alg {
                    Alg::Hs384 => hmac::HMAC_SHA384,
                    Alg::Hs512 => hmac::HMAC_SHA512,
                    _ => hmac::HMAC_SHA256,
                };
                Verifier::Hmac(Box::new(hmac::Key::new(h, s)))
            }
            Material::RsaDer(der) => Verifier::Public(
                ParsedPublicKey::new(rsa_params(alg), der)
                    .map_err(|e| format!("not a valid RSA public key: {e}"))?,
            ),
            Material::RsaComponents { n, e } => Verifier::Public(
                RsaPublicKeyComponents {
                    n: strip_zeros(n),
                    e: strip_zeros(e),
                }
                .to_parsed_public_key(rsa_params(alg))
                .map_err(|e| format!("not a valid RSA public key: {e}"))?,
            ),
            Material::Ec(_, point) => {
                let a: &'static dyn sig::VerificationAlgorithm = if alg == Alg::Es384 {
                    &sig::ECDSA_P384_SHA384_FIXED
                } else {
                    &sig::ECDSA_P256_SHA256_FIXED
                };
                Verifier::Public(
                    ParsedPublicKey::new(a, point)
                        .map_err(|e| format!("not a valid EC public key: {e}"))?,
                )
            }
            Material::Ed25519(x) => Verifier::Public(
                ParsedPublicKey::new(&sig::ED25519, x)
                    .map_err(|e| format!("not a valid Ed25519 public key: {e}"))?,
            ),
        };
        if let Verifier::Public(k) = &v
            && family == Family::Rsa
        {
            check_rsa_size(k)?;
        }
        verifiers.push((alg, v));
    }
    Ok(Key {
        kid: kid.map(String::into_boxed_str),
        verifiers,
    })
}

fn rsa_params(alg: Alg) -> &'static sig::RsaParameters {
    match alg {
        Alg::Rs384 => &sig::RSA_PKCS1_2048_8192_SHA384,
        Alg::Rs512 => &sig::RSA_PKCS1_2048_8192_SHA512,
        Alg::Ps256 => &sig::RSA_PSS_2048_8192_SHA256,
        Alg::Ps384 => &sig::RSA_PSS_2048_8192_SHA384,
        Alg::Ps512 => &sig::RSA_PSS_2048_8192_SHA512,
        _ => &sig::RSA_PKCS1_2048_8192_SHA256,
    }
}

fn strip_zeros(b: &[u8]) -> &[u8] {
    let start = b.iter().position(|x| *x != 0).unwrap_or(b.len());
    &b[start..]
}

fn check_rsa_size(k: &ParsedPublicKey) -> Result<(), String> {
    let der = k
        .as_der()
        .map_err(|_| "not a valid RSA public key".to_string())?;
    match aws_lc_rs::rsa::PublicEncryptingKey::from_der(der.as_ref()) {
        Ok(p) if (2048..=8192).contains(&p.key_size_bits()) => Ok(()),
        Ok(p) => Err(format!(
            "the RSA key has {} bits; 2048 to 8192 are accepted",
            p.key_size_bits()
        )),
        Err(e) => Err(format!(
            "the RSA key is not accepted ({e}); 2048 to 8192 bits are accepted"
        )),
    }
}

/// Reads a PEM public key or certificate.
pub(crate) fn from_pem(pem: &str) -> Result<Material, String> {
    if pem.contains("PRIVATE KEY-----") {
        return Err(
            "this is a private key; give the issuer's public key (`BEGIN PUBLIC KEY`)".into(),
        );
    }
    if !pem.contains("-----BEGIN ") {
        return Err("not a PEM block (expected `-----BEGIN PUBLIC KEY-----`)".into());
    }
    use jsonwebtoken::DecodingKey;
    let bytes = |k: DecodingKey| k.try_get_as_bytes().map(<[u8]>::to_vec).ok();
    if let Some(der) = DecodingKey::from_rsa_pem(pem.as_bytes())
        .ok()
        .and_then(bytes)
    {
        return Ok(Material::RsaDer(der));
    }
    if let Some(point) = DecodingKey::from_ec_pem(pem.as_bytes())
        .ok()
        .and_then(bytes)
    {
        return match point.len() {
            65 => Ok(Material::Ec(Family::P256, point)),
            97 => Ok(Material::Ec(Family::P384, point)),
            _ => Err("unsupported EC curve: P-256 and P-384 are supported".into()),
        };
    }
    if let Some(x) = DecodingKey::from_ed_pem(pem.as_bytes())
        .ok()
        .and_then(bytes)
    {
        return Ok(Material::Ed25519(x));
    }
    Err("not a PEM public key Torii can read (RSA, EC P-256/P-384 or Ed25519)".into())
}

/// A JWK parsed for verification: its id, material and `alg` pin.
pub(crate) struct Jwk {
    pub kid: Option<String>,
    pub material: Material,
    pub pin: Option<Alg>,
}

impl Jwk {
    /// Whether it is an HMAC secret (`kty: oct`).
    pub fn material_is_secret(&self) -> bool {
        matches!(self.material, Material::Secret(_))
    }
}

/// Reads a public JWK. `Ok(None)`: a well-formed key that is not for signatures
/// (`use: enc`, `key_ops` without `verify`).
pub(crate) fn from_jwk(jwk: &Map<String, Value>) -> Result<Option<Jwk>, String> {
    let text = |name: &str| -> Result<Option<&str>, String> {
        match jwk.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(format!("`{name}` is not a string")),
        }
    };
    let bytes = |name: &str| -> Result<Vec<u8>, String> {
        let s = text(name)?.ok_or_else(|| format!("`{name}` is missing"))?;
        URL_SAFE_NO_PAD
            .decode(s.trim_end_matches('='))
            .map_err(|_| format!("`{name}` is not base64url"))
    };
    if text("use")?.is_some_and(|u| u != "sig") {
        return Ok(None);
    }
    if let Some(ops) = jwk.get("key_ops") {
        let verify = ops
            .as_array()
            .is_some_and(|a| a.iter().any(|o| o.as_str() == Some("verify")));
        if !verify {
            return Ok(None);
        }
    }
    let pin = match text("alg")? {
        None => None,
        Some(a) => Some(Alg::from_name(a).ok_or_else(|| format!("unsupported `alg` {a:?}"))?),
    };
    let kid = text("kid")?.map(String::from);
    let kty = text("kty")?.ok_or("`kty` is missing")?;
    let material = match kty {
        "RSA" => Material::RsaComponents {
            n: bytes("n")?,
            e: bytes("e")?,
        },
        "EC" => {
            let (family, len) = match text("crv")? {
                Some("P-256") => (Family::P256, 32),
                Some("P-384") => (Family::P384, 48),
                Some(c) => return Err(format!("unsupported EC curve {c:?}")),
                None => return Err("`crv` is missing".into()),
            };
            let (x, y) = (bytes("x")?, bytes("y")?);
            if x.len() != len || y.len() != len {
                return Err("`x` and `y` do not fit the curve".into());
            }
            let mut point = Vec::with_capacity(1 + 2 * len);
            point.push(4);
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            Material::Ec(family, point)
        }
        "OKP" => match text("crv")? {
            Some("Ed25519") => {
                let x = bytes("x")?;
                if x.len() != 32 {
                    return Err("`x` is not a 32-byte Ed25519 key".into());
                }
                Material::Ed25519(x)
            }
            Some(c) => return Err(format!("unsupported OKP curve {c:?}")),
            None => return Err("`crv` is missing".into()),
        },
        "oct" => Material::Secret(bytes("k")?),
        other => return Err(format!("unsupported key type {other:?}")),
    };
    Ok(Some(Jwk { kid, material, pin }))
}
