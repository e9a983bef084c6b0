use crate::values::{HeaderName, Method, Regex};
use schemars::JsonSchema;
use serde::Deserialize;
use std::collections::BTreeMap;

/// One entry of the routing table.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// Unique name, used in logs and metrics labels.
    pub name: String,
    /// Restrict the route to these listeners (by name); all listeners when empty.
    #[serde(default)]
    pub listeners: Vec<String>,
    /// What requests this route takes.
    #[serde(rename = "match")]
    pub matches: RouteMatch,
    /// The upstream (by name) to proxy to. Exactly one of `upstream`, `split`,
    /// `direct_response` and `compose`.
    #[serde(default)]
    pub upstream: Option<String>,
    /// Share the route's requests between upstreams by weight (a canary release), optionally
    /// keeping each client on one of them, with overrides that send chosen requests (testers)
    /// to a chosen upstream.
    #[serde(default)]
    pub split: Option<Split>,
    /// Answer directly, without an upstream (health endpoints, mocks).
    #[serde(default)]
    pub direct_response: Option<DirectResponse>,
    /// Answer with a composition of backend calls (see docs/composition.md).
    #[serde(default)]
    pub compose: Option<Box<super::Compose>>,
    /// Change the path sent upstream; the query string is kept.
    #[serde(default)]
    pub rewrite: Option<Rewrite>,
    /// Plugins for this route; each replaces the global settings of the same plugin.
    #[serde(default)]
    pub plugins: super::PluginMap,
    /// Global plugins that do not apply to this route (e.g. `[key_auth]` on a public route).
    #[serde(default)]
    pub disable_plugins: Vec<String>,
    /// A consumer (by name) for requests that present no credential at all; without it, a
    /// route with authentication plugins answers such requests with 401. A credential that is
    /// present but invalid always gets 401.
    #[serde(default)]
    pub anonymous: Option<String>,
    /// A static answer instead of the upstream's failure (marked `X-Torii-Fallback: static`).
    #[serde(default)]
    pub fallback: Option<Fallback>,
    /// This route's own clocks for its upstream calls.
    #[serde(default)]
    pub timeouts: RouteTimeouts,
    /// Retry non-idempotent requests (POST, PATCH) like idempotent ones: only for endpoints
    /// that are safe to repeat (they deduplicate, or have no side effects).
    #[serde(default)]
    pub retry_non_idempotent: bool,
    /// This route's API is deprecated: its answers say so (`Deprecation`, `Sunset`, `Link`),
    /// and after the sunset it may answer 410.
    #[serde(default)]
    pub deprecation: Option<Deprecation>,
}

/// A deprecated API (RFC 9745 `Deprecation`, RFC 8594 `Sunset`).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Deprecation {
    /// When it was (or will be) deprecated: `Deprecation: @<seconds>` on every answer.
    pub since: crate::values::Timestamp,
    /// When it stops being served: `Sunset: <HTTP date>` on every answer.
    #[serde(default)]
    pub sunset: Option<crate::values::Timestamp>,
    /// The URL of its successor: `Link: <url>; rel="successor-version"`.
    #[serde(default)]
    pub successor: Option<String>,
    /// A page about the deprecation: `Link: <url>; rel="deprecation"`.
    #[serde(default)]
    pub link: Option<String>,
    /// From the sunset on, answer 410 (`gone`) instead of proxying.
    #[serde(default)]
    pub gone_after_sunset: bool,
}

/// A weighted split of a route between upstreams.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Split {
    /// The upstreams and their weights: each request goes to one of them with a probability
    /// of its weight over the sum (`weight: 0` takes requests only through `overrides`).
    pub upstreams: Vec<SplitArm>,
    /// Keep each client on one upstream: requests with the same value of this key (the same
    /// shape as `load_balancing.hash_on`: `consumer`, `client_address`, `{header: NAME}`,
    /// `{cookie: NAME}`, `{query: NAME}`, `path`) always go to the same upstream while the
    /// weights stay. Requests without the key are shared at random.
    #[serde(default)]
    pub sticky: Option<super::HashOn>,
    /// Requests matching one of these go to its upstream whatever the weights, the first
    /// match winning (send testers to the canary with a header or a cookie).
    #[serde(default)]
    pub overrides: Vec<SplitOverride>,
}

/// One upstream of a split.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SplitArm {
    /// The upstream (by name).
    pub upstream: String,
    /// Its share: a whole number from 0 to 1,000,000, relative to the others'.
    pub weight: u32,
}

