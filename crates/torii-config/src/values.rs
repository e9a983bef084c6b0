//! Typed scalar values of the config file: durations, sizes, addresses, URLs, CIDRs, header
//! names, methods and regexes. Each is written as a string, parsed by one function that serves
//! both the schema check (to report every bad value with its line) and deserialization.

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::borrow::Cow;
use std::fmt;

/// Declares a string-typed config value: `Deserialize`/`Serialize` through the parse function,
/// and a JSON Schema `{"type": "string", "format": NAME}` that the schema check knows.
macro_rules! string_value {
    ($ty:ident, $format:literal, $desc:literal, $parse:path) => {
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                $parse(&s).map_err(serde::de::Error::custom)
            }
        }
        impl JsonSchema for $ty {
            fn schema_name() -> Cow<'static, str> {
                Cow::Borrowed(stringify!($ty))
            }
            fn inline_schema() -> bool {
                true
            }
            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                json_schema!({ "type": "string", "format": $format, "description": $desc })
            }
        }
    };
}

/// A format validator: the parse function of a value type, result discarded.
pub(crate) type FormatCheck = fn(&str) -> Result<(), String>;

/// Every string format the schema check validates, with its parser.
pub(crate) const FORMATS: &[(&str, FormatCheck)] = &[
    ("duration", |s| Duration::parse(s).map(drop)),
    ("byte-size", |s| ByteSize::parse(s).map(drop)),
    ("socket-addr", |s| parse_socket_addr(s).map(drop)),
    ("upstream-url", |s| UpstreamUrl::parse(s).map(drop)),
    ("cidr", |s| Cidr::parse(s).map(drop)),
    ("header-name", |s| HeaderName::parse(s).map(drop)),
    ("http-method", |s| Method::parse(s).map(drop)),
    ("regex", |s| Regex::parse(s).map(drop)),
    ("timestamp", |s| Timestamp::parse(s).map(drop)),
];

// === Duration ===

/// A duration written as `250ms`, `10s`, `5m`, `1h`, `7d` or a sum such as `1m30s`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration(pub std::time::Duration);

impl Duration {
    /// `n` seconds.
    pub const fn secs(n: u64) -> Self {
        Self(std::time::Duration::from_secs(n))
    }
    /// `n` milliseconds.
    pub const fn millis(n: u64) -> Self {
        Self(std::time::Duration::from_millis(n))
    }
    /// Parses `250ms`, `10s`, `1m30s`, ...
    pub fn parse(s: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "`{s}` is not a duration; write a number with a unit: `250ms`, `10s`, `5m`, `1h`, `7d` (or a sum like `1m30s`)"
            )
        };
        let mut rest = s.trim();
        if rest.is_empty() {
            return Err(bad());
        }
        let mut total = std::time::Duration::ZERO;
        while !rest.is_empty() {
            let n_end = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
            if n_end == 0 {
                return Err(bad());
            }
            let n: u64 = rest[..n_end].parse().map_err(|_| bad())?;
            rest = &rest[n_end..];
            let u_end = rest
                .find(|c: char| c.is_ascii_digit())
                .unwrap_or(rest.len());
            let part = match &rest[..u_end] {
                "ms" => std::time::Duration::from_millis(n),
                "s" => std::time::Duration::from_secs(n),
                "m" => std::time::Duration::from_secs(n.saturating_mul(60)),
                "h" => std::time::Duration::from_secs(n.saturating_mul(3600)),
                "d" => std::time::Duration::from_secs(n.saturating_mul(86_400)),
                _ => return Err(bad()),
            };
            total = total.checked_add(part).ok_or_else(bad)?;
            rest = &rest[u_end..];
        }
        Ok(Self(total))
    }
}
string_value!(
    Duration,
    "duration",
    "A duration: `250ms`, `10s`, `5m`, `1h`, `7d`, `1m30s`.",
    Duration::parse
);

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{}ms", self.0.as_millis()))
    }
}

// === Timestamp ===

/// A moment written in RFC 3339: `2027-01-31T00:00:00Z`, `2027-01-31T09:00:00+01:00`, or a
/// date alone (`2027-01-31`, midnight UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub std::time::SystemTime);

impl Timestamp {
    /// Parses an RFC 3339 date-time or a date.
    pub fn parse(s: &str) -> Result<Self, String> {
        use time::format_description::well_known::Rfc3339;
        let full = if s.len() == 10 {
            format!("{s}T00:00:00Z")
        } else {
            s.to_string()
        };
        let t = time::OffsetDateTime::parse(&full, &Rfc3339).map_err(|_| {
            format!("`{s}` is not an RFC 3339 date or date-time (`2027-01-31` or `2027-01-31T00:00:00Z`)")
        })?;
        Ok(Self(std::time::SystemTime::from(t)))
    }
}

