//! Upstream resilience through the gateway: load balancing, retries with their budget, and
//! outlier detection, against fake upstreams that refuse connections, answer 5xx or recover.
#![allow(clippy::unwrap_used)]

mod support;

use http::StatusCode;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::time::Duration;
use support::*;

/// A fake target that answers with its own name and a status that can be changed, counting
/// the requests it gets.
struct Named {
    up: FakeUpstream,
    hits: Arc<AtomicUsize>,
    status: Arc<AtomicU16>,
}

async fn named(name: &'static str) -> Named {
    let hits = Arc::new(AtomicUsize::new(0));
    let status = Arc::new(AtomicU16::new(200));
    let (h, s) = (hits.clone(), status.clone());
    let up = upstream(false, move |_req| {
        let (h, s) = (h.clone(), s.clone());
        async move {
            h.fetch_add(1, Ordering::SeqCst);
            let mut r = http::Response::new(full(name));
            *r.status_mut() = StatusCode::from_u16(s.load(Ordering::SeqCst)).unwrap();
            r
        }
    })
    .await;
    Named { up, hits, status }
}

/// An address bound but not listening: connections are refused, and no other test can take
/// the port while the socket is held.
fn refusing() -> (SocketAddr, tokio::net::TcpSocket) {
    let s = tokio::net::TcpSocket::new_v4().unwrap();
    s.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    (s.local_addr().unwrap(), s)
}

fn cfg(targets: &[(SocketAddr, u32)], extra: &str) -> String {
    let targets: Vec<String> = targets
        .iter()
        .map(|(a, w)| format!("{{url: 'http://{a}', weight: {w}}}"))
        .collect();
    config(&format!(
        "upstreams:\n  - name: up\n    targets: [{}]\n{extra}routes:\n  - name: all\n    match: {{path_prefix: /}}\n    upstream: up\n",
        targets.join(", ")
    ))
}

