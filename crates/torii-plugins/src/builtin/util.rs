//! Small helpers shared by plugins.

use http::request::Parts;
use std::borrow::Cow;

/// The first value of query parameter `name` (percent-decoded), if present.
pub(crate) fn query_param<'a>(parts: &'a Parts, name: &str) -> Option<Cow<'a, str>> {
    let q = parts.uri.query()?;
    form_urlencoded::parse(q.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
}

/// Removes every occurrence of query parameter `name`, keeping the others as written.
pub(crate) fn remove_query_param(parts: &mut Parts, name: &str) {
    let Some(pq) = parts.uri.path_and_query() else {
        return;
    };
    let Some(q) = pq.query() else {
        return;
    };
    let kept: Vec<&str> = q
        .split('&')
        .filter(|pair| {
            let raw = pair.split('=').next().unwrap_or("");
            let decoded: String = form_urlencoded::parse(raw.as_bytes())
                .map(|(k, _)| k.into_owned())
                .next()
                .unwrap_or_default();
            decoded != name
        })
        .collect();
    let mut s = pq.path().to_string();
    if !kept.is_empty() {
        s.push('?');
        s.push_str(&kept.join("&"));
    }
    let mut uri = std::mem::take(&mut parts.uri).into_parts();
    if let Ok(pq) = http::uri::PathAndQuery::try_from(s) {
        uri.path_and_query = Some(pq);
    }
    if let Ok(u) = http::Uri::from_parts(uri) {
        parts.uri = u;
    }
}

/// A quoted-string for an auth challenge parameter (RFC 9110 11.2), with `"` and `\` escaped.
pub(crate) fn quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// Appends `name=value` (form-encoded) to the query string.
pub(crate) fn append_query_param(parts: &mut Parts, name: &str, value: &str) {
    let Some(pq) = parts.uri.path_and_query() else {
        return;
    };
    let pair = form_urlencoded::Serializer::new(String::new())
        .append_pair(name, value)
        .finish();
    let s = match pq.query() {
        Some(q) if !q.is_empty() => format!("{}?{q}&{pair}", pq.path()),
        _ => format!("{}?{pair}", pq.path()),
    };
    let mut uri = std::mem::take(&mut parts.uri).into_parts();
    if let Ok(pq) = http::uri::PathAndQuery::try_from(s) {
        uri.path_and_query = Some(pq);
    }
    if let Ok(u) = http::Uri::from_parts(uri) {
        parts.uri = u;
    }
}

/// A path (and query) to call on a named upstream, as the request URI: `key` names the setting
/// in the error, `example` shows a good value.
pub(crate) fn service_path(
    key: &str,
    path: &str,
    example: &str,
) -> Result<http::Uri, crate::ConfigError> {
    http::uri::PathAndQuery::try_from(path)
        .ok()
        .filter(|_| path.starts_with('/'))
        .map(http::Uri::from)
        .ok_or_else(|| {
            crate::ConfigError::at(
                key,
                format!("`{path}` is not a path"),
                format!("write a path starting with `/`, e.g. `{example}`"),
            )
        })
}

/// A client's JSON request body, read whole for a plugin that must see all of it: `None`
/// when it is over `max` bytes (the caller answers), an error when it broke, stalled
/// (`GatewayError::client_body`) or carries trailers (400: a JSON document has none). One
/// frame is kept as it is; several are joined.
pub(crate) async fn read_json_body(
    body: torii_core::Body,
    max: usize,
) -> Result<Option<bytes::Bytes>, torii_core::GatewayError> {
    use torii_core::{ErrorKind, GatewayError, Replay};
    match body
        .into_replay(max)
        .await
        .map_err(|e| GatewayError::client_body(&*e))?
    {
        Replay::Complete {
            mut data,
            trailers: None,
        } => Ok(Some(match data.len() {
            0 => bytes::Bytes::new(),
            1 => data.swap_remove(0),
            _ => bytes::Bytes::from(data.concat()),
        })),
        Replay::Complete { .. } => Err(GatewayError::new(
            ErrorKind::BadRequest,
            "a JSON body with trailers",
        )),
        Replay::TooLarge(_) => Ok(None),
    }
}

