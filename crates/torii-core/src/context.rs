use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

/// The request id: the client's `X-Request-Id` when well-formed, otherwise generated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(pub http::HeaderValue);

impl RequestId {
    /// The id as text.
    pub fn as_str(&self) -> &str {
        self.0.to_str().unwrap_or("")
    }

    /// Accepts a client-supplied id: 1 to 128 characters of `[A-Za-z0-9._:-]`.
    pub fn from_client(v: &http::HeaderValue) -> Option<Self> {
        let b = v.as_bytes();
        let ok = !b.is_empty()
            && b.len() <= 128
            && b.iter()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-' | b':'));
        ok.then(|| Self(v.clone()))
    }
}

/// The client address resolved once per request (socket peer, or the right-most untrusted
/// address of X-Forwarded-For / Forwarded when the peer is a trusted proxy). IPv4-mapped IPv6
/// addresses are stored as IPv4.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub IpAddr);

/// The typed per-request context, inserted into the request's extensions before routing and
/// read by every later stage (route stage, proxy, access log). Nothing re-parses the request.
#[derive(Debug, Clone)]
pub struct RequestContext {
    /// The request id.
    pub request_id: RequestId,
    /// The resolved client address.
    pub client: ClientAddr,
    /// The TCP peer.
    pub peer: SocketAddr,
    /// Name of the listener the request arrived on.
    pub listener: Arc<str>,
    /// When the request head was received.
    pub start: Instant,
    /// The effective host (lowercase, no port, no trailing dot).
    pub host: String,
    /// The normalised path the router matched.
    pub path: String,
    /// The matched route's name, once routed.
    pub route: Option<Arc<str>>,
    /// Route parameters captured by the router, once routed.
    pub params: Vec<(Arc<str>, String)>,
    /// The consumer, once an authentication plugin (or the route's anonymous consumer) set it.
    pub consumer: Option<Arc<crate::Consumer>>,
    /// How the request was authenticated (scheme, claims, scopes).
    pub identity: Option<Arc<crate::Identity>>,
    /// The verified client certificate of a mutual-TLS connection.
    pub client_cert: Option<Arc<ClientCert>>,
    /// Which credential authenticated the request (limits kept per credential).
    pub credential: Option<Credential>,
    /// A body limit for this request below the server-wide one (request_size_limit).
    pub body_limit: Option<u64>,
    /// The path sent upstream, when a plugin chose it (`request_transform`): it replaces
    /// the route's own `rewrite`.
    pub upstream_path: Option<String>,
    /// Response fields the request phase decided (a limiter's `RateLimit` report), added to
    /// whatever answer the request gets, after the response phase
    /// ([`RequestContext::apply_response_fields`]). Empty, and unallocated, for most
    /// requests: a plugin with nothing but fields to add needs no response phase and no
    /// `extensions` entry (a map, a box and a lookup per request).
    pub response_fields: Vec<(http::HeaderName, http::HeaderValue, Join)>,
    /// Typed values plugins leave for their own response phase or for later plugins.
    pub extensions: http::Extensions,
}

/// How a response field decided in the request phase joins the answer's own values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Join {
    /// It replaces the answer's values of its name.
    Replace,
    /// It goes first in the answer's structured-field list of its name, the answer's items
    /// kept after it ([`list_first`]).
    ListFirst,
}

/// Sets a structured-field list field to `v`, keeping the items already there after it (a
/// `quota` and a `rate_limit` on one route both report in `RateLimit`).
pub fn list_first(h: &mut http::HeaderMap, name: http::HeaderName, v: http::HeaderValue) {
    // One lookup: the entry either takes the value or holds the items to keep.
    match h.entry(name) {
        http::header::Entry::Vacant(e) => {
            e.insert(v);
        }
        http::header::Entry::Occupied(mut e) => {
            let old = e.get();
            let mut both = Vec::with_capacity(v.len() + 2 + old.len());
            both.extend_from_slice(v.as_bytes());
            both.extend_from_slice(b", ");
            both.extend_from_slice(old.as_bytes());
            if let Ok(joined) = http::HeaderValue::from_bytes(&both) {
                e.insert(joined);
            }
        }
    }
}

impl RequestContext {
    /// The context of a request as the edge stage first knows it: nothing routed,
    /// authenticated or limited yet.
    pub fn new(
        request_id: RequestId,
        client: ClientAddr,
        peer: SocketAddr,
        listener: Arc<str>,
        start: Instant,
    ) -> Self {
        Self {
            request_id,
            client,
            peer,
            listener,
            start,
            host: String::new(),
            path: String::new(),
            route: None,
            params: Vec::new(),
            consumer: None,
            identity: None,
            client_cert: None,
            credential: None,
            body_limit: None,
            upstream_path: None,
            response_fields: Vec::new(),
            extensions: http::Extensions::new(),
        }
    }

    /// Adds the response fields the request phase decided to `headers`, in the order they
    /// were decided (so of two list items of one name, the later decision's comes first, as
    /// when each plugin added its own in the response phase, in reverse chain order).
    pub fn apply_response_fields(&self, headers: &mut http::HeaderMap) {
        for (name, value, join) in &self.response_fields {
            match join {
                Join::Replace => {
                    headers.insert(name.clone(), value.clone());
                }
                Join::ListFirst => list_first(headers, name.clone(), value.clone()),
            }
        }
    }
}

/// The credential that authenticated a request, as limits kept per credential tell them apart.
#[derive(Debug, Clone)]
pub enum Credential {
    /// A digest of the secret (an API key's SHA-256).
    Digest([u8; 32]),
    /// The credential's name (a basic-auth username).
    Name(Arc<str>),
}

/// Facts of a verified client certificate, read once per connection.
#[derive(Debug, Clone, Default)]
pub struct ClientCert {
    /// The subject's common name, when present.
    pub common_name: Option<String>,
    /// The whole subject in RFC 4514 form (`CN=alice,O=Example`).
    pub subject: String,
    /// DNS names, URIs, e-mail addresses and IP addresses of the subject alternative names.
    pub sans: Vec<String>,
}
