//! `rate_limit` through the gateway: GCRA limits in process and in a real Redis shared by
//! two gateways, the draft and legacy headers, 429 with Retry-After, and each failure policy
//! when the test's own Redis is stopped, with recovery when it returns.
//!
//! Redis: `REDIS_URL` when set (scripts/test.sh starts a throwaway one when it is unset),
//! otherwise a `redis-server` this test starts; the tests that stop Redis always start their
//! own. In CI (`CI=true`) a missing Redis is a failure, never a skip.
#![allow(clippy::unwrap_used)]

mod support;

use http::StatusCode;
use std::net::SocketAddr;
use std::time::Duration;
use support::redis::*;
use support::*;

/// The gateway config. Redis calls get a generous time box: these tests check decisions, not
/// latency, and a loaded CI machine can stall a debug build for a while.
fn cfg(upstream: SocketAddr, redis: Option<&str>, routes: &str) -> String {
    let redis = redis.map_or(String::new(), |u| {
        format!("redis: {{url: '{u}', timeout: 2s, recheck_interval: 50ms}}\n")
    });
    config(&format!(
        "{redis}upstreams:\n  - name: up\n    targets: [{{url: 'http://{upstream}'}}]\nroutes:\n{routes}"
    ))
}

fn route(name: &str, path: &str, plugin: &str) -> String {
    format!(
        "  - name: {name}\n    match: {{path_prefix: {path}}}\n    upstream: up\n    plugins:\n      rate_limit: {plugin}\n"
    )
}

async fn hit(addr: SocketAddr, path: &str, key: &str) -> (StatusCode, http::HeaderMap, String) {
    let req = http::Request::get(format!("http://{addr}{path}"))
        .header("x-client", key)
        .body(full(""))
        .unwrap();
    let resp = h1_client().request(req).await.unwrap();
    let (parts, body) = resp.into_parts();
    let body = http_body_util::BodyExt::collect(body)
        .await
        .unwrap()
        .to_bytes();
    (
        parts.status,
        parts.headers,
        String::from_utf8_lossy(&body).into_owned(),
    )
}

#[tokio::test]
async fn a_local_limit_admits_its_burst_then_answers_429_with_headers() {
    let up = echo_upstream(false).await;
    let gw = gateway(&cfg(
        up.addr,
        None,
        &(route(
            "draft",
            "/draft",
            "{limits: [{requests: 3, per: 1h, name: hourly}], key: [{header: x-client}]}",
        ) + &route(
            "legacy",
            "/legacy",
            "{limits: [{requests: 2, per: 1h}], key: [{header: x-client}], headers: legacy}",
        )),
    ))
    .await;
    let addr = addr(&gw).await;
    for left in [2, 1, 0] {
        let (s, h, _) = hit(addr, "/draft", "a").await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(h["ratelimit-policy"], "\"hourly\";q=3;w=3600");
        let rl = h["ratelimit"].to_str().unwrap();
        assert!(rl.starts_with(&format!("\"hourly\";r={left};t=")), "{rl}");
        assert!(rl.contains(";pk=:"), "a partition key: {rl}");
    }
    let (s, h, body) = hit(addr, "/draft", "a").await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS);
    assert!(body.contains("\"rate_limited\""), "{body}");
    let retry: u64 = h["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=1200).contains(&retry), "{retry}");
    assert!(h["ratelimit"].to_str().unwrap().contains(";r=0;"));
    // Another key has its own budget.
    assert_eq!(hit(addr, "/draft", "b").await.0, StatusCode::OK);
    // The legacy set.
    let (_, h, _) = hit(addr, "/legacy", "a").await;
    assert_eq!(h["x-ratelimit-limit"], "2");
    assert_eq!(h["x-ratelimit-remaining"], "1");
    assert!(h.get("ratelimit").is_none());
}

