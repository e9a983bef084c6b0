//! The concerns the gateway adds to streaming bodies, each a `torii_core::Concern` on the one
//! wrapper `torii_core::Layered` (which forwards frames, end of stream and size hints): the
//! idle timer, the client request body's rules (size limit, idle timer, trailer cleaning,
//! bytes read, waiting on the client), and the end-of-response report for the access log.

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::Sleep;
use torii_core::{Body, BodyIdle, BodyTooLarge, BoxError, Concern, Layered, Polled};
use torii_plugins::IdentityHeaders;

/// An idle timer: armed while the inner body is pending, from the first pending poll after
/// a frame; a timer that fires ends the body with [`BodyIdle`]. Time between a frame and the
/// next poll (the reader was busy, or read-ahead waited for its client) is not idleness.
pub struct IdleTimer {
    after: Duration,
    sleep: Option<Pin<Box<Sleep>>>,
    /// A frame came since the timer was last armed.
    moved: bool,
}

impl IdleTimer {
    fn new(after: Duration) -> Self {
        Self {
            after,
            sleep: None,
            moved: false,
        }
    }
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Result<(), BodyIdle> {
        let after = self.after;
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(after)));
        if std::mem::take(&mut self.moved) {
            sleep
                .as_mut()
                .reset(tokio::time::Instant::now() + self.after);
        }
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Err(BodyIdle(after)),
            Poll::Pending => Ok(()),
        }
    }
    fn progress(&mut self) {
        self.moved = self.sleep.is_some();
    }
}

impl Concern for IdleTimer {
    fn polled(&mut self, polled: Polled, _: bool, cx: &mut Context<'_>) -> Polled {
        match polled {
            Poll::Pending => match self.poll_pending(cx) {
                Ok(()) => Poll::Pending,
                Err(e) => Poll::Ready(Some(Err(e.into()))),
            },
            Poll::Ready(Some(Ok(frame))) => {
                self.progress();
                Poll::Ready(Some(Ok(frame)))
            }
            other => other,
        }
    }
}

/// The client's request body on its way upstream (see [`RequestRules`]).
pub type RequestBody = Layered<Body, RequestRules>;

/// The rules of a client's request body on its way upstream: limited in size, with an idle
/// timeout, its trailers cleaned like the head (identity headers in every spelling, and fields
/// that must not travel as trailers, are removed), its bytes counted and its waits on the
/// client told to the connection.
pub struct RequestRules {
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

/// A client body under its rules; `watch` follows it for the rest of the exchange.
pub(crate) fn request_body(
    inner: Body,
    limit: u64,
    idle: Duration,
    identity: Arc<IdentityHeaders>,
    watch: Arc<BodyWatch>,
    conn: Arc<crate::io::Activity>,
) -> RequestBody {
    Layered::new(
        inner,
        RequestRules {
            limit,
            seen: 0,
            idle: IdleTimer::new(idle),
            watch,
            identity,
            conn,
        },
    )
}

impl RequestRules {
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

impl Concern for RequestRules {
    fn polled(&mut self, polled: Polled, end: bool, cx: &mut Context<'_>) -> Polled {
        let polled = self.idle.polled(polled, end, cx);
        self.watch.set_waiting(polled.is_pending(), &self.conn);
        match polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    self.seen += d.len() as u64;
                    self.watch
                        .read
                        .store(self.seen, std::sync::atomic::Ordering::Relaxed);
                    if self.seen > self.limit {
                        return Poll::Ready(Some(Err(BodyTooLarge(self.limit).into())));
                    }
                    return Poll::Ready(Some(Ok(frame)));
                }
                // Trailers: the only other frame; data frames (the common case) never get here.
                Poll::Ready(Some(Ok(self.clean_trailers(frame))))
            }
            other => other,
        }
    }

    fn dropped(&mut self, _: bool) {
        // A body dropped while it waited (the upstream answered early, the request ended) no
        // longer waits for the client.
        self.watch.set_waiting(false, &self.conn);
    }
}

/// An upstream response body with its idle timeout. (An HTTP/1.1 body hands its connection back
/// to the pool itself when it ends cleanly.)
pub type UpstreamBody = Layered<torii_upstream::ResponseBody, IdleTimer>;

/// An upstream body under its idle timeout.
pub fn upstream_body(inner: torii_upstream::ResponseBody, idle: Duration) -> UpstreamBody {
    Layered::new(inner, IdleTimer::new(idle))
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

/// A response body that reports its end exactly once (see [`Report`]).
pub type Observed<B, E> = Layered<B, Report<E>>;

/// Wraps a response body so that `on_end` hears how it ended. Generic over the body and the
/// report, so a proxied response is one allocation (the boxed `Observed`), not one per layer.
pub fn observed<B: HttpBody, E: OnEnd>(inner: B, on_end: E) -> Observed<B, E> {
    Layered::new(
        inner,
        Report {
            bytes: 0,
            on_end: Some(on_end),
        },
    )
}

/// Counts the bytes sent and reports the end of a response body once: complete, a timeout, an
/// upstream reset, or (dropped before its end) a client that went away.
pub struct Report<E: OnEnd> {
    bytes: u64,
    on_end: Option<E>,
}

impl<E: OnEnd> Report<E> {
    fn finish(&mut self, outcome: Outcome) {
        if let Some(f) = self.on_end.take() {
            f.on_end(self.bytes, outcome);
        }
    }
}

impl<E: OnEnd> Concern for Report<E> {
    fn polled(&mut self, polled: Polled, end: bool, _: &mut Context<'_>) -> Polled {
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    self.bytes += d.len() as u64;
                }
                if end {
                    self.finish(Outcome::Complete);
                }
            }
            Poll::Ready(None) => self.finish(Outcome::Complete),
            Poll::Ready(Some(Err(e))) => {
                let outcome = if e.downcast_ref::<BodyIdle>().is_some() {
                    Outcome::Timeout
                } else {
                    Outcome::UpstreamReset
                };
                self.finish(outcome);
            }
            Poll::Pending => {}
        }
        polled
    }

    fn dropped(&mut self, ended: bool) {
        self.finish(if ended {
            Outcome::Complete
        } else {
            Outcome::ClientAbort
        });
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
    /// An upstream's body, read ahead (see `crate::spool`).
    Spooled(crate::spool::Spooled),
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
            Outgoing::Spooled(b) => Pin::new(b).poll_frame(cx),
        }
    }
    fn is_end_stream(&self) -> bool {
        match self {
            Outgoing::Gateway(b) => b.is_end_stream(),
            Outgoing::Upstream(b) => b.is_end_stream(),
            Outgoing::Spooled(b) => b.is_end_stream(),
        }
    }
    fn size_hint(&self) -> SizeHint {
        match self {
            Outgoing::Gateway(b) => b.size_hint(),
            Outgoing::Upstream(b) => b.size_hint(),
            Outgoing::Spooled(b) => b.size_hint(),
        }
    }
}
