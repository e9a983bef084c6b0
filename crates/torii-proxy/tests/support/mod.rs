//! Test support: fake upstreams on 127.0.0.1 port 0, an in-process gateway, and clients.
#![allow(dead_code, clippy::unwrap_used)]

pub mod redis;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use torii_core::Body;
use torii_proxy::Gateway;

pub type BoxBody =
    http_body_util::combinators::BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

pub fn full(s: impl Into<Bytes>) -> BoxBody {
    Full::new(s.into()).map_err(|e| match e {}).boxed()
}

/// Connection statistics of a fake upstream.
#[derive(Default)]
pub struct ConnStats {
    pub accepted: AtomicUsize,
    pub open: AtomicUsize,
    pub max_open: AtomicUsize,
}

pub struct FakeUpstream {
    pub addr: SocketAddr,
    pub stats: Arc<ConnStats>,
}

struct OpenGuard(Arc<ConnStats>);
impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Starts a fake upstream (HTTP/1.1 with upgrades, or HTTP/2 prior knowledge).
pub async fn upstream<F, Fut>(http2: bool, handler: F) -> FakeUpstream
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<BoxBody>> + Send + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    upstream_on(listener, http2, handler)
}

/// A fake upstream on a listener the test bound itself.
pub fn upstream_on<F, Fut>(
    listener: tokio::net::TcpListener,
    http2: bool,
    handler: F,
) -> FakeUpstream
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<BoxBody>> + Send + 'static,
{
    let addr = listener.local_addr().unwrap();
    let stats = Arc::new(ConnStats::default());
    let st = stats.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            st.accepted.fetch_add(1, Ordering::SeqCst);
            let now = st.open.fetch_add(1, Ordering::SeqCst) + 1;
            st.max_open.fetch_max(now, Ordering::SeqCst);
            let guard = OpenGuard(st.clone());
            let h = handler.clone();
            tokio::spawn(async move {
                let _guard = guard;
                let svc = hyper::service::service_fn(move |req| {
                    let h = h.clone();
                    async move { Ok::<_, std::convert::Infallible>(h(req).await) }
                });
                if http2 {
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                } else {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .with_upgrades()
                        .await;
                }
            });
        }
    });
    FakeUpstream { addr, stats }
}

/// An upstream that echoes what it received as JSON: method, path, headers.
pub async fn echo_upstream(http2: bool) -> FakeUpstream {
    upstream(http2, |req: Request<Incoming>| async move {
        let headers: serde_json::Map<String, serde_json::Value> = req
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), serde_json::Value::String(v.to_str().unwrap_or("").to_string())))
            .collect();
        // Every field as sent, repeated names included (`headers` keeps the last value).
        let fields: Vec<(String, String)> = req
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
            .collect();
        let uri = req.uri().to_string();
        let method = req.method().to_string();
        let version = format!("{:?}", req.version());
        let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        let json = serde_json::json!({"method": method, "uri": uri, "headers": headers, "fields": fields, "version": version, "body_len": body.len()});
        Response::builder().header("content-type", "application/json").header("connection", "x-hop").header("x-hop", "1").body(full(json.to_string())).unwrap()
    })
    .await
}

/// The plugin catalog of a test process (one per gateway in production; sharing it here only
/// shares plugin state between tests that use identical settings, which is harmless).
pub fn catalog() -> Arc<torii_plugins::Catalog> {
    static CATALOG: std::sync::OnceLock<Arc<torii_plugins::Catalog>> = std::sync::OnceLock::new();
    CATALOG
        .get_or_init(|| Arc::new(torii_plugins::Catalog::builtin().unwrap()))
        .clone()
}

/// Loads a config through the test catalog.
pub fn load_str(name: &str, yaml: &str) -> Result<torii_proxy::Loaded, torii_config::Diagnostics> {
    torii_config::load_str(name, yaml, &|_: &str| None, &*catalog())
}

/// Loads a config (panics with the diagnostics when invalid) and starts a gateway.
pub async fn gateway(yaml: &str) -> Arc<Gateway> {
    let loaded = match load_str("test.yaml", yaml) {
        Ok(l) => l,
        Err(d) => panic!("invalid test config:\n{d}"),
    };
    Gateway::start(loaded, catalog()).await.unwrap()
}

