use crate::body::Body;
use http::{HeaderValue, Response, StatusCode, header};

/// Who caused an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorSource {
    /// The client (bad request, too large, went away).
    Downstream,
    /// An upstream (refused, timed out, reset).
    Upstream,
    /// The gateway itself.
    Internal,
}

/// What went wrong; each kind has a stable code and an HTTP status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorKind {
    /// No route matched.
    NoRoute,
    /// A route matched the path but not the method; carries the `Allow` value.
    MethodNotAllowed(HeaderValue),
    /// Malformed request (bad host, bad path, conflicting headers).
    BadRequest,
    /// A request whose body framing cannot be trusted (a repeated or malformed transfer
    /// coding): 400, and the connection is closed, since where the body ends is unknown.
    BadFraming,
    /// A request that uses a feature the gateway does not implement (a transfer coding other
    /// than chunked, RFC 9112 section 6.1): 501, and the connection is closed.
    NotImplemented,
    /// Request body larger than allowed.
    PayloadTooLarge,
    /// Request head larger than allowed.
    HeadersTooLarge,
    /// Host does not match the TLS server name.
    MisdirectedRequest,
    /// No upstream connection could be made (refused, unreachable, connect timeout).
    UpstreamConnect,
    /// No free pooled connection within the queue timeout.
    UpstreamPoolExhausted,
    /// Every target of the upstream is out of rotation (ejected by outlier detection or
    /// failing its health checks): answered at once instead of waiting for timeouts.
    NoHealthyTarget,
    /// The upstream's circuit breaker is open; carries the `Retry-After` value (seconds
    /// until it lets probes through).
    CircuitOpen(HeaderValue),
    /// A rate limit refused the request: 429 with `Retry-After` (seconds).
    RateLimited(HeaderValue),
    /// The rate limiter's shared store is unavailable and its policy is `fail_closed`: 503.
    RateLimitUnavailable,
    /// Too many requests of one key in flight (`concurrency_limit` with `status: 503`).
    ConcurrencyLimited,
    /// The upstream has its most requests in flight and its wait queue is full or the wait
    /// ran out (the bulkhead).
    UpstreamSaturated,
    /// The upstream sent no response head in time.
    UpstreamTimeout,
    /// The request asked for a stored response only (`Cache-Control: only-if-cached`) and
    /// the cache has none it may use: 504 (RFC 9111 section 5.2.1.7).
    NotCached,
    /// The upstream broke the exchange (reset, protocol error, closed early).
    UpstreamReset,
    /// The gateway is shutting down.
    ShuttingDown,
    /// The route's API is past its sunset (`deprecation.gone_after_sunset`): 410.
    Gone,
    /// An upstream's answer is larger than a body transformation may hold: 502.
    ResponseTooLarge,
    /// A body transformation failed on a response, or did not finish in time (a jq filter's
    /// error or deadline, an output that is not JSON): 502.
    TransformFailed,
    /// The request names no API version, there is no default, and no unversioned route
    /// takes it: 400.
    VersionRequired,
    /// A failure injected on purpose (`fault_injection`), with the status it was given.
    Injected(StatusCode),
    /// The request does not match its API description (`request_validation`): 400, with
    /// what failed (a JSON object whose members join the error body: `errors`, ...).
    Invalid(std::sync::Arc<serde_json::Value>),
    /// The request body's media type is not one the API takes (`request_validation`): 415.
    UnsupportedMediaType,
    /// A required call of a composition failed (or the composition went over its budget):
    /// 502, with which call and why (a JSON object whose members join the error body).
    CallFailed(std::sync::Arc<serde_json::Value>),
    /// A required call of a composition did not answer in time, or the composition's
    /// deadline passed: 504, with which call.
    CallTimedOut(std::sync::Arc<serde_json::Value>),
    /// No valid credential; carries the `WWW-Authenticate` challenge.
    Unauthorized(Option<HeaderValue>),
    /// Authenticated (or not needed) but not allowed: ACL, IP rules, bot rules, CORS.
    Forbidden,
    /// An authentication service (forward auth, introspection, JWKS) could not answer: the
    /// request is refused (fail closed).
    AuthUnavailable,
    /// A bug or an unexpected internal state.
    Internal,
}

