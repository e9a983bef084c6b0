//! An upstream's response and its body.

use crate::h1;
use crate::h2pool;
use crate::health::{InFlight, Verdict};
use crate::members::Members;
use http::Response;
use hyper::body::Incoming;
use std::sync::Arc;

/// An upstream response body: an HTTP/1.1 body (which holds its connection until it has
/// ended), an HTTP/2 stream, or nothing (an upgrade's head). It also holds the target's
/// in-flight count, when the balancer counts them, until it is dropped.
pub struct ResponseBody {
    kind: Kind,
    _held: Held,
}

/// What a response body holds for its request until it is dropped: the target's in-flight
/// count (least requests, bounded load), the upstream's bulkhead place, and what a failure of
/// the body is told to (outlier detection).
#[derive(Default)]
pub(crate) struct Held {
    pub(crate) _in_flight: Option<InFlight>,
    pub(crate) _place: Option<tokio::sync::OwnedSemaphorePermit>,
    pub(crate) watch: Option<BodyWatch>,
}

/// The target a body comes from: a body that fails (reset, cut short, idle too long) counts
/// as a failure of that target, like a failure before the head.
pub(crate) struct BodyWatch {
    pub(crate) members: Arc<Members>,
    pub(crate) target: usize,
}

enum Kind {
    Empty,
    H1(h1::body::H1Body),
    /// The stream's body and its slot on the connection (freed when dropped).
    H2 {
        body: Incoming,
        _lease: h2pool::Lease,
    },
}

impl ResponseBody {
    pub(crate) fn empty() -> Self {
        Self {
            kind: Kind::Empty,
            _held: Held::default(),
        }
    }
    pub(crate) fn h1(b: h1::body::H1Body) -> Self {
        Self {
            kind: Kind::H1(b),
            _held: Held::default(),
        }
    }
    pub(crate) fn h2(b: Incoming, lease: h2pool::Lease) -> Self {
        Self {
            kind: Kind::H2 {
                body: b,
                _lease: lease,
            },
            _held: Held::default(),
        }
    }
    /// Keeps `held` until the body is dropped.
    pub(crate) fn holding(mut self, held: Held) -> Self {
        self._held = held;
        self
    }
}

impl http_body::Body for ResponseBody {
    type Data = bytes::Bytes;
    type Error = torii_core::BoxError;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
        let this = self.get_mut();
        let polled = match &mut this.kind {
            Kind::Empty => std::task::Poll::Ready(None),
            Kind::H1(b) => std::pin::Pin::new(b).poll_frame(cx),
            Kind::H2 { body: b, .. } => std::pin::Pin::new(b).poll_frame(cx).map_err(Into::into),
        };
        if let Some(w) = &this._held.watch {
            let verdict = match &polled {
                std::task::Poll::Ready(Some(Err(_))) => Verdict::Failure,
                std::task::Poll::Ready(None) => Verdict::Success,
                _ => return polled,
            };
            w.members.health.record(w.target, verdict);
            this._held.watch = None;
        }
        polled
    }
    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Empty => true,
            Kind::H1(b) => b.is_end_stream(),
            Kind::H2 { body: b, .. } => b.is_end_stream(),
        }
    }
    fn size_hint(&self) -> http_body::SizeHint {
        match &self.kind {
            Kind::Empty => http_body::SizeHint::with_exact(0),
            Kind::H1(b) => b.size_hint(),
            Kind::H2 { body: b, .. } => b.size_hint(),
        }
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        // A body that was complete without being read to its end (empty, or read by its
        // length) succeeded; one dropped half-read (the client left) says nothing.
        if let Some(w) = self._held.watch.take()
            && http_body::Body::is_end_stream(self)
        {
            w.members.health.record(w.target, Verdict::Success);
        }
    }
}

/// A response from an upstream.
pub struct UpstreamResponse {
    /// The response; an HTTP/1.1 body holds its connection until it has ended.
    pub response: Response<ResponseBody>,
    /// The connection taken over by a 101 answer to an upgrade request.
    pub upgraded: Option<h1::Upgraded>,
    /// Which target answered.
    pub target: Arc<str>,
}
