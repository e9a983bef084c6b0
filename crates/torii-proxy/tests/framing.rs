//! Message framing and the clocks of an exchange, driven from the outside: raw client sockets,
//! raw upstreams that misbehave, uploads slower than the response-head timeout.
#![allow(clippy::unwrap_used)]

mod support;

use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn one_upstream(addr: SocketAddr, upstream_extra: &str, listener_extra: &str) -> String {
    config(&format!(
        "upstreams:\n  - name: up\n    targets: [{{url: 'http://{addr}'}}]\n{upstream_extra}routes:\n  - name: all\n    match: {{path_prefix: /}}\n    upstream: up\n"
    ))
    .replace(
        "bind: 127.0.0.1:0\nadmin",
        &format!("bind: 127.0.0.1:0\n{listener_extra}admin"),
    )
}

fn status(resp: &str) -> &str {
    resp.get(9..12).unwrap_or("")
}

/// Reads one response with a Content-Length body from `s`; `buf` keeps what was read past it.
async fn read_response(s: &mut TcpStream, buf: &mut Vec<u8>) -> String {
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map_or(0, |v| v.trim().parse().unwrap());
            if buf.len() >= end + 4 + len {
                let rest = buf.split_off(end + 4 + len);
                let one = String::from_utf8_lossy(buf).into_owned();
                *buf = rest;
                return one;
            }
        }
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut chunk))
            .await
            .expect("response in time")
            .unwrap();
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(buf));
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[tokio::test]
async fn transfer_codings_other_than_one_chunked_are_refused_and_close() {
    let up = echo_upstream(false).await;
    let gw = gateway(&one_upstream(up.addr, "", "")).await;
    let a = addr(&gw).await;
    let cases: &[(&str, &str)] = &[
        ("Transfer-Encoding: gzip, chunked\r\n", "501"),
        ("Transfer-Encoding: cow, chunked\r\n", "501"),
        ("Transfer-Encoding: identity, chunked\r\n", "501"),
        (
            "Transfer-Encoding: cow\r\nTransfer-Encoding: chunked\r\n",
            "501",
        ),
        ("Transfer-Encoding: chunked, chunked\r\n", "400"),
        (
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
            "400",
        ),
    ];
    for (fields, want) in cases {
        // A second request pipelined behind the body must never be read.
        let req = format!(
            "POST / HTTP/1.1\r\nHost: x\r\n{fields}\r\n5\r\nhello\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
        );
        let resp = raw(a, req.as_bytes()).await;
        assert_eq!(status(&resp), *want, "{fields}: {resp}");
        assert!(
            resp.to_ascii_lowercase().contains("connection: close"),
            "{fields}: {resp}"
        );
        assert_eq!(resp.matches("HTTP/1.1").count(), 1, "{fields}: {resp}");
    }
    assert_eq!(up.stats.accepted.load(Ordering::SeqCst), 0);
    // A plain chunked body still passes.
    let resp = raw(
        a,
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    )
    .await;
    assert_eq!(status(&resp), "200", "{resp}");
    assert!(resp.contains("\"body_len\":5"), "{resp}");
}

#[tokio::test]
async fn max_header_bytes_holds_on_a_reused_connection() {
    let up = echo_upstream(false).await;
    let gw = gateway(&one_upstream(
        up.addr,
        "",
        "    limits: {max_header_bytes: 16KiB}\n",
    ))
    .await;
    let a = addr(&gw).await;
    let mut s = TcpStream::connect(a).await.unwrap();
    // Grow the connection's read buffer (200 pipelined requests in one write), then send a
    // head over the limit in a single write on the same connection: hyper's buffer cap alone
    // let that head through.
    let pipelined: Vec<u8> = (0..200)
        .flat_map(|_| b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec())
        .collect();
    s.write_all(&pipelined).await.unwrap();
    let mut buf = Vec::new();
    for _ in 0..200 {
        let r = read_response(&mut s, &mut buf).await;
        assert_eq!(status(&r), "200", "{r}");
    }
    let big = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "b".repeat(20_000)
    );
    s.write_all(big.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    let second = String::from_utf8_lossy(&out);
    assert_eq!(status(&second), "431", "{second}");
    assert_eq!(up.stats.accepted.load(Ordering::SeqCst), 1);
}

