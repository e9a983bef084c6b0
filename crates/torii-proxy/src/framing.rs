//! Request framing checks the gateway adds to hyper's HTTP/1.1 parser.
//!
//! hyper reads a request body as chunked whenever the last coding of its last
//! `Transfer-Encoding` field is `chunked`, and leaves the other codings to the application. The
//! gateway re-frames every body it forwards, so a coding it cannot undo (`gzip, chunked`) would
//! reach the origin as plain bytes, and a repeated or malformed list (`chunked, chunked`,
//! `cow` plus `chunked` as two fields) is how request smuggling starts. RFC 9112 section 6.1:
//! a server answers 501 to a transfer coding it does not understand; anything else that is not
//! exactly one `chunked` is refused with 400. Both close the connection.

use http::{HeaderMap, header};
use torii_core::{ErrorKind, GatewayError};

/// Checks the `Transfer-Encoding` fields of a request: `Ok` when there are none or when they
/// name `chunked` exactly once and nothing else (empty list elements are ignored, as RFC 9110
/// section 5.6.1 asks).
pub fn check_request_transfer_coding(headers: &HeaderMap) -> Result<(), GatewayError> {
    let mut chunked = 0usize;
    let mut unknown = false;
    for field in headers.get_all(header::TRANSFER_ENCODING) {
        for element in field.as_bytes().split(|&b| b == b',') {
            let element = element.trim_ascii();
            if element.is_empty() {
                continue;
            }
            if element.eq_ignore_ascii_case(b"chunked") {
                chunked += 1;
            } else if element.iter().all(|&b| is_tchar(b)) {
                unknown = true;
            } else {
                // Parameters, quotes, control bytes: an obfuscated list.
                return Err(GatewayError::new(
                    ErrorKind::BadFraming,
                    "malformed Transfer-Encoding",
                ));
            }
        }
    }
    if chunked > 1 {
        return Err(GatewayError::new(
            ErrorKind::BadFraming,
            "chunked applied more than once",
        ));
    }
    if unknown {
        return Err(GatewayError::new(
            ErrorKind::NotImplemented,
            "transfer coding other than chunked",
        ));
    }
    if chunked == 0 && headers.contains_key(header::TRANSFER_ENCODING) {
        return Err(GatewayError::new(
            ErrorKind::BadFraming,
            "empty Transfer-Encoding",
        ));
    }
    Ok(())
}

/// A token character (RFC 9110 section 5.6.2).
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use http::HeaderValue;

    fn check(fields: &[&str]) -> Result<(), ErrorKind> {
        let mut h = HeaderMap::new();
        for f in fields {
            h.append(header::TRANSFER_ENCODING, HeaderValue::from_str(f).unwrap());
        }
        check_request_transfer_coding(&h).map_err(|e| e.kind)
    }

    #[test]
    fn only_one_chunked_passes() {
        assert_eq!(check(&[]), Ok(()));
        assert_eq!(check(&["chunked"]), Ok(()));
        assert_eq!(check(&["Chunked"]), Ok(()));
        assert_eq!(check(&[" , chunked"]), Ok(()));
    }

    #[test]
    fn unknown_codings_are_not_implemented() {
        for f in [
            &["gzip, chunked"][..],
            &["cow, chunked"],
            &["identity, chunked"],
            &["cow", "chunked"],
            &["gzip"],
        ] {
            assert_eq!(check(f), Err(ErrorKind::NotImplemented), "{f:?}");
        }
    }

    #[test]
    fn repeated_or_obfuscated_codings_are_bad_framing() {
        for f in [
            &["chunked, chunked"][..],
            &["chunked", "chunked"],
            &["gzip, chunked, chunked"],
            &["chunked;q=1"],
            &["\"chunked\""],
            &[","],
        ] {
            assert_eq!(check(f), Err(ErrorKind::BadFraming), "{f:?}");
        }
    }
}
