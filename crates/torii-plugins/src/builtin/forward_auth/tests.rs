#![allow(clippy::unwrap_used)]

use super::testkit::{
    Fake, body, build, build_err, build_with, closed_port, context, fake, reply, request, run,
};
use super::*;
use crate::StateRegistry;
use serde_json::json;
use std::time::Duration;

/// A service that allows requests carrying `Authorization: Bearer good` (as user 42 of
/// consumer `u-1`), asks for credentials without one and forbids the rest; `DELETE` and
/// `/admin` are always forbidden.
async fn service() -> Fake {
    fake(|s: super::testkit::Seen| async move {
        let auth = s
            .headers
            .get("authorization")
            .map(|v| v.to_str().unwrap().to_string());
        let method = s.headers["x-forwarded-method"]
            .to_str()
            .unwrap()
            .to_string();
        let uri = s.headers["x-forwarded-uri"].to_str().unwrap().to_string();
        if method == "DELETE" || uri.starts_with("/admin") {
            return reply(
                403,
                &[("content-type", "text/plain"), ("x-secret", "no")],
                "forbidden here",
            );
        }
        match auth.as_deref() {
            Some("Bearer good") => reply(
                200,
                &[
                    ("x-user-id", "42"),
                    ("x-consumer", "u-1"),
                    ("x-internal", "hidden"),
                ],
                "ok",
            ),
            None => reply(
                401,
                &[
                    ("www-authenticate", "Bearer realm=\"sso\""),
                    ("content-type", "application/json"),
                    ("x-secret", "no"),
                ],
                "{\"login\":\"https://sso.example\"}",
            ),
            Some(_) => reply(403, &[("content-type", "text/plain")], "bad token"),
        }
    })
    .await
}

fn settings(f: &Fake, extra: serde_json::Value) -> serde_json::Value {
    let mut s = json!({
        "url": f.url("/verify"),
        "copy_headers": ["x-user-id"],
        "consumer_header": "x-consumer",
    });
    for (k, v) in extra.as_object().unwrap() {
        s[k] = v.clone();
    }
    s
}

const GOOD: (&str, &str) = ("authorization", "Bearer good");

#[tokio::test]
async fn allows_on_2xx_copies_headers_and_sets_the_consumer() {
    let f = service().await;
    let p = build::<ForwardAuth>(settings(&f, json!({})));
    let mut req = request(
        "GET",
        "/a/b?x=1",
        &[GOOD, ("x-user-id", "spoofed"), ("x_user_id", "spoofed")],
    );
    let mut ctx = context("api.example", "/a/b");
    let ran = run(&*p, &mut req, &mut ctx).await.go_on();
    assert!(ran.waited);
    let got: Vec<_> = req.headers.get_all("x-user-id").iter().collect();
    assert_eq!(got, ["42"], "only the service's value arrives");
    assert!(
        req.headers.get("x_user_id").is_none(),
        "underscore spelling removed"
    );
    assert!(
        req.headers.get("x-internal").is_none(),
        "only copy_headers are copied"
    );
    assert_eq!(&*ctx.consumer.unwrap().name, "alice");
    assert_eq!(ctx.identity.unwrap().scheme, "forward_auth");
    assert_eq!(f.hits(), 1);
}

#[tokio::test]
async fn client_copies_are_stripped_even_when_the_service_sends_none() {
    let f = fake(|_| async { reply(204, &[], "") }).await;
    let p = build::<ForwardAuth>(json!({
        "url": f.url("/"), "copy_headers": ["x-user-id", "x-roles"], "consumer": "svc"
    }));
    let mut req = request(
        "GET",
        "/a",
        &[
            ("x-user-id", "admin"),
            ("X_Roles", "root"),
            ("x-other", "kept"),
        ],
    );
    let mut ctx = context("h", "/a");
    run(&*p, &mut req, &mut ctx).await.go_on();
    assert!(req.headers.get("x-user-id").is_none());
    assert!(req.headers.get("x_roles").is_none());
    assert_eq!(req.headers["x-other"], "kept");
    assert_eq!(&*ctx.consumer.unwrap().name, "svc", "the fixed consumer");

    // Also when the service refuses or is down: nothing client-sent survives.
    let down = closed_port().await;
    let p = build::<ForwardAuth>(json!({
        "url": format!("http://{down}/"), "copy_headers": ["x-user-id"], "consumer": "svc"
    }));
    let mut req = request("GET", "/a", &[("x-user-id", "admin")]);
    let e = run(&*p, &mut req, &mut context("h", "/a")).await.err();
    assert_eq!(e.kind, ErrorKind::AuthUnavailable);
    assert!(req.headers.get("x-user-id").is_none());
}

