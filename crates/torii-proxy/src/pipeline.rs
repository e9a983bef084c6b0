//! The request pipeline. Stages, in order:
//!
//! 1. **edge** (before routing): request id, effective host, path normalisation, client
//!    address, request-size precheck. Builds the [`RequestContext`].
//! 2. **route**: router lookup (404 / 405), then the matched route's stage (plugins plug in here).
//! 3. **action**: direct response, or proxy to the route's upstream (rewrite, forwarding
//!    headers, streaming both ways).
//! 4. **response**: hop-by-hop removal, `X-Request-Id`, and the access log written when the
//!    response body has ended.
//!
//! Every failure is a [`GatewayError`] turned into a response in one place.

use crate::bodies::{OnEnd, Outcome, Outgoing};
use crate::conn::{ConnInfo, TlsConn};
use crate::exchange::{Arounds, Plan};
use crate::forwarding;
use crate::snapshot::{Action, Arm, CompiledRoute, Rewrite, Snapshot};
use crate::{Shared, access_log::Record};
use http::{HeaderValue, Request, Response, header};
use hyper::body::Incoming;
use std::sync::Arc;
use std::time::Instant;
use torii_core::{Body, ClientAddr, ErrorKind, GatewayError, RequestContext, RequestId};
use torii_router::{Lookup, RequestView};

use forwarding::X_REQUEST_ID;

