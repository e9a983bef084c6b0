//! `upstream_response`: the inline HTTP/1.1 client's response-head parser and chunked decoder
//! on arbitrary bytes, fed in arbitrary pieces.
//!
//! Invariants:
//! - no panic, whatever the bytes and however they are split;
//! - a head is only accepted with one framing: never both Transfer-Encoding and
//!   Content-Length, and a `Length(n)` framing equals every Content-Length value;
//! - the chunked decoder's output does not depend on how the input is split (one piece vs the
//!   fuzzer's split), and it never yields more body bytes than it was given;
//! - a connection's decoder memory (the field names of the heads before) changes nothing:
//!   each head in the input decodes with the memory of the previous ones exactly as with none;
//! - a head that arrives in pieces (the decoder then resumes its search for the head's end
//!   instead of parsing again from byte 0) decodes as the same head, consuming the same bytes;
//!   a head refused whole is refused or still incomplete in pieces, never accepted.
#![no_main]

use bytes::BytesMut;
use http::Method;
use libfuzzer_sys::fuzz_target;
use torii_upstream::codec::chunked::{Decoder, Event};
use torii_upstream::codec::decode::{Framing, Head, Invalid, Scratch, parse, parse_into};

type Summary = Result<
    Option<(
        http::StatusCode,
        http::Version,
        http::HeaderMap,
        Framing,
        bool,
    )>,
    Invalid,
>;

fn summary(r: Result<Option<Head>, Invalid>) -> Summary {
    r.map(|h| h.map(|h| (h.status, h.version, h.headers, h.framing, h.keep_alive)))
}

/// Runs the decoder over `input` split at `cuts`; returns (body, trailer count, ok).
fn decode(input: &[u8], cuts: &[usize]) -> (Vec<u8>, usize, bool) {
    let mut d = Decoder::default();
    let mut buf = BytesMut::new();
    let mut body = Vec::new();
    let mut trailers = 0;
    let mut fed = 0;
    let mut cut = cuts.iter().copied();
    loop {
        match d.decode(&mut buf) {
            Ok(Some(Event::Data(b))) => body.extend_from_slice(&b),
            Ok(Some(Event::Trailers(t))) => trailers = t.len(),
            Ok(Some(Event::End)) => return (body, trailers, true),
            Err(_) => return (body, trailers, false),
            Ok(None) => {
                if fed == input.len() {
                    return (body, trailers, false);
                }
                let n = cut
                    .next()
                    .unwrap_or(input.len())
                    .clamp(1, input.len() - fed);
                buf.extend_from_slice(&input[fed..fed + n]);
                fed += n;
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let method = if sel & 1 == 0 {
        Method::GET
    } else {
        Method::HEAD
    };
    let mut buf = BytesMut::from(rest);
    if let Ok(Some(head)) = parse(&mut buf, &method) {
        let te = head.headers.contains_key(http::header::TRANSFER_ENCODING);
        let cl = head
            .headers
            .get_all(http::header::CONTENT_LENGTH)
            .iter()
            .count();
        if method == Method::GET
            && !head.status.is_informational()
            && head.status != 204
            && head.status != 304
        {
            assert!(!(te && cl > 0), "both framings accepted");
            if let Framing::Length(n) = head.framing {
                for v in head.headers.get_all(http::header::CONTENT_LENGTH) {
                    for part in v.as_bytes().split(|&b| b == b',') {
                        let p = std::str::from_utf8(part).unwrap_or("").trim();
                        assert_eq!(
                            p.parse::<u64>().ok(),
                            Some(n),
                            "length differs from a value"
                        );
                    }
                }
            }
        }
    }
    // Successive heads in one input, as on a kept-alive connection: the warm decoder agrees
    // with a fresh one on each, and both consume the same bytes.
    let mut warm = Scratch::default();
    let mut buf = BytesMut::from(rest);
    for _ in 0..4 {
        let mut fresh_buf = buf.clone();
        let fresh = summary(parse(&mut fresh_buf, &method));
        let warmed = summary(parse_into(&mut buf, &method, &mut warm));
        assert_eq!(fresh, warmed, "remembered names changed the decoding");
        if !matches!(warmed, Ok(Some(_))) {
            break;
        }
        assert_eq!(buf, fresh_buf, "consumed differently");
    }
    let cuts: Vec<usize> = rest
        .iter()
        .take(16)
        .map(|&b| usize::from(b % 17) + 1)
        .collect();
    // The first head, fed in the pieces of `cuts` (then one byte at a time).
    let mut whole_buf = BytesMut::from(rest);
    let whole = summary(parse(&mut whole_buf, &method));
    let mut scratch = Scratch::default();
    let mut buf = BytesMut::new();
    let mut fed = 0;
    let mut pieces = cuts.iter().copied();
    let split = loop {
        let n = pieces.next().unwrap_or(1).min(rest.len() - fed);
        buf.extend_from_slice(&rest[fed..fed + n]);
        fed += n;
        match summary(parse_into(&mut buf, &method, &mut scratch)) {
            Ok(None) if fed < rest.len() => continue,
            other => break other,
        }
    };
    match &whole {
        Ok(Some(_)) => {
            assert_eq!(whole, split, "a head in pieces decoded differently");
            assert_eq!(
                rest.len() - whole_buf.len(),
                fed - buf.len(),
                "a head in pieces consumed differently"
            );
        }
        Ok(None) => assert!(matches!(split, Ok(None) | Err(_)), "{split:?}"),
        Err(_) => assert!(!matches!(split, Ok(Some(_))), "refused whole, accepted in pieces"),
    }
    let whole = decode(rest, &[]);
    let split = decode(rest, &cuts);
    assert_eq!(whole, split, "result depends on how the input was split");
    assert!(whole.0.len() <= rest.len());
});
