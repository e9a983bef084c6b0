//! Keeping up to N bytes of a body so it can be sent again (retries, mirroring, transforms).
//!
//! [`Body::into_replay`] reads ahead at most `limit` bytes. A body that ends within the limit
//! becomes [`Replay::Complete`]: it can be re-created any number of times, trailers included. A
//! larger body becomes [`Replay::TooLarge`]: a body that yields what was read ahead and then the
//! rest of the stream, once, so nothing is lost and nothing is buffered beyond the limit.

use crate::body::{Body, BoxError};
use bytes::Bytes;
use http::HeaderMap;
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt;
use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

/// A body read ahead for replay.
#[derive(Debug)]
pub enum Replay {
    /// The whole body fit within the limit.
    Complete {
        /// The data frames, in order.
        data: Vec<Bytes>,
        /// Trailers, if the body had any.
        trailers: Option<HeaderMap>,
    },
    /// The body was larger than the limit; it can be sent once.
    TooLarge(Body),
}

impl Replay {
    /// A fresh copy of a complete body; `None` for one that was too large.
    pub fn body(&self) -> Option<Body> {
        match self {
            Replay::Complete { data, trailers } => Some(Body::boxed(Frames::new(
                data.iter()
                    .cloned()
                    .map(Frame::data)
                    .chain(trailers.clone().map(Frame::trailers))
                    .collect(),
                Body::Empty,
            ))),
            Replay::TooLarge(_) => None,
        }
    }

    /// The body to send once (the original stream for a too-large body). A complete body
    /// without trailers becomes one in-memory [`Body::Full`] (its frames joined when there
    /// are several), which [`Body::try_clone`] can copy for a second attempt.
    pub fn into_body(self) -> Body {
        match self {
            Replay::TooLarge(b) => b,
            Replay::Complete {
                mut data,
                trailers: None,
            } => match data.len() {
                0 => Body::Empty,
                1 => Body::full(data.swap_remove(0)),
                _ => Body::full(data.concat()),
            },
            complete => complete.body().unwrap_or_default(),
        }
    }
}

impl Body {
    /// Reads ahead up to `limit` bytes so the body can be replayed; see [`Replay`].
    pub async fn into_replay(mut self, limit: usize) -> Result<Replay, BoxError> {
        let mut frames: VecDeque<Frame<Bytes>> = VecDeque::new();
        let mut size = 0usize;
        loop {
            match self.frame().await {
                None => break,
                Some(Err(e)) => return Err(e),
                Some(Ok(frame)) => {
                    if let Some(d) = frame.data_ref() {
                        size += d.len();
                    }
                    frames.push_back(frame);
                    if size > limit {
                        return Ok(Replay::TooLarge(Body::boxed(Frames::new(frames, self))));
                    }
                }
            }
        }
        let mut data = Vec::new();
        let mut trailers = None;
        for f in frames {
            match f.into_data() {
                Ok(d) => data.push(d),
                Err(f) => trailers = f.into_trailers().ok(),
            }
        }
        Ok(Replay::Complete { data, trailers })
    }
}

/// Buffered frames first, then the rest of a body.
struct Frames {
    head: VecDeque<Frame<Bytes>>,
    tail: Body,
}

impl Frames {
    fn new(head: VecDeque<Frame<Bytes>>, tail: Body) -> Self {
        Self { head, tail }
    }
}

impl http_body::Body for Frames {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(f) = self.head.pop_front() {
            return Poll::Ready(Some(Ok(f)));
        }
        Pin::new(&mut self.tail).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.head.is_empty() && self.tail.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let buffered: u64 = self
            .head
            .iter()
            .filter_map(|f| f.data_ref())
            .map(|d| d.len() as u64)
            .sum();
        let tail = self.tail.size_hint();
        let mut hint = SizeHint::new();
        hint.set_lower(tail.lower() + buffered);
        if let Some(u) = tail.upper() {
            hint.set_upper(u + buffered);
        }
        hint
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn chunks(parts: &[&'static str], trailers: Option<HeaderMap>) -> Body {
        let frames: VecDeque<Frame<Bytes>> = parts
            .iter()
            .map(|p| Frame::data(Bytes::from_static(p.as_bytes())))
            .chain(trailers.map(Frame::trailers))
            .collect();
        Body::boxed(Frames::new(frames, Body::Empty))
    }

    async fn collect(b: Body) -> (Bytes, Option<HeaderMap>) {
        let c = b.collect().await.unwrap();
        let t = c.trailers().cloned();
        (c.to_bytes(), t)
    }

    #[tokio::test]
    async fn small_bodies_replay_with_trailers() {
        let mut t = HeaderMap::new();
        t.insert("grpc-status", "0".parse().unwrap());
        let r = chunks(&["ab", "cd"], Some(t))
            .into_replay(10)
            .await
            .unwrap();
        for _ in 0..3 {
            let (data, trailers) = collect(r.body().unwrap()).await;
            assert_eq!(&data[..], b"abcd");
            assert_eq!(trailers.unwrap()["grpc-status"], "0");
        }
    }

    #[tokio::test]
    async fn large_bodies_pass_once_and_whole() {
        let r = chunks(&["abc", "def", "ghi"], None)
            .into_replay(4)
            .await
            .unwrap();
        assert!(r.body().is_none());
        let (data, _) = collect(r.into_body()).await;
        assert_eq!(&data[..], b"abcdefghi");
    }
}
