//! Writing a request to an upstream: the head into one reused buffer, then the body frames as
//! they come (length-delimited, or chunked when the length is unknown), with vectored writes so
//! body bytes are never copied.

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, HOST, TRANSFER_ENCODING};
use http::request::Parts;
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use http_body::Body as _;
use std::collections::VecDeque;
use std::io::IoSlice;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use tokio::io::AsyncWrite;
use torii_core::{Body, BoxError};

/// How the request body is framed on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Length(u64),
    Chunked,
}

/// Why writing the request stopped.
#[derive(Debug)]
pub enum WriteError {
    /// The client's body failed (too large, stalled, broken): the client's fault.
    Body(BoxError),
    /// The body produced more or fewer bytes than its declared length.
    Length,
    /// The connection failed.
    Io(std::io::Error),
}

/// A request being written.
pub struct Writer {
    head: Vec<u8>,
    head_sent: usize,
    queue: VecDeque<Bytes>,
    body: Option<Body>,
    encoding: Encoding,
    flushed: bool,
    unflushed: bool,
    bodiless: bool,
    /// Bytes written so far (head and body framing included).
    sent: u64,
}

/// Fields a caller sends after the request's own (the gateway's forwarding fields), each
/// handed over as the parts of its value: the HTTP/1.1 encoder writes the parts one after the
/// other, so values made of pieces are never joined into new allocations.
pub trait ExtraFields {
    /// Calls `field` with each field, in order: its name and the parts of its value. Each
    /// part must be a valid field value and their concatenation too.
    fn each(&self, field: &mut dyn FnMut(&HeaderName, &[&[u8]]));

    /// Inserts the fields into `headers`, each value joined (for HTTP/2, whose encoder needs
    /// a header map).
    fn insert_into(&self, headers: &mut HeaderMap) {
        self.each(&mut |name, parts| {
            let value = match parts {
                [one] => HeaderValue::from_bytes(one),
                _ => HeaderValue::from_maybe_shared(Bytes::from(parts.concat())),
            };
            if let Ok(v) = value {
                headers.insert(name.clone(), v);
            }
        });
    }
}

const CRLF: Bytes = Bytes::from_static(b"\r\n");
const LAST_CHUNK: Bytes = Bytes::from_static(b"0\r\n\r\n");

impl Writer {
    /// Encodes the head of `parts` into `head` (a reused buffer, cleared first), then the
    /// caller's `extra` fields; `host` is sent when `replace_host` is set or the request has
    /// no Host.
    pub fn new(
        mut head: Vec<u8>,
        parts: &Parts,
        body: Body,
        host: &HeaderValue,
        replace_host: bool,
        extra: Option<&(dyn ExtraFields + Sync)>,
    ) -> Self {
        head.clear();
        let hint = body.size_hint();
        let end = body.is_end_stream();
        let encoding = match hint.exact() {
            _ if end => Encoding::Length(0),
            Some(n) => Encoding::Length(n),
            None => Encoding::Chunked,
        };
        head.extend_from_slice(parts.method.as_str().as_bytes());
        head.push(b' ');
        let target = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
        head.extend_from_slice(if target.is_empty() {
            b"/"
        } else {
            target.as_bytes()
        });
        head.extend_from_slice(b" HTTP/1.1\r\n");
        if replace_host || !parts.headers.contains_key(HOST) {
            field(&mut head, b"host", host.as_bytes());
        }
        for (name, value) in &parts.headers {
            // Framing is the writer's: the client's framing fields were for the client's hop.
            if name == CONTENT_LENGTH || name == TRANSFER_ENCODING || (replace_host && name == HOST)
            {
                continue;
            }
            field(&mut head, name.as_str().as_bytes(), value.as_bytes());
        }
        if let Some(extra) = extra {
            extra.each(&mut |name, parts| {
                head.extend_from_slice(name.as_str().as_bytes());
                head.extend_from_slice(b": ");
                for p in parts {
                    head.extend_from_slice(p);
                }
                head.extend_from_slice(b"\r\n");
            });
        }
        match encoding {
            Encoding::Chunked => field(&mut head, b"transfer-encoding", b"chunked"),
            Encoding::Length(0) if !sends_zero_length(&parts.method, &parts.headers) => {}
            Encoding::Length(n) => {
                let mut b = itoa::Buffer::new();
                field(&mut head, b"content-length", b.format(n).as_bytes());
            }
        }
        head.extend_from_slice(b"\r\n");
        Self {
            head,
            head_sent: 0,
            queue: VecDeque::new(),
            body: (!end).then_some(body),
            encoding,
            flushed: false,
            unflushed: false,
            bodiless: end,
            sent: 0,
        }
    }

