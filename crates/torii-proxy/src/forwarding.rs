//! Request identity and forwarding headers: the effective host, the client address behind
//! trusted proxies, hop-by-hop header removal, and X-Forwarded-* / Forwarded.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use ipnet::IpNet;
use std::net::{IpAddr, SocketAddr};
use torii_core::{ErrorKind, GatewayError};

/// Canonical form of an address: IPv4-mapped IPv6 becomes IPv4.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

fn trusted(ip: IpAddr, proxies: &[IpNet]) -> bool {
    proxies.iter().any(|n| n.contains(&ip))
}

/// The client address: the peer, or, when the peer is a trusted proxy, the right-most address
/// of X-Forwarded-For (or `for=` of Forwarded) that is not itself a trusted proxy.
pub fn client_addr(peer: SocketAddr, headers: &HeaderMap, proxies: &[IpNet]) -> IpAddr {
    let peer_ip = canonical(peer.ip());
    if proxies.is_empty() || !trusted(peer_ip, proxies) {
        return peer_ip;
    }
    let mut chain: Vec<IpAddr> = Vec::new();
    if headers.contains_key("x-forwarded-for") {
        for v in headers.get_all("x-forwarded-for") {
            let Ok(s) = v.to_str() else { return peer_ip };
            for part in s.split(',') {
                match parse_ip(part.trim()) {
                    Some(ip) => chain.push(ip),
                    None => return peer_ip,
                }
            }
        }
    } else {
        for v in headers.get_all(header::FORWARDED) {
            let Ok(s) = v.to_str() else { return peer_ip };
            for element in s.split(',') {
                for pair in element.split(';') {
                    if let Some((k, val)) = pair.trim().split_once('=')
                        && k.eq_ignore_ascii_case("for")
                    {
                        match parse_ip(val.trim().trim_matches('"')) {
                            Some(ip) => chain.push(ip),
                            None => return peer_ip,
                        }
                    }
                }
            }
        }
    }
    chain
        .iter()
        .rev()
        .copied()
        .find(|ip| !trusted(*ip, proxies))
        .or(chain.first().copied())
        .unwrap_or(peer_ip)
}

fn parse_ip(s: &str) -> Option<IpAddr> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return Some(canonical(sa.ip()));
    }
    let inner = s.strip_prefix('[')?.split(']').next()?;
    inner.parse::<IpAddr>().ok().map(canonical)
}

/// The effective host: `:authority` / absolute-form target first, otherwise `Host`. Missing,
/// duplicate or conflicting values are a 400. Returned lowercase, without port or trailing dot.
pub fn effective_host(
    uri: &http::Uri,
    headers: &HeaderMap,
    version: http::Version,
) -> Result<String, GatewayError> {
    let bad = |msg: &str| GatewayError::new(ErrorKind::BadRequest, msg.to_string());
    let mut hosts = headers.get_all(header::HOST).iter();
    let host_header = hosts.next();
    if hosts.next().is_some() {
        return Err(bad("duplicate Host headers"));
    }
    let from_header = match host_header {
        Some(v) => Some(v.to_str().map_err(|_| bad("Host is not ASCII"))?),
        None => None,
    };
    let raw = match (uri.authority(), from_header) {
        (Some(a), Some(h)) => {
            let a_norm =
                torii_router::normalize_host(a.as_str()).map_err(|_| bad("invalid authority"))?;
            let h_norm = torii_router::normalize_host(h).map_err(|_| bad("invalid Host"))?;
            // RFC 9112 3.2.2: for an absolute-form target the Host header is ignored; for
            // HTTP/2 a Host that disagrees with :authority is malformed (RFC 9113 8.3.1).
            if version == http::Version::HTTP_2 && a_norm != h_norm {
                return Err(bad("Host conflicts with :authority"));
            }
            return Ok(a_norm.into_owned());
        }
        (Some(a), None) => a.as_str(),
        (None, Some(h)) => h,
        (None, None) if version == http::Version::HTTP_10 => return Ok(String::new()),
        (None, None) => return Err(bad("missing Host")),
    };
    torii_router::normalize_host(raw)
        .map(|h| h.into_owned())
        .map_err(|_| bad("invalid Host"))
}

static HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::TE,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    HeaderName::from_static("http2-settings"),
];

