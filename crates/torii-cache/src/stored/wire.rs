//! The shared tier's encoding of a stored response: a small binary frame (fixed-width
//! numbers, length-prefixed strings), the policy as JSON, then the body. Times travel on the
//! wall clock (the nodes' monotonic clocks are unrelated) and become instants again on the
//! reading node. Whatever is read back is validated as if it came from the network: a bad
//! frame is a miss, never a panic.

use super::Stored;
use bytes::{Buf, BufMut, Bytes};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use std::time::{Duration, Instant, SystemTime};

const MAGIC: &[u8; 4] = b"TRC2";
/// The most fields, tags and `Vary` names a frame may carry: more is a bad frame (a header
/// map would panic past its own limit).
const MAX_FIELDS: usize = 512;
const MAX_NAMES: usize = 64;

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn put_str(out: &mut Vec<u8>, s: &[u8]) {
    out.put_u32(u32::try_from(s.len()).unwrap_or(u32::MAX));
    out.extend_from_slice(s);
}

fn take_str(b: &mut Bytes) -> Option<Bytes> {
    if b.remaining() < 4 {
        return None;
    }
    let n = b.get_u32() as usize;
    (b.remaining() >= n).then(|| b.split_to(n))
}

fn take_u64(b: &mut Bytes) -> Option<u64> {
    (b.remaining() >= 8).then(|| b.get_u64())
}

/// A `Vary` marker: the field names and the epoch of its variants.
pub fn encode_vary(names: &[HeaderName], epoch: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(24 + names.len() * 16);
    out.extend_from_slice(MAGIC);
    out.put_u8(b'V');
    out.put_u64(epoch);
    out.put_u32(names.len() as u32);
    for n in names {
        put_str(&mut out, n.as_str().as_bytes());
    }
    out
}

/// What a shared-tier value holds.
pub enum Decoded {
    /// A `Vary` marker and its epoch.
    Vary(Vec<HeaderName>, u64),
    /// A response.
    Response(Box<Stored>),
}

impl Stored {
    /// The frame of this response.
    pub fn encode(&self) -> Vec<u8> {
        let policy = serde_json::to_vec(&self.policy).unwrap_or_default();
        let mut out =
            Vec::with_capacity(64 + self.body.len() + policy.len() + 64 * self.headers.len());
        out.extend_from_slice(MAGIC);
        out.put_u8(b'R');
        out.put_u16(self.status.as_u16());
        let wall = self
            .stored_wall
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        out.put_u64(millis(wall));
        out.put_u64(millis(self.initial_age));
        out.put_u64(millis(
            self.fresh_until.saturating_duration_since(self.stored_at),
        ));
        out.put_u64(millis(self.stale_if_error));
        out.put_u64(millis(self.stale_while_revalidate));
        out.put_u8(u8::from(self.strict));
        out.put_u32(self.vary.len() as u32);
        for n in self.vary.iter() {
            put_str(&mut out, n.as_str().as_bytes());
        }
        put_str(&mut out, self.url.as_bytes());
        put_str(&mut out, self.scope.as_bytes());
        out.put_u32(self.tags.len() as u32);
        for t in self.tags.iter() {
            put_str(&mut out, t.as_bytes());
        }
        out.put_u32(self.headers.len() as u32);
        for (k, v) in &self.headers {
            put_str(&mut out, k.as_str().as_bytes());
            put_str(&mut out, v.as_bytes());
        }
        put_str(&mut out, &policy);
        out.extend_from_slice(&self.body);
        out
    }
}

/// Reads a frame; `None` for anything malformed.
pub fn decode(mut b: Bytes) -> Option<Decoded> {
    if b.remaining() < 5 || &b[..4] != MAGIC {
        return None;
    }
    b.advance(4);
    match b.get_u8() {
        b'V' => {
            if b.remaining() < 12 {
                return None;
            }
            let epoch = b.get_u64();
            let n = b.get_u32() as usize;
            if n > MAX_NAMES {
                return None;
            }
            let mut names = Vec::with_capacity(n.min(64));
            for _ in 0..n {
                names.push(HeaderName::from_bytes(&take_str(&mut b)?).ok()?);
            }
            Some(Decoded::Vary(names, epoch))
        }
        b'R' => response(b).map(|s| Decoded::Response(Box::new(s))),
        _ => None,
    }
}

