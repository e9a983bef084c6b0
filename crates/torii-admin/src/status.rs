//! Read-only views: `/config` (revision and counts), `/status` (listeners, upstream health,
//! Redis) and `/openapi.json`.

use crate::Admin;
use crate::reply::{ApiError, Reply, json_reply, with_etag};
use bytes::Bytes;
use http::StatusCode;
use http_body_util::Full;
use serde_json::{Value, json};

impl Admin {
    pub(crate) fn openapi_reply(&self) -> Reply {
        let body = self.openapi.get_or_init(|| {
            let schema = self
                .gw
                .upgrade()
                .map(|g| torii_config::json_schema(&*g.shared().catalog))
                .unwrap_or(Value::Null);
            Bytes::from(crate::openapi::document(&schema).to_string())
        });
        let mut r = http::Response::new(Full::new(body.clone()));
        r.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        r
    }

    pub(crate) fn config_summary(&self) -> Result<Reply, ApiError> {
        let gw = self.gateway()?;
        let snap = gw.shared().snapshot.load();
        let source = snap.source.load_full();
        let rt = &source.runtime;
        let c = &snap.config;
        let counts = json!({
            "upstreams": c.upstreams.len(),
            "routes": c.routes.len(),
            "consumers": snap.consumers.directory().len(),
            "plugins": c.plugins.0.len(),
        });
        let runtime: serde_json::Map<String, Value> = torii_config::runtime::KINDS
            .iter()
            .map(|k| {
                (
                    k.section().to_string(),
                    json!(rt.of(*k).map_or(0, |m| m.len())),
                )
            })
            .collect();
        Ok(with_etag(
            json_reply(
                StatusCode::OK,
                &json!({
                    "revision": rt.revision,
                    "file": source.name,
                    "store": self.store_kind(),
                    "effective": counts,
                    "runtime": runtime,
                }),
            ),
            rt.revision,
        ))
    }

    fn store_kind(&self) -> &'static str {
        self.store.kind()
    }

    pub(crate) async fn status(&self) -> Result<Reply, ApiError> {
        let gw = self.gateway()?;
        let snap = gw.shared().snapshot.load_full();
        let mut listeners = Vec::new();
        for l in &snap.config.listeners {
            let addr = gw.listener_addr(&l.name).await;
            listeners.push(json!({
                "name": l.name,
                "bind": l.bind.0.to_string(),
                "address": addr.map(|a| a.to_string()),
                "tls": l.tls.is_some(),
            }));
        }
        Ok(json_reply(
            StatusCode::OK,
            &json!({
                "ready": gw.shared().is_ready(),
                "revision": snap.source.load().runtime.revision,
                "store": self.store_kind(),
                "listeners": listeners,
                "open_connections": gw.shared().active_connections(),
                "upstreams": torii_proxy::upstream_status::all_json(&snap),
                "redis": snap.redis.as_ref().map(|r| torii_proxy::upstream_status::redis_json(r)),
            }),
        ))
    }
}