/// Whether `name` is in [`HOP_BY_HOP`]. It runs for every field of every request and
/// response, so it compares the name's text by length first instead of comparing the name
/// against each entry in turn (a quarter of the instructions).
fn is_hop_by_hop(name: &HeaderName) -> bool {
    let s = name.as_str();
    match s.len() {
        2 => s == "te",
        7 => s == "upgrade",
        10 => s == "connection" || s == "keep-alive",
        14 => s == "http2-settings",
        16 => s == "proxy-connection",
        17 => s == "transfer-encoding",
        _ => false,
    }
}

/// Removes the headers a client names in `Connection` (RFC 9110 7.6.1), before plugins run:
/// a client could otherwise name headers the gateway adds later (identity headers, an identity
/// token, headers copied from an auth service) and have the final hop-by-hop removal delete
/// them. The `upgrade` option is kept for WebSocket handshakes; `Host` and `Content-Length`
/// are never removed this way. Cheap when there is no `Connection` header.
pub fn drop_connection_listed(headers: &mut HeaderMap) {
    if !headers.contains_key(header::CONNECTION) {
        return;
    }
    let mut upgrade = false;
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|v| v.to_str().unwrap_or("").split(','))
        .filter_map(|n| {
            let n = n.trim();
            if n.eq_ignore_ascii_case("upgrade") {
                upgrade = true;
                return None;
            }
            HeaderName::from_bytes(n.as_bytes()).ok()
        })
        .filter(|n| *n != header::HOST && *n != header::CONTENT_LENGTH)
        .collect();
    for n in named {
        headers.remove(n);
    }
    headers.remove(header::CONNECTION);
    if upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// Removes hop-by-hop headers: Connection and the headers it names (never Host or
/// Content-Length), Keep-Alive,
/// Proxy-Connection, Transfer-Encoding, TE (except `trailers`, which is kept), Upgrade and
/// HTTP2-Settings. With `keep_upgrade` (a WebSocket handshake) `Connection: upgrade` and
/// `Upgrade` pass.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    // Most messages carry none: one pass over the names (cheap comparisons, no hashing)
    // instead of a lookup per hop-by-hop name.
    if !keep_upgrade && !headers.keys().any(is_hop_by_hop) {
        return;
    }
    // Every Connection field counts (`Connection: keep-alive` then `Connection: x-secret`
    // must not leak `X-Secret`).
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .filter_map(|n| HeaderName::from_bytes(n.trim_ascii()).ok())
        .filter(|n| !(keep_upgrade && n == header::UPGRADE))
        // As in `drop_connection_listed`: a message keeps its Host and its framing.
        .filter(|n| *n != header::HOST && *n != header::CONTENT_LENGTH)
        .collect();
    for n in named {
        headers.remove(n);
    }
    let te_trailers = headers.get_all(header::TE).iter().any(|v| {
        v.to_str().is_ok_and(|s| {
            s.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("trailers"))
        })
    });
    for h in &HOP_BY_HOP {
        if keep_upgrade && (h == header::UPGRADE || h == header::CONNECTION) {
            continue;
        }
        headers.remove(h);
    }
    if keep_upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
    if te_trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
}

/// A connection's own forwarding values, rendered once when the connection opens (formatting
/// an address is a measurable part of a proxied request's cost otherwise).
#[derive(Debug)]
pub struct PeerForwarding {
    /// The peer's address as X-Forwarded-For carries it.
    xff: HeaderValue,
    /// This hop's Forwarded element without `host`: `for=...;proto=...`.
    element: HeaderValue,
    proto: &'static str,
}

impl PeerForwarding {
    /// The values for a peer (already canonical) reached over `proto` (`http` or `https`).
    pub fn new(peer: IpAddr, proto: &'static str) -> Self {
        let element = match peer {
            IpAddr::V6(_) => format!("for=\"[{peer}]\";proto={proto}"),
            IpAddr::V4(_) => format!("for={peer};proto={proto}"),
        };
        // Both are built from an address and a fixed token: always valid field values.
        let value = |s: String| {
            HeaderValue::from_maybe_shared(bytes::Bytes::from(s))
                .unwrap_or(HeaderValue::from_static("unknown"))
        };
        Self {
            xff: value(peer.to_string()),
            element: value(element),
            proto,
        }
    }
}

