//! A failed upstream call and whether it may be tried again.

use torii_core::{ErrorKind, ErrorSource, GatewayError};

/// Whether a failed request may be sent again (on another target, or the same one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// The upstream did not process the request (no connection, no free connection, a
    /// refused HTTP/2 stream): safe for any method.
    Safe,
    /// The request may have reached the upstream, which sent no response (reset, closed,
    /// timed out before the response head): safe for idempotent methods only.
    Idempotent,
    /// Not to be sent again: the client's body failed, or the failure is the gateway's.
    Never,
}

/// A failed upstream call: the error the client would get, and whether a second attempt is
/// safe. A second attempt also needs the body again: keep it with [`torii_core::Body::into_replay`].
#[derive(Debug)]
pub struct CallError {
    /// What went wrong (kind, detail), as the client would see it.
    pub error: GatewayError,
    /// Whether the request may be sent again.
    pub retry: Retry,
}

impl CallError {
    /// An error with its retry class.
    pub fn new(error: GatewayError, retry: Retry) -> Self {
        Self { error, retry }
    }

    /// A failure before the request was sent (connect, pool): retryable for any method when
    /// the upstream is at fault.
    pub(crate) fn not_sent(error: GatewayError) -> Self {
        let retry = match error.kind.source() {
            ErrorSource::Upstream => Retry::Safe,
            _ => Retry::Never,
        };
        Self { error, retry }
    }

    /// A failure after (part of) the request was sent: retryable for idempotent methods when
    /// the upstream is at fault.
    pub(crate) fn sent(error: GatewayError) -> Self {
        let retry = match error.kind {
            ErrorKind::UpstreamConnect | ErrorKind::UpstreamPoolExhausted => Retry::Safe,
            ErrorKind::UpstreamReset | ErrorKind::UpstreamTimeout => Retry::Idempotent,
            _ => Retry::Never,
        };
        Self { error, retry }
    }

    /// Whether a request with `method` may be sent again after this error.
    pub fn retryable(&self, method: &http::Method) -> bool {
        match self.retry {
            Retry::Safe => true,
            Retry::Idempotent => idempotent(method),
            Retry::Never => false,
        }
    }
}

impl From<CallError> for GatewayError {
    fn from(e: CallError) -> Self {
        e.error
    }
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&self.error, f)
    }
}

/// Whether a method is idempotent (RFC 9110 9.2.2): such a request may be sent again after a
/// failure that left its outcome unknown.
pub fn idempotent(m: &http::Method) -> bool {
    matches!(
        *m,
        http::Method::GET
            | http::Method::HEAD
            | http::Method::OPTIONS
            | http::Method::PUT
            | http::Method::DELETE
            | http::Method::TRACE
    )
}
