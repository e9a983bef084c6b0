//! The router: route specs, build-time validation, and lookup.

use std::cmp::Reverse;
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fmt;

use http::{HeaderValue, Method};

use crate::condition::{HeaderCondition, QueryCondition};
use crate::host::{HostKey, HostTables, parse_host_spec};
use crate::pattern::PathPattern;
pub(crate) use crate::route::Route;
pub use crate::route::{RequestView, RouteMatch};
use crate::trie::Search;

/// One route as configured: a payload plus the conditions a request must
/// meet to be routed to it.
#[derive(Debug, Clone)]
pub struct RouteSpec<T> {
    /// Payload returned on match (for example an index into a route table).
    pub value: T,
    /// Hosts this route serves; empty (or `*`) means any host. Entries are
    /// exact (`api.example.com`) or wildcards (`*.example.com`, which matches
    /// one or more labels before `.example.com` but not `example.com`).
    /// Lowercased at build time; a port is an error.
    pub hosts: Vec<String>,
    /// The path pattern.
    pub path: PathPattern,
    /// Allowed methods; empty means any method.
    pub methods: Vec<Method>,
    /// Header conditions; all must hold.
    pub headers: Vec<HeaderCondition>,
    /// Query conditions; all must hold.
    pub query: Vec<QueryCondition>,
    /// The API version the request must ask for ([`RequestView::version`]); any when `None`.
    pub version: Option<String>,
}

/// The result of [`Router::lookup`].
// `Found` is large because parameters live inline; boxing it would put an
// allocation on every successful lookup, which is what the layout avoids.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup<'r, 'p, T> {
    /// The most specific route whose conditions all hold.
    Found(RouteMatch<'r, 'p, T>),
    /// No route matched, but some route matched host and path (and header
    /// and query conditions) and failed only on its method.
    MethodNotAllowed {
        /// The union of those routes' methods, for the `Allow` header.
        allow: AllowedMethods,
    },
    /// Nothing matched.
    NotFound,
}

/// A deduplicated set of methods in a stable order: the standard methods
/// first (`GET, HEAD, POST, PUT, DELETE, CONNECT, OPTIONS, TRACE, PATCH`),
/// then extension methods alphabetically.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowedMethods {
    methods: Vec<Method>,
}

fn method_rank(m: &Method) -> u8 {
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
    ORDER
        .iter()
        .position(|o| o == m)
        .and_then(|i| u8::try_from(i).ok())
        .unwrap_or(u8::MAX)
}

impl AllowedMethods {
    fn from_unordered(mut methods: Vec<Method>) -> Self {
        methods.sort_by(|a, b| (method_rank(a), a.as_str()).cmp(&(method_rank(b), b.as_str())));
        methods.dedup();
        AllowedMethods { methods }
    }

    /// The methods, in order.
    pub fn iter(&self) -> impl Iterator<Item = &Method> {
        self.methods.iter()
    }

    /// The methods as a slice, in order.
    pub fn as_slice(&self) -> &[Method] {
        &self.methods
    }

    /// Whether `method` is in the set.
    pub fn contains(&self, method: &Method) -> bool {
        self.methods.contains(method)
    }

    /// The number of methods.
    pub fn len(&self) -> usize {
        self.methods.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.methods.is_empty()
    }

    /// Renders the set as an `Allow` header value (`GET, HEAD, POST`).
    pub fn to_header_value(&self) -> HeaderValue {
        // Method names are HTTP tokens, so this cannot fail.
        HeaderValue::from_str(&self.to_string()).unwrap_or_else(|_| HeaderValue::from_static(""))
    }
}

impl fmt::Display for AllowedMethods {
    /// Comma-separated, as in an `Allow` header.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, m) in self.methods.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            f.write_str(m.as_str())?;
        }
        Ok(())
    }
}

/// Why a set of route specs was rejected by [`Router::build`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    /// Route `second` has the same match conditions as the earlier route
    /// `first` (indices into the specs), so it could never be chosen.
    #[error("route {second} duplicates the match conditions of route {first}")]
    Duplicate {
        /// Index of the earliest route with these conditions.
        first: usize,
        /// Index of the later duplicate.
        second: usize,
    },
    /// A host entry of route `route` is not a valid host or wildcard.
    #[error("route {route}: invalid host {host:?}: {reason}")]
    InvalidHost {
        /// Index of the route.
        route: usize,
        /// The host entry as given.
        host: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// Everything that decides whether two routes match the same requests.
#[derive(PartialEq, Eq, Hash)]
struct DuplicateKey {
    hosts: Vec<HostKey>,
    path: String,
    methods: Vec<String>,
    headers: Vec<(String, u8, String)>,
    query: Vec<(String, u8, String)>,
    version: Option<String>,
}

fn condition_key<'a>(
    items: impl Iterator<Item = (&'a str, &'a crate::ValueMatcher)>,
) -> Vec<(String, u8, String)> {
    let mut key: Vec<_> = items
        .map(|(name, m)| {
            let (tag, text) = m.key();
            (name.to_owned(), tag, text.to_owned())
        })
        .collect();
    key.sort();
    key.dedup();
    key
}

