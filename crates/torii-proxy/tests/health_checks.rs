//! Active health checks (`upstreams[].health_check`): background probes take targets out of
//! rotation and bring them back, over HTTP, TCP and gRPC, and a reload that keeps the upstream
//! keeps what the probes found.
#![allow(clippy::unwrap_used)]

mod support;

use bytes::Bytes;
use http::StatusCode;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::time::Duration;
use support::*;
use torii_proxy::Gateway;

/// A target answering its name on `/x`, and `/healthz` with a status that can be changed.
struct Target {
    addr: SocketAddr,
    health: Arc<AtomicU16>,
    traffic: Arc<AtomicUsize>,
}

async fn target(name: &'static str) -> Target {
    let health = Arc::new(AtomicU16::new(200));
    let traffic = Arc::new(AtomicUsize::new(0));
    let (h, t) = (health.clone(), traffic.clone());
    let up = upstream(false, move |req: http::Request<hyper::body::Incoming>| {
        let (h, t) = (h.clone(), t.clone());
        async move {
            if req.uri().path() == "/healthz" {
                let mut r = http::Response::new(full("status: fine"));
                *r.status_mut() = StatusCode::from_u16(h.load(Ordering::SeqCst)).unwrap();
                return r;
            }
            t.fetch_add(1, Ordering::SeqCst);
            http::Response::new(full(name))
        }
    })
    .await;
    Target {
        addr: up.addr,
        health,
        traffic,
    }
}

const CHECK: &str = "    health_check: {path: /healthz, interval: 50ms, timeout: 40ms, jitter: 10ms, healthy_threshold: 2, unhealthy_threshold: 2}\n";

fn cfg(targets: &[SocketAddr], extra: &str) -> String {
    let targets: Vec<String> = targets
        .iter()
        .map(|a| format!("{{url: 'http://{a}'}}"))
        .collect();
    config(&format!(
        "upstreams:\n  - name: up\n    targets: [{}]\n{extra}routes:\n  - name: all\n    match: {{path_prefix: /}}\n    upstream: up\n",
        targets.join(", ")
    ))
}

/// Whether target `addr` of upstream `up` is down, as the admin view says.
fn is_down(gw: &Gateway, up: &str, addr: SocketAddr) -> bool {
    gw.shared().snapshot.load().upstreams[up]
        .targets_view()
        .iter()
        .any(|t| *t.name == *addr.to_string() && t.down)
}

/// Waits (bounded) until `f` holds, checking every 20 ms.
async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let end = tokio::time::Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(tokio::time::Instant::now() < end, "never: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn get_x(a: SocketAddr) -> (StatusCode, String) {
    let (s, _, b) = get(&h1_client(), format!("http://{a}/x")).await;
    (s, String::from_utf8_lossy(&b).into_owned())
}

#[tokio::test]
async fn an_http_check_takes_a_failing_target_out_and_brings_it_back() {
    let (a, b) = (target("a").await, target("b").await);
    let gw = gateway(&cfg(&[a.addr, b.addr], CHECK)).await;
    let addr = addr(&gw).await;
    a.health.store(503, Ordering::SeqCst);
    eventually("a down", || is_down(&gw, "up", a.addr)).await;
    // Shown on the admin listener and in the metrics.
    let admin = gw.admin_addr().unwrap();
    let (_, _, v) = get(&h1_client(), format!("http://{admin}/upstreams/up")).await;
    assert_eq!(json(&v)["targets"][0]["state"], "down");
    let (_, _, m) = get(&h1_client(), format!("http://{admin}/metrics")).await;
    let want = format!(
        "torii_upstream_target_down{{upstream=\"up\",target=\"{}\"}} 1",
        a.addr
    );
    assert!(String::from_utf8_lossy(&m).contains(&want));
    let before = a.traffic.load(Ordering::SeqCst);
    for _ in 0..20 {
        assert_eq!(get_x(addr).await, (StatusCode::OK, "b".into()));
    }
    assert_eq!(
        a.traffic.load(Ordering::SeqCst),
        before,
        "no traffic to a target that is down"
    );
    a.health.store(200, Ordering::SeqCst);
    eventually("a back", || !is_down(&gw, "up", a.addr)).await;
    let mut seen_a = false;
    for _ in 0..10 {
        seen_a |= get_x(addr).await.1 == "a";
    }
    assert!(seen_a);
}

#[tokio::test]
async fn the_expected_body_must_be_there() {
    let a = target("a").await;
    let b = target("b").await;
    let gw = gateway(&cfg(
        &[a.addr, b.addr],
        &CHECK.replace(
            "path: /healthz",
            "path: /healthz, expected_body: 'status: great'",
        ),
    ))
    .await;
    eventually("both down: their bodies say fine, not great", || {
        is_down(&gw, "up", a.addr) && is_down(&gw, "up", b.addr)
    })
    .await;
}

