#![allow(clippy::unwrap_used)]

use super::*;
use std::sync::Arc;
use std::time::Instant;
use torii_core::{ClientAddr, ClientCert, Identity, RequestId};

fn ctx(ip: &str) -> RequestContext {
    let ip: std::net::IpAddr = ip.parse().unwrap();
    RequestContext::new(
        RequestId(HeaderValue::from_static("t")),
        ClientAddr(ip),
        std::net::SocketAddr::new(ip, 40000),
        Arc::from("l"),
        Instant::now(),
    )
}

fn req(headers: &[(&str, &str)]) -> http::request::Parts {
    let mut b = http::Request::get("/");
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(()).unwrap().into_parts().0
}

fn spec(parts: Vec<KeyPart>) -> KeySpec {
    KeySpec {
        parts: parts.into(),
        ipv6_prefix: 64,
        per_consumer: false,
    }
}

fn with_claims(mut c: RequestContext, claims: serde_json::Value) -> RequestContext {
    c.identity = Some(Arc::new(Identity {
        scheme: "jwt",
        claims: claims.as_object().cloned(),
        scopes: Vec::new(),
    }));
    c
}

const ID: [u8; 16] = [7; 16];

#[test]
fn ipv6_clients_count_by_their_prefix_and_mapped_ipv4_as_ipv4() {
    let keys = LocalKeys::new();
    let s = spec(vec![KeyPart::ClientAddress]);
    let r = req(&[]);
    let h = |ip: &str| keys.hash(&s, &ID, &r, &ctx(ip));
    assert_eq!(h("2001:db8:1:2::1"), h("2001:db8:1:2:ffff::9"), "one /64");
    assert_ne!(h("2001:db8:1:2::1"), h("2001:db8:1:3::1"), "another /64");
    assert_eq!(h("::ffff:10.0.0.1"), h("10.0.0.1"));
    assert_ne!(h("10.0.0.1"), h("10.0.0.2"));
    let wide = KeySpec {
        ipv6_prefix: 48,
        ..s.clone()
    };
    assert_eq!(
        keys.hash(&wide, &ID, &r, &ctx("2001:db8:1:2::1")),
        keys.hash(&wide, &ID, &r, &ctx("2001:db8:1:ffff::1"))
    );
}

#[test]
fn headers_claims_and_credentials_key_the_count_and_a_missing_part_falls_back_to_the_address() {
    let keys = LocalKeys::new();
    let r = |v: &str| req(&[("x-client", v)]);
    let by_header = spec(vec![KeyPart::Header("x-client".into())]);
    let c = ctx("10.0.0.1");
    assert_eq!(
        keys.hash(&by_header, &ID, &r("a"), &c),
        keys.hash(&by_header, &ID, &r("a"), &ctx("10.0.0.9"))
    );
    assert_ne!(
        keys.hash(&by_header, &ID, &r("a"), &c),
        keys.hash(&by_header, &ID, &r("b"), &c)
    );
    // No header: the client address in its place.
    let none = req(&[]);
    assert_ne!(
        keys.hash(&by_header, &ID, &none, &ctx("10.0.0.1")),
        keys.hash(&by_header, &ID, &none, &ctx("10.0.0.2"))
    );
    assert_ne!(
        keys.hash(&by_header, &ID, &none, &c),
        keys.hash(&by_header, &ID, &r("10.0.0.1"), &c)
    );
    // A claim.
    let by_claim = spec(vec![KeyPart::Claim("tenant".into())]);
    let t1 = with_claims(ctx("10.0.0.1"), serde_json::json!({"tenant": "acme"}));
    let t2 = with_claims(ctx("10.0.0.2"), serde_json::json!({"tenant": "acme"}));
    let t3 = with_claims(ctx("10.0.0.1"), serde_json::json!({"tenant": "other"}));
    assert_eq!(
        keys.hash(&by_claim, &ID, &none, &t1),
        keys.hash(&by_claim, &ID, &none, &t2)
    );
    assert_ne!(
        keys.hash(&by_claim, &ID, &none, &t1),
        keys.hash(&by_claim, &ID, &none, &t3)
    );
    // The credential: what authentication recorded, else the token's client, else the
    // certificate's subject.
    let by_cred = spec(vec![KeyPart::Credential]);
    let mut k1 = ctx("10.0.0.1");
    k1.credential = Some(Credential::Digest([1; 32]));
    let mut k2 = ctx("10.0.0.2");
    k2.credential = Some(Credential::Digest([1; 32]));
    let mut k3 = ctx("10.0.0.1");
    k3.credential = Some(Credential::Digest([2; 32]));
    assert_eq!(
        keys.hash(&by_cred, &ID, &none, &k1),
        keys.hash(&by_cred, &ID, &none, &k2)
    );
    assert_ne!(
        keys.hash(&by_cred, &ID, &none, &k1),
        keys.hash(&by_cred, &ID, &none, &k3)
    );
    let app_a = with_claims(
        ctx("10.0.0.1"),
        serde_json::json!({"azp": "app-a", "sub": "u1"}),
    );
    let app_a2 = with_claims(
        ctx("10.0.0.3"),
        serde_json::json!({"azp": "app-a", "sub": "u2"}),
    );
    assert_eq!(
        keys.hash(&by_cred, &ID, &none, &app_a),
        keys.hash(&by_cred, &ID, &none, &app_a2)
    );
    let mut cert = ctx("10.0.0.1");
    cert.client_cert = Some(Arc::new(ClientCert {
        subject: "CN=svc".into(),
        ..ClientCert::default()
    }));
    let mut cert2 = ctx("10.0.0.5");
    cert2.client_cert = cert.client_cert.clone();
    assert_eq!(
        keys.hash(&by_cred, &ID, &none, &cert),
        keys.hash(&by_cred, &ID, &none, &cert2)
    );
}

