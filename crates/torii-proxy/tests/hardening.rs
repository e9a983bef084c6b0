//! Malformed and hostile input: each case gets the right 4xx (or a closed connection), never a
//! hang or a panic.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::{Duration, Instant};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn gw_with_echo(limits: &str) -> (std::sync::Arc<torii_proxy::Gateway>, FakeUpstream) {
    let up = echo_upstream(false).await;
    let cfg = config(&format!("upstreams:\n  - name: up\n    targets: [{{url: 'http://{}'}}]\nroutes:\n  - name: all\n    match: {{path_prefix: /}}\n    upstream: up\n", up.addr))
        .replace("bind: 127.0.0.1:0\nadmin", &format!("bind: 127.0.0.1:0\n{limits}admin"));
    (gateway(&cfg).await, up)
}

fn status(resp: &str) -> &str {
    resp.get(9..12).unwrap_or("")
}

#[tokio::test]
async fn request_smuggling_shapes_are_rejected() {
    let (gw, up) = gw_with_echo("").await;
    let a = addr(&gw).await;
    let cases: &[(&str, &[u8])] = &[
        (
            "duplicate content-length",
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        ),
        (
            "obfuscated transfer-encoding",
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
        ),
        (
            "transfer-encoding not last chunked",
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
        ),
        (
            "space before colon",
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length : 5\r\n\r\nhello",
        ),
        ("bad request line", b"GET /\r\n\r\n"),
        (
            "invalid header byte",
            b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n",
        ),
        (
            "negative content-length",
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
        ),
    ];
    for (name, bytes) in cases {
        let resp = raw(a, bytes).await;
        assert!(resp.is_empty() || status(&resp) == "400", "{name}: {resp}");
    }
    // Nothing smuggled reached the upstream.
    assert_eq!(
        up.stats.accepted.load(std::sync::atomic::Ordering::SeqCst),
        0
    );
    // A body that turns out malformed while it streams is the client's fault: 400, not 502.
    let resp = raw(
        a,
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
    )
    .await;
    assert_eq!(status(&resp), "400", "{resp}");
}

#[tokio::test]
async fn content_length_with_transfer_encoding_is_chunked_and_closes() {
    let (gw, _up) = gw_with_echo("").await;
    let a = addr(&gw).await;
    // RFC 9112 6.1: read as chunked (the Content-Length is ignored), and the connection is
    // closed after the response, so a second pipelined request is never processed.
    let resp = raw(a, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let ok = status(&resp) == "400"
        || (status(&resp) == "200"
            && resp.contains("\"body_len\":5")
            && !resp.contains("smuggled"));
    assert!(ok, "{resp}");
}

#[tokio::test]
async fn oversized_headers_get_431() {
    let (gw, _up) = gw_with_echo("    limits: {max_header_bytes: 8KiB, max_headers: 20}\n").await;
    let a = addr(&gw).await;
    let big = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(20_000)
    );
    let resp = raw(a, big.as_bytes()).await;
    assert_eq!(status(&resp), "431", "{resp}");
    let mut many = String::from("GET / HTTP/1.1\r\nHost: x\r\n");
    for i in 0..40 {
        many.push_str(&format!("X-H{i}: v\r\n"));
    }
    many.push_str("\r\n");
    let resp = raw(a, many.as_bytes()).await;
    assert_eq!(status(&resp), "431", "{resp}");
}

