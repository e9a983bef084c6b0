//! HTTP/2 connections to one target: as many as the streams in flight need, each shared by
//! up to `max_streams_per_connection` requests, all under the target's connection cap.
//!
//! A request leases a stream slot on the least busy live connection; when every connection
//! is full, one request opens another (connect and handshake outside any lock) while the
//! others wait for it or for a slot, bounded by the queue timeout. The lease ends when the
//! response body is dropped, so a slow stream keeps its slot exactly as long as it lives.

use crate::connect::{Connector, Stream};
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use torii_core::{Body, ErrorKind, GatewayError};

/// One HTTP/2 connection and the streams in flight on it.
pub struct H2Conn {
    sender: http2::SendRequest<Body>,
    streams: AtomicUsize,
    /// Woken when a stream ends or a connection is added.
    changed: Arc<Notify>,
    _permit: OwnedSemaphorePermit,
}

/// The identity of a connection, to avoid it on a retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnId(usize);

/// A stream slot on a connection, held until the response body is dropped.
pub struct Lease {
    conn: Arc<H2Conn>,
}

impl Lease {
    /// A handle to send the request on.
    pub fn sender(&self) -> http2::SendRequest<Body> {
        self.conn.sender.clone()
    }

    /// Which connection this is (an identity only: holding it keeps nothing alive, so a
    /// dead connection's pool slot is freed while a retry looks for another).
    pub fn connection(&self) -> ConnId {
        ConnId(Arc::as_ptr(&self.conn) as usize)
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.conn.streams.fetch_sub(1, Ordering::AcqRel);
        self.conn.changed.notify_one();
    }
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease").finish_non_exhaustive()
    }
}

/// The HTTP/2 side of a target pool.
pub struct H2Pool {
    conns: Mutex<H2State>,
    changed: Arc<Notify>,
    max_streams: usize,
}

#[derive(Default)]
struct H2State {
    live: Vec<Arc<H2Conn>>,
    /// Connections being opened now.
    connecting: usize,
}

impl H2Pool {
    /// An empty pool; `max_streams` requests share one connection at most.
    pub fn new(max_streams: usize) -> Self {
        Self {
            conns: Mutex::new(H2State::default()),
            changed: Arc::new(Notify::new()),
            max_streams: max_streams.max(1),
        }
    }

    /// A stream slot on the least busy live connection with room, other than `avoid`.
    pub(crate) fn lease(&self, avoid: Option<ConnId>) -> Option<Lease> {
        let mut state = self.conns.lock().ok()?;
        state.live.retain(|c| !c.sender.is_closed());
        let conn = state
            .live
            .iter()
            .filter(|c| avoid.is_none_or(|a| a.0 != Arc::as_ptr(c) as usize))
            .filter(|c| c.streams.load(Ordering::Acquire) < self.max_streams)
            .min_by_key(|c| c.streams.load(Ordering::Acquire))?
            .clone();
        conn.streams.fetch_add(1, Ordering::AcqRel);
        Some(Lease { conn })
    }

    /// Open connections (live or being opened).
    pub fn open(&self) -> usize {
        self.conns.lock().map_or(0, |s| s.live.len() + s.connecting)
    }

    /// A stream slot: on a live connection with room (not `avoid`), or on a new connection
    /// when the cap allows, waiting up to `queue_timeout` otherwise.
    pub async fn checkout(
        &self,
        connector: &Connector,
        permits: &Arc<Semaphore>,
        queue_timeout: Duration,
        mut avoid: Option<ConnId>,
    ) -> Result<Lease, GatewayError> {
        let deadline = tokio::time::Instant::now() + queue_timeout;
        loop {
            let changed = self.changed.notified();
            let mut changed = std::pin::pin!(changed);
            changed.as_mut().enable();
            if let Some(lease) = self.lease(avoid) {
                return Ok(lease);
            }
            // Open a connection unless one is already on its way (its first streams are
            // for whoever waits).
            let connecting = self.conns.lock().map_or(0, |s| s.connecting);
            if connecting == 0 {
                if let Ok(permit) = permits.clone().try_acquire_owned() {
                    return self.connect(connector, permit).await;
                }
                // At the cap with no other connection: the avoided one (still open after
                // refusing a stream) is better than waiting out the queue timeout.
                if avoid.take().is_some() {
                    continue;
                }
            }
            tokio::select! {
                () = &mut changed => {}
                permit = permits.clone().acquire_owned(), if connecting == 0 => {
                    let permit = permit
                        .map_err(|_| GatewayError::new(ErrorKind::Internal, "pool closed"))?;
                    return self.connect(connector, permit).await;
                }
                () = tokio::time::sleep_until(deadline) => {
                    return Err(GatewayError::new(
                        ErrorKind::UpstreamPoolExhausted,
                        format!(
                            "no free HTTP/2 stream to {} within {queue_timeout:?}",
                            connector.authority()
                        ),
                    ));
                }
            }
        }
    }

    /// Opens a connection (no lock held while connecting), adds it and leases its first slot.
    async fn connect(
        &self,
        connector: &Connector,
        permit: OwnedSemaphorePermit,
    ) -> Result<Lease, GatewayError> {
        // Counted while the connection is on its way, also when this future is dropped
        // half-way (its client went away): others would otherwise wait for it forever.
        let pending = Connecting::new(self);
        let sender = handshake(connector).await?;
        let conn = Arc::new(H2Conn {
            sender,
            streams: AtomicUsize::new(1),
            changed: self.changed.clone(),
            _permit: permit,
        });
        self.conns
            .lock()
            .map_err(|_| GatewayError::new(ErrorKind::Internal, "pool poisoned"))?
            .live
            .push(conn.clone());
        // Waiters wake with the new connection in the list.
        drop(pending);
        Ok(Lease { conn })
    }
}

/// A connection being opened: counted in `H2State::connecting` until dropped; waiters are
/// woken then (a new connection, or none coming: they may open one).
struct Connecting<'a>(&'a H2Pool);

impl<'a> Connecting<'a> {
    fn new(pool: &'a H2Pool) -> Self {
        if let Ok(mut s) = pool.conns.lock() {
            s.connecting += 1;
        }
        Self(pool)
    }
}

impl Drop for Connecting<'_> {
    fn drop(&mut self) {
        if let Ok(mut s) = self.0.conns.lock() {
            s.connecting = s.connecting.saturating_sub(1);
        }
        self.0.changed.notify_waiters();
    }
}

async fn handshake(connector: &Connector) -> Result<http2::SendRequest<Body>, GatewayError> {
    let io: Stream = connector.connect().await?;
    let (sender, conn) = http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10))
        .handshake::<_, Body>(TokioIo::new(io))
        .await
        .map_err(|e| {
            GatewayError::new(
                ErrorKind::UpstreamConnect,
                format!("HTTP/2 handshake with {}: {e}", connector.authority()),
            )
        })?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "upstream HTTP/2 connection ended with an error");
        }
    });
    Ok(sender)
}
