//! End-to-end proxying through an in-process gateway against fake upstreams on port 0.
#![allow(clippy::unwrap_used)]

mod support;

use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use support::*;

fn one_upstream(addr: std::net::SocketAddr, extra: &str) -> String {
    config(&format!(
        "upstreams:\n  - name: up\n    targets: [{{url: 'http://{addr}'}}]\n{extra}routes:\n  - name: all\n    match: {{path_prefix: /}}\n    upstream: up\n"
    ))
}

#[tokio::test]
async fn proxies_with_forwarding_headers_and_request_id() {
    let up = echo_upstream(false).await;
    let gw = gateway(&one_upstream(up.addr, "")).await;
    let a = addr(&gw).await;
    let client = h1_client();
    let req = Request::get(format!("http://{a}/some/path?x=1&y=2"))
        .header("connection", "x-secret")
        .header("x-secret", "leak")
        .header("keep-alive", "timeout=5")
        .header("x-forwarded-for", "6.6.6.6")
        .header("x-forwarded-host", "evil.example")
        .header("te", "trailers")
        .body(full(""))
        .unwrap();
    let resp = client.request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let rid = resp
        .headers()
        .get("x-request-id")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(rid.len(), 36, "generated request id: {rid}");
    assert!(
        resp.headers().get("x-hop").is_none(),
        "hop-by-hop response header named by Connection must be removed"
    );
    let body = json(&resp.into_body().collect().await.unwrap().to_bytes());
    assert_eq!(body["uri"], "/some/path?x=1&y=2");
    let h = &body["headers"];
    assert!(
        h.get("x-secret").is_none() && h.get("keep-alive").is_none(),
        "{h}"
    );
    assert_eq!(h["te"], "trailers");
    assert_eq!(
        h["x-forwarded-for"], "127.0.0.1",
        "untrusted peer: client XFF replaced"
    );
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], format!("{a}"));
    assert_eq!(h["forwarded"], format!("for=127.0.0.1;proto=http;host={a}"));
    assert_eq!(h["x-request-id"], rid.as_str());
    assert_eq!(h["host"], format!("{a}"), "Host preserved by default");

    // A well-formed client request id is kept.
    let req = Request::get(format!("http://{a}/x"))
        .header("x-request-id", "abc-123")
        .body(full(""))
        .unwrap();
    let resp = client.request(req).await.unwrap();
    assert_eq!(resp.headers()["x-request-id"], "abc-123");
    // A malformed one is replaced.
    let req = Request::get(format!("http://{a}/x"))
        .header("x-request-id", "bad id with spaces")
        .body(full(""))
        .unwrap();
    let resp = client.request(req).await.unwrap();
    assert_ne!(resp.headers()["x-request-id"], "bad id with spaces");
}

#[tokio::test]
async fn trusted_proxy_xff_is_appended_and_client_resolved() {
    let up = echo_upstream(false).await;
    let cfg = one_upstream(up.addr, "").replace(
        "bind: 127.0.0.1:0\nadmin",
        "bind: 127.0.0.1:0\n    trusted_proxies: [127.0.0.0/8]\nadmin",
    );
    let gw = gateway(&cfg).await;
    let a = addr(&gw).await;
    let req = Request::get(format!("http://{a}/x"))
        .header("x-forwarded-for", "203.0.113.9")
        .header("x-forwarded-proto", "https")
        .header("forwarded", "for=203.0.113.9")
        .body(full(""))
        .unwrap();
    let resp = h1_client().request(req).await.unwrap();
    let body = json(&resp.into_body().collect().await.unwrap().to_bytes());
    assert_eq!(body["headers"]["x-forwarded-for"], "203.0.113.9, 127.0.0.1");
    // Written by the HTTP/1.1 encoder part by part: previous list, this hop, the host.
    assert_eq!(
        body["headers"]["forwarded"],
        format!("for=203.0.113.9, for=127.0.0.1;proto=http;host={a}")
    );
    assert_eq!(
        body["headers"]["x-forwarded-proto"], "https",
        "kept from a trusted proxy"
    );
}

#[tokio::test]
async fn host_header_target_mode() {
    let up = echo_upstream(false).await;
    let gw = gateway(&one_upstream(up.addr, "    host_header: target\n")).await;
    let a = addr(&gw).await;
    let (_, _, body) = get(&h1_client(), format!("http://{a}/x")).await;
    assert_eq!(json(&body)["headers"]["host"], format!("{}", up.addr));
}

