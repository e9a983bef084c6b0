//! `request_headers`: set or remove request headers before the request goes upstream. A
//! transformation, so it can also be set per consumer (e.g. a tenant header per client).

use crate::{BuildCtx, ConfigError, Phase, PluginFactory};
use http::{HeaderName, HeaderValue};
use schemars::JsonSchema;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use torii_config::values::HeaderName as ConfigHeaderName;
use torii_core::{Flow, GatewayError, Plugin, RequestContext};

/// Settings of `request_headers`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RequestHeadersConfig {
    /// Headers to set (replacing any value the client sent).
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    /// Headers to remove.
    #[serde(default)]
    pub remove: Vec<ConfigHeaderName>,
}

/// The plugin type.
pub struct RequestHeaders;

impl PluginFactory for RequestHeaders {
    const NAME: &'static str = "request_headers";
    const PHASE: Phase = Phase::Transform;
    const ORDER: u16 = 10;
    const PER_CONSUMER: bool = true;
    type Config = RequestHeadersConfig;

    fn build(c: RequestHeadersConfig, _: &BuildCtx<'_>) -> Result<Arc<dyn Plugin>, ConfigError> {
        let mut set = Vec::with_capacity(c.set.len());
        for (k, v) in &c.set {
            let name = HeaderName::from_bytes(k.as_bytes()).map_err(|_| {
                ConfigError::at(
                    "set",
                    format!("`{k}` is not a header name"),
                    "letters, digits and `-`",
                )
            })?;
            let value = HeaderValue::from_str(v).map_err(|_| {
                ConfigError::at(
                    "set",
                    format!("the value of `{k}` is not a valid header value"),
                    "use printable ASCII",
                )
            })?;
            set.push((name, value));
        }
        Ok(Arc::new(Transform {
            set,
            remove: c.remove.into_iter().map(|h| h.0).collect(),
        }))
    }
}

struct Transform {
    set: Vec<(HeaderName, HeaderValue)>,
    remove: Vec<HeaderName>,
}

impl Plugin for Transform {
    fn on_request<'a>(
        &'a self,
        req: &'a mut http::request::Parts,
        _: &'a mut RequestContext,
    ) -> Result<Flow<'a>, GatewayError> {
        for n in &self.remove {
            req.headers.remove(n);
        }
        for (n, v) in &self.set {
            req.headers.insert(n.clone(), v.clone());
        }
        Ok(Flow::Continue)
    }
}
