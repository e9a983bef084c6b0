//! Upstreams as shared services: one client per named upstream (targets, pools, timeouts),
//! reachable from the proxy and, later, from plugins, composition and mirroring.
//!
//! Upstreams live in the [`Registry`], outside the config snapshot, keyed by name and a
//! fingerprint of their settings: a reload that does not change an upstream keeps the same
//! `Arc<Upstream>` and therefore its pooled connections.

pub mod connect;
pub mod h1;
mod h2;
pub mod h2pool;
pub mod pool;

use connect::Connector;
use http::Response;
use hyper::body::Incoming;
use pool::{Conn, PoolSettings, TargetPool};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use torii_config::schema::{HostHeader, Upstream as UpstreamConfig, UpstreamProtocol};
use torii_core::{Body, ErrorKind, GatewayError};

/// One target of an upstream.
pub struct Target {
    /// `host:port`, as sent in Host when `host_header: target`.
    pub authority: http::HeaderValue,
    /// `host:port` as text, for logs.
    pub name: Arc<str>,
    /// Its pool.
    pub pool: Arc<TargetPool>,
    /// Whether the target speaks TLS (`https://`).
    pub tls: bool,
}

/// A named upstream service.
pub struct Upstream {
    /// The name.
    pub name: Arc<str>,
    /// Targets.
    pub targets: Vec<Target>,
    /// Weighted round-robin schedule (indices into `targets`).
    schedule: Vec<usize>,
    next: AtomicUsize,
    /// Which Host header is sent.
    pub host_header: HostHeader,
    /// HTTP/2 to the targets.
    pub http2: bool,
    /// Time to the response head.
    pub response_headers_timeout: Duration,
    /// Body idle timeout.
    pub body_idle_timeout: Duration,
}

/// A response body from an upstream: read inline from an HTTP/1.1 connection, or an HTTP/2
/// stream driven by hyper.
pub enum ResponseBody {
    /// No body (the head of an upgrade).
    Empty,
    /// HTTP/1.1.
    H1(h1::body::ResponseBody),
    /// HTTP/2.
    /// HTTP/2: the stream's body and its slot on the connection (freed when dropped).
    H2(Incoming, h2pool::Lease),
}

impl http_body::Body for ResponseBody {
    type Data = bytes::Bytes;
    type Error = torii_core::BoxError;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
        match self.get_mut() {
            ResponseBody::Empty => std::task::Poll::Ready(None),
            ResponseBody::H1(b) => std::pin::Pin::new(b).poll_frame(cx),
            ResponseBody::H2(b, _) => std::pin::Pin::new(b).poll_frame(cx).map_err(Into::into),
        }
    }
    fn is_end_stream(&self) -> bool {
        match self {
            ResponseBody::Empty => true,
            ResponseBody::H1(b) => b.is_end_stream(),
            ResponseBody::H2(b, _) => b.is_end_stream(),
        }
    }
    fn size_hint(&self) -> http_body::SizeHint {
        match self {
            ResponseBody::Empty => http_body::SizeHint::with_exact(0),
            ResponseBody::H1(b) => b.size_hint(),
            ResponseBody::H2(b, _) => b.size_hint(),
        }
    }
}

/// A response from an upstream.
pub struct UpstreamResponse {
    /// The response; an HTTP/1.1 body holds its connection until it has ended.
    pub response: Response<ResponseBody>,
    /// The connection taken over by a 101 answer to an upgrade request.
    pub upgraded: Option<h1::Upgraded>,
    /// Which target answered.
    pub target: Arc<str>,
}

pub(crate) fn idempotent(m: &http::Method) -> bool {
    matches!(
        *m,
        http::Method::GET
            | http::Method::HEAD
            | http::Method::OPTIONS
            | http::Method::PUT
            | http::Method::DELETE
            | http::Method::TRACE
    )
}

