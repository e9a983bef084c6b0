//! The body of an upstream HTTP/1.1 response, read straight from the pooled connection by
//! whoever polls it. The connection goes back to the pool the moment the body has ended
//! cleanly; if the body breaks, is abandoned, or leaves extra bytes, the connection is closed.

use super::conn::{Connection, Home, READ_SIZE};
use crate::codec::chunked::{self, Decoder, Event};
use crate::codec::decode::Framing;
use crate::codec::encode::{WriteError, Writer};
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use torii_core::BoxError;

/// The upstream closed the connection or broke the framing before the body ended.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// Connection closed early.
    #[error("upstream closed the connection {0} bytes before the end of the body")]
    Truncated(u64),
    /// Connection closed inside a chunked body.
    #[error("upstream closed the connection inside a chunked body")]
    TruncatedChunked,
    /// Bad chunked framing.
    #[error(transparent)]
    Chunked(#[from] chunked::Malformed),
    /// Read error.
    #[error("reading the upstream body: {0}")]
    Io(#[from] std::io::Error),
}

enum State {
    Length(u64),
    Chunked(Decoder),
    Close,
    Done,
}

/// A response body streamed from an upstream HTTP/1.1 connection.
pub struct H1Body {
    conn: Option<Box<Connection>>,
    /// The rest of the request, when the upstream answered before it was completely sent.
    writer: Option<Box<Writer>>,
    pool: Arc<dyn Home>,
    state: State,
    keep_alive: bool,
}

impl H1Body {
    pub(super) fn new(
        conn: Box<Connection>,
        writer: Option<Box<Writer>>,
        pool: Arc<dyn Home>,
        framing: Framing,
        keep_alive: bool,
    ) -> Self {
        let mut this = Self {
            conn: Some(conn),
            writer,
            pool,
            state: match framing {
                Framing::Length(n) => State::Length(n),
                Framing::Chunked => State::Chunked(Decoder::default()),
                Framing::Close => State::Close,
            },
            keep_alive,
        };
        if let State::Length(0) = this.state {
            this.finish();
        }
        this
    }

    /// The body ended: the connection is reused when it is clean, closed otherwise.
    fn finish(&mut self) {
        self.state = State::Done;
        let Some(mut conn) = self.conn.take() else {
            return;
        };
        match self.writer.take() {
            None => {}
            Some(w) if w.done() => conn.wbuf = w.into_buffer(),
            // The request was not completely sent: the connection is closed.
            Some(_) => return,
        }
        if self.keep_alive && conn.rbuf.is_empty() {
            self.pool.checkin(conn);
        }
    }

    /// Sends more of an unfinished request. A failed write stops the upload (the response is
    /// still read; the connection is not reused); a failed client body fails the response.
    fn poll_upload(&mut self, cx: &mut Context<'_>) -> Result<(), BoxError> {
        let (Some(w), Some(conn)) = (self.writer.as_mut(), self.conn.as_mut()) else {
            return Ok(());
        };
        if w.done() {
            return Ok(());
        }
        match w.poll_write(cx, &mut conn.io) {
            Poll::Ready(Ok(())) | Poll::Pending => Ok(()),
            Poll::Ready(Err(WriteError::Io(_))) => {
                self.keep_alive = false;
                self.writer = None;
                Ok(())
            }
            Poll::Ready(Err(WriteError::Body(e))) => Err(e),
            Poll::Ready(Err(WriteError::Length)) => {
                Err("request body did not match its declared length".into())
            }
        }
    }

    fn fail(&mut self, e: BodyError) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.state = State::Done;
        self.conn = None;
        Poll::Ready(Some(Err(e.into())))
    }
}

impl http_body::Body for H1Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if let Err(e) = this.poll_upload(cx) {
            this.state = State::Done;
            this.conn = None;
            return Poll::Ready(Some(Err(e)));
        }
        loop {
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match &mut this.state {
                State::Done => return Poll::Ready(None),
                State::Length(left) => {
                    if !conn.rbuf.is_empty() {
                        let n = (*left).min(conn.rbuf.len() as u64) as usize;
                        *left -= n as u64;
                        let data = conn.rbuf.split_to(n).freeze();
                        if *left == 0 {
                            this.finish();
                        }
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                    let left = *left;
                    match ready!(conn.poll_fill(cx, READ_SIZE)) {
                        Ok(0) => return this.fail(BodyError::Truncated(left)),
                        Ok(_) => {}
                        Err(e) => return this.fail(e.into()),
                    }
                }
                State::Close => {
                    if !conn.rbuf.is_empty() {
                        let data = conn.rbuf.split().freeze();
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                    match ready!(conn.poll_fill(cx, READ_SIZE)) {
                        Ok(0) => {
                            this.keep_alive = false;
                            this.finish();
                            return Poll::Ready(None);
                        }
                        Ok(_) => {}
                        Err(e) => return this.fail(e.into()),
                    }
                }
                State::Chunked(decoder) => match decoder.decode(&mut conn.rbuf) {
                    Ok(Some(Event::Data(data))) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                    Ok(Some(Event::Trailers(t))) => {
                        this.finish();
                        return Poll::Ready(Some(Ok(Frame::trailers(t))));
                    }
                    Ok(Some(Event::End)) => {
                        this.finish();
                        return Poll::Ready(None);
                    }
                    Err(e) => return this.fail(e.into()),
                    Ok(None) => match ready!(conn.poll_fill(cx, READ_SIZE)) {
                        Ok(0) => return this.fail(BodyError::TruncatedChunked),
                        Ok(_) => {}
                        Err(e) => return this.fail(e.into()),
                    },
                },
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.state, State::Done | State::Length(0))
    }

    fn size_hint(&self) -> SizeHint {
        match self.state {
            State::Length(n) => SizeHint::with_exact(n),
            State::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}
