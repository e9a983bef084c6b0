//! The `jwt` plugin through the real load path: configs go through `torii_config::load_str`
//! with the built-in catalog, requests through the compiled route chain. Tokens come from
//! PyJWT (`tests/fixtures/jwt/make_fixtures.py`, outputs committed) and, for tokens relative
//! to the current time, from jsonwebtoken. Key sets are served by a real HTTP server on
//! 127.0.0.1 whose answers the tests change.
#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use http::{HeaderValue, Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use torii_config::Loaded;
use torii_core::{ClientAddr, ErrorKind, GatewayError, RequestContext, RequestId};
use torii_plugins::{Catalog, Compiled};

// ---------------------------------------------------------------------------------------------
// Fixtures

const ISS: &str = "https://issuer.example";
const AUD: &str = "torii-api";

fn fixture(path: &str) -> String {
    let p = format!("{}/tests/fixtures/jwt/{path}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{p}: {e}"))
}

fn key(name: &str) -> String {
    fixture(&format!("keys/{name}"))
}

fn tokens() -> &'static HashMap<String, String> {
    static T: std::sync::OnceLock<HashMap<String, String>> = std::sync::OnceLock::new();
    T.get_or_init(|| {
        let v: Value = serde_json::from_str(&fixture("tokens.json")).unwrap();
        assert_eq!(v["issuer"], ISS);
        assert_eq!(v["audience"], AUD);
        serde_json::from_value(v["tokens"].clone()).unwrap()
    })
}

fn tok(name: &str) -> &'static str {
    tokens()
        .get(name)
        .unwrap_or_else(|| panic!("no fixture token {name}"))
}

fn jwk(name: &str) -> Value {
    let v: Value = serde_json::from_str(&fixture("jwks.json")).unwrap();
    v[name].clone()
}

fn jwks(names: &[&str]) -> String {
    json!({ "keys": names.iter().map(|n| jwk(n)).collect::<Vec<_>>() }).to_string()
}

