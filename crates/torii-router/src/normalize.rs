//! Request identity helpers: canonical forms of the request path and host.
//!
//! Routing, access control and caching must all agree on *which* resource a
//! request names. These helpers turn the many spellings a client can use
//! (`/a/%7Eb`, `//a/./~b`, `API.Example.COM.:443`) into one canonical form,
//! and reject spellings that different backends interpret differently
//! (Tomcat-style `..;` segments, invalid escapes, raw bytes outside RFC 3986).

use std::borrow::Cow;

/// Why a request path was rejected by [`normalize_path`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// The path was the empty string.
    #[error("path is empty")]
    Empty,
    /// The path does not start with `/`.
    #[error("path does not start with '/'")]
    NotAbsolute,
    /// A `%` was not followed by two hexadecimal digits.
    #[error("invalid percent-encoding at byte {position}")]
    InvalidPercentEncoding {
        /// Byte offset of the offending `%` in the input.
        position: usize,
    },
    /// A raw byte that is not allowed in an RFC 3986 path.
    #[error("byte 0x{byte:02X} at position {position} is not allowed in a path")]
    InvalidCharacter {
        /// Byte offset in the input.
        position: usize,
        /// The offending byte.
        byte: u8,
    },
    /// A dot segment carrying a path parameter (`..;x`, `.;x`), which
    /// servlet containers treat as a dot segment; rejected rather than guessed.
    #[error("dot segment with a path parameter ({segment:?}) is not allowed")]
    DotSegmentParameter {
        /// The (decoded) segment.
        segment: String,
    },
}

/// Why a host was rejected by [`normalize_host`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    /// The host (without port and trailing dot) is empty.
    #[error("host is empty")]
    Empty,
    /// A label of the host is empty (`.a`, `a..b`).
    #[error("host has an empty label")]
    EmptyLabel,
    /// A character outside letters, digits, `-` and `.` (or, inside
    /// brackets, hex digits, `:` and `.`).
    #[error("byte 0x{byte:02X} at position {position} is not allowed in a host")]
    InvalidCharacter {
        /// Byte offset in the input.
        position: usize,
        /// The offending byte.
        byte: u8,
    },
    /// The text after the host is not `:` followed by a valid port number.
    #[error("invalid port")]
    InvalidPort,
    /// A bracketed IPv6 literal is unterminated or empty.
    #[error("invalid bracketed IPv6 literal")]
    InvalidIpv6,
}

/// `ALPHA / DIGIT / "-" / "." / "_" / "~"` (RFC 3986 section 2.3).
pub(crate) fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Bytes allowed raw in a path segment: unreserved, sub-delims, `:` and `@`.
fn is_segment_byte(b: u8) -> bool {
    is_unreserved(b)
        || matches!(
            b,
            b'!' | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b';'
                | b'='
                | b':'
                | b'@'
        )
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

/// Validates one raw segment (no `/`). Returns `true` when decoding would
/// change it (an escaped unreserved byte or lowercase hex digits).
/// `offset` is the position of the segment in the caller's input, for errors.
pub(crate) fn scan_segment(seg: &str, offset: usize) -> Result<bool, PathError> {
    let bytes = seg.as_bytes();
    let mut dirty = false;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let (Some(&h), Some(&l)) = (bytes.get(i + 1), bytes.get(i + 2)) else {
                return Err(PathError::InvalidPercentEncoding {
                    position: offset + i,
                });
            };
            let (Some(hv), Some(lv)) = (hex_value(h), hex_value(l)) else {
                return Err(PathError::InvalidPercentEncoding {
                    position: offset + i,
                });
            };
            if is_unreserved(hv << 4 | lv) || h.is_ascii_lowercase() || l.is_ascii_lowercase() {
                dirty = true;
            }
            i += 3;
        } else if is_segment_byte(b) {
            i += 1;
        } else {
            return Err(PathError::InvalidCharacter {
                position: offset + i,
                byte: b,
            });
        }
    }
    Ok(dirty)
}

