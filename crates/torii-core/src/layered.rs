//! One wrapper for every concern added to a streaming body: [`Layered`] forwards the inner
//! body (frames, end of stream, size hint) and hands each poll's outcome to a [`Concern`], which
//! adds one thing: an idle timer, a size limit, a byte count, an end-of-body report. Each
//! concern is then a small type with no `poll_frame` forwarding of its own, and a stack of them
//! is one allocation at most (the concerns are fields, not boxed layers).

use crate::body::BoxError;
use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use std::pin::Pin;
use std::task::{Context, Poll};

/// The outcome of polling a body for a frame.
pub type Polled = Poll<Option<Result<Frame<Bytes>, BoxError>>>;

/// One concern added to a body's stream.
pub trait Concern: Unpin {
    /// Sees what the inner body yielded and returns what the wrapper yields. `end`: the inner
    /// body reports its end of stream (read after a frame; `false` otherwise). `cx` is the
    /// poll's context, for a concern that arms a timer while the body is pending.
    fn polled(&mut self, polled: Polled, end: bool, cx: &mut Context<'_>) -> Polled;

    /// The wrapper is dropped; `ended`: the inner body had reached its end.
    fn dropped(&mut self, ended: bool) {
        let _ = ended;
    }
}

/// A body with one concern added (see the module docs).
pub struct Layered<B: HttpBody, C: Concern> {
    inner: B,
    concern: C,
}

impl<B: HttpBody, C: Concern> Layered<B, C> {
    /// Adds `concern` to `inner`.
    pub fn new(inner: B, concern: C) -> Self {
        Self { inner, concern }
    }

    /// The concern.
    pub fn concern(&self) -> &C {
        &self.concern
    }
}

impl<B, C> HttpBody for Layered<B, C>
where
    B: HttpBody<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
    C: Concern,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Polled {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx).map_err(Into::into);
        let end = matches!(polled, Poll::Ready(Some(Ok(_)))) && this.inner.is_end_stream();
        this.concern.polled(polled, end, cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B: HttpBody, C: Concern> Drop for Layered<B, C> {
    fn drop(&mut self) {
        self.concern.dropped(self.inner.is_end_stream());
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::Body;
    use http_body_util::BodyExt;

    /// Counts data bytes, records what it saw at the end and when dropped.
    #[derive(Default)]
    struct Count {
        bytes: usize,
        ended: bool,
        log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    }

    impl Concern for Count {
        fn polled(&mut self, polled: Polled, end: bool, _: &mut Context<'_>) -> Polled {
            if let Poll::Ready(Some(Ok(f))) = &polled {
                self.bytes += f.data_ref().map_or(0, |d| d.len());
            }
            self.ended |= end || matches!(polled, Poll::Ready(None));
            polled
        }
        fn dropped(&mut self, ended: bool) {
            let line = format!("{} {} {ended}", self.bytes, self.ended);
            self.log.lock().unwrap().push(line);
        }
    }

    #[tokio::test]
    async fn frames_hints_and_end_pass_through_and_the_concern_sees_them() {
        let log = std::sync::Arc::default();
        let body = Layered::new(
            Body::full("hello"),
            Count {
                log: std::sync::Arc::clone(&log),
                ..Count::default()
            },
        );
        assert_eq!(body.size_hint().exact(), Some(5));
        let out = body.collect().await.unwrap().to_bytes();
        assert_eq!(&out[..], b"hello");
        assert_eq!(*log.lock().unwrap(), ["5 true true"]);
        // Dropped unread: the concern hears it was not at the end.
        let log2 = std::sync::Arc::default();
        drop(Layered::new(
            Body::full("x"),
            Count {
                log: std::sync::Arc::clone(&log2),
                ..Count::default()
            },
        ));
        assert_eq!(*log2.lock().unwrap(), ["0 false false"]);
    }
}