#[tokio::test]
async fn every_limit_must_have_room_and_a_cost_counts_several() {
    let up = echo_upstream(false).await;
    let gw = gateway(&cfg(
        up.addr,
        None,
        &(route(
            "two",
            "/two",
            "{limits: [{requests: 2, per: 1s}, {requests: 3, per: 1h}], key: [{header: x-client}]}",
        ) + &route(
            "heavy",
            "/heavy",
            "{limits: [{requests: 10, per: 1h}], key: [{header: x-client}], cost: 5}",
        )),
    ))
    .await;
    let addr = addr(&gw).await;
    assert_eq!(hit(addr, "/two", "k").await.0, StatusCode::OK);
    assert_eq!(hit(addr, "/two", "k").await.0, StatusCode::OK);
    let (s, h, _) = hit(addr, "/two", "k").await;
    assert_eq!(
        s,
        StatusCode::TOO_MANY_REQUESTS,
        "the per-second limit is spent"
    );
    // Both limits are reported.
    let rl = h["ratelimit"].to_str().unwrap().to_string();
    assert!(
        rl.contains("\"2-per-1s\";r=0") && rl.contains("\"3-per-1h\";r=1"),
        "{rl}"
    );
    // A cost of 5 against 10: two requests.
    assert_eq!(hit(addr, "/heavy", "k").await.0, StatusCode::OK);
    assert_eq!(hit(addr, "/heavy", "k").await.0, StatusCode::OK);
    assert_eq!(
        hit(addr, "/heavy", "k").await.0,
        StatusCode::TOO_MANY_REQUESTS
    );
}

#[tokio::test]
async fn two_gateways_sharing_redis_admit_exactly_the_limit_between_them() {
    let Some((url, _server)) = shared_redis() else {
        return;
    };
    let up = echo_upstream(false).await;
    let limit = 200;
    let routes = route(
        "shared",
        "/shared",
        &format!(
            "{{limits: [{{requests: {limit}, per: 1h}}], key: [{{header: x-client}}], policy: redis, on_redis_failure: fail_closed}}"
        ),
    );
    let yaml = cfg(up.addr, Some(&url), &routes);
    // Two gateways, each with its own catalog, Redis client and connection.
    let a = own_gateway(&yaml).await;
    let b = own_gateway(&yaml).await;
    let (aa, ba) = (addr(&a).await, addr(&b).await);
    let key = run_id();
    let mut tasks = Vec::new();
    for i in 0..16 {
        let target = if i % 2 == 0 { aa } else { ba };
        let key = key.clone();
        tasks.push(tokio::spawn(async move {
            let mut admitted = 0u32;
            for _ in 0..40 {
                let (s, h, _) = hit(target, "/shared", &key).await;
                assert!(
                    h.get("torii-ratelimit-degraded").is_none(),
                    "a decision without redis: {h:?}"
                );
                match s {
                    StatusCode::OK => admitted += 1,
                    StatusCode::TOO_MANY_REQUESTS => {}
                    other => panic!("unexpected {other}"),
                }
            }
            admitted
        }));
    }
    let mut admitted = 0;
    for t in tasks {
        admitted += t.await.unwrap();
    }
    // 640 requests at a limit of 200 per hour: exactly 200 pass (the bound of the issue is
    // 200..=202; GCRA in one atomic script admits no more than the limit).
    assert!(
        (limit..=limit * 101 / 100).contains(&admitted),
        "{admitted}"
    );
    assert_eq!(admitted, limit);
}

#[tokio::test]
async fn no_double_burst_at_a_window_boundary_in_redis() {
    let Some((url, _server)) = shared_redis() else {
        return;
    };
    let up = echo_upstream(false).await;
    let gw = own_gateway(&cfg(
        up.addr,
        Some(&url),
        &route(
            "burst",
            "/burst",
            "{limits: [{requests: 10, per: 1s}], key: [{header: x-client}], policy: redis}",
        ),
    ))
    .await;
    let addr = addr(&gw).await;
    let key = run_id();
    let start = std::time::Instant::now();
    let mut passed = 0;
    for _ in 0..10 {
        passed += u32::from(hit(addr, "/burst", &key).await.0 == StatusCode::OK);
    }
    assert_eq!(passed, 10);
    // A fixed window would let 10 more through just after its boundary; GCRA gives back one
    // request per 100 ms since the burst began, however long the requests took here.
    tokio::time::sleep(Duration::from_millis(150)).await;
    let mut again = 0;
    for _ in 0..10 {
        again += u32::from(hit(addr, "/burst", &key).await.0 == StatusCode::OK);
    }
    let refilled = (start.elapsed().as_millis() / 100) as u32;
    assert!(again >= 1, "150 ms refill at least one");
    assert!(again <= refilled + 1, "{again} passed, {refilled} refilled");
    assert!(again < 10, "a double burst");
}