/// An upstream on a raw socket that reads a request head and answers `response`, then
/// closes.
async fn raw_upstream(response: &'static [u8]) -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let _ = s.write_all(response).await;
                let _ = s.shutdown().await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn upstream_transfer_codings_the_gateway_cannot_undo_are_502() {
    for response in [
        &b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"[..],
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nhello",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    ] {
        let up = raw_upstream(response).await;
        let gw = gateway(&one_upstream(up, "", "")).await;
        let a = addr(&gw).await;
        let (s, _, b) = get(&h1_client(), format!("http://{a}/x")).await;
        assert_eq!(s, StatusCode::BAD_GATEWAY, "{}", String::from_utf8_lossy(response));
        assert_eq!(json(&b)["error"]["code"], "upstream_reset");
    }
}

#[tokio::test]
async fn every_connection_field_of_a_response_is_honoured() {
    let up = raw_upstream(
        b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nConnection: x-secret\r\nX-Secret: 1\r\nX-Kept: 1\r\nContent-Length: 2\r\n\r\nok",
    )
    .await;
    let gw = gateway(&one_upstream(up, "", "")).await;
    let a = addr(&gw).await;
    let (s, h, _) = get(&h1_client(), format!("http://{a}/x")).await;
    assert_eq!(s, StatusCode::OK);
    assert!(h.get("x-secret").is_none(), "{h:?}");
    assert_eq!(h["x-kept"], "1");
}

/// Sends a 30-byte body one byte every 50 ms (1.5 s in all) through the gateway.
async fn trickled_post(a: SocketAddr, client_h2: bool) -> (StatusCode, bytes::Bytes, Duration) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        for _ in 0..30 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            if tx.send(Ok(bytes::Bytes::from_static(b"x"))).is_err() {
                return;
            }
        }
    });
    let body = Channel(rx).boxed();
    let req = Request::post(format!("http://{a}/upload"))
        .body(body)
        .unwrap();
    let client = if client_h2 { h2_client() } else { h1_client() };
    let start = Instant::now();
    let resp = client.request(req).await.unwrap();
    let status = resp.status();
    let b = resp.into_body().collect().await.unwrap().to_bytes();
    (status, b, start.elapsed())
}

#[tokio::test]
async fn a_slow_upload_is_not_a_response_head_timeout() {
    for http2 in [false, true] {
        let up = echo_upstream(http2).await;
        let proto = if http2 { "    protocol: http2\n" } else { "" };
        let gw = gateway(&one_upstream(
            up.addr,
            &format!("{proto}    timeouts: {{response_headers: 300ms, body_idle: 1s}}\n"),
            "",
        ))
        .await;
        let a = addr(&gw).await;
        let (s, b, took) = trickled_post(a, http2).await;
        assert_eq!(
            s,
            StatusCode::OK,
            "http2 {http2}: {}",
            String::from_utf8_lossy(&b)
        );
        assert_eq!(json(&b)["body_len"], 30, "http2 {http2}");
        assert!(took >= Duration::from_millis(1400), "{took:?}");
    }
}

#[tokio::test]
async fn the_response_head_clock_starts_when_the_request_is_sent() {
    // The upstream reads the whole body, then takes longer than response_headers.
    for http2 in [false, true] {
        let up = upstream(http2, |req: Request<hyper::body::Incoming>| async move {
            let _ = req.into_body().collect().await;
            tokio::time::sleep(Duration::from_secs(3)).await;
            Response::new(full("late"))
        })
        .await;
        let proto = if http2 { "    protocol: http2\n" } else { "" };
        let gw = gateway(&one_upstream(
            up.addr,
            &format!("{proto}    timeouts: {{response_headers: 300ms, body_idle: 1s}}\n"),
            "",
        ))
        .await;
        let a = addr(&gw).await;
        let (s, b, took) = trickled_post(a, false).await;
        assert_eq!(s, StatusCode::GATEWAY_TIMEOUT, "http2 {http2}");
        assert_eq!(json(&b)["error"]["code"], "upstream_timeout");
        // 1.5 s of upload, then the 300 ms clock: not the 3 s answer.
        assert!(
            took >= Duration::from_millis(1700) && took < Duration::from_millis(2800),
            "http2 {http2}: {took:?}"
        );
    }
}

