#![allow(clippy::unwrap_used)]
//! Unit tests of the pieces; tests/jwt.rs drives the whole plugin through the load path.

use super::config::{Alg, Family};
use super::jwks::{self, Settings};
use super::keys::{self, Material};
use super::verify::{self, Rules};
use serde_json::{Map, Value, json};
use std::time::Duration;

fn fixture(path: &str) -> String {
    let p = format!("{}/tests/fixtures/jwt/{path}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{p}: {e}"))
}

fn token(name: &str) -> String {
    let v: Value = serde_json::from_str(&fixture("tokens.json")).unwrap();
    v["tokens"][name].as_str().unwrap().to_string()
}

fn jwk(name: &str) -> Map<String, Value> {
    let v: Value = serde_json::from_str(&fixture("jwks.json")).unwrap();
    v[name].as_object().unwrap().clone()
}

fn obj(v: Value) -> Map<String, Value> {
    v.as_object().unwrap().clone()
}

#[test]
fn algorithm_names_are_exact() {
    for a in Alg::ALL {
        assert_eq!(Alg::from_name(a.name()), Some(a));
    }
    for bad in [
        "none", "None", "NONE", "", "hs256", "HS256 ", " RS256", "RS1", "ES512", "Ed25519",
        "HS256\0",
    ] {
        assert_eq!(Alg::from_name(bad), None, "{bad:?}");
    }
    assert_eq!(Alg::Ps384.family(), Family::Rsa);
    assert_eq!(Alg::Es384.family(), Family::P384);
    assert!(Alg::Hs512.is_hmac() && !Alg::EdDsa.is_hmac());
}

#[test]
fn parse_splits_and_decodes() {
    let t = verify::parse(&token("valid_RS256")).unwrap();
    assert_eq!(t.alg, "RS256");
    assert_eq!(t.kid.as_deref(), Some("rsa-1"));
    assert_eq!(t.claims["sub"], "alice");
    assert_eq!(t.signature.len(), 256);
    assert_eq!(t.signing_input.matches('.').count(), 1);
    assert!(token("valid_RS256").starts_with(&t.signing_input));
    // `jwk` / `jku` headers are parsed past, not used.
    let t = verify::parse(&token("embedded_jwk")).unwrap();
    assert_eq!(t.kid.as_deref(), Some("attacker"));
}

#[test]
fn parse_refuses_malformed_tokens() {
    let b = |v: Value| {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    let claims = b(json!({ "sub": "a" }));
    let cases = [
        String::new(),
        "abc".into(),
        "a.b".into(),
        "a.b.c.d".into(),
        ".b.c".into(),
        "a..c".into(),
        format!("{}.{claims}.", b(json!({ "alg": "RS256" }))), // no signature
        format!("{}.{claims}.c2ln", b(json!({ "typ": "JWT" }))), // no alg
        format!("{}.{claims}.c2ln", b(json!({ "alg": 1 }))),
        format!("{}.{claims}.c2ln", b(json!({ "alg": "RS256", "kid": 7 }))),
        format!(
            "{}.{claims}.c2ln",
            b(json!({ "alg": "RS256", "crit": ["exp"] }))
        ),
        format!("{}.{claims}.c2ln", b(json!(["alg", "RS256"]))),
        format!("{}.{}.c2ln", b(json!({ "alg": "RS256" })), b(json!([1, 2]))),
        format!("{}.{}.c2ln", b(json!({ "alg": "RS256" })), b(json!("text"))),
        format!("{}.{claims}.c2ln==", b(json!({ "alg": "RS256" }))), // padding
        format!("{}.{claims}.c2l+", b(json!({ "alg": "RS256" }))),   // standard alphabet
        format!("{}.{claims}.c2l", b(json!({ "alg": "RS256" }))),    // non-canonical last char
        format!("{}=.{claims}.c2ln", b(json!({ "alg": "RS256" }))),
        "e30.e30.e30".into(),
    ];
    for c in &cases {
        assert!(verify::parse(c).is_err(), "{c}");
    }
    // Control: the same shape with everything right parses.
    assert!(verify::parse(&format!("{}.{claims}.c2ln", b(json!({ "alg": "RS256" })))).is_ok());
}

#[test]
fn parse_survives_arbitrary_bytes() {
    let mut seed: u64 = 42;
    let mut next = || {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 33) as u32
    };
    let base = token("valid_EdDSA");
    for _ in 0..2000 {
        let mut bytes = base.clone().into_bytes();
        let n = 1 + next() as usize % 8;
        for _ in 0..n {
            let i = next() as usize % bytes.len();
            bytes[i] = (next() % 128) as u8;
        }
        let cut = next() as usize % (bytes.len() + 1);
        let s = String::from_utf8_lossy(&bytes[..cut]).into_owned();
        let _ = verify::parse(&s);
    }
}

