//! Listeners and client connections: accept with a connection cap, detect HTTP/1.1 or HTTP/2
//! (prior knowledge) within the header read timeout, serve with hyper, and shut down gracefully.

use crate::Shared;
use crate::conn::{ConnInfo, ListenerSettings, TlsConn};
use crate::io::{Activity, Prefixed};
use crate::pipeline;
use crate::watchdog;
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
    /// Name and limits, swapped on reload; new connections read the current ones.
    pub settings: Arc<ArcSwap<ListenerSettings>>,
    /// Wakes the accept loop after `settings` changed (e.g. a raised connection cap).
    pub changed: Arc<tokio::sync::Notify>,
    stop: watch::Sender<bool>,
}

impl RunningListener {
    /// Stops accepting; open connections continue until they finish or the gateway shuts down.
    pub fn stop_accepting(&self) {
        let _ = self.stop.send(true);
    }
}

/// Binds `addr` and starts accepting.
pub async fn start(
    name: &str,
    configured: SocketAddr,
    limits: ListenerLimits,
    shared: Arc<Shared>,
) -> std::io::Result<RunningListener> {
    let listener = TcpListener::bind(configured).await?;
    let addr = listener.local_addr()?;
    let settings = Arc::new(ArcSwap::from_pointee(ListenerSettings {
        name: name.into(),
        limits,
    }));
    let (stop, stop_rx) = watch::channel(false);
    let changed = Arc::new(tokio::sync::Notify::new());
    tokio::spawn(accept_loop(
        listener,
        settings.clone(),
        changed.clone(),
        shared,
        stop_rx,
    ));
    Ok(RunningListener {
        addr,
        configured,
        settings,
        changed,
        stop,
    })
}

async fn accept_loop(
    listener: TcpListener,
    settings: Arc<ArcSwap<ListenerSettings>>,
    changed: Arc<tokio::sync::Notify>,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    let mut cap = settings.load().limits.max_connections as usize;
    let slots = Arc::new(Semaphore::new(cap));
    let mut shutdown = shared.shutdown.subscribe();
    loop {
        // Follow a reloaded connection cap; a lower cap takes effect as connections close.
        let want = settings.load().limits.max_connections as usize;
        if want > cap {
            slots.add_permits(want - cap);
            cap = want;
        } else if want < cap {
            cap -= slots.forget_permits(cap - want);
        }
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
            () = changed.notified() => continue,
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
                let current = settings.load_full();
                let shared = shared.clone();
                let settings = settings.clone();
                tokio::spawn(async move {
                    let slot = shared.track_connection(permit);
                    serve(
                        stream,
                        peer,
                        settings,
                        slot,
                        &current.limits,
                        shared.clone(),
                    )
                    .await;
                });
            }
            Err(e) => {
                // Out of file descriptors or similar: slow down instead of spinning.
                tracing::warn!(listener = %settings.load().name, error = %e, "accept failed; pausing 100ms");
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
    peer: SocketAddr,
    listener: Arc<ArcSwap<ListenerSettings>>,
    slot: Arc<crate::ConnSlot>,
    limits: &ListenerLimits,
    shared: Arc<Shared>,
) {
    let activity = Activity::new();
    let tls = {
        let snap = shared.snapshot.load();
        let name = listener.load().name.clone();
        snap.listeners
            .get(&*name)
            .and_then(|v| v.tls.as_ref())
            .map(|t| (t.config.clone(), t.store.clone()))
    };
    match tls {
        Some((config, store)) => {
            let io = Prefixed::new(Vec::new(), stream, activity.clone());
            let accept = tokio_rustls::TlsAcceptor::from(config).accept(io);
            let tls_stream = match tokio::time::timeout(limits.header_read_timeout.0, accept).await
            {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => return,
            };
            let (_, session) = tls_stream.get_ref();
            let is_h2 = session.alpn_protocol() == Some(b"h2");
            let sni = session.server_name().map(str::to_string);
            let client_cert = session
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(|der| crate::tls::client_cert(der.as_ref()))
                .map(Arc::new);
            let conn = Arc::new(ConnInfo {
                listener,
                peer,
                proto: "https",
                forwarding: crate::forwarding::PeerForwarding::new(
                    crate::forwarding::canonical(peer.ip()),
                    "https",
                ),
                slot: slot.clone(),
                activity: activity.clone(),
                tls: Some(TlsConn {
                    sni,
                    store,
                    client_cert,
                }),
            });
            run(
                TokioIo::new(tls_stream),
                is_h2,
                conn,
                limits,
                shared,
                activity,
            )
            .await;
        }
        None => {
            let Some((is_h2, prefix)) = detect(&mut stream, limits.header_read_timeout.0).await
            else {
                return;
            };
            let conn = Arc::new(ConnInfo {
                listener,
                peer,
                proto: "http",
                forwarding: crate::forwarding::PeerForwarding::new(
                    crate::forwarding::canonical(peer.ip()),
                    "http",
                ),
                slot,
                activity: activity.clone(),
                tls: None,
            });
            let io = TokioIo::new(Prefixed::new(prefix, stream, activity.clone()));
            run(io, is_h2, conn, limits, shared, activity).await;
        }
    }
}

async fn run<I>(
    io: I,
    is_h2: bool,
    conn: Arc<ConnInfo>,
    limits: &ListenerLimits,
    shared: Arc<Shared>,
    activity: Arc<Activity>,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let svc_shared = shared.clone();
    let svc = hyper::service::service_fn(move |req| {
        pipeline::handle(req, conn.clone(), svc_shared.clone())
    });
    let shutdown = shared.shutdown.subscribe();
    if *shutdown.borrow() {
        return;
    }
    let idle = limits.idle_timeout.0;
    let min_rate =
        watchdog::MinRate::new(limits.min_transfer_rate.0, limits.transfer_rate_window.0);
    if is_h2 {
        let mut b = http2::Builder::new(TokioExecutor::new());
        b.timer(TokioTimer::new())
            .max_concurrent_streams(limits.h2_max_concurrent_streams)
            .max_header_list_size(
                u32::try_from(limits.h2_max_header_list_size.0).unwrap_or(u32::MAX),
            )
            .max_pending_accept_reset_streams(Some(limits.h2_max_pending_reset_streams as usize))
            .max_local_error_reset_streams(Some(limits.h2_max_pending_reset_streams as usize));
        let limits = watchdog::Limits {
            idle,
            header_read: None,
            min_rate,
        };
        let cut = &shared.metrics.slow_clients_cut;
        watchdog::drive(b.serve_connection(io, svc), limits, shutdown, activity, cut).await;
    } else {
        let mut b = http1::Builder::new();
        // The header read timeout is the watchdog's (no timer armed per request).
        b.timer(TokioTimer::new())
            .header_read_timeout(None)
            .keep_alive(true)
            // The head-size limit is checked on every request of the connection, also when
            // a whole head arrives in one read of a keep-alive connection's grown buffer
            // (`max_buf_size` alone only caps the buffer while a head is incomplete).
            .max_header_size(limits.max_header_bytes.0 as usize)
            .max_buf_size((limits.max_header_bytes.0 as usize).max(8192))
            .max_headers(limits.max_headers as usize);
        let limits = watchdog::Limits {
            idle,
            header_read: Some(limits.header_read_timeout.0),
            min_rate,
        };
        let conn = b.serve_connection(io, svc).with_upgrades();
        let cut = &shared.metrics.slow_clients_cut;
        watchdog::drive(conn, limits, shutdown, activity, cut).await;
    }
}
