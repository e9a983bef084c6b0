//! Cache keys: what makes two requests ask for the same stored response.
//!
//! A key is the SHA-256 of its parts, each length-prefixed (so no choice of values can make
//! two different part lists read alike): the route's namespace, the host, the path, the
//! query (as sent, sorted, only chosen parameters, or none), chosen request headers and,
//! optionally, the consumer. The method is not part of it: only `GET` responses are stored,
//! and `HEAD` is answered from them. 256 bits make collisions a non-issue, so an entry found
//! by its key is the response for that key, and the same digest can name the entry in a
//! shared store.

use aws_lc_rs::digest::{SHA256, digest};
use http::{HeaderMap, HeaderName};

/// A key (or a variant's key): a SHA-256 digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key(pub [u8; 32]);

impl std::hash::Hash for Key {
    /// Half the digest: it is already uniform, and the maps that hold keys hash it again
    /// with a per-process seed (foldhash), so no one can aim keys at one bucket. Equality
    /// still compares all 256 bits.
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        let (half, _) = self.0.split_at(16);
        state.write(half);
    }
}

/// The hasher of the maps keyed by [`Key`]: seeded per process, fast on 16 bytes.
pub type KeyHasher = foldhash::fast::RandomState;

/// Which query parameters take part in the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Query {
    /// The query string as the client sent it.
    AsSent,
    /// Every parameter, sorted (`?b=2&a=1` and `?a=1&b=2` share an entry).
    Sorted,
    /// Only these parameters (sorted by name, in the key in this order); others are ignored.
    Only(Box<[String]>),
    /// No query at all.
    Ignored,
}

/// How a route builds its keys, made at config load.
#[derive(Debug, Clone)]
pub struct KeySpec {
    /// Keeps routes apart (`route:<name>`): two routes never share entries.
    pub namespace: String,
    /// Whether the host is part of the key.
    pub host: bool,
    /// The query's part.
    pub query: Query,
    /// Request headers whose values are part of the key.
    pub headers: Box<[HeaderName]>,
    /// Whether the consumer is part of the key (each consumer its own entries).
    pub consumer: bool,
}

/// What a request contributes to its key.
pub struct Parts<'a> {
    /// The route that took it: routes never share entries (two routes may send one path
    /// to different upstreams).
    pub route: &'a str,
    /// The listener it came in on (plain and TLS listeners never share entries: an answer
    /// may depend on the scheme).
    pub listener: &'a str,
    /// The effective host (lowercase, no port).
    pub host: &'a str,
    /// The path.
    pub path: &'a str,
    /// The query string as keyed (see [`KeySpec::canonical_query`]), without `?`.
    pub query: Option<&'a str>,
    /// The request headers.
    pub headers: &'a HeaderMap,
    /// The consumer's name, once authenticated.
    pub consumer: Option<&'a str>,
}

/// Key material being written: on the stack up to 512 bytes, on the heap past it, then
/// hashed in one call (one digest call per key instead of one per part: the per-call cost
/// of the digest API dominated short keys).
struct Material {
    stack: [u8; 512],
    len: usize,
    heap: Vec<u8>,
}

impl Material {
    fn new() -> Self {
        Self {
            stack: [0; 512],
            len: 0,
            heap: Vec::new(),
        }
    }

    fn update(&mut self, b: &[u8]) {
        if self.heap.is_empty() && self.len + b.len() <= self.stack.len() {
            self.stack[self.len..self.len + b.len()].copy_from_slice(b);
            self.len += b.len();
        } else {
            if self.heap.is_empty() {
                self.heap.extend_from_slice(&self.stack[..self.len]);
            }
            self.heap.extend_from_slice(b);
        }
    }
}

fn put(m: &mut Material, part: &[u8]) {
    m.update(&(part.len() as u64).to_be_bytes());
    m.update(part);
}

fn finish(m: Material) -> Key {
    let bytes = if m.heap.is_empty() {
        &m.stack[..m.len]
    } else {
        &m.heap[..]
    };
    let mut k = [0u8; 32];
    k.copy_from_slice(digest(&SHA256, bytes).as_ref());
    Key(k)
}

/// A parameter's name as the upstream will read it (percent-decoded, `+` as a space).
fn param_name(pair: &str) -> std::borrow::Cow<'_, str> {
    let name = pair.split_once('=').map_or(pair, |(k, _)| k);
    if !name.contains(['%', '+']) {
        return name.into();
    }
    let spaced = name.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8_lossy()
        .into_owned()
        .into()
}

impl KeySpec {
    /// The query a request is keyed by and forwarded with, when it is not the query as
    /// sent: with `sorted`, its parameters in order of their names (repeated names keep their
    /// order); with a list, only the listed parameters (names compared as the upstream
    /// decodes them); with `ignored`, none. The upstream then gets exactly what the key
    /// covers, so a parameter the key leaves out can never change a stored answer.
    pub fn canonical_query(&self, q: Option<&str>) -> Option<String> {
        let pairs = || q.unwrap_or("").split('&').filter(|p| !p.is_empty());
        match &self.query {
            Query::AsSent => None,
            Query::Ignored => Some(String::new()),
            Query::Sorted => {
                let mut v: Vec<&str> = pairs().collect();
                v.sort_by(|a, b| param_name(a).cmp(&param_name(b)));
                Some(v.join("&"))
            }
            Query::Only(names) => {
                let mut v: Vec<(usize, &str)> = pairs()
                    .filter_map(|p| {
                        let n = param_name(p);
                        names.iter().position(|x| *x == *n).map(|i| (i, p))
                    })
                    .collect();
                v.sort_by_key(|(i, _)| *i);
                Some(v.iter().map(|(_, p)| *p).collect::<Vec<_>>().join("&"))
            }
        }
    }