#[test]
fn tables_and_instances_hash_apart_and_shared_names_agree_across_processes() {
    let (a, b) = (LocalKeys::new(), LocalKeys::new());
    let s = spec(vec![KeyPart::Header("x-client".into())]);
    let r = req(&[("x-client", "k")]);
    let c = ctx("10.0.0.1");
    assert_ne!(
        a.hash(&s, &ID, &r, &c),
        b.hash(&s, &ID, &r, &c),
        "random seeds per table"
    );
    assert_ne!(
        a.hash(&s, &ID, &r, &c),
        a.hash(&s, &[8; 16], &r, &c),
        "instances apart"
    );
    assert_ne!(a.shown(a.hash(&s, &ID, &r, &c)), a.hash(&s, &ID, &r, &c));
    // The shared name: the same for every process (no seed), apart per instance and key.
    let (n1, pk1, l1) = shared_key(&s, &ID, &r, &c);
    let (n2, pk2, l2) = shared_key(&s, &ID, &r, &ctx("10.0.0.2"));
    assert_eq!((n1, pk1, l1), (n2, pk2, l2));
    assert_ne!(pk1, l1);
    assert_ne!(shared_key(&s, &[8; 16], &r, &c).0, n1);
    assert_ne!(shared_key(&s, &ID, &req(&[("x-client", "j")]), &c).0, n1);
    assert!(n1.iter().all(u8::is_ascii_hexdigit));
    // Parts are delimited: ("ab", "c") and ("a", "bc") differ.
    let two = spec(vec![
        KeyPart::Header("x-a".into()),
        KeyPart::Header("x-b".into()),
    ]);
    assert_ne!(
        shared_key(&two, &ID, &req(&[("x-a", "ab"), ("x-b", "c")]), &c).0,
        shared_key(&two, &ID, &req(&[("x-a", "a"), ("x-b", "bc")]), &c).0
    );
    assert_ne!(
        a.hash(&two, &ID, &req(&[("x-a", "ab"), ("x-b", "c")]), &c),
        a.hash(&two, &ID, &req(&[("x-a", "a"), ("x-b", "bc")]), &c)
    );
}

#[test]
fn credentials_of_different_kinds_or_issuers_never_share_a_count() {
    let keys = LocalKeys::new();
    let s = spec(vec![KeyPart::Credential]);
    let r = req(&[]);
    let mut basic = ctx("10.0.0.1");
    basic.credential = Some(Credential::Name(Arc::from("alice")));
    let token = with_claims(
        ctx("10.0.0.1"),
        serde_json::json!({"sub": "alice", "iss": "a"}),
    );
    let other_issuer = with_claims(
        ctx("10.0.0.1"),
        serde_json::json!({"sub": "alice", "iss": "b"}),
    );
    let h = |c: &RequestContext| keys.hash(&s, &ID, &r, c);
    assert_ne!(h(&basic), h(&token));
    assert_ne!(h(&token), h(&other_issuer));
    // A numeric claim counts by its value, not by the client address.
    let c = spec(vec![KeyPart::Claim("tenant".into())]);
    let t42 = with_claims(ctx("10.0.0.1"), serde_json::json!({"tenant": 42}));
    let t42b = with_claims(ctx("10.0.0.2"), serde_json::json!({"tenant": 42}));
    let t43 = with_claims(ctx("10.0.0.1"), serde_json::json!({"tenant": 43}));
    assert_eq!(keys.hash(&c, &ID, &r, &t42), keys.hash(&c, &ID, &r, &t42b));
    assert_ne!(keys.hash(&c, &ID, &r, &t42), keys.hash(&c, &ID, &r, &t43));
}
