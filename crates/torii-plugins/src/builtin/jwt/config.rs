//! Settings of `jwt`: strict, every key documented (the docs become the schema descriptions).

use schemars::JsonSchema;
use serde::Deserialize;
use torii_config::values::{ByteSize, Duration, HeaderName};

/// Settings of `jwt`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JwtConfig {
    /// The token issuers accepted, each with its own keys and algorithms. A token is matched
    /// to an issuer by its `iss` claim (with a single issuer, that one is always used), then
    /// verified with that issuer's keys and algorithms only.
    pub issuers: Vec<IssuerConfig>,
    /// Header the token is read from.
    #[serde(default = "default_header")]
    pub header: HeaderName,
    /// Authentication scheme in front of the token in `header`, matched case-insensitively
    /// (`Authorization: Bearer <token>`). Empty: the whole header value is the token. A header
    /// with another scheme (`Basic ...`) is not a JWT credential and is left to other plugins.
    #[serde(default = "default_scheme")]
    pub header_scheme: String,
    /// Cookie the token is read from when the header is absent.
    #[serde(default)]
    pub cookie: Option<String>,
    /// Query parameter the token is read from when neither the header nor the cookie is
    /// present. Tokens in URLs end up in browser histories and third-party logs (Torii's own
    /// access log redacts the parameter).
    #[serde(default)]
    pub query: Option<String>,
    /// Clock skew tolerated when checking `exp` and `nbf`.
    #[serde(default = "default_leeway")]
    pub leeway: Duration,
    /// Whether tokens must carry an `exp` claim. Turning this off accepts tokens that never
    /// expire.
    #[serde(default = "yes")]
    pub require_exp: bool,
    /// Claims every token must carry (in addition to `exp` and the consumer claim).
    #[serde(default)]
    pub required_claims: Vec<String>,
    /// Claim whose value is the consumer id (`consumers[].id`, which defaults to the name). A
    /// token whose claim names no consumer is refused.
    #[serde(default = "default_consumer_claim")]
    pub consumer_claim: String,
    /// Longest token accepted; longer ones are refused before any decoding.
    #[serde(default = "default_max_token_size")]
    pub max_token_size: ByteSize,
    /// How keys from `jwks_url` are fetched and cached.
    #[serde(default)]
    pub jwks: JwksConfig,
    /// Realm named in the `WWW-Authenticate` challenge.
    #[serde(default = "default_realm")]
    pub realm: String,
    /// How long a verified token is remembered (by a SHA-256 of the whole token), so a client
    /// that sends the same token again costs no signature verification. `exp` and `nbf` are
    /// still checked on every request, and the consumer looked up again. `0s` turns the cache
    /// off. A key removed from a JWKS stops working for cached tokens after at most this long.
    #[serde(default = "default_verified_ttl")]
    pub verified_cache_ttl: Duration,
    /// Most tokens remembered.
    #[serde(default = "default_verified_size")]
    pub verified_cache_size: u64,
    /// Remove the token before the request goes upstream: the `header` (when the token came
    /// from it) and the `query` parameter. Off by default: upstreams often read the claims
    /// themselves. A token in a cookie is left in place.
    #[serde(default)]
    pub hide_credentials: bool,
}

fn default_verified_ttl() -> Duration {
    Duration::secs(60)
}

fn default_verified_size() -> u64 {
    10_000
}

/// One accepted issuer.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IssuerConfig {
    /// The exact `iss` claim value required.
    pub issuer: String,
    /// Accepted audiences: the token's `aud` (a string or a list) must contain one of them.
    /// Empty: `aud` is not checked (any service trusting this issuer could then replay its
    /// tokens here).
    #[serde(default)]
    pub audiences: Vec<String>,
    /// The algorithms accepted for this issuer (required). The token's `alg` header only
    /// selects among these; `none` is never accepted. HMAC (`HS*`) and public-key algorithms
    /// cannot be mixed for one issuer.
    pub algorithms: Vec<Alg>,
    /// Keys given inline.
    #[serde(default)]
    pub keys: Vec<KeyConfig>,
    /// URL of the issuer's JSON Web Key Set (`http` or `https`), fetched on first use and
    /// cached, through an implicit upstream (the system's TLS roots). Not allowed with HMAC
    /// algorithms.
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// The key set's server as a named upstream of `upstreams:` (its TLS CA, client
    /// certificate, pool), instead of `jwks_url`; the set is fetched on `jwks_path`.
    #[serde(default)]
    pub jwks_upstream: Option<String>,
    /// With `jwks_upstream`: the key set's path. Default `/.well-known/jwks.json`.
    #[serde(default)]
    pub jwks_path: Option<String>,
}

/// One inline key: exactly one of `pem`, `jwk` and `secret`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    /// Key id: a token naming a `kid` is verified only with keys of that id (keys without an
    /// id are tried when no key has it). Defaults to the JWK's own `kid`.
    #[serde(default)]
    pub kid: Option<String>,
    /// A public key in PEM form (`BEGIN PUBLIC KEY`, `BEGIN RSA PUBLIC KEY` or
    /// `BEGIN CERTIFICATE`): RSA (2048 to 8192 bits), EC P-256 / P-384 or Ed25519.
    #[serde(default)]
    pub pem: Option<String>,
    /// A public key as a JWK mapping (`kty`, `n`/`e`, `crv`/`x`/`y`, or `k` for HMAC).
    #[serde(default)]
    pub jwk: Option<serde_json::Map<String, serde_json::Value>>,
    /// An HMAC secret, usually `${VARIABLE}`: at least 32 bytes for HS256, 48 for HS384 and
    /// 64 for HS512.
    #[serde(default)]
    pub secret: Option<String>,
}

