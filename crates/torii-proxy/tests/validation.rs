//! `request_validation` end to end, against the example OpenAPI 3.0 document
//! (examples/openapi/orders.yaml) and inline schemas: valid requests reach the upstream with
//! their bodies untouched; invalid ones get 400 listing every failing field (parameters and
//! body in one answer), 415 for a media type the operation does not take, 413 past
//! `max_body`; responses are checked in report-only mode (counted, never changed); and bad
//! documents, unknown operations and route mismatches are load errors with their place.
#![allow(clippy::unwrap_used)]

mod support;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use support::*;

fn spec() -> String {
    format!(
        "{}/../../examples/openapi/orders.yaml",
        env!("CARGO_MANIFEST_DIR")
    )
}

/// A gateway with one route per operation of the example document, plus `extra` routes.
fn cfg(up: &FakeUpstream, report: bool, extra: &str) -> String {
    let responses = if report { ", responses: report" } else { "" };
    let spec = spec();
    config(&format!(
        "upstreams:\n  - name: up\n    targets: [{{url: 'http://{addr}'}}]\nroutes:\n  \
         - name: list\n    match: {{path: /orders, methods: [GET]}}\n    upstream: up\n    plugins:\n      request_validation: {{openapi: {{spec: '{spec}', operation: listOrders}}{responses}}}\n  \
         - name: create\n    match: {{path: /orders, methods: [POST]}}\n    upstream: up\n    plugins:\n      request_validation: {{openapi: {{spec: '{spec}', operation: 'POST /orders'}}, max_errors: 5{responses}}}\n  \
         - name: get\n    match: {{path: '/orders/{{id}}', methods: [GET]}}\n    upstream: up\n    plugins:\n      request_validation: {{openapi: {{spec: '{spec}', operation: getOrder}}{responses}}}\n{extra}",
        addr = up.addr
    ))
}