    /// The same request again from its first byte, for a retry on another connection;
    /// `None` when it had a body (already consumed).
    pub fn rewind(mut self) -> Option<Self> {
        if !self.bodiless {
            return None;
        }
        self.head_sent = 0;
        self.flushed = false;
        Some(self)
    }

    /// Whether the request has no body (its head is all there is to write).
    pub fn bodiless(&self) -> bool {
        self.bodiless
    }

    /// Gives the head buffer back for the next request.
    pub fn into_buffer(self) -> Vec<u8> {
        self.head
    }

    /// Whether the whole request has been written and flushed.
    pub fn done(&self) -> bool {
        self.flushed
    }

    /// Writes as much as possible; `Ready(Ok)` once the whole request is out.
    pub fn poll_write<W: AsyncWrite + Unpin + ?Sized>(
        &mut self,
        cx: &mut Context<'_>,
        io: &mut W,
    ) -> Poll<Result<(), WriteError>> {
        loop {
            if self.head_sent < self.head.len() || !self.queue.is_empty() {
                let mut slices = [IoSlice::new(&[]); 8];
                let mut n = 0;
                if self.head_sent < self.head.len() {
                    slices[0] = IoSlice::new(&self.head[self.head_sent..]);
                    n = 1;
                }
                for b in self.queue.iter().take(slices.len() - n) {
                    slices[n] = IoSlice::new(b);
                    n += 1;
                }
                let written = ready!(Pin::new(&mut *io).poll_write_vectored(cx, &slices[..n]))
                    .map_err(WriteError::Io)?;
                if written == 0 {
                    return Poll::Ready(Err(WriteError::Io(std::io::ErrorKind::WriteZero.into())));
                }
                self.advance(written);
                self.unflushed = true;
                continue;
            }
            let Some(body) = self.body.as_mut() else {
                if !self.flushed {
                    ready!(Pin::new(&mut *io).poll_flush(cx)).map_err(WriteError::Io)?;
                    self.flushed = true;
                }
                return Poll::Ready(Ok(()));
            };
            let frame = match Pin::new(body).poll_frame(cx) {
                Poll::Ready(f) => f,
                Poll::Pending => {
                    // A TLS stream may hold written bytes in its own buffer: push them out
                    // while the body has nothing new, or the upstream may wait for them.
                    if self.unflushed
                        && let Poll::Ready(r) = Pin::new(&mut *io).poll_flush(cx)
                    {
                        r.map_err(WriteError::Io)?;
                        self.unflushed = false;
                    }
                    return Poll::Pending;
                }
            };
            match frame {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) if data.is_empty() => {}
                    Ok(data) => self.push_data(data)?,
                    // Trailers: sent in the last chunk of a chunked body, dropped otherwise
                    // (a length-delimited message has nowhere to carry them).
                    Err(frame) => {
                        if let (Encoding::Chunked, Ok(trailers)) =
                            (self.encoding, frame.into_trailers())
                        {
                            self.finish_chunked(Some(&trailers));
                        }
                    }
                },
                Some(Err(e)) => return Poll::Ready(Err(WriteError::Body(e))),
                None => match self.encoding {
                    Encoding::Length(0) => self.body = None,
                    Encoding::Length(_) => return Poll::Ready(Err(WriteError::Length)),
                    Encoding::Chunked => self.finish_chunked(None),
                },
            }
        }
    }

    fn push_data(&mut self, data: Bytes) -> Result<(), WriteError> {
        match &mut self.encoding {
            Encoding::Length(left) => {
                let n = data.len() as u64;
                if n > *left {
                    return Err(WriteError::Length);
                }
                *left -= n;
                self.queue.push_back(data);
                if *left == 0 {
                    self.body = None;
                }
            }
            Encoding::Chunked => {
                let mut size = [0u8; 18];
                let len = hex_line(data.len(), &mut size);
                self.queue.push_back(Bytes::copy_from_slice(&size[..len]));
                self.queue.push_back(data);
                self.queue.push_back(CRLF);
            }
        }
        Ok(())
    }

    fn finish_chunked(&mut self, trailers: Option<&http::HeaderMap>) {
        self.body = None;
        match trailers.filter(|t| !t.is_empty()) {
            None => self.queue.push_back(LAST_CHUNK),
            Some(t) => {
                let mut out = b"0\r\n".to_vec();
                for (name, value) in t {
                    if !super::chunked::forbidden_trailer(name) {
                        field(&mut out, name.as_str().as_bytes(), value.as_bytes());
                    }
                }
                out.extend_from_slice(b"\r\n");
                self.queue.push_back(Bytes::from(out));
            }
        }
    }

    /// Bytes written so far: a change between two polls is progress of the upload.
    pub fn sent(&self) -> u64 {
        self.sent
    }

    /// Whether everything produced so far is written and the writer waits for more of the
    /// client's body (a stall here is the client's, policed by the body's idle timeout).
    pub fn awaiting_body(&self) -> bool {
        self.body.is_some() && self.head_sent == self.head.len() && self.queue.is_empty()
    }

    fn advance(&mut self, mut n: usize) {
        self.sent += n as u64;
        let head_left = self.head.len() - self.head_sent;
        let from_head = n.min(head_left);
        self.head_sent += from_head;
        n -= from_head;
        while n > 0 {
            let Some(front) = self.queue.front_mut() else {
                return;
            };
            if n >= front.len() {
                n -= front.len();
                self.queue.pop_front();
            } else {
                let _ = front.split_to(n);
                n = 0;
            }
        }
    }
}

