//! The inline HTTP/1.1 upstream client on the wire: response framing (chunked with trailers,
//! close-delimited, ambiguous), informational responses, early answers to uploads, connection
//! reuse only after a clean end, and bytes that follow a 101.
#![allow(clippy::unwrap_used)]

mod support;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn cfg_for(addr: SocketAddr) -> String {
    config(&format!(
        "upstreams:\n  - name: up\n    targets: [{{url: 'http://{addr}'}}]\nroutes:\n  - name: all\n    match: {{path_prefix: /}}\n    upstream: up\n"
    ))
}

/// Reads one request head (and a Content-Length body) from `s`; false at end of stream.
async fn read_request(s: &mut TcpStream, buf: &mut Vec<u8>) -> bool {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .map_or(0, |v| v.trim().parse().unwrap());
            while buf.len() < end + 4 + len {
                let mut chunk = [0u8; 65536];
                let n = s.read(&mut chunk).await.unwrap_or(0);
                if n == 0 {
                    return false;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            buf.drain(..end + 4 + len);
            return true;
        }
        let mut chunk = [0u8; 4096];
        let n = s.read(&mut chunk).await.unwrap_or(0);
        if n == 0 {
            return false;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// An upstream that answers every request on every connection with `answer`, counting the
/// connections it accepted.
async fn scripted(answer: &'static [u8]) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                while read_request(&mut s, &mut buf).await {
                    if s.write_all(answer).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, accepted)
}

async fn get_body(
    gw_addr: SocketAddr,
) -> (
    StatusCode,
    Result<http_body_util::Collected<Bytes>, hyper::Error>,
) {
    let resp = h1_client()
        .request(
            Request::get(format!("http://{gw_addr}/x"))
                .body(full(""))
                .unwrap(),
        )
        .await
        .unwrap();
    (resp.status(), resp.into_body().collect().await)
}

#[tokio::test]
async fn chunked_response_with_trailers_is_decoded_and_the_connection_reused() {
    let (up, accepted) = scripted(
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nx-checksum: 42\r\n\r\n",
    )
    .await;
    let gw = gateway(&cfg_for(up)).await;
    let a = addr(&gw).await;
    // HTTP/2 to the client so the trailers can travel on.
    let resp = h2_client()
        .request(
            Request::get(format!("http://{a}/x"))
                .body(full(""))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let collected = resp.into_body().collect().await.unwrap();
    let trailers = collected.trailers().cloned();
    assert_eq!(collected.to_bytes(), "hello world");
    assert_eq!(
        trailers.and_then(|t| t.get("x-checksum").cloned()),
        Some(http::HeaderValue::from_static("42"))
    );
    for _ in 0..3 {
        let (status, body) = get_body(a).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body.unwrap().to_bytes(), "hello world");
    }
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "one upstream connection, reused"
    );
}

#[tokio::test]
async fn ambiguous_framing_is_502_and_the_connection_dropped() {
    let (up, _) = scripted(
        b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    )
    .await;
    let gw = gateway(&cfg_for(up)).await;
    let (status, body) = get_body(addr(&gw).await).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(
        json(&body.unwrap().to_bytes())["error"]["code"],
        "upstream_reset"
    );
}

#[tokio::test]
async fn informational_responses_are_skipped() {
    let (up, _) = scripted(
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </s.css>\r\n\r\nHTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\nok",
    )
    .await;
    let gw = gateway(&cfg_for(up)).await;
    let (status, body) = get_body(addr(&gw).await).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(body.unwrap().to_bytes(), "ok");
}

#[tokio::test]
async fn close_delimited_body_ends_at_close_and_is_not_reused() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            let mut buf = Vec::new();
            if read_request(&mut s, &mut buf).await {
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\n\r\nuntil the end").await;
            }
            drop(s);
        }
    });
    let gw = gateway(&cfg_for(up)).await;
    let a = addr(&gw).await;
    for _ in 0..2 {
        let (status, body) = get_body(a).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body.unwrap().to_bytes(), "until the end");
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn extra_bytes_after_a_response_keep_the_connection_out_of_the_pool() {
    let (up, accepted) =
        scripted(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokHTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nforged").await;
    let gw = gateway(&cfg_for(up)).await;
    let a = addr(&gw).await;
    for _ in 0..2 {
        let (status, body) = get_body(a).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            body.unwrap().to_bytes(),
            "ok",
            "a smuggled response never reaches a client"
        );
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn early_answer_to_an_upload_reaches_the_client() {
    // The upstream answers 413 after the head, without reading the 4 MiB body, and closes.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let mut buf = vec![0u8; 4096];
            let mut seen = Vec::new();
            while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = s.read(&mut buf).await.unwrap_or(0);
                if n == 0 {
                    break;
                }
                seen.extend_from_slice(&buf[..n]);
            }
            let _ = s
                .write_all(b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 8\r\nconnection: close\r\n\r\ntoo big!")
                .await;
            // Keep reading (and discarding) for a moment so the answer is not lost to a reset.
            let _ = tokio::time::timeout(std::time::Duration::from_millis(200), async {
                while s.read(&mut buf).await.unwrap_or(0) > 0 {}
            })
            .await;
        }
    });
    let gw = gateway(&cfg_for(up)).await;
    let a = addr(&gw).await;
    let resp = h1_client()
        .request(
            Request::post(format!("http://{a}/upload"))
                .body(full(vec![b'x'; 4 << 20]))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        resp.into_body().collect().await.unwrap().to_bytes(),
        "too big!"
    );
}

