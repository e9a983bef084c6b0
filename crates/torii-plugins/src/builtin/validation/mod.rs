//! `request_validation`: requests are checked against their API description before they
//! reach the upstream: path, query and header parameters and the JSON body, against an
//! OpenAPI 3.0/3.1 operation (a file named in the config; the operation found by its
//! `operationId` or by `METHOD /path`) or against inline JSON Schemas. A request that does
//! not match gets 400 `validation_failed` listing every failure (where, what was expected,
//! what came; at most `max_errors`), a body of a media type the operation does not take gets
//! 415. Responses can be checked too, in report-only mode: a response that does not match its
//! documented schema is logged and counted, never changed or held back.
//!
//! Everything is prepared at load: the document is read and parsed once per load, every
//! schema compiled once (a document that does not parse, a schema that is not valid, a
//! reference that does not resolve are config errors with their place). Parameters are
//! checked in the request phase; the body, only when the operation describes one, is read (up
//! to `max_body`, 413 beyond) in the exchange stage, checked, and sent on as it came.

pub mod openapi;
pub mod report;
pub mod rules;

use crate::{BuildCtx, ConfigError, Phase, PluginFactory, ResultCounters};
use bytes::Bytes;
use openapi::{Found, Spec};
use report::Violations;
use rules::{Place, Prim, ResponseRule, Rules, Shape};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;
use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use torii_config::Seg;
use torii_config::values::ByteSize;
use torii_core::{
    Body, ErrorKind, ExchangeFuture, Flow, GatewayError, Next, Plugin, Replay, RequestContext,
};

/// Settings of `request_validation`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RequestValidationConfig {
    /// The OpenAPI document and the operation this route serves.
    #[serde(default)]
    pub openapi: Option<OpenApiOperation>,
    /// Without `openapi`: the JSON Schema (2020-12) of the JSON request body.
    #[serde(default)]
    pub body: Option<Value>,
    /// Without `openapi`: whether a request must have a body (default: true when `body` is
    /// set).
    #[serde(default)]
    pub body_required: Option<bool>,
    /// Without `openapi`: parameters, written as OpenAPI parameter objects
    /// (`{name: limit, in: query, schema: {type: integer, maximum: 100}}`).
    #[serde(default)]
    pub parameters: Vec<Value>,
    /// Without `openapi`: the JSON Schema of JSON `2xx` responses, for `responses: report`.
    #[serde(default)]
    pub response_body: Option<Value>,
    /// `report`: responses are checked against their documented schema, and one that does not
    /// match is logged and counted (never blocked). Default `off`.
    #[serde(default)]
    pub responses: ResponseMode,
    /// The largest body checked; a larger request body gets 413, a larger response is not
    /// checked (counted `response_unchecked`). Default 1MiB, at most 64MiB.
    #[serde(default = "default_max_body")]
    pub max_body: ByteSize,
    /// The most failures listed in a 400 (the rest are counted). Default 20, 1 to 100.
    #[serde(default = "default_max_errors")]
    pub max_errors: u32,
}

/// Where the API description is.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OpenApiOperation {
    /// The OpenAPI 3.0 or 3.1 document (YAML or JSON), relative to the working directory.
    pub spec: String,
    /// The operation: its `operationId` (`getOrder`) or `METHOD /path` as the document writes
    /// it (`GET /orders/{id}`).
    pub operation: String,
}

/// Whether responses are checked.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ResponseMode {
    /// Not checked.
    #[default]
    Off,
    /// Checked, and failures logged and counted; the response is never changed.
    Report,
}

fn default_max_body() -> ByteSize {
    ByteSize(1 << 20)
}

fn default_max_errors() -> u32 {
    20
}

/// The plugin type.
pub struct RequestValidation;

fn bad(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::at(
        key,
        message,
        "see docs/plugins.md#request_validation; e.g. `openapi: {spec: api.yaml, operation: getOrder}`",
    )
}

/// Where the inline schemas sit in the document [`inline`] writes.
const INLINE_BODY: &str = "/paths/~1/post/requestBody/content/*~1*/schema";
const INLINE_RESPONSE: &str = "/paths/~1/post/responses/2XX/content/*~1*/schema";

