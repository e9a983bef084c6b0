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
async fn values_pasted_into_the_path_cannot_climb_out_of_it() {
    let up = echo_upstream(false).await;
    let gw = gateway(&cfg(&up, "{path: '/v2/{query.s}/items'}")).await;
    let a = addr(&gw).await;
    let (s, echo) = call(a, "GET", "/api/orders/1?s=shoes", &[]).await;
    assert_eq!(
        (s, echo["uri"].as_str()),
        (StatusCode::OK, Some("/v2/shoes/items?s=shoes"))
    );
    for q in ["..", "%2E%2e", "a/../../admin"] {
        let (s, _) = call(a, "GET", &format!("/api/orders/1?s={q}"), &[]).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{q}");
    }
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

/// An upstream with JSON, large JSON, large text and broken JSON answers.
async fn documents() -> FakeUpstream {
    upstream(false, |req: Request<hyper::body::Incoming>| async move {
        let (ct, body) = match req.uri().path() {
            "/api/orders/1" => (
                "application/json",
                r#"{"data":{"fullName":"Ada","internal":true,"address":{"city":"Paris"}}}"#
                    .to_string(),
            ),
            "/api/orders/big" => (
                "application/json",
                format!("{{\"pad\":\"{}\"}}", "x".repeat(10 << 20)),
            ),
            "/api/orders/text" => ("text/plain", "y".repeat(10 << 20)),
            _ => ("application/problem+json", "{not json".to_string()),
        };
        http::Response::builder()
            .header("content-type", ct)
            .body(full(body))
            .unwrap()
    })
    .await
}

fn json_route(up: &FakeUpstream) -> String {
    config(&format!(
        "upstreams:\n  - name: up\n    targets: [{{url: 'http://{}'}}]\nroutes:\n  - name: orders\n    match: {{path: '/api/orders/{{id}}'}}\n    upstream: up\n    plugins:\n      response_transform:\n        max_body: 1MiB\n        json:\n          unwrap: data\n          rename: {{/fullName: name}}\n          move: {{/address/city: /city}}\n          remove: [/internal, /address]\n          set: {{/id: '{{params.id}}', /meta/version: 2}}\n          wrap: result\n",
        up.addr
    ))
}

#[tokio::test]
async fn json_bodies_are_reshaped_and_large_ones_are_refused_not_passed_on() {
    let up = documents().await;
    let gw = gateway(&json_route(&up)).await;
    let a = addr(&gw).await;
    let client = h1_client();
    let (s, h, b) = get(&client, format!("http://{a}/api/orders/1")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        json(&b),
        serde_json::json!({"result": {"name": "Ada", "city": "Paris", "id": "1", "meta": {"version": 2}}})
    );
    assert_eq!(h["content-length"], b.len().to_string().as_str());
    // A JSON body over max_body: 502, never the untransformed body.
    let (s, _, b) = get(&client, format!("http://{a}/api/orders/big")).await;
    assert_eq!(s, StatusCode::BAD_GATEWAY);
    assert_eq!(json(&b)["error"]["code"], "response_too_large");
    // A large body of another media type on the same route streams through untouched.
    let (s, _, b) = get(&client, format!("http://{a}/api/orders/text")).await;
    assert_eq!((s, b.len()), (StatusCode::OK, 10 << 20));
    // A JSON media type whose body is not JSON passes as it came.
    let (s, _, b) = get(&client, format!("http://{a}/api/orders/broken")).await;
    assert_eq!((s, &b[..]), (StatusCode::OK, &b"{not json"[..]));
}

#[test]
fn json_operations_are_checked_at_load() {
    let fake = FakeUpstream {
        addr: ([127, 0, 0, 1], 1).into(),
        stats: Default::default(),
    };
    let base = json_route(&fake);
    for (from, to, want) in [
        (
            "remove: [/internal, /address]",
            "remove: [internal]",
            "response_transform.json.remove.internal: `internal` is not a JSON pointer",
        ),
        (
            "/id: '{params.id}'",
            "/id: '{params.nope}'",
            "the route has no parameter `nope`",
        ),
    ] {
        let yaml = base.replace(from, to);
        let err = match load_str("j.yaml", &yaml) {
            Ok(_) => panic!("accepted {to}"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains(want), "{to}: wanted {want}, got:\n{err}");
    }
}

/// An upstream that answers with the request's body and its Content-Length.
async fn body_echo() -> FakeUpstream {
    upstream(false, |req: Request<hyper::body::Incoming>| async move {
        let len = req
            .headers()
            .get("content-length")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        let body = req.into_body().collect().await.unwrap().to_bytes();
        http::Response::builder()
            .header("x-received-length", len)
            .body(full(body))
            .unwrap()
    })
    .await
}

async fn post(
    a: std::net::SocketAddr,
    ct: &str,
    body: Vec<u8>,
) -> (StatusCode, http::HeaderMap, bytes::Bytes) {
    let req = Request::post(format!("http://{a}/api/orders/5"))
        .header("content-type", ct)
        .body(full(body))
        .unwrap();
    let resp = h1_client().request(req).await.unwrap();
    let (parts, b) = resp.into_parts();
    (
        parts.status,
        parts.headers,
        b.collect().await.unwrap().to_bytes(),
    )
}

#[tokio::test]
async fn json_request_bodies_are_reshaped_within_their_limit() {
    let up = body_echo().await;
    let gw = gateway(&config(&format!(
        "upstreams:\n  - name: up\n    targets: [{{url: 'http://{}'}}]\nroutes:\n  - name: orders\n    match: {{path: '/api/orders/{{id}}'}}\n    upstream: up\n    plugins:\n      request_transform:\n        max_body: 64KiB\n        json: {{rename: {{/name: fullName}}, set: {{/orderId: '{{params.id}}'}}, remove: [/debug]}}\n",
        up.addr
    )))
    .await;
    let a = addr(&gw).await;
    let (s, h, b) = post(
        a,
        "application/json",
        br#"{"name":"Ada","debug":true}"#.to_vec(),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        json(&b),
        serde_json::json!({"fullName": "Ada", "orderId": "5"})
    );
    assert_eq!(h["x-received-length"], b.len().to_string().as_str());
    // Over the limit: 413, nothing sent on.
    let big = format!("{{\"pad\":\"{}\"}}", "x".repeat(100 << 10)).into_bytes();
    let (s, _, b) = post(a, "application/json", big).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(json(&b)["error"]["code"], "payload_too_large");
    // A body that says it is JSON and is not: 400, never forwarded unchanged.
    let (s, _, b) = post(a, "application/json", br#"{"name":"x","#.to_vec()).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b:?}");
    // Another media type, even a large one, passes untouched.
    let text = vec![b'z'; 200 << 10];
    let (s, _, b) = post(a, "text/plain", text.clone()).await;
    assert_eq!((s, b.len()), (StatusCode::OK, text.len()));
}

#[tokio::test]
async fn response_headers_from_templates_and_statuses_mapped() {
    // The upstream answers 404 with two x-internal values and a server header.
    let up = upstream(false, |req: Request<hyper::body::Incoming>| async move {
        let status = if req.uri().path().ends_with("/missing") {
            404
        } else {
            200
        };
        http::Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .header("x-internal", "a")
            .header("x-internal", "b")
            .header("x-powered-by", "php")
            .body(full("{\"ok\":true}"))
            .unwrap()
    })
    .await;
    let gw = gateway(&config(&format!(
        "upstreams:\n  - name: up\n    targets: [{{url: 'http://{}'}}]\nroutes:\n  - name: orders\n    match: {{path: '/api/orders/{{id}}'}}\n    upstream: up\n    plugins:\n      response_transform:\n        headers:\n          remove: [x-powered-by]\n          rename: {{x-internal: x-detail}}\n          set: {{x-order: 'order-{{params.id}}', x-request: '{{request_id}}', x-empty: '{{headers.x-none}}'}}\n          add: {{x-detail: 'via {{headers.x-client}}'}}\n        status: {{'404': 410}}\n",
        up.addr
    )))
    .await;
    let a = addr(&gw).await;
    let client = h1_client();
    let (s, h) = get_with_header(a, "/api/orders/7", ("x-client", "web")).await;
    assert_eq!(s, StatusCode::OK);
    assert!(h.get("x-powered-by").is_none());
    assert!(h.get("x-internal").is_none());
    let detail: Vec<_> = h
        .get_all("x-detail")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert_eq!(detail, ["a", "b", "via web"]);
    assert_eq!(h["x-order"], "order-7");
    assert!(!h["x-request"].is_empty());
    assert!(h.get("x-empty").is_none(), "an empty value is not set");
    // 404 from the upstream is answered 410, its body kept.
    let (s, _, b) = get(&client, format!("http://{a}/api/orders/missing")).await;
    assert_eq!(s, StatusCode::GONE);
    assert_eq!(&b[..], b"{\"ok\":true}");
    // Bad mappings and unknown variables are load errors.
    let fake = FakeUpstream {
        addr: ([127, 0, 0, 1], 1).into(),
        stats: Default::default(),
    };
    for (plugin, want) in [
        ("{status: {'404': 204}}", "is not a status to map to"),
        (
            "{status: {'304': 200}}",
            "is not a status that can be mapped",
        ),
        (
            "{status: {'abc': 200}}",
            "is not a status that can be mapped",
        ),
        (
            "{headers: {set: {x-a: '{params.nope}'}}}",
            "response_transform.headers.set.x-a: the route has no parameter `nope`",
        ),
    ] {
        let yaml = config(&format!(
            "upstreams:\n  - name: up\n    targets: [{{url: 'http://{}'}}]\nroutes:\n  - name: orders\n    match: {{path: '/api/orders/{{id}}'}}\n    upstream: up\n    plugins:\n      response_transform: {plugin}\n",
            fake.addr
        ));
        let err = match load_str("r.yaml", &yaml) {
            Ok(_) => panic!("accepted {plugin}"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains(want), "{plugin}: wanted {want}, got:\n{err}");
        assert!(err.contains("r.yaml:"), "{err}");
    }
}

#[tokio::test]
async fn jq_filters_reshape_bodies_both_ways() {
    let up = upstream(false, |req: Request<hyper::body::Incoming>| async move {
        let path = req.uri().path().to_string();
        let sent = req.into_body().collect().await.unwrap().to_bytes();
        let body = match path.as_str() {
            "/api/orders/1" => {
                r#"{"data":{"fullName":"Ada","items":[{"sku":"A","qty":2},{"sku":"B","qty":1}]}}"#
                    .to_string()
            }
            "/api/orders/2" => r#"[1,2,3]"#.to_string(),
            // The request body as the upstream got it.
            _ => String::from_utf8_lossy(&sent).into_owned(),
        };
        http::Response::builder()
            .header("content-type", "application/json")
            .body(full(body))
            .unwrap()
    })
    .await;
    let gw = gateway(&config(&format!(
        "upstreams:\n  - name: up\n    targets: [{{url: 'http://{a}'}}]\nroutes:\n  - name: orders\n    match: {{path: '/api/orders/{{id}}', methods: [GET]}}\n    upstream: up\n    plugins:\n      response_transform:\n        json:\n          jq: '.data | {{name: .fullName, count: (.items | map(.qty) | add)}}'\n  - name: create\n    match: {{path: /api/orders, methods: [POST]}}\n    upstream: up\n    plugins:\n      request_transform:\n        json:\n          jq: '{{order: {{lines: [.items[] | {{sku, n: .qty}}]}}}}'\n",
        a = up.addr
    )))
    .await;
    let a = addr(&gw).await;
    let client = h1_client();
    let (s, h, b) = get(&client, format!("http://{a}/api/orders/1")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(json(&b), serde_json::json!({"name": "Ada", "count": 3}));
    assert_eq!(h["content-length"], b.len().to_string().as_str());
    // The filter fails on this document (`.data` of an array): 502, never the raw body.
    let (s, _, b) = get(&client, format!("http://{a}/api/orders/2")).await;
    assert_eq!(s, StatusCode::BAD_GATEWAY);
    assert_eq!(json(&b)["error"]["code"], "transform_failed");
    // The request body, reshaped before it goes up (the upstream echoes it).
    let post = |body: &'static str| {
        Request::post(format!("http://{a}/api/orders"))
            .header("content-type", "application/json")
            .body(full(body))
            .unwrap()
    };
    let resp = client
        .request(post(r#"{"items":[{"sku":"A","qty":2,"price":9}]}"#))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let b = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(
        json(&b),
        serde_json::json!({"order": {"lines": [{"sku": "A", "n": 2}]}})
    );
    // A client body the filter cannot take: 400.
    let resp = client.request(post(r#"{"items":7}"#)).await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    // A filter naming what does not exist, or reaching for the environment: load errors.
    let fake = FakeUpstream {
        addr: ([127, 0, 0, 1], 1).into(),
        stats: Default::default(),
    };
    for (jq, want) in [
        (".a | nosuch", "`nosuch` at character 6"),
        ("$ENV.SECRET", "`$ENV`"),
        ("{a:", "does not parse"),
    ] {
        let yaml = config(&format!(
            "upstreams:\n  - name: up\n    targets: [{{url: 'http://{}'}}]\nroutes:\n  - name: r\n    match: {{path: /r}}\n    upstream: up\n    plugins:\n      response_transform:\n        json: {{jq: '{jq}'}}\n",
            fake.addr
        ));
        let err = match load_str("q.yaml", &yaml) {
            Ok(_) => panic!("accepted {jq}"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains("response_transform.json.jq: "), "{err}");
        assert!(err.contains(want), "{jq}: wanted {want}, got:\n{err}");
    }
}

fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn zlib(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

#[tokio::test]
async fn compressed_bodies_are_decoded_when_asked_and_never_corrupted() {
    // /gz: a gzip JSON document; /zz: deflate (zlib); /bomb: 8 MiB of JSON that gzips to a
    // few KiB; /broken: says gzip, is not; /text: gzip text.
    let up = upstream(false, |req: Request<hyper::body::Incoming>| async move {
        let doc = br#"{"data":{"fullName":"Ada"}}"#;
        let (coding, ct, body) = match req.uri().path() {
            "/a/gz" => ("gzip", "application/json", gzip(doc)),
            "/a/zz" => ("deflate", "application/json", zlib(doc)),
            "/a/bomb" => (
                "gzip",
                "application/json",
                gzip(format!("{{\"pad\":\"{}\"}}", " ".repeat(8 << 20)).as_bytes()),
            ),
            "/a/broken" => ("gzip", "application/json", b"not gzip at all".to_vec()),
            // Text that compresses badly: a large coded body (decoded off the runtime).
            "/a/noise" => {
                let mut x: u64 = 7;
                let text: String = (0..100_000)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        char::from(b'a' + (x % 26) as u8)
                    })
                    .collect();
                (
                    "gzip",
                    "text/plain",
                    gzip(format!("http://internal/{text}").as_bytes()),
                )
            }
            _ => ("gzip", "text/plain", gzip(b"see http://internal/ now")),
        };
        http::Response::builder()
            .header("content-type", ct)
            .header("content-encoding", coding)
            .header("etag", "\"v1\"")
            .body(full(body))
            .unwrap()
    })
    .await;
    let route = |name: &str, prefix: &str, plugin: &str| {
        format!(
            "  - name: {name}\n    match: {{path_prefix: {prefix}}}\n    upstream: up\n    rewrite: {{strip_prefix: {prefix}}}\n    plugins:\n      response_transform: {plugin}\n"
        )
    };
    let gw = gateway(&config(&format!(
        "upstreams:\n  - name: up\n    targets: [{{url: 'http://{}'}}]\nroutes:\n{}{}{}",
        up.addr,
        route(
            "decode",
            "/d",
            "{decompress: true, replace: [{from: 'http://internal/', to: 'https://api/'}], json: {unwrap: data}}"
        ),
        route("keep", "/k", "{json: {unwrap: data}}"),
        route(
            "text",
            "/t",
            "{decompress: true, replace: [{from: 'http://internal/', to: 'https://api/'}]}"
        ),
    )))
    .await;
    let a = addr(&gw).await;
    let client = h1_client();
    for path in ["/d/a/gz", "/d/a/zz"] {
        let (s, h, b) = get(&client, format!("http://{a}{path}")).await;
        assert_eq!(s, StatusCode::OK, "{path}");
        assert!(h.get("content-encoding").is_none(), "{path}");
        assert_eq!(json(&b), serde_json::json!({"fullName": "Ada"}), "{path}");
        assert_eq!(h["content-length"], b.len().to_string().as_str());
        assert_eq!(h["etag"], "W/\"v1\"");
    }
    let (s, h, b) = get(&client, format!("http://{a}/t/a/noise")).await;
    assert_eq!(s, StatusCode::OK);
    assert!(h.get("content-encoding").is_none());
    assert!(
        b.starts_with(b"https://api/") && b.len() == 100_000 + 12,
        "{}",
        b.len()
    );
    // Decoded text too, when its media type is listed.
    let (s, h, b) = get(&client, format!("http://{a}/t/text")).await;
    assert_eq!((s, &b[..]), (StatusCode::OK, &b"see https://api/ now"[..]));
    assert!(h.get("content-encoding").is_none());
    // A body that inflates past max_body, or does not decode: JSON operations must run, so
    // 502; never a corrupted or half-decoded body.
    for path in ["/d/a/bomb", "/d/a/broken"] {
        let (s, _, b) = get(&client, format!("http://{a}{path}")).await;
        assert_eq!(s, StatusCode::BAD_GATEWAY, "{path}");
        assert_eq!(json(&b)["error"]["code"], "transform_failed");
    }
    // Without JSON operations, a body that does not decode passes as it came.
    let (s, h, b) = get(&client, format!("http://{a}/t/a/broken")).await;
    assert_eq!((s, &b[..]), (StatusCode::OK, &b"not gzip at all"[..]));
    assert_eq!(h["content-encoding"], "gzip");
    // Without `decompress`, a coded JSON body cannot be read by the operations that must
    // run on it: 502, never the untransformed document.
    let (s, _, b) = get(&client, format!("http://{a}/k/a/gz")).await;
    assert_eq!(s, StatusCode::BAD_GATEWAY);
    assert_eq!(json(&b)["error"]["code"], "transform_failed");
}

#[tokio::test]
async fn json_operations_ask_the_upstream_for_what_they_can_read() {
    // The upstream honours Range (206 with a slice) and Accept-Encoding gzip, and reports
    // what it was asked in headers.
    let up = upstream(false, |req: Request<hyper::body::Incoming>| async move {
        let doc = br#"{"data":{"fullName":"Ada","internal":1}}"#;
        let ae = req
            .headers()
            .get("accept-encoding")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        let b = http::Response::builder()
            .header("content-type", "application/json")
            .header("x-saw-accept-encoding", ae.clone());
        if req.headers().contains_key("range") {
            return b
                .status(206)
                .header("content-range", "bytes 0-9/41")
                .body(full(&doc[..10]))
                .unwrap();
        }
        if ae.contains("gzip") {
            return b
                .header("content-encoding", "gzip")
                .body(full(gzip(doc)))
                .unwrap();
        }
        b.body(full(&doc[..])).unwrap()
    })
    .await;
    let route = |name: &str, prefix: &str, plugin: &str| {
        format!(
            "  - name: {name}\n    match: {{path_prefix: {prefix}}}\n    upstream: up\n    plugins:\n      response_transform: {plugin}\n"
        )
    };
    let gw = gateway(&config(&format!(
        "upstreams:\n  - name: up\n    targets: [{{url: 'http://{}'}}]\nroutes:\n{}{}",
        up.addr,
        route("plain", "/p", "{json: {remove: [/data/internal]}}"),
        route(
            "decode",
            "/d",
            "{decompress: true, json: {remove: [/data/internal]}}"
        ),
    )))
    .await;
    let a = addr(&gw).await;
    let want = serde_json::json!({"data": {"fullName": "Ada"}});
    for (path, ae, seen) in [
        ("/p", "gzip, br", "identity"),
        ("/d", "br, gzip", "gzip, deflate"),
        ("/d", "gzip", "gzip"),
    ] {
        let req = Request::get(format!("http://{a}{path}"))
            .header("range", "bytes=0-9")
            .header("accept-encoding", ae)
            .body(full(""))
            .unwrap();
        let resp = h1_client().request(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{path} {ae}");
        assert_eq!(resp.headers()["x-saw-accept-encoding"], seen, "{path} {ae}");
        assert!(resp.headers().get("content-encoding").is_none());
        let b = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(json(&b), want, "{path} {ae}");
    }
}

#[tokio::test]
async fn replace_runs_only_on_the_listed_media_types_even_beside_json_operations() {
    let up = documents().await;
    let gw = gateway(&config(&format!(
        "upstreams:\n  - name: up\n    targets: [{{url: 'http://{}'}}]\nroutes:\n  - name: orders\n    match: {{path: '/api/orders/{{id}}'}}\n    upstream: up\n    plugins:\n      response_transform:\n        content_types: [text/]\n        replace: [{{from: Ada, to: Bob}}, {{from: yyyy, to: z}}]\n        max_body: 16MiB\n        json: {{remove: [/data/internal]}}\n",
        up.addr
    )))
    .await;
    let a = addr(&gw).await;
    let client = h1_client();
    let (s, _, b) = get(&client, format!("http://{a}/api/orders/1")).await;
    assert_eq!(s, StatusCode::OK);
    let v = json(&b);
    assert_eq!(
        v["data"]["fullName"], "Ada",
        "JSON is not a listed type: {v}"
    );
    assert!(v["data"].get("internal").is_none());
    // The text answer is listed: replaced.
    let (s, _, b) = get(&client, format!("http://{a}/api/orders/text")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b.len(), (10 << 20) / 4);
}

#[tokio::test]
async fn json_set_templates_see_the_request_as_the_client_sent_it() {
    // The upstream answers with the body it got.
    let up = upstream(false, |req: Request<hyper::body::Incoming>| async move {
        let sent = req.into_body().collect().await.unwrap().to_bytes();
        http::Response::builder()
            .header("content-type", "application/json")
            .body(full(sent))
            .unwrap()
    })
    .await;
    let gw = gateway(&config(&format!(
        "upstreams:\n  - name: up\n    targets: [{{url: 'http://{}'}}]\nroutes:\n  - name: r\n    match: {{path: /r}}\n    upstream: up\n    plugins:\n      request_transform:\n        headers: {{remove: [x-user], set: {{x-tenant: replaced}}}}\n        json: {{set: {{/user: '{{headers.x-user}}', /tenant: '{{headers.x-tenant}}'}}}}\n",
        up.addr
    )))
    .await;
    let a = addr(&gw).await;
    let req = Request::post(format!("http://{a}/r"))
        .header("content-type", "application/json")
        .header("x-user", "ada")
        .header("x-tenant", "acme")
        .body(full("{}"))
        .unwrap();
    let resp = h1_client().request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let b = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(
        json(&b),
        serde_json::json!({"user": "ada", "tenant": "acme"})
    );
}

#[tokio::test]
async fn query_values_from_the_request_are_not_encoded_twice() {
    let up = echo_upstream(false).await;
    let gw = gateway(&cfg(
        &up,
        "{query: {set: {copy: '{query.q}', id: '{params.id}', note: '50% {headers.x-n}'}}}",
    ))
    .await;
    let a = addr(&gw).await;
    let (s, echo) = call(a, "GET", "/api/orders/x+y?q=a%20b%2Bc+d", &[("x-n", "a&b")]).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        echo["uri"],
        "/orders/x+y?q=a%20b%2Bc+d&copy=a%20b%2Bc+d&id=x%2By&note=50%25%20a%26b"
    );
}

#[tokio::test]
async fn a_set_name_never_carries_the_clients_value() {
    let up = echo_upstream(false).await;
    let gw = gateway(&cfg(
        &up,
        "{headers: {set: {x-tenant: '{headers.x-missing}'}}, query: {remove: [debug], set: {tenant: '{consumer.id}', empty: '{headers.x-missing}'}}}",
    ))
    .await;
    let a = addr(&gw).await;
    let (s, echo) = call(
        a,
        "GET",
        "/api/orders/1?t%65nant=evil&d%65bug=1&%65mpty=x&keep=1",
        &[("x-tenant", "victim")],
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert!(echo["headers"].get("x-tenant").is_none(), "{echo}");
    assert_eq!(echo["uri"], "/orders/1?keep=1&tenant=u-7");
}
