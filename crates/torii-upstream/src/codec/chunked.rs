//! Incremental decoder of a chunked response body (RFC 9112 section 7.1).
//!
//! Strict on purpose: every line ends in CRLF (a bare LF is an error, so a response cannot be
//! read two ways by two parsers), a chunk size is 1 to 16 hex digits, extensions are skipped but
//! bounded, and the trailer section is bounded and parsed with `httparse`.

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue};

/// Longest chunk-size line (size, extensions and CRLF).
const MAX_LINE: usize = 4096;
/// Largest trailer section.
pub const MAX_TRAILERS: usize = 16 * 1024;
/// Most trailer fields.
const MAX_TRAILER_FIELDS: usize = 64;
/// Most chunk-extension bytes in one body (hyper's server uses the same bound): extensions
/// are skipped, so an upstream could otherwise make the gateway read any amount of them per
/// byte of data.
const MAX_EXTENSIONS: usize = 16 * 1024;

/// What the decoder produced.
#[derive(Debug)]
pub enum Event {
    /// Body bytes.
    Data(Bytes),
    /// The trailer fields (only when there are some).
    Trailers(HeaderMap),
    /// The body ended.
    End,
}

/// A malformed chunked body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed chunked body: {0}")]
pub struct Malformed(pub &'static str);

#[derive(Debug, Clone, Copy)]
enum State {
    Size { digits: u8 },
    SizeBws,
    Extension,
    SizeLf,
    Data(u64),
    DataCr,
    DataLf,
    Trailers,
    End,
}

/// The decoder state of one body.
#[derive(Debug)]
pub struct Decoder {
    state: State,
    size: u64,
    line: usize,
    /// Extension bytes of this body so far.
    extensions: usize,
    /// How much of an incomplete trailer section was already searched for its end, so a
    /// dribbled trailer section is searched once, not once per read.
    trailer_scanned: usize,
}

impl Default for Decoder {
    fn default() -> Self {
        Self {
            state: State::Size { digits: 0 },
            size: 0,
            line: 0,
            extensions: 0,
            trailer_scanned: 0,
        }
    }
}

impl Decoder {
    /// Decodes from the front of `buf`, consuming what it uses. `Ok(None)`: more bytes needed.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Event>, Malformed> {
        loop {
            if let State::Data(rest) = self.state {
                if buf.is_empty() {
                    return Ok(None);
                }
                let n = rest.min(buf.len() as u64) as usize;
                let left = rest - n as u64;
                self.state = if left == 0 {
                    State::DataCr
                } else {
                    State::Data(left)
                };
                return Ok(Some(Event::Data(buf.split_to(n).freeze())));
            }
            if let State::Trailers = self.state {
                return self.trailers(buf);
            }
            if let State::End = self.state {
                return Ok(Some(Event::End));
            }
            let Some(&b) = buf.first() else {
                return Ok(None);
            };
            buf.advance(1);
            self.line += 1;
            if self.line > MAX_LINE {
                return Err(Malformed("chunk-size line too long"));
            }
            self.state = match (self.state, b) {
                (State::Size { digits }, _) if b.is_ascii_hexdigit() => {
                    if digits >= 16 {
                        return Err(Malformed("chunk size too large"));
                    }
                    let v = (b as char).to_digit(16).unwrap_or(0) as u64;
                    self.size = (self.size << 4) | v;
                    State::Size { digits: digits + 1 }
                }
                (State::Size { digits: 0 }, _) => return Err(Malformed("missing chunk size")),
                (State::Size { .. } | State::SizeBws, b' ' | b'\t') => State::SizeBws,
                (State::Size { .. } | State::SizeBws, b';') => State::Extension,
                (State::Size { .. } | State::SizeBws | State::Extension, b'\r') => State::SizeLf,
                (State::Extension, b) if b == b'\t' || (0x20..0x7f).contains(&b) || b >= 0x80 => {
                    self.extensions += 1;
                    if self.extensions > MAX_EXTENSIONS {
                        return Err(Malformed("too many chunk-extension bytes"));
                    }
                    State::Extension
                }
                (State::SizeLf, b'\n') => {
                    self.line = 0;
                    if self.size == 0 {
                        State::Trailers
                    } else {
                        State::Data(std::mem::take(&mut self.size))
                    }
                }
                (State::DataCr, b'\r') => State::DataLf,
                (State::DataLf, b'\n') => {
                    self.line = 0;
                    State::Size { digits: 0 }
                }
                (State::DataCr | State::DataLf, _) => {
                    return Err(Malformed("chunk data not followed by CRLF"));
                }
                _ => return Err(Malformed("invalid byte in chunk-size line")),
            };
        }
    }

    fn trailers(&mut self, buf: &mut BytesMut) -> Result<Option<Event>, Malformed> {
        if buf.len() >= 2 && &buf[..2] == b"\r\n" {
            buf.advance(2);
            self.state = State::End;
            return Ok(Some(Event::End));
        }
        let Some(end) = find_blank_line(buf, self.trailer_scanned) else {
            self.trailer_scanned = buf.len();
            if buf.len() > MAX_TRAILERS {
                return Err(Malformed("trailer section too large"));
            }
            if buf.first().is_some_and(|&b| b != b'\r') || buf.len() < 2 {
                return Ok(None);
            }
            return Err(Malformed("invalid end of chunked body"));
        };
        if end > MAX_TRAILERS {
            return Err(Malformed("trailer section too large"));
        }
        // httparse accepts bare LF line ends; this decoder does not.
        if buf[..end]
            .iter()
            .enumerate()
            .any(|(i, &b)| b == b'\n' && (i == 0 || buf[i - 1] != b'\r'))
        {
            return Err(Malformed("bare LF in the trailer section"));
        }
        let mut fields = [httparse::EMPTY_HEADER; MAX_TRAILER_FIELDS];
        let parsed = match httparse::parse_headers(&buf[..end], &mut fields) {
            Ok(httparse::Status::Complete((n, fields))) if n == end => fields,
            _ => return Err(Malformed("invalid trailer section")),
        };
        let mut map = HeaderMap::with_capacity(parsed.len());
        for f in parsed.iter() {
            let name = HeaderName::from_bytes(f.name.as_bytes())
                .map_err(|_| Malformed("invalid trailer name"))?;
            if forbidden_trailer(&name) {
                continue;
            }
            let value =
                HeaderValue::from_bytes(f.value).map_err(|_| Malformed("invalid trailer value"))?;
            map.append(name, value);
        }
        buf.advance(end);
        self.state = State::End;
        Ok(Some(if map.is_empty() {
            Event::End
        } else {
            Event::Trailers(map)
        }))
    }
}

