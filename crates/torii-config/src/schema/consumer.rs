use crate::values::HeaderName;
use schemars::JsonSchema;
use serde::Deserialize;
use std::collections::BTreeMap;

/// Plugin settings by plugin name (`key_auth`, `jwt`, `cors`, ...). Each value is checked
/// against that plugin's own schema; `docs/plugins.md` lists them. The most specific scope
/// wins: a consumer's settings replace the route's, which replace the global ones.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(transparent)]
pub struct PluginMap(pub BTreeMap<String, serde_json::Value>);

impl JsonSchema for PluginMap {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "PluginMap".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        // Replaced by the catalog's plugin schemas when the config schema is generated.
        schemars::json_schema!({ "type": "object" })
    }
}

/// An API consumer: a client application or user that credentials identify.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Consumer {
    /// Unique name (logs, `X-Consumer-Name`).
    pub name: String,
    /// Stable id sent upstream as `X-Consumer-Id`, and matched against the JWT consumer
    /// claim. Defaults to the name.
    #[serde(default)]
    pub id: Option<String>,
    /// Groups, for `acl`.
    #[serde(default)]
    pub groups: Vec<String>,
    /// API keys for `key_auth`, stored only as hashes: `sha256:<64 hex digits>`, as printed by
    /// `torii hash-key`.
    #[serde(default)]
    pub keys: Vec<String>,
    /// Username and password pairs for `basic_auth`; passwords as argon2 PHC strings, as
    /// printed by `torii hash-password`.
    #[serde(default)]
    pub basic_auth: Vec<BasicCredential>,
    /// Names matched against a client certificate's common name or subject alternative names
    /// by `mtls_auth`.
    #[serde(default)]
    pub certificate_names: Vec<String>,
    /// The plan this consumer belongs to (`plans[].name`): its plugin settings apply to the
    /// consumer, under the consumer's own `plugins`.
    #[serde(default)]
    pub plan: Option<String>,
    /// Plugin settings for this consumer; they apply to the plugins after authentication,
    /// and replace its plan's settings of the same plugin.
    #[serde(default)]
    pub plugins: PluginMap,
}

/// A plan: plugin settings shared by the consumers that name it. Counters of a plan's limits
/// are kept per consumer; a consumer moved to another plan keeps the usage counted so far
/// (the new plan's allowance applies from the next load).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    /// Unique name, as consumers' `plan` names it.
    pub name: String,
    /// Plugin settings (those that can be set per consumer: `rate_limit`, `quota`, ...).
    #[serde(default)]
    pub plugins: PluginMap,
}

/// One basic-auth credential.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BasicCredential {
    /// The username (unique across consumers).
    pub username: String,
    /// The password's argon2 hash (`$argon2id$v=19$...`).
    pub password_hash: String,
}

/// What the upstream learns about the authenticated consumer. Incoming headers with these
/// names, and their underscore spellings (`X_Consumer_Id`), are always removed first.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Identity {
    /// Header carrying the consumer id.
    pub id_header: HeaderName,
    /// Header carrying the consumer name.
    pub name_header: HeaderName,
    /// Header carrying the consumer's groups, comma-separated.
    pub groups_header: HeaderName,
    /// Header carrying `true` when the route let an anonymous request through.
    pub anonymous_header: HeaderName,
    /// A short-lived JWT the gateway signs for authenticated requests, sent to the upstreams
    /// that set `identity_token`.
    pub token: Option<IdentityToken>,
}

/// The gateway's identity tokens.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IdentityToken {
    /// The request header that carries the token (`Bearer` is not added).
    #[serde(default = "token_header")]
    pub header: HeaderName,
    /// The default `iss` claim.
    pub issuer: String,
    /// Lifetime (`exp - iat`); tokens are reused for half of it.
    #[serde(default = "token_ttl")]
    pub ttl: crate::values::Duration,
    /// Signing keys; list the next key before rotating to it so services can fetch it first.
    pub keys: Vec<SigningKey>,
    /// The `kid` of the key that signs by default; the first key when absent.
    #[serde(default)]
    pub signing_key: Option<String>,
    /// Claims of the authenticated token (JWT, introspection) copied into the identity token.
    #[serde(default)]
    pub copy_claims: Vec<String>,
    /// Path on every listener where the public keys are served as a JWKS.
    #[serde(default = "jwks_path")]
    pub jwks_path: String,
}

fn token_header() -> HeaderName {
    HeaderName(http::HeaderName::from_static("x-identity-token"))
}
fn token_ttl() -> crate::values::Duration {
    crate::values::Duration::secs(60)
}
fn jwks_path() -> String {
    "/.well-known/torii/jwks.json".into()
}

/// A signing key of the gateway.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SigningKey {
    /// Key id (`kid`), unique.
    pub kid: String,
    /// `ES256` (P-256) or `EdDSA` (Ed25519).
    pub algorithm: SigningAlgorithm,
    /// PEM file with the private key (PKCS#8, or SEC1 for P-256).
    pub private_key: String,
}

/// Algorithms of gateway-signed tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
pub enum SigningAlgorithm {
    /// ECDSA with P-256 and SHA-256.
    ES256,
    /// Ed25519.
    EdDSA,
}

impl Default for Identity {
    fn default() -> Self {
        let h = |s: &'static str| HeaderName(http::HeaderName::from_static(s));
        Self {
            id_header: h("x-consumer-id"),
            name_header: h("x-consumer-name"),
            groups_header: h("x-consumer-groups"),
            anonymous_header: h("x-anonymous-consumer"),
            token: None,
        }
    }
}
