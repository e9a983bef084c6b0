//! The per-host-table segment trie and the backtracking search over it.
//!
//! Why not `matchit` (or a similar radix router)? `matchit` returns only the
//! single best match for a path, with no way to fall back to a less specific
//! pattern when the best one's method/header/query conditions fail, and it
//! rejects routes that differ only by parameter name (`GET /users/{id}` next
//! to `DELETE /users/{user_id}`), which real gateway configs contain. This
//! trie keeps *lists* of routes at each node and backtracks: at each level it
//! tries the static child, then the parameter child, then catch-all and
//! prefix routes of the node, so the first route whose conditions hold is
//! also the most specific one.

use foldhash::HashMap;

use crate::params::{InlineStack, Params};
use crate::pattern::{PathKind, PathPattern, Segment};
use crate::route::{RequestView, Route, RouteMatch};

/// A route ending in a node's "tail": a catch-all (needs at least one more
/// segment) or a prefix (matches the node itself and everything below).
#[derive(Debug, Clone, Copy)]
struct TailEntry {
    route: usize,
    catch_all: bool,
}

/// One trie node; the root stands for `/`.
#[derive(Debug, Default)]
pub(crate) struct Node {
    statics: HashMap<Box<str>, Node>,
    param: Option<Box<Node>>,
    /// Exact routes ending here without a trailing slash.
    exact: Vec<usize>,
    /// Exact routes ending here with a trailing slash.
    exact_slash: Vec<usize>,
    /// Catch-all and prefix routes rooted at this node.
    tail: Vec<TailEntry>,
}

impl Node {
    /// Adds route `id` under `pattern`.
    pub(crate) fn insert(&mut self, pattern: &PathPattern, id: usize) {
        let mut node = self;
        for seg in pattern.segments() {
            node = match seg {
                Segment::Static(s) => node.statics.entry(s.as_str().into()).or_default(),
                Segment::Param(_) => node.param.get_or_insert_with(Default::default),
                Segment::CatchAll(_) => {
                    // Always the last segment (checked at parse time).
                    node.tail.push(TailEntry {
                        route: id,
                        catch_all: true,
                    });
                    return;
                }
            };
        }
        match pattern.kind() {
            PathKind::Exact if pattern.trailing_slash() => node.exact_slash.push(id),
            PathKind::Exact => node.exact.push(id),
            PathKind::Prefix => node.tail.push(TailEntry {
                route: id,
                catch_all: false,
            }),
        }
    }

    /// Orders every route list by `key` (smallest first), recursively.
    pub(crate) fn sort_by_key<K: Ord>(&mut self, key: &impl Fn(usize) -> K) {
        self.exact.sort_by_key(|&id| key(id));
        self.exact_slash.sort_by_key(|&id| key(id));
        self.tail.sort_by_key(|e| key(e.route));
        for child in self.statics.values_mut() {
            child.sort_by_key(key);
        }
        if let Some(child) = &mut self.param {
            child.sort_by_key(key);
        }
    }
}

/// Collected `Allow` methods when running in collect mode.
pub(crate) type AllowSet = Vec<http::Method>;

/// State of one lookup over one or more tries.
pub(crate) struct Search<'r, 'p, 'q, T> {
    routes: &'r [Route<T>],
    req: &'q RequestView<'p>,
    path: &'p str,
    /// End of the last segment (excludes a trailing slash).
    body_end: usize,
    trailing: bool,
    captures: InlineStack<&'p str>,
    /// Set when some route matched host and path and failed only on method.
    pub(crate) method_mismatch: bool,
    /// `Some` in collect mode: gathers the methods of such routes instead of
    /// returning matches.
    pub(crate) allow: Option<AllowSet>,
}

impl<'r, 'p, 'q, T> Search<'r, 'p, 'q, T> {
    /// Prepares a search; `None` when the path is not absolute.
    pub(crate) fn new(routes: &'r [Route<T>], req: &'q RequestView<'p>) -> Option<Self> {
        let path = req.path;
        if !path.starts_with('/') {
            return None;
        }
        let trailing = path.len() > 1 && path.ends_with('/');
        Some(Search {
            routes,
            req,
            path,
            body_end: if trailing { path.len() - 1 } else { path.len() },
            trailing,
            captures: InlineStack::new(),
            method_mismatch: false,
            allow: None,
        })
    }

    /// Searches one trie, most specific pattern first.
    pub(crate) fn walk(&mut self, root: &'r Node) -> Option<RouteMatch<'r, 'p, T>> {
        self.walk_from(root, 1)
    }

    /// `pos` is the start of the next unmatched segment in the path.
    fn walk_from(&mut self, node: &'r Node, pos: usize) -> Option<RouteMatch<'r, 'p, T>> {
        if pos >= self.body_end {
            let list = if self.trailing {
                &node.exact_slash
            } else {
                &node.exact
            };
            for &id in list {
                if let Some(m) = self.try_route(id, None) {
                    return Some(m);
                }
            }
            return self.try_tail(node, pos, false);
        }
        let end = self.path.as_bytes()[pos..self.body_end]
            .iter()
            .position(|&b| b == b'/')
            .map_or(self.body_end, |i| pos + i);
        let segment = &self.path[pos..end];
        let next = if end < self.body_end {
            end + 1
        } else {
            self.body_end
        };
        if let Some(child) = node.statics.get(segment)
            && let Some(m) = self.walk_from(child, next)
        {
            return Some(m);
        }
        if let Some(child) = &node.param
            && !segment.is_empty()
        {
            self.captures.push(segment);
            let found = self.walk_from(child, next);
            self.captures.pop();
            if found.is_some() {
                return found;
            }
        }
        self.try_tail(node, pos, true)
    }

    fn try_tail(
        &mut self,
        node: &'r Node,
        pos: usize,
        has_remaining: bool,
    ) -> Option<RouteMatch<'r, 'p, T>> {
        for entry in &node.tail {
            let rest = if entry.catch_all {
                if !has_remaining {
                    continue;
                }
                Some(&self.path[pos..])
            } else {
                None
            };
            if let Some(m) = self.try_route(entry.route, rest) {
                return Some(m);
            }
        }
        None
    }

    /// Checks the non-path conditions of a route whose host and path matched.
    fn try_route(&mut self, id: usize, rest: Option<&'p str>) -> Option<RouteMatch<'r, 'p, T>> {
        let route = self.routes.get(id)?;
        let method_ok = route.method_ok(self.req.method);
        match (&mut self.allow, method_ok) {
            (None, true) => {
                if route.conditions_hold(self.req) {
                    return Some(RouteMatch {
                        value: &route.value,
                        params: Params::from_parts(
                            &route.param_names,
                            self.captures.iter().chain(rest),
                        ),
                    });
                }
            }
            (None, false) => {
                if !self.method_mismatch && route.conditions_hold(self.req) {
                    self.method_mismatch = true;
                }
            }
            (Some(allow), false) => {
                if route.conditions_hold(self.req) {
                    for m in &route.methods {
                        if !allow.contains(m) {
                            allow.push(m.clone());
                        }
                    }
                }
            }
            (Some(_), true) => {}
        }
        None
    }
}
