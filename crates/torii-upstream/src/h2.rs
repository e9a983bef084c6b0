//! The clocks of an exchange with an HTTP/2 upstream (hyper's client).
//!
//! `send_request` resolves when the response head arrives, while hyper streams the request
//! body on its own. The response-head timeout must not run while the body is still going out
//! (a long upload, a gRPC client stream): it starts when the whole body has been handed to
//! hyper. While the body is being sent, an idle rule applies instead: the upstream must take
//! body bytes at least every `upload_idle` (flow control lets it stop reading); a client that
//! stalls is its body's own idle timeout's business, so that time does not count.

use crate::codec::encode::ExtraFields;
use crate::error::idempotent;
use crate::error::{CallError, Retry};
use crate::h1::Timeouts;
use crate::h2pool::Lease;
use crate::pool::Conn;
use crate::response::{ResponseBody, UpstreamResponse};
use crate::target::Target;
use http::Request;
use http_body::Body as HttpBody;
use std::future::Future;
use std::task::{Context, Poll};
use tokio::sync::watch;
use torii_core::{Body, Concern, ErrorKind, GatewayError, Layered, Polled};

/// How far a request body has gone.
#[derive(Debug, Clone, Copy, Default)]
struct Progress {
    /// Data bytes handed to hyper.
    sent: u64,
    /// hyper asked for more and the client has not sent it yet.
    awaiting_client: bool,
    /// The whole body (or its failure) has been handed over.
    done: bool,
    /// The client's body failed (too large, stalled, malformed, cut short). hyper's HTTP/2
    /// client only resets the stream then, so the exchange's error would otherwise blame
    /// the upstream.
    fault: Option<ClientFault>,
}

/// Why a client's request body failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClientFault {
    TooLarge,
    Stalled,
    Broken,
}

/// The sending side's view of a watched request body.
pub(super) struct Upload(watch::Receiver<Progress>);

impl Upload {
    /// The client's fault, if its body failed while being sent: the error the client gets
    /// instead of the upstream error the failed stream produced.
    pub(super) fn fault(&self) -> Option<GatewayError> {
        let (kind, what) = match self.0.borrow().fault? {
            ClientFault::TooLarge => (
                ErrorKind::PayloadTooLarge,
                "request body exceeded the limit while streaming",
            ),
            ClientFault::Stalled => (ErrorKind::BadRequest, "client request body stalled"),
            ClientFault::Broken => (ErrorKind::BadRequest, "client request body broke"),
        };
        Some(GatewayError::new(kind, what))
    }
}

/// Reports a request body's progress to the exchange that sends it.
struct Reporter(watch::Sender<Progress>);

impl Concern for Reporter {
    fn polled(&mut self, polled: Polled, end: bool, _: &mut Context<'_>) -> Polled {
        self.0.send_if_modified(|p| {
            let before = (p.sent, p.awaiting_client, p.done);
            match &polled {
                Poll::Pending => p.awaiting_client = true,
                Poll::Ready(Some(Ok(frame))) => {
                    p.sent += frame.data_ref().map_or(0, |d| d.len() as u64);
                    p.awaiting_client = false;
                    p.done = end || frame.is_trailers();
                }
                Poll::Ready(Some(Err(e))) => {
                    p.done = true;
                    p.fault = Some(if e.is::<torii_core::BodyTooLarge>() {
                        ClientFault::TooLarge
                    } else if e.is::<torii_core::BodyIdle>() {
                        ClientFault::Stalled
                    } else {
                        ClientFault::Broken
                    });
                }
                Poll::Ready(None) => p.done = true,
            }
            before != (p.sent, p.awaiting_client, p.done) || p.fault.is_some()
        });
        polled
    }
}

/// Wraps a request body so that [`await_head`] can follow it; a bodiless request is left
/// alone (no allocation, the response-head clock starts at once).
pub(super) fn watch_body(body: Body) -> (Body, Option<Upload>) {
    if body.is_end_stream() {
        return (body, None);
    }
    let (progress, rx) = watch::channel(Progress::default());
    (
        Body::boxed(Layered::new(body, Reporter(progress))),
        Some(Upload(rx)),
    )
}