/// The fields the gateway sets on a request on its way upstream: X-Forwarded-For,
/// Forwarded, X-Forwarded-Proto, X-Forwarded-Host and X-Request-Id. They are not inserted into
/// the request's header map: [`forwarding_fields`] clears the map of these names (after
/// folding in the previous values that count) and the HTTP/1.1 encoder writes them after the
/// request's own fields, which saves five map inserts per request (about 1,000 instructions,
/// docs/performance.md). An HTTP/2 upstream gets them inserted (`ExtraFields::insert_into`).
///
/// The values are not built either: `Added` keeps the pieces (the connection's rendered
/// peer values, a trusted proxy's previous values, the request's host, the request id) and
/// `ExtraFields::each` hands each field over as the list of its parts, which the HTTP/1.1 encoder
/// writes one after the other. Joining them into new values cost an allocation, a copy and a
/// validation pass per request, and each shared value cloned in and dropped again costs two
/// atomic operations. Each part is a valid field value and the separators are visible ASCII,
/// so every joined value is one too.
#[derive(Debug)]
pub struct Added<'a> {
    peer: &'a PeerForwarding,
    /// A trusted proxy's X-Forwarded-For and Forwarded values, extended by this hop.
    xff_prev: Option<HeaderValue>,
    fwd_prev: Option<HeaderValue>,
    /// The request's host, sent in Forwarded when it needs no quoting (`host_in_forwarded`)
    /// and as X-Forwarded-Host (`xfh`: there is a host and no trusted proxy set one).
    host: Option<HeaderValue>,
    host_in_forwarded: bool,
    xfh: bool,
    /// X-Forwarded-Proto is sent unless a trusted proxy set one.
    proto: bool,
    request_id: &'a HeaderValue,
    /// The consumer's identity fields, when they are sent from the consumer's own values
    /// instead of copies in the header map (see [`Added::with_identity`]).
    identity: Option<(&'a torii_plugins::IdentityHeaders, &'a torii_core::Consumer)>,
}

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
/// The request id field.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

impl Added<'_> {
    /// Each name and whether the gateway sends it.
    fn names(&self) -> [(&'static HeaderName, bool); 5] {
        [
            (&X_FORWARDED_FOR, true),
            (&header::FORWARDED, true),
            (&X_FORWARDED_PROTO, self.proto),
            (&X_FORWARDED_HOST, self.xfh),
            (&X_REQUEST_ID, true),
        ]
    }
}

impl torii_upstream::ExtraFields for Added<'_> {
    fn each(&self, field: &mut dyn FnMut(&HeaderName, &[&[u8]])) {
        let xff = self.peer.xff.as_bytes();
        match &self.xff_prev {
            Some(p) => field(&X_FORWARDED_FOR, &[p.as_bytes(), b", ", xff]),
            None => field(&X_FORWARDED_FOR, &[xff]),
        }
        let el = self.peer.element.as_bytes();
        let host = self.host.as_ref().map(HeaderValue::as_bytes);
        let fwd = &header::FORWARDED;
        match (&self.fwd_prev, host.filter(|_| self.host_in_forwarded)) {
            (None, None) => field(fwd, &[el]),
            (None, Some(h)) => field(fwd, &[el, b";host=", h]),
            (Some(p), None) => field(fwd, &[p.as_bytes(), b", ", el]),
            (Some(p), Some(h)) => field(fwd, &[p.as_bytes(), b", ", el, b";host=", h]),
        }
        if self.proto {
            field(&X_FORWARDED_PROTO, &[self.peer.proto.as_bytes()]);
        }
        if let Some(h) = host.filter(|_| self.xfh) {
            field(&X_FORWARDED_HOST, &[h]);
        }
        field(&X_REQUEST_ID, &[self.request_id.as_bytes()]);
        if let Some((names, consumer)) = self.identity {
            names.each(consumer, field);
        }
    }
}

impl<'a> Added<'a> {
    /// Sends the consumer's identity fields with these, written from the consumer's values
    /// (the caller has cleared those names from the request's map with
    /// `IdentityHeaders::clear_for`). For a request whose head no exchange plugin reads:
    /// inserting the values into the map cost three inserts, and each shared value cloned in
    /// and dropped later touched its reference count twice, a cache miss each time when the
    /// consumers are many (issue 16's key_auth budget).
    pub fn with_identity(
        &mut self,
        names: &'a torii_plugins::IdentityHeaders,
        consumer: &'a torii_core::Consumer,
    ) {
        self.identity = Some((names, consumer));
    }
}