#[tokio::test]
async fn when_redis_stops_each_policy_applies_visibly_and_recovery_follows() {
    let Some(mut server) = RedisServer::start() else {
        return;
    };
    let up = echo_upstream(false).await;
    let plugin = |policy: &str| {
        format!(
            "{{limits: [{{requests: 4, per: 1h}}], key: [{{header: x-client}}], policy: redis, on_redis_failure: {policy}, nodes: 2}}"
        )
    };
    let routes = route("open", "/open", &plugin("fail_open"))
        + &route("closed", "/closed", &plugin("fail_closed"))
        + &route("local", "/local", &plugin("local"));
    let gw = own_gateway(&cfg(up.addr, Some(&server.url()), &routes)).await;
    let addr = addr(&gw).await;
    let admin = gw.admin_addr().unwrap();
    let key = run_id();
    // Redis up: decisions come from it (the first may wait for the connection).
    let end = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (s, h, _) = hit(addr, "/open", &key).await;
        if s == StatusCode::OK && h.get("torii-ratelimit-degraded").is_none() {
            break;
        }
        assert!(tokio::time::Instant::now() < end, "redis never answered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.stop();
    // fail_open: let through, and said so.
    for _ in 0..6 {
        let (s, h, _) = hit(addr, "/open", &key).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(h["torii-ratelimit-degraded"], "fail_open");
    }
    // fail_closed: 503 with its own code, never 401 or 429.
    let (s, h, body) = hit(addr, "/closed", &key).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body.contains("\"rate_limit_unavailable\""), "{body}");
    assert_eq!(h["torii-ratelimit-degraded"], "fail_closed");
    // local: the limit divided by the 2 nodes.
    let mut passed = 0;
    for _ in 0..4 {
        let (s, h, _) = hit(addr, "/local", &key).await;
        assert_eq!(h["torii-ratelimit-degraded"], "local");
        passed += u32::from(s == StatusCode::OK);
    }
    assert_eq!(passed, 2);
    // Counted and shown.
    let (_, _, m) = get(&h1_client(), format!("http://{admin}/metrics")).await;
    let m = String::from_utf8_lossy(&m).into_owned();
    for policy in ["fail_open", "fail_closed", "local"] {
        assert!(
            m.contains(&format!(
                "torii_rate_limit_degraded_total{{policy=\"{policy}\"}}"
            )),
            "{policy} not counted:\n{m}"
        );
    }
    assert!(m.contains("torii_redis_health{state=\"down\"} 1"), "{m}");
    let (_, _, v) = get(&h1_client(), format!("http://{admin}/redis")).await;
    assert_eq!(json(&v)["health"], "down");

    // Redis returns (empty: it keeps nothing): decisions come from it again.
    assert!(server.run());
    let end = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let (s, h, _) = hit(addr, "/closed", &key).await;
        if s == StatusCode::OK && h.get("torii-ratelimit-degraded").is_none() {
            break;
        }
        assert!(tokio::time::Instant::now() < end, "never recovered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, _, v) = get(&h1_client(), format!("http://{admin}/redis")).await;
    assert_eq!(json(&v)["health"], "up");
}

#[tokio::test]
async fn a_redis_policy_without_redis_settings_is_a_config_error() {
    let yaml = cfg(
        "127.0.0.1:1".parse().unwrap(),
        None,
        &route(
            "r",
            "/r",
            "{limits: [{requests: 1, per: 1s}], policy: redis}",
        ),
    );
    let e = load_str("t.yaml", &yaml).err().unwrap().to_string();
    assert!(e.contains("routes[0].plugins.rate_limit.policy"), "{e}");
    assert!(e.contains("top-level `redis`"), "{e}");
}

/// Per-request gates of the [`gated`] upstream: the body of the request with `x-id: N` ends
/// when the test opens gate N.
#[derive(Clone, Default)]
struct Gates(
    std::sync::Arc<
        std::sync::Mutex<std::collections::HashMap<String, std::sync::Arc<tokio::sync::Semaphore>>>,
    >,
);

impl Gates {
    fn get(&self, id: &str) -> std::sync::Arc<tokio::sync::Semaphore> {
        self.0
            .lock()
            .unwrap()
            .entry(id.to_string())
            .or_insert_with(|| std::sync::Arc::new(tokio::sync::Semaphore::new(0)))
            .clone()
    }
    fn open(&self, id: &str) {
        self.get(id).add_permits(1);
    }
}

/// An upstream whose responses send their head at once and end their body only when the test
/// opens the request's gate; `started` counts the requests it got.
async fn gated() -> (
    SocketAddr,
    Gates,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let gates = Gates::default();
    let started = Arc::new(AtomicUsize::new(0));
    let (g, s) = (gates.clone(), started.clone());
    let up = upstream(false, move |req: http::Request<hyper::body::Incoming>| {
        let (g, s) = (g.clone(), s.clone());
        async move {
            s.fetch_add(1, Ordering::SeqCst);
            let id = req
                .headers()
                .get("x-id")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            let gate = g.get(&id);
            let rest = futures_util::stream::once(async move {
                gate.acquire().await.unwrap().forget();
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>(http_body::Frame::data(
                    bytes::Bytes::from_static(b"end"),
                ))
            });
            http::Response::new(http_body_util::BodyExt::boxed(
                http_body_util::StreamBody::new(rest),
            ))
        }
    })
    .await;
    (up.addr, gates, started)
}

#[tokio::test]
async fn a_concurrency_limit_holds_a_place_until_the_body_ends_and_queues_within_bounds() {
    use std::sync::atomic::Ordering;
    let (up, gates, started) = gated().await;
    let gw = gateway(&cfg(
        up,
        None,
        &(route_with("c", "/c", "concurrency_limit", "{max_in_flight: 2, key: [{header: x-client}]}")
            + &route_with("q", "/q", "concurrency_limit", "{max_in_flight: 1, max_waiting: 1, max_wait: 5s, key: [{header: x-client}], status: 503}")),
    ))
    .await;
    let addr = addr(&gw).await;
    let client = h1_client();
    // A request with its gate `id` (its body ends when the test opens the gate).
    let send = |path: &'static str, key: &'static str, id: &'static str| {
        let client = client.clone();
        async move {
            let req = http::Request::get(format!("http://{addr}{path}"))
                .header("x-client", key)
                .header("x-id", id)
                .body(full(""))
                .unwrap();
            client.request(req).await.unwrap()
        }
    };
    // Two heads come back at once; their bodies are still open, so their places are held.
    let a = send("/c", "k", "a").await;
    let b = send("/c", "k", "b").await;
    assert_eq!((a.status(), b.status()), (StatusCode::OK, StatusCode::OK));
    let (s, _, body) = hit(addr, "/c", "k").await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert!(body.contains("\"rate_limited\""));
    // Another key has its own places.
    let other = send("/c", "other", "other").await;
    assert_eq!(other.status(), StatusCode::OK);
    // One body ends: its place is free again.
    gates.open("a");
    let done = http_body_util::BodyExt::collect(a.into_body())
        .await
        .unwrap()
        .to_bytes();
    assert_eq!(&done[..], b"end");
    let c = send("/c", "k", "c").await;
    assert_eq!(c.status(), StatusCode::OK);
    // A client that goes away (b) frees its place too.
    drop(b);
    let end = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let r = send("/c", "k", "d").await;
        if r.status() == StatusCode::OK {
            break;
        }
        assert!(
            tokio::time::Instant::now() < end,
            "the dropped body's place never came back"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The queue: of two more requests, one waits for the place and the other (the queue
    // being full) is refused at once with 503; whichever came first is the one that waits.
    let first = send("/q", "k", "first").await;
    assert_eq!(first.status(), StatusCode::OK);
    let mut w1 = tokio::spawn(send("/q", "k", "w1"));
    let mut w2 = tokio::spawn(send("/q", "k", "w2"));
    let (refused, waiter) = tokio::select! {
        r = &mut w1 => (r.unwrap(), w2),
        r = &mut w2 => (r.unwrap(), w1),
    };
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body = http_body_util::BodyExt::collect(refused.into_body())
        .await
        .unwrap()
        .to_bytes();
    assert!(String::from_utf8_lossy(&body).contains("\"concurrency_limited\""));
    let before = started.load(Ordering::SeqCst);
    gates.open("first");
    http_body_util::BodyExt::collect(first.into_body())
        .await
        .unwrap();
    let second = waiter.await.unwrap();
    assert_eq!(
        second.status(),
        StatusCode::OK,
        "the waiter got the freed place"
    );
    assert_eq!(started.load(Ordering::SeqCst), before + 1);
    for id in ["b", "c", "d", "other", "w1", "w2"] {
        gates.open(id);
    }
}

#[tokio::test]
async fn a_waiter_whose_client_goes_away_leaves_the_queue() {
    let (up, gates, _) = gated().await;
    let gw = gateway(&cfg(
        up,
        None,
        &route_with(
            "q",
            "/q",
            "concurrency_limit",
            "{max_in_flight: 1, max_waiting: 1, max_wait: 30s, key: [{header: x-client}]}",
        ),
    ))
    .await;
    let addr = addr(&gw).await;
    // Each request on its own connection, so dropping one closes its connection.
    let send = move |id: &'static str| async move {
        let req = http::Request::get(format!("http://{addr}/q"))
            .header("x-client", "k")
            .header("x-id", id)
            .body(full(""))
            .unwrap();
        h1_client().request(req).await.unwrap()
    };
    let holder = send("holder").await;
    assert_eq!(holder.status(), StatusCode::OK);
    // A waiter takes the one queue slot: the next request is refused at once.
    let waiter = tokio::spawn(send("waiter"));
    let end = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        // Until the waiter is in the queue, the probe itself queues (and times out here).
        match tokio::time::timeout(Duration::from_millis(300), send("probe")).await {
            Ok(r) if r.status() == StatusCode::TOO_MANY_REQUESTS => break,
            _ => assert!(tokio::time::Instant::now() < end, "the waiter never queued"),
        }
    }
    // Its client goes away: the slot must come back (a request can queue again), not stay
    // counted until the gateway restarts.
    waiter.abort();
    loop {
        let queued = tokio::time::timeout(Duration::from_millis(300), send("again")).await;
        match queued {
            Err(_) => break, // waiting in the queue: the slot was given back
            Ok(r) => assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS),
        }
        assert!(
            tokio::time::Instant::now() < end,
            "the cancelled waiter's queue slot never came back"
        );
    }
    gates.open("holder");
    let _ = http_body_util::BodyExt::collect(holder.into_body()).await;
    for id in ["waiter", "again", "probe"] {
        gates.open(id);
    }
}

