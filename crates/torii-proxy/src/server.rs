//! Listeners and client connections: accept with a connection cap, detect HTTP/1.1 or HTTP/2
//! (prior knowledge) within the header read timeout, serve with hyper, and shut down gracefully.

use crate::Shared;
use crate::io::Prefixed;
use crate::pipeline::{self, ConnInfo};
use arc_swap::ArcSwap;
use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use torii_config::schema::ListenerLimits;

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// A bound listener whose accept loop is running.
pub struct RunningListener {
    /// The bound address (the real port when the config said 0).
    pub addr: SocketAddr,
    /// The configured bind address, to tell whether a reload changed it.
    pub configured: SocketAddr,
    /// Limits, swapped on reload; new connections read the current ones.
    pub limits: Arc<ArcSwap<ListenerLimits>>,
    stop: watch::Sender<bool>,
}

impl RunningListener {
    /// Stops accepting; open connections continue until they finish or the gateway shuts down.
    pub fn stop_accepting(&self) {
        let _ = self.stop.send(true);
    }
}

/// Binds `addr` (with SO_REUSEADDR, as tokio does) and starts accepting.
pub async fn start(
    name: &str,
    configured: SocketAddr,
    limits: ListenerLimits,
    shared: Arc<Shared>,
) -> std::io::Result<RunningListener> {
    let listener = TcpListener::bind(configured).await?;
    let addr = listener.local_addr()?;
    let limits = Arc::new(ArcSwap::from_pointee(limits));
    let (stop, stop_rx) = watch::channel(false);
    let name: Arc<str> = name.into();
    tokio::spawn(accept_loop(listener, name, limits.clone(), shared, stop_rx));
    Ok(RunningListener {
        addr,
        configured,
        limits,
        stop,
    })
}

async fn accept_loop(
    listener: TcpListener,
    name: Arc<str>,
    limits: Arc<ArcSwap<ListenerLimits>>,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    let cap = limits.load().max_connections as usize;
    let slots = Arc::new(Semaphore::new(cap));
    let mut shutdown = shared.shutdown.subscribe();
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
            _ = stop.changed() => return,
            _ = shutdown.changed() => return,
        };
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.changed() => return,
            _ = shutdown.changed() => return,
        };
        match accepted {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                let conn = Arc::new(ConnInfo {
                    listener: name.clone(),
                    peer,
                    proto: "http",
                });
                let shared = shared.clone();
                let limits = limits.load_full();
                tokio::spawn(async move {
                    let _permit = permit;
                    let _active = shared.track_connection();
                    serve(stream, conn, &limits, shared.clone()).await;
                });
            }
            Err(e) => {
                // Out of file descriptors or similar: slow down instead of spinning.
                tracing::warn!(listener = %name, error = %e, "accept failed; pausing 100ms");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Reads enough of the connection to tell HTTP/2 prior knowledge from HTTP/1.1. Bounded by the
/// header read timeout, so a client that never sends a byte is closed.
async fn detect(stream: &mut TcpStream, timeout: Duration) -> Option<(bool, Vec<u8>)> {
    let mut buf = vec![0u8; H2_PREFACE.len()];
    let mut n = 0;
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let read = tokio::time::timeout_at(deadline, stream.read(&mut buf[n..]))
            .await
            .ok()?
            .ok()?;
        if read == 0 {
            return None;
        }
        n += read;
        if buf[..n] != H2_PREFACE[..n] {
            buf.truncate(n);
            return Some((false, buf));
        }
        if n == H2_PREFACE.len() {
            return Some((true, buf));
        }
    }
}

async fn serve(
    mut stream: TcpStream,
    conn: Arc<ConnInfo>,
    limits: &ListenerLimits,
    shared: Arc<Shared>,
) {
    let Some((is_h2, prefix)) = detect(&mut stream, limits.header_read_timeout.0).await else {
        return;
    };
    let io = TokioIo::new(Prefixed::new(prefix, stream));
    let svc_shared = shared.clone();
    let svc = hyper::service::service_fn(move |req| {
        pipeline::handle(req, conn.clone(), svc_shared.clone())
    });
    let mut shutdown = shared.shutdown.subscribe();
    if *shutdown.borrow() {
        return;
    }
    if is_h2 {
        let mut b = http2::Builder::new(TokioExecutor::new());
        b.timer(TokioTimer::new())
            .max_concurrent_streams(limits.h2_max_concurrent_streams)
            .max_header_list_size(
                u32::try_from(limits.h2_max_header_list_size.0).unwrap_or(u32::MAX),
            )
            .max_pending_accept_reset_streams(Some(limits.h2_max_pending_reset_streams as usize))
            .max_local_error_reset_streams(Some(limits.h2_max_pending_reset_streams as usize))
            .keep_alive_interval(Some(limits.idle_timeout.0))
            .keep_alive_timeout(Duration::from_secs(20));
        let c = b.serve_connection(io, svc);
        tokio::pin!(c);
        tokio::select! {
            r = c.as_mut() => { if let Err(e) = r { tracing::debug!(error = %e, "HTTP/2 connection error"); } return; }
            _ = shutdown.changed() => {}
        }
        c.as_mut().graceful_shutdown();
        let _ = c.await;
    } else {
        let mut b = http1::Builder::new();
        b.timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout.0)
            .keep_alive(true)
            .max_buf_size((limits.max_header_bytes.0 as usize).max(8192))
            .max_headers(limits.max_headers as usize);
        let c = b.serve_connection(io, svc).with_upgrades();
        tokio::pin!(c);
        tokio::select! {
            r = c.as_mut() => { if let Err(e) = r { tracing::debug!(error = %e, "HTTP/1 connection error"); } return; }
            _ = shutdown.changed() => {}
        }
        c.as_mut().graceful_shutdown();
        let _ = c.await;
    }
}
