//! Slow clients must not take the upstream connections other clients need: bodies are read
//! before a connection is taken, and a client that moves too few bytes while the gateway
//! waits on it is cut off.
#![allow(clippy::unwrap_used)]

mod support;

use http::StatusCode;
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