fn field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// `Content-Length: 0` is sent for an empty body when the method defines a body (RFC 9110 8.6)
/// or the client sent one.
fn sends_zero_length(method: &Method, headers: &http::HeaderMap) -> bool {
    matches!(*method, Method::POST | Method::PUT | Method::PATCH)
        || headers.contains_key(CONTENT_LENGTH)
}

/// `{size:x}\r\n` into `out`; returns its length.
fn hex_line(mut n: usize, out: &mut [u8; 18]) -> usize {
    let mut digits = [0u8; 16];
    let mut i = 0;
    loop {
        digits[i] = b"0123456789abcdef"[n & 0xf];
        i += 1;
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    for (k, d) in digits[..i].iter().rev().enumerate() {
        out[k] = *d;
    }
    out[i] = b'\r';
    out[i + 1] = b'\n';
    i + 2
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::StreamBody;

    async fn encode(req: http::Request<Body>) -> Result<Vec<u8>, WriteError> {
        let (parts, body) = req.into_parts();
        let mut w = Writer::new(
            Vec::new(),
            &parts,
            body,
            &HeaderValue::from_static("up:80"),
            false,
            None,
        );
        let mut out: Vec<u8> = Vec::new();
        std::future::poll_fn(|cx| w.poll_write(cx, &mut out)).await?;
        Ok(out)
    }

    fn text(b: Vec<u8>) -> String {
        String::from_utf8(b).expect("utf-8")
    }

    #[tokio::test]
    async fn bodiless_get_is_one_head() {
        let req = http::Request::get("/a?b=1")
            .header("x-one", "1")
            .header("transfer-encoding", "chunked")
            .body(Body::Empty)
            .expect("request");
        let out = text(encode(req).await.expect("encodes"));
        assert_eq!(
            out,
            "GET /a?b=1 HTTP/1.1\r\nhost: up:80\r\nx-one: 1\r\n\r\n"
        );
    }

    #[tokio::test]
    async fn known_length_and_empty_post() {
        let req = http::Request::post("/p")
            .header("host", "h")
            .header("content-length", "999")
            .body(Body::full("hello"))
            .expect("request");
        let out = text(encode(req).await.expect("encodes"));
        assert_eq!(
            out,
            "POST /p HTTP/1.1\r\nhost: h\r\ncontent-length: 5\r\n\r\nhello"
        );
        let req = http::Request::post("/p")
            .header("host", "h")
            .body(Body::Empty)
            .expect("request");
        let out = text(encode(req).await.expect("encodes"));
        assert_eq!(
            out,
            "POST /p HTTP/1.1\r\nhost: h\r\ncontent-length: 0\r\n\r\n"
        );
    }

    #[tokio::test]
    async fn unknown_length_is_chunked_with_trailers() {
        let frames: Vec<Result<http_body::Frame<Bytes>, BoxError>> = vec![
            Ok(http_body::Frame::data(Bytes::from_static(b"hello"))),
            Ok(http_body::Frame::data(Bytes::from(vec![b'x'; 300]))),
            Ok(http_body::Frame::trailers({
                let mut t = http::HeaderMap::new();
                t.insert("x-sum", HeaderValue::from_static("9"));
                t
            })),
        ];
        let body = Body::boxed(StreamBody::new(futures_util::stream::iter(frames)));
        let req = http::Request::put("/u")
            .header("host", "h")
            .body(body)
            .expect("request");
        let out = text(encode(req).await.expect("encodes"));
        let want = format!(
            "PUT /u HTTP/1.1\r\nhost: h\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n12c\r\n{}\r\n0\r\nx-sum: 9\r\n\r\n",
            "x".repeat(300)
        );
        assert_eq!(out, want);
    }

    #[test]
    fn hex_lines() {
        let mut b = [0u8; 18];
        for (n, s) in [
            (0usize, "0\r\n"),
            (10, "a\r\n"),
            (4096, "1000\r\n"),
            (usize::MAX, "ffffffffffffffff\r\n"),
        ] {
            let len = hex_line(n, &mut b);
            assert_eq!(&b[..len], s.as_bytes());
        }
    }
}