/// Awaits the response head of `fut`: while the body watched by `upload` is going out, under
/// the upload idle rule, then within the response-head timeout. `Err(after, what)` when a
/// clock ran out.
pub(super) async fn await_head<F: Future>(
    fut: F,
    upload: Option<&mut Upload>,
    timeouts: Timeouts,
) -> Result<F::Output, GatewayError> {
    let mut fut = std::pin::pin!(fut);
    if let Some(Upload(upload)) = upload {
        let idle = tokio::time::sleep(timeouts.upload_idle);
        let mut idle = std::pin::pin!(idle);
        loop {
            let awaiting_client = upload.borrow().awaiting_client;
            tokio::select! {
                biased;
                out = &mut fut => return Ok(out),
                changed = upload.changed() => {
                    let p = *upload.borrow_and_update();
                    if changed.is_err() || p.done {
                        break;
                    }
                    idle.as_mut().reset(tokio::time::Instant::now() + timeouts.upload_idle);
                }
                () = &mut idle, if !awaiting_client => {
                    return Err(GatewayError::new(
                        ErrorKind::UpstreamTimeout,
                        format!("took no request body bytes for {:?}", timeouts.upload_idle),
                    ));
                }
            }
        }
    }
    tokio::time::timeout(timeouts.response_head, fut)
        .await
        .map_err(|_| {
            GatewayError::new(
                ErrorKind::UpstreamTimeout,
                format!("sent no response head within {:?}", timeouts.response_head),
            )
        })
}

/// Sends a request to an HTTP/2 target on the stream slot `lease` and awaits the response
/// head. The request is only read: hyper gets its own copy of the head (with the scheme and
/// `:authority` added, the caller's `extra` fields inserted). A request whose body is in
/// memory is sent again, on another connection, when the upstream did not process it
/// (REFUSED_STREAM, or GOAWAY before it, for idempotent methods).
pub(crate) async fn exchange(
    clocks: Timeouts,
    replaces_host: bool,
    target: &Target,
    head: &http::request::Parts,
    body: Body,
    extra: Option<&(dyn ExtraFields + Sync)>,
    lease: Lease,
) -> Result<UpstreamResponse, CallError> {
    let again = body.try_clone();
    let first = request(replaces_host, target, head, body, extra)?;
    let failed = match send(clocks, target, first, &lease).await {
        Ok(r) => return Ok(respond(r, lease, target)),
        Err(failed) => failed,
    };
    let Some(again) = again.filter(|_| failed.retryable(idempotent(&head.method))) else {
        return Err(failed.into_error());
    };
    tracing::debug!(target = %target.name, error = %failed.error, "HTTP/2 stream not processed by the upstream; retrying on another connection");
    let avoid = lease.connection();
    drop(lease);
    let Conn::H2(lease) = target
        .pool
        .checkout_h2(Some(avoid))
        .await
        .map_err(CallError::not_sent)?
    else {
        return Err(CallError::new(
            GatewayError::new(ErrorKind::Internal, "unexpected HTTP/1.1 connection"),
            Retry::Never,
        ));
    };
    let second = request(replaces_host, target, head, again, extra)?;
    match send(clocks, target, second, &lease).await {
        Ok(r) => Ok(respond(r, lease, target)),
        Err(failed) => Err(failed.into_error()),
    }
}

/// hyper's request for `head`: absolute URI (`:scheme`, `:authority` from the Host the
/// upstream is sent), the head's fields and the caller's.
fn request(
    replaces_host: bool,
    target: &Target,
    head: &http::request::Parts,
    body: Body,
    extra: Option<&(dyn ExtraFields + Sync)>,
) -> Result<Request<Body>, CallError> {
    let mut headers = head.headers.clone();
    // Framing is the sender's: hyper sets the length from the body (which a stage may have
    // replaced), as the HTTP/1.1 encoder does.
    headers.remove(http::header::CONTENT_LENGTH);
    headers.remove(http::header::TRANSFER_ENCODING);
    if let Some(extra) = extra {
        extra.insert_into(&mut headers);
    }
    let host = headers.remove(http::header::HOST);
    let own = target.authority.to_str().unwrap_or(&target.name);
    let authority = match (replaces_host, &host) {
        (false, Some(h)) => h.to_str().unwrap_or(own),
        _ => own,
    };
    let pq = head.uri.path_and_query().map_or("/", |p| p.as_str());
    let scheme = if target.tls { "https" } else { "http" };
    let uri = format!("{scheme}://{authority}{pq}").parse().map_err(|_| {
        CallError::new(
            GatewayError::new(ErrorKind::BadRequest, "cannot build the upstream URI"),
            Retry::Never,
        )
    })?;
    let mut req = Request::new(body);
    *req.method_mut() = head.method.clone();
    *req.uri_mut() = uri;
    *req.version_mut() = http::Version::HTTP_2;
    *req.headers_mut() = headers;
    Ok(req)
}

