//! The admin listener: `/metrics` (Prometheus text), `/healthz` (the process is up),
//! `/readyz` (200 while serving, 503 once draining), `/upstreams` (the live state of the
//! upstreams, JSON; `/upstreams/{name}` for one), `/redis`, `/cache` (the response cache's
//! state), and `POST /cache/purge` (removes stored responses by URL, URL prefix or tag).
//! The admin API (`/config...`, `/openapi.json`, `/status`) is served by the [`AdminApi`]
//! installed with [`crate::Gateway::install_admin_api`] (the torii-admin crate).
//! Loopback by default; with `admin.tokens`, everything but `/healthz` and `/readyz` needs a
//! bearer token.

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

/// Binds the admin listener and serves it until shutdown, over TLS when `tls` is given
/// (HTTP/1.1 only; client certificates as its `client_auth` says).
pub async fn start(
    addr: SocketAddr,
    shared: Arc<Shared>,
    tls: Option<&torii_config::schema::ListenerTls>,
) -> std::io::Result<SocketAddr> {
    let acceptor = match tls {
        Some(t) => {
            let rt = crate::tls::server_config(t, &[])
                .map_err(|e| std::io::Error::other(format!("admin TLS: {e}")))?;
            let mut config = (*rt.config).clone();
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            Some(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
        }
        None => None,
    };
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let shared = shared.clone();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Some(acceptor) = acceptor else {
                    serve(TokioIo::new(stream), shared, bound, None).await;
                    return;
                };
                let Ok(Ok(tls)) =
                    tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await
                else {
                    return;
                };
                // The handshake verified the certificate against `client_auth.ca`.
                let client = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .and_then(|der| crate::tls::client_cert(der.as_ref()))
                    .map(|c| c.common_name.clone().unwrap_or_else(|| c.subject.clone()));
                serve(TokioIo::new(tls), shared, bound, client.map(Arc::from)).await;
            });
        }
    });
    Ok(bound)
}

/// Serves one admin connection. `client`: the verified client certificate's name.
async fn serve<I>(io: TokioIo<I>, shared: Arc<Shared>, bound: SocketAddr, client: Option<Arc<str>>)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(move |req| {
        let shared = shared.clone();
        let client = client.clone();
        async move {
            Ok::<_, std::convert::Infallible>(route(req, &shared, bound, client.as_deref()).await)
        }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(10))
        .serve_connection(io, svc)
        .await;
}

/// Who made an admin request.
#[derive(Debug, Clone)]
pub struct Principal {
    /// The token's name, or `local` on a loopback listener without tokens.
    pub name: String,
    /// Whether it may change things.
    pub can_write: bool,
}

/// The admin API's handler (installed by the torii-admin crate).
pub trait AdminApi: Send + Sync {
    /// Whether this API serves `path`.
    fn serves(&self, path: &str) -> bool;
    /// The gateway is stopping: release what another process may need (a data directory).
    fn stop(&self) {}
    /// Answers one request of an authorized principal.
    fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        who: Principal,
    ) -> std::pin::Pin<Box<dyn Future<Output = Response<Full<Bytes>>> + Send + 'static>>;
}

async fn route(
    req: Request<Incoming>,
    shared: &Arc<Shared>,
    bound: SocketAddr,
    client: Option<&str>,
) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    if path == "/healthz" || path == "/readyz" {
        return respond(&req, shared);
    }
    let who = match authorize(&req, shared, bound, client) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let safe = matches!(*req.method(), http::Method::GET | http::Method::HEAD);
    if !safe && !who.can_write {
        return json(
            StatusCode::FORBIDDEN,
            serde_json::json!({"error": "forbidden", "message": format!("token `{}` is read_only", who.name)}),
        );
    }
    if let Some(api) = shared.admin_api.get().cloned()
        && api.serves(path)
    {
        return api.handle(req, who).await;
    }
    if path == "/cache/purge" {
        purge(req, shared).await
    } else {
        respond(&req, shared)
    }
}

