//! Shared helpers of the admin API tests: the catalog, configs, an HTTP client, a fake
//! upstream.
#![allow(dead_code, clippy::unwrap_used)]

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use std::net::SocketAddr;
use std::sync::Arc;

pub fn catalog() -> Arc<torii_plugins::Catalog> {
    static C: std::sync::OnceLock<Arc<torii_plugins::Catalog>> = std::sync::OnceLock::new();
    C.get_or_init(|| Arc::new(torii_plugins::Catalog::builtin().unwrap()))
        .clone()
}

pub fn config(rest: &str) -> String {
    format!(
        "listeners:\n  - name: public\n    bind: 127.0.0.1:0\nadmin:\n  bind: 127.0.0.1:0\naccess_log:\n  enabled: false\nserver:\n  watch_config: false\n{rest}"
    )
}

pub type C = Client<HttpConnector, Full<Bytes>>;

pub fn client() -> C {
    Client::builder(TokioExecutor::new()).build_http()
}

pub struct Resp {
    pub status: StatusCode,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|_| {
            panic!(
                "not JSON ({}): {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }
    pub fn etag(&self) -> String {
        self.headers
            .get("etag")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default()
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

pub async fn call(
    addr: SocketAddr,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> Resp {
    let mut b = Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"));
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let body = body.map(|v| v.to_string()).unwrap_or_default();
    let resp = client()
        .request(b.body(Full::new(Bytes::from(body))).unwrap())
        .await
        .unwrap();
    let (parts, body) = resp.into_parts();
    Resp {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes(),
    }
}

pub async fn get(addr: SocketAddr, path: &str) -> Resp {
    call(addr, Method::GET, path, &[], None).await
}

pub async fn put(addr: SocketAddr, path: &str, body: Value) -> Resp {
    call(addr, Method::PUT, path, &[], Some(body)).await
}

pub async fn post(addr: SocketAddr, path: &str, body: Value) -> Resp {
    call(addr, Method::POST, path, &[], Some(body)).await
}

/// A fake HTTP/1.1 upstream on 127.0.0.1 port 0 whose answer body is `answer(request)`.
async fn fake_upstream(
    answer: fn(&http::Request<hyper::body::Incoming>, &'static str) -> Bytes,
    arg: &'static str,
) -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else { return };
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| async move {
                    Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(answer(
                        &req, arg,
                    ))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    addr
}

/// A fake upstream answering every request with `body`.
pub async fn upstream(body: &'static str) -> SocketAddr {
    fake_upstream(|_, body| Bytes::from_static(body.as_bytes()), body).await
}

/// A fake upstream answering with the value of the request header `header` (empty when
/// absent).
pub async fn echo_header(header: &'static str) -> SocketAddr {
    fake_upstream(
        |req, header| {
            req.headers()
                .get(header)
                .map(|v| Bytes::copy_from_slice(v.as_bytes()))
                .unwrap_or_default()
        },
        header,
    )
    .await
}