fn respond(
    response: http::Response<hyper::body::Incoming>,
    lease: Lease,
    target: &Target,
) -> UpstreamResponse {
    UpstreamResponse {
        response: response.map(|b| ResponseBody::h2(b, lease)),
        upgraded: None,
        target: target.name.clone(),
    }
}

/// A failed HTTP/2 exchange.
struct Failed {
    error: GatewayError,
    /// The upstream refused the stream: it was not processed.
    refused: bool,
    /// hyper failed the request before any response (not a timeout, not the client's body).
    before_response: bool,
}

impl Failed {
    fn retryable(&self, idempotent: bool) -> bool {
        self.refused || (idempotent && self.before_response)
    }

    fn into_error(self) -> CallError {
        let retry = if self.refused {
            Retry::Safe
        } else if self.before_response {
            Retry::Idempotent
        } else {
            Retry::Never
        };
        CallError::new(self.error, retry)
    }
}

/// Sends one request and awaits its response head under the exchange's clocks.
async fn send(
    clocks: Timeouts,
    target: &Target,
    h2_req: Request<Body>,
    lease: &Lease,
) -> Result<http::Response<hyper::body::Incoming>, Failed> {
    let (body, mut upload) = {
        let (parts, body) = h2_req.into_parts();
        let (body, upload) = watch_body(body);
        (Request::from_parts(parts, body), upload)
    };
    let mut sender = lease.sender();
    let fut = sender.send_request(body);
    let sent = await_head(fut, upload.as_mut(), clocks).await;
    // A failed client body resets the stream: the client's fault, whatever error that reset
    // produced.
    let fault = match &sent {
        Ok(Ok(_)) => None,
        _ => upload.as_ref().and_then(Upload::fault),
    };
    let fail = |error, refused, before_response| Failed {
        error,
        refused,
        before_response,
    };
    match (sent, fault) {
        (Ok(Ok(r)), None) => Ok(r),
        (_, Some(fault)) => Err(fail(fault, false, false)),
        (Ok(Err(e)), None) => {
            let refused = refused_stream(&e);
            let error = send_error(&e, target);
            let before = error.kind.source() == torii_core::ErrorSource::Upstream;
            Err(fail(error, refused, before))
        }
        (Err(mut e), None) => {
            e.detail = format!("{} {}", target.name, e.detail);
            Err(fail(e, false, false))
        }
    }
}

/// Whether hyper's error is the upstream refusing the stream (RST_STREAM REFUSED_STREAM).
fn refused_stream(e: &hyper::Error) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(c) = cause {
        if let Some(h2) = c.downcast_ref::<::h2::Error>() {
            return h2.is_remote() && h2.reason() == Some(::h2::Reason::REFUSED_STREAM);
        }
        cause = c.source();
    }
    false
}

/// The error of a failed HTTP/2 exchange: the client's body's fault, or the upstream's.
pub(crate) fn send_error(e: &hyper::Error, target: &Target) -> GatewayError {
    use std::error::Error as _;
    let mut cause: Option<&(dyn std::error::Error + 'static)> = e.source();
    while let Some(c) = cause {
        // The client's request body broke while it was being streamed (too large, stalled,
        // bad chunk, early close): the client's fault, not the upstream's.
        if c.is::<torii_core::BodyTooLarge>()
            || c.is::<torii_core::BodyIdle>()
            || c.is::<hyper::Error>()
        {
            return GatewayError::client_body(c);
        }
        cause = c.source();
    }
    GatewayError::new(ErrorKind::UpstreamReset, format!("{}: {e}", target.name))
}
