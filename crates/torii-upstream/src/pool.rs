//! A connection pool per upstream target with a hard cap on open connections.
//!
//! Our own rather than hyper-util's legacy `Client` because that client caps only *idle*
//! connections per host, and its background connect (a connect that keeps going after an idle
//! connection won the race) can open more connections than any cap. Here every open connection
//! owns one semaphore permit, so the count can never exceed `max_connections`, and a request
//! waits (bounded by the queue timeout) for either an idle connection or a free permit.
//! HTTP/1.1 connections are plain streams driven inline by ``h1` (decision 0010);
//! HTTP/2 connections (hyper's `client::conn::http2`) are shared by up to
//! `max_streams_per_connection` requests each, under the same cap (`h2pool`).

use crate::connect::Connector;
use crate::h1::{Connection, Home};
use crate::h2pool::{ConnId, H2Pool, Lease};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use torii_core::{ErrorKind, GatewayError};

/// Pool settings.
#[derive(Debug, Clone)]
pub struct PoolSettings {
    /// Open connections at most.
    pub max_connections: usize,
    /// How long to wait for a connection.
    pub queue_timeout: Duration,
    /// Idle connections older than this are closed.
    pub idle_timeout: Duration,
    /// Speak HTTP/2.
    pub http2: bool,
    /// HTTP/2: requests sharing one connection at most.
    pub max_streams: usize,
}

struct Idle {
    conn: Box<Connection>,
    since: Instant,
}

/// The pool of one target.
pub struct TargetPool {
    connector: Connector,
    settings: PoolSettings,
    idle: Mutex<VecDeque<Idle>>,
    permits: Arc<Semaphore>,
    returned: Notify,
    h2: H2Pool,
}

/// A connection checked out of the pool.
pub enum Conn {
    /// An HTTP/1.1 connection, exclusively ours until its response body has ended.
    H1 {
        /// The connection (boxed once when opened: it moves from the pool to the request to its
        /// response body and back, as a pointer rather than a copy).
        conn: Box<Connection>,
        /// Whether it was reused from the idle list (a stale one may fail on first use).
        reused: bool,
    },
    /// A stream slot on a shared HTTP/2 connection.
    H2(Lease),
}

