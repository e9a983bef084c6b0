//! Composite routes end to end, against fake services on 127.0.0.1: independent calls run in
//! parallel, a call that reads another's result waits for it, conditions skip calls,
//! per-item fan-out and batched joins deduplicate, each failure policy does what it says
//! (required fails naming the call, optional gives the default, stale the last good value,
//! both marked incomplete), the deadline cuts slow calls, the call budget stops a runaway
//! fan-out, calls carry the request id, trace context and identity, and broken compositions
//! are load errors at their line.
#![allow(clippy::unwrap_used)]

mod support;

use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde_json::{Value, json};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::*;

/// What the fake services saw: one `path?query` per request.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<String>>>);

impl Seen {
    fn count(&self, prefix: &str) -> usize {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|p| p.starts_with(prefix))
            .count()
    }
    fn all(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

fn reply(status: u16, v: Value) -> Response<BoxBody> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("etag", "\"e1\"")
        .body(full(v.to_string()))
        .unwrap()
}

/// Users, orders and products in one fake service, plus `/delay?ms=N`, `/flaky` (503 while
/// `down`), `/html` and `/echo` (the request's headers).
async fn services(seen: Seen, down: Arc<AtomicBool>) -> FakeUpstream {
    upstream(false, move |req: Request<Incoming>| {
        let (seen, down) = (seen.clone(), down.clone());
        async move {
            let pq = req.uri().path_and_query().unwrap().to_string();
            seen.0.lock().unwrap().push(pq.clone());
            let path = req.uri().path().to_string();
            let query: std::collections::HashMap<String, String> =
                form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
                    .into_owned()
                    .collect();
            match path.as_str() {
                "/delay" => {
                    let ms: u64 = query["ms"].parse().unwrap();
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    reply(200, json!({"waited": ms}))
                }
                "/users/42" => reply(200, json!({"id": 42, "name": "Ada", "tier": "gold", "secret": "s"})),
                "/users/7" => reply(404, json!({"error": "no such user"})),
                "/orders" => reply(
                    200,
                    json!({"user": query.get("user"), "items": [
                        {"id": 1, "product_id": "p1"},
                        {"id": 2, "product_id": "p2"},
                        {"id": 3, "product_id": "p1"},
                        {"id": 4}
                    ]}),
                ),
                "/many" => {
                    let n: usize = query["n"].parse().unwrap();
                    let items: Vec<Value> =
                        (0..n).map(|i| json!({"id": i, "product_id": format!("p{}", i % 25)})).collect();
                    reply(200, json!({"items": items}))
                }
                "/products" => {
                    let ids = query.get("ids").cloned().unwrap_or_default();
                    let list: Vec<Value> = ids
                        .split(',')
                        .filter(|i| !i.is_empty())
                        .map(|i| json!({"id": i, "name": format!("product {i}")}))
                        .collect();
                    reply(200, json!({"data": list}))
                }
                p if p.starts_with("/products/") => {
                    let id = &p["/products/".len()..];
                    reply(200, json!({"id": id, "name": format!("product {id}")}))
                }
                "/flaky" if down.load(Ordering::SeqCst) => reply(503, json!({"error": "down"})),
                "/flaky" => reply(200, json!({"fresh": true})),
                "/html" => Response::builder()
                    .header("content-type", "text/html")
                    .body(full("<html>oops</html>"))
                    .unwrap(),
                "/echo" => {
                    let headers: serde_json::Map<String, Value> = req
                        .headers()
                        .iter()
                        .map(|(k, v)| (k.to_string(), json!(v.to_str().unwrap_or(""))))
                        .collect();
                    let body = req.into_body().collect().await.unwrap().to_bytes();
                    reply(200, json!({"headers": headers, "uri": pq, "body": String::from_utf8_lossy(&body)}))
                }
                _ => reply(404, json!({"error": "not found"})),
            }
        }
    })
    .await
}

struct Env {
    seen: Seen,
    down: Arc<AtomicBool>,
    gw: std::net::SocketAddr,
    _gw: Arc<torii_proxy::Gateway>,
}

