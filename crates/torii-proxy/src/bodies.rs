//! Body wrappers on the streaming path. Each forwards frames as they come (data and trailers,
//! with the inner size hint) and adds one concern: a size limit, an idle timeout, returning a
//! pooled connection at end of stream, or writing the access-log line when the body has ended.

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::Sleep;
use torii_core::{Body, BodyIdle, BodyTooLarge, BoxError};
use torii_plugins::IdentityHeaders;

/// An idle timer: armed while the inner body is pending, reset whenever a frame arrives.
struct IdleTimer {
    after: Duration,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl IdleTimer {
    fn new(after: Duration) -> Self {
        Self { after, sleep: None }
    }
    /// Polls `inner` for a frame: the timer is armed while it is pending, reset when a frame
    /// arrives, and a timer that fires ends the body with [`BodyIdle`].
    fn poll_frame<B>(
        &mut self,
        inner: Pin<&mut B>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>>
    where
        B: HttpBody<Data = Bytes>,
        B::Error: Into<BoxError>,
    {
        match inner.poll_frame(cx) {
            Poll::Pending => match self.poll_pending(cx) {
                Ok(()) => Poll::Pending,
                Err(e) => Poll::Ready(Some(Err(e.into()))),
            },
            Poll::Ready(Some(Ok(frame))) => {
                self.progress();
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => Poll::Ready(None),
        }
    }

    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Result<(), BodyIdle> {
        let after = self.after;
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(after)));
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Err(BodyIdle(after)),
            Poll::Pending => Ok(()),
        }
    }
    fn progress(&mut self) {
        if let Some(s) = self.sleep.as_mut() {
            s.as_mut().reset(tokio::time::Instant::now() + self.after);
        }
    }
}

/// The client's request body on its way upstream: limited in size, with an idle timeout, and
/// its trailers cleaned like the head (identity headers in every spelling, and fields that
/// must not travel as trailers, are removed).
pub struct RequestBody {
    inner: Body,
    limit: u64,
    seen: u64,
    idle: IdleTimer,
    identity: Arc<IdentityHeaders>,
    /// Bytes read and whose turn it is, shared with the request's pipeline.
    watch: Arc<BodyWatch>,
    /// The client connection's activity: told while this body waits for the client (the
    /// watchdog's transfer-rate rule).
    conn: Arc<crate::io::Activity>,
}

/// A request body as the rest of its exchange sees it: the bytes read so far (the access
/// log's `bytes_in`), and whether it waits for the client. A body counts as waiting on the
/// client (for the transfer-rate rule) only until the response head has arrived: after that,
/// a full-duplex exchange (a gRPC stream, an upload the upstream answers as it reads) may
/// wait on the upstream's next message before the client sends more, and that wait is not
/// the client's.
#[derive(Debug, Default)]
pub struct BodyWatch {
    read: std::sync::atomic::AtomicU64,
    state: std::sync::atomic::AtomicU8,
}

const SENDING: u8 = 0;
const WAITING: u8 = 1;
const ANSWERED: u8 = 2;

impl BodyWatch {
    /// Body bytes read so far.
    pub fn read(&self) -> u64 {
        self.read.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Notes whether the body waits for the client; `conn` counts the waiting bodies.
    fn set_waiting(&self, waiting: bool, conn: &crate::io::Activity) {
        use std::sync::atomic::Ordering::Relaxed;
        let (from, to, delta) = if waiting {
            (SENDING, WAITING, 1)
        } else {
            (WAITING, SENDING, -1)
        };
        if self
            .state
            .compare_exchange(from, to, Relaxed, Relaxed)
            .is_ok()
        {
            conn.body_waits(delta);
        }
    }

    /// The response head arrived: from now on the body never counts as waiting on the client.
    pub(crate) fn answered(&self, conn: &crate::io::Activity) {
        if self
            .state
            .swap(ANSWERED, std::sync::atomic::Ordering::Relaxed)
            == WAITING
        {
            conn.body_waits(-1);
        }
    }
}

impl RequestBody {
    /// Wraps a client body; `watch` follows it for the rest of the exchange.
    pub(crate) fn new(
        inner: Body,
        limit: u64,
        idle: Duration,
        identity: Arc<IdentityHeaders>,
        watch: Arc<BodyWatch>,
        conn: Arc<crate::io::Activity>,
    ) -> Self {
        Self {
            inner,
            limit,
            seen: 0,
            idle: IdleTimer::new(idle),
            watch,
            identity,
            conn,
        }
    }

