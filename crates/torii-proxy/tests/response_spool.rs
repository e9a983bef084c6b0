//! Response read-ahead (`server.response_buffering`): the gateway reads an upstream's response
//! as fast as the upstream sends it, into memory and then a temporary file, so a client that
//! reads slowly (or not at all) does not hold the upstream connection.
#![allow(clippy::unwrap_used)]

mod support;

use bytes::Bytes;
use http::StatusCode;
use http_body_util::BodyExt;
use std::net::SocketAddr;
use std::time::Duration;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const BIG: u64 = 32 * 1024 * 1024;

/// A body of `total` bytes where byte `i` is `i % 251`, in 64 KiB frames, then `trailers`.
struct Pattern {
    at: u64,
    total: u64,
    trailers: Option<http::HeaderMap>,
    /// Announce the length (`Content-Length`) or not (chunked / no length).
    sized: bool,
    /// Told when the last byte has been handed to the server.
    done: Option<tokio::sync::oneshot::Sender<()>>,
}

fn pattern_byte(i: u64) -> u8 {
    (i % 251) as u8
}

/// The pattern's first `BIG` bytes, made once.
fn pattern() -> &'static Bytes {
    static P: std::sync::OnceLock<Bytes> = std::sync::OnceLock::new();
    P.get_or_init(|| (0..BIG).map(pattern_byte).collect::<Vec<u8>>().into())
}

impl Pattern {
    fn new(total: u64) -> Self {
        Self {
            at: 0,
            total,
            trailers: None,
            sized: true,
            done: None,
        }
    }
}

impl http_body::Body for Pattern {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        if self.at == self.total {
            if let Some(done) = self.done.take() {
                let _ = done.send(());
            }
            return std::task::Poll::Ready(
                self.trailers
                    .take()
                    .map(|t| Ok(http_body::Frame::trailers(t))),
            );
        }
        let n = (self.total - self.at).min(64 * 1024);
        let chunk = pattern().slice(self.at as usize..(self.at + n) as usize);
        self.at += n;
        std::task::Poll::Ready(Some(Ok(http_body::Frame::data(chunk))))
    }
    fn size_hint(&self) -> http_body::SizeHint {
        if self.sized {
            http_body::SizeHint::with_exact(self.total - self.at)
        } else {
            http_body::SizeHint::default()
        }
    }
}

fn check_pattern(b: &[u8], total: u64) {
    assert_eq!(b.len() as u64, total);
    if let Some(i) = (0..b.len()).find(|&i| b[i] != pattern_byte(i as u64)) {
        panic!("byte {i} differs");
    }
}

fn one_upstream(addr: SocketAddr, http2: bool, pool: &str, server: &str) -> String {
    config(&format!(
        "upstreams:\n  - name: up\n    targets: [{{url: 'http://{addr}'}}]\n    protocol: {}\n    pool: {{{pool}}}\nroutes:\n  - name: all\n    match: {{path_prefix: /}}\n    upstream: up\n",
        if http2 { "http2" } else { "http1" }
    ))
    .replace("server:\n  watch_config: false\n", &format!("server:\n  watch_config: false\n{server}"))
}

/// A backend serving `BIG` patterned bytes on `/big` and "ok" elsewhere.
async fn big_upstream(http2: bool) -> FakeUpstream {
    upstream(
        http2,
        |req: http::Request<hyper::body::Incoming>| async move {
            if req.uri().path().starts_with("/big") {
                http::Response::new(Pattern::new(BIG).boxed())
            } else {
                http::Response::new(full("ok"))
            }
        },
    )
    .await
}

/// A client with a 4 KiB receive buffer that sends a GET and never reads the answer.
async fn non_reader(a: SocketAddr, path: &str) -> TcpStream {
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let mut s = sock.connect(a).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    s
}

