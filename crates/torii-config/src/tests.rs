#![allow(clippy::unwrap_used)]
use super::*;

fn no_env(_: &str) -> Option<String> {
    None
}

fn load(src: &str) -> Result<Loaded, Diagnostics> {
    load_str("test.yaml", src, &no_env, &NoPlugins)
}

const BASE: &str = "\
listeners:
  - name: public
    bind: 127.0.0.1:8080
upstreams:
  - name: users
    targets:
      - url: http://127.0.0.1:9000
routes:
  - name: users
    match:
      path: /users/{id}
    upstream: users
";

#[test]
fn loads_a_valid_config_with_defaults() {
    let l = load(BASE).unwrap();
    assert_eq!(l.config.listeners[0].name, "public");
    assert_eq!(
        l.config.upstreams[0].timeouts.connect,
        values::Duration::secs(5)
    );
    assert_eq!(
        l.config.server.shutdown_grace_period,
        values::Duration::secs(30)
    );
    assert_eq!(l.routers.len(), 1);
}

#[test]
fn five_mistakes_are_all_reported_with_lines() {
    let src = "\
listeners:
  - name: public
    bind: 127.0.0.1:8080
    limtis: {}
upstreams:
  - name: users
    targets:
      - url: http://127.0.0.1:9000
        weight: heavy
    timeouts:
      connect: 5 seconds
routes:
  - name: a
    match:
      path: /a
    upstream: user
  - name: b
    match:
      path: /a
    upstream: users
";
    let d = load(src).unwrap_err();
    let text = d.to_string();
    assert_eq!(d.len(), 5, "{text}");
    let lines: Vec<usize> = d.items.iter().map(|i| i.pos.unwrap().line).collect();
    assert_eq!(lines, vec![4, 9, 11, 16, 19], "{text}");
    assert!(
        text.contains("unknown key `limtis`") && text.contains("did you mean `limits`?"),
        "{text}"
    );
    assert!(
        text.contains("upstreams[0].targets[0].weight: expected an integer"),
        "{text}"
    );
    assert!(
        text.contains("upstreams[0].timeouts.connect: `5 seconds` is not a duration"),
        "{text}"
    );
    assert!(
        text.contains("unknown upstream `user`") && text.contains("did you mean `users`?"),
        "{text}"
    );
    assert!(
        text.contains("routes[1].match: route has the same match conditions as routes[0]"),
        "{text}"
    );
    assert!(text.contains("test.yaml:4:5"), "{text}");
}

#[test]
fn missing_keys_and_bad_enums() {
    let src = "listeners:\n  - bind: 127.0.0.1:1\nupstreams:\n  - name: u\n    targets: [{url: 'http://x:1'}]\n    protocol: http3\n";
    let text = load(src).unwrap_err().to_string();
    assert!(text.contains("missing required key `name`"), "{text}");
    assert!(
        text.contains("\"http3\" is not one of `http1`, `http2`"),
        "{text}"
    );
}

#[test]
fn route_errors() {
    let src = format!(
        "{BASE}  - name: bad\n    match:\n      path: /x/{{id\n    direct_response: {{status: 999}}\n  - name: both\n    match: {{path: /y, path_prefix: /y}}\n    upstream: users\n  - name: tmpl\n    match: {{path: '/u/{{id}}'}}\n    upstream: users\n    rewrite: {{path: '/v2/{{nope}}'}}\n  - name: users\n    match: {{path: /z, hosts: ['bad host']}}\n    upstream: users\n"
    );
    let text = load(&src).unwrap_err().to_string();
    assert!(text.contains("invalid path pattern"), "{text}");
    assert!(text.contains("999 is not an HTTP status"), "{text}");
    assert!(text.contains("cannot both be set"), "{text}");
    assert!(text.contains("`{nope}` is not a parameter"), "{text}");
    assert!(text.contains("duplicate name `users`"), "{text}");
    assert!(text.contains("is not a host name"), "{text}");
}

#[test]
fn env_expansion_and_secrets_not_echoed() {
    let env = |n: &str| match n {
        "PORT" => Some("8081".to_string()),
        "TIMEOUT" => Some("supersecret".to_string()),
        _ => None,
    };
    let src = "listeners:\n  - name: p\n    bind: 127.0.0.1:${PORT}\nupstreams:\n  - name: u\n    targets: [{url: 'http://127.0.0.1:1'}]\n    timeouts: {connect: '${TIMEOUT}'}\n";
    let text = load_str("t.yaml", src, &env, &NoPlugins)
        .unwrap_err()
        .to_string();
    assert!(!text.contains("supersecret"), "{text}");
    assert!(text.contains("${TIMEOUT}"), "{text}");
    let ok = load_str(
        "t.yaml",
        &src.replace("${TIMEOUT}", "${T:-2s}"),
        &env,
        &NoPlugins,
    )
    .unwrap();
    assert_eq!(ok.config.listeners[0].bind.0.port(), 8081);
    assert_eq!(
        ok.config.upstreams[0].timeouts.connect,
        values::Duration::secs(2)
    );
    let text = load_str(
        "t.yaml",
        "listeners:\n  - name: p\n    bind: ${NOPE}\n",
        &env,
        &NoPlugins,
    )
    .unwrap_err()
    .to_string();
    assert!(text.contains("`NOPE` is not set"), "{text}");
}

