//! API evolution end to end. The version a request names (`versioning`: a header, a query
//! parameter or the `Accept` media type, with a default or 400) selects among routes; a
//! deprecated route (`routes[].deprecation`) sends `Deprecation`, `Sunset` and `Link` on every
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

fn versioned(v1: &FakeUpstream, v2: &FakeUpstream, versioning: &str) -> String {
    config(&format!(
        "versioning: {versioning}\nupstreams:\n  - name: orders-v1\n    targets: [{{url: 'http://{}'}}]\n  - name: orders-v2\n    targets: [{{url: 'http://{}'}}]\nroutes:\n  - name: orders-v1\n    match: {{path_prefix: /orders, version: '1'}}\n    upstream: orders-v1\n  - name: orders-v2\n    match: {{path_prefix: /orders, version: '2'}}\n    upstream: orders-v2\n  - name: health\n    match: {{path: /healthz}}\n    direct_response: {{body: ok}}\n",
        v1.addr, v2.addr
    ))
}

async fn with(
    a: std::net::SocketAddr,
    path: &str,
    fields: &[(&str, &str)],
) -> (StatusCode, bytes::Bytes) {
    use http_body_util::BodyExt;
    let mut b = Request::get(format!("http://{a}{path}"));
    for (k, v) in fields {
        b = b.header(*k, *v);
    }
    let resp = h1_client()
        .request(b.body(full("")).unwrap())
        .await
        .unwrap();
    let s = resp.status();
    (s, resp.into_body().collect().await.unwrap().to_bytes())
}

#[tokio::test]
async fn the_accept_media_type_selects_the_version_with_a_default() {
    let ((v1, _), (v2, _)) = (named("v1").await, named("v2").await);
    let gw = gateway(&versioned(
        &v1,
        &v2,
        "{accept: 'application/vnd.example.v{version}+json', default: '2'}",
    ))
    .await;
    let a = addr(&gw).await;
    type Case<'a> = (&'a [(&'a str, &'a str)], StatusCode, &'a [u8]);
    let cases: [Case<'_>; 6] = [
        (
            &[("accept", "application/vnd.example.v1+json")],
            StatusCode::OK,
            b"v1",
        ),
        (
            &[("accept", "text/html, application/vnd.example.v2+json;q=0.9")],
            StatusCode::OK,
            b"v2",
        ),
        (
            &[("accept", "Application/VND.Example.V1+JSON")],
            StatusCode::OK,
            b"v1",
        ),
        // No version named: the default.
        (&[], StatusCode::OK, b"v2"),
        (&[("accept", "application/json")], StatusCode::OK, b"v2"),
        // A version no route serves.
        (
            &[("accept", "application/vnd.example.v9+json")],
            StatusCode::NOT_FOUND,
            b"",
        ),
    ];
    for (fields, status, body) in cases {
        let (s, b) = with(a, "/orders/1", fields).await;
        assert_eq!(s, status, "{fields:?}");
        if status == StatusCode::OK {
            assert_eq!(&b[..], body, "{fields:?}");
        }
    }
    // An unversioned route takes any request.
    assert_eq!(with(a, "/healthz", &[]).await.0, StatusCode::OK);
}

#[tokio::test]
async fn without_a_default_a_request_that_names_no_version_gets_400() {
    let ((v1, _), (v2, _)) = (named("v1").await, named("v2").await);
    let gw = gateway(&versioned(&v1, &v2, "{header: api-version}")).await;
    let a = addr(&gw).await;
    let (s, b) = with(a, "/orders", &[]).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(json(&b)["error"]["code"], "version_required");
    assert_eq!(with(a, "/orders", &[("api-version", "1")]).await.1, "v1");
    assert_eq!(with(a, "/orders", &[("api-version", "2")]).await.1, "v2");
    assert_eq!(with(a, "/healthz", &[]).await.0, StatusCode::OK);
    // The query parameter source.
    let gw = gateway(&versioned(&v1, &v2, "{query: version}")).await;
    let a = addr(&gw).await;
    assert_eq!(with(a, "/orders?x=1&version=2", &[]).await.1, "v2");
    assert_eq!(with(a, "/orders?version=1", &[]).await.1, "v1");
    assert_eq!(
        with(a, "/orders?version=", &[]).await.0,
        StatusCode::BAD_REQUEST
    );
}

#[test]
fn bad_versioning_is_refused() {
    let fake = |p: u16| FakeUpstream {
        addr: ([127, 0, 0, 1], p).into(),
        stats: Default::default(),
    };
    let cases = [
        (
            "{header: api-version, query: v}",
            "`versioning` names exactly one of `header`, `query` and `accept`",
        ),
        (
            "{accept: 'application/vnd.example+json'}",
            "versioning.accept: `application/vnd.example+json` is not a media type with one `{version}`",
        ),
        (
            "{header: api-version, default: 'a;b'}",
            "versioning.default: `a;b` is not a version",
        ),
    ];
    for (v, want) in cases {
        let err = match load_str("v.yaml", &versioned(&fake(1), &fake(2), v)) {
            Ok(_) => panic!("accepted {v}"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains(want), "{v}: wanted {want}, got:\n{err}");
    }
    // `match.version` without `versioning`.
    let yaml = config(
        "routes:\n  - name: r\n    match: {path: /, version: '1'}\n    direct_response: {}\n",
    );
    let err = load_str("v.yaml", &yaml).err().unwrap().to_string();
    assert!(
        err.contains("routes[0].match.version: `match.version` needs the top-level `versioning`"),
        "{err}"
    );
}
