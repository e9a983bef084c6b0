//! A failed upstream call and whether it may be tried again.

use torii_core::{ErrorKind, ErrorSource, GatewayError};
pub use torii_core::{Retry, idempotent};

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
    /// The error, with the call's retry class on it (so a stage around the call still knows).
    fn from(e: CallError) -> Self {
        let mut error = e.error;
        error.retry = e.retry;
        error
    }
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&self.error, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The class survives the conversion a stage's `?` makes, so a retry stage can use it.
    #[test]
    fn the_retry_class_crosses_into_gateway_errors() {
        for retry in [Retry::Safe, Retry::Idempotent, Retry::Never] {
            let e: GatewayError =
                CallError::new(GatewayError::new(ErrorKind::UpstreamReset, "reset"), retry).into();
            assert_eq!(e.retry, retry);
        }
        let e: GatewayError = CallError::new(
            GatewayError::new(ErrorKind::UpstreamReset, "reset"),
            Retry::Idempotent,
        )
        .into();
        assert!(e.retryable(&http::Method::GET));
        assert!(!e.retryable(&http::Method::POST));
        assert!(!GatewayError::new(ErrorKind::UpstreamReset, "x").retryable(&http::Method::GET));
    }
}
