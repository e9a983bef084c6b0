//! An open HTTP/1.1 connection to a target and the pool it returns to.

use crate::codec::decode;
use crate::codec::encode::{ExtraFields, Writer};
use crate::connect::Stream;
use bytes::BytesMut;
use http::HeaderValue;
use std::task::{Context, Poll};
use tokio::sync::OwnedSemaphorePermit;
use torii_core::Body;

/// Where a connection goes back when its response has ended cleanly (the target's pool).
/// A trait, so the connection and its body need not know the pool's type.
pub trait Home: Send + Sync {
    /// Takes back an idle connection.
    fn checkin(&self, conn: Box<Connection>);
}

/// Bytes asked of the socket per read of a response.
pub const READ_SIZE: usize = 32 * 1024;
/// Capacity kept for the next response head.
pub(super) const HEAD_READ: usize = 8 * 1024;

/// An open HTTP/1.1 connection to a target: the stream, its read buffer (bytes received and
/// not yet consumed), a reused buffer for request heads, and the pool slot it holds. It is
/// boxed once when opened (`Box<Connection>` everywhere): it moves from the pool to a request,
/// to its response body and back, and each move is then a pointer, not a copy.
pub struct Connection {
    pub(super) io: Stream,
    pub(crate) rbuf: BytesMut,
    pub(super) wbuf: Vec<u8>,
    /// The response-head decoder's memory: the last request's header map, emptied, for the
    /// next response head, and the previous response's field names.
    pub(super) scratch: decode::Scratch,
    /// The response-head deadline, one timer for the connection's life, moved forward for
    /// each exchange. A later deadline is one atomic update of the registered timer, where a
    /// timer per exchange is registered and removed under the timer driver's lock every time
    /// (decision 0010). Between exchanges it may fire and wake the last task that used the
    /// connection once; that task then finds nothing to do.
    pub(super) deadline: std::pin::Pin<Box<tokio::time::Sleep>>,
    /// The timeouts of the current exchange, set by [`Connection::arm`].
    pub(super) timeouts: Timeouts,
    /// Opened on a current-thread runtime: its bodiless requests are written by the thread's
    /// flusher (`flush`), batched per scheduler pass.
    pub(super) batched: bool,
    _permit: OwnedSemaphorePermit,
}

/// The two clocks of an exchange.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// From the moment the whole request has been sent to the response head.
    pub response_head: std::time::Duration,
    /// While the request body is being sent: how long the upstream may take no bytes of it
    /// (a client that stalls is the body's own idle timeout's business).
    pub upload_idle: std::time::Duration,
}

impl Connection {
    /// Wraps a freshly connected stream.
    pub fn new(io: Stream, permit: OwnedSemaphorePermit) -> Self {
        Self {
            io,
            rbuf: BytesMut::with_capacity(HEAD_READ),
            wbuf: Vec::with_capacity(1024),
            scratch: decode::Scratch::default(),
            deadline: Box::pin(tokio::time::sleep(std::time::Duration::ZERO)),
            timeouts: Timeouts {
                response_head: std::time::Duration::ZERO,
                upload_idle: std::time::Duration::ZERO,
            },
            batched: tokio::runtime::Handle::try_current()
                .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::CurrentThread),
            _permit: permit,
        }
    }

    /// Reads more bytes into the read buffer; `Ok(0)` at end of stream.
    pub(crate) fn poll_fill(
        &mut self,
        cx: &mut Context<'_>,
        want: usize,
    ) -> Poll<std::io::Result<usize>> {
        if self.rbuf.capacity() - self.rbuf.len() < want / 4 {
            self.rbuf.reserve(want);
        }
        tokio_util::io::poll_read_buf(std::pin::Pin::new(&mut self.io), cx, &mut self.rbuf)
    }

    /// The plain TCP stream under this connection, unless it is TLS.
    pub(crate) fn tcp(&self) -> Option<&tokio::net::TcpStream> {
        let io: &dyn std::any::Any = &*self.io;
        io.downcast_ref()
    }

    /// Sets the timeouts of the next exchange and starts its response-head deadline:
    /// `response_head` from now. A request with a body moves the deadline while the body is
    /// sent and starts the response-head clock again once all of it is out (see `send`).
    pub fn arm(&mut self, timeouts: Timeouts) {
        self.timeouts = timeouts;
        self.reset_deadline(timeouts.response_head);
    }

    pub(super) fn reset_deadline(&mut self, timeout: std::time::Duration) {
        let now = tokio::time::Instant::now();
        // A timeout too large to add is as good as none (30 years, as tokio's own timeout).
        let deadline = now
            .checked_add(timeout)
            .unwrap_or_else(|| now + std::time::Duration::from_secs(30 * 365 * 86_400));
        self.deadline.as_mut().reset(deadline);
    }

    /// Whether an idle connection can take a request: nothing buffered, and the upstream has
    /// neither closed it nor sent unsolicited bytes (checked without blocking).
    pub fn is_reusable(&mut self) -> bool {
        if !self.rbuf.is_empty() {
            return false;
        }
        let mut cx = Context::from_waker(std::task::Waker::noop());
        matches!(self.poll_fill(&mut cx, 1), Poll::Pending)
    }

    /// Prepares a request for this connection: its head encoded into the connection's
    /// reused buffer, `extra` after its own fields. `host` is sent as Host when `replace_host`
    /// is set or `parts` has none. The request is only read, so it can be sent again.
    pub fn prepare(
        &mut self,
        parts: &http::request::Parts,
        body: Body,
        host: &HeaderValue,
        replace_host: bool,
        extra: Option<&(dyn ExtraFields + Sync)>,
    ) -> Writer {
        Writer::new(
            std::mem::take(&mut self.wbuf),
            parts,
            body,
            host,
            replace_host,
            extra,
        )
    }
}