/// Normal GETs during `for_`: how many got 200, of how many.
async fn normal_traffic(a: SocketAddr, for_: Duration) -> (usize, usize) {
    let client = h1_client();
    let end = tokio::time::Instant::now() + for_;
    let (mut ok, mut all) = (0, 0);
    while tokio::time::Instant::now() < end {
        let (s, _, b) = get(&client, format!("http://{a}/normal")).await;
        all += 1;
        if s == StatusCode::OK {
            ok += 1;
        } else {
            eprintln!("{s}: {}", String::from_utf8_lossy(&b));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (ok, all)
}

/// The value of an unlabelled metric, 0 when it is not there.
fn metric(gw: &torii_proxy::Gateway, name: &str) -> f64 {
    let text = gw.shared().metrics.render();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// Waits (bounded) until `f` holds, checking every 20 ms.
async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let end = tokio::time::Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(tokio::time::Instant::now() < end, "never: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The repro, at the default settings (the transfer-rate rule cuts non-readers only
/// after its 10 s window): a pool of 4 with a 1 s queue timeout, 4 clients that never read a
/// 32 MiB answer. Without read-ahead every other request waits out the queue and gets 503.
#[tokio::test]
async fn non_readers_of_big_answers_do_not_hold_upstream_connections() {
    let up = big_upstream(false).await;
    let gw = gateway(&one_upstream(
        up.addr,
        false,
        "max_connections_per_target: 4, queue_timeout: 1s",
        "",
    ))
    .await;
    let a = addr(&gw).await;
    let mut held = Vec::new();
    for i in 0..4 {
        held.push(non_reader(a, &format!("/big{i}")).await);
    }
    // The four answers are read ahead to disk (all but what memory and sockets hold).
    eventually("four responses on disk", || {
        metric(&gw, "torii_responses_spooled_to_disk_total") == 4.0
    })
    .await;
    let (ok, all) = normal_traffic(a, Duration::from_secs(3)).await;
    assert!(all >= 20, "{all}");
    assert_eq!(ok, all, "normal requests failed beside non-readers");
    assert!(metric(&gw, "torii_response_spool_disk_bytes") > 0.0);
    // Gone clients give their disk space back.
    drop(held);
    eventually("disk space given back", || {
        metric(&gw, "torii_response_spool_disk_bytes") == 0.0
    })
    .await;
}

/// A client that pauses and then reads gets every byte in order, through memory and disk,
/// with both protocols on both sides.
#[tokio::test]
async fn a_spooled_answer_arrives_whole_and_in_order() {
    for (up_h2, client_h2) in [(false, false), (true, true), (false, true), (true, false)] {
        let up = big_upstream(up_h2).await;
        let gw = gateway(&one_upstream(
            up.addr,
            up_h2,
            "max_connections_per_target: 1, queue_timeout: 5s",
            "  response_buffering: {memory: 64KiB}\n",
        ))
        .await;
        let a = addr(&gw).await;
        let client = if client_h2 { h2_client() } else { h1_client() };
        let resp = client
            .request(
                http::Request::get(format!("http://{a}/big"))
                    .body(full(""))
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        // The upstream is done long before the client reads: its one connection is free.
        eventually("upstream finished", || {
            metric(&gw, "torii_response_spool_disk_bytes") >= (BIG / 2) as f64
        })
        .await;
        let (s, _, b) = get(&client, format!("http://{a}/normal")).await;
        assert_eq!((s, &b[..]), (StatusCode::OK, &b"ok"[..]));
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        check_pattern(&body, BIG);
        eventually("disk space given back", || {
            metric(&gw, "torii_response_spool_disk_bytes") == 0.0
        })
        .await;
    }
}

/// Trailers of an HTTP/2 upstream (gRPC-style, but not gRPC) come after the last spooled byte.
#[tokio::test]
async fn trailers_follow_the_spooled_body() {
    let up = upstream(true, |_req| async {
        let mut t = http::HeaderMap::new();
        t.insert("x-checksum", http::HeaderValue::from_static("42"));
        let mut body = Pattern::new(4 * 1024 * 1024);
        body.trailers = Some(t);
        body.sized = false;
        http::Response::new(body.boxed())
    })
    .await;
    let gw = gateway(&one_upstream(
        up.addr,
        true,
        "max_connections_per_target: 1",
        "  response_buffering: {memory: 64KiB}\n",
    ))
    .await;
    let a = addr(&gw).await;
    let resp = h2_client()
        .request(
            http::Request::get(format!("http://{a}/t"))
                .body(full(""))
                .unwrap(),
        )
        .await
        .unwrap();
    eventually("spooled", || {
        metric(&gw, "torii_responses_spooled_to_disk_total") == 1.0
    })
    .await;
    let collected = resp.into_body().collect().await.unwrap();
    let trailers = collected.trailers().cloned().unwrap();
    assert_eq!(trailers.get("x-checksum").unwrap(), "42");
    check_pattern(&collected.to_bytes(), 4 * 1024 * 1024);
}

/// Past `max_temp_file` the gateway reads the upstream only as fast as the client: the disk
/// use of one response stays under it (and the upstream connection stays held).
#[tokio::test]
async fn the_temp_file_cap_holds_and_pushes_back() {
    let up = big_upstream(false).await;
    let gw = gateway(&one_upstream(
        up.addr,
        false,
        "max_connections_per_target: 1, queue_timeout: 300ms",
        "  response_buffering: {memory: 64KiB, max_temp_file: 1MiB}\n",
    ))
    .await;
    let a = addr(&gw).await;
    let held = non_reader(a, "/big").await;
    eventually("file full", || {
        metric(&gw, "torii_response_spool_disk_bytes") >= (1024 * 1024 - 64 * 1024) as f64
    })
    .await;
    // The one upstream connection is still in use: the next request waits and gets 503.
    let (s, _, _) = get(&h1_client(), format!("http://{a}/normal")).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    assert!(metric(&gw, "torii_response_spool_disk_bytes") <= (1024 * 1024) as f64);
    // Now the client reads: the 1 MiB file is filled, drained and written over about 30
    // times while the client reads, and every byte arrives in order.
    let mut held = held;
    let body = read_sized_response(&mut held).await;
    check_pattern(&body, BIG);
    eventually("disk space given back", || {
        metric(&gw, "torii_response_spool_disk_bytes") == 0.0
    })
    .await;
    let (s, _, _) = get(&h1_client(), format!("http://{a}/normal")).await;
    assert_eq!(s, StatusCode::OK);
}

/// Reads one `Content-Length` response from `s`; returns its body.
async fn read_sized_response(s: &mut TcpStream) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 1 << 20];
    let (head_end, len) = loop {
        let n = s.read(&mut chunk).await.unwrap();
        assert!(n > 0, "closed before the head");
        buf.extend_from_slice(&chunk[..n]);
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..p]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .unwrap()
                .trim()
                .parse()
                .unwrap();
            break (p + 4, len);
        }
    };
    while buf.len() < head_end + len {
        let n = tokio::time::timeout(Duration::from_secs(20), s.read(&mut chunk))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "closed after {} bytes", buf.len() - head_end);
        buf.extend_from_slice(&chunk[..n]);
    }
    buf.split_off(head_end)
}

