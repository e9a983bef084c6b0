//! Reload, listeners, shutdown, admin endpoints and WebSocket tunnels.
#![allow(clippy::unwrap_used)]

mod support;

use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn versioned(version: usize, extra_listener: &str) -> String {
    format!(
        "listeners:\n  - name: public\n    bind: 127.0.0.1:0\n{extra_listener}admin:\n  bind: 127.0.0.1:0\naccess_log:\n  enabled: false\nserver:\n  watch_config: false\nroutes:\n  - name: v\n    match: {{path: /version}}\n    direct_response: {{body: 'v{version}'}}\n  - name: new{version}\n    match: {{path: /new{version}}}\n    direct_response: {{body: 'here'}}\n"
    )
}

fn load(yaml: &str) -> torii_proxy::Loaded {
    load_str("t.yaml", yaml).unwrap()
}

#[tokio::test]
async fn open_connections_see_new_routes_after_reload() {
    let gw = gateway(&versioned(1, "")).await;
    let a = addr(&gw).await;
    let h1 = h1_client();
    let h2 = h2_client();
    assert_eq!(&get(&h1, format!("http://{a}/version")).await.2[..], b"v1");
    assert_eq!(&get(&h2, format!("http://{a}/version")).await.2[..], b"v1");
    gw.apply(load(&versioned(2, ""))).await.unwrap();
    // Same pooled keep-alive and HTTP/2 connections, new config.
    assert_eq!(&get(&h1, format!("http://{a}/version")).await.2[..], b"v2");
    assert_eq!(&get(&h2, format!("http://{a}/version")).await.2[..], b"v2");
    assert_eq!(get(&h1, format!("http://{a}/new2")).await.0, StatusCode::OK);
    assert_eq!(
        get(&h1, format!("http://{a}/new1")).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        gw.listener_addr("public").await.unwrap(),
        a,
        "unchanged listener kept its socket"
    );
}