/// Offset just past the first CRLF CRLF, searching from `from` (the bytes before it were
/// searched already).
fn find_blank_line(buf: &[u8], from: usize) -> Option<usize> {
    let start = from.saturating_sub(3);
    buf.get(start..)?
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| start + i + 4)
}

/// Fields that must not travel as trailers (either way) (framing, routing, hop-by-hop, and auth controls;
/// RFC 9110 section 6.5.1): they are dropped rather than forwarded.
pub fn forbidden_trailer(name: &HeaderName) -> bool {
    use http::header::*;
    [
        CONTENT_LENGTH,
        TRANSFER_ENCODING,
        HOST,
        CONNECTION,
        TE,
        TRAILER,
        UPGRADE,
        CONTENT_TYPE,
        CONTENT_ENCODING,
        CONTENT_RANGE,
        SET_COOKIE,
        AUTHORIZATION,
        CACHE_CONTROL,
        EXPIRES,
        LOCATION,
    ]
    .contains(name)
        || name.as_str() == "keep-alive"
        || name.as_str() == "proxy-connection"
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` in pieces of `step` bytes and collects the events.
    fn run(input: &[u8], step: usize) -> Result<(Vec<u8>, Option<HeaderMap>, usize), Malformed> {
        let mut d = Decoder::default();
        let mut buf = BytesMut::new();
        let mut body = Vec::new();
        let mut trailers = None;
        let mut fed = 0;
        loop {
            match d.decode(&mut buf)? {
                Some(Event::Data(b)) => body.extend_from_slice(&b),
                Some(Event::Trailers(t)) => trailers = Some(t),
                Some(Event::End) => return Ok((body, trailers, buf.len() + input.len() - fed)),
                None => {
                    if fed == input.len() {
                        return Err(Malformed("incomplete"));
                    }
                    let n = step.min(input.len() - fed);
                    buf.extend_from_slice(&input[fed..fed + n]);
                    fed += n;
                }
            }
        }
    }

    #[test]
    fn decodes_in_any_split() {
        let input = b"5\r\nhello\r\n1;name=value\r\n \r\n6 ;x\r\n world\r\n0\r\nx-checksum: abc\r\n\r\nNEXT";
        for step in 1..input.len() {
            let (body, trailers, rest) = run(input, step).expect("valid");
            assert_eq!(body, b"hello  world", "step {step}");
            let t = trailers.expect("trailers");
            assert_eq!(t.get("x-checksum").map(|v| v.as_bytes()), Some(&b"abc"[..]));
            assert_eq!(rest, 4, "bytes after the body stay in the buffer");
        }
    }

    #[test]
    fn no_trailers_and_hex_case() {
        let (body, trailers, rest) =
            run(b"A\r\n0123456789\r\na\r\n0123456789\r\n0\r\n\r\n", 3).expect("valid");
        assert_eq!(body.len(), 20);
        assert!(trailers.is_none());
        assert_eq!(rest, 0);
    }

    #[test]
    fn forbidden_trailers_are_dropped() {
        let (_, trailers, _) = run(
            b"0\r\ncontent-length: 5\r\nx-ok: 1\r\nhost: evil\r\n\r\n",
            100,
        )
        .expect("valid");
        let t = trailers.expect("x-ok remains");
        assert_eq!(t.len(), 1);
        assert!(t.contains_key("x-ok"));
        let (_, trailers, _) = run(b"0\r\ntransfer-encoding: chunked\r\n\r\n", 100).expect("valid");
        assert!(trailers.is_none());
    }

    #[test]
    fn rejects_malformed_framing() {
        for bad in [
            &b"5\nhello\r\n0\r\n\r\n"[..],             // bare LF after the size
            b"5\r\nhello\n0\r\n\r\n",                  // bare LF after data
            b"5\r\nhelloX\r\n0\r\n\r\n",               // data longer than the size
            b"\r\nhello\r\n0\r\n\r\n",                 // no size
            b"-5\r\nhello\r\n0\r\n\r\n",               // sign
            b"0x5\r\nhello\r\n0\r\n\r\n",              // 0x prefix
            b"11111111111111111\r\n",                  // 17 digits
            b"5\r\nhello\r\n0\r\nbad trailer\r\n\r\n", // no colon
            b"5\r\nhello\r\n0\r\n\nx",                 // bare LF ending
            b"5;a=\x01\r\nhello\r\n0\r\n\r\n",         // control byte in an extension
            b"5 5\r\nhello\r\n0\r\n\r\n",              // two sizes
            b"0\r\nx: 1\nx-y: 2\r\n\r\n",              // bare LF inside the trailers
        ] {
            assert!(run(bad, 1).is_err(), "{:?}", String::from_utf8_lossy(bad));
            assert!(
                run(bad, bad.len()).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn bounds_lines_and_trailers() {
        let mut long = b"5;".to_vec();
        long.extend(std::iter::repeat_n(b'a', MAX_LINE));
        long.extend_from_slice(b"\r\nhello\r\n0\r\n\r\n");
        assert_eq!(
            run(&long, 512).err(),
            Some(Malformed("chunk-size line too long"))
        );
        let mut big = b"0\r\n".to_vec();
        for i in 0..2000 {
            big.extend_from_slice(format!("x-t{i}: vvvvvvvvvvvvvvvvvvvv\r\n").as_bytes());
        }
        big.extend_from_slice(b"\r\n");
        assert!(run(&big, 1024).is_err());
    }

    #[test]
    fn extensions_are_bounded_per_body() {
        // Each line is well under MAX_LINE, but together they pass the per-body bound.
        let mut body = Vec::new();
        for _ in 0..(MAX_EXTENSIONS / 1000 + 1) {
            body.extend_from_slice(b"1;");
            body.extend(std::iter::repeat_n(b'e', 1000));
            body.extend_from_slice(b"\r\nx\r\n");
        }
        body.extend_from_slice(b"0\r\n\r\n");
        assert_eq!(
            run(&body, 4096).err(),
            Some(Malformed("too many chunk-extension bytes"))
        );
    }

    #[test]
    fn a_dribbled_trailer_section_is_searched_once() {
        let mut input = b"0\r\n".to_vec();
        for i in 0..50 {
            input.extend_from_slice(format!("x-t{i}: v\r\n").as_bytes());
        }
        input.extend_from_slice(b"\r\n");
        let mut d = Decoder::default();
        let mut buf = BytesMut::new();
        let mut fed = 0;
        loop {
            match d.decode(&mut buf).expect("valid") {
                Some(Event::Trailers(t)) => {
                    assert_eq!(t.len(), 50);
                    break;
                }
                Some(Event::End) => panic!("trailers expected"),
                Some(Event::Data(_)) => {}
                None => {
                    assert!(fed < input.len(), "incomplete");
                    buf.extend_from_slice(&input[fed..=fed]);
                    fed += 1;
                    // What was searched before never goes back further than the last few
                    // bytes (a blank line can straddle two reads).
                    assert!(d.trailer_scanned + 1 >= buf.len() || buf.len() < 4);
                }
            }
        }
    }
}
