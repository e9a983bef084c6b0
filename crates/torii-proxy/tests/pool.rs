//! Upstream connection pooling: a real cap, reuse, and the keep-alive close race.
#![allow(clippy::unwrap_used)]

mod support;

use http::{Request, Response, StatusCode};
use std::sync::atomic::Ordering;
use std::time::Duration;
use support::*;

#[tokio::test]
async fn concurrent_requests_stay_within_the_cap_and_reuse_connections() {
    let up = upstream(false, |_req| async {
        // Hold each request a little so that requests pile up behind the cap.
        tokio::time::sleep(Duration::from_millis(10)).await;
        Response::new(full("ok"))
    })
    .await;
    let cfg = config(&format!(
        "upstreams:\n  - name: up\n    targets: [{{url: 'http://{}'}}]\n    pool: {{max_connections_per_target: 4, queue_timeout: 10s}}\nroutes:\n  - name: all\n    match: {{path_prefix: /}}\n    upstream: up\n",
        up.addr
    ));
    let gw = gateway(&cfg).await;
    let a = addr(&gw).await;
    let client = h1_client();
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let c = client.clone();
        tasks.push(tokio::spawn(async move {
            get(&c, format!("http://{a}/x")).await.0
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), StatusCode::OK);
    }
    let max_open = up.stats.max_open.load(Ordering::SeqCst);
    let accepted = up.stats.accepted.load(Ordering::SeqCst);
    assert!(
        max_open <= 4,
        "max open upstream connections {max_open} > cap 4"
    );
    assert!(
        accepted <= 4,
        "connections were not reused: {accepted} accepted for 64 requests"
    );
}

#[tokio::test]
async fn queue_timeout_gives_503() {
    let (release_tx, release_rx) = tokio::sync::watch::channel(false);
    let up = upstream(false, move |_req| {
        let mut rx = release_rx.clone();
        async move {
            let _ = rx.wait_for(|v| *v).await;
            Response::new(full("ok"))
        }
    })
    .await;
    let cfg = config(&format!(
        "upstreams:\n  - name: up\n    targets: [{{url: 'http://{}'}}]\n    pool: {{max_connections_per_target: 1, queue_timeout: 100ms}}\nroutes:\n  - name: all\n    match: {{path_prefix: /}}\n    upstream: up\n",
        up.addr
    ));
    let gw = gateway(&cfg).await;
    let a = addr(&gw).await;
    let client = h1_client();
    let c = client.clone();
    let first = tokio::spawn(async move { get(&c, format!("http://{a}/1")).await.0 });
    // Wait until the first request holds the only connection.
    while up.stats.open.load(Ordering::SeqCst) == 0 {
        tokio::task::yield_now().await;
    }
    let (s, _, b) = get(&client, format!("http://{a}/2")).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(json(&b)["error"]["code"], "upstream_busy");
    release_tx.send(true).unwrap();
    assert_eq!(first.await.unwrap(), StatusCode::OK);
}

/// An upstream that answers one request per connection with `keep-alive` and then closes the
/// connection, as an upstream with a short keep-alive timeout does. No request may fail.
#[tokio::test]
async fn upstream_closing_idle_connections_never_fails_idempotent_requests() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up_addr = listener.local_addr().unwrap();
    let (closed_tx, mut closed_rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            let closed_tx = closed_tx.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                // First request: answered with keep-alive. Second request on the same
                // connection: the "idle timeout" fires just as it arrives, so the connection is
                // closed without an answer: exactly the race a pooled connection runs into.
                for round in 0..2 {
                    let mut got = Vec::new();
                    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                        let n = s.read(&mut buf).await.unwrap_or(0);
                        if n == 0 {
                            return;
                        }
                        got.extend_from_slice(&buf[..n]);
                    }
                    if round == 0 {
                        let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: keep-alive\r\n\r\nok").await;
                    }
                }
                drop(s);
                let _ = closed_tx.send(());
            });
        }
    });
    let cfg = config(&format!(
        "upstreams:\n  - name: up\n    targets: [{{url: 'http://{up_addr}'}}]\nroutes:\n  - name: all\n    match: {{path_prefix: /}}\n    upstream: up\n"
    ));
    let gw = gateway(&cfg).await;
    let a = addr(&gw).await;
    let client = h1_client();
    for i in 0..20 {
        let (s, _, b) = get(&client, format!("http://{a}/{i}")).await;
        assert_eq!((s, &b[..]), (StatusCode::OK, &b"ok"[..]), "request {i}");
    }
    assert!(closed_rx.recv().await.is_some(), "the race was exercised");
    for i in 0..20 {
        let req = Request::delete(format!("http://{a}/d{i}"))
            .body(full(""))
            .unwrap();
        assert_eq!(
            client.request(req).await.unwrap().status(),
            StatusCode::OK,
            "request d{i}"
        );
    }
}

#[tokio::test]
async fn unchanged_upstream_keeps_its_pool_across_reload() {
    let up = echo_upstream(false).await;
    let base = format!(
        "upstreams:\n  - name: up\n    targets: [{{url: 'http://{}'}}]\nroutes:\n  - name: all\n    match: {{path_prefix: /}}\n    upstream: up\n",
        up.addr
    );
    let gw = gateway(&config(&base)).await;
    let a = addr(&gw).await;
    let client = h1_client();
    assert_eq!(
        get(&client, format!("http://{a}/x")).await.0,
        StatusCode::OK
    );
    // A reload that adds a route but leaves the upstream alone.
    let next = format!(
        "{base}  - name: extra\n    match: {{path: /extra}}\n    direct_response: {{body: new}}\n"
    );
    let loaded = load_str("t.yaml", &config(&next)).unwrap();
    gw.apply(loaded).await.unwrap();
    assert_eq!(
        get(&client, format!("http://{a}/y")).await.0,
        StatusCode::OK
    );
    assert_eq!(
        up.stats.accepted.load(Ordering::SeqCst),
        1,
        "the pooled connection survived the reload"
    );
    assert_eq!(
        &get(&client, format!("http://{a}/extra")).await.2[..],
        b"new"
    );
}