#[tokio::test]
async fn broken_config_is_rejected_and_the_old_one_keeps_serving() {
    let dir = std::env::temp_dir().join(format!("torii-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("gw.yaml");
    std::fs::write(&file, versioned(1, "")).unwrap();
    let gw = gateway(&versioned(1, "")).await;
    let a = addr(&gw).await;
    std::fs::write(
        &file,
        "listeners: [{name: public, bind: 127.0.0.1:0, bogus: 1}]\n",
    )
    .unwrap();
    let err = torii_proxy::reload::reload_from(&gw, &file, &torii_config::ProcessEnv)
        .await
        .unwrap_err();
    assert!(err.contains("unknown key `bogus`"), "{err}");
    assert_eq!(
        &get(&h1_client(), format!("http://{a}/version")).await.2[..],
        b"v1"
    );
    let admin = gw.admin_addr().unwrap();
    let metrics = String::from_utf8(
        get(&h1_client(), format!("http://{admin}/metrics"))
            .await
            .2
            .to_vec(),
    )
    .unwrap();
    assert!(
        metrics.contains("torii_config_reloads_total{result=\"failed\"} 1"),
        "{metrics}"
    );
    std::fs::write(&file, versioned(2, "")).unwrap();
    torii_proxy::reload::reload_from(&gw, &file, &torii_config::ProcessEnv)
        .await
        .unwrap();
    assert_eq!(
        &get(&h1_client(), format!("http://{a}/version")).await.2[..],
        b"v2"
    );
}

#[tokio::test]
async fn listeners_are_added_and_removed_on_reload() {
    let gw = gateway(&versioned(1, "")).await;
    assert!(gw.listener_addr("extra").await.is_none());
    gw.apply(load(&versioned(
        2,
        "  - name: extra\n    bind: 127.0.0.1:0\n",
    )))
    .await
    .unwrap();
    let extra = gw.listener_addr("extra").await.unwrap();
    assert_eq!(
        &get(&h1_client(), format!("http://{extra}/version")).await.2[..],
        b"v2"
    );
    gw.apply(load(&versioned(3, ""))).await.unwrap();
    assert!(gw.listener_addr("extra").await.is_none());
    // The removed listener no longer accepts.
    let mut refused = false;
    for _ in 0..50 {
        if tokio::net::TcpStream::connect(extra).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(refused, "removed listener still accepts connections");
}

#[tokio::test]
async fn steady_load_across_twenty_reloads_sees_no_failures() {
    let up = echo_upstream(false).await;
    let base = |version: usize, broken: bool| {
        let mut cfg = versioned(version, "");
        cfg.push_str(&format!("  - name: proxied\n    match: {{path_prefix: /up}}\n    upstream: up\nupstreams:\n  - name: up\n    targets: [{{url: 'http://{}'}}]\n", up.addr));
        if broken {
            cfg.push_str("  - name: broken\n    targets: []\n");
        }
        cfg
    };
    let gw = gateway(&base(0, false)).await;
    let a = addr(&gw).await;
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for i in 0..4 {
        let (stop, failures, done) = (stop.clone(), failures.clone(), done.clone());
        let client = if i % 2 == 0 { h1_client() } else { h2_client() };
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let path = if i < 2 { "/version" } else { "/up/x" };
                let ok = match client
                    .request(
                        Request::get(format!("http://{a}{path}"))
                            .body(full(""))
                            .unwrap(),
                    )
                    .await
                {
                    Ok(r) => r.status() == StatusCode::OK && r.into_body().collect().await.is_ok(),
                    Err(_) => false,
                };
                let counter = if ok { &done } else { &failures };
                counter.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    // An open WebSocket-style tunnel through the gateway stays up across the reloads.
    let ws_up = upgrade_echo_upstream().await;
    let mut cfg_ws = base(0, false);
    cfg_ws.push_str(&format!(
        "  - name: ws\n    targets: [{{url: 'http://{}'}}]\n",
        ws_up
    ));
    cfg_ws = cfg_ws.replace(
        "routes:\n",
        "routes:\n  - name: ws\n    match: {path: /ws}\n    upstream: ws\n",
    );
    gw.apply(load(&cfg_ws)).await.unwrap();
    let mut tunnel = open_tunnel(a).await;
    let checker = h1_client();
    for n in 1..=20 {
        let broken = n % 4 == 0;
        let mut cfg = base(n, broken);
        cfg.push_str(&format!(
            "  - name: ws\n    targets: [{{url: 'http://{}'}}]\n",
            ws_up
        ));
        cfg = cfg.replace(
            "routes:\n",
            "routes:\n  - name: ws\n    match: {path: /ws}\n    upstream: ws\n",
        );
        match load_str("t.yaml", &cfg) {
            Ok(l) => {
                assert!(!broken);
                gw.apply(l).await.unwrap();
                let want = format!("v{n}");
                assert_eq!(
                    &get(&checker, format!("http://{a}/version")).await.2[..],
                    want.as_bytes(),
                    "change {n} took effect"
                );
            }
            Err(_) => {
                assert!(broken);
                gw.reload_rejected();
            }
        }
        let msg = format!("ping {n}");
        tunnel.write_all(msg.as_bytes()).await.unwrap();
        let mut buf = vec![0u8; msg.len()];
        tunnel.read_exact(&mut buf).await.unwrap();
        assert_eq!(buf, msg.as_bytes(), "tunnel alive after reload {n}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(
        failures.load(Ordering::Relaxed),
        0,
        "failed requests during reloads"
    );
    assert!(
        done.load(Ordering::Relaxed) > 100,
        "load actually ran: {}",
        done.load(Ordering::Relaxed)
    );
}

/// A fake upstream that answers an Upgrade with 101 and then echoes raw bytes, and any other
/// request with 200 `plain`.
async fn upgrade_echo_upstream() -> std::net::SocketAddr {
    let up = upstream(
        false,
        |mut req: Request<hyper::body::Incoming>| async move {
            if !req.headers().contains_key("upgrade") {
                return Response::new(full("plain"));
            }
            let on_upgrade = hyper::upgrade::on(&mut req);
            tokio::spawn(async move {
                if let Ok(io) = on_upgrade.await {
                    let mut io = hyper_util::rt::TokioIo::new(io);
                    let mut buf = [0u8; 1024];
                    loop {
                        let n = match io.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        if io.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                }
            });
            Response::builder()
                .status(101)
                .header("upgrade", "websocket")
                .header("connection", "upgrade")
                .body(full(""))
                .unwrap()
        },
    )
    .await;
    up.addr
}

/// Opens a WebSocket-style upgrade through the gateway; returns the raw stream after the 101.
async fn open_tunnel(a: std::net::SocketAddr) -> tokio::net::TcpStream {
    let mut s = tokio::net::TcpStream::connect(a).await.unwrap();
    s.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n").await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("upgrade: websocket"),
        "{head}"
    );
    s
}

#[tokio::test]
async fn websocket_frames_flow_both_ways() {
    let ws_up = upgrade_echo_upstream().await;
    let cfg = config(&format!(
        "upstreams:\n  - name: ws\n    targets: [{{url: 'http://{ws_up}'}}]\nroutes:\n  - name: ws\n    match: {{path: /ws}}\n    upstream: ws\n"
    ));
    let gw = gateway(&cfg).await;
    let a = addr(&gw).await;
    let mut s = open_tunnel(a).await;
    // A masked WebSocket text frame "hi" and a second one, echoed back byte for byte.
    for frame in [
        &[0x81u8, 0x82, 1, 2, 3, 4, b'h' ^ 1, b'i' ^ 2][..],
        &[0x81, 0x81, 9, 9, 9, 9, b'!' ^ 9][..],
    ] {
        s.write_all(frame).await.unwrap();
        let mut back = vec![0u8; frame.len()];
        s.read_exact(&mut back).await.unwrap();
        assert_eq!(back, frame);
    }
}

#[tokio::test]
async fn graceful_shutdown_finishes_in_flight_requests_and_fails_readiness() {
    let (release_tx, release_rx) = tokio::sync::watch::channel(false);
    let up = upstream(false, move |_req| {
        let mut rx = release_rx.clone();
        async move {
            let _ = rx.wait_for(|v| *v).await;
            Response::new(full("finished"))
        }
    })
    .await;
    let cfg = config(&format!(
        "upstreams:\n  - name: up\n    targets: [{{url: 'http://{}'}}]\nroutes:\n  - name: all\n    match: {{path_prefix: /}}\n    upstream: up\n",
        up.addr
    ));
    let gw = gateway(&cfg).await;
    let a = addr(&gw).await;
    let admin = gw.admin_addr().unwrap();
    assert_eq!(
        get(&h1_client(), format!("http://{admin}/readyz")).await.0,
        StatusCode::OK
    );
    let client = h1_client();
    let in_flight = tokio::spawn(async move { get(&client, format!("http://{a}/slow")).await });
    while up.stats.open.load(Ordering::SeqCst) == 0 {
        tokio::task::yield_now().await;
    }
    let gw2 = gw.clone();
    let shutdown = tokio::spawn(async move { gw2.shutdown(Duration::from_secs(10)).await });
    // Readiness fails while draining; health stays up.
    let mut ready = StatusCode::OK;
    for _ in 0..100 {
        ready = get(&h1_client(), format!("http://{admin}/readyz")).await.0;
        if ready == StatusCode::SERVICE_UNAVAILABLE {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(ready, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        get(&h1_client(), format!("http://{admin}/healthz")).await.0,
        StatusCode::OK
    );
    release_tx.send(true).unwrap();
    let (s, _, b) = in_flight.await.unwrap();
    assert_eq!((s, &b[..]), (StatusCode::OK, &b"finished"[..]));
    tokio::time::timeout(Duration::from_secs(5), shutdown)
        .await
        .expect("shutdown did not finish")
        .unwrap();
    assert!(
        tokio::net::TcpStream::connect(a).await.is_err(),
        "listener closed after shutdown"
    );
}

#[tokio::test]
async fn metrics_count_requests_by_route_and_status_class() {
    let gw = gateway(&config(
        "routes:\n  - name: hello\n    match: {path: /hello}\n    direct_response: {body: hi}\n",
    ))
    .await;
    let a = addr(&gw).await;
    let c = h1_client();
    for _ in 0..3 {
        get(&c, format!("http://{a}/hello")).await;
    }
    get(&c, format!("http://{a}/missing")).await;
    let admin = gw.admin_addr().unwrap();
    let m = String::from_utf8(get(&c, format!("http://{admin}/metrics")).await.2.to_vec()).unwrap();
    assert!(
        m.contains("torii_requests_total{route=\"hello\",status_class=\"2xx\"} 3"),
        "{m}"
    );
    assert!(
        m.contains("torii_requests_total{route=\"<none>\",status_class=\"4xx\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("torii_request_duration_seconds_bucket{route=\"hello\""),
        "{m}"
    );
    assert!(m.contains("torii_open_connections"), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_changes_are_picked_up_by_the_watcher() {
    let dir = std::env::temp_dir().join(format!("torii-watch-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("gw.yaml");
    std::fs::write(&file, versioned(1, "")).unwrap();
    let gw = gateway(&versioned(1, "")).await;
    let a = addr(&gw).await;
    let _w =
        torii_proxy::reload::watch(gw.clone(), file.clone(), Duration::from_millis(50)).unwrap();
    // Editors often write a temp file and rename it over the original.
    let tmp = dir.join(".gw.yaml.swp");
    std::fs::write(&tmp, versioned(2, "")).unwrap();
    std::fs::rename(&tmp, &file).unwrap();
    let c = h1_client();
    let mut body = Vec::new();
    for _ in 0..200 {
        body = get(&c, format!("http://{a}/version")).await.2.to_vec();
        if body == b"v2" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(body, b"v2", "the watcher did not reload the changed file");
}

fn named(listener: &str, limits: &str, body: &str) -> String {
    format!(
        "listeners:\n  - name: {listener}\n    bind: 127.0.0.1:0\n{limits}admin:\n  bind: 127.0.0.1:0\naccess_log:\n  enabled: false\nserver:\n  watch_config: false\nroutes:\n  - name: v\n    listeners: [{listener}]\n    match: {{path: /version}}\n    direct_response: {{body: '{body}'}}\n"
    )
}

#[tokio::test]
async fn a_renamed_listener_keeps_its_socket_and_its_connections() {
    let gw = gateway(&named("public", "", "a")).await;
    let a = addr(&gw).await;
    let c = h1_client();
    assert_eq!(&get(&c, format!("http://{a}/version")).await.2[..], b"a");
    gw.apply(load(&named("front", "", "b"))).await.unwrap();
    assert_eq!(
        gw.listener_addr("front").await,
        Some(a),
        "same socket under the new name"
    );
    // The pooled keep-alive connection from before the rename routes with the new name.
    assert_eq!(&get(&c, format!("http://{a}/version")).await.2[..], b"b");
}

#[tokio::test]
async fn a_raised_connection_cap_applies_at_once() {
    let gw = gateway(&named("public", "    limits: {max_connections: 1}\n", "a")).await;
    let a = addr(&gw).await;
    let _held = tokio::net::TcpStream::connect(a).await.unwrap();
    let mut second = tokio::net::TcpStream::connect(a).await.unwrap();
    second
        .write_all(b"GET /version HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 8];
    assert!(
        tokio::time::timeout(Duration::from_millis(200), second.read(&mut buf))
            .await
            .is_err(),
        "cap of 1 not enforced"
    );
    gw.apply(load(&named(
        "public",
        "    limits: {max_connections: 2}\n",
        "a",
    )))
    .await
    .unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), second.read_to_end(&mut out))
        .await
        .expect("raised cap not applied while the first connection is held")
        .unwrap();
    assert!(String::from_utf8_lossy(&out).starts_with("HTTP/1.1 200"));
}

#[tokio::test]
async fn idle_keep_alive_connections_are_closed_on_both_protocols() {
    // header_read_timeout is long, so only idle_timeout can close these connections.
    let gw = gateway(&named(
        "public",
        "    limits: {idle_timeout: 300ms, header_read_timeout: 30s}\n",
        "a",
    ))
    .await;
    let a = addr(&gw).await;
    // HTTP/1.1: a served request, then silence.
    let mut s = tokio::net::TcpStream::connect(a).await.unwrap();
    s.write_all(b"GET /version HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let start = std::time::Instant::now();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("idle HTTP/1.1 connection not closed")
        .unwrap();
    assert!(String::from_utf8_lossy(&out).starts_with("HTTP/1.1 200"));
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(5),
        "closed after {took:?}"
    );
    // HTTP/2: a connection with no stream gets GOAWAY and is closed.
    let io = hyper_util::rt::TokioIo::new(tokio::net::TcpStream::connect(a).await.unwrap());
    let (mut send, conn) = hyper::client::conn::http2::handshake::<_, _, BoxBody>(
        hyper_util::rt::TokioExecutor::new(),
        io,
    )
    .await
    .unwrap();
    let ended = tokio::spawn(conn);
    let r = send
        .send_request(
            Request::get(format!("http://{a}/version"))
                .body(full(""))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    drop(r);
    tokio::time::timeout(Duration::from_secs(10), ended)
        .await
        .expect("idle HTTP/2 connection not closed")
        .unwrap()
        .ok();
}

/// Open tunnels do not hold upstream pool slots: with a per-target cap of 2 and two open
/// WebSockets, plain requests to the same target still get through.
#[tokio::test]
async fn websocket_tunnels_do_not_take_upstream_pool_slots() {
    let up = upgrade_echo_upstream().await;
    let cfg = config(&format!(
        "upstreams:\n  - name: ws\n    targets: [{{url: 'http://{}'}}]\n    pool: {{max_connections_per_target: 2, queue_timeout: 300ms}}\nroutes:\n  - name: all\n    match: {{path_prefix: /}}\n    upstream: ws\n",
        up
    ));
    let gw = gateway(&cfg).await;
    let a = addr(&gw).await;
    let mut tunnels = Vec::new();
    for _ in 0..2 {
        let mut t = open_tunnel(a).await;
        t.write_all(b"x").await.unwrap();
        let mut one = [0u8; 1];
        t.read_exact(&mut one).await.unwrap();
        tunnels.push(t);
    }
    for _ in 0..3 {
        let (s, _, b) = get(&h1_client(), format!("http://{a}/plain")).await;
        assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&b));
        assert_eq!(&b[..], b"plain");
    }
    // The tunnels still work.
    for t in &mut tunnels {
        t.write_all(b"y").await.unwrap();
        let mut one = [0u8; 1];
        t.read_exact(&mut one).await.unwrap();
        assert_eq!(&one, b"y");
    }
}

#[tokio::test]
async fn websocket_tunnels_keep_their_connection_slot() {
    let ws_up = upgrade_echo_upstream().await;
    let cfg = config(&format!("upstreams:\n  - name: ws\n    targets: [{{url: 'http://{ws_up}'}}]\nroutes:\n  - name: ws\n    match: {{path: /ws}}\n    upstream: ws\n  - name: v\n    match: {{path: /v}}\n    direct_response: {{body: ok}}\n"))
        .replace("bind: 127.0.0.1:0\nadmin", "bind: 127.0.0.1:0\n    limits: {max_connections: 1}\nadmin");
    let gw = gateway(&cfg).await;
    let a = addr(&gw).await;
    let mut tunnel = open_tunnel(a).await;
    tunnel.write_all(b"x").await.unwrap();
    let mut one = [0u8; 1];
    tunnel.read_exact(&mut one).await.unwrap();
    assert_eq!(
        gw.shared().active_connections(),
        1,
        "the upgraded connection still counts"
    );
    // The cap of 1 is taken by the tunnel: another connection waits.
    let mut other = tokio::net::TcpStream::connect(a).await.unwrap();
    other
        .write_all(b"GET /v HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 8];
    assert!(
        tokio::time::timeout(Duration::from_millis(200), other.read(&mut buf))
            .await
            .is_err()
    );
    drop(tunnel);
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), other.read_to_end(&mut out))
        .await
        .expect("slot not released when the tunnel closed")
        .unwrap();
    assert!(String::from_utf8_lossy(&out).ends_with("ok"));
}
