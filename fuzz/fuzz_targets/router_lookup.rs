//! `router_lookup`: a small router built from fuzzer-chosen route specs, and
//! fuzzer-chosen requests looked up in it.
//!
//! Routes are drawn from a fixed list of pattern templates whose static
//! segments the fuzzer fills in (from a list of interesting literals or any
//! string), exact or prefix kind, hosts from a small set, methods, and
//! header/query conditions. Requests have a path (built from the same
//! literals or any string), a host, a method, headers and a query string; the
//! path and host are normalised first, as the gateway does, and requests
//! whose path or host is rejected are skipped.
//!
//! Nothing may panic: neither `Router::build` nor `Router::lookup` (also
//! with the raw, un-normalised path). Beyond that, every answer is checked
//! against a naive reference matcher written from the crate documentation:
//! - `Found(r)` iff some route's host, path, method, header and query
//!   conditions all hold, and `r` is the first of those in the documented
//!   order: host tier (exact host, wildcard suffixes longest first, any
//!   host), then path specificity (at each segment static before parameter
//!   before catch-all/prefix; at the end of the path exact before prefix),
//!   then more conditions, then declaration order;
//! - the captured parameters are the route's parameter names, in order, with
//!   the request path's segments (the rest of the path for a catch-all);
//! - otherwise `MethodNotAllowed` iff some route failed only on its method,
//!   with exactly the union of those routes' methods in the documented order;
//! - otherwise `NotFound`.
#![no_main]

use std::cmp::Reverse;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};

use arbitrary::Arbitrary;
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use libfuzzer_sys::fuzz_target;
use torii_router::{
    HeaderCondition, Lookup, PathKind, PathPattern, QueryCondition, RequestView, RouteSpec, Router,
    Segment, ValueMatcher, normalize_host, normalize_path,
};

const MAX_ROUTES: usize = 12;
const MAX_REQUESTS: usize = 8;

/// Pattern templates; `S0`, `S1`, `S2` are replaced by fuzzer-chosen static
/// segments.
const TEMPLATES: &[&str] = &[
    "/",
    "/S0",
    "/S0/S1",
    "/S0/{id}",
    "/S0/{id}/S1",
    "/{id}",
    "/{a}/{b}",
    "/S0/{*rest}",
    "/{*rest}",
    "/S0/",
    "/S0/{id}/",
    "/S0/S1/S2",
    "/{p0}/{p1}/{p2}/{p3}/{p4}/{p5}/{p6}/{p7}/{p8}/{p9}",
    "/S0/{a}/S1/{*rest}",
    "/{id}/S0",
    "/{a}/S0/{b}/",
];

/// Interesting literal segments (for patterns and request paths).
const LITERALS: &[&str] = &[
    "a", "b", "api", "v1", "users", "A", "~", "%7E", "%7e", ".", "..", "%2e", "%2E%2E", "x%2Fy",
    "x%2fy", "%20", "a;b", "@", "", "a.b",
];

const ROUTE_HOSTS: &[&str] = &[
    "api.example.com",
    "API.Example.COM.",
    "*.example.com",
    "*.eu.example.com",
    "*.com",
    "*",
    "example.com",
    "[::1]",
    "b.eu.example.com",
];

const REQUEST_HOSTS: &[&str] = &[
    "api.example.com",
    "API.EXAMPLE.COM:8080",
    "x.example.com",
    "a.b.eu.example.com",
    "eu.example.com",
    "example.com",
    "b.eu.example.com.",
    "other.org",
    "[::1]:443",
    "com",
];

const HEADER_NAMES: &[&str] = &["x-a", "x-b"];
const QUERY_NAMES: &[&str] = &["q", "r", "a b"];
const VALUES: &[&str] = &["1", "2", "v1", "", "a b", "%41"];
const REGEXES: &[&str] = &["^v[0-9]+$", "1", "^$", "b"];

