//! The production threading model (docs/architecture.md, decision 0015): the gateway on
//! tokio's multi-thread runtime with more than one worker. Many concurrent HTTP/1.1 and HTTP/2
//! requests, with and without bodies, through a small pool: every request is answered with
//! its own response, the pool cap holds, and the pooled connections are reused.
#![allow(clippy::unwrap_used)]

mod support;

use http::{Request, StatusCode};
use http_body_util::BodyExt;
use std::sync::atomic::Ordering;
use support::*;

fn cfg(up: &FakeUpstream, http2: bool) -> String {
    let protocol = if http2 { "http2" } else { "http1" };
    config(&format!(
        "upstreams:\n  - name: up\n    protocol: {protocol}\n    targets: [{{url: 'http://{}'}}]\n    pool: {{max_connections_per_target: 4, queue_timeout: 10s}}\nroutes:\n  - name: r\n    match: {{path_prefix: /}}\n    upstream: up\n",
        up.addr
    ))
}

/// `tasks` concurrent clients, each sending `per_task` requests on its own keep-alive (or
/// HTTP/2) connection: even ones a GET (the flusher's path), odd ones a POST with a body of
/// a size unique to the request, which the echo upstream reports back.
async fn hammer(gw_addr: std::net::SocketAddr, h2: bool, tasks: usize, per_task: usize) {
    let mut joins = Vec::new();
    for t in 0..tasks {
        joins.push(tokio::spawn(async move {
            let client = if h2 { h2_client() } else { h1_client() };
            for i in 0..per_task {
                let n = t * per_task + i;
                let uri = format!("http://{gw_addr}/item/{n}");
                let req = if n.is_multiple_of(2) {
                    Request::get(uri).body(full("")).unwrap()
                } else {
                    Request::post(uri)
                        .body(full(vec![b'x'; n % 997 + 1]))
                        .unwrap()
                };
                let resp = client.request(req).await.unwrap();
                assert_eq!(resp.status(), StatusCode::OK, "request {n}");
                let body = resp.into_body().collect().await.unwrap().to_bytes();
                let v = json(&body);
                // Origin form from an HTTP/1.1 upstream, absolute form from an HTTP/2 one.
                let uri = v["uri"].as_str().unwrap();
                assert!(
                    uri.ends_with(&format!("/item/{n}")),
                    "request {n} got {uri}"
                );
                let len = if n.is_multiple_of(2) { 0 } else { n % 997 + 1 };
                assert_eq!(v["body_len"], len, "request {n}");
            }
        }));
    }
    for j in joins {
        j.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_answer_every_request_with_its_own_response_over_http1_upstreams() {
    let up = echo_upstream(false).await;
    let gw = gateway(&cfg(&up, false)).await;
    let a = addr(&gw).await;
    hammer(a, false, 32, 60).await;
    hammer(a, true, 16, 60).await;
    assert!(up.stats.max_open.load(Ordering::SeqCst) <= 4, "pool cap");
    assert!(
        up.stats.accepted.load(Ordering::SeqCst) <= 16,
        "pooled connections were reused: {} opened for 2880 requests",
        up.stats.accepted.load(Ordering::SeqCst)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_answer_every_request_with_its_own_response_over_http2_upstreams() {
    let up = echo_upstream(true).await;
    let gw = gateway(&cfg(&up, true)).await;
    let a = addr(&gw).await;
    hammer(a, false, 32, 40).await;
    hammer(a, true, 16, 40).await;
    assert!(up.stats.max_open.load(Ordering::SeqCst) <= 4, "pool cap");
}
