//! One target of an upstream: its address and its pool.

use crate::pool::TargetPool;
use std::sync::Arc;

/// One target of an upstream.
#[derive(Clone)]
pub struct Target {
    /// `host:port` (`host` alone for the scheme's default port), as sent in Host when
    /// `host_header: target` and as HTTP/2 `:authority`.
    pub authority: http::HeaderValue,
    /// `host:port` as text, for logs.
    pub name: Arc<str>,
    /// Its pool.
    pub pool: Arc<TargetPool>,
    /// Whether the target speaks TLS (`https://`).
    pub tls: bool,
}