/// A gateway whose upstreams `users`, `orders` and `products` are the fake services, with
/// `routes` (YAML under `routes:`) and `extra` top-level YAML.
async fn env(routes: &str, extra: &str) -> Env {
    let seen = Seen::default();
    let down = Arc::new(AtomicBool::new(false));
    let up = services(seen.clone(), down.clone()).await;
    let mut ups = String::from("upstreams:\n");
    for name in ["users", "orders", "products"] {
        ups.push_str(&format!(
            "  - name: {name}\n    targets: [{{url: 'http://{}'}}]\n    retries: {{attempts: 1}}\n",
            up.addr
        ));
    }
    let gw = gateway(&config(&format!("{ups}{extra}routes:\n{routes}"))).await;
    Env {
        seen,
        down,
        gw: addr(&gw).await,
        _gw: gw,
    }
}

async fn call(
    e: &Env,
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (StatusCode, http::HeaderMap, Value) {
    let mut b = Request::builder()
        .method(method)
        .uri(format!("http://{}{uri}", e.gw));
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let resp = h1_client()
        .request(b.body(full(body.to_string())).unwrap())
        .await
        .unwrap();
    let (parts, body) = resp.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    (
        parts.status,
        parts.headers,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn independent_calls_run_in_parallel() {
    let e = env(
        "  - name: dash\n    match: {path: /dash}\n    compose:\n      calls:\n        \
         a: {upstream: users, path: /delay, query: {ms: '200'}}\n        \
         b: {upstream: orders, path: /delay, query: {ms: '200'}}\n        \
         c: {upstream: products, path: /delay, query: {ms: '200'}}\n",
        "",
    )
    .await;
    let t = Instant::now();
    let (s, _, v) = call(&e, "GET", "/dash", &[], "").await;
    let took = t.elapsed();
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        v,
        json!({"a": {"waited": 200}, "b": {"waited": 200}, "c": {"waited": 200}})
    );
    // In sequence they would take 600 ms.
    assert!(took >= Duration::from_millis(200), "{took:?}");
    assert!(took < Duration::from_millis(450), "not parallel: {took:?}");
}

#[tokio::test]
async fn a_chained_call_gets_the_earlier_result_and_the_body_is_shaped() {
    let e = env(
        "  - name: profile\n    match: {path: '/profile/{id}'}\n    compose:\n      calls:\n        \
         user: {upstream: users, path: '/users/{params.id}'}\n        \
         orders: {upstream: orders, path: /orders, query: {user: '{user.id}'}}\n      \
         response:\n        headers: {x-user: '{user.name}'}\n        copy_headers: {from: user, names: [etag]}\n        \
         body:\n          user: {$from: $user, drop: [secret], rename: {name: display_name}}\n          \
         order_ids: {$from: $orders.items, pick: [id]}\n          greeting: 'Hello {user.name}'\n          \
         literal: $$user\n",
        "",
    )
    .await;
    let (s, h, v) = call(&e, "GET", "/profile/42", &[], "").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        v["user"],
        json!({"id": 42, "display_name": "Ada", "tier": "gold"})
    );
    assert_eq!(
        v["order_ids"],
        json!([{"id": 1}, {"id": 2}, {"id": 3}, {"id": 4}])
    );
    assert_eq!(v["greeting"], "Hello Ada");
    assert_eq!(v["literal"], "$user");
    assert_eq!(h["x-user"], "Ada");
    assert_eq!(h["etag"], "\"e1\"");
    assert!(h.get("x-torii-complete").is_none());
    // orders waited for the user's id.
    assert!(
        e.seen.all().contains(&"/orders?user=42".to_string()),
        "{:?}",
        e.seen.all()
    );
}

#[tokio::test]
async fn conditional_calls_are_skipped_with_their_dependents() {
    let e = env(
        "  - name: c\n    match: {path: /c}\n    compose:\n      calls:\n        \
         user: {upstream: users, path: /users/42}\n        \
         orders:\n          upstream: orders\n          path: /orders\n          when: [{value: query.expand, equals: 'true'}]\n          default: {items: []}\n        \
         products: {upstream: products, path: '/products/{orders.items[0].product_id}'}\n        \
         gold: {upstream: products, path: /products/gold, when: [{value: user.tier, one_of: [gold, platinum]}]}\n",
        "",
    )
    .await;
    let (s, h, v) = call(&e, "GET", "/c", &[], "").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["orders"], json!({"items": []}));
    assert_eq!(v["products"], Value::Null);
    assert_eq!(v["gold"]["id"], "gold");
    assert_eq!(e.seen.count("/orders"), 0);
    assert_eq!(e.seen.count("/products/p"), 0);
    // A skip is not a failure.
    assert!(h.get("x-torii-complete").is_none());
    let (_, _, v) = call(&e, "GET", "/c?expand=true", &[], "").await;
    assert_eq!(v["products"]["id"], "p1");
    assert_eq!(e.seen.count("/orders"), 1);
}