#[tokio::test]
async fn a_plans_concurrency_limit_holds_the_place_until_the_body_ends() {
    // Set on a plan (not the route), the limit has no exchange stage of its own on the
    // route: the place stays with the request until its response body has ended.
    let (up, gates, _) = gated().await;
    let hash = torii_plugins::consumers::format_key_hash(b"pk");
    let gw = gateway(&cfg(
        up,
        None,
        &format!(
            "  - name: c\n    match: {{path_prefix: /c}}\n    upstream: up\n    plugins: {{key_auth: {{}}}}\nplans:\n  - name: one-at-a-time\n    plugins:\n      concurrency_limit: {{max_in_flight: 1}}\nconsumers:\n  - name: p\n    plan: one-at-a-time\n    keys: ['{hash}']\n"
        ),
    ))
    .await;
    let addr = addr(&gw).await;
    let send = move |id: &'static str| async move {
        let req = http::Request::get(format!("http://{addr}/c"))
            .header("x-api-key", "pk")
            .header("x-id", id)
            .body(full(""))
            .unwrap();
        h1_client().request(req).await.unwrap()
    };
    let first = send("first").await;
    assert_eq!(first.status(), StatusCode::OK);
    assert_eq!(
        send("second").await.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "the place is held while the body runs"
    );
    gates.open("first");
    let _ = http_body_util::BodyExt::collect(first.into_body()).await;
    let end = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let r = send("third").await;
        if r.status() == StatusCode::OK {
            break;
        }
        assert!(
            tokio::time::Instant::now() < end,
            "the place never came back"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for id in ["second", "third"] {
        gates.open(id);
    }
}

