//! The `Cache-Status` response field (RFC 9211) and the short `X-Cache` one, and the cache's
//! counters per route.

use http::HeaderValue;
use std::sync::atomic::{AtomicU64, Ordering};

/// How the cache handled one request.
#[derive(Debug, Clone, Default)]
pub struct Status {
    /// Answered from the cache without going upstream.
    pub hit: bool,
    /// Why the request went upstream (`uri-miss`, `vary-miss`, `request`, `stale`, `method`,
    /// `bypass`).
    pub fwd: Option<&'static str>,
    /// The upstream's status, when it went upstream and got one.
    pub fwd_status: Option<u16>,
    /// The response was stored.
    pub stored: bool,
    /// It waited for another request's fill.
    pub collapsed: bool,
    /// Freshness left in seconds (negative: stale for that long), when a stored response was
    /// involved.
    pub ttl: Option<i64>,
    /// Why a response was not stored, or that a stale one was served.
    pub detail: Option<&'static str>,
}

impl Status {
    /// The `Cache-Status` member of this cache (named `torii`).
    pub fn header(&self) -> HeaderValue {
        // Written from parts on the stack, without the formatting machinery, then copied
        // once into the value: this runs on every response the cache handles.
        let mut s = Line::default();
        let mut n = itoa::Buffer::new();
        s.put(b"torii");
        if self.hit {
            s.put(b"; hit");
        }
        if let Some(f) = self.fwd {
            s.put(b"; fwd=");
            s.put(f.as_bytes());
        }
        if let Some(c) = self.fwd_status {
            s.put(b"; fwd-status=");
            s.put(n.format(c).as_bytes());
        }
        if self.stored {
            s.put(b"; stored");
        }
        if self.collapsed {
            s.put(b"; collapsed");
        }
        if let Some(t) = self.ttl {
            s.put(b"; ttl=");
            s.put(n.format(t).as_bytes());
        }
        if let Some(d) = self.detail {
            s.put(b"; detail=");
            s.put(d.as_bytes());
        }
        HeaderValue::from_bytes(s.as_bytes()).unwrap_or(HeaderValue::from_static("torii"))
    }

    /// `X-Cache`: `HIT` (fresh from the cache), `STALE` (a stale response served) or `MISS`.
    pub fn short(&self) -> HeaderValue {
        HeaderValue::from_static(match (self.hit, self.detail) {
            (_, Some(d)) if d.starts_with("stale-") => "STALE",
            (true, _) => "HIT",
            (false, _) => "MISS",
        })
    }
}

/// A `Cache-Status` line being written: room for every member at its longest (the names
/// are the cache's own words, at most about 130 bytes in all); a part that would not fit is
/// left out rather than cut.
struct Line {
    buf: [u8; 192],
    len: usize,
}

impl Default for Line {
    fn default() -> Self {
        Self {
            buf: [0; 192],
            len: 0,
        }
    }
}

impl Line {
    fn put(&mut self, part: &[u8]) {
        let end = self.len + part.len();
        if let Some(dst) = self.buf.get_mut(self.len..end) {
            dst.copy_from_slice(part);
            self.len = end;
        }
    }

    fn as_bytes(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or_default()
    }
}

/// The counters of one route's cache.
#[derive(Debug, Default)]
pub struct Counters {
    /// Requests answered from the cache (fresh, or revalidated with a 304).
    pub hits: AtomicU64,
    /// Requests that went upstream for a response the cache could use.
    pub misses: AtomicU64,
    /// Stale responses served (upstream failure, or while refreshing).
    pub stale: AtomicU64,
    /// Misses that waited for another request's fill.
    pub coalesced: AtomicU64,
    /// Responses stored.
    pub stored: AtomicU64,
    /// Requests the cache did not handle (methods other than GET and HEAD, upgrades).
    pub bypassed: AtomicU64,
    /// Background refreshes of stale responses served while revalidating.
    pub refreshes: AtomicU64,
}

impl Counters {
    /// Adds one to a counter.
    pub fn add(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// The counters' values, in the field order above.
    pub fn values(&self) -> [(&'static str, u64); 7] {
        let l = |c: &AtomicU64| c.load(Ordering::Relaxed);
        [
            ("hits", l(&self.hits)),
            ("misses", l(&self.misses)),
            ("stale", l(&self.stale)),
            ("coalesced", l(&self.coalesced)),
            ("stored", l(&self.stored)),
            ("bypassed", l(&self.bypassed)),
            ("refreshes", l(&self.refreshes)),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members() {
        let hit = Status {
            hit: true,
            ttl: Some(42),
            ..Status::default()
        };
        assert_eq!(hit.header(), "torii; hit; ttl=42");
        assert_eq!(hit.short(), "HIT");
        let miss = Status {
            fwd: Some("uri-miss"),
            fwd_status: Some(200),
            stored: true,
            collapsed: true,
            ..Status::default()
        };
        assert_eq!(
            miss.header(),
            "torii; fwd=uri-miss; fwd-status=200; stored; collapsed"
        );
        assert_eq!(miss.short(), "MISS");
        let stale = Status {
            fwd: Some("stale"),
            ttl: Some(-5),
            detail: Some("stale-if-error"),
            ..Status::default()
        };
        assert_eq!(stale.short(), "STALE");
    }
}
