//! The per-connection watchdog: ends a client connection gracefully when the gateway shuts
//! down, when it moved no byte for the idle timeout, or (HTTP/1.1) when it had no request in
//! flight for the header read timeout (a silent keep-alive connection, or a request head that
//! trickles in and never ends); and at once when the client is too slow: while the gateway
//! waits on it (a response the client does not read, a request body it does not send), fewer
//! bytes than the minimum transfer rate moved over the rate window. Such a client would
//! otherwise hold its upstream connection (and a pool slot) for as long as it likes.
//!
//! It runs inside the connection's own task, but its timer and the shutdown signal are polled
//! with a waker of their own that raises a flag: a wake-up caused by client or upstream I/O
//! (every request) polls only the connection, and the watchdog is polled only when one of its
//! own events fired. A `select!` over the three would poll all of them on every wake-up, and
//! hyper's own header timer allocates and arms a timer per request; both showed in profiles.

use crate::io::Activity;
use futures_util::task::AtomicWaker;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::{Instant, Sleep};

/// A connection the watchdog can ask to finish its in-flight work and close.
pub trait Graceful: Future<Output = Result<(), hyper::Error>> {
    /// Starts a graceful shutdown (HTTP/1.1: close after the current exchange; HTTP/2: GOAWAY).
    fn graceful(self: Pin<&mut Self>);
}

impl<I, S> Graceful for hyper::server::conn::http1::UpgradeableConnection<I, S>
where
    Self: Future<Output = Result<(), hyper::Error>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: hyper::service::HttpService<hyper::body::Incoming>,
    S::ResBody: http_body::Body + 'static,
    <S::ResBody as http_body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn graceful(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

impl<I, S, E> Graceful for hyper::server::conn::http2::Connection<I, S, E>
where
    Self: Future<Output = Result<(), hyper::Error>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
    S: hyper::service::HttpService<hyper::body::Incoming>,
    S::ResBody: http_body::Body + 'static,
    <S::ResBody as http_body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    E: hyper::rt::bounds::Http2ServerConnExec<S::Future, S::ResBody>,
{
    fn graceful(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

/// The limits the watchdog enforces.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// No byte either way for this long: close.
    pub idle: Duration,
    /// No request in flight for this long: close (HTTP/1.1 only; `None` for HTTP/2).
    pub header_read: Option<Duration>,
    /// The transfer-rate rule: at least this many bytes per window while the gateway waits on
    /// the client (`None`: off).
    pub min_rate: Option<MinRate>,
}

/// At least `bytes` per `window` while the gateway waits on the client.
#[derive(Debug, Clone, Copy)]
pub struct MinRate {
    /// Bytes per window.
    pub bytes: u64,
    /// The window.
    pub window: Duration,
}

impl MinRate {
    /// The rule for a rate in bytes per second over `window`; `None` when the rate is 0.
    pub fn new(per_second: u64, window: Duration) -> Option<Self> {
        (per_second > 0 && !window.is_zero()).then(|| Self {
            bytes: (u128::from(per_second) * window.as_millis() / 1000)
                .try_into()
                .unwrap_or(u64::MAX),
            window,
        })
    }
}

/// Wakes the connection's task and marks that the watchdog has something to look at.
#[derive(Default)]
struct Flag {
    fired: AtomicBool,
    task: AtomicWaker,
}

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.fired.store(true, Ordering::Release);
        self.task.wake();
    }
}

/// Why the watchdog ends a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// The gateway is shutting down: in-flight exchanges finish (within the shutdown grace).
    Shutdown,
    /// No byte moved for the idle timeout: in-flight exchanges (a slow upstream) finish.
    Idle,
    /// No request in flight for the header read timeout.
    NoRequest,
    /// The client moved too few bytes while the gateway waited on it: closed at once.
    TooSlow,
}

struct Dog {
    limits: Limits,
    step: Duration,
    timer: Pin<Box<Sleep>>,
    shutdown: Pin<Box<dyn Future<Output = ()> + Send>>,
    activity: Arc<Activity>,
    seen_bytes: u64,
    quiet: Duration,
    seen_requests: u64,
    free: Duration,
    /// How long the gateway has been waiting on the client, and the byte count then.
    slow: Duration,
    slow_from: u64,
}

