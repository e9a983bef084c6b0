//! Catalog, chain and state tests through the real load path.
#![allow(clippy::unwrap_used)]

use super::*;

fn load(catalog: &Catalog, yaml: &str) -> Result<torii_config::Loaded<Compiled>, String> {
    let base = "listeners:\n  - name: p\n    bind: 127.0.0.1:0\n";
    torii_config::load_str("t.yaml", &format!("{base}{yaml}"), &|_: &str| None, catalog)
        .map_err(|d| d.to_string())
}

#[test]
fn chains_run_in_phase_order_whatever_the_file_order() {
    let c = Catalog::builtin().unwrap();
    let l = load(
        &c,
        "routes:\n  - name: r\n    match: {path: /}\n    direct_response: {}\n    plugins:\n      request_headers: {set: {a: b}}\n      acl: {allow_groups: [x]}\n      key_auth: {}\n      cors: {allow_origins: ['*']}\n      ip_restriction: {allow: [10.0.0.0/8]}\n      request_size_limit: {max_body: 1KiB}\n      basic_auth: {}\n",
    )
    .unwrap();
    assert_eq!(
        l.plugins.chains[0].names(),
        [
            "ip_restriction",
            "cors",
            "request_size_limit",
            "key_auth",
            "basic_auth",
            "acl",
            "request_headers"
        ]
    );
}

#[test]
fn chains_of_plugins_that_only_wrap_the_call_skip_the_request_and_response_phases() {
    let c = Catalog::builtin().unwrap();
    let l = load(
        &c,
        "upstreams:\n  - name: u\n    targets: [{url: 'http://127.0.0.1:1'}]\nroutes:\n  - name: only-stages\n    match: {path: /a}\n    upstream: u\n    plugins: {cache: {}, mirror: {upstream: u}}\n  - name: with-phase\n    match: {path: /b}\n    upstream: u\n    plugins: {cache: {}, cors: {allow_origins: ['*']}}\n  - name: none\n    match: {path: /c}\n    upstream: u\n",
    )
    .unwrap();
    let chains = &l.plugins.chains;
    assert!(!chains[0].has_phases());
    assert_eq!(chains[0].stages().len(), 2);
    assert!(chains[1].has_phases());
    assert!(!chains[2].has_phases());
}

#[test]
fn the_schema_contains_every_registered_plugin() {
    let c = Catalog::builtin().unwrap();
    let schema = torii_config::json_schema(&c);
    let props = schema["$defs"]["PluginMap"]["properties"]
        .as_object()
        .unwrap();
    for r in c.plugins() {
        assert!(
            props.contains_key(r.name),
            "{} missing from the schema",
            r.name
        );
    }
    assert_eq!(schema["$defs"]["PluginMap"]["additionalProperties"], false);
}

#[test]
fn unknown_plugins_and_keys_are_reported_with_suggestions() {
    let c = Catalog::builtin().unwrap();
    let err = load(
        &c,
        "plugins:\n  corz: {}\n  key_auth: {header_name: [x]}\nroutes: []\n",
    )
    .unwrap_err();
    assert!(err.contains("t.yaml:5:3: plugins.corz"), "{err}");
    assert!(err.contains("did you mean `cors`"), "{err}");
    assert!(err.contains("plugins.key_auth.header_name"), "{err}");
    assert!(err.contains("did you mean `header_names`"), "{err}");
}

#[test]
fn authentication_plugins_cannot_be_set_per_consumer() {
    let c = Catalog::builtin().unwrap();
    let err = load(
        &c,
        "consumers:\n  - name: a\n    plugins:\n      key_auth: {}\n",
    )
    .unwrap_err();
    assert!(err.contains("consumers[0].plugins.key_auth"), "{err}");
    assert!(err.contains("cannot be set per consumer"), "{err}");
    load(
        &c,
        "consumers:\n  - name: a\n    plugins:\n      request_headers: {set: {x: y}}\n",
    )
    .unwrap();
}

#[test]
fn state_survives_reloads_that_keep_the_settings() {
    let c = Catalog::builtin().unwrap();
    let route = |ttl: &str| {
        format!(
            "routes:\n  - name: r\n    match: {{path: /}}\n    direct_response: {{}}\n    plugins:\n      basic_auth: {{cache_ttl: {ttl}}}\n"
        )
    };
    let first = load(&c, &route("60s")).unwrap();
    c.state().retain_generation(first.plugins.generation);
    assert_eq!(c.state().len(), 1);
    // Same settings: the same state object (the cache stays warm).
    let second = load(&c, &route("60s")).unwrap();
    c.state().retain_generation(second.plugins.generation);
    assert_eq!(c.state().len(), 1);
    // New settings: fresh state; the old one is dropped once the new config is applied.
    let third = load(&c, &route("30s")).unwrap();
    assert_eq!(c.state().len(), 2, "both until the swap");
    c.state().retain_generation(third.plugins.generation);
    assert_eq!(c.state().len(), 1);
    // A load that is never applied (validate, a failed reload) drops nothing.
    let _ = load(&c, &route("10s")).unwrap();
    assert_eq!(c.state().len(), 2);
}

