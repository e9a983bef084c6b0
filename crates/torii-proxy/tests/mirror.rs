//! `mirror` end to end: copies reach the shadow upstream with their bodies and a mark, the
//! client gets the primary's answer; a slow or dead shadow changes nothing for clients
//! (latency measured), copies over `max_in_flight` are dropped and counted, bodies over
//! `max_body` are not copied, and bad settings are refused at load.
#![allow(clippy::unwrap_used)]

mod support;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use std::time::{Duration, Instant};
use support::*;
use tokio::sync::mpsc;

/// A shadow that reports each request (method, path, body, mirror mark) and answers after
/// `delay`.
async fn shadow(delay: Duration) -> (FakeUpstream, mpsc::UnboundedReceiver<(String, Bytes, bool)>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let up = upstream(false, move |req: Request<Incoming>| {
        let tx = tx.clone();
        async move {
            let what = format!("{} {}", req.method(), req.uri().path());
            let marked = req.headers().get("x-torii-mirror").is_some();
            let body = req.into_body().collect().await.unwrap().to_bytes();
            let _ = tx.send((what, body, marked));
            tokio::time::sleep(delay).await;
            Response::new(full("shadow"))
        }
    })
    .await;
    (up, rx)
}

async fn primary() -> FakeUpstream {
    upstream(false, |_req: Request<Incoming>| async move {
        Response::new(full("primary"))
    })
    .await
}

fn cfg(primary: &str, shadow: &str, mirror: &str) -> String {
    config(&format!(
        "upstreams:\n  - name: primary\n    targets: [{{url: 'http://{primary}'}}]\n  - name: shadow\n    targets: [{{url: 'http://{shadow}'}}]\n    retries: {{attempts: 1}}\nroutes:\n  - name: r\n    match: {{path_prefix: /}}\n    upstream: primary\n    plugins:\n      mirror: {mirror}\n"
    ))
}

async fn send(
    a: std::net::SocketAddr,
    method: &str,
    path: &str,
    body: &'static [u8],
) -> (StatusCode, Bytes) {
    let client = h1_client();
    let req = Request::builder()
        .method(method)
        .uri(format!("http://{a}{path}"))
        .body(full(Bytes::from_static(body)))
        .unwrap();
    let resp = client.request(req).await.unwrap();
    let s = resp.status();
    (s, resp.into_body().collect().await.unwrap().to_bytes())
}

/// The mirror's counter for `result`, once it reaches `want` (counters move on the copies'
/// own tasks; the deadline bounds the wait).
async fn counter_reaches(gw: &torii_proxy::Gateway, result: &str, want: u64) {
    let line = format!("torii_mirror_requests_total{{scope=\"route:r\",result=\"{result}\"}} ");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = gw.shared().metrics_text();
        let n: u64 = text
            .lines()
            .find_map(|l| l.strip_prefix(line.as_str()))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        if n >= want {
            assert_eq!(n, want, "{text}");
            return;
        }
        assert!(Instant::now() < deadline, "{result} stayed at {n}:\n{text}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn copies_reach_the_shadow_with_their_bodies() {
    let p = primary().await;
    let (s, mut seen) = shadow(Duration::ZERO).await;
    let gw = gateway(&cfg(
        &p.addr.to_string(),
        &s.addr.to_string(),
        "{upstream: shadow}",
    ))
    .await;
    let a = addr(&gw).await;
    for i in 0..10 {
        let (st, b) = send(a, "GET", &format!("/get/{i}"), b"").await;
        assert_eq!((st, &b[..]), (StatusCode::OK, &b"primary"[..]));
    }
    let (st, b) = send(a, "POST", "/post", b"{\"order\":1}").await;
    assert_eq!((st, &b[..]), (StatusCode::OK, &b"primary"[..]));
    let mut got = Vec::new();
    for _ in 0..11 {
        got.push(
            tokio::time::timeout(Duration::from_secs(5), seen.recv())
                .await
                .unwrap()
                .unwrap(),
        );
    }
    assert!(got.iter().all(|(_, _, marked)| *marked), "{got:?}");
    let post = got.iter().find(|(w, _, _)| w == "POST /post").unwrap();
    assert_eq!(&post.1[..], b"{\"order\":1}");
    counter_reaches(&gw, "sent", 11).await;
}

#[tokio::test]
async fn a_slow_shadow_delays_no_client_and_extra_copies_are_dropped() {
    let p = primary().await;
    // The shadow takes 2 s per answer; two copies at most run at once.
    let (s, _seen) = shadow(Duration::from_secs(2)).await;
    let gw = gateway(&cfg(
        &p.addr.to_string(),
        &s.addr.to_string(),
        "{upstream: shadow, max_in_flight: 2, timeout: 10s}",
    ))
    .await;
    let a = addr(&gw).await;
    for i in 0..10 {
        let started = Instant::now();
        let (st, b) = send(a, "GET", &format!("/{i}"), b"").await;
        assert_eq!((st, &b[..]), (StatusCode::OK, &b"primary"[..]));
        assert!(
            started.elapsed() < Duration::from_millis(500),
            "request {i} took {:?}",
            started.elapsed()
        );
    }
    counter_reaches(&gw, "dropped", 8).await;
    counter_reaches(&gw, "sent", 2).await;
}

#[tokio::test]
async fn a_dead_shadow_changes_nothing_for_clients_and_large_bodies_are_not_copied() {
    let p = primary().await;
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead = closed.local_addr().unwrap();
    drop(closed);
    let gw = gateway(&cfg(
        &p.addr.to_string(),
        &dead.to_string(),
        "{upstream: shadow, max_body: 8B}",
    ))
    .await;
    let a = addr(&gw).await;
    for _ in 0..5 {
        let started = Instant::now();
        let (st, b) = send(a, "GET", "/x", b"").await;
        assert_eq!((st, &b[..]), (StatusCode::OK, &b"primary"[..]));
        assert!(started.elapsed() < Duration::from_millis(500));
    }
    let (st, _) = send(a, "POST", "/big", b"more than eight bytes").await;
    assert_eq!(st, StatusCode::OK);
    counter_reaches(&gw, "failed", 5).await;
    counter_reaches(&gw, "skipped", 1).await;
}

#[test]
fn bad_mirrors_are_refused() {
    let cases = [
        (
            "{upstream: nope}",
            "mirror.upstream: unknown upstream `nope`",
        ),
        (
            "{upstream: shadow, percent: 120}",
            "mirror.percent: 120 is not a percentage",
        ),
        (
            "{upstream: shadow, max_in_flight: 0}",
            "mirror.max_in_flight: 0 copies in flight",
        ),
        (
            "{upstream: shadow, max_body: 1GiB}",
            "mirror.max_body: 1073741824 bytes is above 16 MiB",
        ),
        (
            "{upstream: shadow, timeout: 1h}",
            "mirror.timeout: 3600s is not from 1ms to 5m",
        ),
    ];
    for (m, want) in cases {
        let err = match load_str("mirror.yaml", &cfg("127.0.0.1:1", "127.0.0.1:2", m)) {
            Ok(_) => panic!("accepted {m}"),
            Err(d) => d.to_string(),
        };
        assert!(err.contains(want), "{m}: wanted {want}, got:\n{err}");
    }
}