/// A built, immutable router. See the crate documentation for the matching
/// rules.
pub struct Router<T> {
    routes: Vec<Route<T>>,
    tables: HostTables,
}

impl<T> fmt::Debug for Router<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Router")
            .field("routes", &self.routes.len())
            .finish_non_exhaustive()
    }
}

impl<T> Router<T> {
    /// Builds a router. Fails with every problem found: invalid hosts, and
    /// one [`BuildError::Duplicate`] per route whose match conditions (host
    /// set, path pattern ignoring parameter names, method set, header and
    /// query conditions with regexes compared by source) equal those of an
    /// earlier route.
    pub fn build(specs: Vec<RouteSpec<T>>) -> Result<Router<T>, Vec<BuildError>> {
        let mut errors = Vec::new();
        let mut seen: HashMap<DuplicateKey, usize> = HashMap::new();
        let mut routes = Vec::with_capacity(specs.len());
        let mut tables = HostTables::default();
        for (index, spec) in specs.into_iter().enumerate() {
            let mut hosts = Vec::with_capacity(spec.hosts.len().max(1));
            let mut host_ok = true;
            for host in &spec.hosts {
                match parse_host_spec(host) {
                    Ok(key) => hosts.push(key),
                    Err(reason) => {
                        host_ok = false;
                        errors.push(BuildError::InvalidHost {
                            route: index,
                            host: host.clone(),
                            reason,
                        });
                    }
                }
            }
            // A route whose hosts were all invalid stays host-less (it is
            // reported above) instead of silently becoming an any-host route.
            if spec.hosts.is_empty() || hosts.contains(&HostKey::Any) {
                hosts = vec![HostKey::Any];
            }
            hosts.sort();
            hosts.dedup();

            let mut methods = spec.methods;
            methods.sort_by(|a, b| a.as_str().cmp(b.as_str()));
            methods.dedup();

            let key = DuplicateKey {
                hosts,
                path: spec.path.shape_key(),
                methods: methods.iter().map(|m| m.as_str().to_owned()).collect(),
                headers: condition_key(spec.headers.iter().map(|c| (c.name.as_str(), &c.matcher))),
                query: condition_key(spec.query.iter().map(|c| (c.name.as_str(), &c.matcher))),
                version: spec.version.clone(),
            };
            for host in &key.hosts {
                tables.table_mut(host).insert(&spec.path, index);
            }
            // A route with an invalid host is already reported; comparing
            // its remaining hosts would only produce confusing duplicates.
            match seen.entry(key) {
                Entry::Occupied(e) if host_ok => errors.push(BuildError::Duplicate {
                    first: *e.get(),
                    second: index,
                }),
                Entry::Occupied(_) => {}
                Entry::Vacant(e) => {
                    if host_ok {
                        e.insert(index);
                    }
                }
            }
            routes.push(Route {
                value: spec.value,
                conditions: usize::from(!methods.is_empty())
                    + usize::from(spec.version.is_some())
                    + spec.headers.len()
                    + spec.query.len(),
                methods,
                headers: spec.headers,
                query: spec.query,
                version: spec.version.map(Into::into),
                param_names: spec.path.param_names().map(Into::into).collect(),
            });
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        // More conditions first, then declaration order.
        let order = |id: usize| (Reverse(routes.get(id).map_or(0, |r| r.conditions)), id);
        tables.for_each_mut(|node| node.sort_by_key(&order));
        Ok(Router { routes, tables })
    }

    /// Finds the route for a request. Does not allocate unless the request
    /// has more than eight path parameters, or the answer is
    /// [`Lookup::MethodNotAllowed`].
    pub fn lookup<'r, 'p>(&'r self, req: &RequestView<'p>) -> Lookup<'r, 'p, T> {
        let Some(mut search) = Search::new(&self.routes, req) else {
            return Lookup::NotFound;
        };
        if let Some(found) = self.tables.search(req.host, |node| search.walk(node)) {
            return Lookup::Found(found);
        }
        if !search.method_mismatch {
            return Lookup::NotFound;
        }
        // Second pass, only on this error path: gather the Allow set.
        search.allow = Some(Vec::new());
        let _ = self.tables.search(req.host, |node| search.walk(node));
        let allow = search.allow.take().unwrap_or_default();
        Lookup::MethodNotAllowed {
            allow: AllowedMethods::from_unordered(allow),
        }
    }

    /// The number of routes.
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    /// Whether the router has no routes.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// The payload of the route at `index` (declaration order).
    pub fn get(&self, index: usize) -> Option<&T> {
        self.routes.get(index).map(|r| &r.value)
    }
}
