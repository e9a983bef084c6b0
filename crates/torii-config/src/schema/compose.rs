//! A composite route (`compose`): named backend calls, run in parallel where they do not
//! depend on each other, and one response built from their results. The templates in here
//! are compiled (and their references checked) by `torii-compose` when the config loads;
//! docs/composition.md is the reference.

use crate::values::{ByteSize, Duration, Method};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;

/// A composition: calls and the response built from them.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Compose {
    /// The backend calls, by name (a name is how templates refer to the call's JSON result).
    pub calls: BTreeMap<String, ComposeCall>,
    /// The response sent to the client.
    #[serde(default)]
    pub response: ComposeResponse,
    /// The whole composition's deadline: calls still running then are cut, and their
    /// failure policy applies (10s by default).
    #[serde(default = "deadline")]
    pub deadline: Duration,
    /// The most backend calls one request may make, fan-outs included (64 by default).
    #[serde(default = "max_calls")]
    pub max_calls: u32,
    /// The most response bytes one request may read from all its calls (16MiB by default).
    #[serde(default = "max_bytes")]
    pub max_bytes: ByteSize,
    /// What a request over `max_calls` or `max_bytes` gets: `fail` (502, naming the call that
    /// went over) or `partial` (the calls over budget fail, and their failure policy applies).
    #[serde(default)]
    pub over_budget: OverBudget,
    /// Copy the identity headers the gateway sets after authentication (`X-Consumer-*`)
    /// onto every call (`true` by default).
    #[serde(default = "yes")]
    pub forward_identity: bool,
    /// Client request headers copied onto every call (`accept-language`, ...).
    #[serde(default)]
    pub forward_headers: Vec<crate::values::HeaderName>,
    /// The largest client request body the templates may read as JSON (`{body.x}`): 1MiB by
    /// default.
    #[serde(default = "max_body")]
    pub max_request_body: ByteSize,
}

/// What exceeding a composition's budget does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OverBudget {
    /// The request fails with 502.
    #[default]
    Fail,
    /// The calls over budget fail; their failure policy decides.
    Partial,
}

/// One backend call.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ComposeCall {
    /// The upstream (by name).
    pub upstream: String,
    /// The method (`GET` by default).
    #[serde(default)]
    pub method: Option<Method>,
    /// The path: a template (`/users/{params.id}`, `/orders/{user.id}/items`). Values are
    /// percent-encoded as path segments.
    pub path: String,
    /// Query parameters: name to template. A parameter whose value renders empty is left out.
    #[serde(default)]
    pub query: BTreeMap<String, String>,
    /// Request headers: name to template.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// A JSON body: a JSON template (sent with `Content-Type: application/json`).
    #[serde(default)]
    pub body: Option<Value>,
    /// Run only when every condition holds; otherwise the call is skipped (its value is its
    /// `default`, or null), and so are the calls that depend on it.
    #[serde(default)]
    pub when: Vec<Condition>,
    /// Call once per element of a list in an earlier result (or in batches of them).
    #[serde(default)]
    pub for_each: Option<ForEach>,
    /// This call's time limit, retries included (5s by default).
    #[serde(default = "call_timeout")]
    pub timeout: Duration,
    /// The largest answer body (1MiB by default); a larger one fails the call.
    #[serde(default = "max_body")]
    pub max_body: ByteSize,
    /// What a failure of this call does: `required` (the request fails with 502, or 504 when
    /// it timed out), `optional` (the value is `default`), `stale` (the last good value of
    /// the same request, up to `stale_for` old; else `default` when set; else as `required`).
    #[serde(default)]
    pub on_failure: FailurePolicy,
    /// The value of a skipped call, of an optional call that failed, and of a stale call
    /// with nothing kept (null when absent).
    #[serde(default)]
    pub default: Option<Value>,
    /// How old a kept value a `stale` call may use (10m by default).
    #[serde(default)]
    pub stale_for: Option<Duration>,
    /// Answer statuses taken as a result besides 2xx (`[404]`: a missing user is `null`, or
    /// the 404's JSON body).
    #[serde(default)]
    pub accept_status: Vec<u16>,
}

