//! The response cache (`cache` plugin) against fake upstreams that count their requests.
#![allow(clippy::unwrap_used)]

mod support;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use support::*;

/// An origin that counts its requests and answers with `respond(request, n)` (n from 1).
async fn origin<F>(respond: F) -> (FakeUpstream, Arc<AtomicUsize>)
where
    F: Fn(&Request<Incoming>, usize) -> Response<BoxBody> + Send + Sync + 'static,
{
    let n = Arc::new(AtomicUsize::new(0));
    let count = n.clone();
    let respond = Arc::new(respond);
    let up = upstream(false, move |req: Request<Incoming>| {
        let count = count.clone();
        let respond = respond.clone();
        async move {
            let i = count.fetch_add(1, Ordering::SeqCst) + 1;
            respond(&req, i)
        }
    })
    .await;
    (up, n)
}

fn resp(status: u16, fields: &[(&str, &str)], body: impl Into<Bytes>) -> Response<BoxBody> {
    let mut b = Response::builder().status(status);
    for (k, v) in fields {
        b = b.header(*k, *v);
    }
    b.body(full(body)).unwrap()
}

/// A gateway config with one route `name` to `up`.
fn cfg_named(up: SocketAddr, name: &str, plugins: &str) -> String {
    config(&format!(
        "upstreams:\n  - name: up\n    targets: [{{url: 'http://{up}'}}]\nroutes:\n  - name: {name}\n    match: {{path_prefix: /}}\n    upstream: up\n    plugins: {plugins}\n"
    ))
}

/// The same with a route name of its own: every gateway of a test process shares the
/// process's memory tier (as a reloaded gateway does), and route names keep their entries
/// apart.
fn cfg(up: SocketAddr, plugins: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    cfg_named(
        up,
        &format!("r{}", N.fetch_add(1, Ordering::SeqCst)),
        plugins,
    )
}

/// Sends `method path` with `fields`; the status, fields and body.
async fn send(
    a: SocketAddr,
    method: &str,
    path: &str,
    fields: &[(&str, &str)],
) -> (StatusCode, HeaderMap, Bytes) {
    let mut b = Request::builder()
        .method(method)
        .uri(format!("http://{a}{path}"));
    for (k, v) in fields {
        b = b.header(*k, *v);
    }
    let r = h1_client()
        .request(b.body(full("")).unwrap())
        .await
        .unwrap();
    let (p, body) = r.into_parts();
    (
        p.status,
        p.headers,
        body.collect().await.unwrap().to_bytes(),
    )
}

fn cache_status(h: &HeaderMap) -> &str {
    h.get("cache-status").map_or("", |v| v.to_str().unwrap())
}