/// A request sent to a chosen upstream of a split: exactly one of `header` and `cookie`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SplitOverride {
    /// A request header that selects the upstream.
    #[serde(default)]
    pub header: Option<HeaderName>,
    /// A cookie that selects the upstream.
    #[serde(default)]
    pub cookie: Option<String>,
    /// The value it must have; any value when absent.
    #[serde(default)]
    pub value: Option<String>,
    /// The upstream (by name) such requests go to.
    pub upstream: String,
}

/// A route's own clocks for its upstream calls (the upstream's apply when absent).
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteTimeouts {
    /// Time to the response head of each try, instead of the upstream's
    /// `timeouts.response_headers`.
    #[serde(default)]
    pub response_headers: Option<crate::values::Duration>,
    /// A deadline for the whole call, retries and their waits included; past it, 504. With it,
    /// a try that times out may be retried within what is left.
    #[serde(default)]
    pub total: Option<crate::values::Duration>,
}

/// What masks an upstream failure: the last good response for the request (`stale`), then
/// a static answer.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Fallback {
    /// Serve the last good answer to the same request (a 2xx GET, kept per URL and
    /// consumer) when it is at most this old, marked `X-Torii-Fallback: stale`, whatever its
    /// cache headers said. Off when absent.
    #[serde(default)]
    pub stale: Option<crate::values::Duration>,
    /// Status code of the static answer (200 when absent). With `stale` alone (no status,
    /// headers or body), there is no static answer: a failure with no last good answer
    /// reaches the client.
    #[serde(default)]
    pub status: Option<u16>,
    /// Response headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Response body.
    #[serde(default)]
    pub body: String,
    /// The failures it answers: error codes the gateway would send (`upstream_connect_failed`,
    /// `upstream_timeout`, `upstream_reset`, `upstream_busy`, `no_healthy_target`,
    /// `circuit_open`, `upstream_saturated`).
    #[serde(default = "fallback_errors")]
    pub on_errors: Vec<String>,
    /// Upstream answers it replaces, by status.
    #[serde(default = "fallback_statuses")]
    pub on_status: Vec<u16>,
}

/// The error codes a fallback answers by default: every upstream failure.
pub const FALLBACK_ERRORS: [&str; 7] = [
    "upstream_connect_failed",
    "upstream_timeout",
    "upstream_reset",
    "upstream_busy",
    "no_healthy_target",
    "circuit_open",
    "upstream_saturated",
];

fn fallback_errors() -> Vec<String> {
    FALLBACK_ERRORS.iter().map(|s| s.to_string()).collect()
}

fn fallback_statuses() -> Vec<u16> {
    vec![502, 503, 504]
}

/// The conditions of a route; all must hold.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteMatch {
    /// Host names: exact (`api.example.com`) or wildcard (`*.example.com`). Any host when empty.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// An exact path pattern: `/users`, `/users/{id}`, `/files/{*rest}`.
    #[serde(default)]
    pub path: Option<String>,
    /// A prefix on segment boundaries: `/admin` matches `/admin` and `/admin/x`, never
    /// `/administrator`. Exactly one of `path` and `path_prefix`.
    #[serde(default)]
    pub path_prefix: Option<String>,
    /// Allowed methods; any when empty.
    #[serde(default)]
    pub methods: Vec<Method>,
    /// Header conditions.
    #[serde(default)]
    pub headers: Vec<ValueCondition<HeaderName>>,
    /// Query parameter conditions.
    #[serde(default)]
    pub query: Vec<ValueCondition<String>>,
    /// The API version the request names (see the top-level `versioning`), or the default
    /// version when it names none.
    #[serde(default)]
    pub version: Option<String>,
}

/// A condition on a header or query parameter: exactly one of `value`, `regex`, `present`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ValueCondition<N> {
    /// The header or parameter name.
    pub name: N,
    /// The value must equal this.
    #[serde(default)]
    pub value: Option<String>,
    /// The value must match this regular expression (whole value).
    #[serde(default)]
    pub regex: Option<Regex>,
    /// The header or parameter must be present (`true`).
    #[serde(default)]
    pub present: Option<bool>,
}

/// A response the gateway sends itself.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DirectResponse {
    /// Status code.
    #[serde(default = "ok")]
    pub status: u16,
    /// Response headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Response body.
    #[serde(default)]
    pub body: String,
}

fn ok() -> u16 {
    200
}

/// A path rewrite: exactly one of `strip_prefix` and `path`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Rewrite {
    /// Remove this prefix (on a segment boundary) from the path; `/` remains if nothing is left.
    #[serde(default)]
    pub strip_prefix: Option<String>,
    /// A template over the route's parameters: `/v2/accounts/{id}`; `{rest}` inserts a
    /// catch-all's value.
    #[serde(default)]
    pub path: Option<String>,
}
