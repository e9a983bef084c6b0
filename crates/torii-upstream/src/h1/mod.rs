//! HTTP/1.1 to upstreams, driven inline by the request's own task.
//!
//! Why not hyper's client here: `hyper::client::conn::http1` runs every connection in its own
//! task and hands each request to it through a channel and each response back through another,
//! so a proxied request costs two extra task wake-ups and hand-offs. On the benchmark that
//! dispatch made a minimal hyper proxy cost 1.5x nginx's CPU per request; the same proxy with an
//! inline client costs less than nginx (docs/performance.md, decision 0010). No maintained crate
//! offers an inline HTTP/1.1 client over a caller-owned stream, so this module does it: the
//! request head is encoded into a reused buffer, the response head is parsed with `httparse`
//! (the parser hyper uses), and the body is read by whoever polls it. The client side (the
//! gateway's listeners) and HTTP/2 upstreams stay on hyper.

pub mod body;
pub mod conn;
pub(crate) mod flush;

pub use conn::{Connection, Home, READ_SIZE, Timeouts};

use crate::codec::decode;
use crate::codec::encode::{WriteError, Writer};
use crate::connect::Stream;
use body::H1Body;
use bytes::Bytes;
use conn::HEAD_READ;
use http::{Response, StatusCode};
use std::future::Future;
use std::sync::Arc;
use std::task::Poll;
use torii_core::{ErrorKind, GatewayError};

/// A connection taken over by a protocol upgrade (101): the stream and the bytes the upstream
/// already sent after the 101 head. It no longer holds a pool slot: the slot is released at
/// the upgrade, so long-lived tunnels never starve request traffic to the same target (the
/// client side of a tunnel still counts towards its listener's `max_connections`).
pub struct Upgraded {
    /// The stream.
    pub io: Stream,
    /// Bytes received after the response head.
    pub leftover: Bytes,
}

/// A failed exchange.
pub struct Failure {
    /// What the client will see.
    pub error: GatewayError,
    /// Set when the connection was reused and closed before any response byte arrived and
    /// the request had no body: the request, ready to be sent again on a fresh connection
    /// (if it is idempotent; the caller decides).
    pub retry: Option<Writer>,
}

impl Failure {
    fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            error: GatewayError::new(kind, message),
            retry: None,
        }
    }
}

/// What an upstream sent back.
pub enum Answer {
    /// A response whose body is read from the connection.
    Response(Response<H1Body>),
    /// 101 Switching Protocols to an upgrade request.
    Upgraded(Response<()>, Upgraded),
}