async fn send(a: SocketAddr, method: &str, headers: &[(&str, &str)]) -> (StatusCode, String) {
    let mut b = http::Request::builder()
        .method(method)
        .uri(format!("http://{a}/x"));
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let resp = h1_client()
        .request(
            b.body(full(if method == "POST" { "data" } else { "" }))
                .unwrap(),
        )
        .await
        .unwrap();
    let status = resp.status();
    let body = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .unwrap()
        .to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

fn metric_line(gw: &torii_proxy::Gateway, needle: &str) -> Option<f64> {
    gw.shared()
        .metrics_text()
        .lines()
        .find_map(|l| l.strip_prefix(needle)?.trim().parse().ok())
}

#[tokio::test]
async fn weights_are_honoured_through_the_gateway() {
    let (a, b) = (named("a").await, named("b").await);
    let gw = gateway(&cfg(&[(a.up.addr, 3), (b.up.addr, 1)], "")).await;
    let addr = addr(&gw).await;
    let mut seen: HashMap<String, usize> = HashMap::new();
    for _ in 0..2000 {
        let (s, body) = send(addr, "GET", &[]).await;
        assert_eq!(s, StatusCode::OK);
        *seen.entry(body).or_default() += 1;
    }
    // Smooth round robin: exactly 3 to 1.
    assert_eq!(seen["a"], 1500);
    assert_eq!(seen["b"], 500);
}

#[tokio::test]
async fn a_consistent_hash_key_always_reaches_the_same_target() {
    let (a, b, c) = (named("a").await, named("b").await, named("c").await);
    let gw = gateway(&cfg(
        &[(a.up.addr, 1), (b.up.addr, 1), (c.up.addr, 1)],
        "    load_balancing: {algorithm: consistent_hash, hash_on: {header: x-user}}\n",
    ))
    .await;
    let addr = addr(&gw).await;
    let mut owners = std::collections::HashSet::new();
    for user in 0..30 {
        let user = format!("u{user}");
        let (_, first) = send(addr, "GET", &[("x-user", &user)]).await;
        for _ in 0..5 {
            assert_eq!(send(addr, "GET", &[("x-user", &user)]).await.1, first);
        }
        owners.insert(first);
    }
    assert_eq!(owners.len(), 3, "30 keys spread over the three targets");
}

#[tokio::test]
async fn a_refused_connection_is_retried_on_the_other_target_for_any_method() {
    let good = named("good").await;
    let (bad, _held) = refusing();
    // Outlier detection off, so every request meets the refusing target in turn.
    let gw = gateway(&cfg(
        &[(bad, 1), (good.up.addr, 1)],
        "    outlier_detection: {enabled: false}\n",
    ))
    .await;
    let addr = addr(&gw).await;
    for method in ["GET", "POST", "GET", "POST"] {
        let (s, body) = send(addr, method, &[]).await;
        assert_eq!((s, body.as_str()), (StatusCode::OK, "good"), "{method}");
    }
    assert_eq!(good.hits.load(Ordering::SeqCst), 4);
    // Each retry takes the good target's turn of the round robin, so every request meets the
    // refusing target first (until outlier detection, off here, would eject it).
    let retries = metric_line(&gw, "torii_upstream_retries_total{upstream=\"up\"}").unwrap();
    assert_eq!(retries, 4.0);
}

#[tokio::test]
async fn a_retryable_status_is_retried_for_idempotent_methods_only() {
    let (a, b) = (named("a").await, named("b").await);
    a.status.store(503, Ordering::SeqCst);
    let gw = gateway(&cfg(
        &[(a.up.addr, 1), (b.up.addr, 1)],
        "    outlier_detection: {enabled: false}\n",
    ))
    .await;
    let addr = addr(&gw).await;
    // The schedule starts at a: GET is retried on b; the next request starts at a again (the
    // retry took b's turn): a POST is not retried (a may have acted on it).
    assert_eq!(send(addr, "GET", &[]).await, (StatusCode::OK, "b".into()));
    let (s, _) = send(addr, "POST", &[]).await;
    assert_eq!(
        s,
        StatusCode::SERVICE_UNAVAILABLE,
        "a's 503 to a POST is passed on"
    );
    assert_eq!(a.hits.load(Ordering::SeqCst), 2);
    assert_eq!(b.hits.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn the_retry_budget_stops_retries_from_multiplying_an_outage() {
    let a = named("a").await;
    a.status.store(503, Ordering::SeqCst);
    let gw = gateway(&cfg(
        &[(a.up.addr, 1)],
        "    outlier_detection: {enabled: false}\n    retries: {attempts: 3, budget_ratio: 0.0, budget_min_per_second: 2, backoff: 1ms, max_backoff: 2ms}\n",
    ))
    .await;
    let addr = addr(&gw).await;
    for _ in 0..10 {
        assert_eq!(
            send(addr, "GET", &[]).await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
    // 10 requests, and the 2 retries the floor allows in one second (a slow machine may
    // straddle two seconds: at most 4).
    let hits = a.hits.load(Ordering::SeqCst);
    assert!((12..=14).contains(&hits), "{hits}");
    let refused =
        metric_line(&gw, "torii_upstream_retries_refused_total{upstream=\"up\"}").unwrap();
    assert!(refused >= 6.0, "{refused}");
}

#[tokio::test]
async fn a_failing_target_is_ejected_then_comes_back() {
    let (a, b) = (named("a").await, named("b").await);
    a.status.store(502, Ordering::SeqCst);
    let gw = gateway(&cfg(
        &[(a.up.addr, 1), (b.up.addr, 1)],
        "    outlier_detection: {consecutive_failures: 3, base_ejection_time: 2s}\n    retries: {attempts: 1}\n",
    ))
    .await;
    let addr = addr(&gw).await;
    // Until a has failed 3 times in a row, it gets every other request.
    let mut failed = 0;
    for _ in 0..6 {
        if send(addr, "GET", &[]).await.0 == StatusCode::BAD_GATEWAY {
            failed += 1;
        }
    }
    assert_eq!(failed, 3);
    // Ejected: everything goes to b.
    let before = a.hits.load(Ordering::SeqCst);
    for _ in 0..20 {
        assert_eq!(send(addr, "GET", &[]).await, (StatusCode::OK, "b".into()));
    }
    assert_eq!(a.hits.load(Ordering::SeqCst), before);
    let ejected = metric_line(
        &gw,
        &format!(
            "torii_upstream_target_ejected{{upstream=\"up\",target=\"{}\"}}",
            a.up.addr
        ),
    );
    assert_eq!(ejected, Some(1.0));
    // a recovers; after its ejection time it gets traffic again.
    a.status.store(200, Ordering::SeqCst);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while a.hits.load(Ordering::SeqCst) == before {
        assert!(tokio::time::Instant::now() < deadline, "a never came back");
        send(addr, "GET", &[]).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn with_every_target_out_the_answer_is_an_immediate_503() {
    let ((a, _ha), (b, _hb)) = (refusing(), refusing());
    let gw = gateway(&cfg(
        &[(a, 1), (b, 1)],
        "    outlier_detection: {consecutive_failures: 1, max_ejection_percent: 100}\n    retries: {attempts: 1}\n",
    ))
    .await;
    let addr = addr(&gw).await;
    assert_eq!(send(addr, "GET", &[]).await.0, StatusCode::BAD_GATEWAY);
    assert_eq!(send(addr, "GET", &[]).await.0, StatusCode::BAD_GATEWAY);
    let start = std::time::Instant::now();
    let (s, body) = send(addr, "GET", &[]).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body.contains("no_healthy_target"), "{body}");
    assert!(start.elapsed() < Duration::from_millis(500));
}

/// The auth plugins call their services through the same upstreams: a forward_auth service
/// with two targets, one down, keeps authorising every request, and once the dead target is
/// ejected no request pays for it.
#[tokio::test]
async fn forward_auth_keeps_authorising_with_one_of_two_targets_down() {
    let auth = named("allow").await;
    let (dead, _held) = refusing();
    let app = named("app").await;
    let gw = gateway(&config(&format!(
        "upstreams:\n  - name: auth\n    targets: [{{url: 'http://{dead}'}}, {{url: 'http://{}'}}]\n  - name: app\n    targets: [{{url: 'http://{}'}}]\nroutes:\n  - name: r\n    match: {{path_prefix: /}}\n    upstream: app\n    plugins:\n      forward_auth:\n        upstream: auth\n        path: /verify\n        consumer: web\nconsumers:\n  - name: web\n",
        auth.up.addr, app.up.addr
    )))
    .await;
    let addr = addr(&gw).await;
    for _ in 0..40 {
        assert_eq!(send(addr, "GET", &[]).await, (StatusCode::OK, "app".into()));
    }
    assert_eq!(auth.hits.load(Ordering::SeqCst), 40);
    let view = gw.shared().snapshot.load().upstreams["auth"].targets_view();
    let dead_view = view.iter().find(|t| *t.name == *dead.to_string()).unwrap();
    assert!(dead_view.ejected_for.is_some(), "{view:?}");
    // After detection: no more retries, so no added latency from the dead target.
    let (retries, _) = gw.shared().snapshot.load().upstreams["auth"].retry_counts();
    for _ in 0..20 {
        send(addr, "GET", &[]).await;
    }
    assert_eq!(
        gw.shared().snapshot.load().upstreams["auth"]
            .retry_counts()
            .0,
        retries
    );
}

#[tokio::test]
async fn the_admin_listener_shows_the_upstreams_live_state() {
    let (a, b) = (named("a").await, named("b").await);
    a.status.store(502, Ordering::SeqCst);
    let gw = gateway(&cfg(
        &[(a.up.addr, 1), (b.up.addr, 1)],
        "    outlier_detection: {consecutive_failures: 1}\n    retries: {attempts: 1}\n",
    ))
    .await;
    let addr = addr(&gw).await;
    send(addr, "GET", &[]).await;
    let admin = gw.admin_addr().unwrap();
    let (s, _, body) = get(&h1_client(), format!("http://{admin}/upstreams/up")).await;
    assert_eq!(s, StatusCode::OK);
    let v = json(&body);
    assert_eq!(v["name"], "up");
    assert_eq!(v["targets"][0]["state"], "ejected");
    assert_eq!(v["targets"][1]["state"], "in");
    let (s, _, body) = get(&h1_client(), format!("http://{admin}/upstreams")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(json(&body)[0]["name"], "up");
    let (s, _, _) = get(&h1_client(), format!("http://{admin}/upstreams/nope")).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (_, _, metrics) = get(&h1_client(), format!("http://{admin}/metrics")).await;
    let metrics = String::from_utf8_lossy(&metrics);
    assert!(
        metrics.contains(&format!(
            "torii_upstream_target_ejections_total{{upstream=\"up\",target=\"{}\"}} 1",
            a.up.addr
        )),
        "{metrics}"
    );
}

/// A target that reads the request and hangs up without answering (a reset before the head).
async fn hanging_up() -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                use tokio::io::AsyncReadExt;
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
            });
        }
    });
    a
}

/// The safety rule of retries: a request the upstream may have acted on (it read it, then the
/// connection broke) is sent again only when it is idempotent.
#[tokio::test]
async fn a_reset_after_sending_is_retried_for_get_but_never_for_post() {
    let closer = hanging_up().await;
    let good = named("good").await;
    let gw = gateway(&cfg(
        &[(closer, 1), (good.up.addr, 1)],
        "    outlier_detection: {enabled: false}\n",
    ))
    .await;
    let addr = addr(&gw).await;
    assert_eq!(
        send(addr, "GET", &[]).await,
        (StatusCode::OK, "good".into())
    );
    // The retry took good's turn: the POST starts at the closer again, and is not retried.
    let (s, body) = send(addr, "POST", &[]).await;
    assert_eq!(s, StatusCode::BAD_GATEWAY, "{body}");
    assert!(body.contains("upstream_reset"), "{body}");
    assert_eq!(good.hits.load(Ordering::SeqCst), 1);
}

/// A body that streams (chunked, no length) cannot be sent twice: it is never retried, even
/// after a refused connection.
#[tokio::test]
async fn a_streamed_body_is_not_retried() {
    let (bad, _held) = refusing();
    let good = named("good").await;
    let gw = gateway(&cfg(
        &[(bad, 1), (good.up.addr, 1)],
        "    outlier_detection: {enabled: false}\n",
    ))
    .await;
    let addr = addr(&gw).await;
    let answer = raw(
        addr,
        b"POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n4\r\ndata\r\n0\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 502"), "{answer}");
    assert_eq!(good.hits.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn the_circuit_breaker_opens_refuses_at_once_and_closes_after_probes() {
    let a = named("a").await;
    a.status.store(500, Ordering::SeqCst);
    let gw = gateway(&cfg(
        &[(a.up.addr, 1)],
        "    outlier_detection: {enabled: false}\n    retries: {attempts: 1}\n    circuit_breaker: {consecutive_failures: 3, open_for: 400ms, half_open_calls: 2}\n",
    ))
    .await;
    let addr = addr(&gw).await;
    for _ in 0..3 {
        assert_eq!(
            send(addr, "GET", &[]).await.0,
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }
    // Open: refused at once, with Retry-After, and the upstream sees nothing.
    let resp = h1_client()
        .request(
            http::Request::get(format!("http://{addr}/x"))
                .body(full(""))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(resp.headers()["retry-after"], "1");
    let body = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .unwrap()
        .to_bytes();
    assert!(String::from_utf8_lossy(&body).contains("circuit_open"));
    assert_eq!(a.hits.load(Ordering::SeqCst), 3);
    let up = gw.shared().snapshot.load().upstreams["up"].clone();
    assert_eq!(up.breaker_state(), Some(torii_upstream::BreakerState::Open));
    // The upstream recovers; after the cool-down two probes close the breaker.
    a.status.store(200, Ordering::SeqCst);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while send(addr, "GET", &[]).await.0 != StatusCode::OK {
        assert!(tokio::time::Instant::now() < deadline, "never half-open");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(send(addr, "GET", &[]).await.0, StatusCode::OK);
    assert_eq!(
        up.breaker_state(),
        Some(torii_upstream::BreakerState::Closed)
    );
    for _ in 0..5 {
        assert_eq!(send(addr, "GET", &[]).await.0, StatusCode::OK);
    }
    assert_eq!(up.breaker_transitions(), [1, 1, 1]);
    let text = gw.shared().metrics_text();
    assert!(
        text.contains("torii_upstream_circuit_transitions_total{upstream=\"up\",to=\"open\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("torii_upstream_circuit_state{upstream=\"up\",state=\"closed\"} 1"),
        "{text}"
    );
}

#[tokio::test]
async fn a_failed_probe_opens_the_breaker_again() {
    let a = named("a").await;
    a.status.store(503, Ordering::SeqCst);
    let gw = gateway(&cfg(
        &[(a.up.addr, 1)],
        "    outlier_detection: {enabled: false}\n    retries: {attempts: 1}\n    circuit_breaker: {minimum_calls: 4, failure_rate_percent: 50, open_for: 300ms, half_open_calls: 1}\n",
    ))
    .await;
    let addr = addr(&gw).await;
    let up = gw.shared().snapshot.load().upstreams["up"].clone();
    // Half of 4 calls failed: open.
    a.status.store(200, Ordering::SeqCst);
    send(addr, "GET", &[]).await;
    send(addr, "GET", &[]).await;
    a.status.store(503, Ordering::SeqCst);
    send(addr, "GET", &[]).await;
    assert_eq!(
        up.breaker_state(),
        Some(torii_upstream::BreakerState::Closed),
        "3 calls: under the minimum"
    );
    send(addr, "GET", &[]).await;
    assert_eq!(up.breaker_state(), Some(torii_upstream::BreakerState::Open));
    // After the cool-down the one probe fails: open again.
    let hits = a.hits.load(Ordering::SeqCst);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while a.hits.load(Ordering::SeqCst) == hits {
        assert!(tokio::time::Instant::now() < deadline, "no probe");
        send(addr, "GET", &[]).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(up.breaker_state(), Some(torii_upstream::BreakerState::Open));
    assert_eq!(up.breaker_transitions(), [2, 1, 0]);
}

#[tokio::test]
async fn the_bulkhead_caps_requests_in_flight_and_the_wait() {
    let slow = upstream(false, |_req| async {
        tokio::time::sleep(Duration::from_millis(800)).await;
        http::Response::new(full("slow"))
    })
    .await;
    let gw = gateway(&cfg(
        &[(slow.addr, 1)],
        "    concurrency: {max_in_flight: 2, max_waiting: 1, max_wait: 200ms}\n",
    ))
    .await;
    let addr = addr(&gw).await;
    let up = gw.shared().snapshot.load().upstreams["up"].clone();
    let busy: Vec<_> = (0..2)
        .map(|_| tokio::spawn(async move { send(addr, "GET", &[]).await.0 }))
        .collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while up.bulkhead_load().unwrap().0 < 2 {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // One waits (and gives up after 200 ms); the next finds the queue full: 503 at once.
    let waiter = tokio::spawn(async move {
        let t = std::time::Instant::now();
        (send(addr, "GET", &[]).await, t.elapsed())
    });
    while up.bulkhead_load().unwrap().1 < 1 {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let t = std::time::Instant::now();
    let (s, body) = send(addr, "GET", &[]).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body.contains("upstream_saturated"), "{body}");
    assert!(
        t.elapsed() < Duration::from_millis(150),
        "{:?}",
        t.elapsed()
    );
    let ((s, _), waited) = waiter.await.unwrap();
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    assert!(waited >= Duration::from_millis(190), "{waited:?}");
    for b in busy {
        assert_eq!(b.await.unwrap(), StatusCode::OK);
    }
    // The places were given back with the response bodies.
    assert_eq!(up.bulkhead_load().unwrap(), (0, 0, 2));
}

fn with_fallback(targets: &[(SocketAddr, u32)], upstream_extra: &str, fallback: &str) -> String {
    cfg(targets, upstream_extra).replace(
        "    upstream: up\n",
        &format!("    upstream: up\n    fallback: {fallback}\n"),
    )
}

#[tokio::test]
async fn a_static_fallback_masks_upstream_failures_and_is_marked() {
    let (bad, _held) = refusing();
    let gw = gateway(&with_fallback(
        &[(bad, 1)],
        "    retries: {attempts: 1}\n",
        "{status: 200, headers: {content-type: application/json}, body: '{\"items\":[]}'}",
    ))
    .await;
    let addr = addr(&gw).await;
    let resp = h1_client()
        .request(
            http::Request::get(format!("http://{addr}/x"))
                .body(full(""))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["x-torii-fallback"], "static");
    assert_eq!(resp.headers()["content-type"], "application/json");
    let body = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .unwrap()
        .to_bytes();
    assert_eq!(&body[..], b"{\"items\":[]}");
    // Still counted as the upstream error it was.
    let text = gw.shared().metrics_text();
    assert!(
        text.contains(
            "torii_upstream_errors_total{upstream=\"up\",kind=\"upstream_connect_failed\"} 1"
        ),
        "{text}"
    );
    // HEAD gets the head only.
    let (s, _) = send(addr, "HEAD", &[]).await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test]
async fn a_fallback_replaces_chosen_statuses_and_open_circuits_only() {
    let a = named("a").await;
    let gw = gateway(&with_fallback(
        &[(a.up.addr, 1)],
        "    outlier_detection: {enabled: false}\n    retries: {attempts: 1}\n    circuit_breaker: {consecutive_failures: 2, open_for: 10s}\n",
        "{status: 503, body: 'later', on_errors: [circuit_open], on_status: [500]}",
    ))
    .await;
    let addr = addr(&gw).await;
    // A 404 is an answer, not a failure: passed on.
    a.status.store(404, Ordering::SeqCst);
    assert_eq!(
        send(addr, "GET", &[]).await,
        (StatusCode::NOT_FOUND, "a".into())
    );
    // 500 is replaced; two of them open the breaker, whose 503 is masked too.
    a.status.store(500, Ordering::SeqCst);
    assert_eq!(
        send(addr, "GET", &[]).await,
        (StatusCode::SERVICE_UNAVAILABLE, "later".into())
    );
    assert_eq!(
        send(addr, "GET", &[]).await,
        (StatusCode::SERVICE_UNAVAILABLE, "later".into())
    );
    let hits = a.hits.load(Ordering::SeqCst);
    assert_eq!(
        send(addr, "GET", &[]).await,
        (StatusCode::SERVICE_UNAVAILABLE, "later".into())
    );
    assert_eq!(
        a.hits.load(Ordering::SeqCst),
        hits,
        "the open circuit sent nothing upstream"
    );
}

/// A target that answers after `delay`.
async fn slow(name: &'static str, delay: Duration) -> SocketAddr {
    upstream(false, move |_req| async move {
        tokio::time::sleep(delay).await;
        http::Response::new(full(name))
    })
    .await
    .addr
}

fn with_route(targets: &[(SocketAddr, u32)], upstream_extra: &str, route_extra: &str) -> String {
    cfg(targets, upstream_extra).replace(
        "    upstream: up\n",
        &format!("    upstream: up\n{route_extra}"),
    )
}

#[tokio::test]
async fn a_route_deadline_lets_a_timed_out_try_move_to_another_target() {
    let hang = slow("hang", Duration::from_secs(5)).await;
    let fast = named("fast").await;
    let gw = gateway(&with_route(
        &[(hang, 1), (fast.up.addr, 1)],
        "    outlier_detection: {enabled: false}\n",
        "    timeouts: {response_headers: 200ms, total: 2s}\n",
    ))
    .await;
    let addr = addr(&gw).await;
    let t = std::time::Instant::now();
    assert_eq!(
        send(addr, "GET", &[]).await,
        (StatusCode::OK, "fast".into())
    );
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(200) && took < Duration::from_millis(1500),
        "{took:?}"
    );
}

#[tokio::test]
async fn the_total_deadline_bounds_every_try_and_wait() {
    let (a, b) = (
        slow("a", Duration::from_secs(5)).await,
        slow("b", Duration::from_secs(5)).await,
    );
    let gw = gateway(&with_route(
        &[(a, 1), (b, 1)],
        "    outlier_detection: {enabled: false}\n    retries: {attempts: 3}\n",
        "    timeouts: {total: 600ms}\n",
    ))
    .await;
    let addr = addr(&gw).await;
    let t = std::time::Instant::now();
    let (s, body) = send(addr, "GET", &[]).await;
    assert_eq!(s, StatusCode::GATEWAY_TIMEOUT, "{body}");
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(590) && took < Duration::from_millis(1200),
        "{took:?}"
    );
}

#[tokio::test]
async fn a_route_may_opt_in_to_retrying_non_idempotent_requests() {
    let (a, b) = (named("a").await, named("b").await);
    a.status.store(503, Ordering::SeqCst);
    let gw = gateway(&with_route(
        &[(a.up.addr, 1), (b.up.addr, 1)],
        "    outlier_detection: {enabled: false}\n",
        "    retry_non_idempotent: true\n",
    ))
    .await;
    let addr = addr(&gw).await;
    assert_eq!(send(addr, "POST", &[]).await, (StatusCode::OK, "b".into()));
    assert_eq!(a.hits.load(Ordering::SeqCst), 1);
}

/// A target that sends a response head promising 100 bytes, then 10 of them, then hangs up.
async fn cut_short() -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n0123456789")
                    .await;
            });
        }
    });
    a
}