string_value!(
    Timestamp,
    "timestamp",
    "An RFC 3339 date-time (`2027-01-31T00:00:00Z`) or date (`2027-01-31`, midnight UTC).",
    Timestamp::parse
);

// === ByteSize ===

/// A size in bytes written as `512B`, `64KiB`, `1MiB`, `2GiB` (or `KB`/`MB`/`GB`, powers of 1000).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// `n` KiB.
    pub const fn kib(n: u64) -> Self {
        Self(n * 1024)
    }
    /// `n` MiB.
    pub const fn mib(n: u64) -> Self {
        Self(n * 1024 * 1024)
    }
    /// `n` GiB.
    pub const fn gib(n: u64) -> Self {
        Self(n * 1024 * 1024 * 1024)
    }
    /// Parses `64KiB`, `1MiB`, ...
    pub fn parse(s: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "`{s}` is not a size; write a number with a unit: `512B`, `64KiB`, `1MiB`, `1GiB`"
            )
        };
        let t = s.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        if split == 0 {
            return Err(bad());
        }
        let n: u64 = t[..split].parse().map_err(|_| bad())?;
        let mult: u64 = match t[split..].trim() {
            "B" => 1,
            "KB" => 1000,
            "KiB" => 1024,
            "MB" => 1000 * 1000,
            "MiB" => 1024 * 1024,
            "GB" => 1000 * 1000 * 1000,
            "GiB" => 1024 * 1024 * 1024,
            _ => return Err(bad()),
        };
        n.checked_mul(mult).map(Self).ok_or_else(bad)
    }
}
string_value!(
    ByteSize,
    "byte-size",
    "A size: `512B`, `64KiB`, `1MiB`, `1GiB`.",
    ByteSize::parse
);

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{}B", self.0))
    }
}

// === Socket addresses ===

/// A listen address such as `127.0.0.1:8080` or `[::]:443`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SocketAddr(pub std::net::SocketAddr);

fn parse_socket_addr(s: &str) -> Result<SocketAddr, String> {
    s.parse().map(SocketAddr).map_err(|_| {
        format!("`{s}` is not an IP address with a port; write e.g. `127.0.0.1:8080` or `[::]:443`")
    })
}
/// Written as text, so the JSON Schema shows defaults such as `admin.bind`.
impl Serialize for SocketAddr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}
string_value!(
    SocketAddr,
    "socket-addr",
    "An IP address and port: `127.0.0.1:8080`, `[::]:443`.",
    parse_socket_addr
);

// === Upstream URLs ===

/// An upstream target: `http://host:port` or `https://host:port` (no path, query or user info).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UpstreamUrl {
    /// True for `https`.
    pub tls: bool,
    /// Host name or IP (IPv6 in brackets).
    pub host: String,
    /// Port (the scheme's default when omitted).
    pub port: u16,
}

impl UpstreamUrl {
    /// Parses and checks an upstream URL.
    pub fn parse(s: &str) -> Result<Self, String> {
        let uri: http::Uri = s
            .parse()
            .map_err(|_| format!("`{s}` is not a URL; write e.g. `http://10.0.0.5:8080`"))?;
        let tls = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => return Err(format!("`{s}` must start with `http://` or `https://`")),
        };
        let auth = uri
            .authority()
            .ok_or_else(|| format!("`{s}` has no host; write e.g. `http://10.0.0.5:8080`"))?;
        if auth.as_str().contains('@') {
            return Err(format!("`{s}` must not contain user info"));
        }
        if uri.path() != "/" || uri.query().is_some() || s.ends_with('/') {
            return Err(format!(
                "`{s}` must not have a path or query; use a route `rewrite` to change paths"
            ));
        }
        let host = auth.host();
        check_host(host).map_err(|why| {
            format!("`{s}`: {why}; write e.g. `http://10.0.0.5:8080`, `http://[fd00::5]:8080` or `https://api.internal`")
        })?;
        // The authority must be exactly host or host:port (`[::1]x:8080` is not cut to
        // `[::1]:8080`), with a port from 1 to 65535.
        let port = match &auth.as_str()[host.len()..] {
            "" => None,
            rest => match rest.strip_prefix(':').map(str::parse::<u16>) {
                Some(Ok(p)) if p > 0 && !rest[1..].starts_with('+') => Some(p),
                _ => {
                    return Err(format!(
                        "`{s}` has an invalid port; write e.g. `http://10.0.0.5:8080`"
                    ));
                }
            },
        };
        Ok(Self {
            tls,
            host: host.to_ascii_lowercase(),
            port: port.unwrap_or(if tls { 443 } else { 80 }),
        })
    }

    /// `host:port` as used in an HTTP authority.
    pub fn authority(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}