fn rules<'a>(audiences: &'a [String], required: &'a [String], leeway: u64) -> Rules<'a> {
    Rules {
        issuer: "https://i",
        audiences,
        leeway,
        require_exp: true,
        required,
    }
}

#[test]
fn time_claims_have_exact_boundaries() {
    let c = |v: Value| {
        let mut m = obj(json!({ "iss": "https://i" }));
        m.extend(obj(v));
        m
    };
    let r0 = rules(&[], &[], 0);
    let r30 = rules(&[], &[], 30);
    // exp: valid strictly before exp (+ leeway).
    assert!(verify::check_claims(&c(json!({ "exp": 1001 })), &r0, 1000).is_ok());
    assert_eq!(
        verify::check_claims(&c(json!({ "exp": 1000 })), &r0, 1000),
        Err("expired")
    );
    assert!(verify::check_claims(&c(json!({ "exp": 971 })), &r30, 1000).is_ok());
    assert_eq!(
        verify::check_claims(&c(json!({ "exp": 970 })), &r30, 1000),
        Err("expired")
    );
    assert!(verify::check_claims(&c(json!({ "exp": 1000.5 })), &r0, 1000).is_ok());
    assert!(verify::check_claims(&c(json!({ "exp": "2000" })), &r0, 1000).is_err());
    assert!(verify::check_claims(&c(json!({ "exp": true })), &r0, 1000).is_err());
    assert_eq!(
        verify::check_claims(&c(json!({})), &r0, 1000),
        Err("no `exp` claim")
    );
    let lax = Rules {
        require_exp: false,
        ..rules(&[], &[], 0)
    };
    assert!(verify::check_claims(&c(json!({})), &lax, 1000).is_ok());
    // nbf: valid from nbf (- leeway).
    assert!(verify::check_claims(&c(json!({ "exp": 5000, "nbf": 1000 })), &r0, 1000).is_ok());
    assert!(verify::check_claims(&c(json!({ "exp": 5000, "nbf": 1001 })), &r0, 1000).is_err());
    assert!(verify::check_claims(&c(json!({ "exp": 5000, "nbf": 1030 })), &r30, 1000).is_ok());
    assert!(verify::check_claims(&c(json!({ "exp": 5000, "nbf": 1031 })), &r30, 1000).is_err());
    assert!(verify::check_claims(&c(json!({ "exp": 5000, "nbf": [1] })), &r0, 1000).is_err());
}

#[test]
fn issuer_audience_and_required_claims() {
    let auds = vec!["api".to_string(), "web".to_string()];
    let req = vec!["tenant".to_string()];
    let r = rules(&auds, &req, 0);
    let ok = json!({ "iss": "https://i", "exp": 5000, "aud": "web", "tenant": "t" });
    assert!(verify::check_claims(&obj(ok.clone()), &r, 1000).is_ok());
    let with = |k: &str, v: Value| {
        let mut m = obj(ok.clone());
        if v.is_null() {
            m.remove(k);
        } else {
            m.insert(k.into(), v);
        }
        m
    };
    assert!(verify::check_claims(&with("aud", json!(["x", "api"])), &r, 1000).is_ok());
    assert_eq!(
        verify::check_claims(&with("aud", json!(["x", 1])), &r, 1000),
        Err("wrong audience")
    );
    assert_eq!(
        verify::check_claims(&with("aud", json!("API")), &r, 1000),
        Err("wrong audience")
    );
    assert_eq!(
        verify::check_claims(&with("aud", Value::Null), &r, 1000),
        Err("wrong audience")
    );
    assert_eq!(
        verify::check_claims(&with("iss", json!("https://i/")), &r, 1000),
        Err("wrong issuer")
    );
    assert_eq!(
        verify::check_claims(&with("iss", json!(["https://i"])), &r, 1000),
        Err("wrong issuer")
    );
    assert_eq!(
        verify::check_claims(&with("tenant", Value::Null), &r, 1000),
        Err("a required claim is missing")
    );
    let mut null_tenant = obj(ok.clone());
    null_tenant.insert("tenant".into(), Value::Null);
    assert!(verify::check_claims(&null_tenant, &r, 1000).is_err());
}