impl ErrorKind {
    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            ErrorKind::NoRoute => StatusCode::NOT_FOUND,
            ErrorKind::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ErrorKind::BadRequest | ErrorKind::BadFraming => StatusCode::BAD_REQUEST,
            ErrorKind::NotImplemented => StatusCode::NOT_IMPLEMENTED,
            ErrorKind::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorKind::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ErrorKind::MisdirectedRequest => StatusCode::MISDIRECTED_REQUEST,
            ErrorKind::UpstreamConnect | ErrorKind::UpstreamReset => StatusCode::BAD_GATEWAY,
            ErrorKind::UpstreamPoolExhausted
            | ErrorKind::NoHealthyTarget
            | ErrorKind::CircuitOpen(_)
            | ErrorKind::UpstreamSaturated
            | ErrorKind::RateLimitUnavailable
            | ErrorKind::ConcurrencyLimited
            | ErrorKind::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            ErrorKind::UpstreamTimeout | ErrorKind::NotCached => StatusCode::GATEWAY_TIMEOUT,
            ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorKind::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ErrorKind::Forbidden => StatusCode::FORBIDDEN,
            ErrorKind::AuthUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::Injected(s) => *s,
            ErrorKind::Gone => StatusCode::GONE,
            ErrorKind::ResponseTooLarge | ErrorKind::TransformFailed => StatusCode::BAD_GATEWAY,
            ErrorKind::VersionRequired | ErrorKind::Invalid(_) => StatusCode::BAD_REQUEST,
            ErrorKind::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorKind::CallFailed(_) => StatusCode::BAD_GATEWAY,
            ErrorKind::CallTimedOut(_) => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// A stable machine-readable code, part of the public error body.
    pub fn code(&self) -> &'static str {
        match self {
            ErrorKind::NoRoute => "no_route",
            ErrorKind::MethodNotAllowed(_) => "method_not_allowed",
            ErrorKind::BadRequest => "bad_request",
            ErrorKind::BadFraming => "bad_framing",
            ErrorKind::NotImplemented => "not_implemented",
            ErrorKind::PayloadTooLarge => "payload_too_large",
            ErrorKind::HeadersTooLarge => "headers_too_large",
            ErrorKind::MisdirectedRequest => "misdirected_request",
            ErrorKind::UpstreamConnect => "upstream_connect_failed",
            ErrorKind::UpstreamPoolExhausted => "upstream_busy",
            ErrorKind::NoHealthyTarget => "no_healthy_target",
            ErrorKind::CircuitOpen(_) => "circuit_open",
            ErrorKind::RateLimited(_) => "rate_limited",
            ErrorKind::RateLimitUnavailable => "rate_limit_unavailable",
            ErrorKind::ConcurrencyLimited => "concurrency_limited",
            ErrorKind::UpstreamSaturated => "upstream_saturated",
            ErrorKind::UpstreamTimeout => "upstream_timeout",
            ErrorKind::NotCached => "not_cached",
            ErrorKind::UpstreamReset => "upstream_reset",
            ErrorKind::ShuttingDown => "shutting_down",
            ErrorKind::Internal => "internal_error",
            ErrorKind::Unauthorized(_) => "unauthorized",
            ErrorKind::Forbidden => "forbidden",
            ErrorKind::AuthUnavailable => "auth_unavailable",
            ErrorKind::Injected(_) => "fault_injected",
            ErrorKind::Gone => "gone",
            ErrorKind::ResponseTooLarge => "response_too_large",
            ErrorKind::TransformFailed => "transform_failed",
            ErrorKind::VersionRequired => "version_required",
            ErrorKind::Invalid(_) => "validation_failed",
            ErrorKind::UnsupportedMediaType => "unsupported_media_type",
            ErrorKind::CallFailed(_) => "call_failed",
            ErrorKind::CallTimedOut(_) => "call_timeout",
        }
    }

    /// The gRPC status code used when the request is gRPC.
    pub fn grpc_status(&self) -> u8 {
        match self {
            ErrorKind::NoRoute => 12,             // UNIMPLEMENTED
            ErrorKind::MethodNotAllowed(_) => 12, // UNIMPLEMENTED
            ErrorKind::BadRequest | ErrorKind::MisdirectedRequest | ErrorKind::BadFraming => 3, // INVALID_ARGUMENT
            ErrorKind::NotImplemented => 12, // UNIMPLEMENTED
            ErrorKind::PayloadTooLarge | ErrorKind::HeadersTooLarge | ErrorKind::RateLimited(_) => {
                8
            } // RESOURCE_EXHAUSTED
            ErrorKind::UpstreamTimeout | ErrorKind::CallTimedOut(_) => 4, // DEADLINE_EXCEEDED
            ErrorKind::CallFailed(_) => 14,  // UNAVAILABLE
            ErrorKind::NotCached => 14,      // UNAVAILABLE
            ErrorKind::UpstreamConnect | ErrorKind::UpstreamReset | ErrorKind::ShuttingDown => 14, // UNAVAILABLE
            ErrorKind::UpstreamPoolExhausted
            | ErrorKind::NoHealthyTarget
            | ErrorKind::CircuitOpen(_)
            | ErrorKind::UpstreamSaturated
            | ErrorKind::RateLimitUnavailable
            | ErrorKind::ConcurrencyLimited => 14, // UNAVAILABLE
            ErrorKind::Internal => 13,        // INTERNAL
            ErrorKind::Unauthorized(_) => 16, // UNAUTHENTICATED
            ErrorKind::Forbidden => 7,        // PERMISSION_DENIED
            ErrorKind::AuthUnavailable => 14, // UNAVAILABLE
            ErrorKind::Gone => 12,            // UNIMPLEMENTED
            ErrorKind::VersionRequired
            | ErrorKind::Invalid(_)
            | ErrorKind::UnsupportedMediaType => 3, // INVALID_ARGUMENT
            ErrorKind::ResponseTooLarge => 8, // RESOURCE_EXHAUSTED
            ErrorKind::TransformFailed => 13, // INTERNAL
            // As gRPC maps HTTP statuses.
            ErrorKind::Injected(s) => match s.as_u16() {
                400 => 13,
                401 => 16,
                403 => 7,
                404 => 12,
                429 | 502 | 503 | 504 => 14,
                _ => 2,
            },
        }
    }

    /// Whether the client connection must be closed after this answer: the request's body
    /// framing is unknown, so the next bytes cannot be read as a request.
    pub fn closes_connection(&self) -> bool {
        matches!(self, ErrorKind::BadFraming | ErrorKind::NotImplemented)
    }

    /// Who is to blame.
    pub fn source(&self) -> ErrorSource {
        match self {
            ErrorKind::BadRequest
            | ErrorKind::BadFraming
            | ErrorKind::NotImplemented
            | ErrorKind::PayloadTooLarge
            | ErrorKind::HeadersTooLarge
            | ErrorKind::MisdirectedRequest
            | ErrorKind::Unauthorized(_)
            | ErrorKind::RateLimited(_)
            | ErrorKind::ConcurrencyLimited
            | ErrorKind::NotCached
            | ErrorKind::Forbidden
            | ErrorKind::Gone
            | ErrorKind::VersionRequired
            | ErrorKind::Invalid(_)
            | ErrorKind::UnsupportedMediaType => ErrorSource::Downstream,
            ErrorKind::NoRoute | ErrorKind::MethodNotAllowed(_) => ErrorSource::Downstream,
            ErrorKind::UpstreamConnect
            | ErrorKind::UpstreamPoolExhausted
            | ErrorKind::NoHealthyTarget
            | ErrorKind::CircuitOpen(_)
            | ErrorKind::UpstreamSaturated
            | ErrorKind::UpstreamTimeout
            | ErrorKind::UpstreamReset
            | ErrorKind::CallFailed(_)
            | ErrorKind::CallTimedOut(_) => ErrorSource::Upstream,
            ErrorKind::ShuttingDown
            | ErrorKind::Internal
            | ErrorKind::AuthUnavailable
            | ErrorKind::Injected(_)
            | ErrorKind::ResponseTooLarge
            | ErrorKind::TransformFailed
            | ErrorKind::RateLimitUnavailable => ErrorSource::Internal,
        }
    }
}

