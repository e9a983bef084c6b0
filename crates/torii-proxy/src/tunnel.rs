//! Upgraded connections (WebSocket): bytes copied both ways until either side closes. No
//! timeout closes an active tunnel.

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use std::sync::Arc;
use tokio::io::AsyncWriteExt;

/// Joins the client's upgraded connection and the upstream's. `slot` keeps the client
/// connection counted (connection cap, open connections, shutdown drain) while the tunnel lives;
/// the upstream connection left its pool (and freed its slot) at the upgrade.
pub async fn run(
    client: OnUpgrade,
    upstream: torii_upstream::h1::Upgraded,
    slot: Arc<crate::ConnSlot>,
) {
    let client = match client.await {
        Ok(c) => c,
        Err(e) => {
            tracing::debug!(error = %e, "upgrade failed");
            return;
        }
    };
    let mut client = TokioIo::new(client);
    let torii_upstream::h1::Upgraded {
        io: mut up,
        leftover,
        ..
    } = upstream;
    // Bytes the upstream sent right after its 101 head belong to the tunnel.
    if !leftover.is_empty()
        && let Err(e) = client.write_all(&leftover).await
    {
        tracing::debug!(error = %e, "tunnel ended with an error");
        return;
    }
    if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut up).await {
        tracing::debug!(error = %e, "tunnel ended with an error");
    }
    drop(slot);
}