fn is_grpc(headers: &http::HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// Handles one request. Never fails: errors become responses.
pub async fn handle(
    req: Request<Incoming>,
    conn: Arc<ConnInfo>,
    shared: Arc<Shared>,
) -> Result<Response<Body>, std::convert::Infallible> {
    let start = Instant::now();
    // The request head stays here, in this future, and every stage borrows it: a `Request`
    // moved from stage to stage is copied (a `memcpy` of its ~260 bytes) at each move.
    let (mut parts, body) = req.into_parts();
    let in_flight = crate::io::InFlight::begin(conn.activity.clone());
    let snap = shared.snapshot.load_full();
    let request_id = parts
        .headers
        .get(&X_REQUEST_ID)
        .and_then(RequestId::from_client)
        .unwrap_or_else(|| {
            let id = uuid::Uuid::new_v4();
            let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
            RequestId(
                HeaderValue::from_str(id.hyphenated().encode_lower(&mut buf))
                    .unwrap_or(HeaderValue::from_static("-")),
            )
        });
    let grpc = is_grpc(&parts.headers);
    let method = parts.method.clone();
    // Only build the logged path when the log is on (no per-request work for nothing).
    let log_path = if shared.access_log.enabled() {
        let pq = parts.uri.path_and_query().map_or("", |p| p.as_str());
        crate::access_log::redact(pq, &snap.redact)
    } else {
        String::new()
    };
    let listener = conn.listener.load().name.clone();
    let view = snap.listeners.get(&*listener);
    let client = match view {
        Some(v) => forwarding::client_addr(conn.peer, &parts.headers, &v.trusted),
        None => forwarding::canonical(conn.peer.ip()),
    };
    let info = LogInfo {
        method,
        route_idx: None,
        arm: 0,
        path: log_path,
        body: None,
        upstream: None,
        upstream_latency_ms: None,
        logged: shared.access_log.enabled(),
        plugins: Default::default(),
    };

    // If the client goes away, hyper drops this future (which cancels the upstream request);
    // the guard then logs the exchange as a client abort. Boxed once, here: from now on it
    // moves (into the guard, out of it, into the response body) as a pointer, not a copy.
    let mut guard = PendingLog(Some(Box::new(LogOnEnd {
        snap: snap.clone(),
        shared,
        ctx: RequestContext::new(request_id, ClientAddr(client), conn.peer, listener, start),
        info,
        status: 499,
        _in_flight: in_flight,
    })));
    let Some(end) = guard.0.as_mut() else {
        return Ok(Response::new(Body::Empty));
    };
    end.ctx.client_cert = conn.tls.as_ref().and_then(|t| t.client_cert.clone());
    let result = route_and_serve(
        &mut parts,
        body,
        &conn,
        &snap,
        view,
        &mut end.ctx,
        &mut end.info,
    )
    .await;
    let Some(mut end) = guard.0.take() else {
        return Ok(Response::new(Body::Empty));
    };
    let ctx = &end.ctx;
    let route_idx = end.info.route_idx;
    let route = route_idx.and_then(|i| snap.routes.get(i));
    let mut response = match result {
        Ok(r) => r,
        Err(e) => {
            if e.kind.source() == torii_core::ErrorSource::Upstream {
                tracing::warn!(request_id = ctx.request_id.as_str(), route = ?ctx.route, error = %e, "upstream error");
                if let Some(a) = route.and_then(|r| r.action.arm(end.info.arm)) {
                    a.errors.record(e.kind.code());
                }
            } else {
                tracing::debug!(request_id = ctx.request_id.as_str(), error = %e, "request rejected");
            }
            e.into_response(ctx.request_id.as_str(), grpc)
                .map(Outgoing::Gateway)
        }
    };
    // A deprecated route says so on every answer, its 410 included.
    if let Some(d) = route.and_then(|r| r.deprecation.as_deref()) {
        d.decorate(response.headers_mut());
    }
    // Response phase of the plugins that ran, on upstream and gateway-made responses alike.
    if let Some(r) = route
        && end.info.plugins.any()
    {
        let (mut parts, body) = response.into_parts();
        r.chain.on_response(&mut parts, ctx, &end.info.plugins);
        response = Response::from_parts(parts, body);
    }
    // Fields the request phase decided (rate-limit reports), on every answer.
    if !ctx.response_fields.is_empty() {
        ctx.apply_response_fields(response.headers_mut());
    }
    response
        .headers_mut()
        .insert(X_REQUEST_ID.clone(), ctx.request_id.0.clone());
    end.status = response.status().as_u16();
    Ok(response.map(|b| Body::boxed(crate::bodies::observed(b, end))))
}

/// Logs a request whose handler was dropped before it produced a response (client gone).
struct PendingLog(Option<Box<LogOnEnd>>);

impl Drop for PendingLog {
    fn drop(&mut self) {
        if let Some(end) = self.0.take() {
            end.on_end(0, Outcome::ClientAbort);
        }
    }
}

struct LogInfo {
    method: http::Method,
    /// Index of the matched route in the snapshot.
    route_idx: Option<usize>,
    /// Which of the route's upstreams it went to (a `split` route has several).
    arm: usize,
    path: String,
    /// The forwarded request body, when there is one: its bytes actually read (the logged
    /// `bytes_in`, not the Content-Length, so a chunked upload is counted too) and its turn.
    body: Option<Arc<crate::bodies::BodyWatch>>,
    upstream: Option<Arc<str>>,
    upstream_latency_ms: Option<f64>,
    /// Whether the access log is on (and wants the upstream's latency).
    logged: bool,
    /// Which plugins of the route's chain ran their request phase.
    plugins: torii_plugins::Progress,
}

struct LogOnEnd {
    snap: Arc<Snapshot>,
    shared: Arc<Shared>,
    ctx: RequestContext,
    info: LogInfo,
    status: u16,
    /// Ends when the response has (dropped last, after the log line).
    _in_flight: crate::io::InFlight,
}

impl OnEnd for Box<LogOnEnd> {
    fn on_end(self, bytes_out: u64, outcome: Outcome) {
        let elapsed = self.ctx.start.elapsed();
        // A client that went away is logged as 499 (nginx's convention).
        let status = if outcome == Outcome::ClientAbort {
            499
        } else {
            self.status
        };
        match self.info.route_idx.and_then(|i| self.snap.routes.get(i)) {
            Some(r) => r.metrics.record(status, elapsed.as_secs_f64()),
            None => self.snap.unrouted.record(status, elapsed.as_secs_f64()),
        }
        let log = &self.shared.access_log;
        if !log.enabled() {
            return;
        }
        let start_time = std::time::SystemTime::now() - elapsed;
        let rec = Record {
            time: crate::access_log::rfc3339(start_time),
            request_id: self.ctx.request_id.as_str().to_string(),
            listener: self.ctx.listener.clone(),
            route: self.ctx.route.clone(),
            method: self.info.method.to_string(),
            path: self.info.path,
            status,
            bytes_in: self.info.body.as_ref().map_or(0, |b| b.read()),
            bytes_out,
            client: self.ctx.client.0.to_string(),
            consumer: self.ctx.consumer.as_ref().map(|c| c.name.clone()),
            auth: self.ctx.identity.as_ref().map(|i| i.scheme),
            upstream: self.info.upstream,
            upstream_latency_ms: self.info.upstream_latency_ms,
            total_latency_ms: crate::access_log::millis(elapsed),
            outcome: outcome.as_str(),
        };
        log.write(&rec);
    }
}

async fn route_and_serve(
    req: &mut http::request::Parts,
    body: Incoming,
    conn: &ConnInfo,
    snap: &Arc<Snapshot>,
    view: Option<&crate::snapshot::ListenerView>,
    ctx: &mut RequestContext,
    info: &mut LogInfo,
) -> Result<Response<Outgoing>, GatewayError> {
    // --- edge stage ---
    // Only a chunked HTTP/1.1 body has no exact length: bodiless and Content-Length requests
    // skip the Transfer-Encoding lookup.
    if http_body::Body::size_hint(&body).exact().is_none() {
        crate::framing::check_request_transfer_coding(&req.headers)?;
    }
    let host = forwarding::effective_host(&req.uri, &req.headers, req.version)?;
    let raw_path = req.uri.path();
    let path = torii_router::normalize_path(raw_path)
        .map_err(|e| GatewayError::new(ErrorKind::BadRequest, format!("path: {e}")))?;
    // A request for a host the connection's certificate does not cover (connection reuse
    // across names, or a mismatched SNI) is misdirected (RFC 9110 15.5.20).
    if let Some(TlsConn {
        sni: Some(sni),
        store,
        ..
    }) = &conn.tls
        && !host.is_empty()
        && !host.eq_ignore_ascii_case(sni)
        && !store.host_matches_sni(&host, sni)
    {
        return Err(GatewayError::new(
            ErrorKind::MisdirectedRequest,
            format!("host {host} is not covered by the certificate for SNI {sni}"),
        ));
    }
    ctx.host = host;
    ctx.path = path.into_owned();
    if let Some(len) = req.headers.get(header::CONTENT_LENGTH) {
        let len: u64 = len
            .to_str()
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| GatewayError::new(ErrorKind::BadRequest, "invalid Content-Length"))?;
        if len > snap.max_body {
            return Err(GatewayError::new(
                ErrorKind::PayloadTooLarge,
                format!("Content-Length {len} exceeds {}", snap.max_body),
            ));
        }
    }

    // The gateway's identity-token keys, for services that verify its tokens.
    if let Some(signer) = &snap.signer
        && (req.method == http::Method::GET || req.method == http::Method::HEAD)
        && ctx.path == signer.jwks().0
    {
        let mut resp = Response::new(if req.method == http::Method::HEAD {
            Body::Empty
        } else {
            Body::full(signer.jwks().1.clone())
        });
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/jwk-set+json"),
        );
        h.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=300"),
        );
        return Ok(resp.map(Outgoing::Gateway));
    }

    // --- route stage ---
    let view = view.ok_or_else(|| GatewayError::new(ErrorKind::NoRoute, "listener removed"))?;
    let rv = RequestView {
        host: &ctx.host,
        path: &ctx.path,
        method: &req.method,
        headers: &req.headers,
        query: req.uri.query(),
        version: snap.versioning.as_ref().and_then(|v| v.of(req)),
    };
    let mut preflight_methods = None;
    let (idx, params) = match view.router.lookup(&rv) {
        Lookup::Found(m) => (*m.value, params_of(&m.params)),
        Lookup::MethodNotAllowed { allow } => {
            // A CORS preflight is routed by the method it asks about, so a route whose chain
            // answers preflights never sends 405 to one (it need not list OPTIONS). When no
            // route of the path allows that method, a route of the path that answers
            // preflights answers it anyway, listing only the methods the path allows.
            match preflight_lookup(req, &rv, view, snap, &allow) {
                Some((idx, params, fallback)) => {
                    if fallback {
                        preflight_methods =
                            Some(torii_core::PreflightMethods(allow.as_slice().to_vec()));
                    }
                    (idx, params)
                }
                None => {
                    return Err(GatewayError::new(
                        ErrorKind::MethodNotAllowed(allow.to_header_value()),
                        "method not allowed",
                    ));
                }
            }
        }
        Lookup::NotFound if rv.version.is_none() && snap.versioning.is_some() => {
            return Err(GatewayError::new(
                ErrorKind::VersionRequired,
                format!("no version named for {} {}", ctx.host, ctx.path),
            ));
        }
        Lookup::NotFound => {
            return Err(GatewayError::new(
                ErrorKind::NoRoute,
                format!("no route for {} {}", ctx.host, ctx.path),
            ));
        }
    };
    let route = snap
        .routes
        .get(idx)
        .ok_or_else(|| GatewayError::new(ErrorKind::Internal, "route index out of range"))?;
    ctx.route = Some(route.name.clone());
    info.route_idx = Some(idx);
    ctx.params = params;
    if let Some(d) = &route.deprecation {
        d.check()?;
    }
    if let Some(m) = preflight_methods {
        ctx.extensions.insert(m);
    }

    // --- plugins ---
    // Client-sent identity headers (both spellings) go first, whatever the route does, and
    // so do headers the client names in `Connection` (or it could have the final hop-by-hop
    // removal delete headers the gateway adds). Authorization is a singleton field: two of
    // them would let one be checked and the other forwarded.
    forwarding::drop_connection_listed(&mut req.headers);
    snap.identity.strip(&mut req.headers);
    if req
        .headers
        .get_all(header::AUTHORIZATION)
        .iter()
        .nth(1)
        .is_some()
    {
        return Err(GatewayError::new(
            ErrorKind::BadRequest,
            "more than one Authorization header",
        ));
    }
    if route.chain.has_phases() {
        let answered = route.chain.on_request(req, ctx, &mut info.plugins).await?;
        if let Some(resp) = answered {
            return Ok(resp.map(Outgoing::Gateway));
        }
    }
    // The upstream (one of a split's), chosen once the plugins know who asks.
    let arm = route.action.pick(req, ctx);
    info.arm = arm.unwrap_or(0);
    let arm = arm.and_then(|i| route.action.arm(i));
    // A proxied request whose head no exchange plugin reads gets its identity fields from the
    // upstream writer, straight from the consumer's values (`Added::with_identity`); others
    // get them in the header map, where the stages see them (a cache honouring
    // `Vary: X-Consumer-Id` must).
    let identity_by_writer = route.stages.is_empty()
        && matches!(route.action, Action::Proxy(_) | Action::Split(_))
        && !route.chain.is_empty();
    if !route.chain.is_empty()
        && let Some(c) = &ctx.consumer
    {
        if identity_by_writer {
            snap.identity.clear_for(&mut req.headers, c);
        } else {
            snap.identity.apply(&mut req.headers, c);
        }
        if let (Some(signer), Some(aud)) = (&snap.signer, arm.and_then(|a| a.audience.as_ref()))
            && let Some(token) = signer.token(c, ctx.identity.as_deref(), aud)
        {
            req.headers.insert(signer.header().clone(), token);
        }
    }

    // --- action ---
    match &route.action {
        Action::Direct {
            status,
            headers,
            body,
        } => {
            let mut resp = Response::new(if req.method == http::Method::HEAD {
                Body::Empty
            } else {
                Body::full(body.clone())
            });
            *resp.status_mut() = *status;
            *resp.headers_mut() = headers.clone();
            Ok(resp.map(Outgoing::Gateway))
        }
        Action::Compose(composition) => {
            let body = if http_body::Body::is_end_stream(&body) {
                Body::Empty
            } else {
                Body::from(body)
            };
            // Boxed: routes that proxy do not carry the composition's future.
            let resp = if route.stages.is_empty() {
                Box::pin(composition.run(req, body, ctx)).await
            } else {
                let call = crate::exchange::ComposeCall { composition, ctx };
                torii_core::Next::new(&route.stages, &call)
                    .run(req, body, ctx)
                    .await
            };
            resp.map(|r| r.map(Outgoing::Gateway))
        }
        Action::Proxy(_) | Action::Split(_) => {
            let Some(Arm {
                upstream, errors, ..
            }) = arm
            else {
                return Err(GatewayError::new(ErrorKind::Internal, "no upstream chosen"));
            };
            let head = req.method == http::Method::HEAD;
            let record = |e: &GatewayError| errors.record(e.kind.code());
            // The upstream call is awaited here, not inside a helper future: each nesting
            // level of the request's future is copied when it is built.
            let (mut up_body, upgrade, mut added) =
                proxy_request(req, body, conn, snap, route, upstream, ctx, view, info)?;
            if identity_by_writer && let Some(c) = ctx.consumer.as_deref() {
                added.with_identity(&snap.identity, c);
            }
            // A small body is read whole before an upstream connection is taken: a client
            // that trickles it then holds no upstream connection (its body idle timeout and
            // the listener's transfer-rate rule police it). Only bodies with a known length,
            // so streams (chunked uploads, gRPC) keep flowing both ways.
            if http_body::Body::size_hint(&up_body)
                .exact()
                .is_some_and(|n| n > 0 && n <= snap.body_buffer)
            {
                // Boxed: requests that buffer nothing do not carry this future's size.
                up_body = Box::pin(up_body.into_replay(snap.body_buffer as usize))
                    .await
                    .map_err(|e| GatewayError::client_body(&*e))?
                    .into_body();
            }
            let affinity = torii_upstream::Affinity {
                client: Some(ctx.client.0),
                consumer: ctx.consumer.as_deref().map(|c| &*c.name),
            };
            let options = torii_upstream::CallOptions {
                extra: Some(&added),
                upgrade: upgrade.is_some(),
                affinity: &affinity,
                policy: &route.call,
            };
            // The stages decide first, without waiting (`Plugin::before_exchange`), on the
            // head as it will be sent (a cache's key must see the fields the forwarding step
            // removed, as its full path does). A stage's answer (a cache hit) ends here.
            // Those that only need to see the response head (`Around`) leave the call direct,
            // as on a route without stages; the first that needs more runs the stack from
            // there. Upgrades are tunnels, not exchanges: they skip the stages.
            let stages = &route.stages;
            let (around, plan) = if stages.is_empty() || upgrade.is_some() {
                (Arounds::default(), Plan::Direct)
            } else {
                Arounds::plan(stages, req, ctx)
            };
            let plan = match plan {
                Plan::Answer(r) => {
                    let resp = around.finish(Ok(r), stages, req, ctx);
                    return match &route.fallback {
                        Some(f) => f.mask(resp, head, record),
                        None => resp,
                    };
                }
                other => other,
            };
            if let Plan::Wrap(from) = plan {
                // The stack's future is boxed by its first stage: routes without stages do
                // not carry its size.
                let call = crate::exchange::UpstreamCall::new(
                    upstream,
                    options,
                    conn,
                    info.body.clone(),
                    info.logged,
                    snap.spool.as_ref(),
                );
                let resp = call.run(&stages[from..], req, up_body, ctx).await;
                if let Some((target, latency)) = call.answered() {
                    info.upstream = Some(target);
                    info.upstream_latency_ms = latency;
                }
                let resp = around.finish(resp, stages, req, ctx);
                return match &route.fallback {
                    Some(f) => f.mask(resp, head, record),
                    None => resp,
                };
            }
            // The upstream's latency is only read by the access log: no clock reads for nothing.
            let sent = info.logged.then(Instant::now);
            // Boxed: a request answered without an upstream call (a cache hit, a plugin's
            // answer) does not build, move and copy a future the size of this call.
            let mut resp = match Box::pin(upstream.call(req, up_body, options)).await {
                Ok(r) => r,
                Err(e) => {
                    return match &route.fallback {
                        Some(f) => f.mask(Err(e.into()), head, record),
                        None => Err(e.into()),
                    };
                }
            };
            // The stages see the answer before a fallback may replace it, as through the
            // stack (a cache counts it; an unsafe method's success invalidates).
            let status = resp.response.status();
            around.after(stages, req, status, resp.response.headers_mut(), ctx);
            if let Some(f) = &route.fallback
                && upgrade.is_none()
                && f.replaces(status)
            {
                // The upstream's failed answer is dropped unread.
                return Ok(f.answer(head));
            }
            // The response head is here: the request body's waits are no longer the client's.
            if let Some(b) = &info.body {
                b.answered(&conn.activity);
            }
            info.upstream = Some(resp.target.clone());
            info.upstream_latency_ms = sent.map(|t| crate::access_log::millis(t.elapsed()));
            Ok(proxy_response(
                resp,
                upgrade,
                conn,
                upstream,
                snap.spool.as_ref(),
            ))
        }
    }
}

