//! `request_transform`: reshapes the request on its way upstream, so a public API can differ
//! from the internal one: headers and query parameters removed, renamed, set and added, the
//! path replaced and the method changed, with values from templates
//! ([`crate::template`]) over route parameters, headers, query parameters, the consumer, token
//! claims and the request id. Templates are parsed and checked at load; every value is
//! rendered from the request as the client sent it (before any change), then the changes are
//! applied in a fixed order: remove, rename, set, add. A `path` replaces the route's own
//! `rewrite`.

use super::changes::{Changes, Compiled, HeaderSource, compile};
use crate::template::Template;
use crate::{BuildCtx, ConfigError, Phase, PluginFactory};
use http::{HeaderName, HeaderValue};
use percent_encoding::{AsciiSet, CONTROLS};
use schemars::JsonSchema;
use serde::Deserialize;
use std::sync::Arc;
use torii_config::Seg;
use torii_core::{
    Body, ErrorKind, ExchangeFuture, Flow, GatewayError, Next, Plugin, RequestContext,
};

/// Settings of `request_transform`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RequestTransformConfig {
    /// Request header changes.
    #[serde(default)]
    pub headers: Changes,
    /// Query parameter changes (names compared decoded: `t%65nant` is `tenant`).
    #[serde(default)]
    pub query: Changes,
    /// A template for the path sent upstream (the query is kept, with its changes):
    /// `/internal/orders/{params.id}`.
    #[serde(default)]
    pub path: Option<String>,
    /// The method sent upstream (`POST`).
    #[serde(default)]
    pub method: Option<torii_config::values::Method>,
    /// Operations on JSON request bodies (`application/json` and `+json` media types), as in
    /// `response_transform`.
    #[serde(default)]
    pub json: Option<super::json_ops::JsonOpsConfig>,
    /// The largest JSON body transformed; a larger one gets 413. Default 1MiB, at most 64MiB.
    #[serde(default = "default_max_body")]
    pub max_body: torii_config::values::ByteSize,
}

fn default_max_body() -> torii_config::values::ByteSize {
    torii_config::values::ByteSize(1 << 20)
}

/// The plugin type.
pub struct RequestTransform;

/// Characters escaped in text put into query values (`&`, `=`, `#`, `+`, `%`, space and the
/// like).
const QUERY_VALUE: &AsciiSet = &PARAM_SENT.add(b'%');

/// For route parameters, which come percent-encoded as sent: `%` stays, so they are not
/// encoded twice (a `+` in a path is a plus: it is encoded).
const PARAM_SENT: &AsciiSet = &QUERY_SENT.add(b'+');

/// For query parameters, form-encoded as sent: `%` and `+` (a space) stay as they are.
const QUERY_SENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'&')
    .add(b'=')
    .add(b'<')
    .add(b'>');

impl PluginFactory for RequestTransform {
    const NAME: &'static str = "request_transform";
    const PHASE: Phase = Phase::Transform;
    // After `request_headers` (10): the more general transformation has the last word.
    const ORDER: u16 = 15;
    const PER_CONSUMER: bool = true;
    type Config = RequestTransformConfig;

    fn build(
        c: RequestTransformConfig,
        ctx: &BuildCtx<'_>,
    ) -> Result<Arc<dyn Plugin>, ConfigError> {
        let params = ctx.route_params;
        let headers = compile(
            "headers",
            &c.headers,
            params,
            |n| HeaderName::from_bytes(n.as_bytes()).ok(),
            HeaderSource::new,
        )?;
        let query = compile(
            "query",
            &c.query,
            params,
            |n| query_name(n).then(|| Box::<str>::from(n)),
            Ok,
        )?;
        let path = match &c.path {
            None => None,
            Some(p) => {
                let t = Template::parse(p, params).map_err(|e| {
                    ConfigError::at("path", e, "e.g. `path: /internal/orders/{params.id}`")
                })?;
                if !p.starts_with('/') {
                    return Err(ConfigError::at(
                        "path",
                        format!("`{p}` does not start with `/`"),
                        "e.g. `path: /internal/orders/{params.id}`",
                    ));
                }
                Some(t)
            }
        };
        if c.json.is_some() && !ctx.scope.starts_with("route:") && ctx.scope != "global" {
            return Err(ConfigError::at(
                "json",
                "JSON body operations are set on a route or globally, not per consumer or plan",
                "move `json` to the route's `request_transform`",
            ));
        }
        let json = match &c.json {
            None => None,
            Some(j) => super::json_ops::JsonOps::new(j, params).map_err(|mut e| {
                e.path.insert(0, Seg::Key("json".into()));
                e
            })?,
        };
        if c.max_body.0 == 0 || c.max_body.0 > super::response_transform::MAX_BODY_LIMIT {
            return Err(ConfigError::at(
                "max_body",
                "must be between 1B and 64MiB",
                "bodies are held in memory while transformed; e.g. `max_body: 1MiB`",
            ));
        }
        if json.is_none()
            && headers.remove.is_empty()
            && headers.rename.is_empty()
            && headers.set.is_empty()
            && headers.add.is_empty()
            && query.remove.is_empty()
            && query.rename.is_empty()
            && query.set.is_empty()
            && query.add.is_empty()
            && path.is_none()
            && c.method.is_none()
        {
            return Err(ConfigError::here(
                "request_transform changes nothing",
                "e.g. `headers: {set: {x-tenant: \"{consumer.id}\"}}` or `path: /v2/{params.id}`",
            ));
        }
        Ok(Arc::new(Transform {
            headers,
            query,
            path,
            method: c.method.map(|m| m.0),
            json,
            max_body: c.max_body.0 as usize,
        }))
    }
}