/// `max_temp_total` bounds the disk use of all responses together.
#[tokio::test]
async fn the_total_disk_budget_holds() {
    let up = big_upstream(false).await;
    let gw = gateway(&one_upstream(
        up.addr,
        false,
        "max_connections_per_target: 8",
        "  response_buffering: {memory: 64KiB, max_temp_total: 2MiB}\n",
    ))
    .await;
    let a = addr(&gw).await;
    let mut held = Vec::new();
    for i in 0..4 {
        held.push(non_reader(a, &format!("/big{i}")).await);
    }
    eventually("budget used", || {
        metric(&gw, "torii_response_spool_disk_bytes") >= (2 * 1024 * 1024 - 64 * 1024) as f64
    })
    .await;
    // Give the read-ahead tasks time to overshoot, if they could.
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(metric(&gw, "torii_response_spool_disk_bytes") <= (2 * 1024 * 1024) as f64);
    }
    drop(held);
    eventually("disk space given back", || {
        metric(&gw, "torii_response_spool_disk_bytes") == 0.0
    })
    .await;
}

/// Streams whose upstream side is held by nature are not read ahead: server-sent events,
/// `multipart/x-mixed-replace` and answers marked `X-Accel-Buffering: no`. Read ahead, the
/// upstream finishes sending a 32 MiB answer to a client that never reads; not read ahead, it
/// cannot (the socket buffers hold far less).
#[tokio::test]
async fn event_streams_and_opted_out_answers_are_not_read_ahead() {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<tokio::sync::oneshot::Receiver<()>>();
    let up = upstream(false, move |req: http::Request<hyper::body::Incoming>| {
        let tx = tx.clone();
        async move {
            let (done, finished) = tokio::sync::oneshot::channel();
            let _ = tx.send(finished);
            let mut b = Pattern::new(BIG);
            b.sized = false;
            b.done = Some(done);
            let mut resp = http::Response::new(b.boxed());
            let h = resp.headers_mut();
            match req.uri().path() {
                "/sse" => {
                    h.insert(
                        "content-type",
                        http::HeaderValue::from_static("text/event-stream"),
                    );
                }
                "/mixed" => {
                    h.insert(
                        "content-type",
                        http::HeaderValue::from_static("multipart/x-mixed-replace; boundary=x"),
                    );
                }
                "/optout" => {
                    h.insert("x-accel-buffering", http::HeaderValue::from_static("no"));
                }
                _ => {}
            }
            resp
        }
    })
    .await;
    let gw = gateway(&one_upstream(
        up.addr,
        false,
        "max_connections_per_target: 4",
        "  response_buffering: {memory: 64KiB}\n",
    ))
    .await;
    let a = addr(&gw).await;
    for (path, read_ahead) in [
        ("/plain", true),
        ("/sse", false),
        ("/mixed", false),
        ("/optout", false),
    ] {
        let mut s = non_reader(a, path).await;
        let finished = rx.recv().await.unwrap();
        let wait = if read_ahead { 20 } else { 1 };
        let done = tokio::time::timeout(Duration::from_secs(wait), finished)
            .await
            .is_ok();
        assert_eq!(done, read_ahead, "{path}: upstream finished: {done}");
        // The answer is whole either way.
        let mut buf = vec![0u8; 1 << 20];
        let mut got = 0u64;
        while got <= BIG {
            let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
                .await
                .unwrap()
                .unwrap();
            assert!(n > 0, "closed after {got} bytes");
            got += n as u64;
        }
    }
    assert_eq!(metric(&gw, "torii_responses_spooled_to_disk_total"), 1.0);
}

/// An upstream that breaks its answer after the client's pause: the client still gets what
/// came, then a cut connection, never a complete-looking answer.
#[tokio::test]
async fn an_upstream_break_reaches_the_client_after_the_spooled_bytes() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {BIG}\r\n\r\n");
                let _ = s.write_all(head.as_bytes()).await;
                let _ = s.write_all(&vec![b'y'; 8 * 1024 * 1024]).await;
                // Closed early: 24 MiB short.
            });
        }
    });
    let gw = gateway(&one_upstream(
        up,
        false,
        "max_connections_per_target: 1",
        "  response_buffering: {memory: 64KiB}\n",
    ))
    .await;
    let a = addr(&gw).await;
    let mut s = non_reader(a, "/short").await;
    eventually("spooled", || {
        metric(&gw, "torii_responses_spooled_to_disk_total") == 1.0
    })
    .await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    let head_end = out.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    // What came (all of it but what hyper's write buffer held when it aborted), then the cut.
    let got = out.len() - head_end;
    assert!(got > 7 * 1024 * 1024 && got <= 8 * 1024 * 1024, "{got}");
}
