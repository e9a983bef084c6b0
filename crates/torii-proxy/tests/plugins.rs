//! Plugins end to end: the gateway with real chains against a fake upstream that echoes what
//! it received. Each test names the behaviour it guards.
#![allow(clippy::unwrap_used)]

mod support;

use http::{HeaderMap, Request, StatusCode};
use http_body_util::BodyExt;
use std::net::SocketAddr;
use support::*;
use torii_plugins::builtin::basic_auth::hash_password;
use torii_plugins::consumers::format_key_hash;

const ALICE_KEY: &str = "alice-key-0123456789abcdef";
const BOB_KEY: &str = "bob-key-0123456789abcdef";

fn consumers() -> String {
    format!(
        "consumers:\n  - name: alice\n    id: u-1\n    groups: [admin, staff]\n    keys: ['{}']\n  - name: bob\n    groups: [staff]\n    keys: ['{}']\n    plugins:\n      request_headers: {{set: {{x-tier: gold}}}}\n  - name: guest\n",
        format_key_hash(ALICE_KEY.as_bytes()),
        format_key_hash(BOB_KEY.as_bytes())
    )
}

fn gw_config(up: SocketAddr, extra: &str, routes: &str) -> String {
    config(&format!(
        "upstreams:\n  - name: up\n    targets: [{{url: 'http://{up}'}}]\n{}{extra}routes:\n{routes}",
        consumers()
    ))
}

async fn send(
    a: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, HeaderMap, serde_json::Value) {
    let mut b = Request::builder()
        .method(method)
        .uri(format!("http://{a}{path}"));
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let resp = h1_client()
        .request(b.body(full("")).unwrap())
        .await
        .unwrap();
    let (parts, body) = resp.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    let j = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    (parts.status, parts.headers, j)
}

const KEY_ROUTES: &str = "  - name: private\n    match: {path_prefix: /private}\n    upstream: up\n    plugins:\n      key_auth: {query_names: [apikey]}\n  - name: public\n    match: {path_prefix: /}\n    upstream: up\n";