/// How keys from `jwks_url` are fetched and cached.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct JwksConfig {
    /// Shortest time a fetched key set is used before it is fetched again (the response's
    /// `Cache-Control: max-age` is clamped to `min_ttl`..`max_ttl`).
    pub min_ttl: Duration,
    /// Longest time a fetched key set is used before it is fetched again.
    pub max_ttl: Duration,
    /// A token naming an unknown `kid` makes the key set be fetched again, at most once per
    /// this interval per issuer (failed fetches are retried at this pace too).
    pub refetch_interval: Duration,
    /// Time limit of one fetch.
    pub timeout: Duration,
    /// Largest key set response accepted.
    pub max_size: ByteSize,
}

impl Default for JwksConfig {
    fn default() -> Self {
        Self {
            min_ttl: Duration::secs(300),
            max_ttl: Duration::secs(24 * 3600),
            refetch_interval: Duration::secs(30),
            timeout: Duration::secs(5),
            max_size: ByteSize::mib(1),
        }
    }
}

/// A JWS signature algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, JsonSchema)]
pub enum Alg {
    /// HMAC with SHA-256.
    #[serde(rename = "HS256")]
    Hs256,
    /// HMAC with SHA-384.
    #[serde(rename = "HS384")]
    Hs384,
    /// HMAC with SHA-512.
    #[serde(rename = "HS512")]
    Hs512,
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    #[serde(rename = "RS256")]
    Rs256,
    /// RSASSA-PKCS1-v1_5 with SHA-384.
    #[serde(rename = "RS384")]
    Rs384,
    /// RSASSA-PKCS1-v1_5 with SHA-512.
    #[serde(rename = "RS512")]
    Rs512,
    /// RSASSA-PSS with SHA-256.
    #[serde(rename = "PS256")]
    Ps256,
    /// RSASSA-PSS with SHA-384.
    #[serde(rename = "PS384")]
    Ps384,
    /// RSASSA-PSS with SHA-512.
    #[serde(rename = "PS512")]
    Ps512,
    /// ECDSA with P-256 and SHA-256.
    #[serde(rename = "ES256")]
    Es256,
    /// ECDSA with P-384 and SHA-384.
    #[serde(rename = "ES384")]
    Es384,
    /// EdDSA with Ed25519.
    #[serde(rename = "EdDSA")]
    EdDsa,
}

/// Kinds of key material; one key serves algorithms of one family only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// Shared secrets.
    Hmac,
    /// RSA public keys (PKCS#1 v1.5 and PSS).
    Rsa,
    /// EC P-256 public keys.
    P256,
    /// EC P-384 public keys.
    P384,
    /// Ed25519 public keys.
    Ed25519,
}

impl Alg {
    /// Every algorithm.
    pub const ALL: [Alg; 12] = [
        Alg::Hs256,
        Alg::Hs384,
        Alg::Hs512,
        Alg::Rs256,
        Alg::Rs384,
        Alg::Rs512,
        Alg::Ps256,
        Alg::Ps384,
        Alg::Ps512,
        Alg::Es256,
        Alg::Es384,
        Alg::EdDsa,
    ];

    /// The JOSE name (`RS256`).
    pub fn name(self) -> &'static str {
        match self {
            Alg::Hs256 => "HS256",
            Alg::Hs384 => "HS384",
            Alg::Hs512 => "HS512",
            Alg::Rs256 => "RS256",
            Alg::Rs384 => "RS384",
            Alg::Rs512 => "RS512",
            Alg::Ps256 => "PS256",
            Alg::Ps384 => "PS384",
            Alg::Ps512 => "PS512",
            Alg::Es256 => "ES256",
            Alg::Es384 => "ES384",
            Alg::EdDsa => "EdDSA",
        }
    }

    /// The algorithm with this exact (case-sensitive) JOSE name; `none` and unknown names
    /// have none.
    pub fn from_name(name: &str) -> Option<Alg> {
        Alg::ALL.into_iter().find(|a| a.name() == name)
    }

    /// The key family it needs.
    pub fn family(self) -> Family {
        match self {
            Alg::Hs256 | Alg::Hs384 | Alg::Hs512 => Family::Hmac,
            Alg::Rs256 | Alg::Rs384 | Alg::Rs512 | Alg::Ps256 | Alg::Ps384 | Alg::Ps512 => {
                Family::Rsa
            }
            Alg::Es256 => Family::P256,
            Alg::Es384 => Family::P384,
            Alg::EdDsa => Family::Ed25519,
        }
    }

    /// Whether it is an HMAC algorithm.
    pub fn is_hmac(self) -> bool {
        self.family() == Family::Hmac
    }
}

fn default_header() -> HeaderName {
    HeaderName(http::header::AUTHORIZATION)
}
fn default_scheme() -> String {
    "Bearer".into()
}
fn default_leeway() -> Duration {
    Duration::secs(30)
}
fn yes() -> bool {
    true
}
fn default_consumer_claim() -> String {
    "sub".into()
}
fn default_max_token_size() -> ByteSize {
    ByteSize::kib(8)
}
fn default_realm() -> String {
    "torii".into()
}
