//! `request_framing`: the gateway's check of a client request's `Transfer-Encoding` fields
//! (RFC 9112 section 6.1) on arbitrary field values.
//!
//! Invariants:
//! - no panic, whatever the values (any bytes a header value may hold, any number of fields);
//! - the check passes exactly when, over all fields, the non-empty list elements are a single
//!   `chunked` (any ASCII case), and a failure is 400 `bad_framing` or 501 `not_implemented`,
//!   both closing the connection.
#![no_main]

use http::{HeaderMap, HeaderValue, header};
use libfuzzer_sys::fuzz_target;
use torii_core::ErrorKind;
use torii_proxy::framing::check_request_transfer_coding;

fuzz_target!(|data: &[u8]| {
    // Each line is one Transfer-Encoding field; lines that are not valid values are skipped,
    // as hyper would have refused them before the gateway sees the request.
    let mut headers = HeaderMap::new();
    for line in data.split(|&b| b == b'\n').take(16) {
        if let Ok(v) = HeaderValue::from_bytes(line) {
            headers.append(header::TRANSFER_ENCODING, v);
        }
    }
    let elements: Vec<&[u8]> = headers
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|e| !e.is_empty())
        .collect();
    let only_chunked = elements.len() == 1 && elements[0].eq_ignore_ascii_case(b"chunked");
    match check_request_transfer_coding(&headers) {
        Ok(()) => assert!(
            only_chunked || headers.get(header::TRANSFER_ENCODING).is_none(),
            "accepted {elements:?}"
        ),
        Err(e) => {
            assert!(!only_chunked, "refused a single chunked: {elements:?}");
            assert!(
                matches!(e.kind, ErrorKind::BadFraming | ErrorKind::NotImplemented),
                "{:?}",
                e.kind
            );
            assert!(e.kind.closes_connection());
        }
    }
});