#[tokio::test]
async fn a_body_cut_short_counts_against_its_target() {
    let bad = cut_short().await;
    let good = named("good").await;
    let gw = gateway(&cfg(
        &[(bad, 1), (good.up.addr, 1)],
        "    outlier_detection: {consecutive_failures: 2, base_ejection_time: 30s}\n    retries: {attempts: 1}\n",
    ))
    .await;
    let addr = addr(&gw).await;
    let ejected = || {
        gw.shared().snapshot.load().upstreams["up"]
            .targets_view()
            .iter()
            .any(|t| *t.name == *bad.to_string() && t.ejected_for.is_some())
    };
    // Round robin: every other request gets a head (200) and a broken body, which the client
    // sees as a broken response (the gateway cannot retry once the head has come).
    let mut broken = 0;
    for _ in 0..4 {
        let resp = h1_client()
            .request(
                http::Request::get(format!("http://{addr}/x"))
                    .body(full(""))
                    .unwrap(),
            )
            .await;
        let ok = match resp {
            Ok(r) => http_body_util::BodyExt::collect(r.into_body())
                .await
                .is_ok(),
            Err(_) => false,
        };
        broken += usize::from(!ok);
    }
    assert_eq!(broken, 2);
    assert!(ejected(), "two broken bodies in a row eject the target");
    for _ in 0..10 {
        assert_eq!(
            send(addr, "GET", &[]).await,
            (StatusCode::OK, "good".into())
        );
    }
}