#[tokio::test]
async fn key_auth_identifies_the_consumer_and_hides_the_key() {
    let up = echo_upstream(false).await;
    let gw = gateway(&gw_config(up.addr, "", KEY_ROUTES)).await;
    let a = addr(&gw).await;

    let (s, _, j) = send(a, "GET", "/private/x", &[("x-api-key", ALICE_KEY)]).await;
    assert_eq!(s, StatusCode::OK);
    let h = &j["headers"];
    assert_eq!(h["x-consumer-id"], "u-1");
    assert_eq!(h["x-consumer-name"], "alice");
    assert_eq!(h["x-consumer-groups"], "admin,staff");
    assert!(h.get("x-api-key").is_none(), "the key never goes upstream");

    // From the query string: removed from the upstream URI, other parameters kept.
    let (s, _, j) = send(
        a,
        "GET",
        &format!("/private/x?a=1&apikey={BOB_KEY}&b=2"),
        &[],
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(j["uri"], "/private/x?a=1&b=2");
    assert_eq!(j["headers"]["x-consumer-name"], "bob");
}

#[tokio::test]
async fn key_auth_removes_every_key_location_it_did_not_verify() {
    let up = echo_upstream(false).await;
    let routes = "  - name: private\n    match: {path_prefix: /private}\n    upstream: up\n    plugins:\n      key_auth: {header_names: [x-api-key, x-key], query_names: [apikey, key]}\n  - name: shown\n    match: {path_prefix: /shown}\n    upstream: up\n    plugins:\n      key_auth: {header_names: [x-api-key, x-key], query_names: [apikey, key], hide_credentials: false}\n";
    let gw = gateway(&gw_config(up.addr, "", routes)).await;
    let a = addr(&gw).await;
    let uri = format!("/private/x?apikey={BOB_KEY}&a=1&key={BOB_KEY}");
    let sent = [("x-api-key", ALICE_KEY), ("x-key", BOB_KEY)];
    let (s, _, j) = send(a, "GET", &uri, &sent).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(j["headers"]["x-consumer-name"], "alice");
    assert_eq!(j["uri"], "/private/x?a=1", "no key in the query: {j}");
    let text = j.to_string();
    assert!(!text.contains(BOB_KEY) && !text.contains(ALICE_KEY), "{j}");

    // Without hide_credentials only the verified key goes on.
    let uri = format!("/shown/x?apikey={BOB_KEY}&a=1");
    let (s, _, j) = send(a, "GET", &uri, &sent).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(j["headers"]["x-consumer-name"], "alice");
    assert_eq!(j["headers"]["x-api-key"], ALICE_KEY);
    assert_eq!(j["uri"], "/shown/x?a=1");
    assert!(!j.to_string().contains(BOB_KEY), "{j}");
    let (s, _, j) = send(
        a,
        "GET",
        &format!("/shown/x?key={BOB_KEY}&apikey={ALICE_KEY}"),
        &[],
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(j["headers"]["x-consumer-name"], "alice");
    assert_eq!(j["uri"], format!("/shown/x?apikey={ALICE_KEY}"));
}

#[tokio::test]
async fn key_auth_refuses_missing_and_invalid_keys_with_a_challenge() {
    let up = echo_upstream(false).await;
    let gw = gateway(&gw_config(up.addr, "", KEY_ROUTES)).await;
    let a = addr(&gw).await;
    for headers in [
        vec![],
        vec![("x-api-key", "wrong")],
        vec![("x-api-key", "")],
    ] {
        let (s, h, j) = send(a, "GET", "/private/x", &headers).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{headers:?}");
        assert_eq!(h["www-authenticate"], "ApiKey realm=\"torii\"");
        assert_eq!(j["error"]["code"], "unauthorized");
    }
    let long = "k".repeat(5000);
    let (s, _, _) = send(a, "GET", "/private/x", &[("x-api-key", &long)]).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn spoofed_identity_headers_are_stripped_in_both_spellings() {
    let up = echo_upstream(false).await;
    let gw = gateway(&gw_config(up.addr, "", KEY_ROUTES)).await;
    let a = addr(&gw).await;
    let spoof = [
        ("x-consumer-id", "admin"),
        ("x_consumer_id", "admin"),
        ("X_Consumer_Name", "root"),
        ("x-consumer_groups", "admin"),
        ("x-anonymous-consumer", "false"),
        // The default identity-token header, although no identity token is configured.
        ("x-identity-token", "forged"),
        ("X_Identity_Token", "forged"),
    ];
    // On a public route (no authentication at all) ...
    let (s, _, j) = send(a, "GET", "/open", &spoof).await;
    assert_eq!(s, StatusCode::OK);
    let h = j["headers"].as_object().unwrap();
    for (k, _) in &spoof {
        assert!(
            !h.contains_key(&k.to_ascii_lowercase()),
            "{k} reached the upstream: {h:?}"
        );
    }
    // ... and on an authenticated one, where only the gateway's values arrive.
    let mut with_key = spoof.to_vec();
    with_key.push(("x-api-key", BOB_KEY));
    let (_, _, j) = send(a, "GET", "/private", &with_key).await;
    let h = j["headers"].as_object().unwrap();
    assert_eq!(h["x-consumer-name"], "bob");
    assert_eq!(h["x-consumer-groups"], "staff");
    assert!(!h.contains_key("x_consumer_id") && !h.contains_key("x-anonymous-consumer"));
}

/// The identity fields reach the upstream once each, with the gateway's values, whichever
/// way they are written: by the upstream writer (a route without exchange plugins, HTTP/1.1
/// or HTTP/2) or through the header map (a route with one), also when a plugin set a value
/// under one of their names.
#[tokio::test]
async fn identity_fields_are_sent_once_with_or_without_exchange_plugins() {
    let up = echo_upstream(false).await;
    let up2 = echo_upstream(true).await;
    let set = "request_headers: {set: {x-consumer-id: forged, x-consumer-name: forged, x-anonymous-consumer: forged}}";
    let routes = format!(
        "  - name: direct\n    match: {{path_prefix: /direct}}\n    upstream: up\n    anonymous: guest\n    plugins:\n      key_auth: {{}}\n      {set}\n  - name: staged\n    match: {{path_prefix: /staged}}\n    upstream: up\n    anonymous: guest\n    plugins:\n      key_auth: {{}}\n      {set}\n      response_transform: {{set_headers: {{x-a: b}}}}\n  - name: h2\n    match: {{path_prefix: /h2}}\n    upstream: up2\n    anonymous: guest\n    plugins:\n      key_auth: {{}}\n      {set}\n"
    );
    let extra = format!(
        "  - name: up2\n    protocol: http2\n    targets: [{{url: 'http://{}'}}]\n",
        up2.addr
    );
    let cfg =
        gw_config(up.addr, "", &routes).replacen("consumers:", &format!("{extra}consumers:"), 1);
    let gw = gateway(&cfg).await;
    let a = addr(&gw).await;
    let sent = |j: &serde_json::Value, name: &str| -> Vec<String> {
        j["fields"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f[0] == name)
            .map(|f| f[1].as_str().unwrap().to_string())
            .collect()
    };
    for path in ["/direct", "/staged", "/h2"] {
        let (s, resp, j) = send(a, "GET", path, &[("x-api-key", ALICE_KEY)]).await;
        assert_eq!(s, StatusCode::OK, "{path}");
        assert_eq!(sent(&j, "x-consumer-id"), ["u-1"], "{path}: {j}");
        assert_eq!(sent(&j, "x-consumer-name"), ["alice"], "{path}: {j}");
        assert_eq!(
            sent(&j, "x-consumer-groups"),
            ["admin,staff"],
            "{path}: {j}"
        );
        // Not anonymous: the plugin's value of that name is not the gateway's to remove.
        assert_eq!(sent(&j, "x-anonymous-consumer"), ["forged"], "{path}: {j}");
        assert_eq!(resp.contains_key("x-a"), path == "/staged");
        let (s, _, j) = send(a, "GET", path, &[]).await;
        assert_eq!(s, StatusCode::OK, "{path}");
        assert_eq!(sent(&j, "x-consumer-name"), ["guest"], "{path}: {j}");
        assert_eq!(sent(&j, "x-anonymous-consumer"), ["true"], "{path}: {j}");
        assert!(sent(&j, "x-consumer-groups").is_empty(), "{path}: {j}");
    }
}

/// With `hide_credentials: false` only the verified key goes upstream: of two values of the
/// key's field, the first (the one checked), once.
#[tokio::test]
async fn key_auth_keeps_only_the_verified_value_of_a_repeated_key_field() {
    let up = echo_upstream(false).await;
    let routes = "  - name: r\n    match: {path_prefix: /}\n    upstream: up\n    plugins:\n      key_auth: {hide_credentials: false}\n";
    let gw = gateway(&gw_config(up.addr, "", routes)).await;
    let a = addr(&gw).await;
    let (s, _, j) = send(
        a,
        "GET",
        "/x",
        &[("x-api-key", ALICE_KEY), ("x-api-key", "other")],
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let keys: Vec<&serde_json::Value> = j["fields"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f[0] == "x-api-key")
        .map(|f| &f[1])
        .collect();
    assert_eq!(keys, [ALICE_KEY], "{j}");
    assert_eq!(j["headers"]["x-consumer-name"], "alice");
    // One value: it stays as it came.
    let (_, _, j) = send(a, "GET", "/x", &[("x-api-key", BOB_KEY)]).await;
    assert_eq!(j["headers"]["x-api-key"], BOB_KEY);
}

#[tokio::test]
async fn anonymous_consumer_only_for_requests_without_credentials() {
    let up = echo_upstream(false).await;
    let routes = "  - name: r\n    match: {path_prefix: /}\n    upstream: up\n    anonymous: guest\n    plugins:\n      key_auth: {}\n";
    let gw = gateway(&gw_config(up.addr, "", routes)).await;
    let a = addr(&gw).await;
    let (s, _, j) = send(a, "GET", "/x", &[]).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(j["headers"]["x-consumer-name"], "guest");
    assert_eq!(j["headers"]["x-anonymous-consumer"], "true");
    let (s, _, _) = send(a, "GET", "/x", &[("x-api-key", "not-a-key")]).await;
    assert_eq!(
        s,
        StatusCode::UNAUTHORIZED,
        "a bad credential never falls back to anonymous"
    );
    let (_, _, j) = send(a, "GET", "/x", &[("x-api-key", ALICE_KEY)]).await;
    assert_eq!(j["headers"]["x-consumer-name"], "alice");
    assert!(j["headers"].get("x-anonymous-consumer").is_none());
}

#[tokio::test]
async fn most_specific_scope_wins() {
    let up = echo_upstream(false).await;
    // Global key_auth reads x-api-key; one route replaces it (reads x-key), one disables it.
    let extra = "plugins:\n  key_auth: {}\n  request_headers: {set: {x-tier: basic}}\n";
    let routes = "  - name: custom\n    match: {path_prefix: /custom}\n    upstream: up\n    plugins:\n      key_auth: {header_names: [x-key]}\n  - name: open\n    match: {path_prefix: /open}\n    upstream: up\n    disable_plugins: [key_auth]\n  - name: default\n    match: {path_prefix: /}\n    upstream: up\n";
    let gw = gateway(&gw_config(up.addr, extra, routes)).await;
    let a = addr(&gw).await;
    assert_eq!(send(a, "GET", "/x", &[]).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(
        send(a, "GET", "/x", &[("x-api-key", ALICE_KEY)]).await.0,
        StatusCode::OK
    );
    // Route settings replace the global ones.
    assert_eq!(
        send(a, "GET", "/custom", &[("x-api-key", ALICE_KEY)])
            .await
            .0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        send(a, "GET", "/custom", &[("x-key", ALICE_KEY)]).await.0,
        StatusCode::OK
    );
    // A disabled global plugin does not run.
    let (s, _, j) = send(a, "GET", "/open", &[]).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        j["headers"]["x-tier"], "basic",
        "other global plugins still run"
    );
    // Consumer settings replace route/global ones once the consumer is known.
    let (_, _, j) = send(a, "GET", "/x", &[("x-api-key", BOB_KEY)]).await;
    assert_eq!(j["headers"]["x-tier"], "gold");
    let (_, _, j) = send(a, "GET", "/x", &[("x-api-key", ALICE_KEY)]).await;
    assert_eq!(j["headers"]["x-tier"], "basic");
}

#[tokio::test]
async fn basic_auth_verifies_argon2_and_cache_follows_password_changes() {
    let up = echo_upstream(false).await;
    let yaml = |hash: &str| {
        config(&format!(
            "upstreams:\n  - name: up\n    targets: [{{url: 'http://{}'}}]\nconsumers:\n  - name: carol\n    basic_auth: [{{username: carol, password_hash: '{hash}'}}]\nroutes:\n  - name: r\n    match: {{path_prefix: /}}\n    upstream: up\n    plugins:\n      basic_auth: {{realm: api}}\n",
            up.addr
        ))
    };
    let gw = gateway(&yaml(&hash_password("old-pw").unwrap())).await;
    let a = addr(&gw).await;
    let basic = |u: &str, p: &str| {
        use base64::Engine as _;
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
        )
    };
    let (s, _, j) = send(
        a,
        "GET",
        "/",
        &[("authorization", &basic("carol", "old-pw"))],
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(j["headers"]["x-consumer-name"], "carol");
    assert!(
        j["headers"].get("authorization").is_none(),
        "credentials hidden"
    );
    for (u, p) in [("carol", "wrong"), ("mallory", "old-pw")] {
        let (s, h, _) = send(a, "GET", "/", &[("authorization", &basic(u, p))]).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
        assert_eq!(
            h["www-authenticate"],
            "Basic realm=\"api\", charset=\"UTF-8\""
        );
    }
    let (s, _, _) = send(a, "GET", "/", &[("authorization", "Basic %%%")]).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    // The old password is cached now; after a reload that changes it, it stops working.
    gw.apply(load_str("t.yaml", &yaml(&hash_password("new-pw").unwrap())).unwrap())
        .await
        .unwrap();
    let (s, _, _) = send(
        a,
        "GET",
        "/",
        &[("authorization", &basic("carol", "old-pw"))],
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _, _) = send(
        a,
        "GET",
        "/",
        &[("authorization", &basic("carol", "new-pw"))],
    )
    .await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test]
async fn ip_restriction_uses_the_resolved_client_address() {
    let up = echo_upstream(false).await;
    let routes = "  - name: deny\n    match: {path_prefix: /deny}\n    upstream: up\n    plugins:\n      ip_restriction: {deny: ['127.0.0.0/8', '::1/128']}\n  - name: allow\n    match: {path_prefix: /allow}\n    upstream: up\n    plugins:\n      ip_restriction: {allow: ['10.0.0.0/8']}\n  - name: mine\n    match: {path_prefix: /mine}\n    upstream: up\n    plugins:\n      ip_restriction: {allow: ['127.0.0.1/32']}\n";
    let gw = gateway(&gw_config(up.addr, "", routes)).await;
    let a = addr(&gw).await;
    assert_eq!(send(a, "GET", "/deny", &[]).await.0, StatusCode::FORBIDDEN);
    assert_eq!(send(a, "GET", "/allow", &[]).await.0, StatusCode::FORBIDDEN);
    assert_eq!(send(a, "GET", "/mine", &[]).await.0, StatusCode::OK);
    // The peer is not a trusted proxy: X-Forwarded-For does not change who the client is.
    let xff = [
        ("x-forwarded-for", "10.1.2.3"),
        ("forwarded", "for=10.1.2.3"),
    ];
    assert_eq!(
        send(a, "GET", "/allow", &xff).await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(send(a, "GET", "/deny", &xff).await.0, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn ip_restriction_rules_written_as_ipv4_mapped_match_ipv4_clients() {
    let up = echo_upstream(false).await;
    let routes = "  - name: deny\n    match: {path_prefix: /deny}\n    upstream: up\n    plugins:\n      ip_restriction: {deny: ['::ffff:127.0.0.1']}\n  - name: denynet\n    match: {path_prefix: /net}\n    upstream: up\n    plugins:\n      ip_restriction: {deny: ['::ffff:127.0.0.0/104']}\n  - name: allow\n    match: {path_prefix: /allow}\n    upstream: up\n    plugins:\n      ip_restriction: {allow: ['::ffff:127.0.0.0/104']}\n";
    let gw = gateway(&gw_config(up.addr, "", routes)).await;
    let a = addr(&gw).await;
    assert_eq!(send(a, "GET", "/deny", &[]).await.0, StatusCode::FORBIDDEN);
    assert_eq!(send(a, "GET", "/net", &[]).await.0, StatusCode::FORBIDDEN);
    assert_eq!(send(a, "GET", "/allow", &[]).await.0, StatusCode::OK);

    // A mapped network wider than the mapped range is refused, not loaded to fail open.
    let routes = "  - name: r\n    match: {path_prefix: /}\n    upstream: up\n    plugins:\n      ip_restriction: {deny: ['::ffff:127.0.0.0/80']}\n";
    let err = load_str("t.yaml", &gw_config(up.addr, "", routes))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("IPv4-mapped"), "{err}");
}

#[tokio::test]
async fn ip_restriction_honours_trusted_proxies() {
    let up = echo_upstream(false).await;
    let yaml = format!(
        "listeners:\n  - name: public\n    bind: 127.0.0.1:0\n    trusted_proxies: ['127.0.0.1/32']\nadmin:\n  enabled: false\naccess_log:\n  enabled: false\nserver:\n  watch_config: false\nupstreams:\n  - name: up\n    targets: [{{url: 'http://{}'}}]\nroutes:\n  - name: allow\n    match: {{path_prefix: /}}\n    upstream: up\n    plugins:\n      ip_restriction: {{allow: ['10.0.0.0/8']}}\n",
        up.addr
    );
    let gw = gateway(&yaml).await;
    let a = addr(&gw).await;
    assert_eq!(
        send(a, "GET", "/", &[("x-forwarded-for", "10.1.2.3")])
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(
        send(a, "GET", "/", &[("x-forwarded-for", "192.0.2.1")])
            .await
            .0,
        StatusCode::FORBIDDEN
    );
}

const CORS_ROUTES: &str = "  - name: api\n    match: {path_prefix: /api, methods: [GET]}\n    upstream: up\n    plugins:\n      cors:\n        allow_origins: ['https://app.example.com', 'https://*.example.org']\n        allow_credentials: true\n        expose_headers: [x-request-id]\n        max_age: 10m\n      key_auth: {}\n  - name: any\n    match: {path_prefix: /any}\n    upstream: up\n    plugins:\n      cors: {allow_origins: ['*']}\n";

#[tokio::test]
async fn cors_preflight_is_answered_even_when_the_route_lacks_options() {
    let up = echo_upstream(false).await;
    let gw = gateway(&gw_config(up.addr, "", CORS_ROUTES)).await;
    let a = addr(&gw).await;
    let pre = |origin: &'static str, method: &'static str| {
        vec![
            ("origin", origin),
            ("access-control-request-method", method),
            ("access-control-request-headers", "x-api-key, content-type"),
        ]
    };
    let (s, h, _) = send(
        a,
        "OPTIONS",
        "/api/items",
        &pre("https://app.example.com", "GET"),
    )
    .await;
    assert_eq!(
        s,
        StatusCode::NO_CONTENT,
        "never 405, never 401 for a preflight"
    );
    assert_eq!(h["access-control-allow-origin"], "https://app.example.com");
    assert_eq!(h["access-control-allow-credentials"], "true");
    assert_eq!(h["access-control-max-age"], "600");
    assert_eq!(h["access-control-allow-headers"], "x-api-key, content-type");
    assert!(
        h["access-control-allow-methods"]
            .to_str()
            .unwrap()
            .contains("GET")
    );
    assert!(h["vary"].to_str().unwrap().contains("Origin"));
    // Wildcard subdomain: a subdomain matches, the apex does not.
    let (s, _, _) = send(
        a,
        "OPTIONS",
        "/api/items",
        &pre("https://x.example.org", "GET"),
    )
    .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    for bad in [
        "https://example.org",
        "https://evil.com",
        "null",
        "https://app.example.com.evil.com",
        "http://app.example.com",
    ] {
        let (s, h, _) = send(a, "OPTIONS", "/api/items", &pre(bad, "GET")).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{bad}");
        assert!(h.get("access-control-allow-origin").is_none(), "{bad}");
    }
    // A method the policy does not allow: the ordinary answer, which does not list it (the
    // browser refuses the actual request).
    let (s, h, _) = send(
        a,
        "OPTIONS",
        "/api/items",
        &pre("https://app.example.com", "TRACE"),
    )
    .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let methods = h["access-control-allow-methods"].to_str().unwrap();
    assert!(!methods.contains("TRACE"), "{methods}");
}

#[tokio::test]
async fn cors_preflight_for_a_method_the_route_does_not_allow_is_never_405() {
    let up = echo_upstream(false).await;
    let gw = gateway(&gw_config(up.addr, "", CORS_ROUTES)).await;
    let a = addr(&gw).await;
    // The route allows GET only; the policy allows DELETE (its default methods).
    for asked in ["DELETE", "PUT", "NOT A METHOD"] {
        let (s, h, _) = send(
            a,
            "OPTIONS",
            "/api/items",
            &[
                ("origin", "https://app.example.com"),
                ("access-control-request-method", asked),
            ],
        )
        .await;
        assert_eq!(s, StatusCode::NO_CONTENT, "{asked}: {h:?}");
        assert!(h.get("allow").is_none(), "{asked}");
        assert_eq!(h["access-control-allow-origin"], "https://app.example.com");
        assert_eq!(h["access-control-allow-methods"], "GET", "{asked}");
    }
    // The actual request is still refused by the router.
    let (s, h, _) = send(
        a,
        "DELETE",
        "/api/items",
        &[("origin", "https://app.example.com")],
    )
    .await;
    assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(h["allow"], "GET");
    // A plain OPTIONS (no preflight) is still 405.
    let (s, _, _) = send(a, "OPTIONS", "/api/items", &[]).await;
    assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn cors_headers_on_upstream_and_gateway_responses_only_for_allowed_origins() {
    let up = echo_upstream(false).await;
    let gw = gateway(&gw_config(up.addr, "", CORS_ROUTES)).await;
    let a = addr(&gw).await;
    let origin = ("origin", "https://app.example.com");
    let (s, h, _) = send(a, "GET", "/api/items", &[origin, ("x-api-key", ALICE_KEY)]).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(h["access-control-allow-origin"], "https://app.example.com");
    assert_eq!(h["access-control-expose-headers"], "x-request-id");
    assert!(h["vary"].to_str().unwrap().contains("Origin"));
    // The gateway's own 401 is readable by the browser.
    let (s, h, _) = send(a, "GET", "/api/items", &[origin]).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(h["access-control-allow-origin"], "https://app.example.com");
    assert_eq!(h["access-control-allow-credentials"], "true");
    // A disallowed origin gets none.
    let (_, h, _) = send(
        a,
        "GET",
        "/api/items",
        &[("origin", "https://evil.com"), ("x-api-key", ALICE_KEY)],
    )
    .await;
    assert!(h.get("access-control-allow-origin").is_none());
    // `*` without credentials; `null` is not covered by `*`.
    let (_, h, _) = send(a, "GET", "/any", &[("origin", "https://whoever.test")]).await;
    assert_eq!(h["access-control-allow-origin"], "*");
    assert!(h.get("access-control-allow-credentials").is_none());
    let (_, h, _) = send(a, "GET", "/any", &[("origin", "null")]).await;
    assert!(h.get("access-control-allow-origin").is_none());
}

#[tokio::test]
async fn bot_detection_denies_listed_agents() {
    let up = echo_upstream(false).await;
    let routes = "  - name: r\n    match: {path_prefix: /}\n    upstream: up\n    plugins:\n      bot_detection: {deny: ['evilcrawler/\\d+'], allow: ['sqlmap-internal-audit'], deny_empty_user_agent: true}\n";
    let gw = gateway(&gw_config(up.addr, "", routes)).await;
    let a = addr(&gw).await;
    for ua in [
        "sqlmap/1.7",
        "Mozilla/5.0 (compatible; AhrefsBot/7.0)",
        "EvilCrawler/2",
        "",
    ] {
        let (s, _, _) = send(a, "GET", "/", &[("user-agent", ua)]).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{ua:?}");
    }
    assert_eq!(
        send(a, "GET", "/", &[]).await.0,
        StatusCode::FORBIDDEN,
        "no User-Agent"
    );
    for ua in [
        "Mozilla/5.0 Firefox/130.0",
        "curl/8.5.0",
        "sqlmap-internal-audit/1",
        "evilcrawler/x",
    ] {
        let (s, _, _) = send(a, "GET", "/", &[("user-agent", ua)]).await;
        assert_eq!(s, StatusCode::OK, "{ua:?}");
    }
}

#[tokio::test]
async fn request_size_limit_per_route() {
    let up = echo_upstream(false).await;
    let routes = "  - name: small\n    match: {path_prefix: /small}\n    upstream: up\n    plugins:\n      request_size_limit: {max_body: 1KiB, max_headers: 20}\n  - name: big\n    match: {path_prefix: /}\n    upstream: up\n";
    let gw = gateway(&gw_config(up.addr, "", routes)).await;
    let a = addr(&gw).await;
    let post = |path: &str, body: Vec<u8>, chunked: bool| {
        let uri = format!("http://{a}{path}");
        async move {
            let body = if chunked {
                let s = futures_util::stream::iter(
                    body.chunks(100)
                        .map(|c| {
                            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(
                                http_body::Frame::data(bytes::Bytes::copy_from_slice(c)),
                            )
                        })
                        .collect::<Vec<_>>(),
                );
                http_body_util::StreamBody::new(s).boxed()
            } else {
                full(body)
            };
            h1_client()
                .request(Request::post(uri).body(body).unwrap())
                .await
                .map(|r| r.status())
        }
    };
    assert_eq!(
        post("/small", vec![b'x'; 2000], false).await.unwrap(),
        StatusCode::PAYLOAD_TOO_LARGE
    );
    assert_eq!(
        post("/small", vec![b'x'; 500], false).await.unwrap(),
        StatusCode::OK
    );
    // A chunked body (no Content-Length) is cut off as it streams.
    let chunked = post("/small", vec![b'x'; 5000], true).await;
    assert!(
        matches!(chunked, Ok(StatusCode::PAYLOAD_TOO_LARGE) | Err(_)),
        "{chunked:?}"
    );
    assert_eq!(
        post("/big", vec![b'x'; 5000], true).await.unwrap(),
        StatusCode::OK
    );
    let many: Vec<(String, &str)> = (0..30).map(|i| (format!("x-h{i}"), "v")).collect();
    let refs: Vec<(&str, &str)> = many.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    assert_eq!(
        send(a, "GET", "/small", &refs).await.0,
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
    );
    assert_eq!(send(a, "GET", "/big", &refs).await.0, StatusCode::OK);
}

#[tokio::test]
async fn acl_by_groups() {
    let up = echo_upstream(false).await;
    let routes = "  - name: admin\n    match: {path_prefix: /admin}\n    upstream: up\n    plugins:\n      key_auth: {}\n      acl: {allow_groups: [admin]}\n  - name: staff\n    match: {path_prefix: /staff}\n    upstream: up\n    plugins:\n      key_auth: {}\n      acl: {allow_groups: [staff], deny_groups: [admin]}\n  - name: noauth\n    match: {path_prefix: /noauth}\n    upstream: up\n    plugins:\n      acl: {allow_groups: [staff]}\n";
    let gw = gateway(&gw_config(up.addr, "", routes)).await;
    let a = addr(&gw).await;
    let alice = [("x-api-key", ALICE_KEY)];
    let bob = [("x-api-key", BOB_KEY)];
    assert_eq!(send(a, "GET", "/admin", &alice).await.0, StatusCode::OK);
    assert_eq!(
        send(a, "GET", "/admin", &bob).await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(send(a, "GET", "/staff", &bob).await.0, StatusCode::OK);
    assert_eq!(
        send(a, "GET", "/staff", &alice).await.0,
        StatusCode::FORBIDDEN,
        "deny wins"
    );
    assert_eq!(
        send(a, "GET", "/admin", &[]).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        send(a, "GET", "/noauth", &[]).await.0,
        StatusCode::FORBIDDEN,
        "acl without a consumer"
    );
}

/// Route-level authentication cannot be bypassed with path or host tricks: the router sees the
/// normalised path and host, and the upstream receives the path the router matched.
#[tokio::test]
async fn auth_cannot_be_bypassed_by_path_or_host_tricks() {
    let up = echo_upstream(false).await;
    let routes = "  - name: private\n    match: {path_prefix: /private}\n    upstream: up\n    plugins:\n      key_auth: {}\n  - name: admin-host\n    match: {hosts: [admin.example.com], path_prefix: /}\n    upstream: up\n    plugins:\n      key_auth: {}\n  - name: public\n    match: {path_prefix: /}\n    upstream: up\n";
    let gw = gateway(&gw_config(up.addr, "", routes)).await;
    let a = addr(&gw).await;
    let req = |target: &str, host: &str| {
        format!("GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")
    };
    for target in [
        "/public/../private",
        "/public/%2e%2e/private",
        "/public/%2E%2E/private",
        "/%70rivate",
        "//private",
        "/./private",
        "/public/..;/private",
        "/public\\..\\private",
        "/private/",
        "/private/x/../y",
    ] {
        let out = raw(a, req(target, "api.example.com").as_bytes()).await;
        let status = out.split(' ').nth(1).unwrap_or("");
        assert!(
            status == "401" || status == "400",
            "{target} got past authentication: {}",
            out.lines().next().unwrap_or("")
        );
    }
    // What passes to the public route is what the router matched, never a private path.
    for target in ["/PRIVATE", "/private%2Fx", "/privatex"] {
        let out = raw(a, req(target, "api.example.com").as_bytes()).await;
        if out.starts_with("HTTP/1.1 200") {
            let body = out.split("\r\n\r\n").nth(1).unwrap_or("");
            let uri = body
                .split("\"uri\":\"")
                .nth(1)
                .unwrap_or("")
                .split('"')
                .next()
                .unwrap_or("");
            assert!(
                !uri.starts_with("/private/") && uri != "/private",
                "{target} reached {uri}"
            );
        }
    }
    // Host tricks: case, trailing dot, port, absolute form, duplicate Host.
    for host in [
        "admin.example.com",
        "ADMIN.Example.COM",
        "admin.example.com.",
        "admin.example.com:80",
    ] {
        let out = raw(a, req("/x", host).as_bytes()).await;
        assert!(
            out.starts_with("HTTP/1.1 401"),
            "host {host}: {}",
            out.lines().next().unwrap_or("")
        );
    }
    let absolute = "GET http://admin.example.com/x HTTP/1.1\r\nHost: api.example.com\r\nConnection: close\r\n\r\n";
    let out = raw(a, absolute.as_bytes()).await;
    assert!(
        out.starts_with("HTTP/1.1 401") || out.starts_with("HTTP/1.1 400"),
        "{}",
        out.lines().next().unwrap_or("")
    );
    let dup = "GET /x HTTP/1.1\r\nHost: api.example.com\r\nHost: admin.example.com\r\nConnection: close\r\n\r\n";
    let out = raw(a, dup.as_bytes()).await;
    assert!(
        out.starts_with("HTTP/1.1 400"),
        "{}",
        out.lines().next().unwrap_or("")
    );
}

#[tokio::test]
async fn plugin_config_errors_name_the_line_and_key() {
    let bad = config(
        "consumers:\n  - name: a\n    keys: ['plain-text-key']\nroutes:\n  - name: r\n    match: {path: /}\n    direct_response: {status: 200}\n    plugins:\n      key_auht: {}\n      cors: {allow_origins: ['https://ok.test', 'not an origin']}\n      bot_detection: {deny: ['(unclosed']}\n",
    );
    let err = load_str("t.yaml", &bad).unwrap_err().to_string();
    assert!(
        err.contains("key_auht") && err.contains("key_auth"),
        "did-you-mean: {err}"
    );
    let bad2 = config(
        "consumers:\n  - name: a\n    keys: ['plain-text-key']\n  - name: a\nroutes:\n  - name: r\n    match: {path: /}\n    direct_response: {status: 200}\n    anonymous: nobody\n    disable_plugins: [nope]\n    plugins:\n      cors: {allow_origins: ['https://ok.test', 'not an origin']}\n      bot_detection: {deny: ['(unclosed']}\n",
    );
    let err = load_str("t.yaml", &bad2).unwrap_err().to_string();
    for needle in [
        "consumers[0].keys[0]",
        "torii hash-key",
        "consumers[1].name",
        "routes[0].anonymous",
        "routes[0].disable_plugins[0]",
        "routes[0].plugins.cors.allow_origins[1]",
        "routes[0].plugins.bot_detection.deny[0]",
    ] {
        assert!(err.contains(needle), "missing {needle} in:\n{err}");
    }
    assert!(
        !err.contains("`plain-text-key`"),
        "a raw key is never quoted in a message:\n{err}"
    );
}

#[tokio::test]
async fn access_log_names_the_consumer_and_redacts_plugin_query_keys() {
    let up = echo_upstream(false).await;
    let routes = "  - name: r\n    match: {path_prefix: /}\n    upstream: up\n    plugins:\n      key_auth: {query_names: [creds]}\n";
    let (cfg, log) = with_access_log(gw_config(up.addr, "", routes), "plugins");
    let gw = gateway(&cfg).await;
    let a = addr(&gw).await;
    let (s, h, _) = send(a, "GET", &format!("/x?creds={ALICE_KEY}&y=1"), &[]).await;
    assert_eq!(s, StatusCode::OK);
    let line = log_line(&log, h["x-request-id"].to_str().unwrap()).await;
    assert!(!line.contains(ALICE_KEY), "the key is redacted: {line}");
    let j = json(line.as_bytes());
    assert_eq!(j["path"], "/x?creds=REDACTED&y=1");
    assert_eq!(j["consumer"], "alice");
    assert_eq!(j["auth"], "key_auth");
}

const JWT_SECRET: &str = "acl-test-secret-0123456789abcdef0123456789";

fn hs256(claims: serde_json::Value) -> String {
    let _ = jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER.install_default();
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .unwrap()
}

#[tokio::test]
async fn acl_requires_token_scopes_and_claim_values() {
    let up = echo_upstream(false).await;
    let routes = format!(
        "  - name: r\n    match: {{path_prefix: /}}\n    upstream: up\n    plugins:\n      jwt: {{issuers: [{{issuer: idp, algorithms: [HS256], keys: [{{secret: '{JWT_SECRET}'}}]}}]}}\n      acl: {{require_scopes: ['orders:read'], require_claims: {{tenant: [acme, globex]}}}}\n"
    );
    let gw = gateway(&gw_config(up.addr, "", &routes)).await;
    let a = addr(&gw).await;
    let exp = 4_102_444_800u64;
    let cases = [
        (
            serde_json::json!({"iss": "idp", "sub": "u-1", "exp": exp, "scope": "orders:read orders:write", "tenant": "acme"}),
            StatusCode::OK,
        ),
        (
            serde_json::json!({"iss": "idp", "sub": "u-1", "exp": exp, "scp": ["orders:read"], "tenant": ["globex", "x"]}),
            StatusCode::OK,
        ),
        (
            serde_json::json!({"iss": "idp", "sub": "u-1", "exp": exp, "scope": "orders:write", "tenant": "acme"}),
            StatusCode::FORBIDDEN,
        ),
        (
            serde_json::json!({"iss": "idp", "sub": "u-1", "exp": exp, "scope": "orders:read", "tenant": "initech"}),
            StatusCode::FORBIDDEN,
        ),
        (
            serde_json::json!({"iss": "idp", "sub": "u-1", "exp": exp, "scope": "orders:read"}),
            StatusCode::FORBIDDEN,
        ),
        (
            serde_json::json!({"iss": "idp", "sub": "nobody", "exp": exp, "scope": "orders:read", "tenant": "acme"}),
            StatusCode::UNAUTHORIZED,
        ),
    ];
    for (claims, want) in cases {
        let token = format!("Bearer {}", hs256(claims.clone()));
        let (s, h, j) = send(a, "GET", "/o", &[("authorization", &token)]).await;
        assert_eq!(s, want, "{claims}");
        if want == StatusCode::OK {
            assert_eq!(j["headers"]["x-consumer-name"], "alice");
        } else {
            assert_eq!(
                j["error"]["code"],
                if want == StatusCode::FORBIDDEN {
                    "forbidden"
                } else {
                    "unauthorized"
                }
            );
            if want == StatusCode::UNAUTHORIZED {
                assert!(
                    h["www-authenticate"]
                        .to_str()
                        .unwrap()
                        .starts_with("Bearer")
                );
            }
        }
    }
}

#[tokio::test]
async fn cors_origin_regex_is_anchored() {
    let up = echo_upstream(false).await;
    let routes = "  - name: r\n    match: {path_prefix: /}\n    upstream: up\n    plugins:\n      cors: {allow_origin_regex: ['https://pr-[0-9]+\\.preview\\.example\\.com']}\n";
    let gw = gateway(&gw_config(up.addr, "", routes)).await;
    let a = addr(&gw).await;
    let (_, h, _) = send(
        a,
        "GET",
        "/",
        &[("origin", "https://pr-42.preview.example.com")],
    )
    .await;
    assert_eq!(
        h["access-control-allow-origin"],
        "https://pr-42.preview.example.com"
    );
    for bad in [
        "https://pr-42.preview.example.com.evil.io",
        "https://evil.io/https://pr-1.preview.example.com",
        "http://pr-1.preview.example.com",
    ] {
        let (_, h, _) = send(a, "GET", "/", &[("origin", bad)]).await;
        assert!(h.get("access-control-allow-origin").is_none(), "{bad}");
    }
}

#[tokio::test]
async fn request_size_limit_counts_header_bytes() {
    let up = echo_upstream(false).await;
    let routes = "  - name: r\n    match: {path_prefix: /}\n    upstream: up\n    plugins:\n      request_size_limit: {max_header_bytes: 1KiB}\n";
    let gw = gateway(&gw_config(up.addr, "", routes)).await;
    let a = addr(&gw).await;
    let big = "v".repeat(2000);
    assert_eq!(
        send(a, "GET", "/", &[("x-big", &big)]).await.0,
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
    );
    assert_eq!(
        send(a, "GET", "/", &[("x-small", "v")]).await.0,
        StatusCode::OK
    );
}

/// Review fixes: consumer settings on a route whose last plugin authenticates; a client
/// naming gateway-added headers in `Connection`; an unverified second credential; two
/// Authorization headers.
#[tokio::test]
async fn consumer_settings_connection_tricks_and_unverified_credentials() {
    let up = echo_upstream(false).await;
    let routes = format!(
        "  - name: private\n    match: {{path_prefix: /private}}\n    upstream: up\n    plugins:\n      key_auth: {{}}\n  - name: both\n    match: {{path_prefix: /both}}\n    upstream: up\n    plugins:\n      key_auth: {{}}\n      jwt: {{issuers: [{{issuer: idp, algorithms: [HS256], keys: [{{secret: '{JWT_SECRET}'}}]}}]}}\n  - name: anon\n    match: {{path_prefix: /anon}}\n    upstream: up\n    anonymous: guest\n    plugins:\n      key_auth: {{}}\n"
    );
    let gw = gateway(&gw_config(up.addr, "", &routes)).await;
    let a = addr(&gw).await;
    // bob's own request_headers run although nothing follows key_auth on the route.
    let (_, _, j) = send(
        a,
        "GET",
        "/private",
        &[("x-api-key", BOB_KEY), ("x-tier", "forged")],
    )
    .await;
    assert_eq!(j["headers"]["x-tier"], "gold");
    // `Connection: x-anonymous-consumer` cannot remove the anonymous marker.
    let raw_req = "GET /anon HTTP/1.1\r\nHost: x\r\nConnection: close, x-anonymous-consumer, x-consumer-name\r\n\r\n";
    let out = raw(a, raw_req.as_bytes()).await;
    let body = out.split("\r\n\r\n").nth(1).unwrap_or("");
    let j = json(body.trim().as_bytes());
    assert_eq!(j["headers"]["x-anonymous-consumer"], "true", "{body}");
    assert_eq!(j["headers"]["x-consumer-name"], "guest");
    // A valid key plus a forged token: the token was never verified and does not go upstream.
    let (s, _, j) = send(
        a,
        "GET",
        "/both",
        &[
            ("x-api-key", ALICE_KEY),
            ("authorization", "Bearer forged.token.here"),
        ],
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert!(j["headers"].get("authorization").is_none(), "{j}");
    // Two Authorization headers: one could be checked and the other forwarded.
    let two = "GET /both HTTP/1.1\r\nHost: x\r\nAuthorization: Basic YTpi\r\nAuthorization: Bearer x\r\nConnection: close\r\n\r\n";
    assert!(raw(a, two.as_bytes()).await.starts_with("HTTP/1.1 400"));
}

#[tokio::test]
async fn cors_star_with_credentials_is_a_config_error_and_vary_is_always_sent() {
    let err = load_str(
        "t.yaml",
        &config("routes:\n  - name: r\n    match: {path: /}\n    direct_response: {}\n    plugins:\n      cors: {allow_origins: ['*'], allow_credentials: true}\n"),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("routes[0].plugins.cors.allow_credentials"),
        "{err}"
    );
    let up = echo_upstream(false).await;
    let gw = gateway(&gw_config(up.addr, "", CORS_ROUTES)).await;
    let a = addr(&gw).await;
    let (_, h, _) = send(a, "GET", "/api/x", &[("x-api-key", ALICE_KEY)]).await;
    assert!(
        h["vary"].to_str().unwrap().contains("Origin"),
        "no Origin, still Vary: {h:?}"
    );
}

/// An upstream that answers with the request's headers and trailers as JSON.
async fn trailer_echo(http2: bool) -> FakeUpstream {
    upstream(http2, |req: Request<hyper::body::Incoming>| async move {
        let map = |h: &HeaderMap| -> serde_json::Map<String, serde_json::Value> {
            h.iter()
                .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").into()))
                .collect()
        };
        let headers = map(req.headers());
        let collected = req.into_body().collect().await.unwrap();
        let trailers = collected.trailers().map(map).unwrap_or_default();
        let body = String::from_utf8_lossy(&collected.to_bytes()).into_owned();
        let j = serde_json::json!({"headers": headers, "trailers": trailers, "body": body});
        http::Response::new(full(j.to_string()))
    })
    .await
}

const SPOOFED_TRAILERS: [&str; 4] = [
    "x-consumer-id",
    "x_consumer_id",
    "x-identity-token",
    "x-anonymous_consumer",
];

fn assert_trailers_clean(j: &serde_json::Value, authenticated: bool, what: &str) {
    assert_eq!(j["body"], "hello", "{what}: {j}");
    let t = j["trailers"].as_object().unwrap();
    for n in SPOOFED_TRAILERS {
        assert!(
            !t.contains_key(n),
            "{what}: trailer {n} reached the upstream: {j}"
        );
    }
    // A length-delimited HTTP/1.1 message has nowhere to carry trailers: they are dropped.
    if j["headers"].get("content-length").is_none() || !t.is_empty() {
        assert_eq!(
            t.get("x-ok"),
            Some(&"fine".into()),
            "{what}: other trailers pass: {j}"
        );
    }
    assert!(!j.to_string().contains("evil"), "{what}: {j}");
    if authenticated {
        assert_eq!(j["headers"]["x-consumer-id"], "u-1", "{what}: {j}");
    }
}

#[tokio::test]
async fn identity_headers_sent_as_request_trailers_never_reach_the_upstream() {
    let up1 = trailer_echo(false).await;
    let up2 = trailer_echo(true).await;
    let yaml = config(&format!(
        "upstreams:\n  - name: h1\n    targets: [{{url: 'http://{}'}}]\n  - name: h2\n    targets: [{{url: 'http://{}'}}]\n    protocol: http2\n{}routes:\n  - name: h1-private\n    match: {{path_prefix: /h1/private}}\n    upstream: h1\n    plugins: {{key_auth: {{}}}}\n  - name: h1-open\n    match: {{path_prefix: /h1}}\n    upstream: h1\n  - name: h2-private\n    match: {{path_prefix: /h2/private}}\n    upstream: h2\n    plugins: {{key_auth: {{}}}}\n  - name: h2-open\n    match: {{path_prefix: /h2}}\n    upstream: h2\n",
        up1.addr,
        up2.addr,
        consumers()
    ));
    let gw = gateway(&yaml).await;
    let a = addr(&gw).await;
    let trailer_lines: String = SPOOFED_TRAILERS
        .iter()
        .map(|n| format!("{n}: evil\r\n"))
        .collect();
    for path in ["/h1/open", "/h1/private", "/h2/open", "/h2/private"] {
        let authenticated = path.ends_with("private");
        let key = if authenticated {
            format!("x-api-key: {ALICE_KEY}\r\n")
        } else {
            String::new()
        };
        // HTTP/1.1 client: a chunked request with a trailer section.
        let req = format!(
            "POST {path} HTTP/1.1\r\nhost: gw\r\n{key}transfer-encoding: chunked\r\nconnection: close\r\n\r\n5\r\nhello\r\n0\r\n{trailer_lines}x-ok: fine\r\n\r\n"
        );
        let resp = raw(a, req.as_bytes()).await;
        assert!(resp.starts_with("HTTP/1.1 200"), "{path}: {resp}");
        let body = &resp[resp.find('{').unwrap()..=resp.rfind('}').unwrap()];
        assert_trailers_clean(&json(body.as_bytes()), authenticated, &format!("h1 {path}"));

        // HTTP/2 client: data, then trailers.
        let mut trailers = HeaderMap::new();
        for n in SPOOFED_TRAILERS {
            trailers.insert(
                http::HeaderName::from_static(n),
                http::HeaderValue::from_static("evil"),
            );
        }
        trailers.insert("x-ok", http::HeaderValue::from_static("fine"));
        let body = http_body_util::Full::new(bytes::Bytes::from_static(b"hello"))
            .map_err(|e| match e {})
            .with_trailers(async move { Some(Ok(trailers)) })
            .boxed();
        let mut req = Request::post(format!("http://{a}{path}"));
        if authenticated {
            req = req.header("x-api-key", ALICE_KEY);
        }
        let resp = h2_client().request(req.body(body).unwrap()).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "h2 {path}");
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        assert_trailers_clean(&json(&bytes), authenticated, &format!("h2 {path}"));
    }
}