#[tokio::test]
async fn the_service_gets_the_request_facts_and_only_the_configured_headers() {
    let f = service().await;
    let p = build::<ForwardAuth>(settings(&f, json!({"method": "POST"})));
    let mut req = request(
        "PATCH",
        "http://api.example/a/../b//c?q=1&r=%20",
        &[
            GOOD,
            ("cookie", "sid=1"),
            ("cookie", "theme=dark"),
            ("x-other", "secret"),
            ("content-length", "5"),
            ("x-forwarded-uri", "/spoofed"),
        ],
    );
    let mut ctx = context("api.example", "/b/c");
    run(&*p, &mut req, &mut ctx).await.go_on();
    let s = f.last();
    assert_eq!(s.method, http::Method::POST);
    assert_eq!(s.uri.path(), "/verify");
    assert_eq!(s.headers["x-forwarded-method"], "PATCH");
    assert_eq!(
        s.headers["x-forwarded-uri"], "/b/c?q=1&r=%20",
        "normalised path, query kept"
    );
    assert_eq!(s.headers["x-forwarded-host"], "api.example");
    assert_eq!(s.headers["authorization"], "Bearer good");
    let cookies: Vec<_> = s.headers.get_all("cookie").iter().collect();
    assert_eq!(
        cookies,
        ["sid=1; theme=dark"],
        "one cookie field, as HTTP/1.1 wants"
    );
    assert!(s.headers.get("x-other").is_none());
    assert!(s.headers.get("x-forwarded-proto").is_none());
    assert!(s.body.is_empty(), "no request body");
}

#[tokio::test]
async fn refusals_pass_the_status_body_and_selected_headers() {
    let f = service().await;
    let p = build::<ForwardAuth>(settings(&f, json!({})));

    let mut ctx = context("h", "/a");
    let r = run(&*p, &mut request("GET", "/a", &[]), &mut ctx)
        .await
        .answer();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(r.headers()["www-authenticate"], "Bearer realm=\"sso\"");
    assert_eq!(r.headers()["content-type"], "application/json");
    assert!(r.headers().get("x-secret").is_none(), "only client_headers");
    assert_eq!(body(r).await, "{\"login\":\"https://sso.example\"}");
    assert!(ctx.consumer.is_none());

    let r = run(
        &*p,
        &mut request("GET", "/a", &[("authorization", "Bearer bad")]),
        &mut context("h", "/a"),
    )
    .await
    .answer();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(body(r).await, "bad token");
}

#[tokio::test]
async fn redirects_are_passed_with_their_location() {
    let f = fake(|_| async {
        reply(
            302,
            &[
                ("location", "https://sso.example/login"),
                ("set-cookie", "x=1"),
            ],
            "",
        )
    })
    .await;
    let p = build::<ForwardAuth>(json!({"url": f.url("/"), "consumer": "svc"}));
    let r = run(&*p, &mut request("GET", "/", &[]), &mut context("h", "/"))
        .await
        .answer();
    assert_eq!(r.status(), StatusCode::FOUND);
    assert_eq!(r.headers()["location"], "https://sso.example/login");
    assert!(r.headers().get("set-cookie").is_none());

    // More headers when configured.
    let p = build::<ForwardAuth>(json!({
        "url": f.url("/"), "consumer": "svc", "client_headers": ["location", "set-cookie"]
    }));
    let r = run(&*p, &mut request("GET", "/", &[]), &mut context("h", "/"))
        .await
        .answer();
    assert_eq!(r.headers()["set-cookie"], "x=1");
}

#[tokio::test]
async fn grpc_refusals_become_gateway_errors() {
    let f = service().await;
    let p = build::<ForwardAuth>(settings(&f, json!({})));
    let grpc = ("content-type", "application/grpc+proto");
    let e = run(
        &*p,
        &mut request("POST", "/svc/M", &[grpc]),
        &mut context("h", "/svc/M"),
    )
    .await
    .err();
    assert_eq!(
        e.kind,
        ErrorKind::Unauthorized(Some(HeaderValue::from_static("Bearer realm=\"sso\"")))
    );
    let e = run(
        &*p,
        &mut request("POST", "/admin/M", &[grpc, GOOD]),
        &mut context("h", "/admin/M"),
    )
    .await
    .err();
    assert_eq!(e.kind, ErrorKind::Forbidden);
}