fn route_with(name: &str, path: &str, plugin: &str, settings: &str) -> String {
    format!(
        "  - name: {name}\n    match: {{path_prefix: {path}}}\n    upstream: up\n    plugins:\n      {plugin}: {settings}\n"
    )
}

#[tokio::test]
async fn a_quota_survives_a_gateway_restart_and_reports_what_remains() {
    let Some((url, _server)) = shared_redis() else {
        return;
    };
    let up = echo_upstream(false).await;
    let routes = route_with(
        "q",
        "/q",
        "quota",
        "{limit: 3, period: day, key: [{header: x-client}], name: daily}",
    ) + &route_with(
        "m",
        "/m",
        "quota",
        "{limit: 5, period: month, key: [{header: x-client}], cost: 5, headers: legacy}",
    );
    let yaml = cfg(up.addr, Some(&url), &routes);
    let key = run_id();
    let gw = own_gateway(&yaml).await;
    let a = addr(&gw).await;
    for left in [2, 1] {
        let (s, h, _) = hit(a, "/q", &key).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(h["ratelimit-policy"], "\"daily\";q=3;w=86400");
        assert!(
            h["ratelimit"]
                .to_str()
                .unwrap()
                .starts_with(&format!("\"daily\";r={left};t=")),
            "{:?}",
            h["ratelimit"]
        );
    }
    // A new gateway (a restart) finds the count in Redis.
    drop(gw);
    let gw = own_gateway(&yaml).await;
    let a = addr(&gw).await;
    let (s, h, _) = hit(a, "/q", &key).await;
    assert_eq!(s, StatusCode::OK);
    assert!(h["ratelimit"].to_str().unwrap().contains(";r=0;"));
    let (s, h, body) = hit(a, "/q", &key).await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS);
    assert!(body.contains("\"rate_limited\""), "{body}");
    let retry: u64 = h["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(
        (1..=86_400).contains(&retry),
        "renews by the next midnight UTC: {retry}"
    );
    // Refused requests take nothing; another key has its own quota.
    assert_eq!(
        hit(a, "/q", &format!("{key}-other")).await.0,
        StatusCode::OK
    );
    // A cost of 5 against a monthly 5: one request, reported in the legacy set.
    let (s, h, _) = hit(a, "/m", &key).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(h["x-quota-remaining"], "0");
    assert_eq!(hit(a, "/m", &key).await.0, StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn a_quota_without_redis_fails_open_or_closed_as_declared() {
    // A Redis that is not there: a port bound and never listening.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("redis://{}", silent.local_addr().unwrap());
    drop(silent);
    let up = echo_upstream(false).await;
    let routes = route_with(
        "o",
        "/o",
        "quota",
        "{limit: 1, period: hour, key: [{header: x-client}]}",
    ) + &route_with(
        "c",
        "/c",
        "quota",
        "{limit: 1, period: hour, key: [{header: x-client}], on_redis_failure: fail_closed}",
    );
    let gw = own_gateway(&cfg(up.addr, Some(&url), &routes)).await;
    let a = addr(&gw).await;
    for _ in 0..3 {
        let (s, h, _) = hit(a, "/o", "k").await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(h["torii-ratelimit-degraded"], "fail_open");
    }
    let (s, h, body) = hit(a, "/c", "k").await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body.contains("\"rate_limit_unavailable\""), "{body}");
    assert_eq!(h["torii-ratelimit-degraded"], "fail_closed");
}