/// The forwarding fields and request id for a request (see [`Added`]), with every other
/// value of those names removed from `headers`. From a trusted proxy, X-Forwarded-For and
/// Forwarded extend the previous values, and an existing X-Forwarded-Proto or -Host is kept
/// (left in the map); otherwise every value is what the gateway saw.
pub fn forwarding_fields<'a>(
    headers: &mut HeaderMap,
    peer: &'a PeerForwarding,
    peer_trusted: bool,
    host: Option<HeaderValue>,
    request_id: &'a HeaderValue,
) -> Added<'a> {
    // Previous values count only from a trusted proxy (no lookups otherwise).
    let prev = |name: &HeaderName| {
        if peer_trusted {
            // A value that is not visible ASCII is not extended (as before: replaced).
            headers
                .get(name)
                .filter(|p| !p.is_empty() && p.to_str().is_ok())
                .cloned()
        } else {
            None
        }
    };
    // `host=` only for a value that needs no quoting.
    let host_in_forwarded = host.as_ref().is_some_and(|h| {
        !h.is_empty()
            && h.as_bytes()
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'))
    });
    let kept = |name: &HeaderName| peer_trusted && headers.contains_key(name);
    let xfh = host.is_some() && !kept(&X_FORWARDED_HOST);
    let added = Added {
        peer,
        xff_prev: prev(&X_FORWARDED_FOR),
        fwd_prev: prev(&header::FORWARDED),
        host,
        host_in_forwarded,
        xfh,
        proto: !kept(&X_FORWARDED_PROTO),
        request_id,
        identity: None,
    };
    // The map keeps no other value of a name set here, nor, from an untrusted peer, any of
    // the client's values of these names. Most requests carry none: one pass over the names.
    let names = added.names();
    if headers.keys().any(|k| names.iter().any(|(n, _)| *n == k)) {
        for (name, sent) in names {
            if sent || !peer_trusted {
                headers.remove(name);
            }
        }
    }
    added
}