#[tokio::test]
async fn failures_of_the_service_fail_closed_with_503() {
    // 5xx.
    let f = fake(|_| async { reply(500, &[], "boom") }).await;
    let p = build::<ForwardAuth>(json!({"url": f.url("/"), "consumer": "svc"}));
    let e = run(
        &*p,
        &mut request("GET", "/", &[GOOD]),
        &mut context("h", "/"),
    )
    .await
    .err();
    assert_eq!(e.kind, ErrorKind::AuthUnavailable);
    // Closed port.
    let down = closed_port().await;
    let p = build::<ForwardAuth>(json!({"url": format!("http://{down}/v"), "consumer": "svc"}));
    let e = run(
        &*p,
        &mut request("GET", "/", &[GOOD]),
        &mut context("h", "/"),
    )
    .await
    .err();
    assert_eq!(e.kind, ErrorKind::AuthUnavailable);
    // Too slow.
    let slow = fake(|_| async {
        tokio::time::sleep(Duration::from_secs(5)).await;
        reply(200, &[], "")
    })
    .await;
    let p =
        build::<ForwardAuth>(json!({"url": slow.url("/"), "consumer": "svc", "timeout": "150ms"}));
    let t = std::time::Instant::now();
    let e = run(
        &*p,
        &mut request("GET", "/", &[GOOD]),
        &mut context("h", "/"),
    )
    .await
    .err();
    assert_eq!(e.kind, ErrorKind::AuthUnavailable);
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    // A body over the limit, even on a refusal.
    let big = fake(|_| async { reply(401, &[], &"x".repeat(MAX_RESPONSE_BODY + 1)) }).await;
    let p = build::<ForwardAuth>(json!({"url": big.url("/"), "consumer": "svc"}));
    let e = run(&*p, &mut request("GET", "/", &[]), &mut context("h", "/"))
        .await
        .err();
    assert_eq!(e.kind, ErrorKind::AuthUnavailable);
    // An odd status.
    let odd = fake(|_| async { reply(600, &[], "") }).await;
    let p = build::<ForwardAuth>(json!({"url": odd.url("/"), "consumer": "svc", "timeout": "1s"}));
    let e = run(&*p, &mut request("GET", "/", &[]), &mut context("h", "/"))
        .await
        .err();
    assert_eq!(e.kind, ErrorKind::AuthUnavailable);
}

#[tokio::test]
async fn consumer_from_the_header_or_the_fixed_one() {
    let f = fake(|s: super::testkit::Seen| async move {
        match s
            .headers
            .get("x-want")
            .map(|v| v.to_str().unwrap().to_string())
            .as_deref()
        {
            Some("none") => reply(200, &[], ""),
            Some(id) => reply(200, &[("x-consumer", id)], ""),
            None => reply(200, &[], ""),
        }
    })
    .await;
    let want = |id: &'static str| request("GET", "/", &[("x-want", id)]);
    let only_header = build::<ForwardAuth>(json!({
        "url": f.url("/"), "consumer_header": "x-consumer", "request_headers": ["x-want"]
    }));
    let mut ctx = context("h", "/");
    run(&*only_header, &mut want("bob"), &mut ctx).await.go_on();
    assert_eq!(
        &*ctx.consumer.unwrap().name,
        "bob",
        "the id defaults to the name"
    );
    let mut ctx = context("h", "/");
    run(&*only_header, &mut want("u-1"), &mut ctx).await.go_on();
    assert_eq!(&*ctx.consumer.unwrap().name, "alice");
    for id in ["nobody", "none"] {
        let e = run(&*only_header, &mut want(id), &mut context("h", "/"))
            .await
            .err();
        assert_eq!(e.kind, ErrorKind::Unauthorized(None), "{id}");
    }

    let both = build::<ForwardAuth>(json!({
        "url": f.url("/"), "consumer_header": "x-consumer", "consumer": "svc",
        "request_headers": ["x-want"]
    }));
    let mut ctx = context("h", "/");
    run(&*both, &mut want("none"), &mut ctx).await.go_on();
    assert_eq!(
        &*ctx.consumer.unwrap().name,
        "svc",
        "missing header: the fixed consumer"
    );
    let e = run(&*both, &mut want("nobody"), &mut context("h", "/"))
        .await
        .err();
    assert_eq!(
        e.kind,
        ErrorKind::Unauthorized(None),
        "an unknown id never falls back to the fixed consumer"
    );
}