/// The JSON `set` values rendered from the request as it came.
#[derive(Clone)]
struct JsonValues(Arc<Vec<serde_json::Value>>);

struct Transform {
    headers: Compiled<HeaderName, HeaderSource>,
    query: Compiled<Box<str>, Template>,
    path: Option<Template>,
    method: Option<http::Method>,
    json: Option<super::json_ops::JsonOps>,
    max_body: usize,
}

impl Transform {
    /// The query values to set or add, percent-encoded (values from the query or the path
    /// are not encoded twice); those that render empty are left out.
    fn rendered(
        ops: &[(Box<str>, Template)],
        req: &http::request::Parts,
        ctx: &RequestContext,
    ) -> Vec<(usize, String)> {
        ops.iter()
            .enumerate()
            .filter_map(|(i, (_, t))| {
                let mut v = String::new();
                t.render_query(req, ctx, (QUERY_VALUE, QUERY_SENT, PARAM_SENT), &mut v);
                (!v.is_empty()).then_some((i, v))
            })
            .collect()
    }

    fn headers(&self, req: &mut http::request::Parts, ctx: &RequestContext) {
        // Values come from the request as it came: all of them first, then the changes.
        let h = &self.headers;
        let values: Vec<Option<HeaderValue>> = h
            .set
            .iter()
            .chain(&h.add)
            .map(|(_, v)| v.value(req, ctx))
            .collect();
        h.apply_values(&mut req.headers, values);
    }

    /// The new query string, when the query changes.
    fn query(&self, req: &http::request::Parts, ctx: &RequestContext) -> Option<String> {
        let q = &self.query;
        if q.remove.is_empty() && q.rename.is_empty() && q.set.is_empty() && q.add.is_empty() {
            return None;
        }
        let set = Self::rendered(&q.set, req, ctx);
        let add = Self::rendered(&q.add, req, ctx);
        let mut pairs: Vec<(String, String)> = req
            .uri
            .query()
            .unwrap_or("")
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                (k.to_string(), v.to_string())
            })
            .collect();
        pairs.retain(|(k, _)| !q.remove.iter().any(|r| decoded_is(k, r)));
        for (from, to) in &q.rename {
            for (k, _) in pairs.iter_mut().filter(|(k, _)| decoded_is(k, from)) {
                *k = to.to_string();
            }
        }
        // What the client sent under a `set` name goes, even when the value renders empty.
        pairs.retain(|(k, _)| !q.set.iter().any(|(n, _)| decoded_is(k, n)));
        for (i, v) in set {
            if let Some((n, _)) = q.set.get(i) {
                pairs.push((n.to_string(), v));
            }
        }
        for (i, v) in add {
            if let Some((n, _)) = q.add.get(i) {
                pairs.push((n.to_string(), v));
            }
        }
        Some(
            pairs
                .iter()
                .map(|(k, v)| {
                    if v.is_empty() {
                        k.clone()
                    } else {
                        format!("{k}={v}")
                    }
                })
                .collect::<Vec<_>>()
                .join("&"),
        )
    }
}

/// Whether `n` can be written in a query as it is: printable ASCII, none of `& = # % +`,
/// spaces, quotes or angle brackets (the name is put into the URI unencoded).
fn query_name(n: &str) -> bool {
    !n.is_empty()
        && n.bytes().all(|b| {
            b.is_ascii_graphic()
                && !matches!(b, b'&' | b'=' | b'#' | b'%' | b'+' | b'"' | b'<' | b'>')
        })
}

/// Whether a query parameter's name as sent (form-encoded) is `name`: `t%65nant` and
/// `tenant` are one name to the upstream, so they are one name here.
fn decoded_is(sent: &str, name: &str) -> bool {
    if !sent.contains(['%', '+']) {
        return sent == name;
    }
    form_urlencoded::parse(sent.as_bytes())
        .next()
        .is_some_and(|(k, _)| k == name)
}

