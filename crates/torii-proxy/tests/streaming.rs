//! Streaming behaviour: SSE flushed per event, limits, truncation, cancellation, idle timeout.
#![allow(clippy::unwrap_used)]

mod support;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use std::time::Duration;
use support::*;
use tokio::sync::mpsc;

fn cfg_for(addr: std::net::SocketAddr, extra_upstream: &str, extra_top: &str) -> String {
    config(&format!(
        "upstreams:\n  - name: up\n    targets: [{{url: 'http://{addr}'}}]\n{extra_upstream}routes:\n  - name: all\n    match: {{path_prefix: /}}\n    upstream: up\n{extra_top}"
    ))
}

#[tokio::test]
async fn server_sent_events_are_flushed_event_by_event() {
    let (tx, rx) = mpsc::unbounded_channel::<Result<Bytes, ()>>();
    let rx = std::sync::Arc::new(tokio::sync::Mutex::new(Some(rx)));
    let up = upstream(false, move |_req| {
        let rx = rx.clone();
        async move {
            let rx = rx.lock().await.take().unwrap();
            Response::builder()
                .header("content-type", "text/event-stream")
                .body(Channel(rx).boxed())
                .unwrap()
        }
    })
    .await;
    let gw = gateway(&cfg_for(up.addr, "", "")).await;
    let a = addr(&gw).await;
    let resp = h1_client()
        .request(
            Request::get(format!("http://{a}/events"))
                .body(full(""))
                .unwrap(),
        )
        .await
        .unwrap();
    let mut body = resp.into_body();
    for i in 0..3 {
        let event = format!("data: event {i}\n\n");
        tx.send(Ok(Bytes::from(event.clone()))).unwrap();
        // The event arrives before the next one is even produced.
        let frame = tokio::time::timeout(Duration::from_secs(5), body.frame())
            .await
            .expect("event not flushed")
            .unwrap()
            .unwrap();
        assert_eq!(frame.into_data().unwrap(), Bytes::from(event));
    }
}

#[tokio::test]
async fn content_length_over_limit_is_413_before_the_body_is_read() {
    let up = echo_upstream(false).await;
    let gw = gateway(&cfg_for(up.addr, "", "").replace(
        "watch_config: false",
        "watch_config: false\n  max_request_body: 1KiB",
    ))
    .await;
    let a = addr(&gw).await;
    // Only the head is sent; the 413 must come without waiting for the body.
    let resp = raw(
        a,
        b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n",
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 413"), "{resp}");
    assert!(resp.contains("payload_too_large"), "{resp}");
    assert_eq!(
        up.stats.accepted.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "nothing reached the upstream"
    );
    // A chunked body that grows past the limit is refused too.
    let big = Generated::new(64 * 1024);
    let resp = h1_client()
        .request(
            Request::post(format!("http://{a}/x"))
                .body(big.boxed())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn truncated_upstream_body_is_not_passed_off_as_complete() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up_addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 4096];
        let _ = s.read(&mut buf).await;
        // Promise 100 bytes, send 10, then reset.
        let _ = s
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n0123456789")
            .await;
        let _ = s.set_zero_linger();
        drop(s);
    });
    let gw = gateway(&cfg_for(up_addr, "", "")).await;
    let a = addr(&gw).await;
    let resp = h1_client()
        .request(
            Request::get(format!("http://{a}/x"))
                .body(full(""))
                .unwrap(),
        )
        .await;
    // The gateway may have had the head and the reset in hand at once (then the client
    // connection closes before the head is complete) or not (then the body breaks): either
    // way the client must see an error, never a complete response.
    let Ok(resp) = resp else {
        return;
    };
    assert_eq!(resp.status(), StatusCode::OK);
    let r = resp.into_body().collect().await;
    assert!(
        r.is_err(),
        "the client must see an incomplete body, got {:?}",
        r.map(|b| b.to_bytes())
    );
}