/// Checks the bearer token against `admin.tokens` (SHA-256 digests compared in constant
/// time). Without tokens, every client of the (loopback) listener is `local`.
///
/// Without tokens, only a loopback socket serves (a reload cannot open a socket bound
/// elsewhere at startup), and only to requests a browser page cannot forge: no `Origin`, no
/// cross-site `Sec-Fetch-Site`, and a loopback `Host` (DNS rebinding names another host).
///
/// With a verified client certificate (mutual TLS) and no tokens, the client is
/// `cert:<common name>` with read and write.
fn authorize(
    req: &Request<Incoming>,
    shared: &Shared,
    bound: SocketAddr,
    client: Option<&str>,
) -> Result<Principal, Box<Response<Full<Bytes>>>> {
    use subtle::ConstantTimeEq;
    let snap = shared.snapshot.load();
    let tokens = &snap.config.admin.tokens;
    if tokens.is_empty() {
        let refuse = |m: &str| {
            Box::new(json(
                StatusCode::FORBIDDEN,
                serde_json::json!({"error": "forbidden", "message": m}),
            ))
        };
        if !bound.ip().is_loopback() && client.is_none() {
            return Err(refuse(
                "the admin listener is bound to a non-loopback address and the running config has no admin.tokens",
            ));
        }
        let get = |n: header::HeaderName| req.headers().get(n).and_then(|v| v.to_str().ok());
        if get(header::ORIGIN).is_some()
            || get(header::HeaderName::from_static("sec-fetch-site"))
                .is_some_and(|s| s != "none" && s != "same-origin")
        {
            return Err(refuse(
                "requests from web pages are refused by an admin listener without tokens",
            ));
        }
        if let Some(name) = client {
            return Ok(Principal {
                name: format!("cert:{name}"),
                can_write: true,
            });
        }
        let host = get(header::HOST).or_else(|| req.uri().host()).unwrap_or("");
        if !loopback_host(host) {
            return Err(refuse(
                "the Host is not a loopback name (127.0.0.1, [::1] or localhost)",
            ));
        }
        return Ok(Principal {
            name: "local".into(),
            can_write: true,
        });
    }
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        })
        .filter(|t| !t.is_empty() && t.len() <= 1024);
    let unauthorized = |m: &str| {
        let mut r = json(
            StatusCode::UNAUTHORIZED,
            serde_json::json!({"error": "unauthorized", "message": m}),
        );
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer realm=\"torii-admin\""),
        );
        r
    };
    let Some(token) = presented else {
        return Err(Box::new(unauthorized(
            "send `Authorization: Bearer <admin token>`",
        )));
    };
    let digest = torii_plugins::consumers::format_key_hash(token.as_bytes());
    let found = tokens.iter().find(|t| {
        bool::from(
            t.token_hash
                .to_ascii_lowercase()
                .as_bytes()
                .ct_eq(digest.as_bytes()),
        )
    });
    match found {
        Some(t) => Ok(Principal {
            name: t.name.clone(),
            can_write: t.role == torii_config::schema::AdminRole::ReadWrite,
        }),
        None => Err(Box::new(unauthorized("the admin token is not valid"))),
    }
}

