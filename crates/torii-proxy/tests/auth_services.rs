//! Authentication by external services end to end: `forward_auth` and `oauth2_introspection`
//! against real fake services on 127.0.0.1, with the gateway in front of an echo upstream.
#![allow(clippy::unwrap_used)]

mod support;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::*;

/// What a fake auth service received.
#[derive(Clone, Debug)]
struct Seen {
    method: http::Method,
    uri: http::Uri,
    headers: HeaderMap,
    body: Bytes,
}

/// Hits and requests of a fake auth service.
#[derive(Default)]
struct Recorder {
    hits: AtomicUsize,
    seen: Mutex<Vec<Seen>>,
}

impl Recorder {
    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
    fn last(&self) -> Seen {
        self.seen.lock().unwrap().last().cloned().unwrap()
    }
}

/// A fake auth service (HTTP/1.1) built with the `upstream` helper: it records each request,
/// then answers with `decide`.
async fn service<F, Fut>(decide: F) -> (SocketAddr, Arc<Recorder>)
where
    F: Fn(Seen) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Response<BoxBody>> + Send + 'static,
{
    let rec = Arc::new(Recorder::default());
    let r = rec.clone();
    let up = upstream(false, move |req: Request<Incoming>| {
        let (decide, r) = (decide.clone(), r.clone());
        async move {
            let (parts, body) = req.into_parts();
            let body = body.collect().await.unwrap().to_bytes();
            let seen = Seen {
                method: parts.method,
                uri: parts.uri,
                headers: parts.headers,
                body,
            };
            r.seen.lock().unwrap().push(seen.clone());
            r.hits.fetch_add(1, Ordering::SeqCst);
            decide(seen).await
        }
    })
    .await;
    (up.addr, rec)
}

fn reply(status: u16, headers: &[(&str, &str)], body: &str) -> Response<BoxBody> {
    let mut b = Response::builder().status(status);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(full(body.to_string())).unwrap()
}

async fn closed_port() -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = l.local_addr().unwrap();
    drop(l);
    a
}

const CONSUMERS: &str = "consumers:\n  - name: alice\n    id: u-1\n    groups: [staff]\n  - name: web\n  - name: guest\n";

/// A gateway config: an echo upstream, the consumers above, and one route per
/// `(name, path_prefix, plugins YAML)`.
fn gw_yaml(up: SocketAddr, routes: &[(&str, &str, &str)]) -> String {
    let mut r = String::new();
    for (name, prefix, plugins) in routes {
        r.push_str(&format!(
            "  - name: {name}\n    match: {{path_prefix: {prefix}}}\n    upstream: up\n    plugins:\n{plugins}"
        ));
    }
    config(&format!(
        "upstreams:\n  - name: up\n    targets: [{{url: 'http://{up}'}}]\n{CONSUMERS}routes:\n{r}"
    ))
}

async fn send(
    a: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, HeaderMap, Bytes) {
    let mut b = Request::builder()
        .method(method)
        .uri(format!("http://{a}{path}"));
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let resp = h1_client()
        .request(b.body(full("")).unwrap())
        .await
        .unwrap();
    let (parts, body) = resp.into_parts();
    (
        parts.status,
        parts.headers,
        body.collect().await.unwrap().to_bytes(),
    )
}

/// The echo upstream's view of the request (headers as a JSON object).
fn upstream_saw(body: &[u8]) -> serde_json::Value {
    json(body)
}

// ===================================== forward_auth =====================================

/// Allows `Authorization: Bearer good` as consumer `u-1` with `X-User-Id: 42`; asks for
/// credentials without one; forbids other credentials, `DELETE` and `/admin`.
async fn sso() -> (SocketAddr, Arc<Recorder>) {
    service(|s: Seen| async move {
        let fwd = |n: &str| {
            s.headers
                .get(n)
                .map(|v| v.to_str().unwrap().to_string())
                .unwrap_or_default()
        };
        if fwd("x-forwarded-uri").starts_with("/api/slow") {
            // Slow enough that a burst of identical requests overlaps one call.
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        }
        if fwd("x-forwarded-method") == "DELETE" || fwd("x-forwarded-uri").starts_with("/api/admin")
        {
            return reply(403, &[("content-type", "text/plain")], "admins only");
        }
        match s.headers.get("authorization").map(|v| v.to_str().unwrap()) {
            Some("Bearer good") => reply(200, &[("x-user-id", "42"), ("x-consumer", "u-1")], ""),
            None => reply(
                401,
                &[
                    ("www-authenticate", "Bearer realm=\"sso\""),
                    ("content-type", "application/json"),
                    ("x-internal", "secret"),
                ],
                "{\"login\":\"https://sso.example/login\"}",
            ),
            Some(_) => reply(403, &[("content-type", "text/plain")], "bad credentials"),
        }
    })
    .await
}