#[tokio::test]
async fn client_disconnect_cancels_the_upstream_request() {
    let (dropped_tx, mut dropped_rx) = mpsc::unbounded_channel::<()>();
    let (started_tx, mut started_rx) = mpsc::unbounded_channel::<()>();
    struct OnDrop(mpsc::UnboundedSender<()>);
    impl Drop for OnDrop {
        fn drop(&mut self) {
            let _ = self.0.send(());
        }
    }
    let up = upstream(false, move |_req| {
        let guard = OnDrop(dropped_tx.clone());
        let started = started_tx.clone();
        async move {
            let _guard = guard;
            let _ = started.send(());
            tokio::time::sleep(Duration::from_secs(30)).await;
            Response::new(full("too late"))
        }
    })
    .await;
    let (cfg, log) = with_access_log(cfg_for(up.addr, "", ""), "abort");
    let gw = gateway(&cfg).await;
    let a = addr(&gw).await;
    let mut s = tokio::net::TcpStream::connect(a).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut s, b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    started_rx.recv().await.unwrap();
    drop(s);
    tokio::time::timeout(Duration::from_secs(5), dropped_rx.recv())
        .await
        .expect("upstream request was not cancelled");
    // The access log says 499, client abort.
    let line = log_line(&log, "/slow").await;
    let j = json(line.as_bytes());
    assert_eq!(j["status"], 499, "{line}");
    assert_eq!(j["route"], "all");
}

#[tokio::test]
async fn access_log_line_has_the_fields_and_redacts_secrets() {
    let up = echo_upstream(false).await;
    let (cfg, log) = with_access_log(cfg_for(up.addr, "", ""), "fields");
    let gw = gateway(&cfg).await;
    let a = addr(&gw).await;
    let (s, h, _) = get(&h1_client(), format!("http://{a}/p?api_key=sekret&x=1")).await;
    assert_eq!(s, StatusCode::OK);
    let rid = h["x-request-id"].to_str().unwrap().to_string();
    let line = log_line(&log, &rid).await;
    assert!(!line.contains("sekret"), "{line}");
    let j = json(line.as_bytes());
    assert_eq!(j["path"], "/p?api_key=REDACTED&x=1");
    for k in [
        "time",
        "request_id",
        "listener",
        "route",
        "method",
        "status",
        "bytes_in",
        "bytes_out",
        "client",
        "upstream",
        "upstream_latency_ms",
        "total_latency_ms",
        "outcome",
    ] {
        assert!(j.get(k).is_some(), "missing {k}: {line}");
    }
    assert_eq!(j["outcome"], "complete");
    assert_eq!(j["upstream"], up.addr.to_string());
}

/// `bytes_in` is the body bytes actually read: a chunked upload (no Content-Length) is
/// counted, and a Content-Length that was never read is not.
#[tokio::test]
async fn access_log_bytes_in_counts_the_bytes_read() {
    let up = echo_upstream(false).await;
    let (cfg, log) = with_access_log(cfg_for(up.addr, "", ""), "bytes-in");
    let gw = gateway(&cfg).await;
    let a = addr(&gw).await;
    let resp = raw(
        a,
        b"POST /chunked HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n7\r\nchunked\r\n5\r\nbytes\r\n0\r\n\r\n",
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    let j = json(log_line(&log, "/chunked").await.as_bytes());
    assert_eq!(j["bytes_in"], 12);
    let resp = raw(
        a,
        b"POST /sized HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc",
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    let j = json(log_line(&log, "/sized").await.as_bytes());
    assert_eq!(j["bytes_in"], 3);
}

#[tokio::test]
async fn upstream_body_idle_timeout_ends_the_exchange() {
    let (tx, rx) = mpsc::unbounded_channel::<Result<Bytes, ()>>();
    let rx = std::sync::Arc::new(tokio::sync::Mutex::new(Some(rx)));
    let up = upstream(false, move |_req| {
        let rx = rx.clone();
        async move { Response::new(Channel(rx.lock().await.take().unwrap()).boxed()) }
    })
    .await;
    let gw = gateway(&cfg_for(up.addr, "    timeouts: {body_idle: 200ms}\n", "")).await;
    let a = addr(&gw).await;
    tx.send(Ok(Bytes::from_static(b"first"))).unwrap();
    let resp = h1_client()
        .request(
            Request::get(format!("http://{a}/x"))
                .body(full(""))
                .unwrap(),
        )
        .await
        .unwrap();
    let r = tokio::time::timeout(Duration::from_secs(5), resp.into_body().collect())
        .await
        .expect("idle timeout did not fire");
    assert!(
        r.is_err(),
        "a stalled body must end in an error, not look complete"
    );
    drop(tx);
}