/// A schema's own references (`#/$defs/Item`) made to point where the schema now sits
/// (`#<at>/$defs/Item`), so a standard schema with local definitions works inline.
fn rebase(schema: &Value, at: &str) -> Value {
    match schema {
        // A schema with its own `$id` is a resource of its own: its references are its own.
        Value::Object(m) if m.contains_key("$id") => schema.clone(),
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| {
                    let v = match (k.as_str(), v) {
                        ("$ref", Value::String(r)) if r.starts_with("#/") || r == "#" => {
                            Value::String(format!("#{at}{}", &r[1..]))
                        }
                        // Values, not schemas.
                        ("enum" | "const" | "default" | "examples" | "example", v) => v.clone(),
                        // Names to schemas: every value is a schema.
                        (k, Value::Object(named)) if openapi::NAME_MAPS.contains(&k) => {
                            Value::Object(
                                named
                                    .iter()
                                    .map(|(n, s)| (n.clone(), rebase(s, at)))
                                    .collect(),
                            )
                        }
                        (_, v) => rebase(v, at),
                    };
                    (k.clone(), v)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(|v| rebase(v, at)).collect()),
        other => other.clone(),
    }
}

/// The inline settings written as a one-operation OpenAPI 3.1 document.
fn inline(c: &RequestValidationConfig) -> Value {
    let parameters: Vec<Value> = c
        .parameters
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let mut p = p.clone();
            if let Some(schema) = p.get("schema") {
                let at = format!("/paths/~1/post/parameters/{i}/schema");
                p["schema"] = rebase(schema, &at);
            }
            p
        })
        .collect();
    let mut op = serde_json::json!({ "parameters": parameters });
    if let Some(body) = &c.body {
        op["requestBody"] = serde_json::json!({
            "required": c.body_required.unwrap_or(true),
            "content": { "*/*": { "schema": rebase(body, INLINE_BODY) } },
        });
    }
    if let Some(r) = &c.response_body {
        op["responses"] = serde_json::json!({
            "2XX": { "content": { "*/*": { "schema": rebase(r, INLINE_RESPONSE) } } }
        });
    }
    serde_json::json!({ "openapi": "3.1.0", "paths": { "/": { "post": op } } })
}

impl PluginFactory for RequestValidation {
    const NAME: &'static str = "request_validation";
    const PHASE: Phase = Phase::Transform;
    // First of its phase: the request is checked as the client sent it, before any
    // transformation.
    const ORDER: u16 = 5;
    type Config = RequestValidationConfig;

    fn build(
        c: RequestValidationConfig,
        ctx: &BuildCtx<'_>,
    ) -> Result<Arc<dyn Plugin>, ConfigError> {
        if !ctx.scope.starts_with("route:") {
            return Err(ConfigError::here(
                "request_validation is set on a route: it checks one operation",
                "move it under the route's `plugins`",
            ));
        }
        if c.max_body.0 == 0 || c.max_body.0 > super::response_transform::MAX_BODY_LIMIT {
            return Err(bad("max_body", "must be between 1B and 64MiB"));
        }
        if !(1..=100).contains(&c.max_errors) {
            return Err(bad("max_errors", "must be between 1 and 100"));
        }
        let inline_set = c.body.is_some() || !c.parameters.is_empty() || c.response_body.is_some();
        let (spec, found, key) = match &c.openapi {
            Some(o) => {
                if inline_set {
                    return Err(bad(
                        "openapi",
                        "`openapi` describes the operation: `body`, `body_required`, \
                         `parameters` and `response_body` are for routes without one",
                    ));
                }
                let spec = ctx
                    .per_load(&o.spec, || Spec::load(&o.spec))
                    .map_err(|e| bad_at(&["openapi", "spec"], e))?;
                let found = spec
                    .operation(&o.operation)
                    .map_err(|e| bad_at(&["openapi", "operation"], e))?;
                (spec, found, vec!["openapi", "operation"])
            }
            None => {
                if !inline_set {
                    return Err(ConfigError::here(
                        "request_validation checks nothing",
                        "name an OpenAPI operation (`openapi: {spec: api.yaml, operation: \
                         getOrder}`) or give `body` / `parameters`",
                    ));
                }
                let tree = torii_config::yaml::Node {
                    kind: torii_config::yaml::Kind::Null,
                    pos: torii_config::Pos { line: 0, col: 0 },
                    end: torii_config::Pos { line: 0, col: 0 },
                    raw: None,
                };
                let spec = Spec::new("the inline schemas", inline(&c), tree)
                    .map_err(|e| ConfigError::here(e, "check the inline schemas"))?;
                let found = Found {
                    pointer: "/paths/~1/post".into(),
                    item: "/paths/~1".into(),
                    method: http::Method::POST,
                    path: "/".into(),
                };
                (Arc::new(spec), found, Vec::new())
            }
        };
        let mut rules = rules::compile(&spec, &found, c.responses == ResponseMode::Report)
            .map_err(|e| bad_at(&key, e))?;
        if c.openapi.is_none()
            && let Some(b) = rules.body.as_mut()
        {
            b.json_only = true;
        }
        if let Some(route) = ctx.route_params {
            for p in rules.params.iter().filter(|p| p.place == Place::Path) {
                if !route.iter().any(|r| **r == *p.name) {
                    return Err(bad_at(
                        &key,
                        format!(
                            "the operation's path parameter `{}` is not a parameter of this \
                             route (it has: {})",
                            p.name,
                            if route.is_empty() {
                                "none".to_string()
                            } else {
                                route.join(", ")
                            }
                        ),
                    ));
                }
            }
        }
        let counters = Arc::new(Counters::default());
        ctx.register_counters("request_validation", counters.clone());
        Ok(Arc::new(Validate {
            rules,
            max_body: c.max_body.0 as usize,
            max_errors: c.max_errors as usize,
            counters,
            operation: format!("{} {}", found.method, found.path).into(),
        }))
    }
}

