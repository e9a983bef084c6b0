//! What an upstream call returns.

use crate::h1;
use crate::h2pool;
use http::Response;
use hyper::body::Incoming;
use std::sync::Arc;

/// A response body from an upstream: read inline from an HTTP/1.1 connection, or an HTTP/2
/// stream driven by hyper.
pub enum ResponseBody {
    /// No body (the head of an upgrade).
    Empty,
    /// HTTP/1.1.
    H1(h1::body::H1Body),
    /// HTTP/2: the stream's body and its slot on the connection (freed when dropped).
    H2(Incoming, h2pool::Lease),
}

impl http_body::Body for ResponseBody {
    type Data = bytes::Bytes;
    type Error = torii_core::BoxError;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
        match self.get_mut() {
            ResponseBody::Empty => std::task::Poll::Ready(None),
            ResponseBody::H1(b) => std::pin::Pin::new(b).poll_frame(cx),
            ResponseBody::H2(b, _) => std::pin::Pin::new(b).poll_frame(cx).map_err(Into::into),
        }
    }
    fn is_end_stream(&self) -> bool {
        match self {
            ResponseBody::Empty => true,
            ResponseBody::H1(b) => b.is_end_stream(),
            ResponseBody::H2(b, _) => b.is_end_stream(),
        }
    }
    fn size_hint(&self) -> http_body::SizeHint {
        match self {
            ResponseBody::Empty => http_body::SizeHint::with_exact(0),
            ResponseBody::H1(b) => b.size_hint(),
            ResponseBody::H2(b, _) => b.size_hint(),
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