#[tokio::test]
async fn bytes_after_a_101_belong_to_the_tunnel() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = Vec::new();
        read_request(&mut s, &mut buf).await;
        // The 101 head and the first tunnel bytes in one write.
        s.write_all(b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\nHELLO")
            .await
            .unwrap();
        let mut echo = [0u8; 64];
        let n = s.read(&mut echo).await.unwrap();
        s.write_all(&echo[..n]).await.unwrap();
    });
    let gw = gateway(&cfg_for(up)).await;
    let mut c = TcpStream::connect(addr(&gw).await).await.unwrap();
    c.write_all(b"GET /ws HTTP/1.1\r\nhost: a\r\nupgrade: websocket\r\nconnection: upgrade\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-version: 13\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let read_hello = async {
        while !got.ends_with(b"HELLO") {
            let mut chunk = [0u8; 1024];
            let n = c.read(&mut chunk).await.unwrap();
            assert!(n > 0, "tunnel closed early");
            got.extend_from_slice(&chunk[..n]);
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(10), read_hello)
        .await
        .expect("the bytes sent after the 101 reach the client");
    assert!(got.starts_with(b"HTTP/1.1 101"));
    c.write_all(b"ping").await.unwrap();
    let mut echo = [0u8; 4];
    c.read_exact(&mut echo).await.unwrap();
    assert_eq!(&echo, b"ping");
}

#[tokio::test]
async fn upload_continues_after_an_early_streaming_answer() {
    // The upstream answers as soon as it has the head, then reads the whole (chunked) body and
    // only then ends its answer with the number of bytes it received.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = s.read(&mut buf).await.unwrap();
            seen.extend_from_slice(&buf[..n]);
        }
        s.write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nstart\r\n")
            .await
            .unwrap();
        while !seen.ends_with(b"0\r\n\r\n") {
            let n = s.read(&mut buf).await.unwrap();
            assert!(n > 0, "the gateway stopped sending the request body");
            seen.extend_from_slice(&buf[..n]);
        }
        let got = String::from_utf8_lossy(&seen);
        let done = format!("done:{}", got.contains("part1") && got.contains("part2"));
        s.write_all(format!("{:x}\r\n{done}\r\n0\r\n\r\n", done.len()).as_bytes())
            .await
            .unwrap();
    });
    let gw = gateway(&cfg_for(up)).await;
    let a = addr(&gw).await;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tx.send(Ok(Bytes::from_static(b"part1"))).unwrap();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Channel>();
    let exchange = async {
        let resp = client
            .request(
                Request::post(format!("http://{a}/up"))
                    .body(Channel(rx))
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        // The answer started before the upload ended; now finish the upload.
        tx.send(Ok(Bytes::from_static(b"part2"))).unwrap();
        drop(tx);
        resp.into_body().collect().await.unwrap().to_bytes()
    };
    let body = tokio::time::timeout(std::time::Duration::from_secs(10), exchange)
        .await
        .expect("the exchange completes");
    assert_eq!(body, "startdone:true");
}

#[tokio::test]
async fn idle_connections_closed_by_the_upstream_are_released_without_traffic() {
    // The upstream answers once, then closes its side after a moment; the gateway's idle
    // connection must be closed (its end of the socket) without any further request.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = listener.local_addr().unwrap();
    let (closed_tx, closed_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = Vec::new();
        read_request(&mut s, &mut buf).await;
        s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            .await
            .unwrap();
        s.shutdown().await.unwrap();
        // EOF from the gateway: it closed the pooled connection.
        let mut rest = [0u8; 16];
        let n = s.read(&mut rest).await.unwrap_or(0);
        let _ = closed_tx.send(n);
    });
    // The sweep runs every half idle timeout (default 60 s): a short one keeps the test fast,
    // while still far longer than it takes the upstream to close.
    let cfg = config(&format!(
        "upstreams:\n  - name: up\n    targets: [{{url: 'http://{up}'}}]\n    pool: {{idle_timeout: 400ms}}\nroutes:\n  - name: all\n    match: {{path_prefix: /}}\n    upstream: up\n"
    ));
    let gw = gateway(&cfg).await;
    let (status, body) = get_body(addr(&gw).await).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body.unwrap().to_bytes(), "ok");
    let n = tokio::time::timeout(std::time::Duration::from_secs(5), closed_rx)
        .await
        .expect("the idle connection the upstream closed is released without traffic")
        .unwrap();
    assert_eq!(n, 0);
    drop(gw);
}