fn bad_at(path: &[&str], message: String) -> ConfigError {
    ConfigError {
        path: path.iter().map(|k| Seg::Key(k.to_string())).collect(),
        message,
        hint: "check the OpenAPI document and the operation named".into(),
    }
}

/// Requests and responses checked, by result.
#[derive(Default)]
struct Counters {
    valid: AtomicU64,
    invalid: AtomicU64,
    response_valid: AtomicU64,
    response_invalid: AtomicU64,
    response_unchecked: AtomicU64,
}

impl ResultCounters for Counters {
    fn values(&self) -> Vec<(&'static str, u64)> {
        let l = |c: &AtomicU64| c.load(Ordering::Relaxed);
        vec![
            ("valid", l(&self.valid)),
            ("invalid", l(&self.invalid)),
            ("response_valid", l(&self.response_valid)),
            ("response_invalid", l(&self.response_invalid)),
            ("response_unchecked", l(&self.response_unchecked)),
        ]
    }
}

fn add(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

struct Validate {
    rules: Rules,
    max_body: usize,
    max_errors: usize,
    counters: Arc<Counters>,
    /// `POST /orders`, for logs.
    operation: Arc<str>,
}

/// Parameter failures kept for the body check, so one answer lists both.
#[derive(Clone)]
struct Pending(Violations);

/// A parameter's text as the JSON its schema describes: a number when it reads as one, and
/// so on; text that does not read as its type stays text (and fails its schema's `type`).
fn typed(text: &str, prim: Prim) -> Value {
    let parsed = match prim {
        Prim::String => None,
        Prim::Integer => text.parse::<i64>().ok().map(Value::from),
        Prim::Number => text
            .parse::<f64>()
            .ok()
            .filter(|n| n.is_finite())
            .and_then(serde_json::Number::from_f64)
            .map(Value::Number),
        Prim::Boolean => match text {
            "true" => Some(Value::Bool(true)),
            "false" => Some(Value::Bool(false)),
            _ => None,
        },
    };
    parsed.unwrap_or_else(|| Value::String(text.to_string()))
}

/// Checks every parameter of the request against `rules`.
pub fn check_params(
    rules: &Rules,
    req: &http::request::Parts,
    ctx: &RequestContext,
    v: &mut Violations,
) {
    for p in &rules.params {
        // The parameter's texts as sent (still encoded for the path and the query: a list is
        // split on its commas before it is decoded, so `a%2Cb` is one item).
        let raws: Vec<&str> = match p.place {
            Place::Path => ctx
                .params
                .iter()
                .filter(|(k, _)| **k == *p.name)
                .map(|(_, val)| val.as_str())
                .collect(),
            Place::Query => req.uri.query().map_or_else(Vec::new, |q| {
                q.split('&')
                    .filter(|pair| !pair.is_empty())
                    .filter_map(|pair| {
                        let (k, val) = pair.split_once('=').unwrap_or((pair, ""));
                        (form_decode(k) == *p.name).then_some(val)
                    })
                    .collect()
            }),
            Place::Header => p.header.as_ref().map_or_else(Vec::new, |h| {
                req.headers
                    .get_all(h)
                    .iter()
                    .map(|val| std::str::from_utf8(val.as_bytes()).unwrap_or("\u{fffd}"))
                    .collect()
            }),
        };
        let decode = |raw| decode_param(p.place, raw);
        // A header's field lines are one list (RFC 9110 section 5.3): joined, not repeated.
        let joined;
        let raws = if p.place == Place::Header && raws.len() > 1 {
            joined = raws.join(", ");
            vec![joined.as_str()]
        } else {
            raws
        };
        let place = p.place.as_str();
        let pointer = &*p.pointer;
        if raws.is_empty() {
            if p.required {
                v.push(place, pointer, "required", "a value", "nothing");
            }
            continue;
        }
        match p.shape {
            Shape::Scalar(_) | Shape::Json if raws.len() > 1 => {
                // A repeated scalar: which value counts differs between servers, so every
                // value is checked and the repetition itself refused.
                v.push(
                    place,
                    pointer,
                    "maxItems",
                    "one value",
                    &format!("{} values", raws.len()),
                );
                for raw in &raws {
                    let value = scalar(&decode(raw), p.shape);
                    v.check(&p.schema, &value, place, pointer);
                }
            }
            Shape::Scalar(_) | Shape::Json => {
                let value = scalar(&decode(raws[0]), p.shape);
                v.check(&p.schema, &value, place, pointer);
            }
            Shape::Array {
                item,
                explode,
                delimiter,
            } => {
                // Split after decoding: clients commonly encode the commas (`1%2C2`).
                let items: Vec<Value> = if explode && p.place == Place::Query {
                    raws.iter().map(|r| typed(&decode(r), item)).collect()
                } else {
                    raws.iter()
                        .flat_map(|r| {
                            decode(r)
                                .split(delimiter)
                                .map(|t| typed(t.trim(), item))
                                .collect::<Vec<_>>()
                        })
                        .collect()
                };
                v.check(&p.schema, &Value::Array(items), place, pointer);
            }
        }
    }
}

/// A parameter's text as sent, decoded as its place encodes it.
fn decode_param(place: Place, raw: &str) -> Cow<'_, str> {
    match place {
        Place::Path => percent_encoding::percent_decode_str(raw).decode_utf8_lossy(),
        Place::Query => form_decode(raw),
        Place::Header => Cow::Borrowed(raw),
    }
}

