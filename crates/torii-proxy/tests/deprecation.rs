//! A deprecated route (`routes[].deprecation`): `Deprecation`, `Sunset` and `Link` on every
//! answer (the upstream's own `Link` kept), 410 after the sunset when asked, the worked
//! example of docs/api-evolution.md (a version chosen by header, the old one deprecated), and
//! bad settings refused with their place and fix.
#![allow(clippy::unwrap_used)]

mod support;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use support::*;

/// An upstream answering with its name and a `Link` of its own, counting its requests.
async fn named(name: &'static str) -> (FakeUpstream, Arc<AtomicUsize>) {
    let n = Arc::new(AtomicUsize::new(0));
    let seen = n.clone();
    let up = upstream(false, move |_req: Request<Incoming>| {
        let seen = seen.clone();
        async move {
            seen.fetch_add(1, Ordering::SeqCst);
            Response::builder()
                .header("link", "</orders?page=2>; rel=\"next\"")
                .body(full(name))
                .unwrap()
        }
    })
    .await;
    (up, n)
}

/// A request for version 1 (`api-version: 1`).
async fn as_v1(a: std::net::SocketAddr, path: &str) -> (StatusCode, http::HeaderMap, bytes::Bytes) {
    use http_body_util::BodyExt;
    let req = Request::get(format!("http://{a}{path}"))
        .header("api-version", "1")
        .body(full(""))
        .unwrap();
    let resp = h1_client().request(req).await.unwrap();
    let (parts, body) = resp.into_parts();
    (
        parts.status,
        parts.headers,
        body.collect().await.unwrap().to_bytes(),
    )
}

fn cfg(v1: &FakeUpstream, v2: &FakeUpstream, deprecation: &str) -> String {
    config(&format!(
        "upstreams:\n  - name: orders-v1\n    targets: [{{url: 'http://{}'}}]\n  - name: orders-v2\n    targets: [{{url: 'http://{}'}}]\nroutes:\n  - name: orders-v1\n    match:\n      path_prefix: /orders\n      headers: [{{name: api-version, value: '1'}}]\n    upstream: orders-v1\n    deprecation: {deprecation}\n  - name: orders\n    match: {{path_prefix: /orders}}\n    upstream: orders-v2\n",
        v1.addr, v2.addr
    ))
}

#[tokio::test]
async fn a_deprecated_version_says_so_and_the_default_is_the_new_one() {
    let ((v1, _), (v2, _)) = (named("v1").await, named("v2").await);
    let gw = gateway(&cfg(
        &v1,
        &v2,
        "{since: 2026-06-01, sunset: '2099-01-31T12:00:00Z', successor: 'https://api.example.com/orders', link: 'https://example.com/deprecations/orders-v1'}",
    ))
    .await;
    let a = addr(&gw).await;
    let (s, h, b) = as_v1(a, "/orders").await;
    assert_eq!((s, &b[..]), (StatusCode::OK, &b"v1"[..]));
    // 2026-06-01T00:00:00Z
    assert_eq!(h.get("deprecation").unwrap(), "@1780272000");
    assert_eq!(h.get("sunset").unwrap(), "Sat, 31 Jan 2099 12:00:00 GMT");
    let links: Vec<&str> = h
        .get_all("link")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert_eq!(
        links,
        [
            "</orders?page=2>; rel=\"next\"",
            "<https://api.example.com/orders>; rel=\"successor-version\", <https://example.com/deprecations/orders-v1>; rel=\"deprecation\""
        ]
    );
    // Without the header: the current version, not deprecated.
    let (s, h, b) = get(&h1_client(), format!("http://{a}/orders")).await;
    assert_eq!((s, &b[..]), (StatusCode::OK, &b"v2"[..]));
    assert!(h.get("deprecation").is_none() && h.get("sunset").is_none());
}

#[tokio::test]
async fn after_the_sunset_the_route_answers_410_when_asked() {
    let ((v1, n1), (v2, _)) = (named("v1").await, named("v2").await);
    let gw = gateway(&cfg(
        &v1,
        &v2,
        "{since: 2020-01-01, sunset: 2021-01-01, successor: /orders, gone_after_sunset: true}",
    ))
    .await;
    let a = addr(&gw).await;
    let (s, h, b) = as_v1(a, "/orders/7").await;
    assert_eq!(s, StatusCode::GONE);
    assert_eq!(json(&b)["error"]["code"], "gone");
    assert_eq!(h.get("sunset").unwrap(), "Fri, 01 Jan 2021 00:00:00 GMT");
    assert_eq!(
        h.get("link").unwrap(),
        "</orders>; rel=\"successor-version\""
    );
    assert_eq!(n1.load(Ordering::SeqCst), 0, "never proxied");
    // Past its sunset but not told to refuse: still served, still marked.
    let gw = gateway(&cfg(&v1, &v2, "{since: 2020-01-01, sunset: 2021-01-01}")).await;
    let a = addr(&gw).await;
    let (s, h, _) = as_v1(a, "/orders").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(h.get("deprecation").unwrap(), "@1577836800");
}

#[test]
fn bad_deprecations_are_refused() {
    let fake = |p: u16| FakeUpstream {
        addr: ([127, 0, 0, 1], p).into(),
        stats: Default::default(),
    };
    let cases = [
        (
            "{since: tomorrow}",
            "`tomorrow` is not an RFC 3339 date or date-time",
        ),
        (
            "{since: 2027-01-01, sunset: 2026-01-01}",
            "routes[0].deprecation.sunset: the sunset is before the deprecation",
        ),
        (
            "{since: 2027-01-01, gone_after_sunset: true}",
            "routes[0].deprecation.gone_after_sunset: `gone_after_sunset` needs a `sunset`",
        ),
        (
            "{since: 2027-01-01, successor: 'not a url'}",
            "routes[0].deprecation.successor: `not a url` is not a URL",
        ),
    ];
    for (d, want) in cases {
        let err = match load_str("dep.yaml", &cfg(&fake(1), &fake(2), d)) {
            Ok(_) => panic!("accepted {d}"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains(want), "{d}: wanted {want}, got:\n{err}");
    }
}
