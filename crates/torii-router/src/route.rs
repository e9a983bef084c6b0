//! A built route and the request view it is matched against (shared by the router and the
//! trie, so neither imports the other's internals).

use crate::condition::{HeaderCondition, QueryCondition};
use crate::params::Params;
use http::{HeaderMap, Method};

/// The parts of a request the router looks at.
#[derive(Debug, Clone, Copy)]
pub struct RequestView<'a> {
    /// The host, already normalised with [`normalize_host`](crate::normalize_host).
    pub host: &'a str,
    /// The path, already normalised with [`normalize_path`](crate::normalize_path).
    pub path: &'a str,
    /// The request method.
    pub method: &'a Method,
    /// The request headers.
    pub headers: &'a HeaderMap,
    /// The raw query string without `?`, if any.
    pub query: Option<&'a str>,
    /// The API version the request asks for (read by the gateway from a header, a query
    /// parameter or the `Accept` media type), if any.
    pub version: Option<&'a str>,
}

/// A successful match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteMatch<'r, 'p, T> {
    /// The matched route's payload.
    pub value: &'r T,
    /// Path parameters captured by the route's pattern.
    pub params: Params<'r, 'p>,
}

/// A built route: payload plus the conditions checked after host and path.
#[derive(Debug)]
pub(crate) struct Route<T> {
    pub(crate) value: T,
    pub(crate) methods: Vec<Method>,
    pub(crate) headers: Vec<HeaderCondition>,
    pub(crate) query: Vec<QueryCondition>,
    pub(crate) version: Option<Box<str>>,
    pub(crate) param_names: Box<[std::sync::Arc<str>]>,
    /// Methods (1 if non-empty) plus header, query and version conditions.
    pub(crate) conditions: usize,
}

impl<T> Route<T> {
    pub(crate) fn method_ok(&self, method: &Method) -> bool {
        self.methods.is_empty() || self.methods.contains(method)
    }

    /// Header and query conditions (the query string is parsed only when
    /// the route has query conditions).
    pub(crate) fn conditions_hold(&self, req: &RequestView<'_>) -> bool {
        self.version
            .as_deref()
            .is_none_or(|v| req.version == Some(v))
            && self.headers.iter().all(|c| c.holds(req.headers))
            && self.query.iter().all(|c| c.holds(req.query))
    }
}