impl Dog {
    fn new(limits: Limits, mut shutdown: watch::Receiver<bool>, activity: Arc<Activity>) -> Self {
        let shortest = limits
            .header_read
            .map_or(limits.idle, |h| h.min(limits.idle));
        let shortest = limits.min_rate.map_or(shortest, |r| r.window.min(shortest));
        // Waking every quarter of the shortest limit closes within 1.25x of it.
        let step = (shortest / 4).max(Duration::from_millis(10));
        Self {
            limits,
            step,
            timer: Box::pin(tokio::time::sleep(step)),
            shutdown: Box::pin(async move {
                // A dropped sender means the gateway is gone: stop as well.
                let _ = shutdown.wait_for(|stop| *stop).await;
            }),
            seen_bytes: activity.bytes(),
            seen_requests: activity.requests(),
            activity,
            quiet: Duration::ZERO,
            free: Duration::ZERO,
            slow: Duration::ZERO,
            slow_from: 0,
        }
    }

    /// Why the connection should close, if it should. Never polled again after that.
    fn poll_stop(&mut self, cx: &mut Context<'_>) -> Option<Stop> {
        if self.shutdown.as_mut().poll(cx).is_ready() {
            return Some(Stop::Shutdown);
        }
        while self.timer.as_mut().poll(cx).is_ready() {
            if let Some(stop) = self.tick() {
                return Some(stop);
            }
            let next = Instant::now() + self.step;
            self.timer.as_mut().reset(next);
        }
        None
    }

    fn tick(&mut self) -> Option<Stop> {
        let bytes = self.activity.bytes();
        if bytes != self.seen_bytes {
            self.seen_bytes = bytes;
            self.quiet = Duration::ZERO;
        } else {
            self.quiet += self.step;
            if self.quiet >= self.limits.idle {
                return Some(Stop::Idle);
            }
        }
        if let Some(rule) = self.limits.min_rate {
            let bytes = self.activity.bytes();
            if self.activity.in_flight() > 0 && self.activity.waiting_on_client() {
                self.slow += self.step;
                if self.slow >= rule.window {
                    if bytes - self.slow_from < rule.bytes {
                        return Some(Stop::TooSlow);
                    }
                    self.slow = Duration::ZERO;
                    self.slow_from = bytes;
                }
            } else {
                self.slow = Duration::ZERO;
                self.slow_from = bytes;
            }
        }
        if let Some(limit) = self.limits.header_read {
            let requests = self.activity.requests();
            if requests != self.seen_requests || self.activity.in_flight() > 0 {
                self.seen_requests = requests;
                self.free = Duration::ZERO;
            } else {
                self.free += self.step;
                if self.free >= limit {
                    return Some(Stop::NoRequest);
                }
            }
        }
        None
    }
}

/// Drives `conn` until it ends, or until the watchdog stops it; then lets in-flight exchanges
/// finish (graceful shutdown) and waits for the connection to close. `too_slow` counts the
/// connections cut for being slower than the minimum transfer rate (before they close).
pub async fn drive<C: Graceful>(
    conn: C,
    limits: Limits,
    shutdown: watch::Receiver<bool>,
    activity: Arc<Activity>,
    too_slow: &metrics::Counter,
) {
    let mut conn = std::pin::pin!(conn);
    let mut dog = Dog::new(limits, shutdown, activity);
    let flag = Arc::new(Flag::default());
    let dog_waker = Waker::from(flag.clone());
    let mut first = true;
    let ended = std::future::poll_fn(|cx| {
        if let Poll::Ready(r) = conn.as_mut().poll(cx) {
            return Poll::Ready(Ok(r));
        }
        // Registered on every poll, before the flag is read: a wake that raced with the last
        // poll may have taken the registration (`AtomicWaker::wake` empties it).
        flag.task.register(cx.waker());
        if first || flag.fired.swap(false, Ordering::AcqRel) {
            first = false;
            if let Some(stop) = dog.poll_stop(&mut Context::from_waker(&dog_waker)) {
                return Poll::Ready(Err(stop));
            }
        }
        Poll::Pending
    })
    .await;
    match ended {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::debug!(error = %e, "client connection ended with an error"),
        Err(Stop::TooSlow) => {
            // Dropping the connection drops its exchanges: their upstream connections close
            // and free their pool slots.
            tracing::info!("closing a client connection slower than the minimum transfer rate");
            too_slow.increment(1);
        }
        Err(stop) => {
            tracing::trace!(?stop, "closing client connection");
            // In-flight exchanges finish (the shutdown grace period bounds them at shutdown).
            // With nothing in flight, an idle keep-alive connection closes at once; one whose
            // request head never completed does not close by itself (hyper only stops between
            // requests), and neither does one whose client stopped reading the end of its
            // last response: those are dropped one watchdog step later.
            conn.as_mut().graceful();
            loop {
                match tokio::time::timeout(dog.step, conn.as_mut()).await {
                    Err(_) if dog.activity.in_flight() > 0 => continue,
                    _ => break,
                }
            }
        }
    }
}