#[tokio::test]
async fn silent_and_slow_clients_are_cut_off() {
    let (gw, _up) =
        gw_with_echo("    limits: {header_read_timeout: 300ms, idle_timeout: 400ms}\n").await;
    let a = addr(&gw).await;
    // A connection that never sends a byte (this also covers HTTP/1-vs-2 detection).
    let mut s = tokio::net::TcpStream::connect(a).await.unwrap();
    let start = Instant::now();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("silent connection not closed");
    assert!(matches!(n, Ok(0) | Err(_)) || n.is_ok(), "closed");
    assert!(start.elapsed() < Duration::from_secs(3));
    // A partial HTTP/2 preface, then silence.
    let mut s = tokio::net::TcpStream::connect(a).await.unwrap();
    s.write_all(b"PRI * HTTP").await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("partial preface not cut off")
        .ok();
    // A request head that trickles and never ends.
    let mut s = tokio::net::TcpStream::connect(a).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out))
        .await
        .expect("slow head not cut off")
        .ok();
    // An idle keep-alive connection is closed after idle_timeout.
    let mut s = tokio::net::TcpStream::connect(a).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let start = Instant::now();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out))
        .await
        .expect("idle keep-alive not closed")
        .unwrap();
    assert!(String::from_utf8_lossy(&out).starts_with("HTTP/1.1 200"));
    assert!(start.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn a_partial_head_is_cut_off_when_idle_fires_first() {
    // idle_timeout is the shorter limit here: the connection goes quiet mid-head, the idle
    // limit fires, and the connection must still close (hyper alone would wait for the rest of
    // the head forever, since it only stops between requests).
    let (gw, _up) =
        gw_with_echo("    limits: {header_read_timeout: 30s, idle_timeout: 300ms}\n").await;
    let a = addr(&gw).await;
    let mut s = tokio::net::TcpStream::connect(a).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    let start = Instant::now();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out))
        .await
        .expect("a partial head outlived idle_timeout")
        .ok();
    assert!(start.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn header_read_timeout_spares_requests_in_flight() {
    // The upstream takes three header-read timeouts to answer: the request is in flight the
    // whole time, so the client's connection must not be cut; afterwards the same
    // connection still serves a request.
    let up = upstream(false, |_req| async {
        tokio::time::sleep(Duration::from_millis(900)).await;
        http::Response::new(full("slow"))
    })
    .await;
    let cfg = config(&format!("upstreams:\n  - name: up\n    targets: [{{url: 'http://{}'}}]\nroutes:\n  - name: all\n    match: {{path_prefix: /}}\n    upstream: up\n", up.addr))
        .replace("bind: 127.0.0.1:0\nadmin", "bind: 127.0.0.1:0\n    limits: {header_read_timeout: 300ms, idle_timeout: 10s}\nadmin");
    let gw = gateway(&cfg).await;
    let a = addr(&gw).await;
    let mut s = tokio::net::TcpStream::connect(a).await.unwrap();
    for _ in 0..2 {
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = vec![0u8; 4096];
        let mut got = Vec::new();
        while !got.ends_with(b"slow") {
            let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
                .await
                .expect("no response")
                .unwrap();
            assert!(
                n > 0,
                "connection closed mid-request: {}",
                String::from_utf8_lossy(&got)
            );
            got.extend_from_slice(&buf[..n]);
        }
        assert!(
            got.starts_with(b"HTTP/1.1 200"),
            "{}",
            String::from_utf8_lossy(&got)
        );
    }
    assert_eq!(
        up.stats.accepted.load(std::sync::atomic::Ordering::SeqCst),
        1
    );
}

#[tokio::test]
async fn connection_cap_holds_further_connections_back() {
    let (gw, _up) = gw_with_echo("    limits: {max_connections: 2}\n").await;
    let a = addr(&gw).await;
    let c1 = tokio::net::TcpStream::connect(a).await.unwrap();
    let c2 = tokio::net::TcpStream::connect(a).await.unwrap();
    // Two connections are held open (accepted, but no request yet); give the accept loop a
    // moment to take both, then the third is not served until one closes.
    let mut c3 = tokio::net::TcpStream::connect(a).await.unwrap();
    c3.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 16];
    let early = tokio::time::timeout(Duration::from_millis(300), c3.read(&mut buf)).await;
    assert!(
        early.is_err(),
        "third connection served despite max_connections: 2"
    );
    drop(c1);
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), c3.read_to_end(&mut out))
        .await
        .expect("third connection never served")
        .unwrap();
    assert!(String::from_utf8_lossy(&out).starts_with("HTTP/1.1 200"));
    drop(c2);
}