#[tokio::test]
async fn per_item_fan_out_joins_and_requests_each_key_once() {
    let e = env(
        "  - name: f\n    match: {path: /f}\n    compose:\n      calls:\n        \
         orders: {upstream: orders, path: /orders}\n        \
         products:\n          upstream: products\n          path: '/products/{item.product_id}'\n          for_each: {items: orders.items, key: product_id, concurrency: 2}\n      \
         response:\n        body:\n          items: {$join: $orders.items, with: $products, as: product}\n",
        "",
    )
    .await;
    let (s, _, v) = call(&e, "GET", "/f", &[], "").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let items = v["items"].as_array().unwrap();
    assert_eq!(items.len(), 4);
    assert_eq!(items[0]["product"]["name"], "product p1");
    assert_eq!(items[1]["product"]["name"], "product p2");
    assert_eq!(items[2]["product"]["name"], "product p1");
    // The element without the key gets null, and p1 is fetched once.
    assert_eq!(items[3]["product"], Value::Null);
    assert_eq!(e.seen.count("/products/p1"), 1);
    assert_eq!(e.seen.count("/products/p2"), 1);
}

#[tokio::test]
async fn batched_calls_join_by_key_in_chunks() {
    let e = env(
        "  - name: b\n    match: {path: /b}\n    compose:\n      calls:\n        \
         orders: {upstream: orders, path: /many, query: {n: '60'}}\n        \
         products:\n          upstream: products\n          path: /products\n          query: {ids: '{keys}'}\n          \
         for_each: {items: orders.items, key: product_id, batch: 10, results: data}\n      \
         response:\n        body:\n          items: {$join: $orders.items, with: $products, on: product_id, key: id, as: product}\n",
        "",
    )
    .await;
    let (s, _, v) = call(&e, "GET", "/b", &[], "").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let items = v["items"].as_array().unwrap();
    assert_eq!(items.len(), 60);
    for it in items {
        let pid = it["product_id"].as_str().unwrap();
        assert_eq!(it["product"]["name"], format!("product {pid}"));
    }
    // 25 distinct ids in batches of 10: three requests.
    assert_eq!(e.seen.count("/products?"), 3, "{:?}", e.seen.all());
}