fn hs_secret() -> String {
    key("hs.secret")
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Signs claims with jsonwebtoken (the second, independent implementation).
fn sign(alg: jsonwebtoken::Algorithm, kid: Option<&str>, claims: &Value) -> String {
    sign_with_header(
        jsonwebtoken::Header {
            kid: kid.map(String::from),
            ..jsonwebtoken::Header::new(alg)
        },
        claims,
    )
}

fn sign_with_header(header: jsonwebtoken::Header, claims: &Value) -> String {
    let _ = jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER.install_default();
    use jsonwebtoken::{Algorithm::*, EncodingKey};
    let k = match header.alg {
        HS256 | HS384 | HS512 => EncodingKey::from_secret(hs_secret().as_bytes()),
        RS256 | RS384 | RS512 | PS256 | PS384 | PS512 => {
            let name = if header.kid.as_deref() == Some("attacker") {
                "attacker.pem"
            } else {
                "rsa1.pem"
            };
            EncodingKey::from_rsa_pem(key(name).as_bytes()).unwrap()
        }
        ES256 => EncodingKey::from_ec_pem(key("ec256.pem").as_bytes()).unwrap(),
        ES384 => EncodingKey::from_ec_pem(key("ec384.pem").as_bytes()).unwrap(),
        EdDSA => EncodingKey::from_ed_pem(key("ed25519.pem").as_bytes()).unwrap(),
        _ => unreachable!(),
    };
    jsonwebtoken::encode(&header, claims, &k).unwrap()
}

fn claims(extra: Value) -> Value {
    let mut c = json!({ "iss": ISS, "aud": AUD, "sub": "alice", "exp": 4102444800u64 });
    for (k, v) in extra.as_object().unwrap() {
        if v.is_null() {
            c.as_object_mut().unwrap().remove(k);
        } else {
            c[k] = v.clone();
        }
    }
    c
}

// ---------------------------------------------------------------------------------------------
// Loading and running

const CONSUMERS: &str = "
consumers:
  - name: alice
  - name: bob
  - name: app
    id: app-1
  - name: guest
";

fn yaml(plugin: &Value, anonymous: bool) -> String {
    format!(
        "listeners:\n  - name: public\n    bind: 127.0.0.1:0\nroutes:\n  - name: api\n    match: {{path_prefix: /}}\n    direct_response: {{status: 200}}\n{}    plugins:\n      jwt: {}\n{CONSUMERS}",
        if anonymous {
            "    anonymous: guest\n"
        } else {
            ""
        },
        plugin
    )
}

fn env(name: &str) -> Option<String> {
    match name {
        "HS_SECRET" => Some(hs_secret()),
        "SHORT_SECRET" => Some("0123456789abcdef0123456789abcde".into()), // 31 bytes
        _ => None,
    }
}

fn try_load_with(
    catalog: &Catalog,
    plugin: &Value,
    anonymous: bool,
) -> Result<Loaded<Compiled>, String> {
    torii_config::load_str("test.yaml", &yaml(plugin, anonymous), &env, catalog)
        .map_err(|d| d.to_string())
}

fn load(plugin: Value) -> Loaded<Compiled> {
    load_anon(plugin, false)
}

fn load_anon(plugin: Value, anonymous: bool) -> Loaded<Compiled> {
    let catalog = Catalog::builtin().unwrap();
    try_load_with(&catalog, &plugin, anonymous).unwrap_or_else(|e| panic!("{e}"))
}

fn config_error(plugin: Value) -> String {
    let catalog = Catalog::builtin().unwrap();
    match try_load_with(&catalog, &plugin, false) {
        Ok(_) => panic!("config loaded: {plugin}"),
        Err(e) => e,
    }
}

fn context() -> RequestContext {
    RequestContext {
        host: "api.test".into(),
        path: "/".into(),
        route: Some("api".into()),
        ..RequestContext::new(
            RequestId(HeaderValue::from_static("test")),
            ClientAddr("127.0.0.1".parse().unwrap()),
            "127.0.0.1:40000".parse().unwrap(),
            "public".into(),
            Instant::now(),
        )
    }
}

/// Runs the route chain on a request.
async fn send(
    l: &Loaded<Compiled>,
    req: Request<()>,
) -> (Result<(), GatewayError>, RequestContext) {
    let (mut parts, ()) = req.into_parts();
    let mut ctx = context();
    let mut ran = torii_plugins::Progress::default();
    let r = l.plugins.chains[0]
        .on_request(&mut parts, &mut ctx, &mut ran)
        .await;
    let r = r.map(|resp| assert!(resp.is_none(), "no plugin answers by itself"));
    (r, ctx)
}

fn bearer(token: &str) -> Request<()> {
    Request::get("/")
        .header("authorization", format!("Bearer {token}"))
        .body(())
        .unwrap()
}

async fn call(l: &Loaded<Compiled>, token: &str) -> (Result<(), GatewayError>, RequestContext) {
    send(l, bearer(token)).await
}

/// The consumer a token authenticates as.
#[track_caller]
fn consumer_of(r: (Result<(), GatewayError>, RequestContext)) -> String {
    match r {
        (Ok(()), ctx) => ctx
            .consumer
            .as_ref()
            .map(|c| c.name.to_string())
            .expect("a consumer is set"),
        (Err(e), _) => panic!("refused: {e}"),
    }
}

async fn accepted(l: &Loaded<Compiled>, token: &str) -> String {
    consumer_of(call(l, token).await)
}

/// Asserts a 401 with the invalid_token challenge.
#[track_caller]
fn assert_invalid(r: &Result<(), GatewayError>, what: &str) {
    match r {
        Err(GatewayError {
            kind: ErrorKind::Unauthorized(Some(c)),
            detail,
            ..
        }) => {
            assert_eq!(
                c, r#"Bearer realm="torii", error="invalid_token""#,
                "{what}"
            );
            assert!(detail.starts_with("jwt: "), "{what}: {detail}");
        }
        other => panic!("{what}: expected 401 invalid_token, got {other:?}"),
    }
}

async fn refused(l: &Loaded<Compiled>, token: &str, what: &str) {
    let (r, ctx) = call(l, token).await;
    assert_invalid(&r, what);
    assert!(ctx.consumer.is_none() && ctx.identity.is_none(), "{what}");
}

fn issuer(algorithms: &[&str], keys: Value) -> Value {
    json!({ "issuer": ISS, "audiences": [AUD], "algorithms": algorithms, "keys": keys })
}

fn rsa_key() -> Value {
    json!([{ "kid": "rsa-1", "pem": key("rsa1.pub.pem") }])
}

fn rs256() -> Value {
    json!({ "issuers": [issuer(&["RS256"], rsa_key())] })
}

const ASYMMETRIC: [&str; 9] = [
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA",
];
const HMAC: [&str; 3] = ["HS256", "HS384", "HS512"];

fn asymmetric_keys() -> Value {
    keys_for(&ASYMMETRIC)
}

/// The fixture keys serving at least one of `algs` (an inline key serving none is a config
/// error).
fn keys_for(algs: &[&str]) -> Value {
    let mut keys = Vec::new();
    if algs
        .iter()
        .any(|a| a.starts_with("RS") || a.starts_with("PS"))
    {
        keys.push(json!({ "kid": "rsa-1", "pem": key("rsa1.pub.pem") }));
    }
    if algs.contains(&"ES256") {
        keys.push(json!({ "kid": "ec-256", "pem": key("ec256.pub.pem") }));
    }
    if algs.contains(&"ES384") {
        keys.push(json!({ "kid": "ec-384", "pem": key("ec384.pub.pem") }));
    }
    if algs.contains(&"EdDSA") {
        keys.push(json!({ "kid": "ed-1", "pem": key("ed25519.pub.pem") }));
    }
    if algs.iter().any(|a| a.starts_with("HS")) {
        keys.push(json!({ "kid": "hs-1", "secret": "${HS_SECRET}" }));
    }
    Value::Array(keys)
}

fn hmac_keys() -> Value {
    json!([{ "kid": "hs-1", "secret": "${HS_SECRET}" }])
}

fn all_asymmetric() -> Value {
    json!({ "issuers": [issuer(&ASYMMETRIC, asymmetric_keys())] })
}

// ---------------------------------------------------------------------------------------------
// Algorithms

#[tokio::test]
async fn every_algorithm_is_accepted_when_allowed() {
    for alg in ASYMMETRIC.iter().chain(&HMAC) {
        let l = load(json!({ "issuers": [issuer(&[alg], keys_for(&[alg]))] }));
        let (r, ctx) = call(&l, tok(&format!("valid_{alg}"))).await;
        assert!(r.is_ok(), "{alg}: {r:?}");
        assert_eq!(&*ctx.consumer.as_ref().unwrap().name, "alice", "{alg}");
        let id = ctx.identity.as_ref().unwrap();
        assert_eq!(id.scheme, "jwt");
        assert_eq!(id.scopes, ["read", "write"]);
        assert_eq!(id.claims.as_ref().unwrap()["iss"], ISS);
    }
}

#[tokio::test]
async fn every_algorithm_is_refused_when_not_in_the_allow_list() {
    for alg in ASYMMETRIC.iter().chain(&HMAC) {
        let family: &[&str] = if alg.starts_with("HS") {
            &HMAC
        } else {
            &ASYMMETRIC
        };
        let others: Vec<&str> = family.iter().copied().filter(|a| a != alg).collect();
        let l = load(json!({ "issuers": [issuer(&others, keys_for(&others))] }));
        refused(&l, tok(&format!("valid_{alg}")), alg).await;
        // Control: the same config with the algorithm listed accepts it.
        let l = load(json!({ "issuers": [issuer(family, keys_for(family))] }));
        assert_eq!(
            accepted(&l, tok(&format!("valid_{alg}"))).await,
            "alice",
            "{alg}"
        );
    }
}

#[tokio::test]
async fn tokens_signed_by_jsonwebtoken_verify_too() {
    use jsonwebtoken::Algorithm::*;
    let l = load(all_asymmetric());
    let h = load(json!({ "issuers": [issuer(&HMAC, hmac_keys())] }));
    for (alg, kid) in [
        (RS256, "rsa-1"),
        (RS384, "rsa-1"),
        (RS512, "rsa-1"),
        (PS256, "rsa-1"),
        (PS384, "rsa-1"),
        (PS512, "rsa-1"),
        (ES256, "ec-256"),
        (ES384, "ec-384"),
        (EdDSA, "ed-1"),
    ] {
        assert_eq!(
            accepted(&l, &sign(alg, Some(kid), &claims(json!({})))).await,
            "alice",
            "{alg:?}"
        );
    }
    for alg in [HS256, HS384, HS512] {
        assert_eq!(
            accepted(&h, &sign(alg, Some("hs-1"), &claims(json!({})))).await,
            "alice",
            "{alg:?}"
        );
    }
}

#[tokio::test]
async fn alg_none_is_refused_in_every_spelling() {
    let l = load(all_asymmetric());
    for name in ["alg_none", "alg_none_upper", "alg_none_mixed"] {
        refused(&l, tok(name), name).await;
    }
    // A signature appended to an `alg: none` token does not help either.
    let t = format!("{}c2lnbmF0dXJl", tok("alg_none"));
    refused(&l, &t, "none with signature").await;
}

#[tokio::test]
async fn hs256_signed_with_the_rsa_public_key_is_refused() {
    let l = load(all_asymmetric());
    refused(&l, tok("hs256_with_rsa_public_key"), "key confusion").await;
    refused(
        &l,
        tok("hs256_with_rsa_public_key_no_kid"),
        "key confusion, no kid",
    )
    .await;
    // An issuer cannot be configured to make the attack work: the PEM is no HMAC key, and a
    // PEM pasted as a secret is refused.
    let e = config_error(json!({ "issuers": [issuer(&["HS256"], rsa_key())] }));
    assert!(
        e.contains("routes[0].plugins.jwt.issuers[0].keys[0].pem"),
        "{e}"
    );
    let e = config_error(
        json!({ "issuers": [issuer(&["HS256"], json!([{ "secret": key("rsa1.pub.pem") }]))] }),
    );
    assert!(
        e.contains("routes[0].plugins.jwt.issuers[0].keys[0].secret"),
        "{e}"
    );
    assert!(e.contains("PEM"), "{e}");
}

// ---------------------------------------------------------------------------------------------
// Key selection

#[tokio::test]
async fn kid_selects_keys_and_is_nothing_more() {
    let two = json!({ "issuers": [issuer(&["RS256"], json!([
        { "kid": "rsa-2", "pem": key("rsa2.pub.pem") },
        { "kid": "rsa-1", "pem": key("rsa1.pub.pem") },
    ]))] });
    let l = load(two.clone());
    assert_eq!(accepted(&l, tok("valid_RS256")).await, "alice");
    assert_eq!(accepted(&l, tok("rotated")).await, "alice");
    // No kid: the fitting keys are tried.
    assert_eq!(accepted(&l, tok("no_kid")).await, "alice");
    // A kid naming no key (path-like or not) is refused, even though rsa-1 made the signature.
    refused(&l, tok("kid_path"), "path-like kid").await;
    refused(&l, tok("unknown_kid"), "unknown kid").await;
    // The right kid with another key's signature.
    refused(
        &l,
        tok("attacker_kid_rsa1"),
        "attacker key under a known kid",
    )
    .await;

    // A key without an id serves tokens naming any kid (the kid is only a lookup key).
    let l =
        load(json!({ "issuers": [issuer(&["RS256"], json!([{ "pem": key("rsa1.pub.pem") }]))] }));
    assert_eq!(accepted(&l, tok("kid_path")).await, "alice");
    assert_eq!(accepted(&l, tok("no_kid")).await, "alice");
    refused(&l, tok("rotated"), "rsa2 token against rsa1").await;
}

#[tokio::test]
async fn keys_tried_for_a_token_without_kid_are_bounded() {
    // Keys without ids, the right one last.
    let with = |decoys: usize| {
        let mut keys = vec![json!({ "pem": key("rsa2.pub.pem") }); decoys];
        keys.push(json!({ "pem": key("rsa1.pub.pem") }));
        load(json!({ "issuers": [issuer(&["RS256"], Value::Array(keys))] }))
    };
    assert_eq!(accepted(&with(7), tok("no_kid")).await, "alice");
    refused(&with(8), tok("no_kid"), "ninth key").await;
}

#[tokio::test]
async fn keys_in_the_token_header_are_ignored() {
    let l = load(all_asymmetric());
    for name in ["embedded_jwk", "embedded_jwk_no_kid", "jku", "x5u"] {
        refused(&l, tok(name), name).await;
    }
}

#[tokio::test]
async fn jku_is_never_fetched() {
    let idp = Idp::start(jwks(&["rsa1"])).await;
    let l = load(json!({ "issuers": [{
        "issuer": ISS, "audiences": [AUD], "algorithms": ["RS256"], "jwks_url": idp.url("/jwks"),
    }] }));
    // The header points at a key set holding the attacker's key, on the same server.
    let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    h.kid = Some("attacker".into());
    h.jku = Some(idp.url("/evil"));
    h.x5u = Some(idp.url("/evil"));
    refused(&l, &sign_with_header(h, &claims(json!({}))), "jku").await;
    assert_eq!(idp.hits("/evil"), 0, "the jku URL was fetched");
    assert_eq!(idp.hits("/jwks"), 1);
    assert_eq!(accepted(&l, tok("valid_RS256")).await, "alice");
}

#[tokio::test]
async fn inline_jwk_keys_work_like_pem_keys() {
    let l = load(json!({ "issuers": [issuer(&ASYMMETRIC, json!([
        { "jwk": jwk("rsa1_any_alg") },
        { "jwk": jwk("ec256") },
        { "jwk": jwk("ec384") },
        { "jwk": jwk("ed25519") },
    ]))] }));
    for alg in ASYMMETRIC {
        assert_eq!(
            accepted(&l, tok(&format!("valid_{alg}"))).await,
            "alice",
            "{alg}"
        );
    }
    // The JWK's `alg` pins the key: rsa1 with `alg: RS256` does not verify PS256.
    let l =
        load(json!({ "issuers": [issuer(&["RS256", "PS256"], json!([{ "jwk": jwk("rsa1") }]))] }));
    assert_eq!(accepted(&l, tok("valid_RS256")).await, "alice");
    refused(&l, tok("valid_PS256"), "pinned jwk").await;
    // PKCS#1 PEM and an HMAC JWK.
    let l = load(
        json!({ "issuers": [issuer(&["RS256"], json!([{ "kid": "rsa-1", "pem": key("rsa1.pkcs1.pem") }]))] }),
    );
    assert_eq!(accepted(&l, tok("valid_RS256")).await, "alice");
    let l = load(json!({ "issuers": [issuer(&HMAC, json!([{ "jwk": jwk("hs") }]))] }));
    assert_eq!(accepted(&l, tok("valid_HS512")).await, "alice");
}

// ---------------------------------------------------------------------------------------------
// Claims

#[tokio::test]
async fn time_claims_are_checked_with_leeway() {
    use jsonwebtoken::Algorithm::RS256;
    let l = load(rs256());
    refused(&l, tok("expired"), "expired").await;
    refused(&l, tok("not_yet_valid"), "nbf").await;
    refused(&l, tok("no_exp"), "no exp").await;
    let n = now();
    let t = |extra: Value| sign(RS256, Some("rsa-1"), &claims(extra));
    // Default leeway 30s.
    assert_eq!(accepted(&l, &t(json!({ "exp": n - 10 }))).await, "alice");
    refused(&l, &t(json!({ "exp": n - 60 })), "exp beyond leeway").await;
    assert_eq!(accepted(&l, &t(json!({ "nbf": n + 10 }))).await, "alice");
    refused(&l, &t(json!({ "nbf": n + 120 })), "nbf beyond leeway").await;
    refused(&l, &t(json!({ "exp": "4102444800" })), "exp as a string").await;
    assert_eq!(
        accepted(&l, &t(json!({ "exp": 4102444800.5 }))).await,
        "alice"
    );

    let mut cfg = rs256();
    cfg["leeway"] = json!("0s");
    cfg["require_exp"] = json!(false);
    let l = load(cfg);
    refused(&l, &t(json!({ "exp": n - 10 })), "no leeway").await;
    refused(&l, &t(json!({ "nbf": n + 10 })), "no leeway, nbf").await;
    assert_eq!(accepted(&l, tok("no_exp")).await, "alice");
    refused(&l, tok("expired"), "expired without require_exp").await;
}

#[tokio::test]
async fn issuer_and_audience_are_checked() {
    let l = load(rs256());
    refused(&l, tok("wrong_iss"), "wrong iss (single issuer)").await;
    refused(&l, tok("no_iss"), "no iss").await;
    refused(&l, tok("wrong_aud"), "wrong aud").await;
    assert_eq!(accepted(&l, tok("aud_list")).await, "alice");
    let t = sign(
        jsonwebtoken::Algorithm::RS256,
        Some("rsa-1"),
        &claims(json!({ "aud": null })),
    );
    refused(&l, &t, "no aud").await;
    // Without audiences, aud is not checked.
    let mut cfg = rs256();
    cfg["issuers"][0]["audiences"] = json!([]);
    let l = load(cfg);
    assert_eq!(accepted(&l, tok("wrong_aud")).await, "alice");
    assert_eq!(accepted(&l, &t).await, "alice");
}

#[tokio::test]
async fn required_claims_must_be_present() {
    let mut cfg = rs256();
    cfg["required_claims"] = json!(["tenant"]);
    let l = load(cfg);
    assert_eq!(accepted(&l, tok("with_tenant")).await, "alice");
    refused(&l, tok("valid_RS256"), "no tenant").await;
}

#[tokio::test]
async fn issuers_are_selected_by_iss_and_verified_with_their_own_settings() {
    let l = load(json!({ "issuers": [
        issuer(&["RS256"], rsa_key()),
        { "issuer": "https://second.example", "algorithms": ["ES256"],
          "keys": [{ "kid": "ec-256", "pem": key("ec256.pub.pem") }] },
    ] }));
    assert_eq!(accepted(&l, tok("valid_RS256")).await, "alice");
    assert_eq!(accepted(&l, tok("second_issuer")).await, "bob");
    refused(&l, tok("wrong_iss"), "unknown issuer").await;
    // Claiming the second issuer with the first issuer's key and algorithm does not work.
    let t = sign(
        jsonwebtoken::Algorithm::RS256,
        Some("rsa-1"),
        &claims(json!({ "iss": "https://second.example" })),
    );
    refused(&l, &t, "cross-issuer").await;
    // An ES256 token claiming the first issuer, signed with the second's key.
    let t = sign(
        jsonwebtoken::Algorithm::ES256,
        Some("ec-256"),
        &claims(json!({})),
    );
    refused(&l, &t, "cross-issuer es256").await;
}

#[tokio::test]
async fn scopes_come_from_scope_or_scp() {
    let l = load(rs256());
    for (name, want) in [
        ("valid_RS256", vec!["read", "write"]),
        ("scp_array", vec!["orders:read", "orders:write"]),
        ("scp_string", vec!["a", "b"]),
    ] {
        let (r, ctx) = call(&l, tok(name)).await;
        assert!(r.is_ok(), "{name}: {r:?}");
        assert_eq!(ctx.identity.as_ref().unwrap().scopes, want, "{name}");
    }
    let (r, ctx) = call(&l, tok("with_tenant")).await;
    assert!(r.is_ok());
    let claims = ctx.identity.as_ref().unwrap().claims.as_ref().unwrap();
    assert_eq!(claims["tenant"], "acme");
    assert_eq!(claims["client_id"], "app-1");
}

#[tokio::test]
async fn the_consumer_comes_from_the_claim() {
    let l = load(rs256());
    let (r, ctx) = call(&l, tok("valid_RS256")).await;
    assert!(r.is_ok());
    let c = ctx.consumer.as_ref().unwrap();
    assert_eq!((&*c.name, &*c.id, c.anonymous), ("alice", "alice", false));
    refused(&l, tok("unknown_sub"), "unknown consumer").await;
    refused(&l, tok("no_sub"), "no sub").await;
    // Another claim, matched against consumer ids (not names).
    let mut cfg = rs256();
    cfg["consumer_claim"] = json!("client_id");
    let l = load(cfg);
    assert_eq!(accepted(&l, tok("with_tenant")).await, "app");
    refused(&l, tok("valid_RS256"), "no client_id claim").await;
    let t = sign(
        jsonwebtoken::Algorithm::RS256,
        Some("rsa-1"),
        &claims(json!({ "client_id": "app" })),
    );
    refused(&l, &t, "a name is not an id").await;
}

// ---------------------------------------------------------------------------------------------
// Malformed tokens

#[tokio::test]
async fn tampered_and_malformed_tokens_are_refused() {
    let l = load(all_asymmetric());
    for name in [
        "tampered_payload",
        "tampered_signature",
        "truncated_signature",
        "jwe_like",
        "crit",
    ] {
        refused(&l, tok(name), name).await;
    }
    let valid = tok("valid_RS256");
    let (h, rest) = valid.split_once('.').unwrap();
    let (p, s) = rest.split_once('.').unwrap();
    let padded = format!("{h}.{p}.{s}==");
    let spaced = format!("{h}. {p}.{s}");
    let no_sig = format!("{h}.{p}.");
    let swapped = format!("{p}.{h}.{s}");
    let big = "a".repeat(100_000);
    for bad in [
        "",
        "x",
        "a.b",
        "a.b.c",
        "..",
        "....",
        "a.b.c.d",
        "e30.e30.e30",
        "!!!.###.$$$",
        &padded,
        &spaced,
        &no_sig,
        &swapped,
        &big,
    ] {
        let (r, _) = call(&l, bad).await;
        assert_invalid(&r, &format!("{:.40}", bad));
    }
    // Control: the unmodified token passes.
    assert_eq!(accepted(&l, valid).await, "alice");
}

#[tokio::test]
async fn oversized_tokens_are_refused_before_decoding() {
    let valid = tok("valid_RS256");
    assert!(valid.len() > 512 && valid.len() < 1024, "{}", valid.len());
    let mut cfg = rs256();
    cfg["max_token_size"] = json!("512B");
    let l = load(cfg.clone());
    refused(&l, valid, "token larger than max_token_size").await;
    cfg["max_token_size"] = json!("1KiB");
    let l = load(cfg);
    assert_eq!(accepted(&l, valid).await, "alice");
    // Default 8KiB: a 9KiB token is refused, whatever it holds.
    let l = load(rs256());
    let t = sign(
        jsonwebtoken::Algorithm::RS256,
        Some("rsa-1"),
        &claims(json!({ "pad": "x".repeat(9 * 1024) })),
    );
    refused(&l, &t, "9KiB").await;
}

#[tokio::test]
async fn mutated_tokens_never_panic_and_never_pass() {
    let l = load(all_asymmetric());
    let valid = tok("valid_ES256").as_bytes().to_vec();
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=+/ ";
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for _ in 0..500 {
        let mut t = valid.clone();
        for _ in 0..(1 + next() % 3) {
            let i = (next() as usize) % t.len();
            let c = alphabet[(next() as usize) % alphabet.len()];
            if t[i] == c {
                continue;
            }
            t[i] = c;
        }
        if t == valid {
            continue;
        }
        let s = String::from_utf8(t).unwrap();
        let (r, ctx) = call(&l, &s).await;
        // A mutation in the unused bits of the last base64 character could keep the token
        // valid; those are refused as non-canonical base64, so nothing passes.
        assert!(
            r.is_err() && ctx.consumer.is_none(),
            "mutated token accepted: {s}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Where the token comes from

#[tokio::test]
async fn token_sources_and_missing_credentials() {
    let mut cfg = rs256();
    cfg["cookie"] = json!("session");
    cfg["query"] = json!("access_token");
    let l = load_anon(cfg, true);
    assert!(
        l.plugins
            .redact_query_params
            .iter()
            .any(|q| q == "access_token")
    );
    let valid = tok("valid_RS256");
    let r = |b: http::request::Builder| b.body(()).unwrap();
    // Header, any case of the scheme.
    for v in [
        format!("Bearer {valid}"),
        format!("bearer {valid}"),
        format!("BEARER   {valid}"),
    ] {
        assert_eq!(
            consumer_of(send(&l, r(Request::get("/").header("authorization", v))).await),
            "alice"
        );
    }
    // Cookie and query.
    let req = r(Request::get("/").header("cookie", format!("a=b; session={valid}; c=d")));
    assert_eq!(consumer_of(send(&l, req).await), "alice");
    let req = r(Request::get(format!("/x?y=1&access_token={valid}")));
    assert_eq!(consumer_of(send(&l, req).await), "alice");
    // No credential: the plugin stays out of it and the route's anonymous consumer is used.
    for req in [
        r(Request::get("/")),
        r(Request::get("/").header("authorization", "Basic YWxpY2U6cHc=")),
        r(Request::get("/").header("cookie", "other=1")),
    ] {
        let (res, ctx) = send(&l, req).await;
        assert!(res.is_ok(), "{res:?}");
        let c = ctx.consumer.as_ref().unwrap();
        assert!(c.anonymous && &*c.name == "guest");
        assert!(ctx.identity.is_none());
    }
    // A bad token is refused even though the route has an anonymous consumer.
    let (res, _) = send(&l, r(Request::get("/").header("cookie", "session=nope"))).await;
    assert_invalid(&res, "bad cookie token");
    let (res, _) = send(&l, bearer("")).await;
    assert_invalid(&res, "empty bearer");
    let (res, _) = send(&l, r(Request::get("/").header("authorization", "bearer"))).await;
    assert_invalid(&res, "bare scheme");
    // `Bearerx` is another scheme.
    let req = r(Request::get("/").header("authorization", format!("Bearerx {valid}")));
    assert!(send(&l, req).await.1.consumer.unwrap().anonymous);
}

#[tokio::test]
async fn no_credential_without_anonymous_gets_the_bearer_challenge() {
    let l = load(rs256());
    let (r, _) = send(&l, Request::get("/").body(()).unwrap()).await;
    match r {
        Err(GatewayError {
            kind: ErrorKind::Unauthorized(Some(c)),
            ..
        }) => {
            assert_eq!(c, r#"Bearer realm="torii""#)
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn custom_header_without_scheme() {
    let mut cfg = rs256();
    cfg["header"] = json!("x-token");
    cfg["header_scheme"] = json!("");
    cfg["realm"] = json!("api");
    let l = load(cfg);
    let req = Request::get("/")
        .header("x-token", tok("valid_RS256"))
        .body(())
        .unwrap();
    assert_eq!(consumer_of(send(&l, req).await), "alice");
    let req = Request::get("/")
        .header("x-token", tok("expired"))
        .body(())
        .unwrap();
    match send(&l, req).await.0 {
        Err(GatewayError {
            kind: ErrorKind::Unauthorized(Some(c)),
            ..
        }) => {
            assert_eq!(c, r#"Bearer realm="api", error="invalid_token""#)
        }
        other => panic!("{other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// JWKS

/// A fake identity provider: serves a key set at `/jwks` (and an attacker's at any other
/// path), counts requests per path, and can be slowed down, broken or stopped.
struct Idp {
    addr: std::net::SocketAddr,
    hits: Arc<Mutex<HashMap<String, usize>>>,
    serve: Arc<Mutex<Serve>>,
    tasks: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
}

#[derive(Clone)]
struct Serve {
    status: u16,
    body: String,
    cache_control: Option<String>,
    delay: Duration,
}

impl Idp {
    async fn start(body: String) -> Idp {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hits: Arc<Mutex<HashMap<String, usize>>> = Default::default();
        let serve = Arc::new(Mutex::new(Serve {
            status: 200,
            body,
            cache_control: None,
            delay: Duration::ZERO,
        }));
        let tasks: Arc<Mutex<Vec<tokio::task::AbortHandle>>> = Default::default();
        let (h, s, t) = (hits.clone(), serve.clone(), tasks.clone());
        let accept = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (h, s) = (h.clone(), s.clone());
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let (h, s) = (h.clone(), s.clone());
                    async move {
                        let path = req.uri().path().to_string();
                        *h.lock().unwrap().entry(path.clone()).or_default() += 1;
                        let cfg = s.lock().unwrap().clone();
                        tokio::time::sleep(cfg.delay).await;
                        let body = if path == "/jwks" {
                            cfg.body
                        } else {
                            jwks(&["attacker"])
                        };
                        let mut b = Response::builder().status(cfg.status);
                        if let Some(cc) = cfg.cache_control {
                            b = b.header("cache-control", cc);
                        }
                        Ok::<_, Infallible>(b.body(Full::new(Bytes::from(body))).unwrap())
                    }
                });
                let conn = tokio::spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
                t.lock().unwrap().push(conn.abort_handle());
            }
        });
        tasks.lock().unwrap().push(accept.abort_handle());
        Idp {
            addr,
            hits,
            serve,
            tasks,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn hits(&self, path: &str) -> usize {
        self.hits.lock().unwrap().get(path).copied().unwrap_or(0)
    }

    /// Waits (up to 5s) until `path` was requested `n` times: background fetches finish
    /// on their own schedule.
    async fn wait_hits(&self, path: &str, n: usize) {
        let start = Instant::now();
        while self.hits(path) < n && start.elapsed() < Duration::from_secs(5) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(self.hits(path), n);
    }

    fn set(&self, f: impl FnOnce(&mut Serve)) {
        f(&mut self.serve.lock().unwrap());
    }

    /// Closes the listener and every connection: the endpoint is down.
    async fn stop(&self) {
        for t in self.tasks.lock().unwrap().drain(..) {
            t.abort();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn jwks_issuer(url: &str, algorithms: &[&str]) -> Value {
    json!({ "issuer": ISS, "audiences": [AUD], "algorithms": algorithms, "jwks_url": url })
}

/// Key-set tests see every request reach the key cache: the verified-token cache is off.
fn jwks_cfg(url: &str, jwks: Value) -> Value {
    json!({ "issuers": [jwks_issuer(url, &["RS256"])], "jwks": jwks, "verified_cache_ttl": "0s" })
}

async fn closed_port_url() -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = l.local_addr().unwrap();
    drop(l);
    format!("http://{a}/jwks")
}

#[tokio::test]
async fn jwks_is_fetched_lazily_once_and_cached() {
    let idp = Idp::start(jwks(&["rsa1", "ec256", "ed25519"])).await;
    let l = load(json!({ "issuers": [jwks_issuer(&idp.url("/jwks"), &ASYMMETRIC)] }));
    assert_eq!(idp.hits("/jwks"), 0, "no I/O at config load");
    assert_eq!(accepted(&l, tok("valid_RS256")).await, "alice");
    assert_eq!(idp.hits("/jwks"), 1);
    for name in ["valid_RS256", "valid_ES256", "valid_EdDSA", "no_kid"] {
        assert_eq!(accepted(&l, tok(name)).await, "alice", "{name}");
    }
    // ec384 is not in the set; neither is a kid that was never published.
    refused(&l, tok("valid_ES384"), "ES384 not in the set").await;
    refused(&l, tok("kid_path"), "path-like kid").await;
    refused(&l, tok("tampered_signature"), "tampered").await;
    assert_eq!(
        idp.hits("/jwks"),
        1,
        "unknown kids within refetch_interval do not fetch"
    );
}

#[tokio::test]
async fn concurrent_first_requests_share_one_fetch() {
    let idp = Idp::start(jwks(&["rsa1"])).await;
    idp.set(|s| s.delay = Duration::from_millis(300));
    let l = Arc::new(load(jwks_cfg(&idp.url("/jwks"), json!({}))));
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let l = l.clone();
        set.spawn(async move { accepted(&l, tok("valid_RS256")).await });
    }
    while let Some(r) = set.join_next().await {
        assert_eq!(r.unwrap(), "alice");
    }
    assert_eq!(idp.hits("/jwks"), 1);
}

#[tokio::test]
async fn rotation_unknown_kid_refetches_after_the_interval() {
    let idp = Idp::start(jwks(&["rsa1"])).await;
    let l = load(jwks_cfg(
        &idp.url("/jwks"),
        json!({ "refetch_interval": "2s" }),
    ));
    assert_eq!(accepted(&l, tok("valid_RS256")).await, "alice");
    assert_eq!(idp.hits("/jwks"), 1);
    // The issuer rotates to rsa-2.
    idp.set(|s| s.body = jwks(&["rsa2"]));
    // Right after a fetch, an unknown kid does not fetch again.
    refused(&l, tok("rotated"), "within the refetch interval").await;
    assert_eq!(idp.hits("/jwks"), 1);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(accepted(&l, tok("rotated")).await, "alice");
    assert_eq!(idp.hits("/jwks"), 2);
    // The old key is gone from the new set (and the refetch interval holds again).
    refused(&l, tok("valid_RS256"), "rotated out").await;
    assert_eq!(idp.hits("/jwks"), 2);
}

#[tokio::test]
async fn unknown_kid_floods_make_at_most_one_fetch_per_interval() {
    let idp = Idp::start(jwks(&["rsa1"])).await;
    let l = Arc::new(load(jwks_cfg(
        &idp.url("/jwks"),
        json!({ "refetch_interval": "2s" }),
    )));
    assert_eq!(accepted(&l, tok("valid_RS256")).await, "alice");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    idp.set(|s| s.delay = Duration::from_millis(200));
    let flood = |n: usize| {
        let mut set = tokio::task::JoinSet::new();
        for i in 0..n {
            let l = l.clone();
            let t = sign(
                jsonwebtoken::Algorithm::RS256,
                Some(&format!("kid-{i}")),
                &claims(json!({})),
            );
            set.spawn(async move { call(&l, &t).await.0 });
        }
        set
    };
    let mut set = flood(30);
    while let Some(r) = set.join_next().await {
        assert_invalid(&r.unwrap(), "unknown kid");
    }
    assert_eq!(idp.hits("/jwks"), 2, "one refetch for the whole flood");
    let mut set = flood(30);
    while let Some(r) = set.join_next().await {
        assert_invalid(&r.unwrap(), "unknown kid");
    }
    assert_eq!(idp.hits("/jwks"), 2, "rate limited");
    // Known keys keep working meanwhile.
    assert_eq!(accepted(&l, tok("valid_RS256")).await, "alice");
}

#[tokio::test]
async fn cached_keys_keep_working_when_the_endpoint_goes_down() {
    let idp = Idp::start(jwks(&["rsa1"])).await;
    idp.set(|s| s.cache_control = Some("max-age=0".into()));
    let l = load(jwks_cfg(
        &idp.url("/jwks"),
        json!({ "min_ttl": "1s", "max_ttl": "1s", "refetch_interval": "1s" }),
    ));
    assert_eq!(accepted(&l, tok("valid_RS256")).await, "alice");
    // Errors first, then the endpoint disappears entirely.
    idp.set(|s| s.status = 500);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        accepted(&l, tok("valid_RS256")).await,
        "alice",
        "stale keys after a 500"
    );
    // The expired set is refreshed in the background (and that fails).
    idp.wait_hits("/jwks", 2).await;
    idp.stop().await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        accepted(&l, tok("valid_RS256")).await,
        "alice",
        "stale keys, endpoint down"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    // An unknown kid is still a plain 401: keys exist, this one is not among them.
    refused(&l, tok("rotated"), "unknown kid with the endpoint down").await;
    assert_eq!(accepted(&l, tok("valid_RS256")).await, "alice");
}

#[tokio::test]
async fn nothing_cached_and_endpoint_down_is_503() {
    let url = closed_port_url().await;
    let l = load(jwks_cfg(&url, json!({ "timeout": "1s" })));
    for _ in 0..2 {
        let (r, ctx) = call(&l, tok("valid_RS256")).await;
        match r {
            Err(GatewayError {
                kind: ErrorKind::AuthUnavailable,
                ..
            }) => {}
            other => panic!("expected 503, got {other:?}"),
        }
        assert!(ctx.consumer.is_none());
    }
    // Tokens refused on their claims never get that far.
    refused(&l, tok("expired"), "expired").await;
}

#[tokio::test]
async fn error_answers_and_bad_sets_are_failures_not_key_sets() {
    for (status, body) in [
        (503, jwks(&["rsa1"])),
        (200, "not json".to_string()),
        (200, r#"{"keys": []}"#.to_string()),
        (200, r#"{"nokeys": 1}"#.to_string()),
        // Only keys that are not usable: enc, oct, unsupported, malformed.
        (
            200,
            json!({ "keys": [
            { "kty": "RSA", "use": "enc", "kid": "rsa-1", "n": jwk("rsa1")["n"], "e": "AQAB" },
            jwk("hs"),
            { "kty": "EC", "crv": "P-521", "x": "AA", "y": "AA", "kid": "x" },
            { "kty": "RSA", "kid": "rsa-1", "n": "!!", "e": "AQAB" },
            "not an object",
        ] })
            .to_string(),
        ),
    ] {
        let idp = Idp::start(body.clone()).await;
        idp.set(|s| s.status = status);
        let l = load(jwks_cfg(&idp.url("/jwks"), json!({})));
        match call(&l, tok("valid_RS256")).await.0 {
            Err(GatewayError {
                kind: ErrorKind::AuthUnavailable,
                ..
            }) => {}
            other => panic!("{status} {body:.60}: expected 503, got {other:?}"),
        }
    }
    // Too large.
    let idp = Idp::start(jwks(&["rsa1", "rsa2", "attacker"])).await;
    let l = load(jwks_cfg(&idp.url("/jwks"), json!({ "max_size": "1KiB" })));
    assert!(matches!(
        call(&l, tok("valid_RS256")).await.0,
        Err(GatewayError {
            kind: ErrorKind::AuthUnavailable,
            ..
        })
    ));
}

#[tokio::test]
async fn unusable_entries_of_a_set_are_skipped() {
    let body = json!({ "keys": [
        "garbage",
        { "kty": "RSA", "use": "enc", "kid": "enc-1", "n": jwk("rsa2")["n"], "e": "AQAB" },
        jwk("hs"),
        { "kty": "RSA", "kid": "bad", "n": "!!", "e": "AQAB" },
        { "kty": "RSA", "kid": "rsa-1", "alg": "RSA-OAEP", "n": jwk("rsa2")["n"], "e": "AQAB" },
        jwk("rsa1"),
    ] });
    let idp = Idp::start(body.to_string()).await;
    let l = load(jwks_cfg(&idp.url("/jwks"), json!({})));
    assert_eq!(accepted(&l, tok("valid_RS256")).await, "alice");
}

#[tokio::test]
async fn inline_keys_work_when_the_key_set_cannot_be_fetched() {
    let url = closed_port_url().await;
    let mut iss = jwks_issuer(&url, &["RS256"]);
    iss["keys"] = rsa_key();
    let l = load(json!({ "issuers": [iss], "jwks": { "timeout": "1s" } }));
    assert_eq!(accepted(&l, tok("valid_RS256")).await, "alice");
    assert_eq!(accepted(&l, tok("valid_RS256")).await, "alice");
    // A kid neither inline nor fetchable: the key set might have had it.
    let (r, _) = call(&l, tok("rotated")).await;
    assert!(
        matches!(
            r,
            Err(GatewayError {
                kind: ErrorKind::AuthUnavailable,
                ..
            })
        ),
        "{r:?}"
    );
}

#[tokio::test]
async fn cache_control_max_age_is_honoured_within_bounds() {
    let idp = Idp::start(jwks(&["rsa1"])).await;
    idp.set(|s| s.cache_control = Some("public, max-age=1".into()));
    let l = load(jwks_cfg(
        &idp.url("/jwks"),
        json!({ "min_ttl": "1s", "refetch_interval": "1s" }),
    ));
    assert_eq!(accepted(&l, tok("valid_RS256")).await, "alice");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(accepted(&l, tok("valid_RS256")).await, "alice");
    idp.wait_hits("/jwks", 2).await; // expired after max-age

    let idp = Idp::start(jwks(&["rsa1"])).await;
    idp.set(|s| s.cache_control = Some("max-age=3600".into()));
    let l = load(jwks_cfg(
        &idp.url("/jwks"),
        json!({ "min_ttl": "1s", "refetch_interval": "1s" }),
    ));
    assert_eq!(accepted(&l, tok("valid_RS256")).await, "alice");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(accepted(&l, tok("valid_RS256")).await, "alice");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(idp.hits("/jwks"), 1, "still fresh");
}

#[tokio::test]
async fn the_key_set_cache_survives_reloads_with_the_same_settings() {
    let idp = Idp::start(jwks(&["rsa1"])).await;
    let catalog = Catalog::builtin().unwrap();
    let cfg = jwks_cfg(&idp.url("/jwks"), json!({}));
    let l1 = try_load_with(&catalog, &cfg, false).unwrap();
    assert_eq!(accepted(&l1, tok("valid_RS256")).await, "alice");
    let l2 = try_load_with(&catalog, &cfg, false).unwrap();
    assert_eq!(accepted(&l2, tok("valid_RS256")).await, "alice");
    assert_eq!(idp.hits("/jwks"), 1);
    // Other settings: a fresh cache.
    let mut other = cfg.clone();
    other["leeway"] = json!("10s");
    let l3 = try_load_with(&catalog, &other, false).unwrap();
    assert_eq!(accepted(&l3, tok("valid_RS256")).await, "alice");
    assert_eq!(idp.hits("/jwks"), 2);
}

// ---------------------------------------------------------------------------------------------
// Config errors

#[track_caller]
fn assert_error(cfg: Value, path: &str, message: &str) {
    let e = config_error(cfg);
    let full = format!("routes[0].plugins.jwt{path}");
    let line = e
        .lines()
        .find(|l| l.contains(&format!(": {full}: ")))
        .unwrap_or_else(|| panic!("no error at {full}:\n{e}"));
    assert!(line.contains(message), "{line}\n{e}");
}

fn with_key(algs: &[&str], key: Value) -> Value {
    json!({ "issuers": [issuer(algs, json!([key]))] })
}

#[test]
fn config_errors_name_the_key() {
    let k = ".issuers[0].keys[0]";
    assert_error(json!({ "issuers": [] }), ".issuers", "at least one issuer");
    assert_error(
        json!({ "issuers": [issuer(&[], rsa_key())] }),
        ".issuers[0].algorithms",
        "at least one algorithm",
    );
    assert_error(
        json!({ "issuers": [
            issuer(&["RS256"], rsa_key()),
            { "issuer": "https://other.example", "algorithms": ["HS256", "RS256"], "keys": hmac_keys() },
        ] }),
        ".issuers[1].algorithms",
        "cannot be mixed",
    );
    assert_error(
        with_key(
            &["RS256"],
            json!({ "pem": "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n" }),
        ),
        &format!("{k}.pem"),
        "not a PEM public key",
    );
    assert_error(
        with_key(&["RS256"], json!({ "pem": "hello" })),
        &format!("{k}.pem"),
        "not a PEM block",
    );
    assert_error(
        with_key(&["RS256"], json!({ "pem": key("rsa1.pem") })),
        &format!("{k}.pem"),
        "private key",
    );
    assert_error(
        with_key(&["RS256"], json!({ "pem": key("rsa1024.pub.pem") })),
        &format!("{k}.pem"),
        "2048",
    );
    assert_error(
        with_key(&["RS256"], json!({ "pem": key("ec256.pub.pem") })),
        &format!("{k}.pem"),
        "EC P-256",
    );
    assert_error(
        with_key(&["ES384"], json!({ "pem": key("ec256.pub.pem") })),
        &format!("{k}.pem"),
        "serves none",
    );
    assert_error(
        with_key(&["RS256"], json!({ "secret": hs_secret() })),
        &format!("{k}.secret"),
        "HMAC secret",
    );
    assert_error(
        with_key(&["HS256"], json!({ "secret": "${SHORT_SECRET}" })),
        &format!("{k}.secret"),
        "31 bytes; HS256 needs at least 32",
    );
    assert_error(
        with_key(&["HS256", "HS512"], json!({ "secret": "x".repeat(48) })),
        &format!("{k}.secret"),
        "HS512 needs at least 64",
    );
    assert_error(
        with_key(
            &["RS256"],
            json!({ "pem": key("rsa1.pub.pem"), "secret": hs_secret() }),
        ),
        k,
        "exactly one of",
    );
    assert_error(
        with_key(&["RS256"], json!({ "kid": "x" })),
        k,
        "exactly one of",
    );
    let mut private = jwk("rsa1");
    private["d"] = json!("AQAB");
    assert_error(
        with_key(&["RS256"], json!({ "jwk": private })),
        &format!("{k}.jwk"),
        "private key",
    );
    assert_error(
        with_key(&["RS256"], json!({ "jwk": { "kty": "RSA", "n": "AQAB" } })),
        &format!("{k}.jwk"),
        "`e` is missing",
    );
    assert_error(
        with_key(
            &["RS256"],
            json!({ "jwk": { "kty": "EC", "crv": "P-521", "x": "", "y": "" } }),
        ),
        &format!("{k}.jwk"),
        "P-521",
    );
    assert_error(
        json!({ "issuers": [issuer(&["RS256"], json!([{ "kid": "a", "pem": key("rsa1.pub.pem") }, { "kid": "a", "pem": key("rsa2.pub.pem") }]))] }),
        ".issuers[0].keys[1].kid",
        "used twice",
    );
    assert_error(
        json!({ "issuers": [jwks_issuer("ftp://idp.example/jwks", &["RS256"])] }),
        ".issuers[0].jwks_url",
        "not an http",
    );
    assert_error(
        json!({ "issuers": [jwks_issuer("/jwks", &["RS256"])] }),
        ".issuers[0].jwks_url",
        "not an http",
    );
    assert_error(
        json!({ "issuers": [jwks_issuer("https://idp.example/jwks", &["HS256"])] }),
        ".issuers[0].jwks_url",
        "not fetched",
    );
    assert_error(
        json!({ "issuers": [{ "issuer": ISS, "algorithms": ["RS256"] }] }),
        ".issuers[0]",
        "no keys",
    );
    assert_error(
        json!({ "issuers": [issuer(&["RS256"], rsa_key()), issuer(&["RS256"], rsa_key())] }),
        ".issuers[1].issuer",
        "listed twice",
    );
    assert_error(
        json!({ "issuers": [issuer(&["RS256"], rsa_key())], "jwks": { "min_ttl": "2h", "max_ttl": "1h" } }),
        ".jwks.min_ttl",
        "longer than",
    );
    // Schema errors: unknown keys and algorithms outside the list.
    assert_error(
        json!({ "issuers": [issuer(&["none"], rsa_key())] }),
        ".issuers[0].algorithms[0]",
        "is not one of",
    );
    let mut unknown = rs256();
    unknown["issuers"][0]["audience"] = json!("x");
    assert_error(unknown, ".issuers[0].audience", "unknown key");
    assert_error(
        json!({ "issuers": [{ "algorithms": ["RS256"], "keys": rsa_key() }] }),
        ".issuers[0]",
        "missing required key `issuer`",
    );
}

#[test]
fn secrets_are_never_echoed_in_config_errors() {
    let e = config_error(with_key(&["HS256"], json!({ "secret": "${SHORT_SECRET}" })));
    assert!(!e.contains("0123456789abcdef"), "{e}");
    let e = config_error(with_key(&["RS256"], json!({ "secret": "${HS_SECRET}" })));
    assert!(!e.contains(&hs_secret()), "{e}");
}

#[test]
fn torii_validate_does_no_io() {
    // Loading a config with an unreachable key set succeeds without touching the network.
    let started = Instant::now();
    let l = load(jwks_cfg("http://192.0.2.1:9/jwks", json!({})));
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(l.plugins.chains[0].names(), ["jwt"]);
}

/// A verified token is remembered (no second signature check), but `exp` still applies to
/// every request: a cached token stops working the second it expires.
#[tokio::test]
async fn verified_tokens_are_remembered_but_expiry_still_applies() {
    let l = load(json!({ "issuers": [issuer(&["HS256"], hmac_keys())], "leeway": "0s" }));
    let exp = now() + 2;
    let t = sign(
        jsonwebtoken::Algorithm::HS256,
        Some("hs-1"),
        &claims(json!({ "exp": exp })),
    );
    // A fractional `exp` (allowed by RFC 7519's NumericDate) expires from the cache too.
    let fractional = sign(
        jsonwebtoken::Algorithm::HS256,
        Some("hs-1"),
        &claims(json!({ "exp": exp as f64 + 0.5 })),
    );
    assert_eq!(accepted(&l, &fractional).await, "alice");
    assert_eq!(accepted(&l, &fractional).await, "alice");
    assert_eq!(accepted(&l, &t).await, "alice");
    assert_eq!(accepted(&l, &t).await, "alice", "served from the cache");
    // A tampered copy is a different token: verified (and refused) on its own.
    let mut tampered = t.clone();
    tampered.pop();
    tampered.push(if t.ends_with('A') { 'B' } else { 'A' });
    refused(&l, &tampered, "tampered while the original is cached").await;
    // Expiry is a property of time, not of the cache.
    while now() <= exp {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    refused(&l, &t, "expired while cached").await;
    while (now() as f64) < exp as f64 + 0.5 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    refused(&l, &fractional, "fractional exp expired while cached").await;
}

/// Test vectors of known ECDSA and EdDSA verification bugs: the "psychic signature" (r = s = 0,
/// CVE-2022-21449), r or s equal to the curve order, an all-ones signature, a DER-encoded
/// signature where JWS wants the raw r||s form, and an empty signature. Each must be refused.
#[tokio::test]
async fn degenerate_signatures_are_refused() {
    use base64::Engine as _;
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let l = load(all_asymmetric());
    let valid = tok("valid_ES256");
    let (signing_input, sig) = valid.rsplit_once('.').unwrap();
    let sig = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(sig)
        .unwrap();
    assert_eq!(sig.len(), 64);
    // The P-256 group order n.
    let n = hex_bytes("ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551");
    let mut r_is_n = n.clone();
    r_is_n.extend_from_slice(&sig[32..]);
    let mut s_is_n = sig[..32].to_vec();
    s_is_n.extend_from_slice(&n);
    let mut der = vec![0x30, 0x44, 0x02, 0x20];
    der.extend_from_slice(&sig[..32]);
    der.extend_from_slice(&[0x02, 0x20]);
    der.extend_from_slice(&sig[32..]);
    for (what, bad) in [
        ("psychic signature r = s = 0", vec![0u8; 64]),
        ("r = n", r_is_n),
        ("s = n", s_is_n),
        ("all ones", vec![0xff; 64]),
        ("DER instead of r||s", der),
        ("one byte", vec![0]),
    ] {
        refused(&l, &format!("{signing_input}.{}", b64(&bad)), what).await;
    }
    refused(&l, &format!("{signing_input}."), "empty signature").await;
    // EdDSA: an all-zero signature.
    let ed = tok("valid_EdDSA");
    let (ed_input, _) = ed.rsplit_once('.').unwrap();
    refused(
        &l,
        &format!("{ed_input}.{}", b64(&[0u8; 64])),
        "EdDSA zeros",
    )
    .await;
    // The untouched tokens still pass, so the refusals above are about the signatures.
    assert_eq!(accepted(&l, valid).await, "alice");
    assert_eq!(accepted(&l, ed).await, "alice");
}

fn hex_bytes(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// `hide_credentials` removes the token (header and query parameter) from the upstream
/// request; off by default.
#[tokio::test]
async fn hide_credentials_removes_the_token() {
    let run = |cfg: Value, uri: &'static str, auth: Option<String>| async move {
        let l = load(cfg);
        let mut b = Request::get(uri);
        if let Some(a) = auth {
            b = b.header("authorization", a);
        }
        let (mut parts, ()) = b.body(()).unwrap().into_parts();
        let mut ctx = context();
        let mut ran = torii_plugins::Progress::default();
        let r = l.plugins.chains[0]
            .on_request(&mut parts, &mut ctx, &mut ran)
            .await;
        assert!(matches!(r, Ok(None)), "{r:?}");
        parts
    };
    let t = tok("valid_RS256");
    let mut hide = all_asymmetric();
    hide["hide_credentials"] = json!(true);
    let p = run(hide.clone(), "/", Some(format!("Bearer {t}"))).await;
    assert!(p.headers.get("authorization").is_none(), "hidden");
    let mut q = hide.clone();
    q["query"] = json!("access_token");
    let uri: &'static str = Box::leak(format!("/x?a=1&access_token={t}").into_boxed_str());
    let p = run(q, uri, None).await;
    assert_eq!(p.uri.to_string(), "/x?a=1");
    let p = run(all_asymmetric(), "/", Some(format!("Bearer {t}"))).await;
    assert!(p.headers.get("authorization").is_some(), "kept by default");
}

/// The key set's server as a named upstream (`jwks_upstream` + `jwks_path`): fetched through
/// the upstream's target on the given path; an unknown name is a config error.
#[tokio::test]
async fn jwks_can_come_from_a_named_upstream() {
    let idp = Idp::start(jwks(&["rsa1"])).await;
    let catalog = Catalog::builtin().unwrap();
    let plugin = json!({ "issuers": [{ "issuer": ISS, "audiences": [AUD], "algorithms": ["RS256"],
        "jwks_upstream": "idp", "jwks_path": "/jwks" }] });
    let with_upstream = |name: &str| {
        yaml(&plugin, false).replace(
            "routes:\n",
            &format!(
                "upstreams:\n  - name: {name}\n    targets: [{{url: 'http://{}'}}]\nroutes:\n",
                idp.addr
            ),
        )
    };
    let l = torii_config::load_str("test.yaml", &with_upstream("idp"), &env, &catalog)
        .map_err(|d| d.to_string())
        .unwrap();
    assert_eq!(accepted(&l, tok("valid_RS256")).await, "alice");
    assert_eq!(idp.hits("/jwks"), 1);
    let err = torii_config::load_str("test.yaml", &with_upstream("other"), &env, &catalog)
        .unwrap_err()
        .to_string();
    assert!(err.contains("issuers[0].jwks_upstream"), "{err}");
    assert!(err.contains("no upstream is named `idp`"), "{err}");
}

/// A reload that moves the key set's upstream (same jwt settings, so the key cache is kept)
/// fetches from the new upstream: the kept state does not keep the old one alive.
#[tokio::test]
async fn a_reload_that_moves_the_jwks_upstream_fetches_from_the_new_one() {
    let old = Idp::start(jwks(&["rsa2"])).await;
    let new = Idp::start(jwks(&["rsa1"])).await;
    let catalog = Catalog::builtin().unwrap();
    let plugin = json!({ "issuers": [{ "issuer": ISS, "audiences": [AUD], "algorithms": ["RS256"],
        "jwks_upstream": "idp", "jwks_path": "/jwks" }], "jwks": {"refetch_interval": "0s"},
        "verified_cache_ttl": "0s" });
    let cfg = |idp: &Idp| {
        yaml(&plugin, false).replace(
            "routes:\n",
            &format!(
                "upstreams:\n  - name: idp\n    targets: [{{url: 'http://{}'}}]\nroutes:\n",
                idp.addr
            ),
        )
    };
    let first = torii_config::load_str("test.yaml", &cfg(&old), &env, &catalog).unwrap();
    refused(&first, tok("valid_RS256"), "rsa1 is not in the old set").await;
    assert_eq!(old.hits("/jwks"), 1);
    let second = torii_config::load_str("test.yaml", &cfg(&new), &env, &catalog).unwrap();
    assert_eq!(accepted(&second, tok("valid_RS256")).await, "alice");
    assert_eq!(new.hits("/jwks"), 1, "fetched from the new upstream");
    assert_eq!(old.hits("/jwks"), 1);
}
