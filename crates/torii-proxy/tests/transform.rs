//! `request_transform` end to end: a public API mapped onto an internal one (path from a
//! template over route parameters, method changed, headers and query parameters removed,
//! renamed, set and added from templates over headers, query, consumer and request id), the
//! route's own rewrite replaced, and templates checked at load with their place.
#![allow(clippy::unwrap_used)]

mod support;

use http::{Request, StatusCode};
use http_body_util::BodyExt;
use support::*;
use torii_plugins::consumers::format_key_hash;

const KEY: &str = "transform-test-key-0123456789";

fn cfg(up: &FakeUpstream, plugin: &str) -> String {
    config(&format!(
        "consumers:\n  - name: alice\n    id: u-7\n    keys: ['{hash}']\nupstreams:\n  - name: up\n    targets: [{{url: 'http://{addr}'}}]\nroutes:\n  - name: orders\n    match: {{path: '/api/orders/{{id}}'}}\n    upstream: up\n    rewrite: {{strip_prefix: /api}}\n    plugins:\n      key_auth: {{}}\n      request_transform: {plugin}\n",
        hash = format_key_hash(KEY.as_bytes()),
        addr = up.addr
    ))
}

async fn call(
    a: std::net::SocketAddr,
    method: &str,
    uri: &str,
    fields: &[(&str, &str)],
) -> (StatusCode, serde_json::Value) {
    let mut b = Request::builder()
        .method(method)
        .uri(format!("http://{a}{uri}"))
        .header("x-api-key", KEY);
    for (k, v) in fields {
        b = b.header(*k, *v);
    }
    let resp = h1_client()
        .request(b.body(full("")).unwrap())
        .await
        .unwrap();
    let s = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (
        s,
        if s == StatusCode::OK {
            json(&body)
        } else {
            serde_json::Value::Null
        },
    )
}

#[tokio::test]
async fn a_public_api_is_mapped_onto_the_internal_one() {
    let up = echo_upstream(false).await;
    let gw = gateway(&cfg(
        &up,
        "{path: '/internal/v2/orders/{params.id}', method: POST, headers: {remove: [x-debug], rename: {x-client: x-caller}, set: {x-tenant: '{consumer.id}', x-order: 'order-{params.id}', x-empty: '{headers.x-missing}'}, add: {x-trace: 'rid={request_id}'}}, query: {remove: [debug], rename: {q: search}, set: {region: '{headers.x-region}'}, add: {via: 'torii & co'}}}",
    ))
    .await;
    let a = addr(&gw).await;
    let (s, echo) = call(
        a,
        "GET",
        "/api/orders/42?q=shoes&debug=1&page=2",
        &[
            ("x-debug", "1"),
            ("x-client", "web"),
            ("x-region", "eu"),
            ("x-request-id", "req-1"),
        ],
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(echo["method"], "POST");
    assert_eq!(
        echo["uri"],
        "/internal/v2/orders/42?search=shoes&page=2&region=eu&via=torii%20%26%20co"
    );
    let h = &echo["headers"];
    assert!(h.get("x-debug").is_none());
    assert!(h.get("x-client").is_none());
    assert_eq!(h["x-caller"], "web");
    assert_eq!(h["x-tenant"], "u-7");
    assert_eq!(h["x-order"], "order-42");
    assert!(h.get("x-empty").is_none(), "an empty value is not set");
    assert_eq!(h["x-trace"], "rid=req-1");
}

#[tokio::test]
async fn only_the_query_changes_and_the_route_rewrite_still_applies() {
    let up = echo_upstream(false).await;
    let gw = gateway(&cfg(&up, "{query: {set: {user: '{consumer.name}'}}}")).await;
    let a = addr(&gw).await;
    let (s, echo) = call(a, "GET", "/api/orders/7", &[]).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(echo["method"], "GET");
    assert_eq!(echo["uri"], "/orders/7?user=alice");
}

#[test]
fn templates_are_checked_at_load() {
    let fake = FakeUpstream {
        addr: ([127, 0, 0, 1], 1).into(),
        stats: Default::default(),
    };
    let cases = [
        (
            "{path: '/v2/{params.order}'}",
            "request_transform.path: the route has no parameter `order`; its parameters: id",
        ),
        (
            "{headers: {set: {x-a: '{consumer.email}'}}}",
            "request_transform.headers.set.x-a: unknown variable `{consumer.email}`",
        ),
        (
            "{headers: {set: {'bad name': x}}}",
            "`bad name` is not a valid name",
        ),
        ("{path: 'v2/{params.id}'}", "does not start with `/`"),
        ("{}", "request_transform changes nothing"),
    ];
    for (plugin, want) in cases {
        let err = match load_str("t.yaml", &cfg(&fake, plugin)) {
            Ok(_) => panic!("accepted {plugin}"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains(want), "{plugin}: wanted {want}, got:\n{err}");
        assert!(err.contains("t.yaml:"), "{err}");
    }
}
