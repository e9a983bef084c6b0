//! Token parsing and claim checks. Everything here treats the token as hostile: no panics,
//! no unwraps, bounded work. The header's `alg` and `kid` are read as plain strings; `jwk`,
//! `jku`, `x5u` and `x5c` are never looked at.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};

/// A compact JWS split and decoded, signature not yet verified.
#[derive(Debug)]
pub(crate) struct Token {
    /// The `alg` header as written.
    pub alg: String,
    /// The `kid` header.
    pub kid: Option<String>,
    /// The claims (unverified until the signature is checked).
    pub claims: Map<String, Value>,
    /// `header.payload`, the signed bytes.
    pub signing_input: String,
    /// The decoded signature.
    pub signature: Vec<u8>,
}

fn b64(part: &str) -> Result<Vec<u8>, &'static str> {
    URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| "a token part is not base64url")
}

/// Splits and decodes a compact JWS (`header.payload.signature`).
pub(crate) fn parse(token: &str) -> Result<Token, &'static str> {
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("not a compact JWS (three dot-separated parts)");
    };
    if h.is_empty() || p.is_empty() {
        return Err("empty token part");
    }
    let header: Map<String, Value> =
        serde_json::from_slice(&b64(h)?).map_err(|_| "the header is not a JSON object")?;
    let alg = match header.get("alg") {
        Some(Value::String(a)) => a.clone(),
        _ => return Err("no `alg` header"),
    };
    let kid = match header.get("kid") {
        None => None,
        Some(Value::String(k)) => Some(k.clone()),
        Some(_) => return Err("`kid` header is not a string"),
    };
    if header.contains_key("crit") {
        // No JWS extension is understood, so a critical one can never be honoured.
        return Err("unsupported critical header (`crit`)");
    }
    let claims: Map<String, Value> =
        serde_json::from_slice(&b64(p)?).map_err(|_| "the payload is not a JSON object")?;
    let signature = b64(s)?;
    if signature.is_empty() {
        return Err("no signature");
    }
    Ok(Token {
        alg,
        kid,
        claims,
        signing_input: token[..h.len() + 1 + p.len()].to_string(),
        signature,
    })
}

/// What the claims must satisfy.
pub(crate) struct Rules<'a> {
    pub issuer: &'a str,
    pub audiences: &'a [String],
    pub leeway: u64,
    pub require_exp: bool,
    pub required: &'a [String],
}

fn numeric(claims: &Map<String, Value>, name: &str) -> Result<Option<f64>, &'static str> {
    match claims.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n.as_f64().map(Some).ok_or("a time claim is not a number"),
        Some(_) => Err("a time claim (`exp`, `nbf`) is not a number"),
    }
}

/// Checks `exp`, `nbf` (with leeway), `iss`, `aud` and the required claims at `now` (seconds
/// since the epoch).
pub(crate) fn check_claims(
    claims: &Map<String, Value>,
    rules: &Rules<'_>,
    now: u64,
) -> Result<(), &'static str> {
    let now = now as f64;
    let leeway = rules.leeway as f64;
    match numeric(claims, "exp")? {
        Some(exp) if now >= exp + leeway => return Err("expired"),
        Some(_) => {}
        None if rules.require_exp => return Err("no `exp` claim"),
        None => {}
    }
    if let Some(nbf) = numeric(claims, "nbf")?
        && now + leeway < nbf
    {
        return Err("not valid yet (`nbf`)");
    }
    if claims.get("iss").and_then(Value::as_str) != Some(rules.issuer) {
        return Err("wrong issuer");
    }
    if !rules.audiences.is_empty() {
        let ok = match claims.get("aud") {
            Some(Value::String(a)) => rules.audiences.iter().any(|x| x == a),
            Some(Value::Array(list)) => list
                .iter()
                .filter_map(Value::as_str)
                .any(|a| rules.audiences.iter().any(|x| x == a)),
            _ => false,
        };
        if !ok {
            return Err("wrong audience");
        }
    }
    if rules
        .required
        .iter()
        .any(|c| matches!(claims.get(c), None | Some(Value::Null)))
    {
        return Err("a required claim is missing");
    }
    Ok(())
}

/// Scopes from `scope` (space-separated) or, when absent, `scp` (a list or a space-separated
/// string).
pub(crate) fn scopes(claims: &Map<String, Value>) -> Vec<String> {
    let from = |v: &Value| -> Vec<String> {
        match v {
            Value::String(s) => s.split_whitespace().map(String::from).collect(),
            Value::Array(a) => a
                .iter()
                .filter_map(Value::as_str)
                .map(String::from)
                .collect(),
            _ => Vec::new(),
        }
    };
    match claims.get("scope").or_else(|| claims.get("scp")) {
        Some(v) => from(v),
        None => Vec::new(),
    }
}

/// The consumer id a claim holds: a string, or an integer written out.
pub(crate) fn claim_id(claims: &Map<String, Value>, name: &str) -> Option<String> {
    match claims.get(name)? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) if n.is_i64() || n.is_u64() => Some(n.to_string()),
        _ => None,
    }
}

/// Seconds since the Unix epoch.
pub(crate) fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