impl Connection {
    /// Sends a prepared request (the rest of it, when part was written already) and reads the
    /// response head before the deadline set by [`Connection::arm`] (an `UpstreamTimeout`
    /// failure after it). The response-head clock runs from the moment the whole request is
    /// out: while a body is still being sent, the deadline is the upload's idle timer instead
    /// (moved forward whenever the upstream takes bytes, ignored while the writer waits for
    /// the client), so a long upload or a slow client never turns into a 504. `write_failed` is an error of an earlier write of this request.
    /// `reused` says whether the connection served an earlier request (only then can a failure
    /// be retried). The request body is written while the response head is awaited, so an
    /// upstream that answers early (413, 401) is heard; the connection is then not reused.
    #[allow(clippy::too_many_arguments)]
    pub async fn send(
        mut self: Box<Self>,
        mut writer: Writer,
        mut write_failed: Option<std::io::Error>,
        method: &http::Method,
        pool: Arc<dyn Home>,
        reused: bool,
        upgrade: bool,
    ) -> Result<Answer, Failure> {
        let mut stale = false;
        // A bodiless request keeps the deadline `arm` set: its head is all there is to send.
        let uploading = !writer.bodiless();
        if uploading && !writer.done() {
            self.reset_deadline(self.timeouts.upload_idle);
        }
        let head = std::future::poll_fn(|cx| {
            if write_failed.is_none() && !writer.done() {
                let before = writer.sent();
                let polled = writer.poll_write(cx, &mut self.io);
                if uploading && writer.done() {
                    // The whole request is out: the response-head clock starts now.
                    self.reset_deadline(self.timeouts.response_head);
                } else if uploading && writer.sent() != before {
                    self.reset_deadline(self.timeouts.upload_idle);
                }
                match polled {
                    Poll::Ready(Ok(())) | Poll::Pending => {}
                    Poll::Ready(Err(WriteError::Io(e))) => write_failed = Some(e),
                    Poll::Ready(Err(WriteError::Body(e))) => {
                        return Poll::Ready(Err(GatewayError::client_body(&*e)));
                    }
                    Poll::Ready(Err(WriteError::Length)) => {
                        return Poll::Ready(Err(GatewayError::new(
                            ErrorKind::BadRequest,
                            "request body did not match its declared length",
                        )));
                    }
                }
            }
            loop {
                match decode::parse_into(&mut self.rbuf, method, &mut self.scratch) {
                    Ok(Some(head)) => return Poll::Ready(Ok(head)),
                    Ok(None) => {}
                    Err(e) => {
                        return Poll::Ready(Err(GatewayError::new(
                            ErrorKind::UpstreamReset,
                            e.to_string(),
                        )));
                    }
                }
                let why = match self.poll_fill(cx, HEAD_READ) {
                    Poll::Pending => {
                        // Waiting for the client's next body bytes: its body's idle timeout
                        // decides, not this deadline.
                        let client_turn = write_failed.is_none() && writer.awaiting_body();
                        if client_turn || self.deadline.as_mut().poll(cx).is_pending() {
                            return Poll::Pending;
                        }
                        // The caller names the target in the message.
                        let t = self.timeouts;
                        return Poll::Ready(Err(GatewayError::new(
                            ErrorKind::UpstreamTimeout,
                            if writer.done() {
                                format!("sent no response head within {:?}", t.response_head)
                            } else {
                                format!("took no request body bytes for {:?}", t.upload_idle)
                            },
                        )));
                    }
                    Poll::Ready(Ok(0)) => match &write_failed {
                        Some(e) => format!("connection failed while sending the request: {e}"),
                        None if self.rbuf.is_empty() => {
                            "connection closed before a response".to_string()
                        }
                        None => "connection closed inside the response head".to_string(),
                    },
                    Poll::Ready(Ok(_)) => continue,
                    Poll::Ready(Err(e)) => format!("reading the response: {e}"),
                };
                stale = reused && self.rbuf.is_empty();
                return Poll::Ready(Err(GatewayError::new(ErrorKind::UpstreamReset, why)));
            }
        })
        .await
        .map_err(|error| Failure { error, retry: None });
        let head = match head {
            Ok(h) => h,
            Err(mut f) => {
                if stale {
                    f.retry = writer.rewind();
                }
                return Err(f);
            }
        };
        // An answer before the request was completely sent: the rest of the body keeps going
        // out while the response is read (an upstream may stream its answer as it reads), and
        // the connection is reused only if both ended cleanly. After a failed write nothing
        // more is sent and the connection is not reused.
        let keep_alive = head.keep_alive && write_failed.is_none();
        let mut response = Response::new(());
        *response.status_mut() = head.status;
        *response.version_mut() = head.version;
        *response.headers_mut() = head.headers;
        if head.status == StatusCode::SWITCHING_PROTOCOLS {
            if !upgrade || !writer.done() {
                return Err(Failure::new(
                    ErrorKind::UpstreamReset,
                    "upstream switched protocols without a complete upgrade request",
                ));
            }
            let leftover = self.rbuf.split().freeze();
            // The pool slot (`self._permit`) is dropped here with the rest of the connection.
            return Ok(Answer::Upgraded(
                response,
                Upgraded {
                    io: self.io,
                    leftover,
                },
            ));
        }
        let writer = if writer.done() {
            self.wbuf = writer.into_buffer();
            None
        } else {
            write_failed.is_none().then(|| Box::new(writer))
        };
        let body = H1Body::new(self, writer, pool, head.framing, keep_alive);
        Ok(Answer::Response(response.map(|()| body)))
    }
}