#[test]
fn scopes_and_consumer_ids() {
    assert_eq!(
        verify::scopes(&obj(json!({ "scope": " a  b\tc " }))),
        ["a", "b", "c"]
    );
    assert_eq!(
        verify::scopes(&obj(json!({ "scp": ["x", 1, "y"] }))),
        ["x", "y"]
    );
    assert_eq!(verify::scopes(&obj(json!({ "scp": "x y" }))), ["x", "y"]);
    assert_eq!(
        verify::scopes(&obj(json!({ "scope": "a", "scp": ["x"] }))),
        ["a"]
    );
    assert!(verify::scopes(&obj(json!({ "scope": 5 }))).is_empty());
    assert!(verify::scopes(&obj(json!({}))).is_empty());
    let id = |v: Value| verify::claim_id(&obj(json!({ "sub": v })), "sub");
    assert_eq!(id(json!("alice")).as_deref(), Some("alice"));
    assert_eq!(id(json!(12345)).as_deref(), Some("12345"));
    assert_eq!(id(json!("")), None);
    assert_eq!(id(json!(1.5)), None);
    assert_eq!(id(json!(true)), None);
    assert_eq!(id(json!(["alice"])), None);
    assert_eq!(verify::claim_id(&obj(json!({})), "sub"), None);
}

fn settings(min: u64, max: u64) -> Settings {
    Settings {
        min_ttl: Duration::from_secs(min),
        max_ttl: Duration::from_secs(max),
        refetch_interval: Duration::from_secs(30),
        timeout: Duration::from_secs(5),
        max_size: 1 << 20,
    }
}

#[test]
fn key_set_lifetime_follows_cache_control_within_bounds() {
    let s = settings(300, 86400);
    let ttl = |cc: &[&str]| {
        let mut h = http::HeaderMap::new();
        for v in cc {
            h.append(http::header::CACHE_CONTROL, v.parse().unwrap());
        }
        jwks::ttl(&h, &s).as_secs()
    };
    assert_eq!(ttl(&[]), 300);
    assert_eq!(ttl(&["max-age=3600"]), 3600);
    assert_eq!(ttl(&["public, MAX-AGE=7200, must-revalidate"]), 7200);
    assert_eq!(ttl(&["max-age=10"]), 300, "clamped up");
    assert_eq!(ttl(&["max-age=999999999"]), 86400, "clamped down");
    assert_eq!(ttl(&["no-store"]), 300);
    assert_eq!(ttl(&["max-age=3600, no-cache"]), 300);
    assert_eq!(ttl(&["no-cache", "max-age=3600"]), 300);
    assert_eq!(ttl(&["max-age=abc"]), 300);
    assert_eq!(ttl(&["max-age=-5"]), 300);
    assert_eq!(ttl(&["private", "max-age=900"]), 900);
}