static COMPILED: LazyLock<Vec<regex::Regex>> = LazyLock::new(|| {
    REGEXES
        .iter()
        .map(|r| regex::Regex::new(r).expect("fixed regex"))
        .collect()
});

/// Outcome counters, printed to stderr at powers of two and every 4096 when
/// `TORII_FUZZ_STATS` is set (to see that the reference checks are reached:
/// `cargo fuzz run router_lookup -- -runs=0` with it set replays the corpus).
static STATS: [AtomicU64; 5] = [const { AtomicU64::new(0) }; 5];
const STAT_NAMES: [&str; 5] = [
    "build_failed",
    "request_skipped",
    "found",
    "method_not_allowed",
    "not_found",
];
static SHOW_STATS: LazyLock<bool> =
    LazyLock::new(|| std::env::var_os("TORII_FUZZ_STATS").is_some());

fn stat(i: usize) {
    STATS[i].fetch_add(1, Ordering::Relaxed);
    if *SHOW_STATS {
        let total: u64 = STATS.iter().map(|s| s.load(Ordering::Relaxed)).sum();
        if total.is_power_of_two() || total.is_multiple_of(4096) {
            let parts: Vec<String> = STAT_NAMES
                .iter()
                .zip(&STATS)
                .map(|(n, s)| format!("{n}={}", s.load(Ordering::Relaxed)))
                .collect();
            eprintln!("router_lookup stats: {}", parts.join(" "));
        }
    }
}

fn pick<'a>(list: &[&'a str], i: u8) -> &'a str {
    list[usize::from(i) % list.len()]
}

#[derive(Debug, Arbitrary)]
enum Lit {
    Fixed(u8),
    Raw(String),
}

impl Lit {
    fn text(&self) -> &str {
        match self {
            Lit::Fixed(i) => pick(LITERALS, *i),
            Lit::Raw(s) => s,
        }
    }
}

#[derive(Debug, Arbitrary)]
enum MethodIn {
    Fixed(u8),
    Raw(Vec<u8>),
}

impl MethodIn {
    fn method(&self) -> Option<Method> {
        const FIXED: &[&str] = &[
            "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "PURGE",
        ];
        match self {
            MethodIn::Fixed(i) => Method::from_bytes(pick(FIXED, *i).as_bytes()).ok(),
            MethodIn::Raw(b) => Method::from_bytes(b).ok(),
        }
    }
}

#[derive(Debug, Arbitrary)]
enum MatcherIn {
    Exact(u8),
    Regex(u8),
    Present,
}

impl MatcherIn {
    fn matcher(&self) -> ValueMatcher {
        match self {
            MatcherIn::Exact(i) => ValueMatcher::Exact(pick(VALUES, *i).to_owned()),
            MatcherIn::Regex(i) => {
                ValueMatcher::Regex(COMPILED[usize::from(*i) % COMPILED.len()].clone())
            }
            MatcherIn::Present => ValueMatcher::Present,
        }
    }
}

#[derive(Debug, Arbitrary)]
struct RouteIn {
    template: u8,
    prefix: bool,
    statics: [Lit; 3],
    hosts: Vec<u8>,
    methods: Vec<MethodIn>,
    headers: Vec<(u8, MatcherIn)>,
    query: Vec<(u8, MatcherIn)>,
}

#[derive(Debug, Arbitrary)]
enum PathIn {
    Built {
        segments: Vec<Lit>,
        trailing_slash: bool,
    },
    Raw(String),
}

#[derive(Debug, Arbitrary)]
enum HostIn {
    Fixed(u8),
    Raw(String),
}

#[derive(Debug, Arbitrary)]
struct RequestIn {
    path: PathIn,
    host: HostIn,
    method: MethodIn,
    headers: Vec<(u8, u8)>,
    query: Option<String>,
}

#[derive(Debug, Arbitrary)]
struct Input {
    routes: Vec<RouteIn>,
    requests: Vec<RequestIn>,
}

