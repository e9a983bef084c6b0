//! `request_size_limit`: per-route limits on the body (413) and on the header count and size
//! (431), below the server-wide limits. The body limit is checked on Content-Length before
//! anything is read, and enforced while a chunked body streams.

use crate::{BuildCtx, ConfigError, Phase, PluginFactory};
use schemars::JsonSchema;
use serde::Deserialize;
use std::sync::Arc;
use torii_config::values::ByteSize;
use torii_core::{ErrorKind, Flow, GatewayError, Plugin, RequestContext};

/// Settings of `request_size_limit`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RequestSizeLimitConfig {
    /// Largest request body.
    #[serde(default)]
    pub max_body: Option<ByteSize>,
    /// Most header fields in a request.
    #[serde(default)]
    pub max_headers: Option<u32>,
    /// Largest total of header names and values.
    #[serde(default)]
    pub max_header_bytes: Option<ByteSize>,
}

/// The plugin type.
pub struct RequestSizeLimit;

impl PluginFactory for RequestSizeLimit {
    const NAME: &'static str = "request_size_limit";
    const PHASE: Phase = Phase::Limits;
    const ORDER: u16 = 10;
    const PER_CONSUMER: bool = false;
    type Config = RequestSizeLimitConfig;

    fn build(c: RequestSizeLimitConfig, _: &BuildCtx<'_>) -> Result<Arc<dyn Plugin>, ConfigError> {
        if c.max_body.is_none() && c.max_headers.is_none() && c.max_header_bytes.is_none() {
            return Err(ConfigError::here(
                "request_size_limit needs at least one limit",
                "e.g. `max_body: 1MiB`",
            ));
        }
        Ok(Arc::new(Limits {
            max_body: c.max_body.map(|b| b.0),
            max_headers: c.max_headers.map(|n| n as usize),
            max_header_bytes: c.max_header_bytes.map(|b| b.0),
        }))
    }
}

struct Limits {
    max_body: Option<u64>,
    max_headers: Option<usize>,
    max_header_bytes: Option<u64>,
}

impl Plugin for Limits {
    fn on_request<'a>(
        &'a self,
        req: &'a mut http::request::Parts,
        ctx: &'a mut RequestContext,
    ) -> Result<Flow<'a>, GatewayError> {
        if let Some(max) = self.max_headers
            && req.headers.len() > max
        {
            return Err(GatewayError::new(
                ErrorKind::HeadersTooLarge,
                format!("{} header fields, limit {max}", req.headers.len()),
            ));
        }
        if let Some(max) = self.max_header_bytes {
            let total: u64 = req
                .headers
                .iter()
                .map(|(k, v)| (k.as_str().len() + v.len()) as u64)
                .sum();
            if total > max {
                return Err(GatewayError::new(
                    ErrorKind::HeadersTooLarge,
                    format!("{total} header bytes, limit {max}"),
                ));
            }
        }
        if let Some(max) = self.max_body {
            let declared = req
                .headers
                .get(http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
            if let Some(len) = declared
                && len > max
            {
                return Err(GatewayError::new(
                    ErrorKind::PayloadTooLarge,
                    format!("Content-Length {len} exceeds the route limit {max}"),
                ));
            }
            ctx.body_limit = Some(ctx.body_limit.map_or(max, |l| l.min(max)));
        }
        Ok(Flow::Continue)
    }
}
