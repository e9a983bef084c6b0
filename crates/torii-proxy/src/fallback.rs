//! Masking upstream failures with a route's static answer (`routes[].fallback`), marked
//! `X-Torii-Fallback: static`. The masked failure is still logged and counted as an upstream
//! error. This is the place where the response cache's last good answer will plug in (a
//! fallback that looks the request up in the cache before the static answer).

use crate::bodies::Outgoing;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode};
use torii_core::{Body, GatewayError};

/// A route's static fallback, compiled at load.
pub struct StaticFallback {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
    on_errors: Box<[String]>,
    on_status: Box<[u16]>,
}

impl StaticFallback {
    /// Compiles the config (validated at load: bad headers cannot reach here, and are skipped).
    pub fn new(cfg: &torii_config::schema::Fallback) -> Self {
        let mut headers = header_map(&cfg.headers);
        headers.insert("x-torii-fallback", HeaderValue::from_static("static"));
        Self {
            status: StatusCode::from_u16(cfg.status).unwrap_or(StatusCode::OK),
            headers,
            body: Bytes::copy_from_slice(cfg.body.as_bytes()),
            on_errors: cfg.on_errors.clone().into_boxed_slice(),
            on_status: cfg.on_status.clone().into_boxed_slice(),
        }
    }

    /// Whether an upstream answer with `status` is replaced.
    pub fn replaces(&self, status: StatusCode) -> bool {
        self.on_status.contains(&status.as_u16())
    }

    /// The static answer (`head`: without its body).
    pub fn answer(&self, head: bool) -> Response<Outgoing> {
        let body = if head {
            Body::Empty
        } else {
            Body::full(self.body.clone())
        };
        let mut r = Response::new(Outgoing::Gateway(body));
        *r.status_mut() = self.status;
        *r.headers_mut() = self.headers.clone();
        r
    }

    /// The static answer in place of `result` when it is a failure this fallback masks: an
    /// error whose code is in `on_errors`, or an answer whose status is in `on_status`.
    /// `record` is told the code of a masked error (the metrics still count it).
    pub fn mask(
        &self,
        result: Result<Response<Outgoing>, GatewayError>,
        head: bool,
        record: impl FnOnce(&GatewayError),
    ) -> Result<Response<Outgoing>, GatewayError> {
        match result {
            Err(e) if self.on_errors.iter().any(|c| c == e.kind.code()) => {
                tracing::warn!(error = %e, "upstream error masked by the route's fallback");
                record(&e);
                Ok(self.answer(head))
            }
            Ok(r) if self.replaces(r.status()) => {
                tracing::debug!(
                    status = r.status().as_u16(),
                    "upstream answer replaced by the route's fallback"
                );
                Ok(self.answer(head))
            }
            other => other,
        }
    }
}

/// Configured headers (validated at load) as a header map; the fallbacks' and the direct
/// responses' own headers.
pub(crate) fn header_map(headers: &std::collections::BTreeMap<String, String>) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (k, v) in headers {
        if let (Ok(k), Ok(v)) = (
            HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(v),
        ) {
            map.append(k, v);
        }
    }
    map
}