impl Upstream {
    fn build(
        cfg: &UpstreamConfig,
        pools: &mut HashMap<String, Arc<TargetPool>>,
    ) -> Result<Self, String> {
        let mut targets = Vec::new();
        let mut schedule = Vec::new();
        let http2 = cfg.protocol == UpstreamProtocol::Http2;
        let needs_tls = cfg.targets.iter().any(|t| t.url.tls);
        let client_tls = if needs_tls {
            Some(
                crate::tls::client_config(&cfg.tls, http2)
                    .map_err(|e| format!("upstream {}: {e}", cfg.name))?,
            )
        } else {
            None
        };
        for (i, t) in cfg.targets.iter().enumerate() {
            let authority = t.url.authority();
            // Pools are keyed by everything that shapes a connection, so an upstream whose
            // other settings change keeps its pooled connections.
            let key = format!(
                "{}|{}|{}|{:?}|{:?}|{:?}|{}",
                authority,
                t.url.tls,
                http2,
                cfg.pool,
                cfg.timeouts.connect,
                cfg.tls,
                tls_files_fingerprint(cfg)
            );
            let pool = match pools.get(&key) {
                Some(p) => p.clone(),
                None => {
                    let tls = match (&client_tls, t.url.tls) {
                        (Some(c), true) => Some((
                            c.clone(),
                            cfg.tls
                                .server_name
                                .clone()
                                .unwrap_or_else(|| t.url.host.clone()),
                        )),
                        _ => None,
                    };
                    let connector =
                        Connector::new(&t.url.host, t.url.port, cfg.timeouts.connect.0, tls)
                            .map_err(|e| format!("upstream {}: {e}", cfg.name))?;
                    let settings = PoolSettings {
                        max_connections: cfg.pool.max_connections_per_target as usize,
                        queue_timeout: cfg.pool.queue_timeout.0,
                        idle_timeout: cfg.pool.idle_timeout.0,
                        http2,
                        max_streams: cfg.pool.max_streams_per_connection as usize,
                    };
                    let p = TargetPool::new(connector, settings);
                    pools.insert(key, p.clone());
                    p
                }
            };
            targets.push(Target {
                tls: t.url.tls,
                authority: http::HeaderValue::from_str(&authority)
                    .unwrap_or(http::HeaderValue::from_static("invalid")),
                name: authority.into(),
                pool,
            });
            schedule.extend(std::iter::repeat_n(i, t.weight.min(1000) as usize));
        }
        Ok(Self {
            name: cfg.name.as_str().into(),
            targets,
            schedule,
            next: AtomicUsize::new(0),
            host_header: cfg.host_header,
            http2,
            response_headers_timeout: cfg.timeouts.response_headers.0,
            body_idle_timeout: cfg.timeouts.body_idle.0,
        })
    }

    /// The clocks of one HTTP/1.1 exchange.
    pub(crate) fn timeouts(&self) -> h1::Timeouts {
        h1::Timeouts {
            response_head: self.response_headers_timeout,
            upload_idle: self.body_idle_timeout,
        }
    }

    fn pick(&self) -> Option<&Target> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let i = *self.schedule.get(n % self.schedule.len().max(1))?;
        self.targets.get(i)
    }

    /// Sends a request (its URI already in the form for this upstream's protocol) and waits for
    /// the response head. A reused HTTP/1.1 connection that turns out to be closed by the
    /// upstream (the keep-alive race) is retried once on a fresh connection when the request is
    /// idempotent and has no body, so that race never becomes a client error.
    ///
    /// `req` carries an origin-form URI and the client's Host; the Host is replaced by the
    /// target's when the upstream says `host_header: target`, and for HTTP/2 the URI gets the
    /// scheme and authority (`:authority` from that Host). `added` are the gateway's own
    /// fields, sent after the request's. The head is borrowed, not moved (each move of it is a
    /// copy): its header map is taken (HTTP/2) or emptied (HTTP/1.1, whose connection keeps
    /// the map's storage for the response head).
    pub async fn send(
        &self,
        req: &mut http::request::Parts,
        body: Body,
        upgrade: bool,
        added: &crate::forwarding::Added<'_>,
    ) -> Result<UpstreamResponse, GatewayError> {
        let target = self
            .pick()
            .ok_or_else(|| GatewayError::new(ErrorKind::Internal, "upstream has no targets"))?;
        if self.host_header == HostHeader::Target {
            req.headers
                .insert(http::header::HOST, target.authority.clone());
        }
        if self.http2 {
            added.insert_into(&mut req.headers);
            let host = req.headers.remove(http::header::HOST);
            let authority = host
                .as_ref()
                .and_then(|h| h.to_str().ok())
                .unwrap_or(&target.name);
            let pq = req.uri.path_and_query().map_or("/", |p| p.as_str());
            let scheme = if target.tls { "https" } else { "http" };
            req.uri = format!("{scheme}://{authority}{pq}").parse().map_err(|_| {
                GatewayError::new(ErrorKind::BadRequest, "cannot build the upstream URI")
            })?;
        }
        match target.pool.checkout().await? {
            Conn::H2(lease) => {
                // Boxed: the HTTP/1.1 path's future does not carry the HTTP/2 exchange's size.
                Box::pin(h2::exchange(self, target, req, body, lease)).await
            }
            Conn::H1 { mut conn, reused } => {
                let retry = reused && idempotent(&req.method);
                let writer = conn.prepare(req, body, &target.authority, added);
                let method = &req.method;
                conn.arm(self.timeouts());
                // The write waits until the other ready connections of this runtime have
                // prepared their requests, so the upstream writes of one scheduler pass go out
                // together: an upstream on the same CPU is then woken once per batch instead
                // of once per request (measured in docs/performance.md). A request without a
                // body on plain TCP is written by the thread's flusher task (h1::flush); the
                // rest yield, then write from this task.
                let (conn, writer, write_failed) = match h1::flush::hand_over(conn, writer).await {
                    h1::flush::Handed::Written(conn, writer, failed) => (conn, writer, failed),
                    h1::flush::Handed::Declined(conn, writer) => {
                        tokio::task::yield_now().await;
                        (conn, writer, None)
                    }
                };
                // The exchange is awaited here rather than in a helper future: each nesting
                // level of the request's future is copied when it is built.
                let exchange = |conn: Box<h1::Connection>, writer, write_failed, reused| {
                    conn.send(
                        writer,
                        write_failed,
                        method,
                        target.pool.clone(),
                        reused,
                        upgrade,
                    )
                };
                match exchange(conn, writer, write_failed, reused).await {
                    Err(h1::Failure {
                        error,
                        retry: Some(writer),
                    }) if retry => {
                        tracing::debug!(target = %target.name, %error, "reused connection was closed by the upstream; retrying on a fresh one");
                        let Conn::H1 { mut conn, .. } = target.pool.fresh().await? else {
                            return Err(GatewayError::new(
                                ErrorKind::Internal,
                                "unexpected HTTP/2 connection",
                            ));
                        };
                        conn.arm(self.timeouts());
                        self.answer(exchange(conn, writer, None, false).await, target)
                    }
                    sent => self.answer(sent, target),
                }
            }
        }
    }

    /// The outcome of one HTTP/1.1 exchange.
    fn answer(
        &self,
        sent: Result<h1::Answer, h1::Failure>,
        target: &Target,
    ) -> Result<UpstreamResponse, GatewayError> {
        let (response, upgraded) = match sent {
            Err(mut f) if f.error.kind == ErrorKind::UpstreamTimeout => {
                f.error.detail = format!("{} {}", target.name, f.error.detail);
                return Err(f.error);
            }
            Err(f) => return Err(f.error),
            Ok(h1::Answer::Response(r)) => (r.map(ResponseBody::H1), None),
            Ok(h1::Answer::Upgraded(head, up)) => (head.map(|()| ResponseBody::Empty), Some(up)),
        };
        Ok(UpstreamResponse {
            response,
            upgraded,
            target: target.name.clone(),
        })
    }
}

