//! Authentication plugins in isolation: the request phase of a route's chain for key_auth, jwt
//! HS256 and jwt ES256 (with the default verified-token cache, and without it) with 10,000 consumers and 1,000 distinct credentials cycled, and the ES256
//! signature verification alone (aws-lc-rs), so the plugin's own overhead can be told apart from
//! the cryptography. `cargo bench -p torii-plugins --bench auth`; figures in
//! docs/performance.md.
#![allow(clippy::unwrap_used)]

use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair,
    UnparsedPublicKey,
};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;
use std::sync::Arc;
use torii_core::{ClientAddr, RequestContext, RequestId};
use torii_plugins::Catalog;
use torii_plugins::consumers::format_key_hash;

const CONSUMERS: usize = 10_000;
const DISTINCT: usize = 1_000;
const SECRET: &str = "bench-secret-0123456789abcdef0123456789abcdef0123456789abcdef0123";

fn ctx() -> RequestContext {
    RequestContext::new(
        RequestId(http::HeaderValue::from_static("bench")),
        ClientAddr("127.0.0.1".parse().unwrap()),
        "127.0.0.1:1".parse().unwrap(),
        "p".into(),
        std::time::Instant::now(),
    )
}

fn sign(
    header: &serde_json::Value,
    claims: &serde_json::Value,
    f: impl Fn(&[u8]) -> Vec<u8>,
) -> String {
    let mut t = format!(
        "{}.{}",
        B64.encode(header.to_string()),
        B64.encode(claims.to_string())
    );
    let sig = f(t.as_bytes());
    t.push('.');
    t.push_str(&B64.encode(sig));
    t
}

fn bench(c: &mut Criterion) {
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    let es = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).unwrap();
    let point = es.public_key().as_ref().to_vec();
    let jwk = serde_json::json!({"kty": "EC", "crv": "P-256", "x": B64.encode(&point[1..33]), "y": B64.encode(&point[33..]), "kid": "es"});

    let mut yaml = String::from("listeners:\n  - name: p\n    bind: 127.0.0.1:0\nconsumers:\n");
    let mut keys = Vec::new();
    for i in 0..CONSUMERS {
        let key = format!("bench-key-{i:05}-0123456789abcdef");
        yaml.push_str(&format!(
            "  - name: c{i}\n    keys: ['{}']\n",
            format_key_hash(key.as_bytes())
        ));
        if i % (CONSUMERS / DISTINCT) == 0 {
            keys.push((i, key));
        }
    }
    yaml.push_str(&format!(
        "routes:\n  - name: key\n    match: {{path: /key}}\n    direct_response: {{}}\n    plugins: {{key_auth: {{}}}}\n  - name: hs\n    match: {{path: /hs}}\n    direct_response: {{}}\n    plugins:\n      jwt: {{issuers: [{{issuer: bench, algorithms: [HS256], keys: [{{secret: '{SECRET}'}}]}}]}}\n  - name: es\n    match: {{path: /es}}\n    direct_response: {{}}\n    plugins:\n      jwt: {{issuers: [{{issuer: bench, algorithms: [ES256], keys: [{{jwk: {jwk}}}]}}]}}\n  - name: es0\n    match: {{path: /es0}}\n    direct_response: {{}}\n    plugins:\n      jwt: {{verified_cache_ttl: 0s, issuers: [{{issuer: bench, algorithms: [ES256], keys: [{{jwk: {jwk}}}]}}]}}\n"
    ));
    let catalog = Catalog::builtin().unwrap();
    let loaded = torii_config::load_str("bench.yaml", &yaml, &|_: &str| None, &catalog).unwrap();
    let chains = &loaded.plugins.chains;

    let exp = 4_102_444_800u64;
    let hs: Vec<String> = keys
        .iter()
        .map(|(i, _)| {
            let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, SECRET.as_bytes());
            sign(
                &serde_json::json!({"alg": "HS256", "typ": "JWT"}),
                &serde_json::json!({"iss": "bench", "sub": format!("c{i}"), "exp": exp}),
                |m| aws_lc_rs::hmac::sign(&key, m).as_ref().to_vec(),
            )
        })
        .collect();
    let es_tokens: Vec<String> = keys
        .iter()
        .map(|(i, _)| {
            sign(
                &serde_json::json!({"alg": "ES256", "typ": "JWT", "kid": "es"}),
                &serde_json::json!({"iss": "bench", "sub": format!("c{i}"), "exp": exp}),
                |m| es.sign(&rng, m).unwrap().as_ref().to_vec(),
            )
        })
        .collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();

    let mut run = |name: &str,
                   chain: &Arc<torii_plugins::Chain>,
                   header: &'static str,
                   values: Vec<String>| {
        let requests: Vec<http::request::Parts> = values
            .iter()
            .map(|v| {
                http::Request::get("/")
                    .header(header, v)
                    .body(())
                    .unwrap()
                    .into_parts()
                    .0
            })
            .collect();
        let mut i = 0;
        c.bench_function(name, |b| {
            b.iter(|| {
                i = (i + 1) % requests.len();
                let mut parts = requests[i].clone();
                let mut cx = ctx();
                let mut ran = torii_plugins::Progress::default();
                let r = rt.block_on(chain.on_request(&mut parts, &mut cx, &mut ran));
                assert!(matches!(r, Ok(None)) && cx.consumer.is_some());
                black_box(cx);
            })
        });
    };
    run(
        "key_auth/10k_consumers",
        &chains[0],
        "x-api-key",
        keys.iter().map(|(_, k)| k.clone()).collect(),
    );
    run(
        "jwt_hs256/10k_consumers",
        &chains[1],
        "authorization",
        hs.iter().map(|t| format!("Bearer {t}")).collect(),
    );
    run(
        "jwt_es256/10k_consumers",
        &chains[2],
        "authorization",
        es_tokens.iter().map(|t| format!("Bearer {t}")).collect(),
    );
    run(
        "jwt_es256_uncached/10k_consumers",
        &chains[3],
        "authorization",
        es_tokens.iter().map(|t| format!("Bearer {t}")).collect(),
    );

    // The ES256 verification alone, for the budget "verification + 8 us".
    let token = &es_tokens[0];
    let (signed, sig) = token.rsplit_once('.').unwrap();
    let sig = B64.decode(sig).unwrap();
    let public = UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, point.clone());
    c.bench_function("es256_verify_only", |b| {
        b.iter(|| {
            public
                .verify(black_box(signed.as_bytes()), black_box(&sig))
                .unwrap()
        })
    });
    // The same with the key parsed once, as the plugin keeps it.
    let parsed =
        aws_lc_rs::signature::ParsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, point.clone())
            .unwrap();
    c.bench_function("es256_verify_only_parsed_key", |b| {
        b.iter(|| {
            parsed
                .verify_sig(black_box(signed.as_bytes()), black_box(&sig))
                .unwrap()
        })
    });
    // The baseline the plugin figures include: cloning the request head and a fresh context.
    let parts = http::Request::get("/")
        .header("authorization", format!("Bearer {token}"))
        .body(())
        .unwrap()
        .into_parts()
        .0;
    c.bench_function("baseline_clone_parts_and_ctx", |b| {
        b.iter(|| {
            black_box(parts.clone());
            black_box(ctx());
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