impl TargetPool {
    /// A pool connecting with `connector`.
    pub fn new(connector: Connector, settings: PoolSettings) -> Arc<Self> {
        let max_streams = settings.max_streams;
        let pool = Arc::new(Self {
            permits: Arc::new(Semaphore::new(settings.max_connections)),
            connector,
            settings,
            idle: Mutex::new(VecDeque::new()),
            returned: Notify::new(),
            h2: H2Pool::new(max_streams),
        });
        // Idle HTTP/1.1 connections have no task of their own: a sweeper closes the expired
        // ones and those the upstream closed, so their descriptors and slots are not held until
        // the next request. It ends when the pool is dropped.
        if !pool.settings.http2
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            let weak = Arc::downgrade(&pool);
            let every = (pool.settings.idle_timeout / 2)
                .clamp(Duration::from_millis(50), Duration::from_secs(30));
            rt.spawn(async move {
                let mut tick = tokio::time::interval(every);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    let Some(pool) = weak.upgrade() else {
                        return;
                    };
                    pool.sweep();
                }
            });
        }
        pool
    }

    /// Closes idle connections that expired or that the upstream closed (or sent bytes on).
    pub fn sweep(&self) {
        let limit = self.settings.idle_timeout;
        if let Ok(mut idle) = self.idle.lock() {
            idle.retain_mut(|i| i.since.elapsed() < limit && i.conn.is_reusable());
        }
    }

    /// Open connections now (in use plus idle).
    pub fn open_connections(&self) -> usize {
        self.settings.max_connections - self.permits.available_permits()
    }

    /// Gets a connection: a live idle one, or a new one when under the cap, or waits.
    ///
    /// The common case (an idle connection is ready) is decided without awaiting; the rest
    /// (connecting, a TLS or HTTP/2 handshake, waiting for a slot) runs in a boxed future, so
    /// every request's future does not carry the size of a handshake.
    pub async fn checkout(self: &Arc<Self>) -> Result<Conn, GatewayError> {
        if let Some(conn) = self.ready() {
            return Ok(conn);
        }
        Box::pin(self.checkout_slow()).await
    }

    /// A pooled connection that can be used right away, if there is one.
    fn ready(&self) -> Option<Conn> {
        if self.settings.http2 {
            return self.h2.lease(None).map(Conn::H2);
        }
        self.take_idle()
    }

    /// A live idle HTTP/1.1 connection, closing expired or dead ones on the way.
    fn take_idle(&self) -> Option<Conn> {
        while let Some(mut idle) = self.pop_idle() {
            if idle.since.elapsed() < self.settings.idle_timeout && idle.conn.is_reusable() {
                return Some(Conn::H1 {
                    conn: idle.conn,
                    reused: true,
                });
            }
            // dropped: closes the connection, frees the permit
        }
        None
    }

    async fn checkout_slow(self: &Arc<Self>) -> Result<Conn, GatewayError> {
        if self.settings.http2 {
            return self.checkout_h2(None).await;
        }
        let deadline = tokio::time::Instant::now() + self.settings.queue_timeout;
        loop {
            let notified = self.returned.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(conn) = self.take_idle() {
                return Ok(conn);
            }
            if let Ok(permit) = self.permits.clone().try_acquire_owned() {
                return self.connect_h1(permit).await;
            }
            tokio::select! {
                _ = notified => continue,
                permit = self.permits.clone().acquire_owned() => {
                    let permit = permit.map_err(|_| GatewayError::new(ErrorKind::Internal, "pool closed"))?;
                    return self.connect_h1(permit).await;
                }
                _ = tokio::time::sleep_until(deadline) => {
                    return Err(GatewayError::new(ErrorKind::UpstreamPoolExhausted, format!("no free connection to {} within {:?}", self.connector.authority(), self.settings.queue_timeout)));
                }
            }
        }
    }

    /// A new connection, bypassing the idle list (used to retry after a stale reuse); boxed
    /// like the slow path of [`TargetPool::checkout`].
    pub async fn fresh(self: &Arc<Self>) -> Result<Conn, GatewayError> {
        Box::pin(async {
            let permit = self
                .wait_for_permit("no free connection for a retry")
                .await?;
            self.connect_h1(permit).await
        })
        .await
    }

    /// A connection slot, waiting at most the queue timeout.
    async fn wait_for_permit(
        &self,
        what: &'static str,
    ) -> Result<OwnedSemaphorePermit, GatewayError> {
        match tokio::time::timeout(
            self.settings.queue_timeout,
            self.permits.clone().acquire_owned(),
        )
        .await
        {
            Ok(Ok(p)) => Ok(p),
            Ok(Err(_)) => Err(GatewayError::new(ErrorKind::Internal, "pool closed")),
            Err(_) => Err(GatewayError::new(ErrorKind::UpstreamPoolExhausted, what)),
        }
    }

    fn pop_idle(&self) -> Option<Idle> {
        self.idle.lock().ok()?.pop_back()
    }

    /// Returns an HTTP/1.1 connection after its response body ended. Idle connections past
    /// the idle timeout are closed on the way.
    pub fn checkin(&self, conn: Box<Connection>) {
        let now = Instant::now();
        if let Ok(mut idle) = self.idle.lock() {
            while idle
                .front()
                .is_some_and(|i| now.duration_since(i.since) >= self.settings.idle_timeout)
            {
                idle.pop_front();
            }
            idle.push_back(Idle { conn, since: now });
        }
        self.returned.notify_one();
    }

    /// Opens a connection (and its TLS handshake) and closes it: a TCP health probe. It does
    /// not count towards the pool's cap.
    pub async fn probe_connect(&self) -> Result<(), GatewayError> {
        self.connector.connect().await.map(drop)
    }

    async fn connect_h1(&self, permit: OwnedSemaphorePermit) -> Result<Conn, GatewayError> {
        let io = self.connector.connect().await?;
        Ok(Conn::H1 {
            conn: Box::new(Connection::new(io, permit)),
            reused: false,
        })
    }

    /// An HTTP/2 stream slot, on another connection than `avoid` (a retry after the upstream
    /// refused a stream or went away).
    pub async fn checkout_h2(&self, avoid: Option<ConnId>) -> Result<Conn, GatewayError> {
        self.h2
            .checkout(
                &self.connector,
                &self.permits,
                self.settings.queue_timeout,
                avoid,
            )
            .await
            .map(Conn::H2)
    }
}

impl Home for TargetPool {
    fn checkin(&self, conn: Box<Connection>) {
        TargetPool::checkin(self, conn);
    }
}
