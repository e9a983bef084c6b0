//! Sans-IO request routing for Torii.
//!
//! This crate decides which configured route a request belongs to. It does
//! no I/O: callers hand it a [`RequestView`] (normalised host and path,
//! method, headers, raw query) and get back a [`Lookup`].
//!
//! # Request identity
//!
//! [`normalize_path`] and [`normalize_host`] produce the canonical path and
//! host that the router (and anything else keyed on "which resource") must
//! see. See their docs for the exact rules; both borrow when the input is
//! already canonical.
//!
//! # Patterns
//!
//! A [`PathPattern`] is either exact (`/users/{id}`, `/files/{*rest}`; a
//! trailing slash is significant) or a prefix (`/admin` matches `/admin`,
//! `/admin/` and `/admin/x/y` but not `/administrator`; `/` matches every
//! path). Parameters are whole segments. Literal text is normalised like a
//! request path, so `/a/%7Eb` and `/a/~b` are the same pattern. Paths are
//! compared segment by segment, case-sensitively; parameter values are raw
//! slices of the (normalised) request path.
//!
//! # Matching rules
//!
//! A request goes to the most specific route all of whose conditions hold:
//!
//! 1. **Host tier first.** The exact-host table, then wildcard tables from
//!    the longest suffix to the shortest (`*.b.example.com` before
//!    `*.example.com`; a wildcard needs at least one label, so
//!    `*.example.com` does not match `example.com`), then routes for any
//!    host.
//! 2. **Path specificity** within a host table: at each segment a static
//!    segment beats a `{param}`, which beats a catch-all or prefix ending at
//!    that point; so a longer static match beats a shorter one (exact `/a/b`
//!    beats prefix `/a`, prefix `/a/b` beats prefix `/a`). At the same node
//!    an exact route beats a prefix route.
//! 3. **More conditions** beat fewer: a non-empty method list counts 1, each
//!    header and each query condition counts 1, and so does a version.
//! 4. **Declaration order**: the lower index wins.
//!
//! **Fallback.** When the most specific pattern has routes but none whose
//! method, header and query conditions hold, the next less specific pattern
//! is tried (backtracking through the trie: static child, then parameter
//! child, then catch-all/prefix routes, at each level), then the next host
//! tier.
//!
//! **405 vs 404.** Only when no route matched at all, but some route's host
//! and path (and header and query conditions) matched and only its method
//! failed, the answer is [`Lookup::MethodNotAllowed`] with the union of such
//! routes' methods ([`AllowedMethods`], in a stable order). Otherwise it is
//! [`Lookup::NotFound`].
//!
//! **Query conditions** are evaluated lazily (only for routes that have
//! them); names and values are percent-decoded (`+` is a space) and a
//! repeated parameter satisfies a condition if any occurrence does. Header
//! conditions likewise hold if any occurrence of the header matches.
//!
//! # Cost
//!
//! Lookup cost does not depend on the number of routes: exact hosts and
//! wildcard suffixes are hash-map probes (one per label of the request
//! host), and each host table is a segment trie with a hash map of static
//! children, one parameter child, and route lists per node. A lookup does
//! not allocate unless the match has more than eight parameters or the
//! answer is `MethodNotAllowed`.
//!
//! ```
//! use torii_router::*;
//! use http::{HeaderMap, Method};
//!
//! let spec = |value, methods: Vec<Method>, path| RouteSpec {
//!     value,
//!     hosts: vec![],
//!     path: PathPattern::parse(PathKind::Exact, path).unwrap(),
//!     methods,
//!     headers: vec![],
//!     query: vec![],
//!     version: None,
//! };
//! let router = Router::build(vec![
//!     spec("get-user", vec![Method::GET], "/users/{id}"),
//!     spec("delete-user", vec![Method::DELETE], "/users/{user_id}"),
//! ])
//! .unwrap();
//!
//! let headers = HeaderMap::new();
//! let path = normalize_path("/users//%34%32").unwrap();
//! let req = RequestView {
//!     host: "api.example.com",
//!     path: &path,
//!     method: &Method::DELETE,
//!     headers: &headers,
//!     query: None,
//!     version: None,
//! };
//! match router.lookup(&req) {
//!     Lookup::Found(m) => {
//!         assert_eq!(*m.value, "delete-user");
//!         assert_eq!(m.params.get("user_id"), Some("42"));
//!     }
//!     other => panic!("{other:?}"),
//! }
//! ```

mod condition;
mod host;
mod normalize;
mod params;
mod pattern;
mod route;
mod router;
mod trie;

pub use condition::{HeaderCondition, QueryCondition, ValueMatcher};
pub use normalize::{HostError, PathError, normalize_host, normalize_path};
pub use params::Params;
pub use pattern::{PathKind, PathPattern, PatternError, PatternSegments, Segment};
pub use router::{AllowedMethods, BuildError, Lookup, RequestView, RouteMatch, RouteSpec, Router};