async fn send(
    a: std::net::SocketAddr,
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (StatusCode, serde_json::Value) {
    let mut b = Request::builder()
        .method(method)
        .uri(format!("http://{a}{uri}"));
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let resp = h1_client()
        .request(b.body(full(body.to_string())).unwrap())
        .await
        .unwrap();
    let s = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (
        s,
        serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
    )
}

const JSON: (&str, &str) = ("content-type", "application/json");
const TENANT: (&str, &str) = ("x-tenant", "acme");
const GOOD: &str =
    r#"{"customer":"ada@example.com","items":[{"sku":"ABC-1234","qty":2}],"note":null}"#;

/// The listed failures as `in pointer keyword` lines.
fn failures(v: &serde_json::Value) -> Vec<String> {
    v["error"]["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("no error list: {v}"))
        .iter()
        .map(|e| {
            format!(
                "{} {} {}",
                e["in"].as_str().unwrap(),
                e["pointer"].as_str().unwrap(),
                e["keyword"].as_str().unwrap()
            )
        })
        .collect()
}

#[tokio::test]
async fn valid_requests_pass_with_their_bodies_untouched() {
    let up = echo_upstream(false).await;
    let gw = gateway(&cfg(&up, false, "")).await;
    let a = addr(&gw).await;
    let (s, echo) = send(a, "POST", "/orders?dry_run=true", &[JSON, TENANT], GOOD).await;
    assert_eq!(s, StatusCode::OK, "{echo}");
    assert_eq!(echo["body_len"], GOOD.len());
    for uri in [
        "/orders",
        "/orders?limit=10&status=open&id=1&id=2",
        "/orders/7?fields=id,items",
    ] {
        let (s, echo) = send(a, "GET", uri, &[], "").await;
        assert_eq!(s, StatusCode::OK, "{uri}: {echo}");
    }
    // A media type the operation takes without a schema streams on unchecked.
    let (s, echo) = send(
        a,
        "POST",
        "/orders",
        &[("content-type", "text/csv"), TENANT],
        "sku,qty\nABC-1234,2\n",
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{echo}");
    assert_eq!(echo["body_len"], 19);
}

#[tokio::test]
async fn every_failing_field_is_listed_parameters_and_body_together() {
    let up = echo_upstream(false).await;
    let gw = gateway(&cfg(&up, false, "")).await;
    let a = addr(&gw).await;
    let bad = r#"{"customer":"not-an-email","items":[{"sku":"abc","qty":0},{"qty":"2","extra":1}],"note":7}"#;
    let (s, v) = send(
        a,
        "POST",
        "/orders?dry_run=maybe",
        &[JSON, ("x-tenant", "ACME!")],
        bad,
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(v["error"]["code"], "validation_failed");
    let got = failures(&v);
    // max_errors: 5 on this route; the rest are counted.
    assert_eq!(got.len(), 5, "{v}");
    assert!(
        v["error"]["errors_not_listed"].as_u64().unwrap() >= 3,
        "{v}"
    );
    assert!(got.contains(&"query /dry_run type".to_string()), "{got:?}");
    assert!(
        got.contains(&"header /X-Tenant pattern".to_string()),
        "{got:?}"
    );
    let e = &v["error"]["errors"][0];
    assert_eq!(e["expected"], "type boolean", "{v}");
    assert_eq!(e["found"], "\"maybe\"", "{v}");

    // Without the parameter failures, every body failure shows (route cap 5 allows them).
    let bad = r#"{"customer":"not-an-email","items":[{"sku":"abc","qty":0}],"note":7}"#;
    let (s, v) = send(a, "POST", "/orders", &[JSON, TENANT], bad).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let mut got = failures(&v);
    got.sort();
    assert_eq!(
        got,
        [
            "body /customer format",
            "body /items/0/qty minimum",
            "body /items/0/sku pattern",
            "body /note type",
        ],
        "{v}"
    );
    let qty = v["error"]["errors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["pointer"] == "/items/0/qty")
        .unwrap();
    assert_eq!(
        (qty["expected"].as_str(), qty["found"].as_str()),
        (Some(">= 1"), Some("0"))
    );

    // A required member missing and one not described.
    let (s, v) = send(
        a,
        "POST",
        "/orders",
        &[JSON, TENANT],
        r#"{"items":[],"x":1}"#,
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let mut got = failures(&v);
    got.sort();
    assert_eq!(
        got,
        [
            "body  additionalProperties",
            "body  required",
            "body /items minItems"
        ],
        "{v}"
    );
}

#[tokio::test]
async fn parameters_are_read_as_their_types() {
    let up = echo_upstream(false).await;
    let gw = gateway(&cfg(&up, false, "")).await;
    let a = addr(&gw).await;
    let cases = [
        ("/orders/0", "path /id minimum"),
        ("/orders/abc", "path /id type"),
        ("/orders/3?fields=id,price", "query /fields/1 enum"),
        ("/orders?limit=500", "query /limit maximum"),
        ("/orders?limit=", "query /limit type"),
        ("/orders?status=lost", "query /status enum"),
        ("/orders?id=1&id=x", "query /id/1 type"),
    ];
    for (uri, want) in cases {
        let (s, v) = send(a, "GET", uri, &[], "").await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{uri}");
        assert_eq!(failures(&v), [want], "{uri}: {v}");
    }
    // A required header missing.
    let (s, v) = send(a, "POST", "/orders", &[JSON], GOOD).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(failures(&v), ["header /X-Tenant required"], "{v}");
}

#[tokio::test]
async fn bodies_of_the_wrong_kind_size_or_shape() {
    let up = echo_upstream(false).await;
    let gw = gateway(&cfg(
        &up,
        false,
        "  - name: small\n    match: {path: /small}\n    upstream: up\n    plugins:\n      request_validation: {body: {type: object}, max_body: 64B}\n",
    ))
    .await;
    let a = addr(&gw).await;
    // No body where one is required.
    let (s, v) = send(a, "POST", "/orders", &[JSON, TENANT], "").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(failures(&v), ["body  required"], "{v}");
    // A media type the operation does not take; none at all.
    for ct in [Some("application/xml"), None] {
        let mut h = vec![TENANT];
        if let Some(ct) = ct {
            h.push(("content-type", ct));
        }
        let (s, v) = send(a, "POST", "/orders", &h, "<order/>").await;
        assert_eq!(s, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{ct:?}");
        assert_eq!(v["error"]["code"], "unsupported_media_type");
    }
    // Not JSON.
    let (s, v) = send(a, "POST", "/orders", &[JSON, TENANT], "{\"customer\":").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(failures(&v), ["body  json"], "{v}");
    // A JSON body that cannot be read as JSON (a content coding).
    let (s, _) = send(
        a,
        "POST",
        "/orders",
        &[JSON, TENANT, ("content-encoding", "gzip")],
        GOOD,
    )
    .await;
    assert_eq!(s, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    // Over max_body.
    let big = format!("{{\"a\":\"{}\"}}", "x".repeat(100));
    let (s, _) = send(a, "POST", "/small", &[JSON], &big).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
    let (s, _) = send(a, "POST", "/small", &[JSON], "{}").await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test]
async fn a_chunked_body_from_a_raw_socket_is_checked_too() {
    let up = echo_upstream(false).await;
    let gw = gateway(&cfg(&up, false, "")).await;
    let a = addr(&gw).await;
    let body = r#"{"customer":"ada@example.com","items":[{"sku":"ABC-1234","qty":101}]}"#;
    let req = format!(
        "POST /orders HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\nx-tenant: acme\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
        body.len()
    );
    let out = raw(a, req.as_bytes()).await;
    assert!(out.starts_with("HTTP/1.1 400"), "{out}");
    assert!(out.contains("\"/items/0/qty\""), "{out}");
    // An empty chunked body where one is required.
    let req = "POST /orders HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\nx-tenant: acme\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n0\r\n\r\n";
    let out = raw(a, req.as_bytes()).await;
    assert!(out.starts_with("HTTP/1.1 400"), "{out}");
    assert!(out.contains("\"required\""), "{out}");
}

#[tokio::test]
async fn inline_schemas_without_a_document() {
    let up = echo_upstream(false).await;
    let gw = gateway(&config(&format!(
        "upstreams:\n  - name: up\n    targets: [{{url: 'http://{}'}}]\nroutes:\n  - name: r\n    match: {{path: '/things/{{kind}}'}}\n    upstream: up\n    plugins:\n      request_validation:\n        parameters:\n          - {{name: kind, in: path, schema: {{enum: [a, b]}}}}\n          - {{name: page, in: query, required: true, schema: {{type: integer}}}}\n        body: {{type: object, required: [name], properties: {{name: {{type: string, minLength: 2}}}}}}\n        body_required: false\n",
        up.addr
    )))
    .await;
    let a = addr(&gw).await;
    let (s, _) = send(a, "POST", "/things/a?page=1", &[JSON], r#"{"name":"ok"}"#).await;
    assert_eq!(s, StatusCode::OK);
    // body_required: false.
    let (s, _) = send(a, "GET", "/things/b?page=2", &[], "").await;
    assert_eq!(s, StatusCode::OK);
    let (s, v) = send(
        a,
        "POST",
        "/things/c",
        &[("content-type", "application/vnd.x+json")],
        r#"{"name":"x"}"#,
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let mut got = failures(&v);
    got.sort();
    assert_eq!(
        got,
        [
            "body /name minLength",
            "path /kind enum",
            "query /page required"
        ],
        "{v}"
    );
    // A non-JSON body where the inline schema wants JSON.
    let (s, _) = send(
        a,
        "POST",
        "/things/a?page=1",
        &[("content-type", "text/plain")],
        "hi",
    )
    .await;
    assert_eq!(s, StatusCode::UNSUPPORTED_MEDIA_TYPE);
}

/// The route's counter for `result`.
fn counter(gw: &torii_proxy::Gateway, route: &str, result: &str) -> u64 {
    let line = format!(
        "torii_request_validation_requests_total{{scope=\"route:{route}\",result=\"{result}\"}} "
    );
    gw.shared()
        .metrics_text()
        .lines()
        .find_map(|l| l.strip_prefix(line.as_str()))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn responses_are_reported_never_changed() {
    // An upstream whose order 2 breaks the documented schema, and 3 answers an undocumented
    // status.
    let up = upstream(false, |req: Request<hyper::body::Incoming>| async move {
        let (status, body) = match req.uri().path() {
            "/orders/1" => (200, r#"{"id":1,"customer":"a@b.c","items":[]}"#),
            "/orders/2" => (200, r#"{"id":"two","items":[{"sku":"x"}]}"#),
            _ => (418, r#"{"error":"teapot"}"#),
        };
        http::Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(full(Bytes::from_static(body.as_bytes())))
            .unwrap()
    })
    .await;
    let gw = gateway(&cfg(&up, true, "")).await;
    let a = addr(&gw).await;
    let (s, v) = send(a, "GET", "/orders/2", &[], "").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["id"], "two", "the response is passed on unchanged");
    let (s, _) = send(a, "GET", "/orders/1", &[], "").await;
    assert_eq!(s, StatusCode::OK);
    // 418 falls under `default` (documented as Problem): valid.
    let (s, _) = send(a, "GET", "/orders/3", &[], "").await;
    assert_eq!(s.as_u16(), 418);
    // The counter moves when the body has passed: the client has read it all by now.
    assert_eq!(counter(&gw, "get", "response_invalid"), 1);
    assert_eq!(counter(&gw, "get", "response_valid"), 2);
    assert_eq!(counter(&gw, "get", "valid"), 3);
    // A status the operation does not document at all (list has no `default`).
    let (s, _) = send(a, "GET", "/orders?limit=1", &[], "").await;
    assert_eq!(s.as_u16(), 418);
    assert_eq!(counter(&gw, "list", "response_invalid"), 1);
}

#[test]
fn bad_documents_and_operations_are_load_errors_with_their_place() {
    let fake = FakeUpstream {
        addr: ([127, 0, 0, 1], 1).into(),
        stats: Default::default(),
    };
    let dir = std::env::temp_dir().join(format!("torii-validation-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let broken = dir.join("broken.yaml");
    std::fs::write(
        &broken,
        "openapi: 3.1.0\npaths:\n  /a:\n    get: [unclosed\n",
    )
    .unwrap();
    let bad_schema = dir.join("bad-schema.yaml");
    std::fs::write(
        &bad_schema,
        "openapi: 3.1.0\npaths:\n  /a:\n    post:\n      operationId: a\n      requestBody:\n        content:\n          application/json:\n            schema: {type: 12}\n",
    )
    .unwrap();
    let external = dir.join("external.yaml");
    std::fs::write(
        &external,
        "openapi: 3.1.0\npaths:\n  /a:\n    post:\n      operationId: a\n      requestBody:\n        $ref: 'other.yaml#/x'\n",
    )
    .unwrap();
    let swagger = dir.join("swagger.yaml");
    std::fs::write(&swagger, "swagger: '2.0'\npaths: {}\n").unwrap();
    let spec = spec();
    let route = |path: &str, plugin: String| {
        config(&format!(
            "upstreams:\n  - name: up\n    targets: [{{url: 'http://{}'}}]\nroutes:\n  - name: r\n    match: {{path: '{path}'}}\n    upstream: up\n    plugins:\n      request_validation: {plugin}\n",
            fake.addr
        ))
    };
    let cases = [
        (
            route(
                "/a",
                format!(
                    "{{openapi: {{spec: '{}', operation: a}}}}",
                    broken.display()
                ),
            ),
            "line 5 column 1".to_string(),
        ),
        (
            route(
                "/a",
                format!(
                    "{{openapi: {{spec: '{}', operation: a}}}}",
                    bad_schema.display()
                ),
            ),
            "is not valid".to_string(),
        ),
        (
            route(
                "/a",
                format!(
                    "{{openapi: {{spec: '{}', operation: a}}}}",
                    external.display()
                ),
            ),
            "points outside the document".to_string(),
        ),
        (
            route(
                "/a",
                format!(
                    "{{openapi: {{spec: '{}', operation: a}}}}",
                    swagger.display()
                ),
            ),
            "not an OpenAPI 3.0 or 3.1 document".to_string(),
        ),
        (
            route(
                "/a",
                "{openapi: {spec: /nonexistent/api.yaml, operation: a}}".into(),
            ),
            "cannot read `/nonexistent/api.yaml`".to_string(),
        ),
        (
            route(
                "/a",
                format!("{{openapi: {{spec: '{spec}', operation: nope}}}}"),
            ),
            "request_validation.openapi.operation: ".to_string()
                + "`"
                + &spec
                + "` has no operation with operationId `nope`",
        ),
        (
            route(
                "/orders/{order}",
                format!("{{openapi: {{spec: '{spec}', operation: getOrder}}}}"),
            ),
            "path parameter `id` is not a parameter of this route (it has: order)".to_string(),
        ),
        (
            route("/a", "{body: {type: strin}}".into()),
            "inline schemas".to_string(),
        ),
        (
            route("/a", "{max_errors: 0, body: {}}".into()),
            "max_errors".to_string(),
        ),
        (
            route("/a", "{}".into()),
            "request_validation checks nothing".to_string(),
        ),
        (
            route(
                "/a",
                format!("{{openapi: {{spec: '{spec}', operation: listOrders}}, body: {{}}}}"),
            ),
            "are for routes without one".to_string(),
        ),
    ];
    for (yaml, want) in cases {
        let err = match load_str("t.yaml", &yaml) {
            Ok(_) => panic!("accepted:\n{yaml}"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains(&want), "wanted {want}, got:\n{err}");
        assert!(err.contains("t.yaml:"), "{err}");
    }
    // Globally: refused (it checks one operation).
    let yaml = config(&format!(
        "plugins:\n  request_validation: {{body: {{}}}}\nupstreams:\n  - name: up\n    targets: [{{url: 'http://{}'}}]\nroutes:\n  - name: r\n    match: {{path: /a}}\n    upstream: up\n",
        fake.addr
    ));
    let err = load_str("t.yaml", &yaml).err().unwrap().to_string();
    assert!(err.contains("set on a route"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A document exercising OpenAPI's finer points: readOnly/writeOnly, `*/*` uploads,
/// parameter styles, types from `anyOf`, object parameters.
const FINE: &str = r##"
openapi: 3.1.0
info: {title: fine, version: "1"}
paths:
  /things:
    post:
      operationId: createThing
      parameters:
        - {name: limit, in: query, schema: {anyOf: [{type: integer, maximum: 10}, {enum: [all]}]}}
        - {name: tags, in: query, style: pipeDelimited, explode: false, schema: {type: array, items: {type: integer}}}
        - {name: filter, in: query, required: true, style: form, schema: {type: object, properties: {color: {type: string}}}}
        - {name: meta, in: query, content: {application/json: {schema: {type: object, required: [v]}}}}
        - {name: X-Mode, in: header, schema: {type: string, enum: [a]}}
        - {name: ids, in: query, style: pipeDelimited, schema: {type: array, items: {type: integer}}}
      requestBody:
        content:
          application/json:
            schema: {$ref: "#/components/schemas/Thing"}
      responses:
        "200":
          description: ok
          content:
            application/json:
              schema: {$ref: "#/components/schemas/Thing"}
  /uploads:
    post:
      operationId: upload
      requestBody:
        required: true
        content:
          "*/*":
            schema: {type: object, required: [name]}
      responses:
        "200": {description: ok}
components:
  schemas:
    Thing:
      type: object
      required: [id, name, secret]
      properties:
        id: {type: integer, readOnly: true}
        name: {type: string}
        secret: {type: string, writeOnly: true}
"##;

#[tokio::test]
async fn openapi_finer_points() {
    // The upstream answers a Thing without its writeOnly secret.
    let up = upstream(false, |_req: Request<hyper::body::Incoming>| async move {
        http::Response::builder()
            .header("content-type", "application/json")
            .body(full(r#"{"id":1,"name":"x"}"#))
            .unwrap()
    })
    .await;
    let dir = std::env::temp_dir().join(format!("torii-fine-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let spec = dir.join("fine.yaml");
    std::fs::write(&spec, FINE).unwrap();
    let s = spec.display();
    let gw = gateway(&config(&format!(
        "upstreams:\n  - name: up\n    targets: [{{url: 'http://{a}'}}]\nroutes:\n  - name: things\n    match: {{path: /things}}\n    upstream: up\n    plugins:\n      request_validation: {{openapi: {{spec: '{s}', operation: createThing}}, responses: report}}\n  - name: uploads\n    match: {{path: /uploads}}\n    upstream: up\n    plugins:\n      request_validation: {{openapi: {{spec: '{s}', operation: upload}}}}\n  - name: inline\n    match: {{path: /inline}}\n    upstream: up\n    plugins:\n      request_validation:\n        body_required: false\n        body: {{type: object, properties: {{items: {{type: array, items: {{$ref: '#/$defs/Item'}}}}}}, $defs: {{Item: {{type: integer}}}}}}\n",
        a = up.addr
    )))
    .await;
    let a = addr(&gw).await;
    // A request without the readOnly id but with the writeOnly secret: valid; its answer
    // without the secret: valid too.
    let (st, v) = send(
        a,
        "POST",
        "/things?limit=all&tags=1|2&color=red&meta=%7B%22v%22%3A1%7D",
        &[JSON, ("x-mode", "a")],
        r#"{"name":"n","secret":"s"}"#,
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(counter(&gw, "things", "response_valid"), 1);
    // pipeDelimited is not exploded by default; commas may come encoded.
    let (st, v) = send(
        a,
        "POST",
        "/things?ids=1|2&limit=all",
        &[JSON],
        r#"{"name":"n","secret":"s"}"#,
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let cases = [
        ("/things?ids=1|x", "query /ids/1 type"),
        ("/things?limit=11", "query /limit anyOf"),
        ("/things?tags=1|x", "query /tags/1 type"),
        ("/things?meta=%7B%7D", "query /meta required"),
        ("/things?meta=nope", "query /meta type"),
    ];
    for (uri, want) in cases {
        let (st, v) = send(a, "POST", uri, &[JSON], r#"{"name":"n","secret":"s"}"#).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{uri}");
        assert_eq!(failures(&v), [want], "{uri}: {v}");
    }
    // A repeated scalar: refused, and every value checked.
    let (st, v) = send(
        a,
        "POST",
        "/things?limit=5&limit=99",
        &[JSON],
        r#"{"name":"n","secret":"s"}"#,
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    let mut got = failures(&v);
    got.sort();
    assert_eq!(got, ["query /limit anyOf", "query /limit maxItems"], "{v}");
    // An upload under `*/*`: a JSON body is checked, any other type streams on.
    let (st, _) = send(
        a,
        "POST",
        "/uploads",
        &[("content-type", "image/png")],
        "\u{1}PNG",
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    let (st, v) = send(a, "POST", "/uploads", &[JSON], "{}").await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_eq!(failures(&v), ["body  required"], "{v}");
    // Inline schemas keep their own `$defs`.
    let (st, _) = send(a, "POST", "/inline", &[JSON], r#"{"items":[1,2]}"#).await;
    assert_eq!(st, StatusCode::OK);
    let (st, v) = send(a, "POST", "/inline", &[JSON], r#"{"items":[1,"x"]}"#).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_eq!(failures(&v), ["body /items/1 type"], "{v}");
    // A large document is checked too (off the runtime's threads).
    let items: Vec<String> = (0..60_000).map(|i| i.to_string()).collect();
    let big = format!("{{\"items\":[{}]}}", items.join(","));
    assert!(big.len() > 300 << 10);
    let (st, _) = send(a, "POST", "/inline", &[JSON], &big).await;
    assert_eq!(st, StatusCode::OK);
    let bad = big.replace(",59999]", ",\"x\"]");
    let (st, v) = send(a, "POST", "/inline", &[JSON], &bad).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_eq!(failures(&v), ["body /items/59999 type"], "{v}");
    // An empty chunked body without a type, where a body is optional: no body.
    let out = raw(
        a,
        b"POST /inline HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n0\r\n\r\n",
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    // `found` is cut short, however many members a body has.
    let many: String = (0..5000).map(|i| format!("\"k{i}\":1,")).collect();
    let body = format!("{{\"name\":{{{many}\"z\":1}},\"secret\":\"s\"}}");
    let (st, v) = send(a, "POST", "/things", &[JSON], &body).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    for e in v["error"]["errors"].as_array().unwrap() {
        assert!(e["found"].as_str().unwrap().len() <= 100, "{e}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn parameter_failures_are_not_lost_behind_a_wrong_media_type() {
    let up = echo_upstream(false).await;
    let gw = gateway(&cfg(&up, false, "")).await;
    let a = addr(&gw).await;
    let (s, v) = send(
        a,
        "POST",
        "/orders?dry_run=maybe",
        &[("content-type", "application/xml"), TENANT],
        "<order/>",
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let mut got = failures(&v);
    got.sort();
    assert_eq!(
        got,
        ["body  contentMediaType", "query /dry_run type"],
        "{v}"
    );
}
