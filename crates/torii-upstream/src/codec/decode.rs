//! The response head of an upstream HTTP/1.1 exchange, and how its body is framed
//! (RFC 9112 section 6.3). A response whose framing could be read two ways (Transfer-Encoding
//! together with Content-Length, differing Content-Length values, `chunked` not last) is an
//! error, never a guess: that is how response splitting and desync start.

use bytes::BytesMut;
use http::header::{CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Version};
use std::mem::MaybeUninit;

/// Largest response head accepted from an upstream.
pub const MAX_HEAD: usize = 64 * 1024;
/// Most header fields in a response head.
pub const MAX_FIELDS: usize = 128;

/// How the response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// Exactly this many bytes (0 for bodiless responses).
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
    /// Until the upstream closes the connection.
    Close,
}

/// A parsed response head.
#[derive(Debug)]
pub struct Head {
    /// Status.
    pub status: StatusCode,
    /// HTTP/1.0 or HTTP/1.1.
    pub version: Version,
    /// Fields.
    pub headers: HeaderMap,
    /// Body framing.
    pub framing: Framing,
    /// Whether the connection may carry another request after this response.
    pub keep_alive: bool,
}

/// An unusable response head.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid response from upstream: {0}")]
pub struct Invalid(pub &'static str);

/// Parses a response head from the front of `buf`. `Ok(None)`: incomplete. On success the head's
/// bytes are consumed; informational (1xx) responses other than 101 are skipped.
pub fn parse(buf: &mut BytesMut, method: &Method) -> Result<Option<Head>, Invalid> {
    parse_into(buf, method, &mut Scratch::default())
}

/// What a connection's decoder keeps between responses, so that decoding a head allocates and
/// interns as little as possible:
/// - `spare`: an emptied header map whose storage the next response head reuses. The call
///   API borrows the request head (decision 0014), so the connection no longer gets the
///   request's map; `spare` is empty then and the head allocates its own map;
/// - `names`: the field names of the previous response, in order. An upstream sends the same
///   names in the same order response after response, so a name is usually recognised by one
///   comparison instead of being parsed and interned again;
/// - `values`: room for the value positions of the head being decoded.
#[derive(Debug, Default)]
pub struct Scratch {
    /// Emptied header map whose allocation the next response head reuses.
    pub spare: HeaderMap,
    names: Vec<HeaderName>,
    values: Vec<(u32, u32)>,
    /// How many bytes of an incomplete head were already searched for its end (0: none yet).
    /// An upstream that dribbles its head byte by byte would otherwise have the whole head
    /// parsed again on every read (quadratic work); instead each read is searched once, and
    /// the head is parsed when its blank line has arrived.
    scanned: usize,
    /// How many times `httparse` ran (tests check the work stays linear).
    #[cfg(test)]
    parses: usize,
}

/// Whether `buf` holds the blank line that ends a head (LF LF or LF CR LF, as `httparse`
/// accepts), searching from `from` (bytes before it were searched already).
fn has_head_end(buf: &[u8], from: usize) -> bool {
    let start = from.saturating_sub(2);
    buf.get(start..).is_some_and(|tail| {
        tail.iter().enumerate().any(|(i, &b)| {
            b == b'\n'
                && match tail.get(i + 1) {
                    Some(b'\n') => true,
                    Some(b'\r') => tail.get(i + 2) == Some(&b'\n'),
                    _ => false,
                }
        })
    })
}

/// Header fields the gateway may add to a response head (kept room for).
const GATEWAY_ADDED_FIELDS: usize = 4;

/// [`parse`], with the head's fields stored in `scratch.spare` (cleared; its allocation
/// reused) and its field names looked up in `scratch.names` first.
pub fn parse_into(
    buf: &mut BytesMut,
    method: &Method,
    scratch: &mut Scratch,
) -> Result<Option<Head>, Invalid> {
    loop {
        if buf.is_empty() {
            return Ok(None);
        }
        // After a partial parse, parse again only once the head's end has arrived.
        if scratch.scanned > 0 {
            if !has_head_end(buf, scratch.scanned) {
                scratch.scanned = buf.len();
                if buf.len() > MAX_HEAD {
                    return Err(Invalid("response head too large"));
                }
                return Ok(None);
            }
            scratch.scanned = 0;
        }
        // Parsed in place; values are kept as offsets so the head can be frozen once and
        // every value shares its bytes (no copy per field).
        let mut fields = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_FIELDS];
        let mut res = httparse::Response::new(&mut []);
        let base = buf.as_ptr() as usize;
        #[cfg(test)]
        {
            scratch.parses += 1;
        }
        let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
            &mut res,
            buf,
            &mut fields,
        ) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => {
                if buf.len() > MAX_HEAD {
                    return Err(Invalid("response head too large"));
                }
                scratch.scanned = buf.len();
                return Ok(None);
            }
            Err(httparse::Error::TooManyHeaders) => return Err(Invalid("too many header fields")),
            Err(_) => return Err(Invalid("malformed response head")),
        };
        if len > MAX_HEAD {
            return Err(Invalid("response head too large"));
        }
        let code = res.code.unwrap_or(0);
        let status = StatusCode::from_u16(code).map_err(|_| Invalid("bad status code"))?;
        let version = if res.version == Some(0) {
            Version::HTTP_10
        } else {
            Version::HTTP_11
        };
        let count = res.headers.len();
        scratch.values.clear();
        for (i, f) in res.headers.iter().enumerate() {
            let raw = f.name.as_bytes();
            // The same name as the previous response's field at this position: reuse it. A
            // valid lowercase name equal to `raw` ignoring ASCII case is exactly what
            // `HeaderName::from_bytes(raw)` would return.
            let known = scratch.names.get(i).is_some_and(|n| {
                let n = n.as_str().as_bytes();
                n == raw || n.eq_ignore_ascii_case(raw)
            });
            if !known {
                let name = HeaderName::from_bytes(raw).map_err(|_| Invalid("bad field name"))?;
                match scratch.names.get_mut(i) {
                    Some(slot) => *slot = name,
                    None => scratch.names.push(name),
                }
            }
            scratch.values.push((
                (f.value.as_ptr() as usize - base) as u32,
                f.value.len() as u32,
            ));
        }
        let head = buf.split_to(len).freeze();
        if status.is_informational() && status != StatusCode::SWITCHING_PROTOCOLS {
            continue;
        }
        let mut headers = std::mem::take(&mut scratch.spare);
        headers.clear();
        // Room for the fields the gateway adds to a response (X-Request-Id, rate-limit
        // headers), so adding them does not grow and rehash the map on every response.
        headers
            .try_reserve(count + GATEWAY_ADDED_FIELDS)
            .map_err(|_| Invalid("too many header fields"))?;
        let mut seen = Seen::default();
        for (name, &(v, vl)) in scratch.names.iter().zip(&scratch.values) {
            let (v, vl) = (v as usize, vl as usize);
            let bytes = head.slice(v..v + vl);
            // Noted here so framing needs no lookup for fields that are absent.
            if *name == CONNECTION {
                seen.connection = true;
            } else if *name == TRANSFER_ENCODING {
                seen.transfer_encoding = true;
            } else if *name == CONTENT_LENGTH {
                seen.content_lengths += 1;
                seen.content_length = v..v + vl;
            }
            let value =
                HeaderValue::from_maybe_shared(bytes).map_err(|_| Invalid("bad field value"))?;
            headers.append(name.clone(), value);
        }
        let (framing, keep_alive) = framing(method, status, version, &headers, &seen, &head)?;
        return Ok(Some(Head {
            status,
            version,
            headers,
            framing,
            keep_alive,
        }));
    }
}

