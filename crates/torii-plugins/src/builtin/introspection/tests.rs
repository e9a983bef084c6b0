#![allow(clippy::unwrap_used)]

use super::*;
use crate::StateRegistry;
use crate::builtin::forward_auth::testkit::{
    Fake, Seen, build, build_err, build_with, closed_port, context, fake, reply, request, run,
};
use serde_json::json;

fn epoch() -> u64 {
    now().as_secs()
}

/// The answer of the fake authorization server for a token.
fn answer(token: &str) -> (u16, String) {
    let now = epoch();
    let active = |extra: serde_json::Value| {
        let mut j = json!({
            "active": true, "sub": "u-1", "client_id": "app", "username": "alice",
            "scope": "read write", "aud": "api", "iss": "https://sso.example", "exp": now + 3600,
        });
        for (k, v) in extra.as_object().unwrap() {
            j[k] = v.clone();
        }
        (200, j.to_string())
    };
    match token {
        "alice" | "alice-2" | "a+b/c=" => active(json!({})),
        "bob-no-exp" => active(json!({"sub": "bob", "exp": null, "username": "svc"})),
        "ghost" => active(json!({"sub": "ghost"})),
        "no-sub" => active(json!({"sub": null})),
        "expired" => active(json!({"exp": now - 10})),
        "future" => active(json!({"nbf": now + 600})),
        "inactive" => (200, json!({"active": false}).to_string()),
        "not-json" => (200, "<html>".into()),
        "no-active" => (200, json!({"sub": "u-1"}).to_string()),
        "string-active" => (200, json!({"active": "true", "sub": "u-1"}).to_string()),
        "array" => (200, "[]".into()),
        "bad-exp" => active(json!({"exp": "soon"})),
        "big" => (
            200,
            json!({"active": false, "pad": "x".repeat(MAX_RESPONSE_BODY)}).to_string(),
        ),
        "unauthorized-client" => (401, "{\"error\":\"invalid_client\"}".into()),
        _ => (500, "boom".into()),
    }
}

