//! `upstream_inputs`: the parts of the upstream service that read what a client or a target
//! sends, outside the HTTP codec: the `consistent_hash` key taken from a request's cookies,
//! query string or a header, and the gRPC health-check answer of an active probe.
//!
//! Invariants:
//! - no panic, whatever the bytes;
//! - a key is a function of the request: the same head gives the same key twice, and a
//!   request without the cookie, query parameter or header has none;
//! - a cookie or query key does not depend on the pairs around it: `name=v` alone and
//!   `other=x; name=v` (or `other=x&name=v`) hash alike when `name` appears once;
//! - a health answer is `SERVING` only when it holds field 1 with value 1; appending an
//!   unknown length-delimited field in front of a well-formed answer changes nothing.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use torii_config::schema::HashOn;
use torii_upstream::fuzzing::{grpc_serving, hash_key};

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    name: &'a str,
    value: &'a [u8],
    other: &'a [u8],
    answer: &'a [u8],
}

fn head(cookie: Option<&[u8]>, query: Option<&str>) -> Option<http::request::Parts> {
    let uri = match query {
        Some(q) => format!("/x?{q}"),
        None => "/x".to_string(),
    };
    let mut b = http::Request::get(uri);
    if let Some(c) = cookie {
        b = b.header(http::header::COOKIE, http::HeaderValue::from_bytes(c).ok()?);
    }
    Some(b.body(()).ok()?.into_parts().0)
}

fuzz_target!(|input: Input<'_>| {
    let name = input.name;
    let ok_name = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    // Cookies.
    if let Some(h) = head(Some(input.value), None) {
        let on = HashOn::Cookie(name.to_string());
        assert_eq!(hash_key(&on, &h), hash_key(&on, &h));
    }
    if ok_name
        && let Ok(v) = std::str::from_utf8(input.value)
        && v.bytes().all(|b| b.is_ascii_alphanumeric())
    {
        let alone = format!("{name}={v}");
        let among = format!("zz{name}=1; {name}={v}; other=2");
        let on = HashOn::Cookie(name.to_string());
        if let (Some(a), Some(b)) = (head(Some(alone.as_bytes()), None), head(Some(among.as_bytes()), None)) {
            assert!(hash_key(&on, &a).is_some());
            assert_eq!(hash_key(&on, &a), hash_key(&on, &b));
        }
        // Query parameters.
        let on = HashOn::Query(name.to_string());
        if let (Some(a), Some(b)) = (
            head(None, Some(&alone)),
            head(None, Some(&format!("zz{name}=1&{name}={v}&other=2"))),
        ) {
            assert!(hash_key(&on, &a).is_some());
            assert_eq!(hash_key(&on, &a), hash_key(&on, &b));
        }
        if let Some(none) = head(None, Some(&format!("{name}x=1&x{name}=2"))) {
            assert_eq!(hash_key(&on, &none), None);
        }
    }
    // Any query string, any header.
    if let Ok(q) = std::str::from_utf8(input.other)
        && let Some(h) = head(None, Some(q))
    {
        let on = HashOn::Query(name.to_string());
        assert_eq!(hash_key(&on, &h), hash_key(&on, &h));
    }
    if let Ok(n) = http::HeaderName::from_bytes(name.as_bytes())
        && let Ok(v) = http::HeaderValue::from_bytes(input.value)
    {
        let mut h = head(None, None).expect("a bare head");
        let on = HashOn::Header(n.as_str().to_string());
        assert_eq!(hash_key(&on, &h), None);
        h.headers.insert(n, v);
        assert!(hash_key(&on, &h).is_some());
    }
    // gRPC health answers.
    let _ = grpc_serving(input.answer);
    let mut prefixed = vec![0x12, input.other.len().min(100) as u8];
    prefixed.extend_from_slice(&input.other[..input.other.len().min(100)]);
    prefixed.extend_from_slice(&[0x08, 0x01]);
    assert!(grpc_serving(&prefixed));
    assert!(!grpc_serving(&[0x08, 0x02]));
});
