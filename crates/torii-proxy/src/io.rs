//! A client stream wrapper: replays bytes already read during protocol detection, and records
//! when the connection last moved a byte (for the keep-alive idle timeout).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Counts the bytes a connection reads and writes, for the keep-alive idle timeout. A counter, not a
/// timestamp: no clock read on the I/O path; the idle watchdog compares counts between its
/// wake-ups instead.
///
/// It also tells the watchdog's transfer-rate rule whether the gateway is waiting on the
/// client: a write the client's socket did not take (`write_blocked`), or a request body the
/// client has not sent yet before its response (`waiting_bodies`), and how many bytes moved
/// meanwhile.
#[derive(Debug, Default)]
pub struct Activity {
    bytes: AtomicU64,
    requests: AtomicU64,
    in_flight: AtomicU64,
    write_blocked: AtomicBool,
    /// Request bodies (HTTP/2: one per stream) waiting for the client's next bytes before
    /// their response head arrived. Signed: a body's increment and the decrement of the
    /// response that ends its wait may land in either order.
    waiting_bodies: AtomicI64,
}

/// A request in flight on a connection, from its head until its response body ended (or was
/// dropped); the header read timeout only runs while a connection has none.
pub struct InFlight(Arc<Activity>);

impl InFlight {
    /// Counts a request that has just arrived.
    pub fn begin(activity: Arc<Activity>) -> Self {
        activity.requests.fetch_add(1, Ordering::Relaxed);
        activity.in_flight.fetch_add(1, Ordering::Relaxed);
        Self(activity)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Activity {
    /// A new counter.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }
    fn touch(&self, bytes: usize) {
        self.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    }
    /// Notes whether a write to the client is waiting for its socket (stored only on change).
    fn set_write_blocked(&self, blocked: bool) {
        if self.write_blocked.load(Ordering::Relaxed) != blocked {
            self.write_blocked.store(blocked, Ordering::Relaxed);
        }
    }
    /// One more (`1`) or one fewer (`-1`) request body waiting for the client.
    pub fn body_waits(&self, delta: i64) {
        self.waiting_bodies.fetch_add(delta, Ordering::Relaxed);
    }
    /// Bytes read and written so far.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }
    /// Whether the gateway is waiting on the client now.
    pub fn waiting_on_client(&self) -> bool {
        self.write_blocked.load(Ordering::Relaxed)
            || self.waiting_bodies.load(Ordering::Relaxed) > 0
    }
    /// Requests that arrived so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }
    /// Requests whose response has not ended yet.
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }
}

/// `prefix` is read first, then the inner stream. Every read or write counts as activity.
pub struct Prefixed<S> {
    prefix: Vec<u8>,
    pos: usize,
    inner: S,
    activity: Arc<Activity>,
}

impl<S> Prefixed<S> {
    /// Wraps `inner`, replaying `prefix` first.
    pub fn new(prefix: Vec<u8>, inner: S, activity: Arc<Activity>) -> Self {
        Self {
            prefix,
            pos: 0,
            inner,
            activity,
        }
    }
}

fn written(a: &Activity, r: Poll<io::Result<usize>>) -> Poll<io::Result<usize>> {
    match &r {
        Poll::Ready(Ok(n)) => {
            a.touch(*n);
            a.set_write_blocked(false);
        }
        Poll::Ready(Err(_)) => a.touch(0),
        Poll::Pending => a.set_write_blocked(true),
    }
    r
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.pos < self.prefix.len() {
            let n = (self.prefix.len() - self.pos).min(buf.remaining());
            let start = self.pos;
            buf.put_slice(&self.prefix[start..start + n]);
            self.pos += n;
            return Poll::Ready(Ok(()));
        }
        let this = &mut *self;
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if r.is_ready() {
            this.activity.touch(buf.filled().len() - before);
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        written(
            &this.activity,
            Pin::new(&mut this.inner).poll_write(cx, buf),
        )
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        written(
            &this.activity,
            Pin::new(&mut this.inner).poll_write_vectored(cx, bufs),
        )
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