/// The token a request carried (and checks the request's shape on the way).
fn token_of(s: &Seen) -> String {
    form_urlencoded::parse(&s.body)
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

async fn server() -> Fake {
    fake(|s: Seen| async move {
        let token = token_of(&s);
        if token == "slow" {
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
        let (status, body) = answer(&token);
        reply(status, &[("content-type", "application/json")], &body)
    })
    .await
}

fn settings(f: &Fake, extra: serde_json::Value) -> serde_json::Value {
    let mut s = json!({
        "introspection_url": f.url("/oauth2/introspect"),
        "client_id": "gateway",
        "client_secret": "s3cr3t",
    });
    for (k, v) in extra.as_object().unwrap() {
        s[k] = v.clone();
    }
    s
}

fn bearer_req(token: &str) -> http::request::Parts {
    request(
        "GET",
        "/api",
        &[("authorization", &format!("Bearer {token}"))],
    )
}

#[tokio::test]
async fn active_token_sets_consumer_identity_and_hides_the_token() {
    let f = server().await;
    let p = build::<Introspection>(settings(&f, json!({})));
    let mut req = bearer_req("alice");
    let mut ctx = context("h", "/api");
    assert!(run(&*p, &mut req, &mut ctx).await.go_on().waited);
    assert_eq!(&*ctx.consumer.unwrap().name, "alice");
    let id = ctx.identity.unwrap();
    assert_eq!(id.scheme, "oauth2_introspection");
    assert_eq!(id.scopes, ["read", "write"]);
    let claims = id.claims.as_ref().unwrap();
    assert_eq!(claims["client_id"], "app");
    assert_eq!(claims["username"], "alice");
    assert!(
        req.headers.get("authorization").is_none(),
        "hidden by default"
    );

    let p = build::<Introspection>(settings(
        &f,
        json!({"hide_credentials": false, "consumer_claim": "username"}),
    ));
    let mut req = bearer_req("bob-no-exp");
    let mut ctx = context("h", "/api");
    run(&*p, &mut req, &mut ctx).await.go_on();
    assert_eq!(
        &*ctx.consumer.unwrap().name,
        "svc",
        "consumer from `username`"
    );
    assert_eq!(req.headers["authorization"], "Bearer bob-no-exp");
}

#[tokio::test]
async fn the_endpoint_gets_a_form_post_with_basic_client_credentials() {
    let f = server().await;
    let p = build::<Introspection>(json!({
        "introspection_url": f.url("/oauth2/introspect?realm=x"),
        "client_id": "my gateway",
        "client_secret": "p@ss:word",
    }));
    run(&*p, &mut bearer_req("a+b/c="), &mut context("h", "/api"))
        .await
        .go_on();
    let s = f.last();
    assert_eq!(s.method, http::Method::POST);
    assert_eq!(s.uri.path(), "/oauth2/introspect");
    assert_eq!(s.uri.query(), Some("realm=x"));
    assert_eq!(
        s.headers["content-type"],
        "application/x-www-form-urlencoded"
    );
    assert_eq!(s.headers["accept"], "application/json");
    let basic = s.headers["authorization"]
        .to_str()
        .unwrap()
        .strip_prefix("Basic ")
        .unwrap();
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(basic)
        .unwrap();
    assert_eq!(
        String::from_utf8(decoded).unwrap(),
        "my+gateway:p%40ss%3Aword",
        "form-encoded, then Basic (RFC 6749 2.3.1)"
    );
    assert_eq!(
        std::str::from_utf8(&s.body).unwrap(),
        "token=a%2Bb%2Fc%3D&token_type_hint=access_token"
    );
    assert_eq!(token_of(&s), "a+b/c=");
}

#[tokio::test]
async fn inactive_expired_and_unknown_tokens_get_401_invalid_token() {
    let f = server().await;
    let p = build::<Introspection>(settings(&f, json!({"realm": "api"})));
    for token in ["inactive", "expired", "future", "ghost", "no-sub"] {
        let mut ctx = context("h", "/api");
        let e = run(&*p, &mut bearer_req(token), &mut ctx).await.err();
        assert_eq!(
            e.kind,
            ErrorKind::Unauthorized(Some(HeaderValue::from_static(
                "Bearer realm=\"api\", error=\"invalid_token\""
            ))),
            "{token}"
        );
        assert!(ctx.consumer.is_none());
    }
    assert_eq!(p.challenge().unwrap(), "Bearer realm=\"api\"");
}

#[tokio::test]
async fn requests_without_a_bearer_token_are_left_to_the_chain() {
    let f = server().await;
    let p = build::<Introspection>(settings(&f, json!({"max_token_size": "16B"})));
    for headers in [
        vec![],
        vec![("authorization", "Basic YTpi")],
        vec![("authorization", "Bearerish abc")],
        vec![("x-token", "alice")],
    ] {
        let mut ctx = context("h", "/");
        let ran = run(&*p, &mut request("GET", "/", &headers), &mut ctx)
            .await
            .go_on();
        assert!(!ran.waited && ctx.consumer.is_none(), "{headers:?}");
    }
    // Present but unusable: refused without asking the endpoint.
    for value in ["Bearer", "Bearer   ", "bearer 0123456789abcdefX"] {
        let e = run(
            &*p,
            &mut request("GET", "/", &[("authorization", value)]),
            &mut context("h", "/"),
        )
        .await
        .err();
        assert!(matches!(e.kind, ErrorKind::Unauthorized(_)), "{value}");
    }
    assert_eq!(f.hits(), 0);
    // The scheme is case-insensitive.
    let mut ctx = context("h", "/");
    run(
        &*p,
        &mut request("GET", "/", &[("authorization", "bEaReR alice")]),
        &mut ctx,
    )
    .await
    .go_on();
    assert_eq!(f.hits(), 1);
}

#[tokio::test]
async fn endpoint_failures_are_503_and_never_cached() {
    let f = server().await;
    let p = build::<Introspection>(settings(&f, json!({"timeout": "200ms"})));
    for token in [
        "server-error",
        "not-json",
        "no-active",
        "string-active",
        "array",
        "bad-exp",
        "big",
        "unauthorized-client",
        "slow",
    ] {
        for round in 0..2 {
            let before = f.hits();
            let e = run(&*p, &mut bearer_req(token), &mut context("h", "/"))
                .await
                .err();
            assert_eq!(e.kind, ErrorKind::AuthUnavailable, "{token}");
            assert!(
                !e.detail.contains(token),
                "the token is never logged: {}",
                e.detail
            );
            assert_eq!(
                f.hits(),
                before + 1,
                "{token} round {round}: failures are not cached"
            );
        }
    }
    let down = closed_port().await;
    let p = build::<Introspection>(json!({
        "introspection_url": format!("http://{down}/introspect"),
        "client_id": "gateway", "client_secret": "s",
    }));
    let e = run(&*p, &mut bearer_req("alice"), &mut context("h", "/"))
        .await
        .err();
    assert_eq!(e.kind, ErrorKind::AuthUnavailable);
}

#[tokio::test]
async fn active_results_are_cached() {
    let f = server().await;
    let p = build::<Introspection>(settings(&f, json!({})));
    run(&*p, &mut bearer_req("alice"), &mut context("h", "/"))
        .await
        .go_on();
    assert_eq!(f.hits(), 1);
    let mut req = bearer_req("alice");
    let mut ctx = context("h", "/");
    assert!(
        !run(&*p, &mut req, &mut ctx).await.go_on().waited,
        "no I/O on a hit"
    );
    assert_eq!(f.hits(), 1);
    assert_eq!(&*ctx.consumer.unwrap().name, "alice");
    assert_eq!(ctx.identity.unwrap().scopes, ["read", "write"]);
    assert!(req.headers.get("authorization").is_none());
    // Another token is another entry.
    run(&*p, &mut bearer_req("alice-2"), &mut context("h", "/"))
        .await
        .go_on();
    assert_eq!(f.hits(), 2);
    // Cached unknown consumers stay refused.
    for _ in 0..2 {
        run(&*p, &mut bearer_req("ghost"), &mut context("h", "/"))
            .await
            .err();
    }
    assert_eq!(f.hits(), 3);
}

#[tokio::test]
async fn inactive_results_are_cached_briefly() {
    let f = server().await;
    let p = build::<Introspection>(settings(&f, json!({"negative_cache_ttl": "150ms"})));
    run(&*p, &mut bearer_req("inactive"), &mut context("h", "/"))
        .await
        .err();
    assert_eq!(f.hits(), 1);
    let ran = run(&*p, &mut bearer_req("inactive"), &mut context("h", "/")).await;
    assert!(!ran.waited);
    assert!(matches!(ran.err().kind, ErrorKind::Unauthorized(_)));
    assert_eq!(f.hits(), 1, "answered from the negative cache");
    // Re-poll until the entry expired (bounded), instead of one blind sleep.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let ran = run(&*p, &mut bearer_req("inactive"), &mut context("h", "/")).await;
        if ran.waited {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the entry never expired"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(f.hits(), 2);

    // Off: every request asks.
    let p = build::<Introspection>(settings(&f, json!({"negative_cache_ttl": "0s"})));
    for _ in 0..2 {
        run(&*p, &mut bearer_req("inactive"), &mut context("h", "/"))
            .await
            .err();
    }
    assert_eq!(f.hits(), 4);
}

#[tokio::test]
async fn positive_cache_respects_cache_ttl_max_and_survives_reloads() {
    let f = server().await;
    let p = build::<Introspection>(settings(&f, json!({"cache_ttl_max": "150ms"})));
    run(&*p, &mut bearer_req("alice"), &mut context("h", "/"))
        .await
        .go_on();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let ran = run(&*p, &mut bearer_req("alice"), &mut context("h", "/"))
            .await
            .go_on();
        if ran.waited {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the entry never expired"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(f.hits(), 2);

    let p = build::<Introspection>(settings(&f, json!({"cache_ttl_max": "0s"})));
    for _ in 0..2 {
        run(&*p, &mut bearer_req("alice"), &mut context("h", "/"))
            .await
            .go_on();
    }
    assert_eq!(f.hits(), 4);

    let state = StateRegistry::default();
    let s = settings(&f, json!({}));
    let p = build_with::<Introspection>(s.clone(), &state).unwrap();
    run(&*p, &mut bearer_req("alice"), &mut context("h", "/"))
        .await
        .go_on();
    let p = build_with::<Introspection>(s, &state).unwrap();
    assert!(
        !run(&*p, &mut bearer_req("alice"), &mut context("h", "/"))
            .await
            .go_on()
            .waited
    );
    assert_eq!(f.hits(), 5);
}

#[test]
fn ttl_is_capped_by_exp() {
    let p = IntrospectionPlugin {
        url: "http://a/".parse().unwrap(),
        client_auth: HeaderValue::from_static("Basic x"),
        consumer_claim: "sub".into(),
        timeout: Duration::from_secs(1),
        positive_ttl: Duration::from_secs(300),
        negative_ttl: Duration::from_secs(5),
        max_token: 10,
        hide: true,
        directory: Arc::default(),
        http: crate::builtin::util::test_client(),
        cache: None,
        challenge: HeaderValue::from_static("Bearer"),
        invalid: HeaderValue::from_static("Bearer"),
        inflight: Default::default(),
    };
    let now = Duration::from_millis(1_000_000_500);
    let active = |exp: Option<u64>| Verdict::Active {
        consumer_id: None,
        identity: Arc::default(),
        exp,
    };
    assert_eq!(p.ttl(&active(None), now), Duration::from_secs(300));
    assert_eq!(
        p.ttl(&active(Some(1_000_010)), now),
        Duration::from_millis(9_500)
    );
    assert_eq!(
        p.ttl(&active(Some(2_000_000)), now),
        Duration::from_secs(300)
    );
    assert_eq!(p.ttl(&active(Some(1_000_000)), now), Duration::ZERO);
    assert_eq!(p.ttl(&Verdict::Inactive("x"), now), Duration::from_secs(5));
}

#[test]
fn responses_are_read_strictly() {
    let now = Duration::from_secs(1_000);
    let v = |j: serde_json::Value| parse(j.to_string().as_bytes(), "sub", now);
    assert!(matches!(
        v(json!({"active": false, "sub": "x"})),
        Ok(Verdict::Inactive(_))
    ));
    assert!(matches!(
        v(json!({"active": true, "exp": 1_000})),
        Ok(Verdict::Inactive(_))
    ));
    assert!(matches!(
        v(json!({"active": true, "nbf": 1_001})),
        Ok(Verdict::Inactive(_))
    ));
    match v(json!({"active": true, "sub": 42, "exp": 2_000.5, "scp": ["a", "b"]})).unwrap() {
        Verdict::Active {
            consumer_id,
            identity,
            exp,
        } => {
            assert_eq!(
                consumer_id.as_deref(),
                Some("42"),
                "integer ids are written out"
            );
            assert_eq!(exp, Some(2_000));
            assert_eq!(identity.scopes, ["a", "b"]);
        }
        other => panic!("{other:?}"),
    }
    for bad in [
        json!({"active": "true"}),
        json!({}),
        json!({"active": true, "exp": "2000"}),
        json!({"active": true, "nbf": -1}),
        json!([true]),
    ] {
        assert!(v(bad.clone()).is_err(), "{bad}");
    }
    assert!(parse(b"not json", "sub", now).is_err());
}

#[test]
fn settings_are_checked_at_build() {
    let ok = json!({"introspection_url": "https://sso/introspect", "client_id": "gw", "client_secret": "s"});
    let with = |k: &str, v: serde_json::Value| {
        let mut s = ok.clone();
        s[k] = v;
        s
    };
    let _ = build::<Introspection>(ok.clone());
    for (settings, key) in [
        (
            with("introspection_url", json!("sso/introspect")),
            "introspection_url",
        ),
        (
            with("introspection_url", json!("ftp://sso/")),
            "introspection_url",
        ),
        (with("client_id", json!("")), "client_id"),
        (with("client_secret", json!("")), "client_secret"),
        (with("consumer_claim", json!("")), "consumer_claim"),
        (with("timeout", json!("0ms")), "timeout"),
        (with("cache_ttl_max", json!("2h")), "cache_ttl_max"),
        (
            with("negative_cache_ttl", json!("31s")),
            "negative_cache_ttl",
        ),
        (with("cache_size", json!(0)), "cache_size"),
        (with("max_token_size", json!("0B")), "max_token_size"),
        (with("realm", json!("a\nb")), "realm"),
        (with("required_scopes", json!(["a"])), ""),
    ] {
        let e = build_err::<Introspection>(settings.clone());
        let first = e.path.first().map(|s| format!("{s:?}")).unwrap_or_default();
        assert!(first.contains(key), "{settings}: {first} / {}", e.message);
    }
}