#[tokio::test]
async fn cache_remembers_allows_per_request_facts() {
    let f = service().await;
    let p = build::<ForwardAuth>(settings(&f, json!({"cache_ttl": "1m"})));
    let go = |method: &str, path: &str, headers: &[(&str, &str)]| {
        (request(method, path, headers), context("api.example", path))
    };

    let (mut req, mut ctx) = go("GET", "/a", &[GOOD]);
    assert!(run(&*p, &mut req, &mut ctx).await.go_on().waited);
    assert_eq!(f.hits(), 1);

    // Same facts: answered from the cache without I/O, copied headers and consumer included,
    // client-sent copies still removed.
    let (mut req, mut ctx) = go("GET", "/a", &[GOOD, ("x-user-id", "spoof")]);
    assert!(!run(&*p, &mut req, &mut ctx).await.go_on().waited);
    assert_eq!(f.hits(), 1);
    let got: Vec<_> = req.headers.get_all("x-user-id").iter().collect();
    assert_eq!(got, ["42"]);
    assert_eq!(&*ctx.consumer.unwrap().name, "alice");

    // Another method, path, query, host or credential asks the service again.
    for (method, path, headers, host) in [
        ("POST", "/a", vec![GOOD], "api.example"),
        ("GET", "/b", vec![GOOD], "api.example"),
        ("GET", "/a?x=1", vec![GOOD], "api.example"),
        ("GET", "/a", vec![GOOD], "other.example"),
        ("GET", "/a", vec![GOOD, ("cookie", "s=1")], "api.example"),
    ] {
        let before = f.hits();
        let mut req = request(method, path, &headers);
        let mut ctx = context(host, path.split('?').next().unwrap());
        assert!(run(&*p, &mut req, &mut ctx).await.go_on().waited);
        assert_eq!(f.hits(), before + 1, "{method} {path} {host} {headers:?}");
    }

    // An allow for GET /a never authorises DELETE /admin: the service is asked and refuses.
    let before = f.hits();
    let (mut req, mut ctx) = go("DELETE", "/admin", &[GOOD]);
    let r = run(&*p, &mut req, &mut ctx).await.answer();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(f.hits(), before + 1);
    // Refusals are not cached.
    let (mut req, mut ctx) = go("DELETE", "/admin", &[GOOD]);
    run(&*p, &mut req, &mut ctx).await.answer();
    assert_eq!(f.hits(), before + 2);
}

#[tokio::test]
async fn cache_is_off_by_default_and_honours_no_store() {
    let f = service().await;
    let p = build::<ForwardAuth>(settings(&f, json!({})));
    for n in 1..=3 {
        run(
            &*p,
            &mut request("GET", "/a", &[GOOD]),
            &mut context("h", "/a"),
        )
        .await
        .go_on();
        assert_eq!(f.hits(), n);
    }
    let ns = fake(|_| async { reply(200, &[("cache-control", "private, no-store")], "") }).await;
    let p = build::<ForwardAuth>(json!({"url": ns.url("/"), "consumer": "svc", "cache_ttl": "1m"}));
    for n in 1..=2 {
        run(
            &*p,
            &mut request("GET", "/a", &[GOOD]),
            &mut context("h", "/a"),
        )
        .await
        .go_on();
        assert_eq!(ns.hits(), n);
    }
}

#[tokio::test]
async fn cache_expires_and_survives_a_reload_with_the_same_settings() {
    let f = service().await;
    let state = StateRegistry::default();
    let s = settings(&f, json!({"cache_ttl": "1m"}));
    let p = build_with::<ForwardAuth>(s.clone(), &state).unwrap();
    run(
        &*p,
        &mut request("GET", "/a", &[GOOD]),
        &mut context("h", "/a"),
    )
    .await
    .go_on();
    let p = build_with::<ForwardAuth>(s, &state).unwrap();
    assert!(
        !run(
            &*p,
            &mut request("GET", "/a", &[GOOD]),
            &mut context("h", "/a")
        )
        .await
        .go_on()
        .waited
    );
    assert_eq!(f.hits(), 1);

    let p = build::<ForwardAuth>(settings(&f, json!({"cache_ttl": "100ms"})));
    run(
        &*p,
        &mut request("GET", "/e", &[GOOD]),
        &mut context("h", "/e"),
    )
    .await
    .go_on();
    let start = f.hits();
    // Re-poll until the entry expired (bounded), instead of one blind sleep.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let ran = run(
            &*p,
            &mut request("GET", "/e", &[GOOD]),
            &mut context("h", "/e"),
        )
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
    assert_eq!(f.hits(), start + 1);
}

