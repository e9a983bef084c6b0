//! The one call API against real sockets on 127.0.0.1: a call leaves its request head as it
//! was, failures say whether a second attempt is safe, and a body kept for replay goes to
//! another target on the second attempt.
#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request};
use http_body_util::BodyExt;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use torii_core::Body;
use torii_upstream::{CallOptions, ExtraFields, Registry, Retry, Upstream};

/// An HTTP/1.1 upstream that answers each request with its request head and body, as text.
async fn echo() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                // Head, then a Content-Length body.
                let (head_end, len) = loop {
                    let n = s.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..i]).to_lowercase();
                        let len = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length: "))
                            .map_or(0, |v| v.trim().parse::<usize>().unwrap());
                        break (i + 4, len);
                    }
                };
                while buf.len() < head_end + len {
                    let n = s.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
                let body = &buf[..head_end + len];
                let resp = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = s.write_all(resp.as_bytes()).await;
                let _ = s.write_all(body).await;
            });
        }
    });
    addr
}

/// An upstream that reads a request and closes without answering.
async fn hangs_up() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf).await;
            drop(s);
        }
    });
    addr
}

/// A port nothing listens on.
async fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

fn upstream(registry: &Registry, targets: &[SocketAddr], extra: &str) -> Arc<Upstream> {
    let targets: Vec<_> = targets
        .iter()
        .map(|a| serde_json::json!({"url": format!("http://{a}")}))
        .collect();
    let mut cfg = serde_json::json!({"name": "up", "targets": targets});
    if extra == "target-host" {
        cfg["host_header"] = "target".into();
    }
    let cfg: torii_config::schema::Upstream = serde_json::from_value(cfg).unwrap();
    registry.build(&[cfg]).unwrap().remove("up").unwrap()
}

fn head(method: &str, uri: &str) -> http::request::Parts {
    let (parts, ()) = Request::builder()
        .method(method)
        .uri(uri)
        .header("host", "client.example")
        .header("x-a", "1")
        .body(())
        .unwrap()
        .into_parts();
    parts
}

async fn text(resp: torii_upstream::UpstreamResponse) -> String {
    let b = resp
        .response
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes();
    String::from_utf8_lossy(&b).into_owned()
}

struct Tag;

impl ExtraFields for Tag {
    fn each(&self, field: &mut dyn FnMut(&HeaderName, &[&[u8]])) {
        static NAME: HeaderName = HeaderName::from_static("x-extra");
        field(&NAME, &[b"a", b"-", b"b"]);
    }
}

#[tokio::test]
async fn a_call_leaves_its_head_as_it_was_and_sends_the_extra_fields() {
    let registry = Registry::default();
    let up = upstream(&registry, &[echo().await], "");
    let head = head("GET", "/path?q=1");
    let before = format!("{head:?}");
    let options = CallOptions {
        extra: Some(&Tag),
        ..CallOptions::default()
    };
    let first = text(up.call(&head, Body::Empty, options).await.unwrap()).await;
    assert!(first.starts_with("GET /path?q=1 HTTP/1.1\r\n"), "{first}");
    assert!(first.contains("host: client.example\r\n"), "{first}");
    assert!(first.contains("x-extra: a-b\r\n"), "{first}");
    // The same head again: nothing was taken from it.
    assert_eq!(format!("{head:?}"), before);
    let second = text(up.call(&head, Body::Empty, options).await.unwrap()).await;
    assert_eq!(first, second);
}

#[tokio::test]
async fn host_header_target_replaces_the_host_without_touching_the_head() {
    let registry = Registry::default();
    let addr = echo().await;
    let up = upstream(&registry, &[addr], "target-host");
    let head = head("GET", "/");
    let got = text(
        up.call(&head, Body::Empty, CallOptions::default())
            .await
            .unwrap(),
    )
    .await;
    assert!(got.contains(&format!("host: {addr}\r\n")), "{got}");
    assert!(!got.contains("client.example"), "{got}");
    assert_eq!(
        head.headers.get("host"),
        Some(&HeaderValue::from_static("client.example"))
    );
}

#[tokio::test]
async fn a_replayed_body_goes_to_another_target_after_a_safe_failure() {
    let registry = Registry::default();
    // The schedule starts at the first target, which refuses connections.
    let up = upstream(&registry, &[closed_port().await, echo().await], "");
    let head = head("POST", "/orders");
    let replay = Body::full(Bytes::from_static(b"{\"id\":7}"))
        .into_replay(1024)
        .await
        .unwrap();
    let first = up.pick().unwrap();
    let err = match up
        .call_target(
            &first,
            &head,
            replay.body().unwrap(),
            CallOptions::default(),
        )
        .await
    {
        Err(e) => e,
        Ok(_) => panic!("the closed port answered"),
    };
    assert_eq!(err.retry, Retry::Safe, "{err}");
    assert!(
        err.retryable(&head.method),
        "a refused connection is safe for POST"
    );
    let second = up.pick_other(&first).unwrap();
    assert_ne!(first.name, second.name);
    let got = text(
        up.call_target(
            &second,
            &head,
            replay.body().unwrap(),
            CallOptions::default(),
        )
        .await
        .unwrap(),
    )
    .await;
    assert!(got.starts_with("POST /orders HTTP/1.1\r\n"), "{got}");
    assert!(got.ends_with("\r\n\r\n{\"id\":7}"), "{got}");
}

#[tokio::test]
async fn a_request_sent_and_unanswered_is_retryable_only_when_idempotent() {
    let registry = Registry::default();
    let up = upstream(&registry, &[hangs_up().await], "");
    let get = head("GET", "/");
    let err = match up.call(&get, Body::Empty, CallOptions::default()).await {
        Err(e) => e,
        Ok(_) => panic!("answered"),
    };
    assert_eq!(err.retry, Retry::Idempotent, "{err}");
    assert!(err.retryable(&http::Method::GET));
    assert!(!err.retryable(&http::Method::POST));
}

#[tokio::test]
async fn unchanged_upstreams_are_reused_while_in_use() {
    let registry = Registry::default();
    let addr = echo().await;
    let a = upstream(&registry, &[addr], "");
    let b = upstream(&registry, &[addr], "");
    assert!(
        Arc::ptr_eq(&a, &b),
        "same settings, same upstream and pools"
    );
    let c = upstream(&registry, &[addr], "target-host");
    assert!(!Arc::ptr_eq(&a, &c));
    assert!(
        Arc::ptr_eq(&a.targets()[0].pool, &c.targets()[0].pool),
        "a change that does not shape connections keeps the pool"
    );
    // Once nothing holds it, the next load builds a new one.
    let weak = Arc::downgrade(&a);
    drop((a, b));
    assert!(weak.upgrade().is_none());
}

#[test]
fn host_leaves_out_the_default_port() {
    let registry = Registry::default();
    let cfg = |url: &str| -> torii_config::schema::Upstream {
        serde_json::from_value(serde_json::json!({"name": "u", "targets": [{"url": url}]})).unwrap()
    };
    for (url, host) in [
        ("http://auth.test", "auth.test"),
        ("http://auth.test:8080", "auth.test:8080"),
        ("https://auth.test", "auth.test"),
        ("https://auth.test:80", "auth.test:80"),
    ] {
        let up = registry.build(&[cfg(url)]).unwrap().remove("u").unwrap();
        assert_eq!(up.targets()[0].authority, host, "{url}");
        assert!(up.targets()[0].name.contains(':'), "logs keep the port");
    }
}