#[test]
fn state_registry_returns_the_same_value_for_the_same_key() {
    let r = StateRegistry::default();
    let settings = serde_json::json!({"a": 1});
    r.begin();
    let a = r.get_or_insert(StateKey::new("p", "global", &settings), || 1u32);
    let b = r.get_or_insert(StateKey::new("p", "global", &settings), || 2u32);
    assert!(Arc::ptr_eq(&a, &b));
    let c = r.get_or_insert(StateKey::new("p", "route:x", &settings), || 3u32);
    assert_eq!(*c, 3);
    // Two types under one key are two values: neither replaces the other.
    let s = r.get_or_insert(StateKey::new("p", "global", &settings), || "x".to_string());
    let a2 = r.get_or_insert(StateKey::new("p", "global", &settings), || 4u32);
    assert!(Arc::ptr_eq(&a, &a2));
    let s2 = r.get_or_insert(StateKey::new("p", "global", &settings), || "y".to_string());
    assert!(Arc::ptr_eq(&s, &s2));
}

#[test]
fn global_route_and_disabled_plugins_merge_per_route() {
    let c = Catalog::builtin().unwrap();
    let l = load(
        &c,
        "plugins:\n  key_auth: {}\n  cors: {allow_origins: ['*']}\nroutes:\n  - name: a\n    match: {path: /a}\n    direct_response: {}\n  - name: b\n    match: {path: /b}\n    direct_response: {}\n    disable_plugins: [key_auth]\n  - name: c\n    match: {path: /c}\n    direct_response: {}\n    plugins:\n      basic_auth: {}\n",
    )
    .unwrap();
    let names: Vec<Vec<&str>> = l.plugins.chains.iter().map(|c| c.names()).collect();
    assert_eq!(names[0], ["cors", "key_auth"]);
    assert_eq!(names[1], ["cors"]);
    assert_eq!(names[2], ["cors", "key_auth", "basic_auth"]);
}

#[test]
fn config_errors_never_show_secrets() {
    let catalog = Catalog::builtin().unwrap();
    let env = |name: &str| (name == "RAWKEY").then(|| "raw-api-key-from-env-1234".to_string());
    let yaml = "\
listeners:
  - name: p
    bind: 127.0.0.1:0
consumers:
  - name: a
    keys: ['${RAWKEY}']
  - name: b
    keys: ['literal-raw-key-5678', 'sha256:zz']
  - name: c
    basic_auth:
      - {username: carol, password_hash: 'plain-text-password-9'}
      - {username: carol, password_hash: '$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA'}
routes:
  - name: r
    match: {path: /}
    direct_response: {}
    plugins:
      jwt:
        issuers:
          - issuer: https://idp.example.com
            algorithms: [HS256]
            keys: [{secret: short-hmac-secret-42}]
";
    let mut err = torii_config::load_str("t.yaml", yaml, &env, &catalog)
        .err()
        .unwrap()
        .to_string();
    // A schema error (checked before plugins are built) on a secret.
    let yaml = "listeners:
  - name: p
    bind: 127.0.0.1:0
consumers:
  - {name: d, keys: ['another-plain-one-0'], groups: 5}
routes:
  - name: s
    match: {path: /s}
    direct_response: {}
    plugins:
      oauth2_introspection: {introspection_url: 'http://127.0.0.1:1/i', client_id: gw, client_secret: 31415926535}
";
    err += &torii_config::load_str("t.yaml", yaml, &env, &catalog)
        .err()
        .unwrap()
        .to_string();
    for secret in [
        "raw-ap",
        "raw-api-key-from-env-1234",
        "literal",
        "plain-text-password-9",
        "another-plain-one-0",
        "short-hmac-secret-42",
        "31415926535",
    ] {
        assert!(!err.contains(secret), "`{secret}` shown in:\n{err}");
    }
    // Each problem is still reported where it is.
    for needle in [
        "consumers[0].keys[0]",
        "consumers[1].keys[0]",
        "consumers[1].keys[1]",
        "consumers[2].basic_auth[0].password_hash",
        "client_secret",
        "consumers[0].groups",
        "<redacted>",
    ] {
        assert!(err.contains(needle), "missing `{needle}` in:\n{err}");
    }
}

/// A catalog serves concurrent loads (a reload beside an admin write, tests sharing one): each
/// load's secret query parameters are its own, never cleared or taken by another load.
#[test]
fn concurrent_loads_keep_their_own_redaction_lists() {
    let c = std::sync::Arc::new(Catalog::builtin().unwrap());
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let c = c.clone();
            std::thread::spawn(move || {
                for i in 0..25 {
                    let name = format!("secret{t}x{i}");
                    let yaml = format!(
                        "consumers:\n  - name: a\n    keys: ['sha256:{}']\nroutes:\n  - name: r\n    match: {{path: /}}\n    direct_response: {{status: 200}}\n    plugins:\n      key_auth: {{query_names: [{name}]}}\n",
                        "0".repeat(64)
                    );
                    let loaded = load(&c, &yaml).unwrap();
                    assert_eq!(loaded.plugins.redact_query_params, [name]);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}