/// A failure the gateway answers itself. The detail goes to the log, never to the client.
#[derive(Debug, thiserror::Error)]
#[error("{}: {detail}", kind.code())]
pub struct GatewayError {
    /// What went wrong.
    pub kind: ErrorKind,
    /// Details for the log.
    pub detail: String,
    /// For a failed upstream call: whether the request may be sent again (set by the call,
    /// kept when the error crosses the exchange stage); `Never` for everything else.
    pub retry: Retry,
}

/// Whether a request that failed upstream may be sent again (on another target, or the same
/// one). The upstream call classifies its failures (decision 0014).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Retry {
    /// The upstream did not process the request (no connection, no free connection, a
    /// refused HTTP/2 stream): safe for any method.
    Safe,
    /// The request may have reached the upstream, which sent no response (reset, closed,
    /// timed out before the response head): safe for idempotent methods only.
    Idempotent,
    /// Not to be sent again: the client's body failed, or the failure is not the upstream's.
    #[default]
    Never,
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

impl GatewayError {
    /// A new error.
    pub fn new(kind: ErrorKind, detail: impl Into<String>) -> Self {
        Self {
            kind,
            detail: detail.into(),
            retry: Retry::Never,
        }
    }

    /// Whether a request with `method` may be sent again after this error.
    pub fn retryable(&self, method: &http::Method) -> bool {
        match self.retry {
            Retry::Safe => true,
            Retry::Idempotent => idempotent(method),
            Retry::Never => false,
        }
    }