    /// The key of a request.
    pub fn key(&self, p: &Parts<'_>) -> Key {
        let mut ctx = Material::new();
        put(&mut ctx, self.namespace.as_bytes());
        put(&mut ctx, p.route.as_bytes());
        put(&mut ctx, p.listener.as_bytes());
        put(&mut ctx, if self.host { p.host.as_bytes() } else { b"" });
        put(&mut ctx, p.path.as_bytes());
        match p.query {
            Some(q) => {
                ctx.update(b"?");
                put(&mut ctx, q.as_bytes());
            }
            None => ctx.update(b"-"),
        }
        ctx.update(b"h");
        for name in self.headers.iter() {
            put_field(&mut ctx, name, p.headers);
        }
        if self.consumer {
            put(&mut ctx, p.consumer.unwrap_or("").as_bytes());
        }
        finish(ctx)
    }
}

/// Every line of a field, in order; a field that is absent is told apart from an empty one.
fn put_field(ctx: &mut Material, name: &HeaderName, headers: &HeaderMap) {
    let mut values = headers.get_all(name).iter().peekable();
    if values.peek().is_none() {
        ctx.update(b"-");
        return;
    }
    ctx.update(b"+");
    for v in values {
        put(ctx, v.as_bytes());
    }
    ctx.update(b".");
}

/// The key of one variant of a response that varies on `names` (its `Vary` field): the
/// resource's key, its marker's epoch (an invalidation moves it on, so every earlier variant
/// is out of reach at once) and the request's values of those fields.
pub fn variant(resource: &Key, epoch: u64, names: &[HeaderName], headers: &HeaderMap) -> Key {
    let mut ctx = Material::new();
    ctx.update(&resource.0);
    ctx.update(&epoch.to_be_bytes());
    for name in names {
        put(&mut ctx, name.as_str().as_bytes());
        put_field(&mut ctx, name, headers);
    }
    finish(ctx)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn spec(query: Query) -> KeySpec {
        KeySpec {
            namespace: "route:a".into(),
            host: true,
            query,
            headers: Box::new([HeaderName::from_static("accept-language")]),
            consumer: false,
        }
    }

    fn key(s: &KeySpec, host: &str, path: &str, q: Option<&str>, h: &HeaderMap) -> Key {
        let canon = s.canonical_query(q);
        s.key(&Parts {
            route: "r",
            listener: "public",
            host,
            path,
            query: canon.as_deref().or(q),
            headers: h,
            consumer: None,
        })
    }

    #[test]
    fn parts_are_delimited_and_query_modes_apply() {
        let h = HeaderMap::new();
        let s = spec(Query::AsSent);
        assert_ne!(key(&s, "ab", "/c", None, &h), key(&s, "a", "b/c", None, &h));
        assert_ne!(key(&s, "a", "/", None, &h), key(&s, "a", "/", Some(""), &h));
        assert_ne!(
            key(&s, "a", "/", Some("b=1&a=2"), &h),
            key(&s, "a", "/", Some("a=2&b=1"), &h)
        );
        let s = spec(Query::Sorted);
        assert_eq!(
            s.canonical_query(Some("b=1&a=2&a=1")).unwrap(),
            "a=2&a=1&b=1"
        );
        // Repeated names keep their order: an upstream reading the first value sees it.
        assert_ne!(
            key(&s, "a", "/", Some("id=1&id=2"), &h),
            key(&s, "a", "/", Some("id=2&id=1"), &h)
        );
        let s = spec(Query::Only(Box::new(["page".into()])));
        assert_eq!(s.canonical_query(Some("utm=y&page=2")).unwrap(), "page=2");
        // Names as the upstream decodes them; a parameter hidden in another's value is dropped.
        assert_eq!(s.canonical_query(Some("pag%65=9")).unwrap(), "pag%65=9");
        assert_eq!(s.canonical_query(Some("x=1;page=9")).unwrap(), "");
        assert_ne!(
            key(&s, "a", "/", Some("page=2"), &h),
            key(&s, "a", "/", Some("page=3"), &h)
        );
        let s = spec(Query::Ignored);
        assert_eq!(s.canonical_query(Some("callback=x")).unwrap(), "");
    }

    #[test]
    fn headers_and_variants() {
        let s = spec(Query::AsSent);
        let mut fr = HeaderMap::new();
        fr.insert(
            "accept-language",
            "fr".parse().unwrap_or_else(|_| unreachable!()),
        );
        let empty = HeaderMap::new();
        let mut blank = HeaderMap::new();
        blank.insert("accept-language", http::HeaderValue::from_static(""));
        assert_ne!(
            key(&s, "a", "/", None, &fr),
            key(&s, "a", "/", None, &empty)
        );
        assert_ne!(
            key(&s, "a", "/", None, &blank),
            key(&s, "a", "/", None, &empty)
        );
        let r = key(&s, "a", "/", None, &empty);
        let names = [HeaderName::from_static("accept-encoding")];
        let mut gz = HeaderMap::new();
        gz.insert("accept-encoding", http::HeaderValue::from_static("gzip"));
        assert_ne!(variant(&r, 0, &names, &gz), variant(&r, 0, &names, &empty));
        assert_eq!(
            variant(&r, 0, &names, &gz),
            variant(&r, 0, &names, &gz.clone())
        );
        assert_ne!(variant(&r, 0, &names, &gz), variant(&r, 1, &names, &gz));
    }
}