#[test]
fn cache_keys_separate_fields() {
    let p = ForwardAuthPlugin {
        url: "http://a/".parse().unwrap(),
        method: http::Method::GET,
        send: vec![HeaderName::from_static("a"), HeaderName::from_static("b")].into(),
        copy: Vec::new().into(),
        client: Vec::new().into(),
        consumer_header: None,
        fixed: None,
        directory: Arc::default(),
        http: crate::builtin::util::test_client(),
        timeout: Duration::from_secs(1),
        cache: None,
        identity: Arc::default(),
        inflight: Default::default(),
    };
    let key = |headers: &[(&str, &str)], host: &str, uri: &str| {
        p.cache_key(
            &request("GET", "/", headers),
            host,
            &HeaderValue::from_str(uri).unwrap(),
        )
    };
    let base = key(&[("a", "1")], "h", "/x");
    assert_eq!(
        base,
        key(&[("a", "1"), ("c", "ignored")], "h", "/x"),
        "unsent headers do not count"
    );
    for other in [
        key(&[("a", "1")], "h", "/y"),
        key(&[("a", "1")], "hx", "/"),
        key(&[("b", "1")], "h", "/x"),
        key(&[("a", "1"), ("b", "")], "h", "/x"),
        key(&[("a", "1"), ("a", "")], "h", "/x"),
        key(&[("a", "1,")], "h", "/x"),
        key(&[], "h", "/x"),
    ] {
        assert_ne!(base, other);
    }
    // Value boundaries matter: ("ab","c") is not ("a","bc").
    assert_ne!(
        key(&[("a", "ab"), ("a", "c")], "h", "/"),
        key(&[("a", "a"), ("a", "bc")], "h", "/")
    );
}

#[test]
fn cache_control_directives() {
    let h = |v: &str| {
        let mut m = HeaderMap::new();
        m.insert(header::CACHE_CONTROL, HeaderValue::from_str(v).unwrap());
        m
    };
    assert!(cacheable(&HeaderMap::new()));
    assert!(cacheable(&h("private, max-age=60")));
    assert!(!cacheable(&h("no-store")));
    assert!(!cacheable(&h("max-age=0, No-Cache")));
    assert!(!cacheable(&h("no-cache=\"set-cookie\"")));
}

#[test]
fn settings_are_checked_at_build() {
    let ok = json!({"url": "http://auth:9000/verify", "consumer": "svc"});
    let with = |k: &str, v: serde_json::Value| {
        let mut s = ok.clone();
        s[k] = v;
        s
    };
    let _ = build::<ForwardAuth>(ok.clone());
    let cases = [
        (with("url", json!("ftp://auth/")), "url"),
        (with("url", json!("/verify")), "url"),
        (with("url", json!("http://user:pw@auth/")), "url"),
        (json!({"url": "http://auth/"}), ""),
        (with("consumer", json!("nobody")), "consumer"),
        (with("cache_ttl", json!("6m")), "cache_ttl"),
        (with("timeout", json!("0s")), "timeout"),
        (
            with("request_headers", json!(["authorization", "host"])),
            "request_headers",
        ),
        (
            with("request_headers", json!(["x-forwarded-uri"])),
            "request_headers",
        ),
        (
            with("copy_headers", json!(["content-length"])),
            "copy_headers",
        ),
        (
            with("client_headers", json!(["transfer-encoding"])),
            "client_headers",
        ),
        (with("unknown", json!(1)), ""),
        (with("method", json!("get")), "method"),
    ];
    for (settings, key) in cases {
        let e = build_err::<ForwardAuth>(settings.clone());
        let first = e.path.first().map(|s| format!("{s:?}")).unwrap_or_default();
        assert!(first.contains(key), "{settings}: {first} / {}", e.message);
    }
    let e = build_err::<ForwardAuth>(json!({"url": "http://auth/"}));
    assert!(e.message.contains("consumer_header"), "{}", e.message);
    let e = build_err::<ForwardAuth>(with("request_headers", json!(["authorization", "host"])));
    assert_eq!(e.path.len(), 2, "points at the element: {:?}", e.path);
}
