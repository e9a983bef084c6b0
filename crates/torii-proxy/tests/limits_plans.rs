//! Sliding windows (in process and shared through a real Redis), spike arrest, limits per
//! credential, and plans (a consumer moved to another plan keeps its usage; a plan's limits
//! answer with their headers).
#![allow(clippy::unwrap_used)]

mod support;

use http::StatusCode;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use support::redis::*;
use support::*;
use torii_plugins::consumers::format_key_hash;

fn cfg(upstream: SocketAddr, redis: Option<&str>, rest: &str) -> String {
    let redis = redis.map_or(String::new(), |u| {
        format!("redis: {{url: '{u}', timeout: 2s, recheck_interval: 50ms}}\n")
    });
    config(&format!(
        "{redis}upstreams:\n  - name: up\n    targets: [{{url: 'http://{upstream}'}}]\n{rest}"
    ))
}

fn route(name: &str, path: &str, plugins: &str) -> String {
    format!(
        "  - name: {name}\n    match: {{path_prefix: {path}}}\n    upstream: up\n    plugins: {plugins}\n"
    )
}

#[tokio::test]
async fn a_sliding_window_admits_its_limit_and_says_when_room_returns() {
    let up = echo_upstream(false).await;
    let plugin = "{rate_limit: {algorithm: sliding_window, limits: [{requests: 4, per: 1h, name: hourly}], key: [{header: x-client}]}}";
    let gw = gateway(&cfg(
        up.addr,
        None,
        &format!("routes:\n{}", route("s", "/s", plugin)),
    ))
    .await;
    let a = addr(&gw).await;
    for left in [3, 2, 1, 0] {
        let (s, h) = get_with_header(a, "/s", ("x-client", "k")).await;
        assert_eq!(s, StatusCode::OK);
        let rl = h["ratelimit"].to_str().unwrap();
        assert!(rl.starts_with(&format!("\"hourly\";r={left};t=")), "{rl}");
    }
    let (s, h) = get_with_header(a, "/s", ("x-client", "k")).await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS);
    // The first sub-window leaves the window after at most 1 h + 6 min.
    let retry: u64 = h["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((3600..=3960).contains(&retry), "{retry}");
    assert_eq!(
        get_with_header(a, "/s", ("x-client", "other")).await.0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_sliding_window_in_redis_is_exact_across_two_gateways() {
    let Some((url, _server)) = shared_redis() else {
        return;
    };
    let up = echo_upstream(false).await;
    let plugin = "{rate_limit: {algorithm: sliding_window, policy: redis, limits: [{requests: 25, per: 1h}], key: [{header: x-client}]}}";
    let yaml = cfg(
        up.addr,
        Some(&url),
        &format!("routes:\n{}", route("s", "/s", plugin)),
    );
    let (g1, g2) = (own_gateway(&yaml).await, own_gateway(&yaml).await);
    let (a1, a2) = (addr(&g1).await, addr(&g2).await);
    let key = run_id();
    let mut tasks = Vec::new();
    for i in 0..80 {
        let key = key.clone();
        let a = if i % 2 == 0 { a1 } else { a2 };
        tasks.push(tokio::spawn(async move {
            let (s, h) = get_with_header(a, "/s", ("x-client", &key)).await;
            assert!(
                h.get("torii-ratelimit-degraded").is_none(),
                "redis answered"
            );
            s
        }));
    }
    let mut ok = 0;
    for t in tasks {
        ok += u32::from(t.await.unwrap() == StatusCode::OK);
    }
    assert_eq!(ok, 25, "exactly the limit between the two gateways");
}

#[tokio::test]
async fn spike_arrest_holds_early_requests_back_instead_of_refusing_them() {
    let Some((url, _server)) = shared_redis() else {
        return;
    };
    let up = echo_upstream(false).await;
    // 10 per second: a burst of 10, then one every 100 ms; up to 250 ms of waiting.
    let spiky = |policy: &str| {
        format!(
            "{{rate_limit: {{limits: [{{requests: 10, per: 1s}}], delay: 250ms, policy: {policy}, key: [{{header: x-client}}]}}}}"
        )
    };
    let yaml = cfg(
        up.addr,
        Some(&url),
        &format!(
            "routes:\n{}{}",
            route("local", "/local", &spiky("local")),
            route("redis", "/redis", &spiky("redis"))
        ),
    );
    let gw = own_gateway(&yaml).await;
    let a = addr(&gw).await;
    for path in ["/local", "/redis"] {
        let key = run_id();
        for _ in 0..10 {
            let start = Instant::now();
            assert_eq!(
                get_with_header(a, path, ("x-client", &key)).await.0,
                StatusCode::OK
            );
            assert!(
                start.elapsed() < Duration::from_millis(90),
                "{path}: the burst is not held"
            );
        }
        // The next two are early by about 100 and 200 ms: held back, then let through.
        let start = Instant::now();
        let (first, second) = tokio::join!(
            get_with_header(a, path, ("x-client", &key)),
            get_with_header(a, path, ("x-client", &key))
        );
        assert_eq!(
            (first.0, second.0),
            (StatusCode::OK, StatusCode::OK),
            "{path}"
        );
        assert!(
            start.elapsed() >= Duration::from_millis(150),
            "{path}: held back ({:?})",
            start.elapsed()
        );
        // One more is more than 250 ms early (unless the machine stalled for 100 ms since).
        let (s, _) = get_with_header(a, path, ("x-client", &key)).await;
        if start.elapsed() < Duration::from_millis(250) {
            assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "{path}");
        }
    }
}

#[tokio::test]
async fn a_limit_per_credential_counts_each_key_of_a_consumer_apart() {
    let up = echo_upstream(false).await;
    let consumers = format!(
        "consumers:\n  - name: alice\n    keys: ['{}', '{}']\n",
        format_key_hash(b"key-one"),
        format_key_hash(b"key-two")
    );
    let by_credential =
        "{key_auth: {}, rate_limit: {limits: [{requests: 2, per: 1h}], key: [credential]}}";
    let by_consumer =
        "{key_auth: {}, rate_limit: {limits: [{requests: 2, per: 1h}], key: [consumer]}}";
    let gw = gateway(&cfg(
        up.addr,
        None,
        &format!(
            "{consumers}routes:\n{}{}",
            route("cred", "/cred", by_credential),
            route("cons", "/cons", by_consumer)
        ),
    ))
    .await;
    let a = addr(&gw).await;
    for _ in 0..2 {
        assert_eq!(
            get_with_header(a, "/cred", ("x-api-key", "key-one"))
                .await
                .0,
            StatusCode::OK
        );
    }
    assert_eq!(
        get_with_header(a, "/cred", ("x-api-key", "key-one"))
            .await
            .0,
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(
        get_with_header(a, "/cred", ("x-api-key", "key-two"))
            .await
            .0,
        StatusCode::OK,
        "the other key has its own count"
    );
    // Keyed by consumer, both keys share one count.
    assert_eq!(
        get_with_header(a, "/cons", ("x-api-key", "key-one"))
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(
        get_with_header(a, "/cons", ("x-api-key", "key-two"))
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(
        get_with_header(a, "/cons", ("x-api-key", "key-two"))
            .await
            .0,
        StatusCode::TOO_MANY_REQUESTS
    );
}

fn plans_config(up: SocketAddr, redis: &str, alice_plan: &str) -> String {
    let plans = "plans:\n  - name: free\n    plugins:\n      rate_limit: {limits: [{requests: 3, per: 1h, name: hourly}], policy: redis}\n      quota: {limit: 4, period: day, name: daily}\n  - name: pro\n    plugins:\n      rate_limit: {limits: [{requests: 10, per: 1h, name: hourly}], policy: redis}\n      quota: {limit: 20, period: day, name: daily}\n";
    let consumers = format!(
        "consumers:\n  - name: alice\n    plan: {alice_plan}\n    keys: ['{}']\n  - name: bob\n    plan: free\n    keys: ['{}']\n",
        format_key_hash(b"a-key"),
        format_key_hash(b"b-key")
    );
    cfg(
        up,
        Some(redis),
        &format!(
            "{plans}{consumers}routes:\n{}",
            route("api", "/", "{key_auth: {}}")
        ),
    )
}

#[tokio::test]
async fn a_consumer_moved_to_another_plan_keeps_its_usage() {
    let Some((url, _server)) = shared_redis() else {
        return;
    };
    let up = echo_upstream(false).await;
    // Names differ per run, so a long-lived Redis holds no earlier counts.
    let run = run_id();
    let names = |yaml: String| {
        yaml.replace("alice", &format!("alice{run}"))
            .replace("bob", &format!("bob{run}"))
    };
    let yaml = names(plans_config(up.addr, &url, "free"));
    let (gw, catalog) = own_gateway_and_catalog(&yaml).await;
    let a = addr(&gw).await;
    let key = ("x-api-key", "a-key");
    for left in [2, 1] {
        let (s, h) = get_with_header(a, "/", key).await;
        assert_eq!(s, StatusCode::OK);
        // The plan's plugins answer with their headers (the consumer's response phase).
        let rl = h["ratelimit"].to_str().unwrap();
        assert!(rl.starts_with(&format!("\"hourly\";r={left};")), "{rl}");
        assert!(
            rl.contains("\"daily\";r="),
            "the plan's quota reports too: {rl}"
        );
        assert_eq!(
            h["ratelimit-policy"]
                .to_str()
                .unwrap()
                .split(", ")
                .next()
                .unwrap(),
            "\"hourly\";q=3;w=3600"
        );
    }
    // Moved to pro: the two requests counted so far still count.
    gw.apply(
        torii_config::load_str(
            "t.yaml",
            &names(plans_config(up.addr, &url, "pro")),
            &|_: &str| None,
            &*catalog,
        )
        .unwrap(),
    )
    .await
    .unwrap();
    let (s, h) = get_with_header(a, "/", key).await;
    assert_eq!(s, StatusCode::OK);
    let rl = h["ratelimit"].to_str().unwrap();
    assert!(rl.starts_with("\"hourly\";r=7;"), "10 - 3 used: {rl}");
    assert!(rl.contains("\"daily\";r=17;"), "20 - 3 used: {rl}");
    // Bob, still on free, has his own counts.
    let (s, h) = get_with_header(a, "/", ("x-api-key", "b-key")).await;
    assert_eq!(s, StatusCode::OK);
    assert!(h["ratelimit-policy"].to_str().unwrap().contains("q=3"));
}

async fn send_body(
    addr: SocketAddr,
    key: &str,
) -> (StatusCode, http::HeaderMap, serde_json::Value) {
    let req = http::Request::get(format!("http://{addr}/"))
        .header("x-api-key", key)
        .body(full(""))
        .unwrap();
    let resp = h1_client().request(req).await.unwrap();
    let (parts, body) = resp.into_parts();
    let b = http_body_util::BodyExt::collect(body)
        .await
        .unwrap()
        .to_bytes();
    (parts.status, parts.headers, json(&b))
}

#[tokio::test]
async fn plan_and_own_settings_run_both_phases_with_the_routes_other_plugins() {
    // The route sets a header after authentication; a plan's consumer (its chain compiled
    // at load) and a consumer with settings of its own (merged per request) both get the
    // route's header upstream and their own limit's headers back; a consumer without either
    // gets the route alone.
    let up = echo_upstream(false).await;
    let yaml = cfg(
        up.addr,
        None,
        &format!(
            "plans:\n  - name: p\n    plugins:\n      rate_limit: {{limits: [{{requests: 5, per: 1h, name: plan}}]}}\nconsumers:\n  - name: a\n    plan: p\n    keys: ['{}']\n  - name: b\n    keys: ['{}']\n    plugins:\n      rate_limit: {{limits: [{{requests: 7, per: 1h, name: own}}]}}\n  - name: c\n    keys: ['{}']\nroutes:\n{}",
            format_key_hash(b"ka"),
            format_key_hash(b"kb"),
            format_key_hash(b"kc"),
            route(
                "r",
                "/",
                "{key_auth: {}, request_headers: {set: {x-route: 'yes'}}}"
            )
        ),
    );
    let gw = gateway(&yaml).await;
    let a = addr(&gw).await;
    for (key, policy) in [
        ("ka", Some("\"plan\";q=5;w=3600")),
        ("kb", Some("\"own\";q=7;w=3600")),
        ("kc", None),
    ] {
        for _ in 0..2 {
            let (s, h, body) = send_body(a, key).await;
            assert_eq!(s, StatusCode::OK, "{key}");
            assert_eq!(
                body["headers"]["x-route"], "yes",
                "{key}: the route's plugin ran"
            );
            assert_eq!(
                h.get("ratelimit-policy").map(|v| v.to_str().unwrap()),
                policy,
                "{key}"
            );
        }
    }
}

#[tokio::test]
async fn spike_arrest_longer_than_the_window_is_a_config_error() {
    let up = echo_upstream(false).await;
    let plugin = "{rate_limit: {limits: [{requests: 10, per: 1s}], delay: 2s}}";
    let e = load_str(
        "t.yaml",
        &cfg(
            up.addr,
            None,
            &format!("routes:\n{}", route("r", "/", plugin)),
        ),
    )
    .err()
    .unwrap()
    .to_string();
    assert!(
        e.contains("rate_limit.delay") && e.contains("shortest"),
        "{e}"
    );
}

#[tokio::test]
async fn a_plan_that_does_not_exist_is_a_config_error() {
    let up = echo_upstream(false).await;
    let yaml = plans_config(up.addr, "redis://127.0.0.1:1", "gold");
    let e = load_str("t.yaml", &yaml).err().unwrap().to_string();
    assert!(
        e.contains("consumers[0].plan") && e.contains("no plan is named `gold`"),
        "{e}"
    );
}