#[tokio::test]
async fn a_request_another_limit_refuses_takes_no_quota() {
    let Some((url, _server)) = shared_redis() else {
        return;
    };
    let up = echo_upstream(false).await;
    let routes = "  - name: both\n    match: {path_prefix: /both}\n    upstream: up\n    plugins:\n      rate_limit: {limits: [{requests: 1, per: 1h}], key: [{header: x-rl}]}\n      quota: {limit: 3, period: day, key: [{header: x-client}]}\n";
    let gw = own_gateway(&cfg(up.addr, Some(&url), routes)).await;
    let a = addr(&gw).await;
    let key = run_id();
    let send = |rl: &'static str| {
        let key = key.clone();
        async move {
            let req = http::Request::get(format!("http://{a}/both"))
                .header("x-client", key)
                .header("x-rl", rl)
                .body(full(""))
                .unwrap();
            let r = h1_client().request(req).await.unwrap();
            (r.status(), r.headers().clone())
        }
    };
    assert_eq!(send("a").await.0, StatusCode::OK);
    // Refused by rate_limit: the quota does not count them.
    for _ in 0..3 {
        assert_eq!(send("a").await.0, StatusCode::TOO_MANY_REQUESTS);
    }
    let (s, h) = send("b").await;
    assert_eq!(s, StatusCode::OK);
    let rl = h["ratelimit"].to_str().unwrap().to_string();
    assert!(rl.contains("\"quota\";r=1;"), "two of three used: {rl}");
    assert_eq!(send("c").await.0, StatusCode::OK);
    assert_eq!(
        send("d").await.0,
        StatusCode::TOO_MANY_REQUESTS,
        "now the quota is used up"
    );
}