#[tokio::test]
async fn peak_ewma_sends_most_requests_to_the_faster_target() {
    let fast = slow("fast", Duration::from_millis(1)).await;
    let slower = slow("slow", Duration::from_millis(40)).await;
    let gw = gateway(&cfg(
        &[(fast, 1), (slower, 1)],
        "    load_balancing: {algorithm: peak_ewma, decay: 10s}\n",
    ))
    .await;
    let addr = addr(&gw).await;
    let mut seen: HashMap<String, usize> = HashMap::new();
    for _ in 0..100 {
        let (s, who) = send(addr, "GET", &[]).await;
        assert_eq!(s, StatusCode::OK);
        *seen.entry(who).or_default() += 1;
    }
    // Each pick compares two random targets and takes the cheaper: once both have answered,
    // the slow one wins only when it is drawn twice (about 1 pick in 8).
    let fast_share = seen.get("fast").copied().unwrap_or(0);
    assert!(fast_share >= 70, "{seen:?}");
    // With least_requests (the same two random choices, no latency), the split is even.
    let gw = gateway(&cfg(
        &[(fast, 1), (slower, 1)],
        "    load_balancing: {algorithm: least_requests}\n",
    ))
    .await;
    let addr = support::addr(&gw).await;
    let mut seen: HashMap<String, usize> = HashMap::new();
    for _ in 0..100 {
        *seen.entry(send(addr, "GET", &[]).await.1).or_default() += 1;
    }
    assert!(seen.get("fast").copied().unwrap_or(0) < 70, "{seen:?}");
}

