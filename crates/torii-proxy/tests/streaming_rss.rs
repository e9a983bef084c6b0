//! 1 GiB up and 1 GiB down through the gateway while RSS stays within 64 MiB of idle. Its own
//! test binary, so no other test shares the process while RSS is measured.
#![allow(clippy::unwrap_used)]

mod support;

use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use support::*;

const GIB: u64 = 1024 * 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_gib_each_way_streams_without_buffering() {
    let up = upstream(
        false,
        |req: http::Request<hyper::body::Incoming>| async move {
            if req.uri().path() == "/download" {
                return Response::new(Generated::new(GIB).boxed());
            }
            // Upload: count the bytes as they arrive.
            let mut body = req.into_body();
            let mut n: u64 = 0;
            while let Some(frame) = body.frame().await {
                if let Ok(d) = frame.unwrap().into_data() {
                    n += d.len() as u64;
                }
            }
            Response::new(full(n.to_string()))
        },
    )
    .await;
    let cfg = config(&format!(
        "upstreams:\n  - name: up\n    targets: [{{url: 'http://{}'}}]\nroutes:\n  - name: all\n    match: {{path_prefix: /}}\n    upstream: up\nserver:\n  max_request_body: 2GiB\n  watch_config: false\n",
        up.addr
    ))
    .replace("server:\n  watch_config: false\nupstreams", "upstreams");
    let gw = gateway(&cfg).await;
    let a = addr(&gw).await;
    let client = h1_client();
    // Warm up, then take the idle figure.
    let _ = get(&client, format!("http://{a}/warm")).await;
    let idle = rss();
    let limit = idle + 64 * 1024 * 1024;
    let mut peak = idle;

    let req = Request::post(format!("http://{a}/upload"))
        .body(Generated::new(GIB).boxed())
        .unwrap();
    let resp = client.request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let got = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(std::str::from_utf8(&got).unwrap(), GIB.to_string());
    peak = peak.max(rss());

    let resp = client
        .request(
            Request::get(format!("http://{a}/download"))
                .body(full(""))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.into_body();
    let mut n: u64 = 0;
    let mut next_pause = 0u64;
    while let Some(frame) = body.frame().await {
        if let Ok(d) = frame.unwrap().into_data() {
            n += d.len() as u64;
        }
        // A slow reader: pause every 16 MiB so the gateway has to hold back, not buffer.
        if n >= next_pause {
            next_pause += 16 * 1024 * 1024;
            peak = peak.max(rss());
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
    assert_eq!(n, GIB);
    peak = peak.max(rss());
    assert!(
        peak <= limit,
        "RSS grew from {idle} to {peak} bytes (limit {limit})"
    );
    eprintln!("rss idle={} MiB peak={} MiB", idle >> 20, peak >> 20);
}