#[test]
fn key_sets_keep_usable_keys_only() {
    let algs = [Alg::Rs256, Alg::Es256];
    let body = json!({ "keys": [
        jwk("rsa1"), jwk("ec256"), jwk("ec384"), jwk("ed25519"), jwk("hs"),
        { "kty": "RSA", "use": "enc", "n": jwk("rsa2")["n"], "e": "AQAB", "kid": "enc" },
        { "kty": "RSA", "key_ops": ["encrypt"], "n": jwk("rsa2")["n"], "e": "AQAB", "kid": "ops" },
        { "kty": "RSA", "alg": "RSA-OAEP", "n": jwk("rsa2")["n"], "e": "AQAB", "kid": "oaep" },
        { "kty": "RSA", "n": "AQAB", "kid": "tiny" },
        42, null, "x",
    ] });
    let set = jwks::parse_set(body.to_string().as_bytes(), &algs).unwrap();
    let kids: Vec<&str> = set.keys.iter().filter_map(|k| k.kid.as_deref()).collect();
    assert_eq!(kids, ["rsa-1", "ec-256"]);
    assert_eq!(set.keys[0].algorithms(), [Alg::Rs256]);
    for bad in [
        "".to_string(),
        "[]".into(),
        "{}".into(),
        r#"{"keys": {}}"#.into(),
        r#"{"keys": []}"#.into(),
        json!({ "keys": [jwk("ec384")] }).to_string(),
        json!({ "keys": [jwk("hs")] }).to_string(),
    ] {
        assert!(jwks::parse_set(bad.as_bytes(), &algs).is_err(), "{bad}");
    }
}

#[test]
fn jwk_parsing() {
    assert!(keys::from_jwk(&jwk("rsa1")).unwrap().is_some());
    let with = |name: &str, k: &str, v: Value| {
        let mut j = jwk(name);
        if v.is_null() {
            j.remove(k);
        } else {
            j.insert(k.into(), v);
        }
        keys::from_jwk(&j)
    };
    assert!(with("rsa1", "use", json!("enc")).unwrap().is_none());
    assert!(with("rsa1", "key_ops", json!(["sign"])).unwrap().is_none());
    assert!(with("rsa1", "key_ops", json!("verify")).unwrap().is_none());
    assert!(with("rsa1", "alg", json!("RSA-OAEP")).is_err());
    assert!(with("rsa1", "alg", json!("none")).is_err());
    assert!(with("rsa1", "kty", Value::Null).is_err());
    assert!(with("rsa1", "kty", json!("rsa")).is_err());
    assert!(with("rsa1", "n", json!("***")).is_err());
    assert!(with("rsa1", "kid", json!(5)).is_err());
    assert!(
        with("ec256", "crv", json!("P-384")).is_err(),
        "x/y lengths must fit the curve"
    );
    assert!(with("ec256", "crv", json!("secp256k1")).is_err());
    assert!(with("ec256", "y", Value::Null).is_err());
    assert!(with("ed25519", "crv", json!("X25519")).is_err());
    assert!(with("ed25519", "x", json!("AAAA")).is_err());
    // Padding is tolerated in JWK members (some publishers add it).
    let mut padded = jwk("rsa1");
    let n = format!("{}==", padded["n"].as_str().unwrap());
    padded.insert("n".into(), json!(n));
    assert!(keys::from_jwk(&padded).unwrap().is_some());
}

#[test]
fn hmac_secrets_need_the_hash_length() {
    let build = |len: usize, algs: &[Alg]| {
        keys::build(None, Material::Secret(vec![7; len]), None, algs).map(|_| ())
    };
    assert!(
        build(31, &[Alg::Hs256])
            .unwrap_err()
            .contains("31 bytes; HS256 needs at least 32")
    );
    assert!(build(32, &[Alg::Hs256]).is_ok());
    assert!(build(47, &[Alg::Hs384]).is_err());
    assert!(build(48, &[Alg::Hs384]).is_ok());
    assert!(
        build(63, &[Alg::Hs256, Alg::Hs512])
            .unwrap_err()
            .contains("HS512")
    );
    assert!(build(64, &[Alg::Hs256, Alg::Hs384, Alg::Hs512]).is_ok());
    assert!(
        build(64, &[Alg::Rs256])
            .unwrap_err()
            .contains("HMAC secret")
    );
}