#[tokio::test]
async fn with_every_target_down_requests_get_503_at_once() {
    let (a, b) = (target("a").await, target("b").await);
    let gw = gateway(&cfg(&[a.addr, b.addr], CHECK)).await;
    let addr = addr(&gw).await;
    a.health.store(500, Ordering::SeqCst);
    b.health.store(500, Ordering::SeqCst);
    eventually("both down", || {
        is_down(&gw, "up", a.addr) && is_down(&gw, "up", b.addr)
    })
    .await;
    let start = std::time::Instant::now();
    let (s, body) = get_x(addr).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body.contains("no_healthy_target"), "{body}");
    assert!(start.elapsed() < Duration::from_millis(500));
    assert_eq!(
        a.traffic.load(Ordering::SeqCst) + b.traffic.load(Ordering::SeqCst),
        0
    );
}

#[tokio::test]
async fn a_tcp_check_finds_a_target_that_refuses_connections() {
    let good = target("good").await;
    let dead = {
        let s = tokio::net::TcpSocket::new_v4().unwrap();
        s.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        s
    };
    let dead_addr = dead.local_addr().unwrap();
    let gw = gateway(&cfg(
        &[dead_addr, good.addr],
        &CHECK.replace("path: /healthz, ", "kind: tcp, "),
    ))
    .await;
    let addr = addr(&gw).await;
    eventually("dead down", || is_down(&gw, "up", dead_addr)).await;
    assert!(!is_down(&gw, "up", good.addr));
    for _ in 0..10 {
        assert_eq!(get_x(addr).await, (StatusCode::OK, "good".into()));
    }
}

/// A gRPC server's `grpc.health.v1.Health/Check`, answering SERVING or NOT_SERVING.
async fn grpc_health(serving: Arc<AtomicU16>) -> SocketAddr {
    let up = upstream(true, move |req: http::Request<hyper::body::Incoming>| {
        let serving = serving.clone();
        async move {
            assert_eq!(req.uri().path(), "/grpc.health.v1.Health/Check");
            let status = serving.load(Ordering::SeqCst) as u8;
            let frame = Bytes::from(vec![0, 0, 0, 0, 2, 0x08, status]);
            let mut trailers = http::HeaderMap::new();
            trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
            let frames = vec![
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>(http_body::Frame::data(frame)),
                Ok(http_body::Frame::trailers(trailers)),
            ];
            let body = http_body_util::StreamBody::new(futures_util::stream::iter(frames));
            http::Response::builder()
                .header("content-type", "application/grpc")
                .body(http_body_util::BodyExt::boxed(body))
                .unwrap()
        }
    })
    .await;
    up.addr
}

#[tokio::test]
async fn a_grpc_check_reads_the_serving_status() {
    // 1: SERVING, 2: NOT_SERVING.
    let (sa, sb) = (Arc::new(AtomicU16::new(1)), Arc::new(AtomicU16::new(2)));
    let (a, b) = (grpc_health(sa.clone()).await, grpc_health(sb.clone()).await);
    let gw = gateway(&cfg(
        &[a, b],
        &format!(
            "    protocol: http2\n{}",
            CHECK.replace("path: /healthz, ", "kind: grpc, ")
        ),
    ))
    .await;
    eventually("b down", || is_down(&gw, "up", b)).await;
    assert!(!is_down(&gw, "up", a));
    sb.store(1, Ordering::SeqCst);
    eventually("b serving again", || !is_down(&gw, "up", b)).await;
}

#[tokio::test]
async fn a_reload_that_keeps_the_upstream_keeps_its_health() {
    let (a, b) = (target("a").await, target("b").await);
    // A slow interval after the first rounds would show a reset state as "a is in".
    let check = CHECK.replace("interval: 50ms", "interval: 200ms");
    let yaml = cfg(&[a.addr, b.addr], &check);
    let gw = gateway(&yaml).await;
    a.health.store(503, Ordering::SeqCst);
    eventually("a down", || is_down(&gw, "up", a.addr)).await;
    // Same upstream, one more route.
    let more =
        format!("{yaml}  - name: other\n    match: {{path_prefix: /other}}\n    upstream: up\n");
    gw.apply(load_str("test.yaml", &more).unwrap())
        .await
        .unwrap();
    assert!(is_down(&gw, "up", a.addr), "the reload kept the state");
    let addr = addr(&gw).await;
    for _ in 0..5 {
        assert_eq!(get_x(addr).await, (StatusCode::OK, "b".into()));
    }
}
