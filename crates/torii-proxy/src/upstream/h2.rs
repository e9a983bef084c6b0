//! The clocks of an exchange with an HTTP/2 upstream (hyper's client).
//!
//! `send_request` resolves when the response head arrives, while hyper streams the request
//! body on its own. The response-head timeout must not run while the body is still going out
//! (a long upload, a gRPC client stream): it starts when the whole body has been handed to
//! hyper. While the body is being sent, an idle rule applies instead: the upstream must take
//! body bytes at least every `upload_idle` (flow control lets it stop reading); a client that
//! stalls is its body's own idle timeout's business, so that time does not count.

use super::h1::Timeouts;
use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::sync::watch;
use torii_core::{Body, BoxError, ErrorKind, GatewayError};

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

/// A request body that reports its progress to the exchange that sends it.
struct Watched {
    inner: Body,
    progress: watch::Sender<Progress>,
}

impl HttpBody for Watched {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        let end = this.inner.is_end_stream();
        this.progress.send_if_modified(|p| {
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
                    p.fault = Some(if e.is::<crate::bodies::BodyTooLarge>() {
                        ClientFault::TooLarge
                    } else if e.is::<crate::bodies::BodyIdle>() {
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
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
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
        Body::boxed(Watched {
            inner: body,
            progress,
        }),
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