/// A form-encoded query component decoded (`+` is a space).
fn form_decode(s: &str) -> Cow<'_, str> {
    if !s.contains(['%', '+']) {
        return Cow::Borrowed(s);
    }
    let spaced = s.replace('+', " ");
    Cow::Owned(
        percent_encoding::percent_decode_str(&spaced)
            .decode_utf8_lossy()
            .into_owned(),
    )
}

/// One parameter value as its schema reads it.
fn scalar(text: &str, shape: Shape) -> Value {
    match shape {
        Shape::Scalar(prim) => typed(text, prim),
        // A parameter described as JSON: its text parsed, or left as text (and failing).
        _ => serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_string())),
    }
}

/// Checks a JSON body's bytes against `schema`.
pub fn check_json(schema: &jsonschema::Validator, bytes: &[u8], place: &str, v: &mut Violations) {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(value) => v.check(schema, &value, place, ""),
        Err(e) => v.push(place, "", "json", "JSON text", &e.to_string()),
    }
}

impl Validate {
    fn refuse(&self, v: Violations, ctx: &RequestContext) -> GatewayError {
        add(&self.counters.invalid);
        tracing::debug!(
            route = ctx.route.as_deref().unwrap_or(""),
            operation = &*self.operation,
            "request_validation refused: {}",
            v.summary()
        );
        GatewayError::new(
            ErrorKind::Invalid(Arc::new(v.into_value())),
            "the request does not match its API description",
        )
    }

