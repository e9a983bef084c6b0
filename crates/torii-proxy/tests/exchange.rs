//! The exchange stage end to end, through its first plugin, `response_transform`: a route
//! whose chain wraps the upstream call gets its responses' headers and bodies changed; bodies
//! it must not touch (too large, compressed, other media types, HEAD) pass through whole.
#![allow(clippy::unwrap_used)]

mod support;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Incoming;
use support::*;

const INTERNAL: &str = "http://orders.internal:8080";

/// An upstream with one resource per path, each mentioning the internal address.
async fn origin() -> FakeUpstream {
    upstream(false, |req: Request<Incoming>| async move {
        let link = format!("{{\"self\":\"{INTERNAL}/o/1\",\"next\":\"{INTERNAL}/o/2\"}}");
        let b = Response::builder();
        match req.uri().path() {
            "/json" => b
                .header("content-type", "application/json; charset=utf-8")
                .header("etag", "\"v1\"")
                .header("accept-ranges", "bytes")
                .header("x-powered-by", "php")
                .body(full(link)),
            "/big" => b
                .header("content-type", "text/plain")
                .body(full(format!("{INTERNAL} {}", "x".repeat(2000)))),
            "/chunked" => {
                // Unknown length, larger than max_body: read ahead, then streamed on.
                let parts: Vec<
                    Result<http_body::Frame<Bytes>, Box<dyn std::error::Error + Send + Sync>>,
                > = (0..40)
                    .map(|i| {
                        Ok(http_body::Frame::data(Bytes::from(format!(
                            "{INTERNAL}/{i:03}\n"
                        ))))
                    })
                    .collect();
                b.header("content-type", "text/plain")
                    .body(BodyExt::boxed(StreamBody::new(futures_util::stream::iter(
                        parts,
                    ))))
            }
            "/gzip" => b
                .header("content-type", "text/plain")
                .header("content-encoding", "gzip")
                .body(full(link)),
            "/png" => b.header("content-type", "image/png").body(full(link)),
            "/304" => b
                .status(304)
                .header("content-type", "application/json")
                .header("etag", "\"v1\"")
                .body(full("")),
            "/sse" => {
                // One event, then the stream stays open: nothing may wait for its end.
                let first: Vec<
                    Result<http_body::Frame<Bytes>, Box<dyn std::error::Error + Send + Sync>>,
                > = vec![Ok(http_body::Frame::data(Bytes::from(format!(
                    "data: {INTERNAL}\n\n"
                ))))];
                let stream = futures_util::StreamExt::chain(
                    futures_util::stream::iter(first),
                    futures_util::stream::pending(),
                );
                b.header("content-type", "text/event-stream")
                    .body(BodyExt::boxed(StreamBody::new(stream)))
            }
            _ => b.status(404).body(full("")),
        }
        .unwrap()
    })
    .await
}

fn cfg(up: &FakeUpstream) -> String {
    config(&format!(
        "upstreams:\n  - name: app\n    targets: [{{url: 'http://{}'}}]\nroutes:\n  - name: r\n    match: {{path_prefix: /}}\n    upstream: app\n    plugins:\n      response_transform:\n        set_headers: {{x-served-by: torii}}\n        remove_headers: [x-powered-by]\n        replace:\n          - {{from: '{INTERNAL}', to: 'https://api.example.com'}}\n        max_body: 1KiB\n",
        up.addr
    ))
}

#[tokio::test]
async fn a_json_body_is_rewritten_with_its_length_and_etag() {
    let up = origin().await;
    let gw = gateway(&cfg(&up)).await;
    let (s, h, b) = get(&h1_client(), format!("http://{}/json", addr(&gw).await)).await;
    assert_eq!(s, StatusCode::OK);
    let expected =
        "{\"self\":\"https://api.example.com/o/1\",\"next\":\"https://api.example.com/o/2\"}";
    assert_eq!(String::from_utf8_lossy(&b), expected);
    assert_eq!(h["content-length"], expected.len().to_string().as_str());
    assert_eq!(h["etag"], "W/\"v1\"", "the bytes changed: the tag is weak");
    assert_eq!(h["x-served-by"], "torii");
    assert!(!h.contains_key("x-powered-by"));
    assert!(
        !h.contains_key("accept-ranges"),
        "no ranges of a rewritten body"
    );
    // HTTP/2 clients get the same.
    let (_, _, b2) = get(&h2_client(), format!("http://{}/json", addr(&gw).await)).await;
    assert_eq!(b2, b);
}