/// `127.0.0.1`, `[::1]` or `localhost`, with or without a port.
fn loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(h, _)| h),
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn respond(req: &Request<Incoming>, shared: &Shared) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    if !matches!(*req.method(), http::Method::GET | http::Method::HEAD) {
        let mut r = json(
            StatusCode::METHOD_NOT_ALLOWED,
            serde_json::json!({"error": "method_not_allowed", "message": "use GET"}),
        );
        r.headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
        return r;
    }
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
        "/cache" => match crate::upstream_status::cache_json(&shared.snapshot.load()) {
            Some(v) => (StatusCode::OK, "application/json", v.to_string()),
            None => (
                StatusCode::NOT_FOUND,
                "application/json",
                "{\"error\":\"no route caches\"}".to_string(),
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

fn json(status: StatusCode, v: serde_json::Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(v.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    r
}

/// Largest purge request body.
const PURGE_BODY_LIMIT: usize = 64 * 1024;

/// `POST /cache/purge` with one of `{"url": "host/path?query"}`, `{"prefix": "host/path"}` or
/// `{"tag": "name"}`, and optionally `"route": "name"` (only that route's cache). A URL may
/// start with `http://` or `https://`; its host is compared in lowercase. Answers
/// `{"purged": N}`.
async fn purge(req: Request<Incoming>, shared: &Shared) -> Response<Full<Bytes>> {
    use http_body_util::BodyExt;
    use serde_json::json;
    if req.method() != http::Method::POST {
        let mut r = json(StatusCode::METHOD_NOT_ALLOWED, json!({"error": "use POST"}));
        r.headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static("POST"));
        return r;
    }
    let snap = shared.snapshot.load();
    let Some(memory) = snap.cache.clone() else {
        return json(
            StatusCode::NOT_FOUND,
            json!({"error": "no route has the cache plugin"}),
        );
    };
    let body = match http_body_util::Limited::new(req.into_body(), PURGE_BODY_LIMIT)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return json(
                StatusCode::PAYLOAD_TOO_LARGE,
                json!({"error": "the body is over 64 KiB"}),
            );
        }
    };
    let bad = |m: &str| json(StatusCode::BAD_REQUEST, json!({ "error": m }));
    let Ok(serde_json::Value::Object(v)) = serde_json::from_slice::<serde_json::Value>(&body)
    else {
        return bad("expected a JSON object such as {\"tag\": \"products\"}");
    };
    if let Some(k) = v
        .keys()
        .find(|k| !["url", "prefix", "tag", "route"].contains(&k.as_str()))
    {
        return bad(&format!(
            "unknown key `{k}`: use url, prefix or tag, and route"
        ));
    }
    let text = |k: &str| v.get(k).and_then(|x| x.as_str());
    let selector = match (text("url"), text("prefix"), text("tag")) {
        (Some(u), None, None) => torii_cache::Selector::Url(normalize(u)),
        (None, Some(p), None) => torii_cache::Selector::Prefix(normalize(p)),
        (None, None, Some(t)) => torii_cache::Selector::Tag(t.to_string()),
        _ => return bad("give exactly one of `url`, `prefix` or `tag`, as a string"),
    };
    if v.get("route").is_some_and(|r| !r.is_string()) {
        return bad("`route` is a route name");
    }
    let scope = text("route").map(|r| format!("route:{r}"));
    let purge = torii_cache::Purge { selector, scope };
    match &snap.cache_shared {
        None => json(StatusCode::OK, json!({ "purged": memory.purge(&purge) })),
        // Every node: a record in Redis that each reads (and a ban on the objects there).
        Some(t) => match t.purge(purge).await {
            (n, Ok(())) => json(StatusCode::OK, json!({ "purged": n, "shared": true })),
            (n, Err(e)) => json(
                StatusCode::SERVICE_UNAVAILABLE,
                json!({ "purged": n, "shared": false, "error": format!("purged on this node only: {e}") }),
            ),
        },
    }
}

/// A URL as the cache names responses: no scheme, the host in lowercase without its port.
fn normalize(u: &str) -> String {
    let u = u
        .strip_prefix("http://")
        .or_else(|| u.strip_prefix("https://"))
        .unwrap_or(u);
    let (host, rest) = u.split_at(u.find('/').unwrap_or(u.len()));
    let host = match host.strip_prefix('[') {
        // [v6]:port
        Some(v6) => v6.split(']').next().unwrap_or(v6),
        None => host.split(':').next().unwrap_or(host),
    };
    format!("{}{rest}", host.to_ascii_lowercase())
}