/// Route parameters as the context keeps them.
type RouteParams = Vec<(Arc<str>, String)>;

fn params_of(params: &torii_router::Params<'_, '_>) -> RouteParams {
    params
        .iter_shared()
        .map(|(k, v)| (k.clone(), v.to_string()))
        .collect()
}

/// For a CORS preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`), the
/// route the actual request would take, if its chain answers preflights. Otherwise the first
/// route of the path (by the methods in `allow`) whose chain answers preflights, marked as a
/// fallback (`true`): the preflight is answered there, never with 405, and the browser
/// refuses the method itself.
fn preflight_lookup(
    req: &http::request::Parts,
    rv: &RequestView<'_>,
    view: &crate::snapshot::ListenerView,
    snap: &Snapshot,
    allow: &torii_router::AllowedMethods,
) -> Option<(usize, RouteParams, bool)> {
    let h = &req.headers;
    if req.method != http::Method::OPTIONS || !h.contains_key(header::ORIGIN) {
        return None;
    }
    let asked = h.get(header::ACCESS_CONTROL_REQUEST_METHOD)?;
    let answering = |method: &http::Method| {
        let view_as = RequestView { method, ..*rv };
        match view.router.lookup(&view_as) {
            Lookup::Found(m) if snap.routes.get(*m.value)?.chain.answers_preflight() => {
                Some((*m.value, params_of(&m.params)))
            }
            _ => None,
        }
    };
    if let Ok(method) = http::Method::from_bytes(asked.as_bytes())
        && let Some((idx, params)) = answering(&method)
    {
        return Some((idx, params, false));
    }
    allow
        .iter()
        .find_map(answering)
        .map(|(idx, params)| (idx, params, true))
}