#[test]
fn keys_serve_only_their_family_and_pin() {
    let rsa = || keys::from_pem(&fixture("keys/rsa1.pub.pem")).unwrap();
    let all = Alg::ALL;
    let k = keys::build(Some("r".into()), rsa(), None, &all).unwrap();
    assert_eq!(
        k.algorithms(),
        [
            Alg::Rs256,
            Alg::Rs384,
            Alg::Rs512,
            Alg::Ps256,
            Alg::Ps384,
            Alg::Ps512
        ]
    );
    let k = keys::build(None, rsa(), Some(Alg::Ps512), &all).unwrap();
    assert_eq!(k.algorithms(), [Alg::Ps512]);
    let e = keys::build(None, rsa(), Some(Alg::Es256), &all).unwrap_err();
    assert!(e.contains("its `alg` is ES256"), "{e}");
    let e = keys::build(None, rsa(), Some(Alg::Ps512), &[Alg::Rs256]).unwrap_err();
    assert!(e.contains("pinned to PS512"), "{e}");
    let ec = keys::from_pem(&fixture("keys/ec384.pub.pem")).unwrap();
    assert!(matches!(ec, Material::Ec(Family::P384, _)));
    let ed = keys::from_pem(&fixture("keys/ed25519.pub.pem")).unwrap();
    assert!(matches!(ed, Material::Ed25519(_)));
    assert!(
        keys::from_pem(&fixture("keys/ec256.pem"))
            .unwrap_err()
            .contains("private key")
    );
}

#[test]
fn pem_and_jwk_forms_verify_the_same_signatures() {
    for (pem, jwk_name, token_name, alg) in [
        ("rsa1.pub.pem", "rsa1_any_alg", "valid_PS384", Alg::Ps384),
        ("rsa1.pkcs1.pem", "rsa1", "valid_RS256", Alg::Rs256),
        ("ec256.pub.pem", "ec256", "valid_ES256", Alg::Es256),
        ("ec384.pub.pem", "ec384", "valid_ES384", Alg::Es384),
        ("ed25519.pub.pem", "ed25519", "valid_EdDSA", Alg::EdDsa),
    ] {
        let t = verify::parse(&token(token_name)).unwrap();
        let from_pem = keys::build(
            None,
            keys::from_pem(&fixture(&format!("keys/{pem}"))).unwrap(),
            None,
            &Alg::ALL,
        )
        .unwrap();
        let j = keys::from_jwk(&jwk(jwk_name)).unwrap().unwrap();
        let from_jwk = keys::build(None, j.material, j.pin, &Alg::ALL).unwrap();
        for k in [&from_pem, &from_jwk] {
            assert!(
                k.verify(alg, t.signing_input.as_bytes(), &t.signature),
                "{token_name}"
            );
            let mut bad = t.signature.clone();
            bad[3] ^= 1;
            assert!(
                !k.verify(alg, t.signing_input.as_bytes(), &bad),
                "{token_name}"
            );
            assert!(!k.verify(
                alg,
                format!("{}x", t.signing_input).as_bytes(),
                &t.signature
            ));
        }
    }
    // An RSA key never verifies an HS256 token made with its PEM as the secret.
    let t = verify::parse(&token("hs256_with_rsa_public_key")).unwrap();
    let k = keys::build(
        None,
        keys::from_pem(&fixture("keys/rsa1.pub.pem")).unwrap(),
        None,
        &Alg::ALL,
    )
    .unwrap();
    assert!(!k.fits(Alg::Hs256));
    assert!(!k.verify(Alg::Hs256, t.signing_input.as_bytes(), &t.signature));
}

#[test]
fn rsa_modulus_with_a_leading_zero_is_accepted() {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut j = jwk("rsa1");
    let mut n = b64.decode(j["n"].as_str().unwrap()).unwrap();
    n.insert(0, 0);
    j.insert("n".into(), json!(b64.encode(&n)));
    let parsed = keys::from_jwk(&j).unwrap().unwrap();
    let k = keys::build(None, parsed.material, parsed.pin, &[Alg::Rs256]).unwrap();
    let t = verify::parse(&token("valid_RS256")).unwrap();
    assert!(k.verify(Alg::Rs256, t.signing_input.as_bytes(), &t.signature));
}
