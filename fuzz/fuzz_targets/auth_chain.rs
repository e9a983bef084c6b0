//! `auth_chain`: fuzzer-made requests through a real chain of `cors`, `key_auth` and `jwt`
//! (HS256 and ES256 issuers), built through the config load path with 100 consumers.
//!
//! The input is split into header values (`Authorization`, `X-Api-Key`, `Origin`,
//! `Access-Control-Request-Method`, `Cookie`) and a query string, each optionally replaced by a
//! known-good credential the fuzzer can then mutate. Checks:
//! - nothing panics;
//! - every refusal is 401 (with a challenge), 403 or 503, never anything else;
//! - a consumer is only ever set when the request carried a known-good credential verbatim:
//!   the exact API key, or one of the valid tokens (a mutated token that verified would be a
//!   forgery; non-canonical base64 variants must be refused too).
#![no_main]

use base64::Engine as _;
use libfuzzer_sys::fuzz_target;
use std::sync::LazyLock;
use torii_core::{ClientAddr, ErrorKind, RequestContext, RequestId};

const KEY: &str = "fuzz-key-0123456789abcdef";
const SECRET: &str = "fuzz-secret-0123456789abcdef0123456789abcdef";

struct Setup {
    loaded: torii_config::Loaded<torii_plugins::Compiled>,
    tokens: Vec<String>,
    rt: tokio::runtime::Runtime,
}

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

static SETUP: LazyLock<Setup> = LazyLock::new(|| {
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    let es = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).unwrap();
    let p = es.public_key().as_ref().to_vec();
    let jwk = serde_json::json!({"kty": "EC", "crv": "P-256", "x": b64(&p[1..33]), "y": b64(&p[33..]), "kid": "es"});
    let mut yaml = String::from("listeners:\n  - name: p\n    bind: 127.0.0.1:0\nconsumers:\n");
    for i in 0..100 {
        let key = if i == 7 {
            KEY.to_string()
        } else {
            format!("other-key-{i}")
        };
        yaml.push_str(&format!(
            "  - name: c{i}\n    keys: ['{}']\n",
            torii_plugins::consumers::format_key_hash(key.as_bytes())
        ));
    }
    yaml.push_str(&format!(
        "routes:\n  - name: r\n    match: {{path: /}}\n    direct_response: {{}}\n    plugins:\n      cors: {{allow_origins: ['https://app.example.com', 'https://*.example.org'], allow_credentials: true}}\n      key_auth: {{query_names: [apikey]}}\n      jwt:\n        cookie: session\n        issuers:\n          - {{issuer: hs, algorithms: [HS256], keys: [{{secret: '{SECRET}'}}]}}\n          - {{issuer: es, algorithms: [ES256], keys: [{{jwk: {jwk}}}]}}\n"
    ));
    let catalog = torii_plugins::Catalog::builtin().unwrap();
    let loaded = torii_config::load_str("fuzz.yaml", &yaml, &|_: &str| None, &catalog).unwrap();
    let claims = |iss: &str| {
        b64(
            serde_json::json!({"iss": iss, "sub": "c3", "exp": 4_102_444_800u64, "scope": "a b"})
                .to_string()
                .as_bytes(),
        )
    };
    let hs_input = format!(
        "{}.{}",
        b64(br#"{"alg":"HS256","typ":"JWT"}"#),
        claims("hs")
    );
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, SECRET.as_bytes());
    let hs = format!(
        "{hs_input}.{}",
        b64(aws_lc_rs::hmac::sign(&key, hs_input.as_bytes()).as_ref())
    );
    let es_input = format!("{}.{}", b64(br#"{"alg":"ES256","kid":"es"}"#), claims("es"));
    let es_tok = format!(
        "{es_input}.{}",
        b64(es.sign(&rng, es_input.as_bytes()).unwrap().as_ref())
    );
    Setup {
        loaded,
        tokens: vec![hs, es_tok],
        rt: tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap(),
    }
});

fn ctx() -> RequestContext {
    RequestContext::new(
        RequestId(http::HeaderValue::from_static("fuzz")),
        ClientAddr("127.0.0.1".parse().unwrap()),
        "127.0.0.1:1".parse().unwrap(),
        "p".into(),
        std::time::Instant::now(),
    )
}

fuzz_target!(|data: &[u8]| {
    let s = &*SETUP;
    let mut fields = data.split(|b| *b == 0xff);
    let mut next = || fields.next().unwrap_or(&[]).to_vec();
    let (selector, auth, apikey, origin, acrm, cookie, query) =
        (next(), next(), next(), next(), next(), next(), next());
    let pick = |i: usize, raw: Vec<u8>| -> Vec<u8> {
        match selector.get(i).copied().unwrap_or(0) % 4 {
            1 if i == 0 => format!("Bearer {}", s.tokens[0]).into_bytes(),
            2 if i == 0 => format!("Bearer {}", s.tokens[1]).into_bytes(),
            1 if i == 1 => KEY.as_bytes().to_vec(),
            _ => raw,
        }
    };
    let auth = pick(0, auth);
    let apikey = pick(1, apikey);
    let mut b = http::Request::builder().method(if selector.get(2).is_some_and(|m| m % 2 == 1) {
        "OPTIONS"
    } else {
        "GET"
    });
    let q =
        String::from_utf8_lossy(&query).replace(|c: char| !c.is_ascii_graphic() || c == '#', "");
    b = b.uri(if q.is_empty() {
        "/".to_string()
    } else {
        format!("/?{q}")
    });
    for (name, value) in [
        ("authorization", &auth),
        ("x-api-key", &apikey),
        ("origin", &origin),
        ("access-control-request-method", &acrm),
        ("cookie", &cookie),
    ] {
        if let Ok(v) = http::HeaderValue::from_bytes(value)
            && !value.is_empty()
        {
            b = b.header(name, v);
        }
    }
    let Ok(req) = b.body(()) else { return };
    let (mut parts, ()) = req.into_parts();
    let sent = parts.clone();
    let mut cx = ctx();
    let mut ran = torii_plugins::Progress::default();
    let chain = &s.loaded.plugins.chains[0];
    let result = s.rt.block_on(chain.on_request(&mut parts, &mut cx, &mut ran));
    match &result {
        Ok(_) => {}
        Err(e) => match &e.kind {
            ErrorKind::Unauthorized(Some(_))
            | ErrorKind::Forbidden
            | ErrorKind::AuthUnavailable => {}
            other => panic!("unexpected refusal {other:?}"),
        },
    }
    if let Some(c) = &cx.consumer {
        let text = |h: &str| {
            sent.headers
                .get(h)
                .map(|v| v.as_bytes().to_vec())
                .unwrap_or_default()
        };
        let carried_key = text("x-api-key") == KEY.as_bytes()
            || sent.uri.query().is_some_and(|q| q.contains(KEY));
        let carried_token = s.tokens.iter().any(|t| {
            let a = text("authorization");
            a.len() >= t.len() && a.windows(t.len()).any(|w| w == t.as_bytes())
                || text("cookie")
                    .windows(t.len().max(1))
                    .any(|w| w == t.as_bytes())
        });
        assert!(
            carried_key || carried_token,
            "consumer {} set without a known credential: {sent:?}",
            c.name
        );
    }
    // The response phase must not panic either.
    let mut resp = http::Response::new(()).into_parts().0;
    chain.on_response(&mut resp, &cx, &ran);
});
