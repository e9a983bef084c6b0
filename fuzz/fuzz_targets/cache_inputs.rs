//! `cache_inputs`: what the response cache reads from upstream answers, clients and its shared
//! tier: `Cache-Control` (and `CDN-Cache-Control`, `Age`, `Expires`, `Vary`, tags) of any
//! shape through the storage decision, client requests with any directives and conditionals
//! against a stored answer, 304 merges, query strings through the key's canonical form, and
//! frames read back from Redis.
//!
//! Invariants:
//! - no panic, whatever the bytes (huge delta-seconds included: no instant overflow);
//! - a frame read from Redis decodes to what was encoded: re-encoding a decoded response and
//!   decoding it again gives the same status, fields and body;
//! - the canonical query is a fixed point (canonical of canonical is itself), and a query's
//!   key does not depend on the order of its parameters in `sorted` mode.
#![no_main]

use arbitrary::Arbitrary;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use libfuzzer_sys::fuzz_target;
use std::time::{Duration, Instant};
use torii_cache::key::{KeySpec, Query};
use torii_cache::stored::{Settings, assess, wire};

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    status: u16,
    response: Vec<(&'a str, &'a [u8])>,
    request: Vec<(&'a str, &'a [u8])>,
    not_modified: Vec<(&'a str, &'a [u8])>,
    query: &'a str,
    frame: &'a [u8],
    authenticated: bool,
}

fn map(fields: &[(&str, &[u8])]) -> HeaderMap {
    let mut m = HeaderMap::new();
    for (k, v) in fields.iter().take(32) {
        if let (Ok(k), Ok(v)) = (HeaderName::from_bytes(k.as_bytes()), HeaderValue::from_bytes(v)) {
            m.append(k, v);
        }
    }
    m
}

fn spec(query: Query) -> KeySpec {
    KeySpec {
        namespace: "route:f".into(),
        host: true,
        query,
        headers: Box::new([]),
        consumer: false,
    }
}

fuzz_target!(|input: Input<'_>| {
    // Frames from the shared tier.
    if let Some(wire::Decoded::Response(s)) = wire::decode(Bytes::copy_from_slice(input.frame)) {
        let again = s.encode();
        match wire::decode(Bytes::from(again)) {
            Some(wire::Decoded::Response(t)) => {
                assert_eq!(s.status, t.status);
                assert_eq!(s.headers, t.headers);
                assert_eq!(s.body, t.body);
            }
            _ => panic!("a decoded response does not decode again"),
        }
    }
    // The storage decision and the uses of a stored answer.
    let settings = Settings {
        heuristic: 0.1,
        stale_if_error: Duration::from_secs(60),
        stale_while_revalidate: Duration::from_secs(1),
        max_object_size: 1 << 20,
    };
    let Ok(get) = http::Request::get("/x").body(()) else { return };
    let mut get = get.into_parts().0;
    get.headers = map(&input.request);
    let status = StatusCode::from_u16(input.status).unwrap_or(StatusCode::OK);
    // A stored body always has the length its fields announce (only complete bodies are
    // stored), so the fuzzed fields announce none.
    let mut response = map(&input.response);
    response.remove(http::header::CONTENT_LENGTH);
    if let Ok(c) = assess(&get, status, &response, input.authenticated, &settings) {
        let s = c.label("h/x".into(), "route:f").finish(Bytes::from_static(b"body"));
        let now = Instant::now();
        let _ = s.freshness(&get, now);
        let _ = s.ttl(now + Duration::from_secs(3600));
        let _ = s.age(now);
        let _ = s.keep_until();
        let _ = s.shared_ttl(now, Duration::from_secs(86_400));
        let _ = s.usable_on_error(now);
        let _ = s.not_modified_for(&get);
        let _ = s.not_modified_headers(now);
        let _ = s.headers_at(now, 3);
        let _ = s.revalidation(&get);
        let _ = s.refreshed(&get, &map(&input.not_modified), input.authenticated, &settings);
        let mut head = get.clone();
        head.method = Method::HEAD;
        let _ = s.freshness(&head, now);
        if let Some(wire::Decoded::Response(t)) = wire::decode(Bytes::from(s.encode())) {
            assert_eq!(s.headers, t.headers);
        } else {
            panic!("a stored response does not round-trip");
        }
    }
    // Keys: the canonical query is a fixed point; sorted keys ignore parameter order.
    for q in [
        Query::Sorted,
        Query::Only(Box::new(["a".into(), "page".into()])),
        Query::Ignored,
    ] {
        let s = spec(q);
        if let Some(c) = s.canonical_query(Some(input.query)) {
            assert_eq!(s.canonical_query(Some(&c)).as_deref(), Some(c.as_str()));
        }
    }
    let sorted = spec(Query::Sorted);
    let reversed: Vec<&str> = input.query.split('&').rev().collect();
    let reversed = reversed.join("&");
    let (a, b) = (
        sorted.canonical_query(Some(input.query)),
        sorted.canonical_query(Some(&reversed)),
    );
    // Equal when no name repeats (repeated names keep their order on purpose).
    let mut names: Vec<&str> = input
        .query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| p.split_once('=').map_or(p, |(k, _)| k))
        .collect();
    let n = names.len();
    names.sort_unstable();
    names.dedup();
    if names.len() == n && !input.query.contains(['%', '+']) {
        assert_eq!(a, b);
    }
});