#[test]
fn type_errors_suggest_quoting() {
    let src = format!(
        "{BASE}  - name: d\n    match: {{path: /d}}\n    direct_response:\n      body: 42\n      headers: {{x-a: 1}}\n"
    );
    let text = load(&src).unwrap_err().to_string();
    assert!(
        text.contains("routes[1].direct_response.body: expected a string, found an integer"),
        "{text}"
    );
    assert!(text.contains("quote the value"), "{text}");
}

#[test]
fn schema_is_generated() {
    let s = json_schema(&NoPlugins);
    assert!(s.pointer("/properties/listeners").is_some());
    assert_eq!(
        s.pointer("/additionalProperties"),
        Some(&Value::Bool(false))
    );
}

#[test]
fn no_listeners_is_an_error() {
    let text = load("upstreams: []\n").unwrap_err().to_string();
    assert!(text.contains("missing required key `listeners`"), "{text}");
}

#[test]
fn a_broken_element_does_not_cascade() {
    let src = "listeners:\n  - name: p\n    bind: 127.0.0.1:1\nupstreams:\n  - name: good\n    targets: [{url: 'http://127.0.0.1:1'}]\n  - name: bad\n    targets: [{url: 'ftp://x'}]\nroutes:\n  - name: a\n    match: {path: /a}\n    upstream: good\n  - name: b\n    match: {path: /b}\n    upstream: bad\n";
    let d = load(src).unwrap_err();
    assert_eq!(d.len(), 1, "{d}");
    assert!(d.to_string().contains("upstreams[1].targets[0].url"), "{d}");
}

#[test]
fn cross_check_messages_do_not_echo_secrets() {
    let env = |n: &str| (n == "UP").then(|| "hunter2".to_string());
    let src = "listeners:\n  - name: p\n    bind: 127.0.0.1:1\nroutes:\n  - name: a\n    match: {path: /a}\n    upstream: ${UP}\n";
    let text = load_str("t.yaml", src, &env, &NoPlugins)
        .unwrap_err()
        .to_string();
    assert!(!text.contains("hunter2"), "{text}");
    assert!(text.contains("unknown upstream `${UP}`"), "{text}");
}

#[test]
fn pem_paths_must_be_small_regular_files() {
    for path in ["/dev/zero", "/dev/stdin", "/nonexistent/cert.pem"] {
        let src = format!(
            "listeners:\n  - name: p\n    bind: 127.0.0.1:1\n    tls:\n      certificates: [{{cert: '{path}', key: '{path}'}}]\n"
        );
        let text = load(&src).unwrap_err().to_string();
        assert!(
            text.contains("listeners[0].tls.certificates[0].cert"),
            "{path}: {text}"
        );
    }
}

/// A YAML syntax error has no tree to find the credentials in: its source excerpt hides the
/// value of a line whose key (or list's key) is a credential's, and nothing else.
#[test]
fn syntax_errors_do_not_show_secrets_in_their_excerpt() {
    let cases = [
        // An unterminated quote on the secret's own line.
        "consumers:\n  - name: a\n    basic_auth:\n      - username: u\n        password: \"hunter2-plain\n",
        // A flow list of keys that never closes, the error reported on that line.
        "consumers:\n  - name: a\n    keys: [\"raw-api-key-123\", \n",
        // A block-list item under `keys:` with a tab in its indentation.
        "consumers:\n  - name: a\n    keys:\n      - raw-api-key-123\n\t- other\n",
        // A key ending in _secret.
        "x:\n  client_secret: 'unterminated-s3cr3t\n",
        // A pasted private key (a `|` block) with a line out of place.
        "certificates:\n  - name: c\n    cert_pem: x\n    private_key_pem: |\n      -----BEGIN PRIVATE KEY-----\n      MIGHAgEAMBMGByqGSM49\n     pkey-line-out-of-place: [\n",
    ];
    for src in cases {
        let text = load(src).unwrap_err().to_string();
        for secret in ["hunter2", "raw-api-key", "s3cr3t", "MIGHAgEA", "pkey-line"] {
            assert!(!text.contains(secret), "{src:?}\n{text}");
        }
    }
    // Lines that hold no credential are shown as written.
    let text = load("listeners:\n  - name: \"p\n").unwrap_err().to_string();
    assert!(text.contains("name: \"p"), "{text}");
}

