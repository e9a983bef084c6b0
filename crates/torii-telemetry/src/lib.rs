//! # torii-telemetry
//!
//! What the gateway reports about the traffic it serves, kept apart from the server so that
//! tracing and per-consumer metering (for billing) can extend it without touching the request
//! path's crate:
//!
//! - [`access_log`]: one JSON line per request, written by its own thread behind a bounded
//!   channel (a full channel drops and counts lines; the request path never blocks).
//! - [`metrics`]: the gateway's Prometheus recorder (no global) and per-route series whose
//!   handles are registered at config load, so requests only bump atomics.

pub mod access_log;
pub mod metrics;