pub(crate) fn send_error(e: &hyper::Error, target: &Target) -> GatewayError {
    use std::error::Error as _;
    let mut cause: Option<&(dyn std::error::Error + 'static)> = e.source();
    while let Some(c) = cause {
        // The client's request body broke while it was being streamed (too large, stalled,
        // bad chunk, early close): the client's fault, not the upstream's.
        if c.is::<crate::bodies::BodyTooLarge>()
            || c.is::<crate::bodies::BodyIdle>()
            || c.is::<hyper::Error>()
        {
            return client_body_error(c);
        }
        cause = c.source();
    }
    GatewayError::new(ErrorKind::UpstreamReset, format!("{}: {e}", target.name))
}

/// The error for a client request body that failed while being forwarded.
pub(crate) fn client_body_error(e: &(dyn std::error::Error + 'static)) -> GatewayError {
    if e.is::<crate::bodies::BodyTooLarge>() {
        return GatewayError::new(
            ErrorKind::PayloadTooLarge,
            "request body exceeded the limit while streaming",
        );
    }
    if e.is::<crate::bodies::BodyIdle>() {
        return GatewayError::new(ErrorKind::BadRequest, "client request body stalled");
    }
    GatewayError::new(ErrorKind::BadRequest, format!("client request body: {e}"))
}

fn tls_files_fingerprint(cfg: &UpstreamConfig) -> u64 {
    let t = &cfg.tls;
    torii_config::schema::pem::fingerprint(
        [&t.ca, &t.client_cert, &t.client_key]
            .into_iter()
            .flatten()
            .map(String::as_str),
    )
}

/// Upstreams by name, kept across reloads while their settings do not change.
#[derive(Default)]
pub struct Registry {
    inner: Mutex<RegistryInner>,
}

#[derive(Default)]
struct RegistryInner {
    upstreams: HashMap<String, (String, Arc<Upstream>)>,
    pools: HashMap<String, Arc<TargetPool>>,
}

impl Registry {
    /// The upstreams for a new config: unchanged ones are reused (same pools), changed or new
    /// ones are built, removed ones are dropped (their idle connections close).
    /// Nothing changes when any upstream fails to build (e.g. an unreadable CA file).
    pub fn sync(
        &self,
        configs: &[UpstreamConfig],
    ) -> Result<HashMap<String, Arc<Upstream>>, String> {
        let mut inner = self
            .inner
            .lock()
            .map_err(|_| "upstream registry poisoned".to_string())?;
        let mut next = HashMap::new();
        let mut pools = inner.pools.clone();
        for cfg in configs {
            // The contents of CA and client-certificate files count too: a rotated file with
            // the same path must rebuild the client.
            let fingerprint = format!("{cfg:?}|{}", tls_files_fingerprint(cfg));
            let up = match inner.upstreams.get(&cfg.name) {
                Some((fp, up)) if *fp == fingerprint => up.clone(),
                _ => Arc::new(Upstream::build(cfg, &mut pools)?),
            };
            next.insert(cfg.name.clone(), (fingerprint, up));
        }
        // Keep only the pools some upstream still uses.
        pools.retain(|_, p| {
            next.values()
                .any(|(_, u)| u.targets.iter().any(|t| Arc::ptr_eq(&t.pool, p)))
        });
        inner.pools = pools;
        inner.upstreams = next;
        Ok(inner
            .upstreams
            .iter()
            .map(|(k, (_, u))| (k.clone(), u.clone()))
            .collect())
    }
}