/// Appends the canonical form of a segment already accepted by
/// [`scan_segment`]: unreserved escapes decoded, other escapes uppercased.
pub(crate) fn decode_segment_into(seg: &str, out: &mut String) {
    let bytes = seg.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' && i + 2 < bytes.len() {
            let (h, l) = (bytes[i + 1], bytes[i + 2]);
            if let (Some(hv), Some(lv)) = (hex_value(h), hex_value(l)) {
                let v = hv << 4 | lv;
                if is_unreserved(v) {
                    out.push(char::from(v));
                } else {
                    out.push('%');
                    out.push(char::from(HEX_UPPER[usize::from(hv)]));
                    out.push(char::from(HEX_UPPER[usize::from(lv)]));
                }
                i += 3;
                continue;
            }
        }
        out.push(char::from(b));
        i += 1;
    }
}

/// Rejects Tomcat-style dot segments with path parameters (`..;x`, `.;x`,
/// and their `%3B` spellings). `seg` must be in canonical (decoded) form.
pub(crate) fn check_dot_param(seg: &str) -> Result<(), PathError> {
    let rest = seg
        .strip_prefix("..")
        .or_else(|| seg.strip_prefix('.'))
        .unwrap_or(seg);
    if rest.len() != seg.len() && (rest.starts_with(';') || rest.starts_with("%3B")) {
        return Err(PathError::DotSegmentParameter {
            segment: seg.to_owned(),
        });
    }
    Ok(())
}

/// Normalises the path part of a request target (no query string).
///
/// Rules, in order:
/// - the path must start with `/`;
/// - raw bytes outside the RFC 3986 path grammar (controls, space, `\`, `"`,
///   `<`, `>`, `^`, `` ` ``, `{`, `|`, `}`, `[`, `]`, `#`, `?`, non-ASCII)
///   are rejected, as are invalid escapes (`%zz`, truncated `%4`);
/// - percent-escapes of unreserved characters (ALPHA, DIGIT, `-._~`) are
///   decoded; every other escape stays encoded with uppercase hex digits
///   (so `%2F` and `%5C` are never decoded, and `%252e` stays `%252e`);
/// - consecutive slashes are merged (`//a///b` becomes `/a/b`);
/// - dot segments are removed after decoding (RFC 3986 section 5.2.4, so
///   `%2e%2e` acts as `..`), never going above the root;
/// - a segment starting with `..;` or `.;` (or `..%3B`, `.%3B`) is rejected;
/// - a trailing slash is kept (`/a/b/..` becomes `/a/`).
///
/// Returns [`Cow::Borrowed`] without allocating when the path is already
/// canonical.
pub fn normalize_path(raw: &str) -> Result<Cow<'_, str>, PathError> {
    if raw.is_empty() {
        return Err(PathError::Empty);
    }
    let Some(body) = raw.strip_prefix('/') else {
        return Err(PathError::NotAbsolute);
    };
    // Fast path: validate and find out whether anything would change.
    let mut dirty = false;
    let mut offset = 1;
    let mut segments = body.split('/').peekable();
    while let Some(seg) = segments.next() {
        let last = segments.peek().is_none();
        if (seg.is_empty() && !last) || seg == "." || seg == ".." {
            dirty = true;
        }
        if scan_segment(seg, offset)? {
            dirty = true;
        } else {
            check_dot_param(seg)?;
        }
        offset += seg.len() + 1;
    }
    if !dirty {
        return Ok(Cow::Borrowed(raw));
    }

    // Slow path: decode each segment, then remove dot segments.
    let mut out = String::with_capacity(raw.len());
    let mut decoded = String::new();
    let mut segments = body.split('/').peekable();
    while let Some(seg) = segments.next() {
        let last = segments.peek().is_none();
        decoded.clear();
        decode_segment_into(seg, &mut decoded);
        check_dot_param(&decoded)?;
        match decoded.as_str() {
            "" | "." => {}
            ".." => {
                let cut = out.rfind('/').unwrap_or(0);
                out.truncate(cut);
            }
            s => {
                out.push('/');
                out.push_str(s);
                continue;
            }
        }
        // An empty or dot segment in last position leaves a trailing slash.
        if last && !out.ends_with('/') {
            out.push('/');
        }
    }
    if out.is_empty() {
        out.push('/');
    }
    Ok(Cow::Owned(out))
}