/// Which framing-related fields a response head has.
#[derive(Debug, Default)]
struct Seen {
    connection: bool,
    transfer_encoding: bool,
    /// How many Content-Length fields, and where the last one's value is in the head.
    content_lengths: usize,
    content_length: std::ops::Range<usize>,
}

fn has_token(headers: &HeaderMap, name: &HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.as_bytes()
            .split(|&b| b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
    })
}

/// The body framing and connection reuse of a response to `method` (RFC 9112 6.3, 9.3).
fn framing(
    method: &Method,
    status: StatusCode,
    version: Version,
    headers: &HeaderMap,
    seen: &Seen,
    head: &[u8],
) -> Result<(Framing, bool), Invalid> {
    let mut keep_alive = if version == Version::HTTP_11 {
        !(seen.connection && has_token(headers, &CONNECTION, "close"))
    } else {
        seen.connection && has_token(headers, &CONNECTION, "keep-alive")
    };
    // A 2xx to CONNECT turns the connection into a tunnel (RFC 9112 6.3 rule 2); tunnels are
    // only made through upgrades here, so such an answer is refused rather than framed.
    if *method == Method::CONNECT && status.is_success() {
        return Err(Invalid("CONNECT answered with a tunnel"));
    }
    if *method == Method::HEAD
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Ok((Framing::Length(0), keep_alive));
    }
    let has_te = seen.transfer_encoding;
    let has_cl = seen.content_lengths > 0;
    if has_te {
        if has_cl {
            return Err(Invalid("both Transfer-Encoding and Content-Length"));
        }
        if version == Version::HTTP_10 {
            return Err(Invalid("Transfer-Encoding in an HTTP/1.0 response"));
        }
        let codings: Vec<&[u8]> = headers
            .get_all(TRANSFER_ENCODING)
            .iter()
            .flat_map(|v| v.as_bytes().split(|&b| b == b','))
            .map(<[u8]>::trim_ascii)
            .filter(|t| !t.is_empty())
            .collect();
        let chunked = |t: &[u8]| t.eq_ignore_ascii_case(b"chunked");
        let last_chunked = codings.last().is_some_and(|t| chunked(t));
        if codings.iter().filter(|t| chunked(t)).count() > usize::from(last_chunked) {
            return Err(Invalid("chunked applied more than once or not last"));
        }
        // Transfer-Encoding is hop-by-hop and the gateway re-frames the body for its client,
        // so a coding it cannot undo (gzip, a made-up one) would reach the client as coded
        // bytes labelled plain. Such a response is refused (502) rather than passed corrupted.
        if codings.len() != 1 || !last_chunked {
            return Err(Invalid("transfer coding other than chunked"));
        }
        return Ok((Framing::Chunked, keep_alive));
    }
    if has_cl {
        // One field (the usual case) is read from the bytes noted while decoding, without a
        // lookup in the map.
        let len = if seen.content_lengths == 1 {
            let value = head
                .get(seen.content_length.clone())
                .ok_or(Invalid("bad Content-Length"))?;
            content_length([value])?
        } else {
            content_length(
                headers
                    .get_all(CONTENT_LENGTH)
                    .iter()
                    .map(HeaderValue::as_bytes),
            )?
        };
        return Ok((Framing::Length(len), keep_alive));
    }
    keep_alive = false;
    Ok((Framing::Close, keep_alive))
}