#[tokio::test]
async fn failure_policies() {
    let e = env(
        "  - name: req\n    match: {path: /req}\n    compose:\n      calls:\n        \
         user: {upstream: users, path: /users/42}\n        bad: {upstream: orders, path: /flaky}\n  \
         - name: opt\n    match: {path: /opt}\n    compose:\n      calls:\n        \
         user: {upstream: users, path: /users/42}\n        \
         bad: {upstream: orders, path: /flaky, on_failure: optional, default: {fallback: true}}\n  \
         - name: stale\n    match: {path: /stale}\n    compose:\n      calls:\n        \
         bad: {upstream: orders, path: /flaky, on_failure: stale, stale_for: 1m}\n      \
         response: {failed_field: errors}\n  \
         - name: html\n    match: {path: /html}\n    compose:\n      calls:\n        \
         page: {upstream: orders, path: /html}\n  \
         - name: missing\n    match: {path: /missing}\n    compose:\n      calls:\n        \
         user: {upstream: users, path: /users/7, accept_status: [404]}\n",
        "",
    )
    .await;
    // Healthy: the stale call keeps its answer.
    let (s, h, v) = call(&e, "GET", "/stale", &[], "").await;
    assert_eq!((s, &v), (StatusCode::OK, &json!({"bad": {"fresh": true}})));
    assert!(h.get("x-torii-complete").is_none());
    e.down.store(true, Ordering::SeqCst);
    let (s, _, v) = call(&e, "GET", "/req", &[], "").await;
    assert_eq!(s, StatusCode::BAD_GATEWAY, "{v}");
    assert_eq!(v["error"]["code"], "call_failed");
    assert_eq!(v["error"]["call"], "bad");
    assert_eq!(v["error"]["error"], "upstream_status");
    assert_eq!(v["error"]["upstream_status"], 503);
    let (s, h, v) = call(&e, "GET", "/opt", &[], "").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["bad"], json!({"fallback": true}));
    assert_eq!(v["user"]["name"], "Ada");
    assert_eq!(h["x-torii-complete"], "false");
    assert_eq!(
        v["_failed"],
        json!([{"call": "bad", "error": "upstream_status", "upstream_status": 503}])
    );
    let (s, h, v) = call(&e, "GET", "/stale", &[], "").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["bad"], json!({"fresh": true}));
    assert_eq!(h["x-torii-complete"], "false");
    assert_eq!(v["errors"][0]["call"], "bad");
    // A non-JSON answer is the call's failure.
    let (s, _, v) = call(&e, "GET", "/html", &[], "").await;
    assert_eq!(s, StatusCode::BAD_GATEWAY);
    assert_eq!(v["error"]["error"], "not_json");
    // An accepted status is a result.
    let (s, _, v) = call(&e, "GET", "/missing", &[], "").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["user"]["error"], "no such user");
}

#[tokio::test]
async fn the_deadline_cuts_slow_calls() {
    let e = env(
        "  - name: slow\n    match: {path: /slow}\n    compose:\n      deadline: 300ms\n      calls:\n        \
         fast: {upstream: users, path: /users/42}\n        \
         slow: {upstream: orders, path: /delay, query: {ms: '3000'}}\n  \
         - name: slow_opt\n    match: {path: /slow_opt}\n    compose:\n      deadline: 300ms\n      calls:\n        \
         fast: {upstream: users, path: /users/42}\n        \
         slow: {upstream: orders, path: /delay, query: {ms: '3000'}, on_failure: optional, default: []}\n  \
         - name: timeout\n    match: {path: /timeout}\n    compose:\n      calls:\n        \
         slow: {upstream: orders, path: /delay, query: {ms: '3000'}, timeout: 200ms}\n",
        "",
    )
    .await;
    let t = Instant::now();
    let (s, _, v) = call(&e, "GET", "/slow", &[], "").await;
    assert_eq!(s, StatusCode::GATEWAY_TIMEOUT, "{v}");
    assert_eq!(v["error"]["code"], "call_timeout");
    assert_eq!(v["error"]["call"], "slow");
    assert!(
        t.elapsed() < Duration::from_millis(1500),
        "{:?}",
        t.elapsed()
    );
    let (s, h, v) = call(&e, "GET", "/slow_opt", &[], "").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["slow"], json!([]));
    assert_eq!(v["fast"]["id"], 42);
    assert_eq!(h["x-torii-complete"], "false");
    let t = Instant::now();
    let (s, _, v) = call(&e, "GET", "/timeout", &[], "").await;
    assert_eq!(s, StatusCode::GATEWAY_TIMEOUT, "{v}");
    assert!(
        t.elapsed() < Duration::from_millis(1500),
        "{:?}",
        t.elapsed()
    );
}

