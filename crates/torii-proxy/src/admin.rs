//! The admin listener: `/metrics` (Prometheus text), `/healthz` (the process is up),
//! `/readyz` (200 while serving, 503 once draining) and `/upstreams` (the live state of the
//! upstreams, JSON; `/upstreams/{name}` for one). Loopback by default.

use crate::Shared;
use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// Binds the admin listener and serves it until shutdown.
pub async fn start(addr: SocketAddr, shared: Arc<Shared>) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let shared = shared.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let shared = shared.clone();
                    async move { Ok::<_, std::convert::Infallible>(respond(&req, &shared)) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(Duration::from_secs(10))
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok(bound)
}

fn respond(req: &Request<Incoming>, shared: &Shared) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    let (status, ctype, body) = match path {
        "/metrics" => (
            StatusCode::OK,
            "text/plain; version=0.0.4",
            shared.metrics_text(),
        ),
        "/upstreams" => (
            StatusCode::OK,
            "application/json",
            crate::upstream_status::all_json(&shared.snapshot.load()).to_string(),
        ),
        _ if path.starts_with("/upstreams/") => {
            let snap = shared.snapshot.load();
            match snap.upstreams.get(&path["/upstreams/".len()..]) {
                Some(u) => (
                    StatusCode::OK,
                    "application/json",
                    crate::upstream_status::upstream_json(u).to_string(),
                ),
                None => (
                    StatusCode::NOT_FOUND,
                    "application/json",
                    "{\"error\":\"no such upstream\"}".to_string(),
                ),
            }
        }
        "/redis" => match &shared.snapshot.load().redis {
            Some(r) => (
                StatusCode::OK,
                "application/json",
                crate::upstream_status::redis_json(r).to_string(),
            ),
            None => (
                StatusCode::NOT_FOUND,
                "application/json",
                "{\"error\":\"no redis is configured\"}".to_string(),
            ),
        },
        "/healthz" => (StatusCode::OK, "text/plain", "ok\n".to_string()),
        "/readyz" if shared.is_ready() => (StatusCode::OK, "text/plain", "ready\n".to_string()),
        "/readyz" => (
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "draining\n".to_string(),
        ),
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found\n".to_string(),
        ),
    };
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    if let Ok(v) = header::HeaderValue::from_str(ctype) {
        r.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    r
}