    /// A trailers frame without client-sent identity fields or forbidden trailer fields.
    fn clean_trailers(&self, frame: Frame<Bytes>) -> Frame<Bytes> {
        match frame.into_trailers() {
            Ok(mut trailers) => {
                self.identity.strip(&mut trailers);
                if trailers
                    .keys()
                    .any(torii_upstream::codec::chunked::forbidden_trailer)
                {
                    let forbidden: Vec<_> = trailers
                        .keys()
                        .filter(|k| torii_upstream::codec::chunked::forbidden_trailer(k))
                        .cloned()
                        .collect();
                    for k in forbidden {
                        trailers.remove(&k);
                    }
                }
                Frame::trailers(trailers)
            }
            Err(frame) => frame,
        }
    }
}

impl HttpBody for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let polled = this.idle.poll_frame(Pin::new(&mut this.inner), cx);
        this.watch.set_waiting(polled.is_pending(), &this.conn);
        match polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    this.seen += d.len() as u64;
                    this.watch
                        .read
                        .store(this.seen, std::sync::atomic::Ordering::Relaxed);
                    if this.seen > this.limit {
                        return Poll::Ready(Some(Err(BodyTooLarge(this.limit).into())));
                    }
                    return Poll::Ready(Some(Ok(frame)));
                }
                // Trailers: the only other frame; data frames (the common case) never get here.
                Poll::Ready(Some(Ok(this.clean_trailers(frame))))
            }
            other => other,
        }
    }
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for RequestBody {
    fn drop(&mut self) {
        // A body dropped while it waited (the upstream answered early, the request ended) no
        // longer waits for the client.
        self.watch.set_waiting(false, &self.conn);
    }
}

/// An upstream response body with its idle timeout. (An HTTP/1.1 body hands its connection back
/// to the pool itself when it ends cleanly.)
pub struct UpstreamBody {
    inner: torii_upstream::ResponseBody,
    idle: IdleTimer,
}

impl UpstreamBody {
    /// Wraps an upstream body.
    pub fn new(inner: torii_upstream::ResponseBody, idle: Duration) -> Self {
        Self {
            inner,
            idle: IdleTimer::new(idle),
        }
    }
}

impl HttpBody for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        this.idle.poll_frame(Pin::new(&mut this.inner), cx)
    }
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// How an exchange ended, for the access log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The response body was sent completely.
    Complete,
    /// The client went away before the end.
    ClientAbort,
    /// The upstream broke the response body.
    UpstreamReset,
    /// A body idle timeout fired.
    Timeout,
}

impl Outcome {
    /// As written in the log.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Complete => "complete",
            Outcome::ClientAbort => "client_abort",
            Outcome::UpstreamReset => "upstream_reset",
            Outcome::Timeout => "timeout",
        }
    }
}

/// Called once when a response body has ended (or was dropped), with bytes sent and outcome.
pub trait OnEnd: Send + Unpin + 'static {
    /// The body ended.
    fn on_end(self, bytes_out: u64, outcome: Outcome);
}

/// A response body that reports its end exactly once. Generic over the body and the report,
/// so a proxied response is one allocation (the boxed `Observed`), not one per layer.
pub struct Observed<B: HttpBody, E: OnEnd> {
    inner: B,
    bytes: u64,
    on_end: Option<E>,
}

impl<B: HttpBody, E: OnEnd> Observed<B, E> {
    /// Wraps a response body.
    pub fn new(inner: B, on_end: E) -> Self {
        Self {
            inner,
            bytes: 0,
            on_end: Some(on_end),
        }
    }
    fn finish(&mut self, outcome: Outcome) {
        if let Some(f) = self.on_end.take() {
            f.on_end(self.bytes, outcome);
        }
    }
}

impl<B, E> HttpBody for Observed<B, E>
where
    B: HttpBody<Data = Bytes, Error = BoxError> + Unpin,
    E: OnEnd,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let r = Pin::new(&mut this.inner).poll_frame(cx);
        match &r {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    this.bytes += d.len() as u64;
                }
                if this.inner.is_end_stream() {
                    this.finish(Outcome::Complete);
                }
            }
            Poll::Ready(None) => this.finish(Outcome::Complete),
            Poll::Ready(Some(Err(e))) => {
                let outcome = if e.downcast_ref::<BodyIdle>().is_some() {
                    Outcome::Timeout
                } else {
                    Outcome::UpstreamReset
                };
                this.finish(outcome);
            }
            Poll::Pending => {}
        }
        r
    }
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B: HttpBody, E: OnEnd> Drop for Observed<B, E> {
    fn drop(&mut self) {
        let outcome = if self.inner.is_end_stream() {
            Outcome::Complete
        } else {
            Outcome::ClientAbort
        };
        self.finish(outcome);
    }
}

/// What a response carries before it is observed: a body the gateway made (or a plugin
/// returned), or an upstream's body with its idle timer. An enum rather than a boxed body so
/// the upstream case needs no allocation of its own.
pub enum Outgoing {
    /// A gateway-made body.
    Gateway(Body),
    /// An upstream's body.
    Upstream(UpstreamBody),
}

impl HttpBody for Outgoing {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            Outgoing::Gateway(b) => Pin::new(b).poll_frame(cx),
            Outgoing::Upstream(b) => Pin::new(b).poll_frame(cx),
        }
    }
    fn is_end_stream(&self) -> bool {
        match self {
            Outgoing::Gateway(b) => b.is_end_stream(),
            Outgoing::Upstream(b) => b.is_end_stream(),
        }
    }
    fn size_hint(&self) -> SizeHint {
        match self {
            Outgoing::Gateway(b) => b.size_hint(),
            Outgoing::Upstream(b) => b.size_hint(),
        }
    }
}