fn check_port(port: &str) -> Result<(), HostError> {
    if port.is_empty() {
        return Ok(());
    }
    if port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(HostError::InvalidPort);
    }
    port.parse::<u16>()
        .map(|_| ())
        .map_err(|_| HostError::InvalidPort)
}

/// Normalises a request host (from the `Host` header or the URI authority).
///
/// Lowercases it, strips a `:port` (also after a bracketed IPv6 literal:
/// `[::1]:8080` becomes `[::1]`) and one trailing dot. An empty host, a bad
/// port, or a character outside letters, digits, `-` and `.` (inside
/// brackets: hex digits, `:` and `.`) is an error. Returns a borrowed slice of
/// the input unless lowercasing was needed.
pub fn normalize_host(raw: &str) -> Result<Cow<'_, str>, HostError> {
    if raw.is_empty() {
        return Err(HostError::Empty);
    }
    if raw.starts_with('[') {
        return normalize_ip_literal(raw);
    }
    let host = match raw.bytes().position(|b| b == b':') {
        Some(colon) => {
            check_port(&raw[colon + 1..])?;
            &raw[..colon]
        }
        None => raw,
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.is_empty() {
        return Err(HostError::Empty);
    }
    // One pass over the name (this runs on every request): the first byte that is not
    // allowed, empty labels and upper case.
    let mut invalid = None;
    let mut empty_label = host.starts_with('.') || host.ends_with('.');
    let mut upper = false;
    let mut after_dot = false;
    for (position, &byte) in host.as_bytes().iter().enumerate() {
        match byte {
            b'a'..=b'z' | b'0'..=b'9' | b'-' => after_dot = false,
            b'A'..=b'Z' => (upper, after_dot) = (true, false),
            b'.' => (empty_label, after_dot) = (empty_label || after_dot, true),
            _ => {
                invalid = invalid.or(Some(HostError::InvalidCharacter { position, byte }));
                after_dot = false;
            }
        }
    }
    // Empty labels (`.a`, `a..b`, `..`) are not host names; accepting them would let
    // `.example.com` match `*.example.com` and make normalisation non-idempotent.
    if empty_label {
        return Err(HostError::EmptyLabel);
    }
    if let Some(e) = invalid {
        return Err(e);
    }
    Ok(lowercase_if(host, upper))
}

/// A bracketed IP literal (`[::1]`, `[::1]:8080`), kept with its brackets.
fn normalize_ip_literal(raw: &str) -> Result<Cow<'_, str>, HostError> {
    let close = raw.find(']').ok_or(HostError::InvalidIpv6)?;
    let after = &raw[close + 1..];
    if !after.is_empty() {
        check_port(after.strip_prefix(':').ok_or(HostError::InvalidPort)?)?;
    }
    let inner = &raw[1..close];
    if inner.is_empty() {
        return Err(HostError::InvalidIpv6);
    }
    if let Some((i, &byte)) = inner
        .as_bytes()
        .iter()
        .enumerate()
        .find(|(_, b)| !(b.is_ascii_hexdigit() || **b == b':' || **b == b'.'))
    {
        return Err(HostError::InvalidCharacter {
            position: i + 1,
            byte,
        });
    }
    let host = &raw[..=close];
    Ok(lowercase_if(
        host,
        host.bytes().any(|b| b.is_ascii_uppercase()),
    ))
}

fn lowercase_if(host: &str, upper: bool) -> Cow<'_, str> {
    if upper {
        Cow::Owned(host.to_ascii_lowercase())
    } else {
        Cow::Borrowed(host)
    }
}

#[cfg(test)]
mod tests;