#[tokio::test]
async fn the_call_budget_stops_a_runaway_fan_out() {
    let e = env(
        "  - name: runaway\n    match: {path: /runaway}\n    compose:\n      max_calls: 10\n      calls:\n        \
         orders: {upstream: orders, path: /many, query: {n: '200'}}\n        \
         products:\n          upstream: products\n          path: '/products/{item.product_id}'\n          \
         for_each: {items: orders.items, key: product_id, concurrency: 1}\n  \
         - name: partial\n    match: {path: /partial}\n    compose:\n      max_calls: 10\n      over_budget: partial\n      calls:\n        \
         orders: {upstream: orders, path: /many, query: {n: '200'}}\n        \
         products:\n          upstream: products\n          path: '/products/{item.product_id}'\n          \
         for_each: {items: orders.items, key: product_id, concurrency: 1}\n          on_failure: optional\n",
        "",
    )
    .await;
    let (s, _, v) = call(&e, "GET", "/runaway", &[], "").await;
    assert_eq!(s, StatusCode::BAD_GATEWAY, "{v}");
    assert_eq!(v["error"]["error"], "over_budget");
    assert_eq!(v["error"]["call"], "products");
    // 25 distinct products are more than the whole budget: refused before any request.
    assert_eq!(e.seen.count("/products/"), 0);
    let (s, h, v) = call(&e, "GET", "/partial", &[], "").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(h["x-torii-complete"], "false");
    let products = v["products"].as_array().unwrap();
    assert_eq!(products.len(), 200);
    // p0..p8 (nine keys of 25, eight items each) were fetched within the budget.
    assert_eq!(products.iter().filter(|p| !p.is_null()).count(), 72);
    assert!(products.iter().any(Value::is_null));
}