fn upstream_path(route: &CompiledRoute, ctx: &RequestContext) -> String {
    if let Some(p) = &ctx.upstream_path {
        return p.clone();
    }
    match &route.rewrite {
        None => ctx.path.clone(),
        Some(Rewrite::StripPrefix(prefix)) => match ctx.path.strip_prefix(prefix.as_str()) {
            Some("") => "/".to_string(),
            Some(rest) if rest.starts_with('/') => rest.to_string(),
            _ => ctx.path.clone(),
        },
        Some(Rewrite::Template(t)) => {
            let mut out = String::with_capacity(ctx.path.len() + 16);
            t.render(
                |name| {
                    ctx.params
                        .iter()
                        .find(|(k, _)| &**k == name)
                        .map(|(_, v)| v.as_str())
                },
                &mut out,
            );
            out
        }
    }
}

/// An upstream request's body, the client side's upgrade of a WebSocket handshake (joined
/// with the upstream's when it answers 101), and the fields the gateway adds to the request.
type ProxyRequest<'a> = (
    Body,
    Option<hyper::upgrade::OnUpgrade>,
    forwarding::Added<'a>,
);

/// A WebSocket upgrade this upstream can take (an HTTP/1.1 one): a tunnel, not an exchange.
fn is_websocket_upgrade(parts: &http::request::Parts, upstream: &torii_upstream::Upstream) -> bool {
    parts.version == http::Version::HTTP_11
        && parts
            .headers
            .get(header::UPGRADE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
        && !upstream.http2
}

/// Turns the client's request head (in place) and body into the upstream's: rewritten path,
/// hop-by-hop headers removed, forwarding fields and request id prepared, the body limited.
#[allow(clippy::too_many_arguments)]
fn proxy_request<'a>(
    parts: &mut http::request::Parts,
    body: Incoming,
    conn: &'a ConnInfo,
    snap: &Snapshot,
    route: &CompiledRoute,
    upstream: &torii_upstream::Upstream,
    ctx: &'a RequestContext,
    view: &crate::snapshot::ListenerView,
    info: &mut LogInfo,
) -> Result<ProxyRequest<'a>, GatewayError> {
    let is_upgrade = is_websocket_upgrade(parts, upstream);
    // What `hyper::upgrade::on` does for a whole request.
    let client_upgrade = is_upgrade
        .then(|| parts.extensions.remove::<hyper::upgrade::OnUpgrade>())
        .flatten();
    // The common case (no rewrite, path already normal) reuses the request's own bytes.
    let pq = match (&route.rewrite, parts.uri.path_and_query()) {
        (None, Some(pq)) if pq.path() == ctx.path && ctx.upstream_path.is_none() => pq.clone(),
        _ => {
            let path = upstream_path(route, ctx);
            let s = match parts.uri.query() {
                Some(q) => format!("{path}?{q}"),
                None => path,
            };
            http::uri::PathAndQuery::from_maybe_shared(bytes::Bytes::from(s)).map_err(|_| {
                GatewayError::new(ErrorKind::BadRequest, "cannot build upstream URI")
            })?
        }
    };
    // The authority of an absolute-form target (or HTTP/2 :authority) wins over Host, as in
    // routing (RFC 9112 3.2.2), so the upstream sees the host the router matched on.
    let authority = parts
        .uri
        .authority()
        .and_then(|a| HeaderValue::from_str(a.as_str()).ok());
    let original_host = authority
        .clone()
        .or_else(|| parts.headers.get(header::HOST).cloned());
    forwarding::strip_hop_by_hop(&mut parts.headers, is_upgrade);
    let trusted = forwarding::peer_trusted(conn.peer, &view.trusted);
    let added = forwarding::forwarding_fields(
        &mut parts.headers,
        &conn.forwarding,
        trusted,
        original_host,
        &ctx.request_id.0,
    );
    parts.uri = http::Uri::from(pq);
    parts.version = if upstream.http2 {
        http::Version::HTTP_2
    } else {
        http::Version::HTTP_11
    };
    // A Host taken from the header is still in the map (nothing removes Host).
    if let Some(h) = authority {
        parts.headers.insert(header::HOST, h);
    }

    // A request without a body (most GETs) needs no limit or idle timer, and has no trailers.
    let body = if http_body::Body::is_end_stream(&body) {
        Body::Empty
    } else {
        let watch = Arc::new(crate::bodies::BodyWatch::default());
        info.body = Some(watch.clone());
        Body::boxed(crate::bodies::request_body(
            Body::from(body),
            ctx.body_limit
                .map_or(snap.max_body, |l| l.min(snap.max_body)),
            upstream.body_idle_timeout,
            snap.identity.clone(),
            watch,
            conn.activity.clone(),
        ))
    };
    Ok((body, client_upgrade, added))
}