    /// The one place errors become HTTP responses: a small JSON body with the stable code and
    /// the request id, or, for gRPC requests, HTTP 200 with `grpc-status` and `grpc-message`.
    pub fn into_response(&self, request_id: &str, grpc: bool) -> Response<Body> {
        let mut builder = Response::builder();
        if grpc {
            let status = self.kind.grpc_status();
            builder = builder
                .status(StatusCode::OK)
                .header(header::CONTENT_TYPE, "application/grpc")
                .header("grpc-status", HeaderValue::from(u16::from(status)))
                .header("grpc-message", HeaderValue::from_static(self.kind.code()));
            return builder
                .body(Body::Empty)
                .unwrap_or_else(|_| Response::new(Body::Empty));
        }
        let mut body = serde_json::json!({
            "error": { "code": self.kind.code(), "status": self.kind.status().as_u16(), "request_id": request_id }
        });
        if let (
            ErrorKind::Invalid(details)
            | ErrorKind::CallFailed(details)
            | ErrorKind::CallTimedOut(details),
            Some(serde_json::Value::Object(e)),
        ) = (&self.kind, body.get_mut("error"))
            && let serde_json::Value::Object(details) = &**details
        {
            for (k, v) in details {
                e.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
        builder = builder
            .status(self.kind.status())
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::CACHE_CONTROL, "no-store");
        if self.kind.closes_connection() {
            builder = builder.header(header::CONNECTION, "close");
        }
        match &self.kind {
            ErrorKind::MethodNotAllowed(allow) => {
                builder = builder.header(header::ALLOW, allow.clone());
            }
            ErrorKind::Unauthorized(Some(challenge)) => {
                builder = builder.header(header::WWW_AUTHENTICATE, challenge.clone());
            }
            ErrorKind::CircuitOpen(after) | ErrorKind::RateLimited(after) => {
                builder = builder.header(header::RETRY_AFTER, after.clone());
            }
            _ => {}
        }
        let mut bytes = body.to_string().into_bytes();
        bytes.push(b'\n');
        builder
            .body(Body::full(bytes))
            .unwrap_or_else(|_| Response::new(Body::Empty))
    }
}

impl GatewayError {
    /// The error for a client request body that failed while being forwarded: too large
    /// (413), stalled or malformed (400). The client's fault, never the upstream's.
    pub fn client_body(e: &(dyn std::error::Error + 'static)) -> Self {
        if e.is::<crate::BodyTooLarge>() {
            return Self::new(
                ErrorKind::PayloadTooLarge,
                "request body exceeded the limit while streaming",
            );
        }
        if e.is::<crate::BodyIdle>() {
            return Self::new(ErrorKind::BadRequest, "client request body stalled");
        }
        Self::new(ErrorKind::BadRequest, format!("client request body: {e}"))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn json_and_grpc_shapes() {
        let e = GatewayError::new(ErrorKind::UpstreamTimeout, "secret detail");
        let r = e.into_response("rid-1", false);
        assert_eq!(r.status(), StatusCode::GATEWAY_TIMEOUT);
        let body = r.into_body().collect().await.unwrap().to_bytes();
        let j: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(j["error"]["code"], "upstream_timeout");
        assert_eq!(j["error"]["request_id"], "rid-1");
        assert!(
            !String::from_utf8_lossy(&body).contains("secret detail"),
            "details never reach the client"
        );
        let g = e.into_response("rid-1", true);
        assert_eq!(g.status(), StatusCode::OK);
        assert_eq!(g.headers()["grpc-status"], "4");
        let allow = GatewayError::new(
            ErrorKind::MethodNotAllowed(HeaderValue::from_static("GET")),
            "",
        );
        assert_eq!(
            allow.into_response("r", false).headers()[header::ALLOW],
            "GET"
        );
        // An injected fault keeps its status, and gRPC clients see what gRPC maps it to.
        let f = GatewayError::new(ErrorKind::Injected(StatusCode::SERVICE_UNAVAILABLE), "");
        assert_eq!(f.into_response("r", false).status(), 503);
        assert_eq!(f.into_response("r", true).headers()["grpc-status"], "14");
        assert_eq!(
            ErrorKind::Injected(StatusCode::IM_A_TEAPOT).grpc_status(),
            2,
            "UNKNOWN"
        );
    }
}