/// Checks the host of an upstream URL: an IPv4 address, a bracketed IPv6 address, or a DNS
/// name (labels of letters, digits, `-` and `_`, at most 63 bytes each and 253 in all).
fn check_host(host: &str) -> Result<(), &'static str> {
    if let Some(v6) = host.strip_prefix('[') {
        return match v6.strip_suffix(']').map(str::parse::<std::net::Ipv6Addr>) {
            Some(Ok(_)) => Ok(()),
            _ => Err("the address in brackets is not an IPv6 address"),
        };
    }
    if host.is_empty() {
        return Err("the host is empty");
    }
    if host.len() > 253 {
        return Err("the host name is longer than 253 bytes");
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    // A trailing dot (a fully qualified name) is allowed.
    if !host
        .strip_suffix('.')
        .unwrap_or(host)
        .split('.')
        .all(label_ok)
    {
        return Err("the host is not a valid host name or IP address");
    }
    Ok(())
}

string_value!(
    UpstreamUrl,
    "upstream-url",
    "An upstream base URL: `http://10.0.0.5:8080` or `https://api.internal`.",
    UpstreamUrl::parse
);

impl fmt::Display for UpstreamUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "https" } else { "http" };
        write!(f, "{scheme}://{}:{}", self.host, self.port)
    }
}

// === CIDR ===

/// An IP network such as `10.0.0.0/8` or `2001:db8::/32`; a bare address means a single host.
///
/// IPv4-mapped IPv6 networks (`::ffff:10.0.0.0/104`, `::ffff:127.0.0.1`) are stored as the
/// IPv4 network they cover (`10.0.0.0/8`, `127.0.0.1/32`), because client addresses are
/// compared in that form too (a client reaching a dual-stack socket over IPv4 is seen as
/// IPv4). A network written as IPv4-mapped with a prefix shorter than 96 would cover more than
/// the mapped range, so it is refused rather than guessed at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr(pub ipnet::IpNet);

impl Cidr {
    /// Parses a CIDR or a single address.
    pub fn parse(s: &str) -> Result<Self, String> {
        let net = match s.parse::<ipnet::IpNet>() {
            Ok(net) => net,
            Err(_) => s
                .parse::<std::net::IpAddr>()
                .map(ipnet::IpNet::from)
                .map_err(|_| format!("`{s}` is not an IP network; write e.g. `10.0.0.0/8`, `192.168.1.7` or `fd00::/8`"))?,
        };
        Self::canonical(net).map_err(|()| {
            format!("`{s}` is an IPv4-mapped network with a prefix shorter than /96; write the IPv4 network (e.g. `10.0.0.0/8`), or a mapped one of /96 or longer")
        })
    }

    /// The network with host bits cleared, an IPv4-mapped IPv6 network as IPv4.
    fn canonical(net: ipnet::IpNet) -> Result<Self, ()> {
        let ipnet::IpNet::V6(v6) = net else {
            return Ok(Self(net.trunc()));
        };
        let Some(v4) = v6.addr().to_ipv4_mapped() else {
            return Ok(Self(net.trunc()));
        };
        let prefix = v6.prefix_len().checked_sub(96).ok_or(())?;
        ipnet::Ipv4Net::new(v4, prefix)
            .map(|n| Self(ipnet::IpNet::V4(n.trunc())))
            .map_err(|_| ())
    }
}
string_value!(
    Cidr,
    "cidr",
    "An IP network (`10.0.0.0/8`) or a single address.",
    Cidr::parse
);

// === Header names, methods, regexes ===

/// An HTTP header name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HeaderName(pub http::HeaderName);

impl HeaderName {
    /// Parses a header name (case-insensitive).
    pub fn parse(s: &str) -> Result<Self, String> {
        http::HeaderName::from_bytes(s.as_bytes())
            .map(Self)
            .map_err(|_| format!("`{s}` is not a valid header name (letters, digits and `-`)"))
    }
}
string_value!(
    HeaderName,
    "header-name",
    "An HTTP header name.",
    HeaderName::parse
);

/// An HTTP method (`GET`, `POST`, ...).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Method(pub http::Method);