#[tokio::test]
async fn bodies_it_must_not_touch_pass_through_whole() {
    let up = origin().await;
    let gw = gateway(&cfg(&up)).await;
    let base = format!("http://{}", addr(&gw).await);
    // Larger than max_body by its Content-Length: streamed unchanged.
    let (_, h, b) = get(&h1_client(), format!("{base}/big")).await;
    assert!(b.starts_with(INTERNAL.as_bytes()) && b.len() == INTERNAL.len() + 2001);
    assert_eq!(h["x-served-by"], "torii", "headers still change");
    // Unknown length, larger than max_body: what was read ahead, then the rest.
    let (_, _, b) = get(&h1_client(), format!("{base}/chunked")).await;
    let expected: String = (0..40).map(|i| format!("{INTERNAL}/{i:03}\n")).collect();
    assert_eq!(String::from_utf8_lossy(&b), expected);
    // A content coding, or a media type not listed: untouched.
    for path in ["/gzip", "/png"] {
        let (_, h, b) = get(&h1_client(), format!("{base}{path}")).await;
        assert!(String::from_utf8_lossy(&b).contains(INTERNAL), "{path}");
        assert!(!h.contains_key("etag"));
    }
    // HEAD: headers change, no body is read or invented, and no length that a GET would
    // not have; validators are weak, as a GET's.
    let req = Request::head(format!("{base}/json"))
        .body(full(""))
        .unwrap();
    let resp = h1_client().request(req).await.unwrap();
    assert_eq!(resp.headers()["x-served-by"], "torii");
    assert_eq!(resp.headers()["etag"], "W/\"v1\"");
    assert!(!resp.headers().contains_key("content-length"));
    assert!(
        resp.into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .is_empty()
    );
    // 304: the ETag a client revalidates with is the weak one it was given.
    let (s, h, _) = get(&h1_client(), format!("{base}/304")).await;
    assert_eq!(s, StatusCode::NOT_MODIFIED);
    assert_eq!(h["etag"], "W/\"v1\"");
}

#[tokio::test]
async fn an_event_stream_is_never_held_back() {
    let up = origin().await;
    let gw = gateway(&cfg(&up)).await;
    let req = Request::get(format!("http://{}/sse", addr(&gw).await))
        .body(full(""))
        .unwrap();
    let resp = tokio::time::timeout(std::time::Duration::from_secs(5), h1_client().request(req))
        .await
        .expect("the head is not held until the stream ends")
        .unwrap();
    let mut body = resp.into_body();
    let first = tokio::time::timeout(std::time::Duration::from_secs(5), body.frame())
        .await
        .expect("the first event arrives at once")
        .unwrap()
        .unwrap();
    let data = first.into_data().unwrap();
    assert!(
        String::from_utf8_lossy(&data).contains(INTERNAL),
        "streamed as sent"
    );
}

/// The rewrite is decided on the upstream's headers: removing Content-Encoding in the same
/// plugin does not make a gzip body look like text to rewrite.
#[tokio::test]
async fn the_rewrite_is_decided_on_the_upstreams_headers() {
    let up = origin().await;
    let cfg = cfg(&up).replace(
        "remove_headers: [x-powered-by]",
        "remove_headers: [x-powered-by, content-encoding]",
    );
    let gw = gateway(&cfg).await;
    let (_, h, b) = get(&h1_client(), format!("http://{}/gzip", addr(&gw).await)).await;
    assert!(!h.contains_key("content-encoding"));
    assert!(
        String::from_utf8_lossy(&b).contains(INTERNAL),
        "not rewritten"
    );
}

#[tokio::test]
async fn a_transform_that_changes_nothing_is_a_config_error() {
    let bad = config(
        "upstreams:\n  - name: app\n    targets: [{url: 'http://127.0.0.1:9'}]\nroutes:\n  - name: r\n    match: {path_prefix: /}\n    upstream: app\n    plugins:\n      response_transform:\n        replace: [{from: '', to: x}]\n",
    );
    let err = load_str("bad.yaml", &bad).unwrap_err().to_string();
    assert!(
        err.contains("routes[0].plugins.response_transform.replace[0].from"),
        "{err}"
    );
}