/// A config with one `public` listener on port 0, admin on port 0, no access log, and the
/// given upstreams/routes YAML appended.
pub fn config(rest: &str) -> String {
    format!(
        "listeners:\n  - name: public\n    bind: 127.0.0.1:0\nadmin:\n  bind: 127.0.0.1:0\naccess_log:\n  enabled: false\nserver:\n  watch_config: false\n{rest}"
    )
}

pub async fn addr(gw: &Gateway) -> SocketAddr {
    gw.listener_addr("public").await.unwrap()
}

pub fn h1_client() -> Client<HttpConnector, BoxBody> {
    Client::builder(TokioExecutor::new()).build_http()
}

pub fn h2_client() -> Client<HttpConnector, BoxBody> {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http()
}

pub async fn get(
    client: &Client<HttpConnector, BoxBody>,
    url: String,
) -> (http::StatusCode, http::HeaderMap, Bytes) {
    let req = Request::get(url).body(full("")).unwrap();
    let resp = client.request(req).await.unwrap();
    let (parts, body) = resp.into_parts();
    (
        parts.status,
        parts.headers,
        body.collect().await.unwrap().to_bytes(),
    )
}

pub fn json(b: &[u8]) -> serde_json::Value {
    serde_json::from_slice(b).unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(b)))
}

/// Sends raw bytes on a new connection and reads until the peer closes or `limit` bytes.
pub async fn raw(addr: SocketAddr, bytes: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

pub fn unused_body() -> Body {
    Body::Empty
}

/// A body of `total` bytes produced in 64 KiB chunks on demand (never held in memory).
pub struct Generated {
    pub remaining: u64,
    pub chunk: Bytes,
}

impl Generated {
    pub fn new(total: u64) -> Self {
        Self {
            remaining: total,
            chunk: Bytes::from(vec![b'x'; 64 * 1024]),
        }
    }
}

impl http_body::Body for Generated {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        if self.remaining == 0 {
            return std::task::Poll::Ready(None);
        }
        let n = self.remaining.min(self.chunk.len() as u64) as usize;
        self.remaining -= n as u64;
        std::task::Poll::Ready(Some(Ok(http_body::Frame::data(self.chunk.slice(..n)))))
    }
    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.remaining)
    }
}

/// Resident set size of this process in bytes.
pub fn rss() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Turns on the access log of a test config, in a fresh file; returns the config and the file.
pub fn with_access_log(cfg: String, tag: &str) -> (String, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("torii-log-{tag}-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let log = dir.join("access.log");
    let _ = std::fs::remove_file(&log);
    let cfg = cfg.replace(
        "access_log:\n  enabled: false",
        &format!("access_log:\n  path: {}", log.display()),
    );
    (cfg, log)
}

/// Waits for the access-log line containing `needle` (the writer thread flushes asynchronously).
pub async fn log_line(log: &std::path::Path, needle: &str) -> String {
    for _ in 0..500 {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(l) = text.lines().find(|l| l.contains(needle)) {
            return l.to_string();
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!(
        "no access-log line containing {needle:?} in {}",
        log.display()
    );
}

/// A body fed from a channel: each message is one frame; an `Err` breaks the stream.
pub struct Channel(pub tokio::sync::mpsc::UnboundedReceiver<Result<Bytes, ()>>);

impl http_body::Body for Channel {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|m| m.map(|r| r.map(http_body::Frame::data).map_err(|()| "broken".into())))
    }
}

/// GET `path` with one header; the status and headers, the body read and dropped.
pub async fn get_with_header(
    addr: SocketAddr,
    path: &str,
    header: (&str, &str),
) -> (http::StatusCode, http::HeaderMap) {
    let req = Request::get(format!("http://{addr}{path}"))
        .header(header.0, header.1)
        .body(full(""))
        .unwrap();
    let resp = h1_client().request(req).await.unwrap();
    let (parts, body) = resp.into_parts();
    let _ = body.collect().await;
    (parts.status, parts.headers)
}
