//! Identity propagation with gateway-signed tokens: upstreams that ask for it receive a
//! short-lived JWT (ES256 or EdDSA) naming the consumer, verifiable with the JWKS the gateway
//! publishes. Verified here with jsonwebtoken, independently of the gateway's own signer.
#![allow(clippy::unwrap_used)]

mod support;

use http::{Request, StatusCode};
use http_body_util::BodyExt;
use support::*;
use torii_plugins::consumers::format_key_hash;

const KEY: &str = "identity-test-key-0123456789";

fn write_key(name: &str, alg: &'static rcgen::SignatureAlgorithm) -> String {
    let dir = std::env::temp_dir().join(format!("torii-identity-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    let pair = rcgen::KeyPair::generate_for(alg).unwrap();
    std::fs::write(&path, pair.serialize_pem()).unwrap();
    path.display().to_string()
}

async fn get(url: String, headers: &[(&str, &str)]) -> (StatusCode, http::HeaderMap, bytes::Bytes) {
    let mut b = Request::get(url);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let resp = h1_client()
        .request(b.body(full("")).unwrap())
        .await
        .unwrap();
    let (p, body) = resp.into_parts();
    (
        p.status,
        p.headers,
        body.collect().await.unwrap().to_bytes(),
    )
}

fn verify(token: &str, jwks: &serde_json::Value, aud: &str) -> serde_json::Value {
    let _ = jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER.install_default();
    let header = jsonwebtoken::decode_header(token).unwrap();
    let kid = header.kid.clone().unwrap();
    let set: jsonwebtoken::jwk::JwkSet = serde_json::from_value(jwks.clone()).unwrap();
    let jwk = set.find(&kid).unwrap();
    let key = jsonwebtoken::DecodingKey::from_jwk(jwk).unwrap();
    let mut v = jsonwebtoken::Validation::new(header.alg);
    v.set_audience(&[aud]);
    v.set_issuer(&["https://gateway.test"]);
    jsonwebtoken::decode::<serde_json::Value>(token, &key, &v)
        .unwrap()
        .claims
}

#[tokio::test]
async fn upstreams_receive_verifiable_identity_tokens() {
    let ec = write_key("ec.pem", &rcgen::PKCS_ECDSA_P256_SHA256);
    let ed = write_key("ed.pem", &rcgen::PKCS_ED25519);
    let up = echo_upstream(false).await;
    let yaml = config(&format!(
        "identity:\n  token:\n    issuer: https://gateway.test\n    ttl: 2m\n    keys:\n      - {{kid: k-ec, algorithm: ES256, private_key: '{ec}'}}\n      - {{kid: k-ed, algorithm: EdDSA, private_key: '{ed}'}}\nconsumers:\n  - name: alice\n    id: u-7\n    groups: [staff]\n    keys: ['{hash}']\nupstreams:\n  - name: orders\n    targets: [{{url: 'http://{a}'}}]\n    identity_token: {{audience: orders}}\n  - name: billing\n    targets: [{{url: 'http://{a}'}}]\n    identity_token: {{audience: billing, key: k-ed}}\n  - name: plain\n    targets: [{{url: 'http://{a}'}}]\nroutes:\n  - name: orders\n    match: {{path_prefix: /orders}}\n    upstream: orders\n    plugins: {{key_auth: {{}}}}\n  - name: billing\n    match: {{path_prefix: /billing}}\n    upstream: billing\n    plugins: {{key_auth: {{}}}}\n  - name: composed\n    match: {{path: /composed}}\n    plugins: {{key_auth: {{}}}}\n    compose:\n      calls:\n        o: {{upstream: orders, path: /o}}\n        p: {{upstream: plain, path: /p}}\n  - name: plain\n    match: {{path_prefix: /}}\n    upstream: plain\n",
        hash = format_key_hash(KEY.as_bytes()),
        a = up.addr
    ));
    let gw = gateway(&yaml).await;
    let base = format!("http://{}", addr(&gw).await);

    let (s, h, body) = get(format!("{base}/.well-known/torii/jwks.json"), &[]).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(h["content-type"], "application/jwk-set+json");
    let jwks: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let kids: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert_eq!(kids, ["k-ec", "k-ed"]);
    assert!(
        jwks.to_string().find("\"d\"").is_none(),
        "no private parts in the JWKS"
    );

    let auth = [("x-api-key", KEY), ("x-identity-token", "forged")];
    let (s, _, body) = get(format!("{base}/orders/1"), &auth).await;
    assert_eq!(s, StatusCode::OK);
    let token = json(&body)["headers"]["x-identity-token"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(token, "forged");
    let claims = verify(&token, &jwks, "orders");
    assert_eq!(claims["sub"], "u-7");
    assert_eq!(claims["name"], "alice");
    assert_eq!(claims["groups"], serde_json::json!(["staff"]));
    let ttl = claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap();
    assert_eq!(ttl, 120);
    assert_eq!(
        jsonwebtoken::decode_header(&token).unwrap().alg,
        jsonwebtoken::Algorithm::ES256
    );
    // Reused while fresh: steady traffic does not sign per request.
    let (_, _, body) = get(format!("{base}/orders/2"), &auth).await;
    assert_eq!(json(&body)["headers"]["x-identity-token"], token.as_str());

    // Another upstream: its own audience and key.
    let (_, _, body) = get(format!("{base}/billing"), &auth).await;
    let other = json(&body)["headers"]["x-identity-token"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        jsonwebtoken::decode_header(&other).unwrap().alg,
        jsonwebtoken::Algorithm::EdDSA
    );
    assert_eq!(verify(&other, &jwks, "billing")["sub"], "u-7");

    // A composition's calls carry the token of each call's upstream.
    let (s, _, body) = get(format!("{base}/composed"), &auth).await;
    assert_eq!(s, StatusCode::OK);
    let v = json(&body);
    let t = v["o"]["headers"]["x-identity-token"].as_str().unwrap();
    assert_eq!(verify(t, &jwks, "orders")["sub"], "u-7");
    assert_eq!(v["o"]["headers"]["x-consumer-name"], "alice");
    assert!(v["p"]["headers"].get("x-identity-token").is_none());

    // An upstream that did not ask gets none, and a client-sent one never passes.
    let (_, _, body) = get(format!("{base}/plain"), &[("x-identity-token", "forged")]).await;
    assert!(json(&body)["headers"].get("x-identity-token").is_none());
}

#[tokio::test]
async fn identity_token_config_errors() {
    let yaml = config(
        "identity:\n  token:\n    issuer: https://gateway.test\n    keys:\n      - {kid: k1, algorithm: ES256, private_key: /nonexistent/key.pem}\n    signing_key: k9\nupstreams:\n  - name: u\n    targets: [{url: 'http://127.0.0.1:1'}]\n    identity_token: {audience: a, key: nope}\nroutes:\n  - name: r\n    match: {path: /}\n    upstream: u\n",
    );
    let err = load_str("t.yaml", &yaml).unwrap_err().to_string();
    for needle in [
        "identity.token.keys[0].private_key",
        "identity.token.signing_key",
    ] {
        assert!(err.contains(needle), "missing {needle}:\n{err}");
    }
}
