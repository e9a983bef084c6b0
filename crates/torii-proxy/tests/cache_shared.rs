//! The cache's shared tier in a real Redis: one gateway's miss fills the other's cache, a
//! purge on one reaches both, large bodies stay local, and Redis failing costs nothing but
//! the shared hits.
#![allow(clippy::unwrap_used)]

mod support;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use support::redis::*;
use support::*;

async fn get(a: SocketAddr, path: &str, only_cached: bool) -> (StatusCode, String, Bytes) {
    let mut b = Request::get(format!("http://{a}{path}"));
    if only_cached {
        b = b.header("cache-control", "only-if-cached");
    }
    let r = h1_client()
        .request(b.body(full("")).unwrap())
        .await
        .unwrap();
    let s = r.status();
    let cs = r
        .headers()
        .get("cache-status")
        .map_or(String::new(), |v| v.to_str().unwrap().to_string());
    (s, cs, r.into_body().collect().await.unwrap().to_bytes())
}

/// Waits (bounded) until `path` on `a` is answered from the cache (`want`) or not.
async fn until_cached(a: SocketAddr, path: &str, want: bool) {
    for _ in 0..300 {
        let (s, _, _) = get(a, path, true).await;
        if (s == StatusCode::OK) == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{path} on {a}: never cached={want}");
}

async fn purge(gw: &torii_proxy::Gateway, body: &str) -> (StatusCode, String) {
    let admin = gw.admin_addr().unwrap();
    let r = h1_client()
        .request(
            Request::post(format!("http://{admin}/cache/purge"))
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
async fn two_gateways_share_responses_and_purges_through_redis() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let n = Arc::new(AtomicUsize::new(0));
    let count = n.clone();
    let up = upstream(false, move |req: Request<Incoming>| {
        let count = count.clone();
        async move {
            count.fetch_add(1, Ordering::SeqCst);
            let body = if req.uri().path() == "/big" {
                "b".repeat(4096)
            } else {
                req.uri().path().to_string()
            };
            Response::builder()
                .header("cache-control", "max-age=600")
                .header("surrogate-key", "catalog")
                .body(full(body))
                .unwrap()
        }
    })
    .await;
    // A route name of this run: a long-lived Redis never hands over an earlier run's objects.
    let route = format!("shared{}", run_id());
    let yaml = config(&format!(
        "redis: {{url: '{}', timeout: 2s, recheck_interval: 50ms}}\ncache: {{shared_max_object_size: 1KiB}}\nupstreams:\n  - name: up\n    targets: [{{url: 'http://{}'}}]\nroutes:\n  - name: {route}\n    match: {{path_prefix: /}}\n    upstream: up\n    plugins: {{cache: {{shared: true}}}}\n",
        server.url(),
        up.addr
    ));
    let (g1, g2) = (own_gateway(&yaml).await, own_gateway(&yaml).await);
    let (a1, a2) = (addr(&g1).await, addr(&g2).await);

    // One miss on g1 fills g2's cache.
    let (s, cs, b) = get(a1, "/item", false).await;
    assert_eq!((s, &b[..]), (StatusCode::OK, &b"/item"[..]));
    assert!(cs.contains("stored"), "{cs}");
    until_cached(a2, "/item", true).await;
    let (_, cs, b) = get(a2, "/item", false).await;
    assert_eq!(&b[..], b"/item");
    assert!(cs.contains("hit"), "{cs}");
    assert_eq!(n.load(Ordering::SeqCst), 1);

    // A body over the shared limit stays on the node that fetched it.
    get(a1, "/big", false).await;
    until_cached(a1, "/big", true).await;
    let (s, _, _) = get(a2, "/big", true).await;
    assert_eq!(s, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(n.load(Ordering::SeqCst), 2);

    // A purge on g1 reaches g2's memory (which holds /item now) and the Redis copy.
    let (s, b) = purge(&g1, r#"{"tag": "catalog"}"#).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert!(b.contains("\"shared\":true"), "{b}");
    until_cached(a2, "/item", false).await;
    until_cached(a1, "/item", false).await;
    let (_, cs, _) = get(a2, "/item", false).await;
    assert!(cs.contains("fwd=uri-miss"), "{cs}");
    assert_eq!(n.load(Ordering::SeqCst), 3);
    let text = g2.shared().metrics_text();
    assert!(
        text.contains("torii_cache_shared_total{result=\"hit\"} 1"),
        "{text}"
    );

    // Redis gone: served from memory and the origin, counted, never an error.
    drop(server);
    for path in ["/item", "/other", "/other"] {
        let (s, _, _) = get(a1, path, false).await;
        assert_eq!(s, StatusCode::OK, "{path}");
    }
    let text = g1.shared().metrics_text();
    let errors: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("torii_cache_shared_total{result=\"error\"} "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(errors >= 1.0, "{text}");
}