/// The client's response to an upstream's: hop-by-hop headers removed, the body watched for
/// idleness and read ahead when `spool` wants it; after a 101 the two upgraded connections are
/// joined in a tunnel task.
fn proxy_response(
    resp: torii_upstream::UpstreamResponse,
    client_upgrade: Option<hyper::upgrade::OnUpgrade>,
    conn: &ConnInfo,
    upstream: &torii_upstream::Upstream,
    spool: Option<&Arc<crate::spool::Spooling>>,
) -> Response<Outgoing> {
    let (mut rparts, rbody) = resp.response.into_parts();
    if let (Some(upgraded), Some(client_upgrade)) = (resp.upgraded, client_upgrade) {
        tokio::spawn(crate::tunnel::run(
            client_upgrade,
            upgraded,
            conn.slot.clone(),
        ));
        forwarding::strip_hop_by_hop(&mut rparts.headers, true);
        return Response::from_parts(rparts, Outgoing::Gateway(Body::Empty));
    }
    forwarding::strip_hop_by_hop(&mut rparts.headers, false);
    let body = crate::bodies::upstream_body(rbody, upstream.body_idle_timeout);
    let body = match spool {
        Some(s) if s.wants(&rparts.headers, &body) => Outgoing::Spooled(s.start(body)),
        _ => Outgoing::Upstream(body),
    };
    Response::from_parts(rparts, body)
}