fn response(mut b: Bytes) -> Option<Stored> {
    if b.remaining() < 2 {
        return None;
    }
    let status = StatusCode::from_u16(b.get_u16()).ok()?;
    // Only what the cache stores: a final whole answer.
    if status.as_u16() < 200
        || status == StatusCode::PARTIAL_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return None;
    }
    let wall = SystemTime::UNIX_EPOCH + Duration::from_millis(take_u64(&mut b)?);
    let initial_age = Duration::from_millis(take_u64(&mut b)?);
    let fresh_for = Duration::from_millis(take_u64(&mut b)?);
    let stale_if_error = Duration::from_millis(take_u64(&mut b)?);
    let stale_while_revalidate = Duration::from_millis(take_u64(&mut b)?);
    if b.remaining() < 5 {
        return None;
    }
    let strict = b.get_u8() != 0;
    let n = b.get_u32() as usize;
    if n > MAX_NAMES {
        return None;
    }
    let mut vary = Vec::with_capacity(n.min(64));
    for _ in 0..n {
        vary.push(HeaderName::from_bytes(&take_str(&mut b)?).ok()?);
    }
    let url = String::from_utf8(take_str(&mut b)?.to_vec()).ok()?;
    let scope = String::from_utf8(take_str(&mut b)?.to_vec()).ok()?;
    if b.remaining() < 4 {
        return None;
    }
    let n = b.get_u32() as usize;
    if n > MAX_FIELDS {
        return None;
    }
    let mut tags = Vec::with_capacity(n.min(64));
    for _ in 0..n {
        tags.push(
            String::from_utf8(take_str(&mut b)?.to_vec())
                .ok()?
                .into_boxed_str(),
        );
    }
    if b.remaining() < 4 {
        return None;
    }
    let n = b.get_u32() as usize;
    if n > MAX_FIELDS {
        return None;
    }
    let mut headers = HeaderMap::with_capacity(n.min(128));
    for _ in 0..n {
        let k = HeaderName::from_bytes(&take_str(&mut b)?).ok()?;
        let v = HeaderValue::from_bytes(&take_str(&mut b)?).ok()?;
        headers.try_append(k, v).ok()?;
    }
    let policy = serde_json::from_slice(&take_str(&mut b)?).ok()?;
    // The time since it was stored, on this node's clock: its instants are set back by it.
    let now = Instant::now();
    let since = SystemTime::now().duration_since(wall).unwrap_or_default();
    let stored_at = now.checked_sub(since).unwrap_or(now);
    let etag = headers.get(http::header::ETAG).cloned();
    let last_modified = headers
        .get(http::header::LAST_MODIFIED)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v).ok());
    // Copied out of the frame: the frame's buffer is not kept.
    let body = Bytes::copy_from_slice(&b);
    // A body that is not as long as it says is a bad frame.
    if let Some(n) = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        && n != body.len()
    {
        return None;
    }
    let weight = super::weight(&headers, &body, &url, &scope);
    Some(Stored {
        status,
        headers,
        body,
        policy,
        stored_at,
        stored_wall: wall,
        initial_age: initial_age + (since - now.saturating_duration_since(stored_at)),
        fresh_until: super::later(stored_at, fresh_for),
        stale_if_error,
        stale_while_revalidate,
        etag,
        last_modified,
        tags: tags.into_boxed_slice(),
        vary: vary.into_boxed_slice(),
        strict,
        url: url.into_boxed_str(),
        scope: scope.into_boxed_str(),
        weight,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::stored::{Freshness, Settings, assess};

    #[test]
    fn a_response_and_a_marker_round_trip_and_garbage_is_a_miss() {
        let req = http::Request::get("/a").body(()).unwrap().into_parts().0;
        let mut h = HeaderMap::new();
        h.insert("cache-control", HeaderValue::from_static("max-age=60"));
        h.insert("etag", HeaderValue::from_static("\"e\""));
        h.append("x-multi", HeaderValue::from_static("1"));
        h.append("x-multi", HeaderValue::from_static("2"));
        h.insert("surrogate-key", HeaderValue::from_static("t1 t2"));
        let s = Settings {
            heuristic: 0.1,
            stale_if_error: Duration::from_secs(5),
            stale_while_revalidate: Duration::ZERO,
            max_object_size: 1 << 20,
        };
        let stored = assess(&req, StatusCode::OK, &h, false, &s)
            .unwrap()
            .label("h/a".into(), "route:r")
            .finish(Bytes::from_static(b"body"));
        let frame = Bytes::from(stored.encode());
        let Some(Decoded::Response(back)) = decode(frame.clone()) else {
            panic!("not a response")
        };
        assert_eq!(back.status, StatusCode::OK);
        assert_eq!(&back.body[..], b"body");
        assert_eq!(back.headers, stored.headers);
        assert_eq!(&*back.url, "h/a");
        assert_eq!(&*back.scope, "route:r");
        assert_eq!(back.tags.len(), 2);
        assert!(back.usable_on_error(Instant::now()));
        assert_eq!(back.freshness(&req, Instant::now()), Freshness::Fresh);
        assert!((58..=60).contains(&back.ttl(Instant::now())));
        assert!(
            back.not_modified_for(
                &http::Request::get("/a")
                    .header("if-none-match", "\"e\"")
                    .body(())
                    .unwrap()
                    .into_parts()
                    .0
            )
        );
        // Every truncation is a miss, never a panic.
        for n in 0..frame.len() - 4 {
            let _ = decode(frame.slice(..n));
        }
        assert!(decode(Bytes::from_static(b"nope")).is_none());
        let names = [HeaderName::from_static("accept-language")];
        let Some(Decoded::Vary(v, 7)) = decode(Bytes::from(encode_vary(&names, 7))) else {
            panic!("not a marker")
        };
        assert_eq!(v, names);
    }
}
