//! Whole-body calls for plugins (auth services, token introspection, JWKS): the same upstream
//! machinery as the proxy (pools with their caps, the upstream's CA and client certificate,
//! HTTP/1.1 or HTTP/2), with the whole exchange bounded in time and the answer in size.

use crate::upstream::{CallOptions, Upstream};
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Limited};
use std::sync::Arc;
use std::time::Duration;
use torii_core::Body;

/// A cheap-to-clone handle on one upstream for whole-body calls.
#[derive(Clone)]
pub struct Client {
    upstream: Arc<Upstream>,
}

/// Why a whole-body call failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// No complete answer in time.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// Connection or protocol failure.
    #[error("request failed: {0}")]
    Transport(String),
    /// The body exceeded the limit.
    #[error("response body larger than {0} bytes")]
    TooLarge(usize),
}

impl Client {
    /// A client for `upstream`.
    pub fn new(upstream: Arc<Upstream>) -> Self {
        Self { upstream }
    }

    /// The upstream it calls.
    pub fn upstream(&self) -> &Arc<Upstream> {
        &self.upstream
    }

    /// Sends `req` (its URI's path and query; an absolute URI's authority is not used: the
    /// upstream's target is) and reads the whole answer: head and body, at most `max_body`
    /// bytes, within `timeout`. Failed tries are retried as the upstream's `retries` say
    /// (on another target, within the retry budget), and every answer counts towards its
    /// target's health, as for proxied requests.
    pub async fn call(
        &self,
        req: Request<Bytes>,
        timeout: Duration,
        max_body: usize,
    ) -> Result<Response<Bytes>, FetchError> {
        let (head, body) = req.into_parts();
        let exchange = async {
            // The upstream's own retries apply: the body is in memory, so it can be resent.
            let resp = self
                .upstream
                .call(&head, Body::full(body), CallOptions::default())
                .await
                .map_err(|e| FetchError::Transport(e.to_string()))?;
            let (parts, body) = resp.response.into_parts();
            let body = Limited::new(body, max_body)
                .collect()
                .await
                .map_err(|e| {
                    if e.downcast_ref::<http_body_util::LengthLimitError>()
                        .is_some()
                    {
                        FetchError::TooLarge(max_body)
                    } else {
                        FetchError::Transport(e.to_string())
                    }
                })?
                .to_bytes();
            Ok(Response::from_parts(parts, body))
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| FetchError::Timeout(timeout))?
    }
}
