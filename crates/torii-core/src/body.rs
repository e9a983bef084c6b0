use bytes::Bytes;
use http_body::{Frame, SizeHint};
use std::pin::Pin;
use std::task::{Context, Poll};

/// A boxed error, as carried by bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A client's request body grew past its limit while streaming (the gateway's body wrappers
/// end the body with it; whoever forwards the body reports it as 413).
#[derive(Debug, thiserror::Error)]
#[error("request body larger than {0} bytes")]
pub struct BodyTooLarge(pub u64);

/// A client's request body sent no bytes for longer than its idle timeout.
#[derive(Debug, thiserror::Error)]
#[error("no body bytes for {0:?}")]
pub struct BodyIdle(pub std::time::Duration);

type Boxed = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

/// The one body type of the gateway. Streaming variants forward frames (data and trailers) as
/// they come, with their size hint and end-of-stream, so nothing is buffered whole.
#[derive(Default)]
pub enum Body {
    /// No body.
    #[default]
    Empty,
    /// A body already in memory (gateway-generated responses).
    Full(Option<Bytes>),
    /// A body received by hyper (a client request or an upstream response).
    Incoming(hyper::body::Incoming),
    /// Any other body (wrapped bodies: limits, timeouts, logging).
    Boxed(Boxed),
}

impl Body {
    /// A body from bytes.
    pub fn full(b: impl Into<Bytes>) -> Self {
        let b = b.into();
        if b.is_empty() {
            Body::Empty
        } else {
            Body::Full(Some(b))
        }
    }

    /// A second copy of a body held in memory (no copy of its bytes); `None` for a stream.
    pub fn try_clone(&self) -> Option<Body> {
        match self {
            Body::Empty => Some(Body::Empty),
            Body::Full(b) => Some(Body::Full(b.clone())),
            Body::Incoming(_) | Body::Boxed(_) => None,
        }
    }

    /// Boxes any body with compatible frames.
    pub fn boxed<B>(body: B) -> Self
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        use http_body_util::BodyExt;
        Body::Boxed(body.map_err(Into::into).boxed_unsync())
    }
}

impl From<hyper::body::Incoming> for Body {
    fn from(b: hyper::body::Incoming) -> Self {
        Body::Incoming(b)
    }
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Body::Empty => "Body::Empty",
            Body::Full(_) => "Body::Full",
            Body::Incoming(_) => "Body::Incoming",
            Body::Boxed(_) => "Body::Boxed",
        })
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            Body::Empty => Poll::Ready(None),
            Body::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Body::Incoming(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            Body::Boxed(b) => Pin::new(b).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Empty => true,
            Body::Full(b) => b.is_none(),
            Body::Incoming(b) => b.is_end_stream(),
            Body::Boxed(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Empty => SizeHint::with_exact(0),
            Body::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            Body::Incoming(b) => b.size_hint(),
            Body::Boxed(b) => b.size_hint(),
        }
    }
}