#[test]
fn a_spool_directory_that_is_not_there_is_reported_at_its_key() {
    let src =
        format!("{BASE}server:\n  response_buffering:\n    temp_dir: /nonexistent/torii-spool\n");
    let text = load(&src).err().unwrap().to_string();
    assert!(
        text.contains("server.response_buffering.temp_dir"),
        "{text}"
    );
    assert!(text.contains("test.yaml:15"), "{text}");
    assert!(text.contains("is not a directory"), "{text}");
    // An existing directory, and the defaults.
    let ok = format!(
        "{BASE}server:\n  response_buffering:\n    temp_dir: {}\n",
        std::env::temp_dir().display()
    );
    let l = load(&ok).unwrap();
    let b = &l.config.server.response_buffering;
    assert!(b.enabled);
    assert_eq!(b.memory, values::ByteSize::kib(128));
    assert_eq!(b.max_temp_file, values::ByteSize::gib(1));
    assert_eq!(b.max_temp_total, values::ByteSize::gib(4));
}

#[test]
fn resilience_settings_are_checked_with_their_key_paths() {
    let src = "\
listeners:
  - name: public
    bind: 127.0.0.1:8080
upstreams:
  - name: users
    targets:
      - url: http://127.0.0.1:9000
      - url: http://127.0.0.1:9000
    load_balancing:
      algorithm: consistent_hash
      bounded_load: 0.5
      decay: 5s
    hedging:
      delay: 40s
    retries:
      attempts: 0
      budget_ratio: 2
    outlier_detection:
      max_ejection_percent: 120
    health_check:
      kind: grpc
      path: healthz
      timeout: 20s
    circuit_breaker:
      failure_rate_percent: 0
      half_open_calls: 0
    concurrency:
      max_in_flight: 0
routes:
  - name: users
    match:
      path: /users
    upstream: users
";
    let text = load(src).unwrap_err().to_string();
    for (key, words) in [
        (
            "upstreams[0].targets[1].url",
            "the same target as targets[0]",
        ),
        ("upstreams[0].load_balancing.algorithm", "needs `hash_on`"),
        ("upstreams[0].load_balancing.bounded_load", "below 1"),
        (
            "upstreams[0].load_balancing.decay",
            "only used by `algorithm: peak_ewma`",
        ),
        (
            "upstreams[0].hedging.delay",
            "not below `timeouts.response_headers`",
        ),
        ("upstreams[0].retries.attempts", "tries"),
        ("upstreams[0].retries.budget_ratio", "not a share"),
        (
            "upstreams[0].outlier_detection.max_ejection_percent",
            "over 100",
        ),
        ("upstreams[0].health_check.kind", "need `protocol: http2`"),
        ("upstreams[0].health_check.path", "not a path"),
        ("upstreams[0].health_check.timeout", "at most `interval`"),
        (
            "upstreams[0].circuit_breaker.failure_rate_percent",
            "not a share",
        ),
        ("upstreams[0].circuit_breaker.half_open_calls", "at least 1"),
        ("upstreams[0].concurrency.max_in_flight", "at least 1"),
    ] {
        assert!(text.contains(&format!("{key}: ")), "{key} missing:\n{text}");
        assert!(text.contains(words), "{words} missing:\n{text}");
    }
    // A hash key from a header that cannot exist.
    let bad_header = BASE.replace(
        "      - url: http://127.0.0.1:9000\n",
        "      - url: http://127.0.0.1:9000\n    load_balancing: {algorithm: consistent_hash, hash_on: {header: 'bad header'}}\n",
    );
    let text = load(&bad_header).unwrap_err().to_string();
    assert!(text.contains("load_balancing.hash_on"), "{text}");
    // The defaults load.
    let l = load(BASE).unwrap();
    let u = &l.config.upstreams[0];
    assert_eq!(u.retries.attempts, 2);
    assert!(u.outlier_detection.enabled);
    assert!(u.health_check.is_none());
}

#[test]
fn a_fallback_is_checked() {
    let src = BASE.replace(
        "    upstream: users\n",
        "    upstream: users\n    fallback: {status: 99, stale: 0s, on_errors: [upstream_oops], on_status: [700]}\n",
    );
    let text = load(&src).unwrap_err().to_string();
    for key in [
        "fallback.stale",
        "fallback.status",
        "fallback.on_errors",
        "fallback.on_status",
    ] {
        assert!(text.contains(key), "{key}:\n{text}");
    }
    assert!(
        text.contains("use some of: upstream_connect_failed"),
        "{text}"
    );
    let ok = BASE.replace(
        "    upstream: users\n",
        "    upstream: users\n    fallback: {body: cached}\n",
    );
    let l = load(&ok).unwrap();
    let f = l.config.routes[0].fallback.as_ref().unwrap();
    assert_eq!(
        (f.status, f.on_status.as_slice()),
        (None, &[502, 503, 504][..])
    );
    assert_eq!(f.on_errors.len(), 7);
}