/// Whether a rendered path may be sent: a valid URI path with no query, fragment or
/// backslash, and no `.` or `..` segment (also percent-encoded), so a value pasted in from
/// the request cannot climb out of the template's place.
fn safe_path(p: &str) -> bool {
    let dot = |seg: &str| {
        let s = seg.to_ascii_lowercase().replace("%2e", ".");
        s == "." || s == ".."
    };
    p.starts_with('/')
        && !p.contains(['?', '#', '\\'])
        && p.parse::<http::uri::PathAndQuery>().is_ok()
        && !p.split('/').any(dot)
}

/// Whether a request body is JSON this plugin may transform: a JSON media type, no content
/// coding.
fn json_body(h: &http::HeaderMap) -> bool {
    super::util::uncoded_media(h).is_some_and(|m| super::util::is_json(&m))
}

impl Plugin for Transform {
    fn wraps_exchange(&self) -> bool {
        self.json.is_some()
    }

    fn exchange<'a>(
        &'a self,
        req: &'a http::request::Parts,
        body: Body,
        ctx: &'a RequestContext,
        next: Next<'a>,
    ) -> ExchangeFuture<'a> {
        let Some(ops) = self.json.as_ref().filter(|_| json_body(&req.headers)) else {
            // A JSON body in a content coding cannot be read: refused, so the operations
            // are never skipped by compressing the body.
            if self.json.is_some()
                && super::util::media(&req.headers).is_some_and(|m| super::util::is_json(&m))
                && super::util::coding(&req.headers) != super::util::Coding::Identity
            {
                return Box::pin(async {
                    Err(GatewayError::new(
                        ErrorKind::UnsupportedMediaType,
                        "a JSON request body in a content coding cannot be transformed",
                    ))
                });
            }
            return next.run(req, body, ctx);
        };
        Box::pin(async move {
            let Some(whole) = super::util::read_json_body(body, self.max_body).await? else {
                return Err(GatewayError::new(
                    ErrorKind::PayloadTooLarge,
                    format!(
                        "JSON body over request_transform's max_body of {} bytes",
                        self.max_body
                    ),
                ));
            };
            // A body that is not JSON after all goes on as it came.
            // A body that says it is JSON and is not (or holds a member name the operations
            // cannot address) is refused: forwarding it unchanged would skip the operations.
            // `set` templates were rendered from the request as it came (on_request).
            let values = match ctx.extensions.get::<JsonValues>() {
                Some(v) => v.0.clone(),
                None => Arc::new(ops.values(req, ctx)),
            };
            let out = match ops.run(&whole, &values, self.max_body).await {
                Ok(Some(out)) => out,
                Ok(None) => {
                    return Err(GatewayError::new(
                        ErrorKind::BadRequest,
                        "the JSON request body does not parse",
                    ));
                }
                // The filter failed on what the client sent.
                Err(super::jq::JqError::Failed(e)) => {
                    return Err(GatewayError::new(
                        ErrorKind::BadRequest,
                        format!("request_transform's jq filter: {e}"),
                    ));
                }
                Err(e) => {
                    return Err(GatewayError::new(
                        ErrorKind::TransformFailed,
                        format!("request_transform's jq filter: {e:?}"),
                    ));
                }
            };
            let mut head = req.clone();
            head.headers
                .insert(http::header::CONTENT_LENGTH, HeaderValue::from(out.len()));
            head.headers.remove(http::header::TRANSFER_ENCODING);
            next.run(&head, Body::full(out), ctx).await
        })
    }

    fn on_request<'a>(
        &'a self,
        req: &'a mut http::request::Parts,
        ctx: &'a mut RequestContext,
    ) -> Result<Flow<'a>, GatewayError> {
        // Everything is rendered from the request as it came, then changed: the JSON `set`
        // templates too, though the body is read later.
        if let Some(ops) = self.json.as_ref().filter(|o| o.has_templates())
            && json_body(&req.headers)
        {
            let values = JsonValues(Arc::new(ops.values(req, ctx)));
            ctx.extensions.insert(values);
        }
        let path = self.path.as_ref().map(|t| {
            let mut s = String::new();
            t.render(req, ctx, &mut s);
            s
        });
        let query = self.query(req, ctx);
        self.headers(req, ctx);
        if let Some(m) = &self.method {
            req.method = m.clone();
        }
        if let Some(p) = path {
            // A rendered value that cannot be in a path (a parameter with a space, say): the
            // request is refused rather than sent somewhere else.
            if !safe_path(&p) {
                return Err(GatewayError::new(
                    torii_core::ErrorKind::BadRequest,
                    format!("request_transform made an invalid path: {p:?}"),
                ));
            }
            ctx.upstream_path = Some(p);
        }
        if let Some(q) = query {
            let pq = if q.is_empty() {
                req.uri.path().to_string()
            } else {
                format!("{}?{q}", req.uri.path())
            };
            let mut parts = req.uri.clone().into_parts();
            if let Ok(pq) = pq.parse() {
                parts.path_and_query = Some(pq);
                if let Ok(u) = http::Uri::from_parts(parts) {
                    req.uri = u;
                }
            }
        }
        Ok(Flow::Continue)
    }
}
