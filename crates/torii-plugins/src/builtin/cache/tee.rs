//! Storing a response while it streams to the client: the body's frames are kept (shared,
//! not copied) up to `max_object_size`, and the response is stored when its last byte has
//! passed. A body that grows past the limit, carries trailers, breaks, or is abandoned by the
//! client is not stored; it still reaches the client unchanged. Dropping the fill releases
//! the requests waiting for it (coalescing).

use bytes::{Bytes, BytesMut};
use http::HeaderName;
use std::sync::Arc;
use std::task::{Context, Poll};
use torii_cache::flights::Leader;
use torii_cache::status::Counters;
use torii_cache::stored::Candidate;
use torii_cache::{Key, Memory, Stored};
use torii_core::layered::{Concern, Polled};

/// Where responses are kept: the memory tier, and the shared tier when the route has one.
#[derive(Clone)]
pub struct Tiers {
    /// The process's memory tier.
    pub memory: Arc<Memory>,
    /// The shared tier, when used.
    pub shared: Option<Arc<torii_cache::SharedTier>>,
}

impl Tiers {
    /// Keeps a response under `key` (and its resource's `Vary` marker of `epoch`) in every
    /// tier; whether memory took it. `purges`: the memory tier's purge count when the
    /// response was asked for; a purge since then (which may have been meant for it) and
    /// it is not kept.
    pub fn put(
        &self,
        resource: Key,
        key: Key,
        vary: Arc<[HeaderName]>,
        epoch: u64,
        purges: u64,
        stored: Arc<Stored>,
    ) -> bool {
        if self.memory.purged_since(purges, &stored) {
            return false;
        }
        // Encoded before memory takes it; sent to Redis only if memory took it (a fill whose
        // resource was invalidated or purged meanwhile goes nowhere).
        let frame = self.shared.as_ref().map(|t| t.frame(&stored));
        let vary_names = vary.clone();
        if !self.memory.put(resource, key, vary, epoch, stored) {
            return false;
        }
        if let (Some(t), Some(frame)) = (&self.shared, frame) {
            t.store(resource, key, &vary_names, epoch, frame);
        }
        true
    }
}

/// Bytes of the memory tier's fill budget a response being stored holds; given back when the
/// fill ends, stored or not.
#[derive(Default)]
pub struct Reserved(u64, Option<Arc<Memory>>);

impl Drop for Reserved {
    fn drop(&mut self) {
        if let Some(m) = &self.1 {
            m.release_fill(self.0);
        }
    }
}

/// A response being stored.
pub struct Fill {
    /// What will be stored once the body has passed.
    pub candidate: Candidate,
    /// Where it goes (the variant's key when it varies).
    pub key: Key,
    /// The resource's key (where the `Vary` marker goes).
    pub resource: Key,
    /// The marker's epoch the request read.
    pub epoch: u64,
    /// The memory tier's purge count when the request came (`Memory::purges`).
    pub purges: u64,
    /// Where it goes.
    pub tiers: Tiers,
    /// Counted in (`stored`).
    pub counters: Arc<Counters>,
    /// The largest body kept.
    pub max: u64,
    /// Held until the response is stored or given up (coalescing).
    pub _leader: Option<Leader>,
    /// The body so far (empty to start).
    pub chunks: Vec<Bytes>,
    /// Its length.
    pub len: u64,
    /// Its share of the fill budget (start with `Default::default()`).
    pub reserved: Reserved,
    /// The body's length when the response announced it (`Content-Length`): the body is
    /// complete once that many bytes have passed, even if the sender is not polled again for
    /// its end (a body read ahead, whose length hyper knows, is not).
    pub expected: Option<u64>,
}

impl Fill {
    fn store(mut self) {
        let body = match self.chunks.len() {
            0 => Bytes::new(),
            // A frame is a slice of its connection's buffer: copied, so the stored body does
            // not keep the buffer alive (several frames are joined into a new buffer anyway).
            1 => Bytes::copy_from_slice(&self.chunks.pop().unwrap_or_default()),
            _ => {
                let mut b = BytesMut::with_capacity(usize::try_from(self.len).unwrap_or(0));
                for c in &self.chunks {
                    b.extend_from_slice(c);
                }
                b.freeze()
            }
        };
        let vary: Arc<[HeaderName]> = self.candidate.vary().into();
        let stored = self.candidate.finish(body);
        if self.tiers.put(
            self.resource,
            self.key,
            vary,
            self.epoch,
            self.purges,
            Arc::new(stored),
        ) {
            Counters::add(&self.counters.stored);
        }
        // `self._leader` is dropped here: the waiters find the stored response.
    }
}

/// The body concern that fills the store.
pub struct Tee(pub Option<Fill>);

/// A response's announced body length (`Content-Length`), for [`Fill::expected`].
pub fn announced_length(headers: &http::HeaderMap) -> Option<u64> {
    headers
        .get(http::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

impl Tee {
    /// A body that fills `fill` as it streams.
    pub fn wrap(body: torii_core::Body, fill: Fill) -> torii_core::Body {
        torii_core::Body::boxed(torii_core::Layered::new(body, Tee(Some(fill))))
    }
}

impl Tee {
    fn finish(&mut self) {
        if let Some(f) = self.0.take() {
            f.store();
        }
    }
}

impl Concern for Tee {
    fn polled(&mut self, polled: Polled, end: bool, _: &mut Context<'_>) -> Polled {
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(f) = &mut self.0 {
                    match frame.data_ref() {
                        Some(d) => {
                            let n = d.len() as u64;
                            f.len += n;
                            if f.len > f.max || !f.tiers.memory.reserve_fill(n) {
                                // Too large, or too much is being stored at once: it streams
                                // through unstored.
                                self.0 = None;
                            } else if !d.is_empty() {
                                if f.reserved.1.is_none() {
                                    f.reserved.1 = Some(f.tiers.memory.clone());
                                }
                                f.reserved.0 += n;
                                f.chunks.push(d.clone());
                            }
                        }
                        // Trailers: such responses are not stored.
                        None => self.0 = None,
                    }
                }
                let complete = self
                    .0
                    .as_ref()
                    .is_some_and(|f| f.expected.is_some_and(|n| f.len == n));
                if end || complete {
                    self.finish();
                }
            }
            Poll::Ready(None) => self.finish(),
            Poll::Ready(Some(Err(_))) => self.0 = None,
            Poll::Pending => {}
        }
        polled
    }

    fn dropped(&mut self, ended: bool) {
        let complete = self
            .0
            .as_ref()
            .is_some_and(|f| f.expected.is_some_and(|n| f.len == n));
        if ended || complete {
            self.finish();
        }
    }
}