#[tokio::test]
async fn a_slow_try_is_hedged_on_another_target_and_the_first_answer_wins() {
    let slow_one = slow("slow", Duration::from_millis(1500)).await;
    let fast = slow("fast", Duration::from_millis(1)).await;
    let gw = gateway(&cfg(
        &[(slow_one, 1), (fast, 1)],
        "    hedging: {delay: 50ms}\n    retries: {budget_min_per_second: 100}\n",
    ))
    .await;
    let addr = addr(&gw).await;
    // Round robin: a GET meets the slow target first, is hedged after 50 ms, and the hedge
    // takes the next turn (the fast target), so the next GET meets the slow one again.
    for _ in 0..4 {
        let start = std::time::Instant::now();
        assert_eq!(
            send(addr, "GET", &[]).await,
            (StatusCode::OK, "fast".into())
        );
        assert!(
            start.elapsed() < Duration::from_millis(1000),
            "{:?}",
            start.elapsed()
        );
    }
    let up = &gw.shared().snapshot.load().upstreams["up"];
    assert_eq!(up.hedge_counts(), Some((4, 4)));
    assert_eq!(
        metric_line(&gw, "torii_upstream_hedges_total{upstream=\"up\"}"),
        Some(4.0)
    );
    // A POST is never hedged: the one that meets the slow target waits for it.
    let mut answers = Vec::new();
    for _ in 0..2 {
        answers.push(send(addr, "POST", &[]).await.1);
    }
    answers.sort();
    assert_eq!(answers, ["fast", "slow"]);
    assert_eq!(up.hedge_counts(), Some((4, 4)));
}