/// A stored response is waited for by reading the whole body (the store happens as the last
/// byte passes); this waits until a GET is a hit, bounded.
async fn until_hit(a: SocketAddr, path: &str) {
    for _ in 0..200 {
        let (_, h, _) = send(a, "GET", path, &[("cache-control", "only-if-cached")]).await;
        if cache_status(&h).contains("hit") {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{path} never stored");
}

#[tokio::test]
async fn fresh_responses_are_served_from_memory_with_age_head_and_304s() {
    let (up, n) = origin(|_, i| {
        resp(
            200,
            &[
                ("cache-control", "max-age=60"),
                ("etag", "\"v1\""),
                ("age", "3"),
            ],
            format!("body {i}"),
        )
    })
    .await;
    let gw = gateway(&cfg_named(up.addr, "fresh", "{cache: {x_cache: true}}")).await;
    let a = addr(&gw).await;
    let (s, h, b) = send(a, "GET", "/x", &[]).await;
    assert_eq!((s, &b[..]), (StatusCode::OK, &b"body 1"[..]));
    assert_eq!(
        cache_status(&h),
        "torii; fwd=uri-miss; fwd-status=200; stored"
    );
    assert_eq!(h.get("x-cache").unwrap(), "MISS");
    let (s, h, b) = send(a, "GET", "/x", &[]).await;
    assert_eq!((s, &b[..]), (StatusCode::OK, &b"body 1"[..]));
    assert!(cache_status(&h).starts_with("torii; hit; ttl=5"), "{h:?}");
    assert_eq!(h.get("x-cache").unwrap(), "HIT");
    assert_eq!(h.get("age").unwrap(), "3");
    assert_eq!(h.get("etag").unwrap(), "\"v1\"");
    // HEAD from the stored GET: no body, the GET's length.
    let (s, h, b) = send(a, "HEAD", "/x", &[]).await;
    assert_eq!((s, b.len()), (StatusCode::OK, 0));
    assert_eq!(h.get("content-length").unwrap(), "6");
    // The client's conditional request, answered from the cache.
    let (s, h, b) = send(a, "GET", "/x", &[("if-none-match", "\"v1\"")]).await;
    assert_eq!((s, b.len()), (StatusCode::NOT_MODIFIED, 0));
    assert_eq!(h.get("etag").unwrap(), "\"v1\"");
    let (s, _, b) = send(a, "GET", "/x", &[("if-none-match", "\"v0\"")]).await;
    assert_eq!((s, &b[..]), (StatusCode::OK, &b"body 1"[..]));
    // One range of the stored answer; past its end, 416.
    let (s, h, b) = send(a, "GET", "/x", &[("range", "bytes=0-3")]).await;
    assert_eq!((s, &b[..]), (StatusCode::PARTIAL_CONTENT, &b"body"[..]));
    assert_eq!(h.get("content-range").unwrap(), "bytes 0-3/6");
    let (s, h, _) = send(a, "GET", "/x", &[("range", "bytes=100-")]).await;
    assert_eq!(s, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(h.get("content-range").unwrap(), "bytes */6");
    // Another query is another resource.
    let (_, _, b) = send(a, "GET", "/x?page=2", &[]).await;
    assert_eq!(&b[..], b"body 2");
    assert_eq!(n.load(Ordering::SeqCst), 2);
    // The request's own directives: no-cache goes to the origin.
    let (_, h, b) = send(a, "GET", "/x", &[("cache-control", "no-cache")]).await;
    assert_eq!(&b[..], b"body 3");
    assert!(cache_status(&h).contains("fwd=stale"), "{h:?}");
    let text = gw.shared().metrics_text();
    assert!(
        text.contains("torii_cache_requests_total{scope=\"route:fresh\",result=\"hits\"} 6"),
        "{text}"
    );
    assert!(text.contains("torii_cache_memory_entries "), "{text}");
}

#[tokio::test]
async fn a_hundred_concurrent_misses_make_one_upstream_request() {
    let (up, n) = origin(|_, i| {
        // Slow enough that every client asks before the first answer.
        std::thread::sleep(Duration::from_millis(300));
        resp(200, &[("cache-control", "max-age=60")], format!("only {i}"))
    })
    .await;
    let gw = gateway(&cfg(up.addr, "{cache: {}}")).await;
    let a = addr(&gw).await;
    let tasks: Vec<_> = (0..100)
        .map(|_| tokio::spawn(async move { send(a, "GET", "/cold", &[]).await }))
        .collect();
    let mut collapsed = 0;
    for t in tasks {
        let (s, h, b) = t.await.unwrap();
        assert_eq!((s, &b[..]), (StatusCode::OK, &b"only 1"[..]));
        collapsed += usize::from(cache_status(&h).contains("collapsed"));
    }
    assert_eq!(n.load(Ordering::SeqCst), 1);
    assert_eq!(collapsed, 99);
}

#[tokio::test]
async fn vary_variants_are_kept_apart() {
    let (up, n) = origin(|req, _| {
        let lang = req
            .headers()
            .get("accept-language")
            .map_or("none", |v| v.to_str().unwrap())
            .to_string();
        resp(
            200,
            &[("cache-control", "max-age=60"), ("vary", "Accept-Language")],
            lang,
        )
    })
    .await;
    let gw = gateway(&cfg(up.addr, "{cache: {}}")).await;
    let a = addr(&gw).await;
    for _ in 0..2 {
        for lang in ["fr", "en"] {
            let (_, _, b) = send(a, "GET", "/v", &[("accept-language", lang)]).await;
            assert_eq!(&b[..], lang.as_bytes());
        }
        let (_, _, b) = send(a, "GET", "/v", &[]).await;
        assert_eq!(&b[..], b"none");
    }
    assert_eq!(n.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn private_and_authenticated_responses_are_never_served_to_another_consumer() {
    let (up, n) = origin(|req, _| {
        let who = req
            .headers()
            .get("x-consumer-name")
            .map_or("nobody", |v| v.to_str().unwrap())
            .to_string();
        let cc = if req.uri().path() == "/private" {
            "private, max-age=60"
        } else {
            "max-age=60"
        };
        resp(200, &[("cache-control", cc)], who)
    })
    .await;
    let consumers = &format!(
        "consumers:\n  - name: alice\n    keys: ['{}']\n  - name: bob\n    keys: ['{}']\n",
        torii_plugins::consumers::format_key_hash(b"alice-key-0123456789"),
        torii_plugins::consumers::format_key_hash(b"bob-key-0123456789ab"),
    );
    for plugins in [
        "{key_auth: {}, cache: {}}",
        "{key_auth: {}, cache: {key: {consumer: true}}}",
    ] {
        n.store(0, Ordering::SeqCst);
        let gw = gateway(&format!("{}{consumers}", cfg(up.addr, plugins))).await;
        let a = addr(&gw).await;
        for path in ["/private", "/data"] {
            let (_, _, b) = send(a, "GET", path, &[("x-api-key", "alice-key-0123456789")]).await;
            assert_eq!(&b[..], b"alice");
            let (_, h, b) = send(a, "GET", path, &[("x-api-key", "bob-key-0123456789ab")]).await;
            assert_eq!(&b[..], b"bob", "{plugins} {path}: {h:?}");
        }
        assert_eq!(n.load(Ordering::SeqCst), 4, "{plugins}");
    }
    // Keyed by consumer, each consumer's own response is stored for them.
    let gw = gateway(&format!(
        "{}{consumers}",
        cfg(up.addr, "{key_auth: {}, cache: {key: {consumer: true}}}")
    ))
    .await;
    let a = addr(&gw).await;
    n.store(0, Ordering::SeqCst);
    for _ in 0..2 {
        for who in ["alice", "bob"] {
            let key = if who == "alice" {
                "alice-key-0123456789"
            } else {
                "bob-key-0123456789ab"
            };
            let (_, _, b) = send(a, "GET", "/data", &[("x-api-key", key)]).await;
            assert_eq!(&b[..], who.as_bytes());
        }
    }
    assert_eq!(n.load(Ordering::SeqCst), 2);
}

/// An origin on a listener the test can close: after `stop`, connections are refused.
struct Closable {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

async fn closable<F>(respond: F) -> (Closable, Arc<AtomicUsize>)
where
    F: Fn(&Request<Incoming>, usize) -> Response<BoxBody> + Send + Sync + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let n = Arc::new(AtomicUsize::new(0));
    let count = n.clone();
    let respond = Arc::new(respond);
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let count = count.clone();
            let respond = respond.clone();
            let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                let i = count.fetch_add(1, Ordering::SeqCst) + 1;
                // One request per connection: nothing stays pooled once the origin is gone.
                let mut r = respond(&req, i);
                r.headers_mut()
                    .insert("connection", http::HeaderValue::from_static("close"));
                async move { Ok::<_, std::convert::Infallible>(r) }
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc),
            );
        }
    });
    (Closable { addr, task }, n)
}