impl Method {
    /// Parses a method; standard methods must be upper case.
    pub fn parse(s: &str) -> Result<Self, String> {
        let upper = s.to_ascii_uppercase();
        if upper != s
            && http::Method::from_bytes(upper.as_bytes()).is_ok_and(|m| m.as_str().len() <= 7)
        {
            return Err(format!("`{s}` must be written in upper case: `{upper}`"));
        }
        http::Method::from_bytes(s.as_bytes())
            .map(Self)
            .map_err(|_| format!("`{s}` is not an HTTP method"))
    }
}
string_value!(
    Method,
    "http-method",
    "An HTTP method such as `GET`.",
    Method::parse
);

/// A regular expression, anchored at both ends when compiled (`^(?:...)$`).
#[derive(Debug, Clone)]
pub struct Regex {
    /// The text as written.
    pub source: String,
    /// The compiled, anchored regex.
    pub regex: regex::Regex,
}

impl Regex {
    /// Compiles `s` anchored; bounded in size.
    pub fn parse(s: &str) -> Result<Self, String> {
        regex::RegexBuilder::new(&format!("^(?:{s})$"))
            .size_limit(1 << 20)
            .build()
            .map(|regex| Self {
                source: s.to_string(),
                regex,
            })
            .map_err(|e| format!("invalid regular expression `{s}`: {e}"))
    }
}
string_value!(
    Regex,
    "regex",
    "A regular expression, matched against the whole value.",
    Regex::parse
);

impl PartialEq for Regex {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(Duration::parse("250ms").unwrap(), Duration::millis(250));
        assert_eq!(Duration::parse("7d").unwrap(), Duration::secs(7 * 86_400));
        assert_eq!(Duration::parse("1m30s").unwrap(), Duration::secs(90));
        assert_eq!(Duration::parse("2h").unwrap(), Duration::secs(7200));
        for bad in ["", "10", "s", "10x", "-1s", "1.5s", "10 s"] {
            assert!(Duration::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(ByteSize::parse("1MiB").unwrap(), ByteSize::mib(1));
        assert_eq!(ByteSize::parse("64KiB").unwrap(), ByteSize::kib(64));
        assert_eq!(ByteSize::parse("10KB").unwrap(), ByteSize(10_000));
        for bad in ["1", "MiB", "1XB", "99999999999999999999GiB"] {
            assert!(ByteSize::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn urls() {
        let u = UpstreamUrl::parse("http://127.0.0.1:9000").unwrap();
        assert_eq!((u.tls, u.host.as_str(), u.port), (false, "127.0.0.1", 9000));
        assert_eq!(
            UpstreamUrl::parse("https://Api.internal").unwrap().port,
            443
        );
        assert_eq!(
            UpstreamUrl::parse("http://[::1]:8080").unwrap().authority(),
            "[::1]:8080"
        );
        assert!(UpstreamUrl::parse("http://svc_a.internal.:81").is_ok());
        for bad in [
            "ftp://x",
            "http://x/path",
            "x:80",
            "http://u:p@x",
            "http://x?q=1",
            // Hosts and ports that cannot work: rejected at load, not sent as `Host: invalid`.
            "http://[zzz]:8080",
            "http://:8080",
            "http://[::1]x:8080",
            "http://x:0",
            "http://x:+80",
            "http://-x.internal",
            "http://a..b",
            "http://x%41",
        ] {
            assert!(UpstreamUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn others() {
        assert!(Cidr::parse("10.0.0.0/8").is_ok());
        assert!(Cidr::parse("::1").is_ok());
        assert!(Cidr::parse("10.0.0.0/33").is_err());
        // IPv4-mapped networks are the IPv4 networks they cover.
        for (mapped, v4) in [
            ("::ffff:127.0.0.1", "127.0.0.1/32"),
            ("::ffff:127.0.0.0/104", "127.0.0.0/8"),
            ("::FFFF:10.1.2.3/120", "10.1.2.0/24"),
            ("::ffff:0:0/96", "0.0.0.0/0"),
        ] {
            assert_eq!(Cidr::parse(mapped).unwrap().0.to_string(), v4, "{mapped}");
        }
        assert!(Cidr::parse("::ffff:0:0/95").is_err());
        assert_eq!(Cidr::parse("::/0").unwrap().0.to_string(), "::/0");
        assert_eq!(Cidr::parse("::1").unwrap().0.to_string(), "::1/128");
        assert!(Method::parse("GET").is_ok());
        assert!(Method::parse("get").is_err());
        assert!(HeaderName::parse("x-api key").is_err());
        assert!(Regex::parse("a+").unwrap().regex.is_match("aaa"));
        assert!(!Regex::parse("a+").unwrap().regex.is_match("baaa"));
        assert!(Regex::parse("(").is_err());
    }
}