/// A route's host condition, as the reference matcher sees it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum HostRule {
    Exact(String),
    Wildcard(String),
    Any,
}

/// What the reference matcher keeps of a route.
#[derive(Debug)]
struct RefRoute {
    hosts: Vec<HostRule>,
    pattern: PathPattern,
    methods: Vec<Method>,
    headers: Vec<HeaderCondition>,
    query: Vec<QueryCondition>,
    conditions: usize,
}

/// Host tier of a request host for one route (smaller is tried first):
/// exact host, then wildcard suffixes longest first, then any host.
fn host_tier(rules: &[HostRule], host: &str) -> Option<(u8, Reverse<usize>)> {
    rules
        .iter()
        .filter_map(|r| match r {
            HostRule::Exact(h) => (h == host).then_some((0, Reverse(0))),
            HostRule::Wildcard(s) => {
                // The router probes the text after every `.` of the host, so
                // `*.suffix` matches any host ending in `.suffix` (which also
                // lets a leading empty label through: `.suffix`).
                (host.len() > s.len()
                    && host.ends_with(s.as_str())
                    && host.as_bytes()[host.len() - s.len() - 1] == b'.')
                    .then_some((1, Reverse(s.len())))
            }
            HostRule::Any => Some((2, Reverse(0))),
        })
        .min()
}

/// The request path split into segments: `/` has none, `/a/b/` is `a`, `b`
/// with a trailing slash.
fn split_path(path: &str) -> (Vec<&str>, bool) {
    if path == "/" {
        return (Vec::new(), false);
    }
    let body = &path[1..];
    let trailing = body.ends_with('/');
    let body = body.strip_suffix('/').unwrap_or(body);
    (body.split('/').collect(), trailing)
}

/// Matches a pattern against a split path. On a match returns the
/// specificity key (compared lexicographically, smaller first) and the
/// captured parameter values.
fn match_path<'p>(
    pattern: &PathPattern,
    segs: &[&'p str],
    trailing: bool,
    path: &'p str,
) -> Option<(Vec<u8>, Vec<&'p str>)> {
    let psegs = pattern.segments();
    let mut key = Vec::new();
    let mut params = Vec::new();
    for (i, ps) in psegs.iter().enumerate() {
        match ps {
            Segment::Static(s) => {
                if segs.get(i) != Some(&s.as_str()) {
                    return None;
                }
                key.push(0);
            }
            Segment::Param(_) => {
                let seg = segs.get(i)?;
                if seg.is_empty() {
                    return None;
                }
                params.push(*seg);
                key.push(1);
            }
            Segment::CatchAll(_) => {
                // Needs at least one more segment; the value is the rest of
                // the path, trailing slash included.
                if segs.len() <= i {
                    return None;
                }
                let skip: usize = 1 + segs[..i].iter().map(|s| s.len() + 1).sum::<usize>();
                params.push(&path[skip..]);
                key.push(2);
                return Some((key, params));
            }
        }
    }
    let n = psegs.len();
    match pattern.kind() {
        PathKind::Exact => {
            if segs.len() != n || trailing != pattern.trailing_slash() {
                return None;
            }
            key.push(0);
        }
        PathKind::Prefix => {
            if segs.len() < n {
                return None;
            }
            // Tried after the static and parameter children when segments
            // remain, after the exact routes at the end of the path.
            key.push(if segs.len() > n { 2 } else { 1 });
        }
    }
    Some((key, params))
}

fn allow_rank(m: &Method) -> (usize, String) {
    const ORDER: [Method; 9] = [
        Method::GET,
        Method::HEAD,
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::CONNECT,
        Method::OPTIONS,
        Method::TRACE,
        Method::PATCH,
    ];
    (
        ORDER.iter().position(|o| o == m).unwrap_or(usize::MAX),
        m.as_str().to_owned(),
    )
}

