//! Active health checks: one background task per upstream that has `health_check`, probing
//! every target each `interval` (plus up to `jitter`), never on the request path. Probes are
//! HTTP `GET`s and gRPC `Health/Check` calls sent with `call_target` (so they use the target's
//! pool, TLS and protocol like traffic does) or a bare connection (`tcp`). The task holds the
//! upstream weakly and ends when the last config using the upstream is gone; a reload that
//! keeps the upstream keeps its task and its targets' state.

use crate::members::Members;
use crate::upstream::{CallOptions, Upstream};
use bytes::{Buf, Bytes};
use http_body_util::BodyExt;
use std::sync::{Arc, Weak};
use std::time::Duration;
use torii_config::schema::{HealthCheck, HealthCheckKind};
use torii_core::Body;

/// The most of a probe's answer that is read.
const MAX_PROBE_BODY: usize = 64 * 1024;

/// Starts the checks of `up`, when it has some and a runtime is running (not under
/// `torii validate`).
pub(crate) fn start(up: &Arc<Upstream>, cfg: Option<&HealthCheck>) {
    let (Some(cfg), Ok(rt)) = (cfg, tokio::runtime::Handle::try_current()) else {
        return;
    };
    rt.spawn(run(Arc::downgrade(up), cfg.clone()));
}

async fn run(up: Weak<Upstream>, cfg: HealthCheck) {
    let jitter = |max: Duration| {
        let ms = u64::try_from(max.as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(if ms == 0 { 0 } else { fastrand::u64(..=ms) })
    };
    // The first round soon after the load, spread by the jitter.
    tokio::time::sleep(jitter(cfg.jitter.0)).await;
    loop {
        {
            let Some(up) = up.upgrade() else { return };
            // The targets of now (discovery may change them between rounds).
            let members = up.members();
            let probes = (0..members.targets.len()).map(|i| {
                let (up, members, cfg) = (&up, &members, &cfg);
                async move {
                    let passed = tokio::time::timeout(cfg.timeout.0, probe(up, members, i, cfg))
                        .await
                        .unwrap_or(false);
                    (i, passed)
                }
            });
            for (i, passed) in futures_util::future::join_all(probes).await {
                members
                    .health
                    .probed(i, passed, cfg.healthy_threshold, cfg.unhealthy_threshold);
            }
            // The upstream is not held while the task sleeps.
        }
        tokio::time::sleep(cfg.interval.0 + jitter(cfg.jitter.0)).await;
    }
}

/// One probe of target `i`: whether it passed.
async fn probe(up: &Upstream, members: &Members, i: usize, cfg: &HealthCheck) -> bool {
    let Some(target) = members.targets.get(i) else {
        return false;
    };
    match cfg.kind {
        HealthCheckKind::Tcp => target.pool.probe_connect().await.is_ok(),
        HealthCheckKind::Http => {
            let Ok(req) = http::Request::get(cfg.path.as_str())
                .header(http::header::USER_AGENT, "torii-health-check")
                .body(())
            else {
                return false;
            };
            let (head, ()) = req.into_parts();
            let Ok(resp) = up
                .call_target(target, &head, Body::Empty, CallOptions::default())
                .await
            else {
                return false;
            };
            let status = resp.response.status().as_u16();
            if !cfg.expected_statuses.contains(&status) {
                return false;
            }
            match &cfg.expected_body {
                None => true,
                Some(want) => {
                    let body =
                        http_body_util::Limited::new(resp.response.into_body(), MAX_PROBE_BODY)
                            .collect()
                            .await;
                    body.is_ok_and(|b| {
                        let b = b.to_bytes();
                        memfind(&b, want.as_bytes())
                    })
                }
            }
        }
        HealthCheckKind::Grpc => grpc(up, target, &cfg.grpc_service).await,
    }
}

fn memfind(hay: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || hay.windows(needle.len()).any(|w| w == needle)
}

/// `grpc.health.v1.Health/Check` for `service`: passes on `grpc-status: 0` with status
/// `SERVING` (1).
async fn grpc(up: &Upstream, target: &crate::Target, service: &str) -> bool {
    // HealthCheckRequest { string service = 1; } in one gRPC message frame.
    let mut msg = Vec::with_capacity(service.len() + 2);
    if !service.is_empty() {
        msg.push(0x0a);
        push_varint(&mut msg, service.len() as u64);
        msg.extend_from_slice(service.as_bytes());
    }
    let mut frame = Vec::with_capacity(msg.len() + 5);
    frame.push(0);
    frame.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    frame.extend_from_slice(&msg);
    let Ok(req) = http::Request::post("/grpc.health.v1.Health/Check")
        .header(http::header::CONTENT_TYPE, "application/grpc")
        .header("te", "trailers")
        .header(http::header::USER_AGENT, "torii-health-check")
        .body(())
    else {
        return false;
    };
    let (head, ()) = req.into_parts();
    let Ok(resp) = up
        .call_target(
            target,
            &head,
            Body::full(Bytes::from(frame)),
            CallOptions::default(),
        )
        .await
    else {
        return false;
    };
    let (parts, body) = resp.response.into_parts();
    if parts.status != http::StatusCode::OK {
        return false;
    }
    let Ok(collected) = http_body_util::Limited::new(body, MAX_PROBE_BODY)
        .collect()
        .await
    else {
        return false;
    };
    // Trailers-only answers carry grpc-status in the head.
    let ok_status = collected
        .trailers()
        .and_then(|t| t.get("grpc-status"))
        .or_else(|| parts.headers.get("grpc-status"))
        .is_some_and(|v| v.as_bytes() == b"0");
    let mut body = collected.to_bytes();
    if !ok_status || body.len() < 5 {
        return false;
    }
    body.advance(5);
    serving(&body)
}

/// Whether a HealthCheckResponse says `SERVING`: field 1 (a varint) equals 1.
pub(crate) fn serving(mut msg: &[u8]) -> bool {
    while let Some((&tag, rest)) = msg.split_first() {
        msg = rest;
        let Some(value) = read_varint(&mut msg) else {
            return false;
        };
        match (tag >> 3, tag & 7) {
            (1, 0) => return value == 1,
            (_, 0) => {}
            (_, 2) => {
                let Some(rest) = usize::try_from(value).ok().and_then(|n| msg.get(n..)) else {
                    return false;
                };
                msg = rest;
            }
            _ => return false,
        }
    }
    false
}

fn read_varint(msg: &mut &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = msg.split_first()?;
        *msg = rest;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

fn push_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serving_reads_the_status_field() {
        assert!(serving(&[0x08, 0x01]));
        assert!(!serving(&[0x08, 0x02]));
        assert!(!serving(&[]));
        // An unknown length-delimited field first.
        assert!(serving(&[0x12, 0x02, b'h', b'i', 0x08, 0x01]));
        assert!(!serving(&[0x12, 0x09, b'h']));
    }
}