/// The length that every Content-Length value (each possibly a list) agrees on.
fn content_length<'a>(values: impl IntoIterator<Item = &'a [u8]>) -> Result<u64, Invalid> {
    let mut len: Option<u64> = None;
    for v in values {
        for part in v.split(|&b| b == b',') {
            let part = part.trim_ascii();
            if part.is_empty() || part.len() > 19 || !part.iter().all(u8::is_ascii_digit) {
                return Err(Invalid("bad Content-Length"));
            }
            let n = std::str::from_utf8(part)
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or(Invalid("bad Content-Length"))?;
            if len.is_some_and(|l| l != n) {
                return Err(Invalid("differing Content-Length values"));
            }
            len = Some(n);
        }
    }
    Ok(len.unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(raw: &str, method: Method) -> Result<Option<Head>, Invalid> {
        let mut buf = BytesMut::from(raw.as_bytes());
        parse(&mut buf, &method)
    }

    fn framing_of(raw: &str) -> Result<(Framing, bool), Invalid> {
        head(raw, Method::GET).map(|h| {
            let h = h.expect("complete");
            (h.framing, h.keep_alive)
        })
    }

    #[test]
    fn a_spare_map_is_emptied_and_reused() {
        let mut spare = Scratch {
            spare: HeaderMap::with_capacity(32),
            ..Scratch::default()
        };
        spare
            .spare
            .insert("x-from-the-request", HeaderValue::from_static("1"));
        let cap = spare.spare.capacity();
        let mut buf =
            BytesMut::from(&b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nx-a: b\r\n\r\n"[..]);
        let head = parse_into(&mut buf, &Method::GET, &mut spare)
            .expect("valid")
            .expect("complete");
        assert_eq!(head.headers.len(), 2);
        assert!(!head.headers.contains_key("x-from-the-request"));
        assert_eq!(head.headers.capacity(), cap, "the allocation is reused");
        assert!(spare.spare.is_empty());
    }

    #[test]
    fn field_names_remembered_from_the_previous_head_are_only_reused_when_equal() {
        let mut scratch = Scratch::default();
        let mut decode = |raw: &str| {
            let mut buf = BytesMut::from(raw.as_bytes());
            parse_into(&mut buf, &Method::GET, &mut scratch)
        };
        let names = |h: &Head| {
            h.headers
                .iter()
                .map(|(n, v)| format!("{n}={}", v.to_str().unwrap_or("?")))
                .collect::<Vec<_>>()
        };
        let first = decode("HTTP/1.1 200 OK\r\nX-Ab: 1\r\nContent-Length: 2\r\n\r\n")
            .expect("valid")
            .expect("complete");
        assert_eq!(names(&first), ["x-ab=1", "content-length=2"]);
        // Other case, a prefix of the remembered name, a new name, more fields than before.
        let second =
            decode("HTTP/1.1 200 OK\r\nx-AB: 2\r\nx-a: 3\r\ncontent-length: 0\r\nx-new: 4\r\n\r\n")
                .expect("valid")
                .expect("complete");
        assert_eq!(
            names(&second),
            ["x-ab=2", "x-a=3", "content-length=0", "x-new=4"]
        );
        assert_eq!(second.framing, Framing::Length(0));
        // Fewer fields than before; the remembered Content-Length position now holds another
        // name, and two Content-Length fields that differ are still refused.
        let third = decode("HTTP/1.1 200 OK\r\nx-ab: 5\r\n\r\n")
            .expect("valid")
            .expect("complete");
        assert_eq!(names(&third), ["x-ab=5"]);
        assert_eq!(third.framing, Framing::Close);
        assert_eq!(
            decode("HTTP/1.1 200 OK\r\ncontent-length: 1\r\nContent-Length: 2\r\n\r\n").err(),
            Some(Invalid("differing Content-Length values"))
        );
    }

    #[test]
    fn a_dribbled_head_is_parsed_once_its_end_arrived() {
        let raw = format!(
            "HTTP/1.1 200 OK\r\nx-pad: {}\r\ncontent-length: 2\r\n\r\nok",
            "p".repeat(4000)
        );
        let mut scratch = Scratch::default();
        let mut buf = BytesMut::new();
        let mut got = None;
        for &b in raw.as_bytes() {
            buf.extend_from_slice(&[b]);
            if let Some(h) = parse_into(&mut buf, &Method::GET, &mut scratch).expect("valid") {
                got = Some(h);
                break;
            }
        }
        let h = got.expect("complete");
        assert_eq!(h.framing, Framing::Length(2));
        assert!(buf.is_empty(), "the head ends at its blank line");
        // One partial parse, one complete one: not one parse per byte received.
        assert_eq!(scratch.parses, 2);
        // Both blank-line forms end a head that arrives in pieces.
        for raw in ["HTTP/1.1 204 No\n\n", "HTTP/1.1 204 No\r\n\r\n"] {
            let mut scratch = Scratch::default();
            let mut buf = BytesMut::new();
            let mut done = false;
            for &b in raw.as_bytes() {
                buf.extend_from_slice(&[b]);
                done = parse_into(&mut buf, &Method::GET, &mut scratch)
                    .expect("valid")
                    .is_some();
            }
            assert!(done, "{raw:?}");
        }
    }

    #[test]
    fn framing_rules() {
        let ok = |raw: &str, want: (Framing, bool)| assert_eq!(framing_of(raw), Ok(want), "{raw}");
        ok(
            "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n",
            (Framing::Length(5), true),
        );
        ok(
            "HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\n",
            (Framing::Length(5), true),
        );
        ok(
            "HTTP/1.1 200 OK\r\ntransfer-encoding: Chunked\r\n\r\n",
            (Framing::Chunked, true),
        );
        ok(
            "HTTP/1.1 200 OK\r\ntransfer-encoding: ,chunked\r\n\r\n",
            (Framing::Chunked, true),
        );
        ok("HTTP/1.1 200 OK\r\n\r\n", (Framing::Close, false));
        ok(
            "HTTP/1.1 204 No Content\r\ncontent-length: 9\r\n\r\n",
            (Framing::Length(0), true),
        );
        ok(
            "HTTP/1.1 304 Not Modified\r\n\r\n",
            (Framing::Length(0), true),
        );
        ok(
            "HTTP/1.1 200 OK\r\nconnection: keep-alive, close\r\ncontent-length: 1\r\n\r\n",
            (Framing::Length(1), false),
        );
        ok(
            "HTTP/1.0 200 OK\r\ncontent-length: 1\r\n\r\n",
            (Framing::Length(1), false),
        );
        ok(
            "HTTP/1.0 200 OK\r\nconnection: Keep-Alive\r\ncontent-length: 1\r\n\r\n",
            (Framing::Length(1), true),
        );
        let h = head("HTTP/1.1 200 OK\r\ncontent-length: 7\r\n\r\n", Method::HEAD)
            .expect("ok")
            .expect("complete");
        assert_eq!(h.framing, Framing::Length(0));
    }

    #[test]
    fn a_tunnel_answer_to_connect_is_refused() {
        let h = head(
            "HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
            Method::CONNECT,
        );
        assert_eq!(h.err(), Some(Invalid("CONNECT answered with a tunnel")));
        let h = head(
            "HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\n\r\n",
            Method::CONNECT,
        );
        assert!(h.is_ok());
    }

    #[test]
    fn ambiguous_framing_is_an_error() {
        for raw in [
            "HTTP/1.1 200 OK\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 5, 6\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: +5\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 0x5\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 99999999999999999999\r\n\r\n",
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked, gzip\r\n\r\n",
            // Codings the gateway cannot undo (it re-frames the body): never passed on with
            // the label stripped.
            "HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n",
            "HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n",
            "HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\ntransfer-encoding: chunked\r\n\r\n",
            "HTTP/1.1 200 OK\r\ntransfer-encoding: identity\r\n\r\n",
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ntransfer-encoding: chunked\r\n\r\n",
            "HTTP/1.0 200 OK\r\ntransfer-encoding: chunked\r\n\r\n",
            "HTTP/1.1 200 OK\r\nbad header\r\n\r\n",
            "HTTP/1.1 2000 OK\r\n\r\n",
            "HTTP/2 200 OK\r\n\r\n",
        ] {
            assert!(framing_of(raw).is_err(), "{raw}");
        }
    }

    #[test]
    fn informational_responses_are_skipped_and_partial_heads_wait() {
        let mut buf = BytesMut::from(
            &b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\nHTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\nok"[..],
        );
        let h = parse(&mut buf, &Method::POST)
            .expect("ok")
            .expect("complete");
        assert_eq!(h.status, StatusCode::CREATED);
        assert_eq!(&buf[..], b"ok");
        assert!(
            head("HTTP/1.1 200 OK\r\ncontent-le", Method::GET)
                .expect("ok")
                .is_none()
        );
        let h = head(
            "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n\r\n",
            Method::GET,
        )
        .expect("ok")
        .expect("complete");
        assert_eq!(h.status, StatusCode::SWITCHING_PROTOCOLS);
    }

    #[test]
    fn head_size_and_field_count_are_bounded() {
        let mut big = "HTTP/1.1 200 OK\r\n".to_string();
        big.push_str(&format!("x-big: {}\r\n", "a".repeat(MAX_HEAD)));
        assert_eq!(
            head(&big, Method::GET).err(),
            Some(Invalid("response head too large"))
        );
        let mut many = "HTTP/1.1 200 OK\r\n".to_string();
        for i in 0..=MAX_FIELDS {
            many.push_str(&format!("x-{i}: 1\r\n"));
        }
        many.push_str("\r\n");
        assert_eq!(
            head(&many, Method::GET).err(),
            Some(Invalid("too many header fields"))
        );
    }
}