#[tokio::test]
async fn stale_if_error_serves_the_stored_response_when_the_upstream_refuses_connections() {
    // Stale at once (max-age=0), usable for a minute on errors, no validator.
    let (up, n) = closable(|_, i| {
        resp(
            200,
            &[("cache-control", "max-age=0, stale-if-error=60")],
            format!("v{i}"),
        )
    })
    .await;
    let gw = gateway(&cfg(up.addr, "{cache: {x_cache: true}}")).await;
    let a = addr(&gw).await;
    let (_, h, b) = send(a, "GET", "/s", &[]).await;
    assert_eq!(&b[..], b"v1");
    assert!(cache_status(&h).contains("stored"), "{h:?}");
    // Stale and the origin up: fetched again.
    let (_, _, b) = send(a, "GET", "/s", &[]).await;
    assert_eq!(&b[..], b"v2");
    up.task.abort();
    let _ = up.task.await;
    let (s, h, b) = send(a, "GET", "/s", &[]).await;
    assert_eq!((s, &b[..]), (StatusCode::OK, &b"v2"[..]), "{h:?}");
    assert!(cache_status(&h).contains("detail=stale-if-error"), "{h:?}");
    assert_eq!(h.get("x-cache").unwrap(), "STALE");
    assert_eq!(n.load(Ordering::SeqCst), 2);
    // Nothing stored: the failure reaches the client.
    let (s, _, _) = send(a, "GET", "/never", &[]).await;
    assert_eq!(s, StatusCode::BAD_GATEWAY);
}