#[tokio::test]
async fn an_upstream_that_stops_reading_the_body_times_out() {
    // Accepts, reads the head and a little, then neither reads nor answers.
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = l.local_addr().unwrap();
    let held = Arc::new(tokio::sync::Mutex::new(Vec::new()));
    let keep = held.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let mut chunk = [0u8; 1024];
            let _ = s.read(&mut chunk).await;
            keep.lock().await.push(s);
        }
    });
    let cfg = one_upstream(
        up,
        "    timeouts: {response_headers: 30s, body_idle: 500ms}\n",
        "",
    )
    .replace("server:\n", "server:\n  max_request_body: 1GiB\n");
    let gw = gateway(&cfg).await;
    let a = addr(&gw).await;
    // A raw client that keeps writing a 256 MiB body while it waits for the answer.
    let s = TcpStream::connect(a).await.unwrap();
    let (mut rd, mut wr) = s.into_split();
    let writer = tokio::spawn(async move {
        let head = "POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 268435456\r\n\r\n";
        wr.write_all(head.as_bytes()).await?;
        let chunk = vec![b'x'; 64 * 1024];
        for _ in 0..4096 {
            wr.write_all(&chunk).await?;
        }
        Ok::<_, std::io::Error>(())
    });
    let start = Instant::now();
    let mut out = Vec::new();
    let mut chunk = [0u8; 4096];
    while !out.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(20), rd.read(&mut chunk))
            .await
            .expect("no hang")
            .unwrap();
        assert!(n > 0, "closed without an answer");
        out.extend_from_slice(&chunk[..n]);
    }
    let resp = String::from_utf8_lossy(&out);
    assert_eq!(status(&resp), "504", "{resp}");
    assert!(start.elapsed() < Duration::from_secs(15));
    writer.abort();
    drop(held);
}

/// Client-side faults on a request to an HTTP/2 upstream are the client's, as with HTTP/1.1
/// upstreams: 413 for a body over the limit, 400 for a body cut short or badly chunked, and
/// RESOURCE_EXHAUSTED (not UNAVAILABLE, which clients retry) for a gRPC message over it.
#[tokio::test]
async fn client_body_faults_towards_http2_upstreams_are_the_clients() {
    for http2 in [false, true] {
        let up = echo_upstream(http2).await;
        let proto = if http2 { "    protocol: http2\n" } else { "" };
        let cfg = one_upstream(up.addr, proto, "")
            .replace("server:\n", "server:\n  max_request_body: 1KiB\n");
        let gw = gateway(&cfg).await;
        let a = addr(&gw).await;
        let big_chunk = format!("800\r\n{}\r\n", "x".repeat(0x800));
        let over = format!(
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n{big_chunk}0\r\n\r\n"
        );
        // (The rest of that body is framed, so the connection may stay open: read one answer.)
        let mut s = TcpStream::connect(a).await.unwrap();
        s.write_all(over.as_bytes()).await.unwrap();
        let resp = read_response(&mut s, &mut Vec::new()).await;
        assert_eq!(status(&resp), "413", "http2 {http2}: {resp}");
        let bad_chunk = raw(
            a,
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n",
        )
        .await;
        assert_eq!(status(&bad_chunk), "400", "http2 {http2}: {bad_chunk}");
        // A body shorter than its Content-Length: the client stops sending (half-close).
        let mut s = TcpStream::connect(a).await.unwrap();
        s.write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nshort")
            .await
            .unwrap();
        s.shutdown().await.unwrap();
        let short = read_response(&mut s, &mut Vec::new()).await;
        assert_eq!(status(&short), "400", "http2 {http2}: {short}");
        // gRPC: a streamed message over the limit.
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tx.send(Ok(bytes::Bytes::from(vec![0u8; 4096]))).unwrap();
        drop(tx);
        let req = Request::post(format!("http://{a}/pkg.Svc/Method"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(Channel(rx).boxed())
            .unwrap();
        let resp = h2_client().request(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()["grpc-status"], "8", "http2 {http2}");
    }
}