    /// Checks the body (with the parameter failures found before) and gives it back to send.
    async fn check_body(
        &self,
        rule: &rules::BodyRule,
        req: &http::request::Parts,
        body: Body,
        ctx: &RequestContext,
    ) -> Result<Body, GatewayError> {
        let mut v = ctx
            .extensions
            .get::<Pending>()
            .map(|p| p.0.clone())
            .unwrap_or_else(|| Violations::new(self.max_errors));
        let none = http_body::Body::size_hint(&body).exact() == Some(0);
        // 415, or with parameter failures already found, one 400 listing them and this.
        let unsupported = |mut v: Violations, detail: String| {
            if v.is_empty() {
                add(&self.counters.invalid);
                return GatewayError::new(ErrorKind::UnsupportedMediaType, detail);
            }
            v.push(
                "body",
                "",
                "contentMediaType",
                "a media type the operation takes, as JSON",
                &detail,
            );
            self.refuse(v, ctx)
        };
        let finish = |v: Violations, body: Body| {
            if v.is_empty() {
                add(&self.counters.valid);
                Ok(body)
            } else {
                Err(self.refuse(v, ctx))
            }
        };
        let missing = |v: &mut Violations| {
            if rule.required {
                v.push("body", "", "required", "a request body", "nothing");
            }
        };
        if none {
            missing(&mut v);
            return finish(v, body);
        }
        let content_type = req
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|t| t.to_str().ok())
            .map(|t| {
                t.split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase()
            });
        let Some(media) = content_type else {
            // A body of unknown length may still be empty (a chunked request with no data):
            // read it (within max_body) before refusing it for its missing type.
            if http_body::Body::size_hint(&body).exact().is_some() {
                return Err(unsupported(v, "a request body without Content-Type".into()));
            }
            return match body
                .into_replay(self.max_body)
                .await
                .map_err(|e| GatewayError::client_body(&*e))?
            {
                Replay::Complete {
                    data,
                    trailers: None,
                } if data.iter().all(|d| d.is_empty()) => {
                    missing(&mut v);
                    finish(v, Body::Empty)
                }
                _ => Err(unsupported(v, "a request body without Content-Type".into())),
            };
        };
        let Some(matched) = rules::best(&rule.media, &media) else {
            return Err(unsupported(
                v,
                format!("`{media}` is not a media type of {}", self.operation),
            ));
        };
        let Some(schema) = &matched.schema else {
            // A media type the operation takes without a JSON schema (a file upload, say):
            // it streams on unchecked.
            return finish(v, body);
        };
        if !super::util::is_json(&media) {
            // A schema under a range (`*/*`, `application/*`) is for the JSON types it
            // covers; any other type streams on unchecked, unless the schema is the route's
            // inline `body` (JSON only).
            if rule.json_only {
                return Err(unsupported(
                    v,
                    format!("`{media}` is not JSON, and the route's `body` schema is for JSON"),
                ));
            }
            return finish(v, body);
        }
        if super::util::coding(&req.headers) != super::util::Coding::Identity {
            return Err(unsupported(
                v,
                format!("a `{media}` body in a content coding cannot be checked"),
            ));
        }
        let Some(whole) = super::util::read_json_body(body, self.max_body).await? else {
            if v.is_empty() {
                return Err(GatewayError::new(
                    ErrorKind::PayloadTooLarge,
                    format!(
                        "JSON body over request_validation's max_body of {} bytes",
                        self.max_body
                    ),
                ));
            }
            v.push(
                "body",
                "",
                "maxLength",
                &format!("at most {} bytes", self.max_body),
                "more",
            );
            return Err(self.refuse(v, ctx));
        };
        if whole.is_empty() {
            missing(&mut v);
            return finish(v, Body::Empty);
        }
        if whole.len() <= super::util::INLINE_WORK {
            check_json(schema, &whole, "body", &mut v);
        } else {
            // A large document is parsed and checked off the runtime's threads.
            let (schema, body) = (schema.clone(), whole.clone());
            v = tokio::task::spawn_blocking(move || {
                check_json(&schema, &body, "body", &mut v);
                v
            })
            .await
            .map_err(|e| GatewayError::new(ErrorKind::Internal, format!("validation: {e}")))?;
        }
        finish(v, Body::full(whole))
    }

    /// Starts checking a response, when it has a documented JSON schema; the response goes
    /// on at once either way.
    fn watch(
        &self,
        rule: &ResponseRule,
        req: &http::request::Parts,
        resp: http::Response<Body>,
        ctx: &RequestContext,
    ) -> http::Response<Body> {
        let status = resp.status();
        if req.method == http::Method::HEAD
            || status.is_informational()
            || status == http::StatusCode::NO_CONTENT
            || status == http::StatusCode::NOT_MODIFIED
        {
            return resp;
        }
        let route: Arc<str> = ctx.route.clone().unwrap_or_else(|| Arc::from(""));
        let Some(media) = rule.for_status(status.as_u16()) else {
            add(&self.counters.response_invalid);
            tracing::warn!(
                route = &*route,
                operation = &*self.operation,
                status = status.as_u16(),
                "response_validation: the status is not documented"
            );
            return resp;
        };
        let schema = super::util::uncoded_media(resp.headers())
            .filter(|m| super::util::is_json(m))
            .and_then(|m| rules::best(media, &m))
            .and_then(|m| m.schema.clone());
        let Some(schema) = schema else {
            add(&self.counters.response_unchecked);
            return resp;
        };
        let (parts, body) = resp.into_parts();
        let watch = Watch {
            schema,
            chunks: Vec::new(),
            len: 0,
            max: self.max_body,
            max_errors: self.max_errors,
            counters: self.counters.clone(),
            route,
            operation: self.operation.clone(),
            status: status.as_u16(),
            open: true,
        };
        http::Response::from_parts(parts, Body::boxed(torii_core::Layered::new(body, watch)))
    }
}