/// Whether the peer is a trusted proxy.
pub fn peer_trusted(peer: SocketAddr, proxies: &[IpNet]) -> bool {
    trusted(canonical(peer.ip()), proxies)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use torii_upstream::ExtraFields as _;

    /// Encodes a GET carrying `fields` from `peer`, with the gateway's fields prepared as the
    /// pipeline does; returns the request's own field lines (sorted: removals may reorder
    /// the map) and the gateway's lines (in the order sent).
    fn encode_forwarded(
        fields: &[(&str, &str)],
        peer: &str,
        trusted: bool,
    ) -> (Vec<String>, Vec<String>) {
        let mut req = http::Request::get("/x");
        for (n, v) in fields {
            req = req.header(*n, *v);
        }
        let (mut parts, _) = req.body(()).expect("request").into_parts();
        let peer = PeerForwarding::new(peer.parse().expect("ip"), "http");
        let host = parts.headers.get(http::header::HOST).cloned();
        let rid = HeaderValue::from_static("rid");
        let added = forwarding_fields(&mut parts.headers, &peer, trusted, host, &rid);
        let own: Vec<String> = parts
            .headers
            .iter()
            .map(|(n, v)| format!("{n}: {}", v.to_str().unwrap_or("?")))
            .collect();
        let w = torii_upstream::codec::encode::Writer::new(
            Vec::new(),
            &parts,
            torii_core::Body::Empty,
            &HeaderValue::from_static("up:80"),
            false,
            Some(&added),
        );
        let out = String::from_utf8(w.into_buffer()).expect("utf-8");
        let mut lines: Vec<String> = out
            .trim_end_matches("\r\n")
            .split("\r\n")
            .skip(1)
            .map(str::to_string)
            .collect();
        // The encoder adds the upstream's Host when the request has none.
        let own_lines = own.len() + usize::from(!parts.headers.contains_key(http::header::HOST));
        let theirs = lines.split_off(own_lines);
        lines.sort();
        (lines, theirs)
    }

    #[test]
    fn gateway_fields_are_written_part_by_part_after_the_request_fields() {
        // A trusted proxy: its lists are extended, its X-Forwarded-Host is kept.
        let (own, added) = encode_forwarded(
            &[
                ("host", "api.example.com"),
                ("x-forwarded-for", "203.0.113.9"),
                ("forwarded", "for=203.0.113.9"),
                ("x-forwarded-host", "orig.example"),
                ("x-custom", "1"),
            ],
            "10.0.0.1",
            true,
        );
        assert_eq!(
            own,
            [
                "host: api.example.com",
                "x-custom: 1",
                "x-forwarded-host: orig.example"
            ]
        );
        assert_eq!(
            added,
            [
                "x-forwarded-for: 203.0.113.9, 10.0.0.1",
                "forwarded: for=203.0.113.9, for=10.0.0.1;proto=http;host=api.example.com",
                "x-forwarded-proto: http",
                "x-request-id: rid",
            ]
        );
        // An untrusted client without a Host (HTTP/1.0): every client value is dropped, no
        // host anywhere, an IPv6 peer quoted in Forwarded.
        let (own, added) = encode_forwarded(
            &[
                ("x-forwarded-for", "6.6.6.6"),
                ("x-forwarded-host", "spoofed"),
                ("forwarded", "for=6.6.6.6"),
            ],
            "2001:db8::1",
            false,
        );
        assert_eq!(own, ["host: up:80"]);
        assert_eq!(
            added,
            [
                "x-forwarded-for: 2001:db8::1",
                "forwarded: for=\"[2001:db8::1]\";proto=http",
                "x-forwarded-proto: http",
                "x-request-id: rid",
            ]
        );
    }

    #[test]
    fn hop_by_hop_names_are_exactly_the_listed_ones() {
        for n in &HOP_BY_HOP {
            assert!(is_hop_by_hop(n), "{n}");
        }
        let others = [
            "host",
            "tk",
            "age",
            "upgrades",
            "connections",
            "keep-alivE2",
            "trailer",
            "te2",
            "content-length",
            "proxy-authorization",
            "http2-settingz",
            "transfer-encodinG1",
            "x-forwarded-for",
            "server",
            "date",
            "accept-encoding",
        ];
        for n in others {
            let name = HeaderName::from_bytes(n.as_bytes()).unwrap();
            assert!(!is_hop_by_hop(&name), "{n}");
        }
    }

    fn h(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        m
    }

    fn set_forwarded(
        m: &mut HeaderMap,
        peer: &PeerForwarding,
        trusted: bool,
        host: Option<&HeaderValue>,
    ) {
        let rid = HeaderValue::from_static("rid");
        let added = forwarding_fields(m, peer, trusted, host.cloned(), &rid);
        for (name, sent) in added.names() {
            assert!(!sent || !m.contains_key(name), "{name} left in the map");
        }
        added.insert_into(m);
    }

    #[test]
    fn forwarding_headers_replace_or_extend() {
        let host = HeaderValue::from_static("api.example.com:8080");
        let client = [
            ("x-forwarded-for", "6.6.6.6"),
            ("forwarded", "for=6.6.6.6"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "spoofed"),
        ];
        let v4 = PeerForwarding::new("10.0.0.1".parse().unwrap(), "http");
        // Untrusted peer: every value is the gateway's own.
        let mut m = h(&client);
        set_forwarded(&mut m, &v4, false, Some(&host));
        assert_eq!(m["x-forwarded-for"], "10.0.0.1");
        assert_eq!(
            m["forwarded"],
            "for=10.0.0.1;proto=http;host=api.example.com:8080"
        );
        assert_eq!(m["x-forwarded-proto"], "http");
        assert_eq!(m["x-forwarded-host"], "api.example.com:8080");
        // Trusted peer: the chain is extended, proto and host kept.
        let mut m = h(&client);
        set_forwarded(&mut m, &v4, true, Some(&host));
        assert_eq!(m["x-forwarded-for"], "6.6.6.6, 10.0.0.1");
        assert_eq!(
            m["forwarded"],
            "for=6.6.6.6, for=10.0.0.1;proto=http;host=api.example.com:8080"
        );
        assert_eq!(m["x-forwarded-proto"], "https");
        assert_eq!(m["x-forwarded-host"], "spoofed");
        // IPv6 is quoted; a host that would need quoting is left out of Forwarded.
        let v6 = PeerForwarding::new("2001:db8::1".parse().unwrap(), "https");
        let mut m = HeaderMap::new();
        set_forwarded(&mut m, &v6, true, Some(&HeaderValue::from_static("a b")));
        assert_eq!(m["x-forwarded-for"], "2001:db8::1");
        assert_eq!(m["forwarded"], "for=\"[2001:db8::1]\";proto=https");
        let mut m = HeaderMap::new();
        set_forwarded(&mut m, &v6, false, None);
        assert_eq!(m["forwarded"], "for=\"[2001:db8::1]\";proto=https");
        assert!(!m.contains_key("x-forwarded-host"));
        // Without a host, an untrusted client's X-Forwarded-Host is still removed; its
        // request id is replaced (the pipeline passes the client's when it keeps it).
        let mut m = h(&[
            ("x-forwarded-host", "spoofed"),
            ("x-request-id", "client"),
            ("x-other", "1"),
        ]);
        set_forwarded(&mut m, &v4, false, None);
        assert!(!m.contains_key("x-forwarded-host"));
        assert_eq!(m["x-request-id"], "rid");
        assert_eq!(m.get_all("x-request-id").iter().count(), 1);
        assert_eq!(m["x-other"], "1");
    }

    #[test]
    fn client_address_behind_trusted_proxies() {
        let proxies: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let peer: SocketAddr = "10.1.1.1:5000".parse().unwrap();
        let hdrs = h(&[("x-forwarded-for", "6.6.6.6, 1.2.3.4, 10.2.2.2")]);
        assert_eq!(
            client_addr(peer, &hdrs, &proxies),
            "1.2.3.4".parse::<IpAddr>().unwrap()
        );
        let untrusted: SocketAddr = "8.8.8.8:5000".parse().unwrap();
        assert_eq!(
            client_addr(untrusted, &hdrs, &proxies),
            "8.8.8.8".parse::<IpAddr>().unwrap()
        );
        let fwd = h(&[(
            "forwarded",
            "for=\"[2001:db8::1]:4711\";proto=https, for=10.3.3.3",
        )]);
        assert_eq!(
            client_addr(peer, &fwd, &proxies),
            "2001:db8::1".parse::<IpAddr>().unwrap()
        );
        let mapped: SocketAddr = "[::ffff:10.1.1.1]:5000".parse().unwrap();
        assert_eq!(
            client_addr(mapped, &hdrs, &proxies),
            "1.2.3.4".parse::<IpAddr>().unwrap()
        );
        let garbage = h(&[("x-forwarded-for", "not-an-ip")]);
        assert_eq!(
            client_addr(peer, &garbage, &proxies),
            "10.1.1.1".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn hop_by_hop_removed() {
        let mut m = h(&[
            ("connection", "close, x-secret"),
            ("x-secret", "1"),
            ("keep-alive", "5"),
            ("te", "trailers, gzip"),
            ("upgrade", "h2c"),
            ("x-keep", "1"),
        ]);
        strip_hop_by_hop(&mut m, false);
        assert!(
            m.get("x-secret").is_none()
                && m.get("connection").is_none()
                && m.get("keep-alive").is_none()
                && m.get("upgrade").is_none()
        );
        assert_eq!(m.get("te").unwrap(), "trailers");
        assert_eq!(m.get("x-keep").unwrap(), "1");
        // Host and Content-Length are never removed by naming them in Connection.
        let mut m = h(&[
            ("connection", "host, content-length, x-secret"),
            ("host", "a.example"),
            ("content-length", "3"),
            ("x-secret", "1"),
        ]);
        strip_hop_by_hop(&mut m, false);
        assert_eq!(m.get("host").unwrap(), "a.example");
        assert_eq!(m.get("content-length").unwrap(), "3");
        assert!(m.get("x-secret").is_none() && m.get("connection").is_none());
        // Every Connection field counts, not only the first.
        let mut m = h(&[
            ("connection", "keep-alive"),
            ("connection", "x-secret"),
            ("x-secret", "1"),
        ]);
        strip_hop_by_hop(&mut m, false);
        assert!(m.get("x-secret").is_none() && m.get("connection").is_none());
    }

    #[test]
    fn host_rules() {
        let uri: http::Uri = "/x".parse().unwrap();
        assert_eq!(
            effective_host(
                &uri,
                &h(&[("host", "API.Example.com.:8080")]),
                http::Version::HTTP_11
            )
            .unwrap(),
            "api.example.com"
        );
        assert!(
            effective_host(
                &uri,
                &h(&[("host", "a"), ("host", "b")]),
                http::Version::HTTP_11
            )
            .is_err()
        );
        assert!(effective_host(&uri, &h(&[]), http::Version::HTTP_11).is_err());
        let abs: http::Uri = "http://Other.example/x".parse().unwrap();
        assert_eq!(
            effective_host(&abs, &h(&[("host", "a")]), http::Version::HTTP_11).unwrap(),
            "other.example"
        );
    }
}
