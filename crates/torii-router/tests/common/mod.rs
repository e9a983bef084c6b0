//! Shared helpers for the router integration tests.
#![allow(clippy::unwrap_used, dead_code, unused_imports)]

pub use http::{HeaderMap, HeaderName, Method};
pub use regex::Regex;
pub use torii_router::*;

pub struct Spec(pub RouteSpec<&'static str>);

pub fn exact(value: &'static str, path: &str) -> Spec {
    route(value, PathKind::Exact, path)
}

pub fn prefix(value: &'static str, path: &str) -> Spec {
    route(value, PathKind::Prefix, path)
}

pub fn route(value: &'static str, kind: PathKind, path: &str) -> Spec {
    Spec(RouteSpec {
        value,
        hosts: vec![],
        path: PathPattern::parse(kind, path).unwrap(),
        methods: vec![],
        headers: vec![],
        query: vec![],
        version: None,
    })
}

impl Spec {
    pub fn methods(mut self, methods: &[Method]) -> Self {
        self.0.methods = methods.to_vec();
        self
    }
    pub fn hosts(mut self, hosts: &[&str]) -> Self {
        self.0.hosts = hosts.iter().map(|h| h.to_string()).collect();
        self
    }
    pub fn header(mut self, name: &'static str, matcher: ValueMatcher) -> Self {
        self.0.headers.push(HeaderCondition {
            name: HeaderName::from_static(name),
            matcher,
        });
        self
    }
    pub fn query(mut self, name: &str, matcher: ValueMatcher) -> Self {
        self.0.query.push(QueryCondition {
            name: name.into(),
            matcher,
        });
        self
    }
}

pub fn build(specs: Vec<Spec>) -> Router<&'static str> {
    Router::build(specs.into_iter().map(|s| s.0).collect()).unwrap()
}

pub struct Req {
    pub host: &'static str,
    path: &'static str,
    method: Method,
    headers: HeaderMap,
    query: Option<&'static str>,
}

pub fn req(path: &'static str) -> Req {
    Req {
        host: "example.com",
        path,
        method: Method::GET,
        headers: HeaderMap::new(),
        query: None,
    }
}

impl Req {
    pub fn host(mut self, host: &'static str) -> Self {
        self.host = host;
        self
    }
    pub fn method(mut self, m: Method) -> Self {
        self.method = m;
        self
    }
    pub fn header(mut self, name: &'static str, value: &'static str) -> Self {
        self.headers.append(name, value.parse().unwrap());
        self
    }
    pub fn query(mut self, q: &'static str) -> Self {
        self.query = Some(q);
        self
    }
    pub fn view(&self) -> RequestView<'_> {
        RequestView {
            host: self.host,
            path: self.path,
            method: &self.method,
            headers: &self.headers,
            query: self.query,
            version: None,
        }
    }
}

/// The matched value, `"405:<allow>"`, or `"404"`.
pub fn hit(router: &Router<&'static str>, r: &Req) -> String {
    match router.lookup(&r.view()) {
        Lookup::Found(m) => (*m.value).to_string(),
        Lookup::MethodNotAllowed { allow } => format!("405:{allow}"),
        Lookup::NotFound => "404".into(),
    }
}

pub fn params(router: &Router<&'static str>, r: &Req) -> Vec<(String, String)> {
    match router.lookup(&r.view()) {
        Lookup::Found(m) => m
            .params
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect(),
        other => panic!("no match: {other:?}"),
    }
}

pub fn p(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}