#[tokio::test]
async fn http2_rapid_reset_flood_does_not_take_the_gateway_down() {
    let (gw, _up) = gw_with_echo("").await;
    let a = addr(&gw).await;
    // Open many streams and cancel each at once (CVE-2023-44487 shape) through hyper's client,
    // then check the gateway still serves.
    let client = h2_client();
    for _ in 0..500 {
        let fut = client.request(
            http::Request::get(format!("http://{a}/x"))
                .body(full(""))
                .unwrap(),
        );
        drop(tokio::time::timeout(Duration::from_micros(1), fut).await);
    }
    let (s, _, _) = get(&h2_client(), format!("http://{a}/after")).await;
    assert_eq!(s, http::StatusCode::OK);
}

/// HTTP/2 CONTINUATION flood (the CVE-2024-27316 family): a HEADERS frame without
/// END_HEADERS followed by an endless run of CONTINUATION frames full of header fields. The
/// gateway must stop reading (GOAWAY or a closed connection) long before it has buffered the
/// flood, its memory must stay bounded, and it must keep serving others.
#[tokio::test]
async fn http2_continuation_flood_is_cut_off() {
    let (gw, _up) = gw_with_echo("").await;
    let a = addr(&gw).await;
    let rss_before = rss();

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = payload.len() as u32;
        let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }
    /// HPACK integer with an N-bit prefix (RFC 7541 5.1), first byte's high bits in `first`.
    fn int(first: u8, prefix: u8, mut v: usize, out: &mut Vec<u8>) {
        let max = (1usize << prefix) - 1;
        if v < max {
            out.push(first | v as u8);
            return;
        }
        out.push(first | max as u8);
        v -= max;
        while v >= 128 {
            out.push((v % 128) as u8 | 0x80);
            v /= 128;
        }
        out.push(v as u8);
    }
    // One CONTINUATION payload: literal header fields without indexing, new names.
    let mut block = Vec::new();
    let value = vec![b'v'; 4000];
    for i in 0..4 {
        let name = format!("x-flood-{i}");
        block.push(0x00);
        int(0, 7, name.len(), &mut block);
        block.extend_from_slice(name.as_bytes());
        int(0, 7, value.len(), &mut block);
        block.extend_from_slice(&value);
    }

    let mut s = tokio::net::TcpStream::connect(a).await.unwrap();
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    s.write_all(&frame(4, 0, 0, &[])).await.unwrap(); // SETTINGS
    // :method GET, :scheme http, :path /, :authority (indexed name 1, literal value).
    let mut first = vec![0x82, 0x86, 0x84, 0x41, 9];
    first.extend_from_slice(b"127.0.0.1");
    s.write_all(&frame(1, 0x1, 1, &first)).await.unwrap(); // HEADERS, END_STREAM, no END_HEADERS
    let (mut rd, mut wr) = s.into_split();
    let reader = tokio::spawn(async move {
        // Read until the server closes; report whether it sent GOAWAY (frame type 7).
        let mut buf = Vec::new();
        let mut chunk = [0u8; 16384];
        loop {
            match tokio::time::timeout(Duration::from_secs(20), rd.read(&mut chunk)).await {
                Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
                Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let mut goaway = false;
        let mut i = 0;
        while i + 9 <= buf.len() {
            let len =
                ((buf[i] as usize) << 16) | ((buf[i + 1] as usize) << 8) | buf[i + 2] as usize;
            goaway |= buf[i + 3] == 7;
            i += 9 + len;
        }
        goaway
    });
    let cont = frame(9, 0, 1, &block); // CONTINUATION without END_HEADERS
    let mut sent = 0usize;
    // Up to 256 MiB of header block; the connection must be cut long before.
    while sent < 256 << 20 {
        if wr.write_all(&cont).await.is_err() {
            break;
        }
        sent += cont.len();
    }
    let _ = wr.shutdown().await;
    let goaway = tokio::time::timeout(Duration::from_secs(30), reader)
        .await
        .expect("the server must end the connection")
        .unwrap();
    assert!(
        sent < 64 << 20,
        "the gateway kept reading a {} MiB header block",
        sent >> 20
    );
    let grown = rss().saturating_sub(rss_before);
    assert!(grown < 64 << 20, "memory grew by {} MiB", grown >> 20);
    eprintln!("flood cut off after {} KiB; GOAWAY: {goaway}", sent >> 10);
    let (st, _, _) = get(&h2_client(), format!("http://{a}/after")).await;
    assert_eq!(st, http::StatusCode::OK);
}