/// A client for tests that never call out.
#[cfg(test)]
pub(crate) fn test_client() -> torii_upstream::Client {
    let url: http::Uri = "http://127.0.0.1:9/".parse().expect("url");
    match torii_upstream::Registry::default().for_url(&url) {
        Ok(u) => torii_upstream::Client::new(u),
        Err(e) => panic!("{e}"),
    }
}

/// The media type of a body (lowercase, without parameters) when it has no content coding:
/// what a body transformation may read. `None` for a coded body or one without a type.
pub(crate) fn uncoded_media(h: &http::HeaderMap) -> Option<String> {
    if coding(h) != Coding::Identity {
        return None;
    }
    media(h)
}

/// The largest body worked on (parsed, checked, decoded) on the runtime's own threads; a
/// larger one goes to the blocking pool, so one large document does not hold up the other
/// requests of its thread.
pub(crate) const INLINE_WORK: usize = 256 << 10;

/// A body's content coding, as far as a transformation can undo it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Coding {
    /// None (or `identity`).
    Identity,
    /// `gzip` (or `x-gzip`).
    Gzip,
    /// `deflate` (zlib).
    Deflate,
    /// Anything else, or several codings.
    Other,
}

/// The body's content coding.
pub(crate) fn coding(h: &http::HeaderMap) -> Coding {
    let mut found = Coding::Identity;
    for v in h.get_all(http::header::CONTENT_ENCODING) {
        for c in v.to_str().unwrap_or("?").split(',') {
            let c = c.trim();
            let this = if c.eq_ignore_ascii_case("identity") || c.is_empty() {
                continue;
            } else if c.eq_ignore_ascii_case("gzip") || c.eq_ignore_ascii_case("x-gzip") {
                Coding::Gzip
            } else if c.eq_ignore_ascii_case("deflate") {
                Coding::Deflate
            } else {
                Coding::Other
            };
            found = if found == Coding::Identity {
                this
            } else {
                Coding::Other
            };
        }
    }
    found
}

/// The body's media type (lowercase, without parameters), whatever its coding.
pub(crate) fn media(h: &http::HeaderMap) -> Option<String> {
    h.get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
}

/// Decodes a gzip or deflate body, refusing one that decodes to more than `max` bytes (a
/// small body may inflate a thousandfold). `None`: not valid in its coding, or too large.
pub(crate) fn decode(data: &[u8], coding: Coding, max: usize) -> Option<Vec<u8>> {
    use std::io::Read;
    let mut out = Vec::new();
    let limit = max as u64 + 1;
    let read = match coding {
        Coding::Gzip => flate2::read::MultiGzDecoder::new(data)
            .take(limit)
            .read_to_end(&mut out),
        Coding::Deflate => {
            // RFC 9110 says zlib (RFC 1950); some servers send raw deflate (RFC 1951).
            match flate2::read::ZlibDecoder::new(data)
                .take(limit)
                .read_to_end(&mut out)
            {
                Ok(n) => Ok(n),
                Err(_) => {
                    out.clear();
                    flate2::read::DeflateDecoder::new(data)
                        .take(limit)
                        .read_to_end(&mut out)
                }
            }
        }
        Coding::Identity => return (data.len() <= max).then(|| data.to_vec()),
        Coding::Other => return None,
    };
    (read.is_ok() && out.len() <= max).then_some(out)
}

/// Whether a media type is JSON (`application/json` or any `+json`).
pub(crate) fn is_json(media: &str) -> bool {
    media == "application/json" || media.ends_with("+json")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn parts(uri: &str) -> Parts {
        http::Request::get(uri).body(()).unwrap().into_parts().0
    }

    #[test]
    fn query_params() {
        let mut p = parts("/a?x=1&apikey=s%20ecret&y=2&apikey=again");
        assert_eq!(query_param(&p, "apikey").unwrap(), "s ecret");
        remove_query_param(&mut p, "apikey");
        assert_eq!(p.uri.to_string(), "/a?x=1&y=2");
        let mut p = parts("/a?apikey=1");
        remove_query_param(&mut p, "apikey");
        assert_eq!(p.uri.to_string(), "/a");
    }
}