#[tokio::test]
async fn calls_carry_request_id_trace_context_identity_and_body_values() {
    let e = env(
        "  - name: id\n    match: {path: /id, methods: [POST]}\n    plugins:\n      key_auth: {}\n    compose:\n      \
         forward_headers: [accept-language]\n      calls:\n        \
         echo:\n          upstream: users\n          path: /echo\n          method: POST\n          \
         headers: {x-who: '{consumer.name}'}\n          body: {wanted: $body.sku, n: 2}\n",
        &format!(
            "consumers:\n  - name: alice\n    keys: ['{}']\n",
            torii_plugins::consumers::format_key_hash(b"k-alice")
        ),
    )
    .await;
    let tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let (s, _, v) = call(
        &e,
        "POST",
        "/id",
        &[
            ("x-api-key", "k-alice"),
            ("x-request-id", "req-123"),
            ("traceparent", tp),
            ("tracestate", "vendor=1"),
            ("accept-language", "fr"),
            ("content-type", "application/json"),
        ],
        r#"{"sku": "A-1"}"#,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let h = &v["echo"]["headers"];
    assert_eq!(h["x-request-id"], "req-123");
    assert_eq!(h["x-consumer-name"], "alice");
    assert_eq!(h["x-who"], "alice");
    assert_eq!(h["accept-language"], "fr");
    let sent = h["traceparent"].as_str().unwrap();
    assert!(
        sent.starts_with("00-0af7651916cd43dd8448eb211c80319c-"),
        "{sent}"
    );
    assert!(
        sent.ends_with("-01") && !sent.contains("b7ad6b7169203331"),
        "{sent}"
    );
    assert!(
        h.get("x-api-key").is_none(),
        "the client's credential is not forwarded"
    );
    assert_eq!(
        serde_json::from_str::<Value>(v["echo"]["body"].as_str().unwrap()).unwrap(),
        json!({"wanted": "A-1", "n": 2})
    );
    // A body that is not JSON, where a template reads it, is the client's error.
    let (s, _, _) = call(&e, "POST", "/id", &[("x-api-key", "k-alice")], "{nope").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
}

#[test]
fn broken_compositions_are_load_errors_at_their_line() {
    let cfg = config(
        "upstreams:\n  - name: users\n    targets: [{url: 'http://127.0.0.1:9'}]\nroutes:\n  \
         - name: loop\n    match: {path: '/l/{id}'}\n    compose:\n      calls:\n        \
         a: {upstream: users, path: '/a/{b.x}'}\n        b: {upstream: users, path: '/b/{a.y}'}\n  \
         - name: unknown\n    match: {path: '/u/{id}'}\n    compose:\n      calls:\n        \
         user: {upstream: users, path: '/u/{params.nope}'}\n        \
         other: {upstream: users, path: '/o/{usr.id}'}\n      \
         response:\n        body: {x: {$merge: [$user, $other]}}\n  \
         - name: batch\n    match: {path: /b}\n    compose:\n      calls:\n        \
         list: {upstream: users, path: /l}\n        \
         each: {upstream: users, path: '/e/{item.id}', for_each: {items: list.items, batch: 5}}\n",
    );
    let err = load_str("bad.yaml", &cfg).err().unwrap().to_string();
    for want in [
        "routes[0].compose.calls.a: the calls refer to each other in a cycle: a → b → a",
        "routes[1].compose.calls.user.path: the route has no parameter `nope`; its parameters: id",
        "did you mean `user`?",
        "routes[1].compose.response.body.x.prefer: `$merge` needs `prefer: first`",
        "routes[2].compose.calls.each.path: a batch call has no single `item`",
    ] {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }
    // Checks that need no template come first, from the validator.
    let cfg = config(
        "upstreams:\n  - name: users\n    targets: [{url: 'http://127.0.0.1:9'}]\nroutes:\n  \
         - name: reserved\n    match: {path: /r}\n    upstream: users\n    compose:\n      calls:\n        \
         query: {upstream: userz, path: /q}\n  \
         - name: bad\n    match: {path: /b}\n    compose:\n      max_calls: 0\n      calls:\n        \
         query: {upstream: userz, path: /q, stale_for: 1m}\n",
    );
    let err = load_str("bad.yaml", &cfg).err().unwrap().to_string();
    for want in [
        "routes[0].name: a route has exactly one of `upstream`, `split`, `direct_response` and `compose`",
        "routes[1].compose.calls.query: `query` names the request's own values",
        "routes[1].compose.calls.query.upstream: unknown upstream `userz`",
        "did you mean `users`?",
        "routes[1].compose.calls.query.stale_for: `stale_for` is only read with `on_failure: stale`",
        "routes[1].compose.max_calls: a budget of 0 calls",
    ] {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }
    // Each is reported at its line.
    assert!(err.contains("bad.yaml:"), "{err}");
}

/// examples/bff.yaml as shipped (ports moved to free ones): the mobile and web surfaces over
/// the same services, each shaped for its client.
#[tokio::test]
async fn the_bff_example_serves_mobile_and_web() {
    let text = std::fs::read_to_string(format!(
        "{}/../../examples/bff.yaml",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    let mut ports = Vec::new();
    for _ in 0..4 {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        ports.push(l.local_addr().unwrap().port());
    }
    let text = text
        .replace("8180", &ports[0].to_string())
        .replace("8181", &ports[1].to_string())
        .replace("8182", &ports[2].to_string())
        .replace("9911", &ports[3].to_string());
    let loaded = load_str("bff.yaml", &text).unwrap();
    let _gw = torii_proxy::Gateway::start(loaded, catalog())
        .await
        .unwrap();
    let url = |port: u16, path: &str| format!("http://127.0.0.1:{port}{path}");
    let (s, h, b) = get(&h1_client(), url(ports[0], "/me/42/home")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(h["cache-control"], "private, max-age=30");
    assert_eq!(
        json(&b),
        json!({"name": "Ada Lovelace", "tier": "gold", "recent_orders": [
            {"id": 1, "status": "shipped"}, {"id": 2, "status": "open"}, {"id": 3, "status": "open"}
        ]})
    );
    let (s, _, b) = get(&h1_client(), url(ports[1], "/me/42/dashboard")).await;
    assert_eq!(s, StatusCode::OK);
    let v = json(&b);
    assert!(v["user"].get("password_hash").is_none());
    assert_eq!(v["user"]["address"]["city"], "London");
    assert_eq!(v["orders"][2]["product"]["name"], "Green tea");
    assert_eq!(v["offers"][0]["code"], "WELCOME10");
    let (_, _, b) = get(&h1_client(), url(ports[1], "/me/42/orders")).await;
    assert_eq!(
        json(&b)["by_status"]["open"].as_array().map(Vec::len),
        Some(2)
    );
    // Each surface has only its own routes.
    let (s, _, _) = get(&h1_client(), url(ports[0], "/me/42/dashboard")).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

/// Calls to an HTTP/2 upstream (prior knowledge) work like HTTP/1.1 ones, and a HEAD request
/// gets the head of the composed answer.
#[tokio::test]
async fn calls_over_http2_and_head_requests() {
    let up = echo_upstream(true).await;
    let gw = gateway(&config(&format!(
        "upstreams:\n  - name: h2\n    protocol: http2\n    targets: [{{url: 'http://{}'}}]\nroutes:\n  \
         - name: c\n    match: {{path: /c}}\n    compose:\n      calls:\n        \
         one: {{upstream: h2, path: '/one', query: {{q: '{{query.q}}'}}}}\n        \
         two: {{upstream: h2, path: '/two/{{one.method}}'}}\n",
        up.addr
    )))
    .await;
    let a = addr(&gw).await;
    let (s, _, b) = get(&h1_client(), format!("http://{a}/c?q=a%20b%26c")).await;
    assert_eq!(s, StatusCode::OK);
    let v = json(&b);
    assert_eq!(v["one"]["version"], "HTTP/2.0");
    assert_eq!(
        v["one"]["uri"].as_str().unwrap().rsplit('/').next(),
        Some("one?q=a+b%26c")
    );
    assert!(
        v["two"]["uri"].as_str().unwrap().ends_with("/two/GET"),
        "{v}"
    );
    let resp = h1_client()
        .request(
            Request::head(format!("http://{a}/c"))
                .body(full(""))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "application/json");
    assert!(
        resp.into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .is_empty()
    );
}

/// A last good value is kept per consumer: when the service fails, one consumer never gets
/// another's answer. A value put into a path cannot climb out of its segment.
#[tokio::test]
async fn stale_values_are_per_consumer_and_values_stay_in_their_segment() {
    let keys = |n: &str| torii_plugins::consumers::format_key_hash(n.as_bytes());
    let e = env(
        "  - name: me\n    match: {path: /me}\n    plugins:\n      key_auth: {}\n    compose:\n      calls:\n        \
         me: {upstream: users, path: /flaky, on_failure: stale}\n  \
         - name: walk\n    match: {path: /walk}\n    compose:\n      calls:\n        \
         u: {upstream: users, path: '/users/{query.id}/x'}\n",
        &format!(
            "consumers:\n  - name: alice\n    keys: ['{}']\n  - name: bob\n    keys: ['{}']\n",
            keys("k-alice"),
            keys("k-bob")
        ),
    )
    .await;
    let (s, _, _) = call(&e, "GET", "/me", &[("x-api-key", "k-alice")], "").await;
    assert_eq!(s, StatusCode::OK);
    e.down.store(true, Ordering::SeqCst);
    let (s, h, v) = call(&e, "GET", "/me", &[("x-api-key", "k-alice")], "").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["me"], json!({"fresh": true}));
    assert_eq!(h["x-torii-complete"], "false");
    // Bob never had an answer: nothing of Alice's is served to him.
    let (s, _, v) = call(&e, "GET", "/me", &[("x-api-key", "k-bob")], "").await;
    assert_eq!(s, StatusCode::BAD_GATEWAY, "{v}");
    for id in ["..", "%2e%2e", "..%3bx", "."] {
        let (s, _, v) = call(&e, "GET", &format!("/walk?id={id}"), &[], "").await;
        assert_eq!(s, StatusCode::BAD_GATEWAY, "{id}: {v}");
        assert_eq!(v["error"]["error"], "bad_path", "{id}");
    }
    assert_eq!(e.seen.count("/users/"), 0, "{:?}", e.seen.all());
    // A slash in a value is encoded, not a new segment.
    let (_, _, _) = call(&e, "GET", "/walk?id=a%2F..", &[], "").await;
    assert!(
        e.seen.all().contains(&"/users/a%2F../x".to_string()),
        "{:?}",
        e.seen.all()
    );
}