fn run(input: Input) {
    let mut specs = Vec::new();
    let mut refs = Vec::new();
    for r in input.routes.iter().take(MAX_ROUTES) {
        let mut text = String::new();
        let mut rest = pick(TEMPLATES, r.template);
        while let Some(i) = rest.find('S') {
            text.push_str(&rest[..i]);
            let n = usize::from(rest.as_bytes()[i + 1] - b'0');
            text.push_str(r.statics[n].text());
            rest = &rest[i + 2..];
        }
        text.push_str(rest);
        let kind = if r.prefix {
            PathKind::Prefix
        } else {
            PathKind::Exact
        };
        let Ok(pattern) = PathPattern::parse(kind, &text) else {
            continue;
        };
        let hosts: Vec<String> = r
            .hosts
            .iter()
            .take(3)
            .map(|&h| pick(ROUTE_HOSTS, h).to_owned())
            .collect();
        let methods: Vec<Method> = r
            .methods
            .iter()
            .take(4)
            .filter_map(MethodIn::method)
            .collect();
        let headers: Vec<HeaderCondition> = r
            .headers
            .iter()
            .take(2)
            .map(|(n, m)| HeaderCondition {
                name: HeaderName::from_static(pick(HEADER_NAMES, *n)),
                matcher: m.matcher(),
            })
            .collect();
        let query: Vec<QueryCondition> = r
            .query
            .iter()
            .take(2)
            .map(|(n, m)| QueryCondition {
                name: pick(QUERY_NAMES, *n).to_owned(),
                matcher: m.matcher(),
            })
            .collect();

        // Reference view of the hosts: `*` anywhere (or no hosts) means any
        // host only.
        let host_rules = if hosts.is_empty() || hosts.iter().any(|h| h == "*") {
            vec![HostRule::Any]
        } else {
            hosts
                .iter()
                .map(|h| match h.strip_prefix("*.") {
                    Some(s) => HostRule::Wildcard(
                        normalize_host(s).expect("fixed wildcard host").into_owned(),
                    ),
                    None => HostRule::Exact(normalize_host(h).expect("fixed host").into_owned()),
                })
                .collect()
        };
        let mut distinct = methods.clone();
        distinct.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        distinct.dedup();
        refs.push(RefRoute {
            hosts: host_rules,
            pattern: pattern.clone(),
            conditions: usize::from(!distinct.is_empty()) + headers.len() + query.len(),
            methods: distinct,
            headers: headers.clone(),
            query: query.clone(),
        });
        specs.push(RouteSpec {
            value: specs.len(),
            hosts,
            path: pattern,
            methods,
            headers,
            query,
            // The reference model below has no versions: every route takes any.
            version: None,
        });
    }

    let Ok(router) = Router::build(specs) else {
        // Duplicates (or invalid hosts); nothing to look up.
        stat(0);
        return;
    };
    assert_eq!(router.len(), refs.len());

    for req in input.requests.iter().take(MAX_REQUESTS) {
        let raw_path = match &req.path {
            PathIn::Built {
                segments,
                trailing_slash,
            } => {
                let mut p = String::new();
                for s in segments.iter().take(12) {
                    p.push('/');
                    p.push_str(s.text());
                }
                if *trailing_slash || p.is_empty() {
                    p.push('/');
                }
                p
            }
            PathIn::Raw(s) => s.clone(),
        };
        let raw_host = match &req.host {
            HostIn::Fixed(i) => pick(REQUEST_HOSTS, *i).to_owned(),
            HostIn::Raw(s) => s.clone(),
        };
        let Some(method) = req.method.method() else {
            stat(1);
            continue;
        };
        let mut headers = HeaderMap::new();
        for (n, v) in req.headers.iter().take(4) {
            headers.append(
                HeaderName::from_static(pick(HEADER_NAMES, *n)),
                HeaderValue::from_static(pick(VALUES, *v)),
            );
        }
        let query = req.query.as_deref();

        // Un-normalised input breaks the documented precondition, but must
        // still not panic.
        let _ = router.lookup(&RequestView {
            host: &raw_host,
            path: &raw_path,
            method: &method,
            headers: &headers,
            query,
            version: None,
        });

        let (Ok(path), Ok(host)) = (normalize_path(&raw_path), normalize_host(&raw_host)) else {
            stat(1);
            continue;
        };
        let view = RequestView {
            host: &host,
            path: &path,
            method: &method,
            headers: &headers,
            query,
            version: None,
        };
        let got = router.lookup(&view);
        stat(match got {
            Lookup::Found(_) => 2,
            Lookup::MethodNotAllowed { .. } => 3,
            Lookup::NotFound => 4,
        });
        check(&refs, &view, &got);
    }
}