fn forward_auth(auth: SocketAddr, extra: &str) -> String {
    format!(
        "      forward_auth:\n        url: 'http://{auth}/verify'\n        copy_headers: [x-user-id]\n        consumer_header: x-consumer\n{extra}"
    )
}

const GOOD: (&str, &str) = ("authorization", "Bearer good");

#[tokio::test]
async fn forward_auth_allows_on_2xx_and_the_copied_header_arrives_upstream() {
    let up = echo_upstream(false).await;
    let (auth, rec) = sso().await;
    let gw = gateway(&gw_yaml(
        up.addr,
        &[("api", "/api", &forward_auth(auth, ""))],
    ))
    .await;
    let a = addr(&gw).await;
    let (s, _, b) = send(
        a,
        "GET",
        "/api/items",
        &[GOOD, ("x-user-id", "1"), ("x_user_id", "1")],
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let h = &upstream_saw(&b)["headers"];
    assert_eq!(
        h["x-user-id"], "42",
        "the service's value, not the client's"
    );
    assert!(h.get("x_user_id").is_none(), "underscore spelling stripped");
    assert_eq!(h["x-consumer-id"], "u-1");
    assert_eq!(h["x-consumer-name"], "alice");
    assert_eq!(h["x-consumer-groups"], "staff");
    assert_eq!(rec.hits(), 1);
}

#[tokio::test]
async fn forward_auth_strips_client_copies_when_the_service_returns_none() {
    let up = echo_upstream(false).await;
    let (auth, _) = service(|_| async { reply(204, &[], "") }).await;
    let plugins = format!(
        "      forward_auth:\n        url: 'http://{auth}/'\n        copy_headers: [x-user-id]\n        consumer: web\n"
    );
    let gw = gateway(&gw_yaml(up.addr, &[("api", "/", &plugins)])).await;
    let a = addr(&gw).await;
    let (s, _, b) = send(
        a,
        "GET",
        "/x",
        &[("x-user-id", "admin"), ("X_User_Id", "admin")],
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let h = upstream_saw(&b)["headers"].as_object().unwrap().clone();
    assert!(
        !h.contains_key("x-user-id") && !h.contains_key("x_user_id"),
        "{h:?}"
    );
    assert_eq!(h["x-consumer-name"], "web", "the fixed consumer");
}

/// A burst of identical requests (no cache configured) makes one call to the service; a
/// request for another path in the same burst is not merged with them.
#[tokio::test]
async fn forward_auth_coalesces_identical_requests_in_flight() {
    let up = echo_upstream(false).await;
    let (auth, rec) = sso().await;
    let gw = gateway(&gw_yaml(
        up.addr,
        &[("api", "/api", &forward_auth(auth, ""))],
    ))
    .await;
    let a = addr(&gw).await;
    let mut set = tokio::task::JoinSet::new();
    for i in 0..21 {
        let path = if i == 20 {
            "/api/slow/other"
        } else {
            "/api/slow/x"
        };
        set.spawn(async move { send(a, "GET", path, &[GOOD]).await.0 });
    }
    let statuses = set.join_all().await;
    assert!(
        statuses.iter().all(|s| *s == StatusCode::OK),
        "{statuses:?}"
    );
    assert_eq!(
        rec.hits(),
        2,
        "one call for the 20 identical requests, one for the other"
    );
}

/// When an earlier authentication plugin identifies the consumer, forward_auth does not call
/// its service, but a client still cannot smuggle the headers forward_auth vouches for.
#[tokio::test]
async fn forward_auth_copy_headers_are_stripped_even_when_another_plugin_authenticates() {
    let up = echo_upstream(false).await;
    let (auth, rec) = sso().await;
    let key = "combo-key-0123456789abcdef";
    let plugins = format!("      key_auth: {{}}\n{}", forward_auth(auth, ""));
    let yaml = gw_yaml(up.addr, &[("api", "/", &plugins)]).replace(
        "  - name: alice\n    id: u-1\n",
        &format!(
            "  - name: alice\n    id: u-1\n    keys: ['{}']\n",
            torii_plugins::consumers::format_key_hash(key.as_bytes())
        ),
    );
    let gw = gateway(&yaml).await;
    let a = addr(&gw).await;
    let (s, _, b) = send(
        a,
        "GET",
        "/x",
        &[("x-api-key", key), ("x-user-id", "1"), ("X_User_Id", "1")],
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let h = upstream_saw(&b)["headers"].as_object().unwrap().clone();
    assert_eq!(h["x-consumer-name"], "alice", "key_auth authenticated");
    assert!(
        !h.contains_key("x-user-id") && !h.contains_key("x_user_id"),
        "spoofed copy headers reached the upstream: {h:?}"
    );
    assert_eq!(rec.hits(), 0, "forward_auth was skipped");
}

#[tokio::test]
async fn forward_auth_passes_refusals_with_status_body_and_challenge() {
    let up = echo_upstream(false).await;
    let (auth, _) = sso().await;
    let gw = gateway(&gw_yaml(
        up.addr,
        &[("api", "/api", &forward_auth(auth, ""))],
    ))
    .await;
    let a = addr(&gw).await;

    let (s, h, b) = send(a, "GET", "/api/items", &[]).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(h["www-authenticate"], "Bearer realm=\"sso\"");
    assert_eq!(h["content-type"], "application/json");
    assert!(h.get("x-internal").is_none());
    assert_eq!(b, "{\"login\":\"https://sso.example/login\"}");

    let (s, h, b) = send(a, "GET", "/api/items", &[("authorization", "Bearer bad")]).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert_eq!(h["content-type"], "text/plain");
    assert_eq!(b, "bad credentials");
}

#[tokio::test]
async fn forward_auth_fails_closed_with_503() {
    let up = echo_upstream(false).await;
    let (broken, _) = service(|_| async { reply(500, &[], "oops") }).await;
    let (slow, slow_rec) = service(|_| async {
        tokio::time::sleep(Duration::from_secs(5)).await;
        reply(200, &[("x-consumer", "u-1")], "")
    })
    .await;
    let down = closed_port().await;
    let fa = |at: SocketAddr| {
        format!(
            "      forward_auth:\n        url: 'http://{at}/verify'\n        consumer: web\n        timeout: 300ms\n"
        )
    };
    let gw = gateway(&gw_yaml(
        up.addr,
        &[
            ("broken", "/broken", &fa(broken)),
            ("down", "/down", &fa(down)),
            ("slow", "/slow", &fa(slow)),
        ],
    ))
    .await;
    let a = addr(&gw).await;
    for path in ["/broken", "/down", "/slow"] {
        let t = Instant::now();
        let (s, _, b) = send(a, "GET", path, &[GOOD]).await;
        assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{path}");
        assert_eq!(json(&b)["error"]["code"], "auth_unavailable", "{path}");
        assert!(
            t.elapsed() < Duration::from_secs(3),
            "{path}: {:?}",
            t.elapsed()
        );
    }
    assert_eq!(slow_rec.hits(), 1, "the slow service was asked");
}

#[tokio::test]
async fn forward_auth_sends_the_request_facts_and_only_the_configured_headers() {
    let up = echo_upstream(false).await;
    let (auth, rec) = sso().await;
    let gw = gateway(&gw_yaml(
        up.addr,
        &[("api", "/api", &forward_auth(auth, ""))],
    ))
    .await;
    let a = addr(&gw).await;
    let (s, _, _) = send(
        a,
        "PUT",
        "/api//v1/./items/../things?page=2",
        &[
            GOOD,
            ("cookie", "session=abc"),
            ("x-api-key", "not-for-the-service"),
            ("x-forwarded-uri", "/spoofed"),
            ("host", "API.Example.com"),
        ],
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let seen = rec.last();
    assert_eq!(seen.method, http::Method::GET);
    assert_eq!(seen.uri.path(), "/verify");
    assert_eq!(seen.headers["x-forwarded-method"], "PUT");
    assert_eq!(
        seen.headers["x-forwarded-uri"], "/api/v1/things?page=2",
        "the normalised path the upstream gets"
    );
    assert_eq!(seen.headers["x-forwarded-host"], "api.example.com");
    assert_eq!(seen.headers["authorization"], "Bearer good");
    assert_eq!(seen.headers["cookie"], "session=abc");
    assert!(seen.headers.get("x-api-key").is_none());
    assert!(seen.body.is_empty());
}

#[tokio::test]
async fn forward_auth_cache_is_keyed_by_method_path_and_credentials() {
    let up = echo_upstream(false).await;
    let (auth, rec) = sso().await;
    let gw = gateway(&gw_yaml(
        up.addr,
        &[(
            "api",
            "/api",
            &forward_auth(auth, "        cache_ttl: 1m\n"),
        )],
    ))
    .await;
    let a = addr(&gw).await;

    let (s, _, _) = send(a, "GET", "/api/a", &[GOOD]).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(rec.hits(), 1);
    // Identical: from the cache, with the copied header and the consumer.
    let (s, _, b) = send(a, "GET", "/api/a", &[GOOD, ("x-user-id", "7")]).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(rec.hits(), 1, "no second call");
    let h = &upstream_saw(&b)["headers"];
    assert_eq!(h["x-user-id"], "42");
    assert_eq!(h["x-consumer-name"], "alice");

    // Another method or path asks again.
    assert_eq!(send(a, "POST", "/api/a", &[GOOD]).await.0, StatusCode::OK);
    assert_eq!(rec.hits(), 2);
    assert_eq!(send(a, "GET", "/api/b", &[GOOD]).await.0, StatusCode::OK);
    assert_eq!(rec.hits(), 3);

    // The allow for GET /api/a does not authorise DELETE /api/admin.
    let (s, _, b) = send(a, "DELETE", "/api/admin", &[GOOD]).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert_eq!(b, "admins only");
    assert_eq!(rec.hits(), 4);
    // Nor does it cover the same request without the credential.
    let (s, _, _) = send(a, "GET", "/api/a", &[]).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(rec.hits(), 5);
}

#[tokio::test]
async fn forward_auth_needs_a_consumer_setting_and_does_no_io_at_load() {
    let yaml = gw_yaml(
        "127.0.0.1:9".parse().unwrap(),
        &[(
            "api",
            "/",
            "      forward_auth: {url: 'http://127.0.0.1:9/verify'}\n",
        )],
    );
    let Err(err) = load_str("t.yaml", &yaml) else {
        panic!("accepted without a consumer setting")
    };
    let err = err.to_string();
    assert!(err.contains("consumer_header"), "{err}");
    // An unreachable service is fine at load: nothing is called before a request.
    let down = closed_port().await;
    let plugins = format!("      forward_auth: {{url: 'http://{down}/verify', consumer: web}}\n");
    assert!(load_str("t.yaml", &gw_yaml(down, &[("api", "/", &plugins)])).is_ok());
}

// ================================= oauth2_introspection =================================

/// The fake authorization server: `alice-token` is active (sub `u-1`), `expired-token` is
/// active with a past `exp`, everything else inactive. Client credentials must be
/// `gateway:s3cret` or it answers 401.
async fn authorization_server() -> (SocketAddr, Arc<Recorder>) {
    service(|s: Seen| async move {
        let basic = s
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Basic "))
            .map(|b| {
                use base64::Engine as _;
                String::from_utf8(base64::engine::general_purpose::STANDARD.decode(b).unwrap())
                    .unwrap()
            });
        if basic.as_deref() != Some("gateway:s3cret") {
            return reply(401, &[], "{\"error\":\"invalid_client\"}");
        }
        let body = std::str::from_utf8(&s.body).unwrap();
        let token = body
            .split('&')
            .find_map(|kv| kv.strip_prefix("token="))
            .unwrap_or("");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        if token == "slow-alice-token" {
            // Slow enough that a burst of requests overlaps one call.
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        }
        let answer = match token {
            "alice-token" | "slow-alice-token" => serde_json::json!({
                "active": true, "sub": "u-1", "scope": "orders:read", "client_id": "spa",
                "exp": now + 3600,
            }),
            "expired-token" => serde_json::json!({"active": true, "sub": "u-1", "exp": now - 5}),
            "stranger-token" => serde_json::json!({"active": true, "sub": "nobody"}),
            _ => serde_json::json!({"active": false}),
        };
        reply(
            200,
            &[("content-type", "application/json")],
            &answer.to_string(),
        )
    })
    .await
}

fn introspection(at: SocketAddr, extra: &str) -> String {
    format!(
        "      oauth2_introspection:\n        introspection_url: 'http://{at}/oauth2/introspect'\n        client_id: gateway\n        client_secret: s3cret\n{extra}"
    )
}

fn bearer(token: &str) -> (&'static str, String) {
    ("authorization", format!("Bearer {token}"))
}

async fn send_token(a: SocketAddr, token: &str) -> (StatusCode, HeaderMap, Bytes) {
    let (k, v) = bearer(token);
    send(a, "GET", "/api/orders", &[(k, v.as_str())]).await
}

const INVALID: &str = "Bearer realm=\"torii\", error=\"invalid_token\"";

#[tokio::test]
async fn introspection_active_token_reaches_upstream_with_the_consumer() {
    let up = echo_upstream(false).await;
    let (idp, rec) = authorization_server().await;
    let gw = gateway(&gw_yaml(
        up.addr,
        &[("api", "/api", &introspection(idp, ""))],
    ))
    .await;
    let a = addr(&gw).await;
    let (s, _, b) = send_token(a, "alice-token").await;
    assert_eq!(s, StatusCode::OK);
    let h = &upstream_saw(&b)["headers"];
    assert_eq!(h["x-consumer-id"], "u-1");
    assert_eq!(h["x-consumer-name"], "alice");
    assert!(
        h.get("authorization").is_none(),
        "the token is hidden from the upstream"
    );
    // What the authorization server got: a form POST with Basic client credentials.
    let seen = rec.last();
    assert_eq!(seen.method, http::Method::POST);
    assert_eq!(seen.uri.path(), "/oauth2/introspect");
    assert_eq!(
        seen.headers["content-type"],
        "application/x-www-form-urlencoded"
    );
    use base64::Engine as _;
    assert_eq!(
        seen.headers["authorization"],
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("gateway:s3cret")
        )
    );
    assert_eq!(seen.body, "token=alice-token&token_type_hint=access_token");
}

#[tokio::test]
async fn introspection_refuses_inactive_expired_and_unknown_tokens() {
    let up = echo_upstream(false).await;
    let (idp, _) = authorization_server().await;
    let gw = gateway(&gw_yaml(
        up.addr,
        &[("api", "/api", &introspection(idp, ""))],
    ))
    .await;
    let a = addr(&gw).await;
    for token in ["revoked-token", "expired-token", "stranger-token"] {
        let (s, h, b) = send_token(a, token).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{token}");
        assert_eq!(h["www-authenticate"], INVALID, "{token}");
        assert_eq!(json(&b)["error"]["code"], "unauthorized");
    }
    // No token at all: the route's challenge.
    let (s, h, _) = send(a, "GET", "/api/orders", &[]).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(h["www-authenticate"], "Bearer realm=\"torii\"");
}

#[tokio::test]
async fn introspection_without_a_token_leaves_room_for_the_anonymous_consumer() {
    let up = echo_upstream(false).await;
    let (idp, rec) = authorization_server().await;
    let yaml = gw_yaml(up.addr, &[("api", "/api", &introspection(idp, ""))]).replace(
        "    upstream: up\n    plugins:",
        "    upstream: up\n    anonymous: guest\n    plugins:",
    );
    let gw = gateway(&yaml).await;
    let a = addr(&gw).await;
    let (s, _, b) = send(a, "GET", "/api/orders", &[]).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(upstream_saw(&b)["headers"]["x-consumer-name"], "guest");
    assert_eq!(rec.hits(), 0);
    let (s, _, _) = send_token(a, "revoked-token").await;
    assert_eq!(
        s,
        StatusCode::UNAUTHORIZED,
        "a bad token never falls back to anonymous"
    );
}

#[tokio::test]
async fn introspection_caches_active_and_briefly_inactive_results() {
    let up = echo_upstream(false).await;
    let (idp, rec) = authorization_server().await;
    let gw = gateway(&gw_yaml(
        up.addr,
        &[(
            "api",
            "/api",
            &introspection(idp, "        negative_cache_ttl: 200ms\n"),
        )],
    ))
    .await;
    let a = addr(&gw).await;
    for _ in 0..3 {
        assert_eq!(send_token(a, "alice-token").await.0, StatusCode::OK);
    }
    assert_eq!(rec.hits(), 1, "active results are cached");

    assert_eq!(
        send_token(a, "revoked-token").await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        send_token(a, "revoked-token").await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(rec.hits(), 2, "the inactive result is cached too");
    // ... briefly: poll until the endpoint is asked again (bounded).
    let deadline = Instant::now() + Duration::from_secs(5);
    while rec.hits() == 2 {
        assert!(
            Instant::now() < deadline,
            "the inactive result never expired"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
        assert_eq!(
            send_token(a, "revoked-token").await.0,
            StatusCode::UNAUTHORIZED
        );
    }
    assert_eq!(rec.hits(), 3);
}

/// A burst of requests with the same new token makes one call to the endpoint, not one per
/// request (the endpoint answers slowly, so without coalescing they would all miss the cache).
#[tokio::test]
async fn introspection_coalesces_concurrent_identical_tokens() {
    let up = echo_upstream(false).await;
    let (idp, rec) = authorization_server().await;
    let gw = gateway(&gw_yaml(
        up.addr,
        &[("api", "/api", &introspection(idp, ""))],
    ))
    .await;
    let a = addr(&gw).await;
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..20 {
        set.spawn(async move { send_token(a, "slow-alice-token").await.0 });
    }
    let statuses = set.join_all().await;
    assert!(
        statuses.iter().all(|s| *s == StatusCode::OK),
        "{statuses:?}"
    );
    assert_eq!(rec.hits(), 1, "one introspection call for the whole burst");
}

#[tokio::test]
async fn introspection_fails_closed_when_the_endpoint_cannot_answer() {
    let up = echo_upstream(false).await;
    let down = closed_port().await;
    let (idp, rec) = authorization_server().await;
    let wrong_secret = introspection(idp, "").replace("s3cret", "wrong");
    let gw = gateway(&gw_yaml(
        up.addr,
        &[
            ("down", "/down", &introspection(down, "")),
            ("misconfigured", "/api", &wrong_secret),
        ],
    ))
    .await;
    let a = addr(&gw).await;
    let (k, v) = bearer("alice-token");
    let (s, _, b) = send(a, "GET", "/down", &[(k, v.as_str())]).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(json(&b)["error"]["code"], "auth_unavailable");
    // The endpoint refusing the gateway's own credentials is not the client's fault.
    let (s, _, _) = send_token(a, "alice-token").await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(rec.hits(), 1);
}

#[tokio::test]
async fn introspection_secret_from_the_environment() {
    let up = echo_upstream(false).await;
    let (idp, _) = authorization_server().await;
    let yaml = gw_yaml(up.addr, &[("api", "/api", &introspection(idp, ""))])
        .replace("client_secret: s3cret", "client_secret: ${IDP_SECRET}");
    let env = |name: &str| (name == "IDP_SECRET").then(|| "s3cret".to_string());
    let loaded = torii_config::load_str("t.yaml", &yaml, &env, &*catalog()).unwrap();
    let gw = torii_proxy::Gateway::start(loaded, catalog())
        .await
        .unwrap();
    let a = addr(&gw).await;
    assert_eq!(send_token(a, "alice-token").await.0, StatusCode::OK);
}
