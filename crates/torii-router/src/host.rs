//! Host tables: exact hosts, wildcard suffixes and the any-host table, each
//! holding its own path trie.

use foldhash::HashMap;

use crate::normalize::normalize_host;
use crate::trie::Node;

/// A route's host condition after parsing and lowercasing.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum HostKey {
    /// Any host (an empty host list, or `*`).
    Any,
    /// Exactly this host.
    Exact(String),
    /// `*.suffix`: one or more labels followed by `.suffix`.
    Wildcard(String),
}

/// Normalises one host of a route spec, rejecting ports.
fn normalize_route_host(host: &str) -> Result<String, String> {
    let has_port = match host.strip_prefix('[') {
        Some(rest) => rest.find(']').is_some_and(|i| i + 1 < rest.len()),
        None => host.contains(':'),
    };
    if has_port {
        return Err("a route host must not contain a port".to_owned());
    }
    normalize_host(host)
        .map(|h| h.into_owned())
        .map_err(|e| e.to_string())
}

/// Parses a route host: `api.example.com`, `*.example.com` or `*`.
pub(crate) fn parse_host_spec(spec: &str) -> Result<HostKey, String> {
    if spec == "*" {
        return Ok(HostKey::Any);
    }
    if let Some(suffix) = spec.strip_prefix("*.") {
        if suffix.contains('*') || suffix.starts_with('[') {
            return Err("a wildcard must be a single leading `*.` label".to_owned());
        }
        return normalize_route_host(suffix).map(HostKey::Wildcard);
    }
    if spec.contains('*') {
        return Err("a wildcard must be a single leading `*.` label".to_owned());
    }
    normalize_route_host(spec).map(HostKey::Exact)
}

/// All host tables of a router.
#[derive(Debug, Default)]
pub(crate) struct HostTables {
    exact: HashMap<Box<str>, Node>,
    wildcard: HashMap<Box<str>, Node>,
    any: Node,
}

impl HostTables {
    /// The trie for a host key, created on first use.
    pub(crate) fn table_mut(&mut self, key: &HostKey) -> &mut Node {
        match key {
            HostKey::Any => &mut self.any,
            HostKey::Exact(h) => self.exact.entry(h.as_str().into()).or_default(),
            HostKey::Wildcard(s) => self.wildcard.entry(s.as_str().into()).or_default(),
        }
    }

    /// Applies `f` to every trie.
    pub(crate) fn for_each_mut(&mut self, mut f: impl FnMut(&mut Node)) {
        self.exact.values_mut().for_each(&mut f);
        self.wildcard.values_mut().for_each(&mut f);
        f(&mut self.any);
    }

    /// Visits the tries that apply to `host` in tier order (exact host,
    /// wildcard suffixes from longest to shortest, any host) until `f`
    /// returns `Some`. Cost depends on the number of labels in `host`, not
    /// on the number of routes.
    pub(crate) fn search<'r, R>(
        &'r self,
        host: &str,
        mut f: impl FnMut(&'r Node) -> Option<R>,
    ) -> Option<R> {
        if let Some(node) = self.exact.get(host)
            && let Some(r) = f(node)
        {
            return Some(r);
        }
        if !self.wildcard.is_empty() {
            // For `a.b.example.com` probe `b.example.com`, `example.com`, `com`.
            let mut rest = host;
            while let Some((_, suffix)) = rest.split_once('.') {
                if let Some(node) = self.wildcard.get(suffix)
                    && let Some(r) = f(node)
                {
                    return Some(r);
                }
                rest = suffix;
            }
        }
        f(&self.any)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_specs() {
        assert_eq!(parse_host_spec("*"), Ok(HostKey::Any));
        assert_eq!(
            parse_host_spec("API.Example.com"),
            Ok(HostKey::Exact("api.example.com".into()))
        );
        assert_eq!(
            parse_host_spec("*.Example.com."),
            Ok(HostKey::Wildcard("example.com".into()))
        );
        assert_eq!(parse_host_spec("[::1]"), Ok(HostKey::Exact("[::1]".into())));
        for bad in [
            "a.*.com", "*.", "**.a", "*a.com", "a.com:80", "[::1]:80", "", "a b",
        ] {
            assert!(parse_host_spec(bad).is_err(), "{bad}");
        }
    }
}
