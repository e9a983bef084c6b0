//! Slow clients must not take the upstream connections other clients need: bodies are read
//! before a connection is taken, and a client that moves too few bytes while the gateway
//! waits on it is cut off.
#![allow(clippy::unwrap_used)]

mod support;

use http::StatusCode;
use http_body_util::BodyExt;
use std::net::SocketAddr;
use std::time::Duration;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn one_upstream(addr: SocketAddr, pool: &str, listener_extra: &str) -> String {
    config(&format!(
        "upstreams:\n  - name: up\n    targets: [{{url: 'http://{addr}'}}]\n    pool: {{{pool}}}\nroutes:\n  - name: all\n    match: {{path_prefix: /}}\n    upstream: up\n"
    ))
    .replace(
        "bind: 127.0.0.1:0\nadmin",
        &format!("bind: 127.0.0.1:0\n{listener_extra}admin"),
    )
}

/// Normal GETs while `during` runs: how many of them got 200, of how many.
async fn normal_traffic_during<F: std::future::Future>(a: SocketAddr, during: F) -> (usize, usize) {
    let client = h1_client();
    let mut during = std::pin::pin!(during);
    let (mut ok, mut all) = (0, 0);
    loop {
        tokio::select! {
            _ = &mut during => return (ok, all),
            (s, _, _) = get(&client, format!("http://{a}/normal")) => {
                all += 1;
                if s == StatusCode::OK {
                    ok += 1;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

#[tokio::test]
async fn a_slow_body_holds_no_upstream_connection() {
    let up = echo_upstream(false).await;
    let gw = gateway(&one_upstream(
        up.addr,
        "max_connections_per_target: 1, queue_timeout: 300ms",
        "",
    ))
    .await;
    let a = addr(&gw).await;
    // Two clients trickle a 30-byte body, one byte every 50 ms.
    let slow = |tag: &'static str| async move {
        let mut s = TcpStream::connect(a).await.unwrap();
        s.write_all(
            format!(
                "POST /{tag} HTTP/1.1\r\nHost: x\r\nContent-Length: 30\r\nConnection: close\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
        for _ in 0..30 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            s.write_all(b"x").await.unwrap();
        }
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.unwrap();
        String::from_utf8_lossy(&out).into_owned()
    };
    let both = async { tokio::join!(slow("a"), slow("b")) };
    let (ok, all) = normal_traffic_during(a, async {
        let (x, y) = both.await;
        for r in [x, y] {
            assert!(r.starts_with("HTTP/1.1 200"), "{r}");
            assert!(r.contains("\"body_len\":30"), "{r}");
        }
    })
    .await;
    assert!(all >= 10, "{all}");
    assert_eq!(
        ok, all,
        "normal requests failed while slow bodies were sent"
    );
}

/// A client with a small receive buffer that sends a request and never reads the answer.
async fn non_reader(a: SocketAddr, path: &str) -> TcpStream {
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let mut s = sock.connect(a).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    s
}

/// Whether the gateway closed `s` within `within` (reading and discarding what it sent).
async fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    let mut buf = vec![0u8; 1 << 20];
    tokio::time::timeout(within, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

#[tokio::test]
async fn clients_that_do_not_read_are_cut_off_and_free_their_upstream_connections() {
    // A backend serving 32 MiB; a pool of 2; two clients that never read.
    let up = upstream(false, |_req| async {
        http::Response::new(Generated::new(32 * 1024 * 1024).boxed())
    })
    .await;
    // Read-ahead off: this is the transfer-rate rule's test (response_spool.rs has the
    // read-ahead's), and read ahead, the normal client would not wait for the cut.
    let gw = gateway(
        &one_upstream(
            up.addr,
            "max_connections_per_target: 2, queue_timeout: 5s",
            "    limits: {min_transfer_rate: 64KiB, transfer_rate_window: 1s}\n",
        )
        .replace(
            "server:\n  watch_config: false\n",
            "server:\n  watch_config: false\n  response_buffering: {enabled: false}\n",
        ),
    )
    .await;
    let a = addr(&gw).await;
    let start = std::time::Instant::now();
    let mut held = vec![non_reader(a, "/big1").await, non_reader(a, "/big2").await];
    // A normal client still gets its (big) answer: it waits for a slot at most until the
    // non-readers are cut, about one window.
    let (s, _, b) = get(&h1_client(), format!("http://{a}/normal")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b.len(), 32 * 1024 * 1024);
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    for s in &mut held {
        assert!(
            closed_within(s, Duration::from_secs(5)).await,
            "non-reader not cut off"
        );
    }
    // Counted, so the cut-offs are never silent.
    let metrics = gw.shared().metrics.render();
    assert!(
        metrics.contains("torii_slow_client_connections_closed_total 2"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_client_that_stops_sending_its_streamed_body_is_cut_off() {
    let up = echo_upstream(false).await;
    let gw = gateway(&one_upstream(
        up.addr,
        "max_connections_per_target: 1, queue_timeout: 5s",
        "    limits: {min_transfer_rate: 1KiB, transfer_rate_window: 1s}\n",
    ))
    .await;
    let a = addr(&gw).await;
    // A chunked body (streamed, not buffered) that stalls after its first chunk.
    let mut s = TcpStream::connect(a).await.unwrap();
    s.write_all(
        b"POST /stall HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
    )
    .await
    .unwrap();
    let start = std::time::Instant::now();
    assert!(
        closed_within(&mut s, Duration::from_secs(5)).await,
        "staller not cut off"
    );
    assert!(
        start.elapsed() < Duration::from_secs(4),
        "{:?}",
        start.elapsed()
    );
    // The only upstream connection is free again.
    let (st, _, _) = get(&h1_client(), format!("http://{a}/after")).await;
    assert_eq!(st, StatusCode::OK);
}

#[tokio::test]
async fn a_slow_upstream_is_not_the_clients_fault() {
    // The upstream takes 2.5 s to answer: no bytes move, but the gateway waits on the
    // upstream, not on the client, so the transfer-rate rule does not apply.
    let up = upstream(false, |_req| async {
        tokio::time::sleep(Duration::from_millis(2500)).await;
        http::Response::new(full("late"))
    })
    .await;
    let gw = gateway(&one_upstream(
        up.addr,
        "max_connections_per_target: 4",
        "    limits: {min_transfer_rate: 1KiB, transfer_rate_window: 500ms}\n",
    ))
    .await;
    let a = addr(&gw).await;
    let (s, _, b) = get(&h1_client(), format!("http://{a}/slow")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(&b[..], b"late");
}

/// Slowloris heads, trickled bodies and non-readers together, at the default settings: a
/// normal client keeps a 100 % success rate.
#[tokio::test]
async fn slow_clients_of_every_kind_at_the_defaults_leave_normal_traffic_alone() {
    let up = upstream(
        false,
        |req: http::Request<hyper::body::Incoming>| async move {
            if req.uri().path() == "/big" {
                http::Response::new(Generated::new(32 * 1024 * 1024).boxed())
            } else {
                let _ = req.into_body().collect().await;
                http::Response::new(full("ok"))
            }
        },
    )
    .await;
    let cfg = config(&format!(
        "upstreams:\n  - name: up\n    targets: [{{url: 'http://{}'}}]\nroutes:\n  - name: all\n    match: {{path_prefix: /}}\n    upstream: up\n",
        up.addr
    ));
    let gw = gateway(&cfg).await;
    let a = addr(&gw).await;
    let mut held = Vec::new();
    for i in 0..30 {
        // Slowloris: a head that never ends.
        let mut s = TcpStream::connect(a).await.unwrap();
        s.write_all(format!("GET /loris{i} HTTP/1.1\r\nHost: x\r\nX-A: ").as_bytes())
            .await
            .unwrap();
        held.push(s);
        // A body that stops after one byte.
        let mut s = TcpStream::connect(a).await.unwrap();
        s.write_all(
            b"POST /body HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n",
        )
        .await
        .unwrap();
        held.push(s);
        // A reader that never reads.
        held.push(non_reader(a, "/big").await);
    }
    let (ok, all) = normal_traffic_during(a, tokio::time::sleep(Duration::from_secs(2))).await;
    // Fewer samples than an idle gateway would give: the debug build is also reading the 30
    // big answers ahead to disk meanwhile.
    assert!(all >= 10, "{all}");
    assert_eq!(ok, all, "normal requests failed beside slow clients");
    drop(held);
}

/// A full-duplex exchange: the upstream answers at once and streams; the client then sends
/// nothing for longer than the rate window, waiting for the upstream's next message. That
/// wait is not the client's: the connection stays up.
#[tokio::test]
async fn a_full_duplex_exchange_that_waits_on_the_upstream_is_not_cut() {
    let up = upstream(
        false,
        |req: http::Request<hyper::body::Incoming>| async move {
            // Answer at once, then echo the request body as it arrives.
            let body = req
                .into_body()
                .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>);
            http::Response::new(body.boxed())
        },
    )
    .await;
    let gw = gateway(&one_upstream(
        up.addr,
        "max_connections_per_target: 4",
        "    limits: {min_transfer_rate: 1KiB, transfer_rate_window: 500ms}\n",
    ))
    .await;
    let a = addr(&gw).await;
    let mut s = TcpStream::connect(a).await.unwrap();
    s.write_all(
        b"POST /duplex HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n",
    )
    .await
    .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains("first") {
        let n = s.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    // Four windows of silence from both sides, then the client carries on.
    tokio::time::sleep(Duration::from_secs(2)).await;
    s.write_all(b"4\r\nlast\r\n0\r\n\r\n").await.unwrap();
    while !String::from_utf8_lossy(&got).contains("last") {
        let n = s.read(&mut buf).await.unwrap();
        assert!(n > 0, "cut off: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
}