#[tokio::test]
async fn rewrites_strip_prefix_and_template() {
    let up = echo_upstream(false).await;
    let cfg = config(&format!(
        "upstreams:\n  - name: up\n    targets: [{{url: 'http://{}'}}]\nroutes:\n  - name: strip\n    match: {{path_prefix: /api}}\n    upstream: up\n    rewrite: {{strip_prefix: /api}}\n  - name: tmpl\n    match: {{path: '/users/{{id}}'}}\n    upstream: up\n    rewrite: {{path: '/v2/accounts/{{id}}'}}\n",
        up.addr
    ));
    let gw = gateway(&cfg).await;
    let a = addr(&gw).await;
    let c = h1_client();
    assert_eq!(
        json(&get(&c, format!("http://{a}/api/items?q=1")).await.2)["uri"],
        "/items?q=1"
    );
    assert_eq!(
        json(&get(&c, format!("http://{a}/api")).await.2)["uri"],
        "/"
    );
    assert_eq!(
        json(&get(&c, format!("http://{a}/users/42?z=9")).await.2)["uri"],
        "/v2/accounts/42?z=9"
    );
    // /apix is not under /api: no route.
    assert_eq!(
        get(&c, format!("http://{a}/apix")).await.0,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn not_found_and_method_not_allowed_are_json() {
    let cfg = config(
        "routes:\n  - name: r\n    match: {path: /only, methods: [GET, PUT]}\n    direct_response: {body: hi}\n",
    );
    let gw = gateway(&cfg).await;
    let a = addr(&gw).await;
    let c = h1_client();
    let (s, h, b) = get(&c, format!("http://{a}/nope")).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let j = json(&b);
    assert_eq!(j["error"]["code"], "no_route");
    assert_eq!(
        j["error"]["request_id"],
        h["x-request-id"].to_str().unwrap()
    );
    let req = Request::post(format!("http://{a}/only"))
        .body(full(""))
        .unwrap();
    let resp = c.request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(resp.headers()["allow"], "GET, PUT");
    let (s, _, b) = get(&c, format!("http://{a}/only")).await;
    assert_eq!((s, &b[..]), (StatusCode::OK, &b"hi"[..]));
}

#[tokio::test]
async fn normalised_path_reaches_upstream() {
    let up = echo_upstream(false).await;
    let cfg = config(&format!(
        "upstreams:\n  - name: up\n    targets: [{{url: 'http://{}'}}]\nroutes:\n  - name: public\n    match: {{path_prefix: /public}}\n    upstream: up\n",
        up.addr
    ));
    let gw = gateway(&cfg).await;
    let a = addr(&gw).await;
    let resp = raw(
        a,
        b"GET /private/../public/%7Ea HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.contains("\"uri\":\"/public/~a\""), "{resp}");
    for bad in ["/public/..;/private", "/public/a\\b"] {
        let resp = raw(
            a,
            format!("GET {bad} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await;
        assert!(resp.starts_with("HTTP/1.1 400"), "{bad}: {resp}");
    }
}

#[tokio::test]
async fn host_errors_are_400() {
    let gw = gateway(&config(
        "routes:\n  - name: r\n    match: {path_prefix: /}\n    direct_response: {body: ok}\n",
    ))
    .await;
    let a = addr(&gw).await;
    let dup = raw(
        a,
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(dup.starts_with("HTTP/1.1 400"), "{dup}");
    let missing = raw(a, b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n").await;
    assert!(missing.starts_with("HTTP/1.1 400"), "{missing}");
    let dot = raw(
        a,
        b"GET / HTTP/1.1\r\nHost: Example.COM.\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(dot.starts_with("HTTP/1.1 200"), "{dot}");
}

#[tokio::test]
async fn host_routing_with_trailing_dot_and_case() {
    let cfg = config(
        "routes:\n  - name: api\n    match: {path_prefix: /, hosts: [api.example.com]}\n    direct_response: {body: api}\n  - name: wild\n    match: {path_prefix: /, hosts: ['*.example.com']}\n    direct_response: {body: wild}\n  - name: any\n    match: {path_prefix: /}\n    direct_response: {body: any}\n",
    );
    let gw = gateway(&cfg).await;
    let a = addr(&gw).await;
    for (host, want) in [
        ("API.example.com.", "api"),
        ("x.example.com:8080", "wild"),
        ("example.com", "any"),
    ] {
        let r = raw(
            a,
            format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await;
        assert!(r.ends_with(want), "{host}: {r}");
    }
}

#[tokio::test]
async fn upstream_refused_is_502_and_timeout_is_504() {
    // A port nobody listens on.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let gw = gateway(&one_upstream(dead, "")).await;
    let a = addr(&gw).await;
    let (s, _, b) = get(&h1_client(), format!("http://{a}/x")).await;
    assert_eq!(s, StatusCode::BAD_GATEWAY);
    assert_eq!(json(&b)["error"]["code"], "upstream_connect_failed");

    let slow = upstream(false, |_req| async {
        tokio::time::sleep(std::time::Duration::from_secs(5)).await;
        Response::new(full("late"))
    })
    .await;
    let gw = gateway(&one_upstream(
        slow.addr,
        "    timeouts: {response_headers: 200ms}\n",
    ))
    .await;
    let a = addr(&gw).await;
    let (s, _, b) = get(&h1_client(), format!("http://{a}/x")).await;
    assert_eq!(s, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(json(&b)["error"]["code"], "upstream_timeout");
}

/// The response-head deadline of an HTTP/1.1 upstream connection is one timer for the
/// connection's life, moved forward per exchange: each exchange on the same pooled connection
/// gets the full timeout, also after the timer fired while the connection sat idle, and a
/// slow answer on a reused connection still times out.
#[tokio::test]
async fn response_head_deadline_is_per_exchange_on_a_reused_connection() {
    let slow = upstream(false, |req| async move {
        let ms: u64 = req
            .uri()
            .path()
            .trim_start_matches("/ms/")
            .parse()
            .unwrap_or(0);
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
        Response::new(full("ok"))
    })
    .await;
    let gw = gateway(&one_upstream(
        slow.addr,
        "    timeouts: {response_headers: 1s}\n",
    ))
    .await;
    let a = addr(&gw).await;
    let client = h1_client();
    // Three exchanges of 600 ms each: 1.8 s in all on one connection, each within 1 s.
    for _ in 0..3 {
        let (s, _, _) = get(&client, format!("http://{a}/ms/600")).await;
        assert_eq!(s, StatusCode::OK);
    }
    // Idle past the last deadline: the connection's timer fires with nothing waiting.
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    let (s, _, _) = get(&client, format!("http://{a}/ms/600")).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _, b) = get(&client, format!("http://{a}/ms/3000")).await;
    assert_eq!(s, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(json(&b)["error"]["code"], "upstream_timeout");
    // All on one upstream connection until the timeout closed it.
    assert_eq!(
        slow.stats
            .accepted
            .load(std::sync::atomic::Ordering::SeqCst),
        1
    );
}

#[tokio::test]
async fn grpc_errors_are_grpc_shaped() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let gw = gateway(&one_upstream(dead, "    protocol: http2\n")).await;
    let a = addr(&gw).await;
    let req = Request::post(format!("http://{a}/pkg.Svc/Method"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(full(""))
        .unwrap();
    let resp = h2_client().request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["grpc-status"], "14");
}

#[tokio::test]
async fn all_four_protocol_combinations() {
    for (client_h2, upstream_h2) in [(false, false), (false, true), (true, false), (true, true)] {
        let up = echo_upstream(upstream_h2).await;
        let proto = if upstream_h2 {
            "    protocol: http2\n"
        } else {
            ""
        };
        let gw = gateway(&one_upstream(up.addr, proto)).await;
        let a = addr(&gw).await;
        let client = if client_h2 { h2_client() } else { h1_client() };
        let req = Request::post(format!("http://{a}/echo?q=1"))
            .body(full("hello"))
            .unwrap();
        let resp = client.request(req).await.unwrap();
        assert_eq!(
            resp.status(),
            StatusCode::OK,
            "client h2={client_h2} upstream h2={upstream_h2}"
        );
        let want = if client_h2 {
            http::Version::HTTP_2
        } else {
            http::Version::HTTP_11
        };
        assert_eq!(resp.version(), want);
        let j = json(&resp.into_body().collect().await.unwrap().to_bytes());
        assert_eq!(
            j["version"],
            if upstream_h2 { "HTTP/2.0" } else { "HTTP/1.1" }
        );
        assert!(j["uri"].as_str().unwrap().ends_with("/echo?q=1"), "{j}");
        assert_eq!(j["body_len"], 5);
        assert_eq!(j["method"], "POST");
    }
}

#[tokio::test]
async fn direct_response_and_head() {
    let gw = gateway(&config("routes:\n  - name: r\n    match: {path: /health}\n    direct_response: {status: 201, headers: {x-a: b}, body: fine}\n")).await;
    let a = addr(&gw).await;
    let (s, h, b) = get(&h1_client(), format!("http://{a}/health")).await;
    assert_eq!(
        (s, h["x-a"].to_str().unwrap(), &b[..]),
        (StatusCode::CREATED, "b", &b"fine"[..])
    );
}