#[tokio::test]
async fn the_route_may_allow_stale_on_error_and_5xx_counts_as_an_error() {
    let (up, _) = origin(|_, i| {
        if i == 1 {
            // Stale at once; kept for its validator.
            resp(
                200,
                &[("cache-control", "max-age=0"), ("etag", "\"g\"")],
                "good",
            )
        } else {
            resp(503, &[], "down")
        }
    })
    .await;
    let gw = gateway(&cfg(up.addr, "{cache: {stale_if_error: 1m}}")).await;
    let a = addr(&gw).await;
    let (_, _, b) = send(a, "GET", "/e", &[]).await;
    assert_eq!(&b[..], b"good");
    let (s, h, b) = send(a, "GET", "/e", &[]).await;
    assert_eq!((s, &b[..]), (StatusCode::OK, &b"good"[..]));
    assert!(cache_status(&h).contains("fwd-status=503"), "{h:?}");
    // must-revalidate forbids it whatever the route says.
    let (up, _) = origin(|_, i| {
        if i == 1 {
            resp(
                200,
                &[
                    ("cache-control", "max-age=0, must-revalidate"),
                    ("etag", "\"g\""),
                ],
                "good",
            )
        } else {
            resp(503, &[], "down")
        }
    })
    .await;
    let gw = gateway(&cfg(up.addr, "{cache: {stale_if_error: 1m}}")).await;
    let a = addr(&gw).await;
    send(a, "GET", "/e", &[]).await;
    let (s, _, _) = send(a, "GET", "/e", &[]).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn stale_responses_are_revalidated_with_their_validators() {
    let (up, n) = origin(|req, i| {
        let inm = req
            .headers()
            .get("if-none-match")
            .map(|v| v.to_str().unwrap().to_string());
        match (i, inm.as_deref()) {
            (1, None) => resp(
                200,
                &[
                    ("cache-control", "max-age=0"),
                    ("etag", "\"e1\""),
                    ("x-v", "1"),
                ],
                "payload",
            ),
            (2, Some("\"e1\"")) => resp(
                304,
                &[
                    ("cache-control", "max-age=60"),
                    ("etag", "\"e1\""),
                    ("x-v", "2"),
                ],
                "",
            ),
            _ => resp(500, &[], format!("unexpected {i} {inm:?}")),
        }
    })
    .await;
    let gw = gateway(&cfg(up.addr, "{cache: {}}")).await;
    let a = addr(&gw).await;
    let (_, _, b) = send(a, "GET", "/r", &[]).await;
    assert_eq!(&b[..], b"payload");
    // The client's own validator is not sent: the cache's is.
    let (s, h, b) = send(a, "GET", "/r", &[("if-none-match", "\"other\"")]).await;
    assert_eq!((s, &b[..]), (StatusCode::OK, &b"payload"[..]), "{h:?}");
    assert_eq!(h.get("x-v").unwrap(), "2");
    assert!(
        cache_status(&h).contains("fwd=stale; fwd-status=304"),
        "{h:?}"
    );
    // Fresh again: no third request.
    let (_, h, b) = send(a, "GET", "/r", &[]).await;
    assert_eq!(&b[..], b"payload");
    assert!(cache_status(&h).contains("hit"), "{h:?}");
    assert_eq!(n.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn unsafe_requests_invalidate_their_url_and_location() {
    let (up, n) = origin(|req, i| {
        if req.method() == http::Method::POST {
            resp(201, &[("location", "/items/1")], "")
        } else {
            resp(
                200,
                &[("cache-control", "max-age=60")],
                format!("{} {i}", req.uri().path()),
            )
        }
    })
    .await;
    let gw = gateway(&cfg(up.addr, "{cache: {}}")).await;
    let a = addr(&gw).await;
    for path in ["/items", "/items/1", "/other"] {
        send(a, "GET", path, &[]).await;
        until_hit(a, path).await;
    }
    assert_eq!(n.load(Ordering::SeqCst), 3);
    let (s, _, _) = send(a, "POST", "/items", &[]).await;
    assert_eq!(s, StatusCode::CREATED);
    for (path, upstream) in [("/items", true), ("/items/1", true), ("/other", false)] {
        let (_, h, _) = send(a, "GET", path, &[]).await;
        assert_eq!(!cache_status(&h).contains("hit"), upstream, "{path}: {h:?}");
    }
    assert_eq!(n.load(Ordering::SeqCst), 6);
}

#[tokio::test]
async fn large_bodies_stream_through_unstored_and_only_if_cached_misses_get_504() {
    let big = Bytes::from(vec![b'x'; 4096]);
    let (up, n) = origin(move |req, _| {
        if req.uri().path() == "/chunked" {
            // No length: the limit is found while streaming.
            let body = http_body_util::StreamBody::new(futures_stream(vec![
                Bytes::from(vec![b'y'; 1000]),
                Bytes::from(vec![b'y'; 1000]),
            ]));
            return Response::builder()
                .header("cache-control", "max-age=60")
                .body(BodyExt::boxed(body))
                .unwrap();
        }
        resp(200, &[("cache-control", "max-age=60")], big.clone())
    })
    .await;
    let gw = gateway(&cfg(up.addr, "{cache: {max_object_size: 1500B}}")).await;
    let a = addr(&gw).await;
    for path in ["/big", "/chunked"] {
        for _ in 0..2 {
            let (s, h, b) = send(a, "GET", path, &[]).await;
            assert_eq!(s, StatusCode::OK);
            assert!(b.len() >= 2000);
            assert!(!cache_status(&h).contains("hit"), "{h:?}");
        }
    }
    assert_eq!(n.load(Ordering::SeqCst), 4);
    let (s, h, _) = send(a, "GET", "/nothing", &[("cache-control", "only-if-cached")]).await;
    assert_eq!(s, StatusCode::GATEWAY_TIMEOUT, "{h:?}");
    assert_eq!(n.load(Ordering::SeqCst), 4);
}

fn futures_stream(
    chunks: Vec<Bytes>,
) -> impl futures_util::Stream<
    Item = Result<http_body::Frame<Bytes>, Box<dyn std::error::Error + Send + Sync>>,
> + Send
+ Sync
+ 'static {
    futures_util::stream::iter(chunks.into_iter().map(|c| Ok(http_body::Frame::data(c))))
}

#[test]
fn bad_settings_are_config_errors_at_their_key() {
    for (plugin, key, needle) in [
        (
            "{cache: {max_object_size: 0B}}",
            "max_object_size",
            "between",
        ),
        ("{cache: {heuristic: 2}}", "heuristic", "between 0 and 1"),
        ("{cache: {lock_timeout: 0s}}", "lock_timeout", "between"),
        ("{cache: {key: {query: [\"\"]}}}", "key", "empty"),
        ("{cache: {ttl: 5s}}", "ttl", "unknown key"),
    ] {
        let err = load_str("t.yaml", &cfg("127.0.0.1:9".parse().unwrap(), plugin))
            .err()
            .unwrap_or_else(|| panic!("{plugin} loaded"))
            .to_string();
        assert!(err.contains(key) && err.contains(needle), "{plugin}: {err}");
    }
}

#[tokio::test]
async fn stale_while_revalidate_answers_at_once_and_refreshes_exactly_once() {
    let (up, n) = origin(|_, i| {
        if i == 1 {
            return resp(
                200,
                &[
                    ("cache-control", "max-age=0, stale-while-revalidate=60"),
                    ("etag", "\"v1\""),
                ],
                "v1",
            );
        }
        // The refresh is slow: every client below asks while it runs.
        std::thread::sleep(Duration::from_millis(300));
        resp(
            200,
            &[("cache-control", "max-age=60"), ("etag", "\"v2\"")],
            "v2",
        )
    })
    .await;
    let gw = gateway(&cfg(up.addr, "{cache: {x_cache: true}}")).await;
    let a = addr(&gw).await;
    send(a, "GET", "/w", &[]).await;
    let started = std::time::Instant::now();
    let tasks: Vec<_> = (0..20)
        .map(|_| tokio::spawn(async move { send(a, "GET", "/w", &[]).await }))
        .collect();
    for t in tasks {
        let (s, h, b) = t.await.unwrap();
        assert_eq!((s, &b[..]), (StatusCode::OK, &b"v1"[..]));
        assert_eq!(h.get("x-cache").unwrap(), "STALE", "{h:?}");
        assert!(cache_status(&h).contains("detail=stale-while-revalidate"));
    }
    // Nobody waited for the slow refresh.
    assert!(
        started.elapsed() < Duration::from_millis(300),
        "{:?}",
        started.elapsed()
    );
    // The refresh lands; then the new response is fresh.
    for _ in 0..200 {
        let (_, h, b) = send(a, "GET", "/w", &[]).await;
        if &b[..] == b"v2" {
            assert_eq!(h.get("x-cache").unwrap(), "HIT");
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        n.load(Ordering::SeqCst),
        2,
        "exactly one background refresh"
    );
    let text = gw.shared().metrics_text();
    assert!(text.contains("result=\"refreshes\"} 1"), "{text}");
}

/// POSTs `body` to the admin listener's `/cache/purge`.
async fn purge(gw: &torii_proxy::Gateway, method: &str, body: &str) -> (StatusCode, String) {
    let admin = gw.admin_addr().unwrap();
    let r = h1_client()
        .request(
            Request::builder()
                .method(method)
                .uri(format!("http://{admin}/cache/purge"))
                .body(full(body.to_string()))
                .unwrap(),
        )
        .await
        .unwrap();
    let s = r.status();
    let b = r.into_body().collect().await.unwrap().to_bytes();
    (s, String::from_utf8_lossy(&b).into_owned())
}

#[tokio::test]
async fn purges_by_tag_url_and_prefix_through_the_admin_listener() {
    let (up, n) = origin(|req, _| {
        let tags = match req.uri().path() {
            "/p/a" => "x",
            "/p/b" => "x y",
            _ => "z",
        };
        resp(
            200,
            &[("cache-control", "max-age=600"), ("surrogate-key", tags)],
            req.uri().path().to_string(),
        )
    })
    .await;
    let gw = gateway(&cfg_named(up.addr, "purged", "{cache: {}}")).await;
    let a = addr(&gw).await;
    let paths = ["/p/a", "/p/b", "/p/c", "/q/d?v=1"];
    let fill = || async {
        for p in paths {
            send(a, "GET", p, &[]).await;
            until_hit(a, p).await;
        }
    };
    let hits = || async {
        let mut out = Vec::new();
        for p in paths {
            let (_, h, _) = send(a, "GET", p, &[("cache-control", "only-if-cached")]).await;
            out.push(cache_status(&h).contains("hit"));
        }
        out
    };
    fill().await;
    assert_eq!(
        purge(&gw, "POST", r#"{"tag": "x"}"#).await,
        (StatusCode::OK, r#"{"purged":2}"#.into())
    );
    assert_eq!(hits().await, [false, false, true, true]);
    fill().await;
    let (s, b) = purge(
        &gw,
        "POST",
        r#"{"url": "http://127.0.0.1:1/q/d?v=1", "route": "purged"}"#,
    )
    .await;
    assert_eq!((s, b.as_str()), (StatusCode::OK, r#"{"purged":1}"#));
    assert_eq!(hits().await, [true, true, true, false]);
    fill().await;
    // Another route's cache is left alone.
    let (_, b) = purge(
        &gw,
        "POST",
        r#"{"prefix": "127.0.0.1/p/", "route": "other"}"#,
    )
    .await;
    assert_eq!(b, r#"{"purged":0}"#);
    let (_, b) = purge(&gw, "POST", r#"{"prefix": "127.0.0.1/p/"}"#).await;
    assert_eq!(b, r#"{"purged":3}"#);
    assert_eq!(hits().await, [false, false, false, true]);
    assert_eq!(n.load(Ordering::SeqCst), 4 + 2 + 1);
    // Bad requests say why.
    assert_eq!(
        purge(&gw, "GET", "").await.0,
        StatusCode::METHOD_NOT_ALLOWED
    );
    for bad in [
        "nope",
        r#"{"tag": "x", "url": "y"}"#,
        r#"{"tags": "x"}"#,
        r#"{"tag": 1}"#,
    ] {
        let (s, b) = purge(&gw, "POST", bad).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}: {b}");
    }
}

#[tokio::test]
async fn keys_forward_what_they_cover_and_invalidation_reaches_every_variant() {
    let (up, n) = origin(|req, i| {
        let q = req.uri().query().unwrap_or("").to_string();
        let lang = req
            .headers()
            .get("accept-language")
            .map_or("-", |v| v.to_str().unwrap())
            .to_string();
        if req.method() == http::Method::DELETE {
            return resp(204, &[], "");
        }
        resp(
            200,
            &[
                ("cache-control", "public, max-age=60"),
                ("vary", "accept-language"),
                ("set-cookie", "session=first"),
            ],
            format!("{i} q={q} lang={lang}"),
        )
    })
    .await;
    let gw = gateway(&cfg(up.addr, "{cache: {key: {query: [page]}}}")).await;
    let a = addr(&gw).await;
    // The upstream sees only the keyed parameter, so the ignored ones cannot change what is
    // stored for everybody.
    let (_, h, b) = send(
        a,
        "GET",
        "/l?utm=x&page=2&pag%65=9",
        &[("accept-language", "fr")],
    )
    .await;
    assert_eq!(&b[..], b"1 q=page=2&pag%65=9 lang=fr");
    assert_eq!(h.get("set-cookie").unwrap(), "session=first");
    let (_, h, b) = send(
        a,
        "GET",
        "/l?page=2&pag%65=9&utm=y",
        &[("accept-language", "fr")],
    )
    .await;
    assert_eq!(&b[..], b"1 q=page=2&pag%65=9 lang=fr");
    assert!(cache_status(&h).contains("hit"), "{h:?}");
    // The first client's cookie is not handed to the next one.
    assert!(h.get("set-cookie").is_none(), "{h:?}");
    let (_, _, b) = send(a, "GET", "/l?page=2&pag%65=9", &[("accept-language", "en")]).await;
    assert_eq!(&b[..], b"2 q=page=2&pag%65=9 lang=en");
    // An unsafe request to the URL invalidates both variants.
    let (s, _, _) = send(a, "DELETE", "/l?page=2&pag%65=9", &[]).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    for (lang, i) in [("fr", 4), ("en", 5)] {
        let (_, h, b) = send(a, "GET", "/l?page=2&pag%65=9", &[("accept-language", lang)]).await;
        assert!(!cache_status(&h).contains("hit"), "{lang}: {h:?}");
        assert!(b.starts_with(format!("{i} ").as_bytes()), "{lang}: {b:?}");
    }
    assert_eq!(n.load(Ordering::SeqCst), 5);
}

#[tokio::test]
async fn a_global_cache_keeps_routes_apart_and_preconditions_go_upstream() {
    let (up, n) = origin(|req, i| {
        let route = req
            .headers()
            .get("x-from")
            .map_or("-", |v| v.to_str().unwrap())
            .to_string();
        resp(
            200,
            &[("cache-control", "max-age=60"), ("etag", "\"e\"")],
            format!("{route} {i}"),
        )
    })
    .await;
    let yaml = config(&format!(
        "upstreams:\n  - name: up\n    targets: [{{url: 'http://{}'}}]\nplugins: {{cache: {{}}}}\nroutes:\n  - name: beta-g\n    match: {{path_prefix: /, headers: [{{name: x-beta, value: '1'}}]}}\n    upstream: up\n    plugins: {{request_headers: {{set: {{x-from: beta}}}}}}\n  - name: stable-g\n    match: {{path_prefix: /}}\n    upstream: up\n    plugins: {{request_headers: {{set: {{x-from: stable}}}}}}\n",
        up.addr,
    ));
    let gw = gateway(&yaml).await;
    let a = addr(&gw).await;
    let (_, _, b) = send(a, "GET", "/same", &[("x-beta", "1")]).await;
    assert_eq!(&b[..], b"beta 1");
    let (_, _, b) = send(a, "GET", "/same", &[]).await;
    assert_eq!(&b[..], b"stable 2");
    let (_, _, b) = send(a, "GET", "/same", &[("x-beta", "1")]).await;
    assert_eq!(&b[..], b"beta 1");
    // If-Match is the upstream's to decide.
    let (_, h, _) = send(a, "GET", "/same", &[("if-match", "\"e\"")]).await;
    assert!(cache_status(&h).is_empty(), "{h:?}");
    assert_eq!(n.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn the_last_good_answer_masks_failures_whatever_its_cache_fields() {
    // Answers a cache would never store: no freshness, no validator; one with a cookie.
    let (up, n) = closable(|req, i| {
        if req.uri().path() == "/cookie" {
            return resp(200, &[("set-cookie", "s=1")], format!("cookie {i}"));
        }
        resp(200, &[("cache-control", "no-cache")], format!("good {i}"))
    })
    .await;
    let route = |fallback: &str| {
        config(&format!(
            "upstreams:\n  - name: up\n    targets: [{{url: 'http://{}'}}]\n    retries: {{attempts: 1}}\nroutes:\n  - name: lg{}\n    match: {{path_prefix: /}}\n    upstream: up\n    fallback: {fallback}\n",
            up.addr,
            fallback.len()
        ))
    };
    let gw = gateway(&route("{stale: 1h}")).await;
    let a = addr(&gw).await;
    for p in ["/a", "/cookie", "/a"] {
        let (s, h, _) = send(a, "GET", p, &[]).await;
        assert_eq!(s, StatusCode::OK);
        assert!(h.get("x-torii-fallback").is_none());
    }
    up.task.abort();
    let _ = up.task.await;
    // The copy kept by the first answer: the second came within a tenth of `stale` (at least
    // a second) and was not copied again.
    let (s, h, b) = send(a, "GET", "/a", &[]).await;
    assert_eq!((s, &b[..]), (StatusCode::OK, &b"good 1"[..]), "{h:?}");
    assert_eq!(h.get("x-torii-fallback").unwrap(), "stale");
    assert!(h.get("age").is_some());
    // The masked failure still counts as the upstream's error.
    let text = gw.shared().metrics_text();
    assert!(
        text.contains(
            "torii_upstream_errors_total{upstream=\"up\",kind=\"upstream_connect_failed\"} 1"
        ),
        "{text}"
    );
    // Not kept: a cookie; never fetched: nothing to serve, and no static answer configured.
    for p in ["/cookie", "/never"] {
        let (s, h, _) = send(a, "GET", p, &[]).await;
        assert_eq!(s, StatusCode::BAD_GATEWAY, "{p}: {h:?}");
    }
    // With a static answer too, it applies when there is no last good one.
    let gw = gateway(&route("{stale: 1h, status: 200, body: static}")).await;
    let (s, h, b) = send(addr(&gw).await, "GET", "/never", &[]).await;
    assert_eq!((s, &b[..]), (StatusCode::OK, &b"static"[..]));
    assert_eq!(h.get("x-torii-fallback").unwrap(), "static");
    assert_eq!(n.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn concurrent_misses_of_one_variant_make_one_upstream_request() {
    let (up, n) = origin(|req, i| {
        if i > 1 {
            // Slow enough that every client asks before the answer.
            std::thread::sleep(Duration::from_millis(300));
        }
        let lang = req
            .headers()
            .get("accept-language")
            .map_or("-", |v| v.to_str().unwrap())
            .to_string();
        resp(
            200,
            &[("cache-control", "max-age=60"), ("vary", "accept-language")],
            format!("{lang} {i}"),
        )
    })
    .await;
    let gw = gateway(&cfg(up.addr, "{cache: {}}")).await;
    let a = addr(&gw).await;
    let (_, _, b) = send(a, "GET", "/v", &[("accept-language", "fr")]).await;
    assert_eq!(&b[..], b"fr 1");
    // Two variants missed at once: each has its own fill (none waits behind the other's and
    // then stampedes).
    let tasks: Vec<_> = (0..30)
        .map(|i| {
            let lang = if i % 2 == 0 { "en" } else { "de" };
            tokio::spawn(async move {
                let (_, _, b) = send(a, "GET", "/v", &[("accept-language", lang)]).await;
                (lang, b)
            })
        })
        .collect();
    for t in tasks {
        let (lang, b) = t.await.unwrap();
        assert!(b.starts_with(lang.as_bytes()), "{lang}: {b:?}");
    }
    assert_eq!(n.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn responses_being_stored_share_a_budget_of_a_quarter_of_the_tier() {
    let (up, n) = origin(|req, _| {
        let size = if req.uri().path() == "/big" {
            2560 << 10
        } else {
            512 << 10
        };
        resp(200, &[("cache-control", "max-age=60")], vec![b'x'; size])
    })
    .await;
    // 8 MiB of memory: at most 2 MiB being stored at once.
    let yaml = cfg(up.addr, "{cache: {max_object_size: 3MiB}}")
        .replace("server:\n", "cache: {memory: 8MiB}\nserver:\n");
    let gw = gateway(&yaml).await;
    let a = addr(&gw).await;
    for path in ["/big", "/small"] {
        let (s, _, b) = send(a, "GET", path, &[]).await;
        assert_eq!((s, !b.is_empty()), (StatusCode::OK, true));
    }
    let (_, h, _) = send(a, "GET", "/small", &[]).await;
    assert!(
        cache_status(&h).contains("hit"),
        "{h:?} {}",
        gw.shared()
            .metrics_text()
            .lines()
            .filter(|l| l.contains("cache"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let (_, h, b) = send(a, "GET", "/big", &[]).await;
    assert!(!cache_status(&h).contains("hit"), "{h:?}");
    assert_eq!(b.len(), 2560 << 10);
    assert_eq!(n.load(Ordering::SeqCst), 3);
    assert!(
        gw.shared()
            .metrics_text()
            .contains("torii_cache_filling_bytes 0")
    );
}

#[tokio::test]
async fn invalidation_and_purges_reach_every_copy() {
    // `query: ignored`: the forwarded head has no query, and invalidation keys alike.
    let (up, n) = closable(|req, i| {
        if req.method() == http::Method::POST {
            return resp(200, &[], "");
        }
        resp(200, &[("cache-control", "max-age=60")], format!("v{i}"))
    })
    .await;
    let yaml = config(&format!(
        "upstreams:\n  - name: up\n    targets: [{{url: 'http://{}'}}]\n    retries: {{attempts: 1}}\nroutes:\n  - name: inv\n    match: {{path_prefix: /}}\n    upstream: up\n    fallback: {{stale: 1h}}\n    plugins: {{cache: {{key: {{query: ignored}}, stale_if_error: 0s}}}}\n",
        up.addr
    ));
    let gw = gateway(&yaml).await;
    let a = addr(&gw).await;
    send(a, "GET", "/cart?x=1", &[]).await;
    let (_, h, _) = send(a, "GET", "/cart", &[]).await;
    assert!(cache_status(&h).contains("hit"), "{h:?}");
    send(a, "POST", "/cart", &[]).await;
    let (_, h, b) = send(a, "GET", "/cart", &[]).await;
    assert!(!cache_status(&h).contains("hit"), "{h:?}");
    assert_eq!(&b[..], b"v3");
    // A purge by URL reaches the fallback's copy too: with the origin gone there is nothing
    // left to serve.
    let admin = gw.admin_addr().unwrap();
    let r = h1_client()
        .request(
            Request::post(format!("http://{admin}/cache/purge"))
                .body(full(r#"{"url": "127.0.0.1/cart"}"#))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    up.task.abort();
    let _ = up.task.await;
    let (s, h, _) = send(a, "GET", "/cart", &[]).await;
    assert_eq!(s, StatusCode::BAD_GATEWAY, "{h:?}");
    assert_eq!(n.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn the_last_good_answer_to_a_request_with_a_cookie_is_not_kept() {
    let (up, _) = closable(|_, i| resp(200, &[], format!("page of {i}"))).await;
    let yaml = config(&format!(
        "upstreams:\n  - name: up\n    targets: [{{url: 'http://{}'}}]\n    retries: {{attempts: 1}}\nroutes:\n  - name: ck\n    match: {{path_prefix: /}}\n    upstream: up\n    fallback: {{stale: 1h}}\n",
        up.addr
    ));
    let gw = gateway(&yaml).await;
    let a = addr(&gw).await;
    send(a, "GET", "/account", &[("cookie", "sid=alice")]).await;
    up.task.abort();
    let _ = up.task.await;
    let (s, h, b) = send(a, "GET", "/account", &[]).await;
    assert_eq!(s, StatusCode::BAD_GATEWAY, "{h:?} {b:?}");
}

/// What a careless or hostile client sends the cache: absurd ranges, directive soup, long
/// validator lists, over a raw socket too. Every answer is a proper one, never a 5xx.
#[tokio::test]
async fn hostile_cache_fields_get_proper_answers() {
    let (up, _) = origin(|_, _| {
        resp(
            200,
            &[("cache-control", "max-age=60"), ("etag", "\"e\"")],
            "0123456789",
        )
    })
    .await;
    let gw = gateway(&cfg(up.addr, "{cache: {}}")).await;
    let a = addr(&gw).await;
    send(a, "GET", "/h", &[]).await;
    let long_inm = vec!["\"x\""; 2000].join(", ");
    let cases: Vec<(&str, String, u16)> = vec![
        ("range", "bytes=18446744073709551615-".into(), 416),
        ("range", "bytes=-99999999999999999999999".into(), 200),
        ("range", "bytes=5-2".into(), 200),
        ("range", "bytes=0-0,1-1,2-2".into(), 200),
        ("range", "lines=1-2".into(), 200),
        (
            "cache-control",
            "max-age=99999999999999999999, max-stale=-1, min-fresh=x, ,,=,".into(),
            200,
        ),
        ("cache-control", "max-age=0".into(), 200),
        ("if-none-match", long_inm, 200),
        ("if-modified-since", "not a date".into(), 200),
    ];
    for (name, value, want) in cases {
        let (s, _, _) = send(a, "GET", "/h", &[(name, value.as_str())]).await;
        assert_eq!(
            s.as_u16(),
            want,
            "{name}: {}",
            &value[..value.len().min(40)]
        );
    }
    let raw_answer = raw(
        a,
        b"GET /h HTTP/1.1\r\nHost: 127.0.0.1\r\nRange: bytes=3-4\r\nCache-Control: \"unterminated\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(raw_answer.starts_with("HTTP/1.1 206"), "{raw_answer}");
    assert!(raw_answer.ends_with("34"), "{raw_answer}");
}

/// A resource whose answers cannot be stored is marked, and later requests for it take the
/// direct call (`before_exchange` says `Around`): each goes upstream, labelled `fwd=bypass`
/// with the upstream's status and the reason, HEAD and conditional requests too. Once the
/// upstream's answer can be stored, the next request stores it and the one after is a hit;
/// an unsafe request on the shortcut still invalidates the URL.
#[tokio::test]
async fn requests_for_a_resource_marked_unstorable_pass_and_it_is_stored_once_it_may_be() {
    let storable = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let s = storable.clone();
    let (up, n) = origin(move |req, i| {
        if req.method() == http::Method::POST {
            return resp(204, &[], "");
        }
        let cc = if s.load(Ordering::SeqCst) {
            "max-age=60"
        } else {
            "no-store"
        };
        resp(200, &[("cache-control", cc)], format!("v{i}"))
    })
    .await;
    let gw = gateway(&cfg(up.addr, "{cache: {}}")).await;
    let a = addr(&gw).await;
    let (_, h, b) = send(a, "GET", "/p", &[]).await;
    assert_eq!(&b[..], b"v1");
    assert_eq!(
        cache_status(&h),
        "torii; fwd=uri-miss; fwd-status=200; detail=no-store"
    );
    for (method, fields, want) in [
        (
            "GET",
            &[][..],
            "torii; fwd=bypass; fwd-status=200; detail=no-store",
        ),
        ("HEAD", &[][..], "torii; fwd=bypass; fwd-status=200"),
        (
            "GET",
            &[("if-none-match", "\"x\"")][..],
            "torii; fwd=bypass; fwd-status=200",
        ),
    ] {
        let (status, h, _) = send(a, method, "/p", fields).await;
        assert_eq!(status, 200);
        assert_eq!(cache_status(&h), want, "{method} {fields:?}");
    }
    assert_eq!(n.load(Ordering::SeqCst), 4);
    // `only-if-cached` on a marked resource is refused, not sent upstream.
    let (status, _, _) = send(a, "GET", "/p", &[("cache-control", "only-if-cached")]).await;
    assert_eq!(status, 504);
    assert_eq!(n.load(Ordering::SeqCst), 4);

    storable.store(true, Ordering::SeqCst);
    let (_, h, b) = send(a, "GET", "/p", &[]).await;
    assert_eq!(&b[..], b"v5");
    assert_eq!(cache_status(&h), "torii; fwd=bypass; fwd-status=200");
    let (_, h, b) = send(a, "GET", "/p", &[]).await;
    assert_eq!(&b[..], b"v6");
    assert!(cache_status(&h).contains("stored"), "{h:?}");
    until_hit(a, "/p").await;
    let (_, h, b) = send(a, "GET", "/p", &[]).await;
    assert_eq!(&b[..], b"v6");
    assert!(cache_status(&h).starts_with("torii; hit"), "{h:?}");
    assert_eq!(n.load(Ordering::SeqCst), 6);

    // A POST is not the cache's; its success invalidates the stored answer.
    let (status, h, _) = send(a, "POST", "/p", &[]).await;
    assert_eq!(status, 204);
    assert!(cache_status(&h).is_empty(), "{h:?}");
    let (_, _, b) = send(a, "GET", "/p", &[]).await;
    assert_eq!(&b[..], b"v8");
}

/// RFC 9111 section 4.3.5: a `200` to a `HEAD` for a stale stored `GET` response, about the
/// same representation (same validators and length), updates it, so the next `GET` is a
/// fresh hit; one about another representation leaves it to be revalidated.
#[tokio::test]
async fn a_head_answer_freshens_the_stored_get_of_the_same_representation() {
    let (up, n) = origin(|req, i| {
        if req.method() == http::Method::HEAD {
            let tag = if req.uri().path() == "/same" {
                "\"v1\""
            } else {
                "\"v2\""
            };
            return resp(
                200,
                &[
                    ("etag", tag),
                    ("cache-control", "max-age=60"),
                    ("x-head", "yes"),
                ],
                "",
            );
        }
        resp(
            200,
            &[("etag", "\"v1\""), ("cache-control", "max-age=0")],
            format!("get {i}"),
        )
    })
    .await;
    let gw = gateway(&cfg(up.addr, "{cache: {}}")).await;
    let a = addr(&gw).await;

    let (_, h, b) = send(a, "GET", "/same", &[]).await;
    assert_eq!(&b[..], b"get 1");
    assert!(cache_status(&h).contains("stored"), "{h:?}");
    let (status, _, _) = send(a, "HEAD", "/same", &[]).await;
    assert_eq!(status, 200);
    assert_eq!(n.load(Ordering::SeqCst), 2);
    let (_, h, b) = send(a, "GET", "/same", &[]).await;
    assert_eq!(&b[..], b"get 1", "served from the freshened response");
    assert!(cache_status(&h).starts_with("torii; hit"), "{h:?}");
    assert_eq!(
        h.get("x-head").unwrap(),
        "yes",
        "the HEAD's fields were merged"
    );
    assert_eq!(n.load(Ordering::SeqCst), 2);

    let (_, _, b) = send(a, "GET", "/other", &[]).await;
    assert_eq!(&b[..], b"get 3");
    send(a, "HEAD", "/other", &[]).await;
    let (_, h, b) = send(a, "GET", "/other", &[]).await;
    assert_eq!(
        &b[..],
        b"get 5",
        "another representation's HEAD updated nothing"
    );
    assert!(cache_status(&h).contains("fwd=stale"), "{h:?}");
}