/// What a failed call does to the composition.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FailurePolicy {
    /// The request fails: 502 (504 when the call timed out), with a JSON error naming it.
    #[default]
    Required,
    /// The call's value is its `default`; the response is marked incomplete.
    Optional,
    /// The last good value of the same request (up to `stale_for` old); the response is
    /// marked incomplete.
    Stale,
}

/// A condition over the request or earlier results: `value` is a reference (`query.expand`,
/// `user.tier`); exactly one of `equals`, `not_equals`, `one_of` and `present`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Condition {
    /// What is tested: a reference such as `user.tier` or `query.expand`.
    pub value: String,
    /// It equals this JSON value (request values are strings: `"true"`).
    #[serde(default)]
    pub equals: Option<Value>,
    /// It differs from this JSON value.
    #[serde(default)]
    pub not_equals: Option<Value>,
    /// It is one of these.
    #[serde(default)]
    pub one_of: Option<Vec<Value>>,
    /// It is there and not null (`true`), or missing or null (`false`).
    #[serde(default)]
    pub present: Option<bool>,
}

/// Per-item fan-out: the call is made for each element of a list (`{item...}` in its
/// templates), or for batches of their keys (`{keys}`).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ForEach {
    /// The list: a reference into an earlier result (`orders.items`).
    pub items: String,
    /// The field of each element that identifies what is fetched (`product_id`); identical
    /// keys are requested once. The element itself when absent.
    #[serde(default)]
    pub key: Option<String>,
    /// The most of this call's requests in flight at once (8 by default).
    #[serde(default = "concurrency")]
    pub concurrency: u32,
    /// Put up to this many keys in one request: `{keys}` renders them joined by
    /// `separator`. The call's value is then the list of every batch's answer elements.
    /// One request per key when absent (the value is then the list of answers, one per
    /// element of `items`, in order).
    #[serde(default)]
    pub batch: Option<u32>,
    /// What joins the keys of a batch in `{keys}` (`,` by default).
    #[serde(default = "comma")]
    pub separator: String,
    /// Where each batch answer holds its list (`data.products`); the answer itself when
    /// absent.
    #[serde(default)]
    pub results: Option<String>,
}

/// The composed response.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ComposeResponse {
    /// Its status (200 by default).
    #[serde(default)]
    pub status: Option<u16>,
    /// Take the status of this call's answer instead.
    #[serde(default)]
    pub status_from: Option<String>,
    /// Response headers: name to template.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Copy these headers from one call's answer.
    #[serde(default)]
    pub copy_headers: Option<CopyHeaders>,
    /// The body: a JSON template over the results (every call's value under its name when
    /// absent). docs/composition.md lists the operators (`$merge`, `$from`, `$join`, ...).
    #[serde(default)]
    pub body: Option<Value>,
    /// When the body is an object and some calls failed, the failures are listed under this
    /// key (`[{"call": "orders", "error": "upstream_timeout"}]`); empty: not listed. The
    /// `X-Torii-Complete: false` header is set either way.
    #[serde(default = "failed_field")]
    pub failed_field: String,
}

impl Default for ComposeResponse {
    fn default() -> Self {
        Self {
            status: None,
            status_from: None,
            headers: BTreeMap::new(),
            copy_headers: None,
            body: None,
            failed_field: failed_field(),
        }
    }
}

/// Headers copied from one call's answer.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CopyHeaders {
    /// The call.
    pub from: String,
    /// The header names.
    pub names: Vec<crate::values::HeaderName>,
}

fn deadline() -> Duration {
    Duration::secs(10)
}
fn call_timeout() -> Duration {
    Duration::secs(5)
}
fn max_calls() -> u32 {
    64
}
fn max_bytes() -> ByteSize {
    ByteSize::mib(16)
}
fn max_body() -> ByteSize {
    ByteSize::mib(1)
}
fn concurrency() -> u32 {
    8
}
fn comma() -> String {
    ",".to_string()
}
fn yes() -> bool {
    true
}
fn failed_field() -> String {
    "_failed".to_string()
}
