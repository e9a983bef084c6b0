//! Upgraded connections (WebSocket): bytes copied both ways until either side closes. No
//! timeout closes an active tunnel.

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use std::sync::Arc;

/// Joins the client's and the upstream's upgraded connections. `slot` keeps the client
/// connection counted (connection cap, open connections, shutdown drain) while the tunnel lives.
pub async fn run(
    client: OnUpgrade,
    upstream: OnUpgrade,
    guard: Option<crate::upstream::ConnGuard>,
    slot: Arc<crate::ConnSlot>,
) {
    let (client, upstream) = match tokio::try_join!(client, upstream) {
        Ok(pair) => pair,
        Err(e) => {
            tracing::debug!(error = %e, "upgrade failed");
            return;
        }
    };
    let mut client = TokioIo::new(client);
    let mut upstream = TokioIo::new(upstream);
    if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
        tracing::debug!(error = %e, "tunnel ended with an error");
    }
    // The upstream connection was consumed by the upgrade; dropping the guard frees its pool
    // slot, dropping `slot` the client connection's.
    drop(guard);
    drop(slot);
}