#[tokio::test]
async fn a_cost_that_can_never_pass_is_a_config_error() {
    let yaml = cfg(
        "127.0.0.1:1".parse().unwrap(),
        None,
        &route("r", "/r", "{limits: [{requests: 3, per: 1s}], cost: 5}"),
    );
    let e = load_str("t.yaml", &yaml).err().unwrap().to_string();
    assert!(e.contains("routes[0].plugins.rate_limit.cost"), "{e}");
    assert!(e.contains("can never pass"), "{e}");
    let fine = cfg(
        "127.0.0.1:1".parse().unwrap(),
        None,
        &route("r", "/r", "{limits: [{requests: 600000, per: 1s}]}"),
    );
    let e = load_str("t.yaml", &fine).err().unwrap().to_string();
    assert!(
        e.contains("routes[0].plugins.rate_limit.limits[0].requests"),
        "{e}"
    );
}

#[tokio::test]
async fn a_reload_that_keeps_the_settings_keeps_the_counts() {
    let up = echo_upstream(false).await;
    let plugin =
        "{limits: [{requests: 3, per: 1h}], key: [{header: x-client}], policy: local, nodes: 2}";
    let yaml = cfg(up.addr, None, &route("kept", "/kept", plugin));
    let gw = gateway(&yaml).await;
    let a = addr(&gw).await;
    let key = run_id();
    assert_eq!(hit(a, "/kept", &key).await.0, StatusCode::OK);
    assert_eq!(hit(a, "/kept", &key).await.0, StatusCode::OK);
    // A reload that changes something else (a new route) keeps this limiter's table.
    let more = cfg(
        up.addr,
        None,
        &(route("kept", "/kept", plugin)
            + &route("other", "/other", "{limits: [{requests: 1, per: 1s}]}")),
    );
    gw.apply(load_str("t.yaml", &more).unwrap()).await.unwrap();
    assert_eq!(hit(a, "/kept", &key).await.0, StatusCode::OK);
    assert_eq!(
        hit(a, "/kept", &key).await.0,
        StatusCode::TOO_MANY_REQUESTS,
        "the count survived the reload"
    );
}