/// Order in which the router tries matching routes: host tier, path
/// specificity key, more conditions first, declaration index.
type Rank = ((u8, Reverse<usize>), Vec<u8>, Reverse<usize>, usize);

fn check(refs: &[RefRoute], req: &RequestView<'_>, got: &Lookup<'_, '_, usize>) {
    let (segs, trailing) = split_path(req.path);
    let mut best: Option<Rank> = None;
    let mut best_params = Vec::new();
    let mut allow: Vec<Method> = Vec::new();
    let mut method_only = false;
    for (id, r) in refs.iter().enumerate() {
        let Some(tier) = host_tier(&r.hosts, req.host) else {
            continue;
        };
        let Some((key, params)) = match_path(&r.pattern, &segs, trailing, req.path) else {
            continue;
        };
        if !(r.headers.iter().all(|c| c.holds(req.headers))
            && r.query.iter().all(|c| c.holds(req.query)))
        {
            continue;
        }
        if !r.methods.is_empty() && !r.methods.contains(req.method) {
            method_only = true;
            for m in &r.methods {
                if !allow.contains(m) {
                    allow.push(m.clone());
                }
            }
            continue;
        }
        let rank = (tier, key, Reverse(r.conditions), id);
        if best.as_ref().is_none_or(|b| rank < *b) {
            best = Some(rank);
            best_params = params;
        }
    }

    match (got, best) {
        (Lookup::Found(m), Some(b)) => {
            let id = *m.value;
            assert_eq!(
                id, b.3,
                "request {req:?}: router chose route {id} ({:?}), reference chose {} ({:?})",
                refs[id], b.3, refs[b.3]
            );
            let names: Vec<&str> = refs[id].pattern.param_names().collect();
            let got_params: Vec<(&str, &str)> = m.params.iter().collect();
            let want: Vec<(&str, &str)> = names.iter().copied().zip(best_params).collect();
            assert_eq!(
                got_params, want,
                "request {req:?}: parameters of route {id}"
            );
        }
        (Lookup::Found(m), None) => panic!(
            "request {req:?}: router found route {} ({:?}), reference found none",
            m.value, refs[*m.value]
        ),
        (other, Some(b)) => panic!(
            "request {req:?}: router answered {other:?}, reference chose route {} ({:?})",
            b.3, refs[b.3]
        ),
        (Lookup::MethodNotAllowed { allow: got_allow }, None) => {
            assert!(
                method_only,
                "request {req:?}: 405 {got_allow} but no route failed only on method"
            );
            allow.sort_by_key(allow_rank);
            assert_eq!(
                got_allow.as_slice(),
                allow.as_slice(),
                "request {req:?}: Allow set"
            );
            assert!(
                !got_allow.contains(req.method),
                "request {req:?}: Allow has the request method"
            );
        }
        (Lookup::NotFound, None) => {
            assert!(
                !method_only,
                "request {req:?}: 404 but some route failed only on method (allow {allow:?})"
            );
        }
    }
}

fuzz_target!(|input: Input| run(input));