/// Keeps a response's bytes (up to `max`) as they stream, and checks them at the end.
struct Watch {
    schema: Arc<jsonschema::Validator>,
    chunks: Vec<Bytes>,
    len: usize,
    max: usize,
    max_errors: usize,
    counters: Arc<Counters>,
    route: Arc<str>,
    operation: Arc<str>,
    status: u16,
    /// Still collecting (not too large, not broken, not checked yet).
    open: bool,
}

impl Watch {
    fn give_up(&mut self) {
        if self.open {
            self.open = false;
            self.chunks = Vec::new();
            add(&self.counters.response_unchecked);
        }
    }

    fn check(&mut self) {
        if !self.open {
            return;
        }
        self.open = false;
        let whole = std::mem::take(&mut self.chunks).concat();
        let mut v = Violations::new(self.max_errors);
        check_json(&self.schema, &whole, "response", &mut v);
        if v.is_empty() {
            add(&self.counters.response_valid);
        } else {
            add(&self.counters.response_invalid);
            tracing::warn!(
                route = &*self.route,
                operation = &*self.operation,
                status = self.status,
                "response_validation: {}",
                v.summary()
            );
        }
    }
}

impl torii_core::Concern for Watch {
    fn polled(
        &mut self,
        polled: torii_core::Polled,
        end: bool,
        _: &mut std::task::Context<'_>,
    ) -> torii_core::Polled {
        use std::task::Poll;
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                match frame.data_ref() {
                    Some(d) if self.open => {
                        self.len += d.len();
                        if self.len > self.max {
                            self.give_up();
                        } else if !d.is_empty() {
                            self.chunks.push(d.clone());
                        }
                    }
                    Some(_) => {}
                    None => self.give_up(),
                }
                if end {
                    self.check();
                }
            }
            Poll::Ready(None) => self.check(),
            Poll::Ready(Some(Err(_))) => self.give_up(),
            Poll::Pending => {}
        }
        polled
    }

    fn dropped(&mut self, ended: bool) {
        if ended {
            self.check();
        } else {
            // The client went away before the end: nothing to say about the response.
            self.give_up();
        }
    }
}

impl Plugin for Validate {
    fn wraps_exchange(&self) -> bool {
        self.rules.body.is_some() || self.rules.responses.is_some()
    }

    fn on_request<'a>(
        &'a self,
        req: &'a mut http::request::Parts,
        ctx: &'a mut RequestContext,
    ) -> Result<Flow<'a>, GatewayError> {
        if self.rules.params.is_empty() {
            return Ok(Flow::Continue);
        }
        let mut v = Violations::new(self.max_errors);
        check_params(&self.rules, req, ctx, &mut v);
        if self.rules.body.is_some() {
            // The body is checked in the exchange stage; one answer lists everything.
            if !v.is_empty() {
                ctx.extensions.insert(Pending(v));
            }
            return Ok(Flow::Continue);
        }
        if v.is_empty() {
            add(&self.counters.valid);
            Ok(Flow::Continue)
        } else {
            Err(self.refuse(v, ctx))
        }
    }

    fn exchange<'a>(
        &'a self,
        req: &'a http::request::Parts,
        body: Body,
        ctx: &'a RequestContext,
        next: Next<'a>,
    ) -> ExchangeFuture<'a> {
        Box::pin(async move {
            let body = match &self.rules.body {
                Some(rule) => self.check_body(rule, req, body, ctx).await?,
                None => {
                    if self.rules.params.is_empty() {
                        add(&self.counters.valid);
                    }
                    body
                }
            };
            let resp = next.run(req, body, ctx).await?;
            Ok(match &self.rules.responses {
                Some(rule) => self.watch(rule, req, resp, ctx),
                None => resp,
            })
        })
    }
}
