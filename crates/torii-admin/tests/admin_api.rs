//! The admin API from the outside: a real gateway (listeners on 127.0.0.1 port 0), a local
//! config store in a temporary directory, and HTTP requests to the admin listener.
#![allow(clippy::unwrap_used)]

mod support;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::Full;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use support::*;
use torii_admin::Admin;
use torii_admin::store::{LocalStore, Store};
use torii_config::Source;
use torii_proxy::Gateway;

struct Node {
    gw: Arc<Gateway>,
    admin: SocketAddr,
    public: SocketAddr,
}

/// Starts a gateway on `text` (named `name`, a file path when a test reloads it) with the
/// local store in `dir`, as `torii run --data-dir` does.
async fn start_named(name: &str, text: &str, dir: &Path) -> Node {
    let store = Store::Local(LocalStore::open(dir).unwrap());
    let runtime = Arc::new(store.load().await.unwrap());
    let source = Source::file(name, text).with_runtime(runtime);
    let loaded = match torii_config::load_source(&source, &torii_config::ProcessEnv, &*catalog()) {
        Ok(l) => l,
        Err(d) => panic!("invalid test config:\n{d}"),
    };
    let gw = Gateway::start(loaded, catalog()).await.unwrap();
    Admin::install(&gw, store, Arc::new(torii_config::ProcessEnv));
    Node {
        admin: gw.admin_addr().unwrap(),
        public: gw.listener_addr("public").await.unwrap(),
        gw,
    }
}

async fn start(text: &str, dir: &Path) -> Node {
    start_named("test.yaml", text, dir).await
}

const PRIVATE: &str = "routes:\n  - name: private\n    match: {path: /private}\n    direct_response: {body: secret}\n    plugins:\n      key_auth: {}\nconsumers:\n  - name: from-file\n    keys: ['sha256:090d1548c9d65f413a1a2c828a0bee3a7ae02d2137caf51e6029e6c3cb1f1fa4']\n";

#[tokio::test]
async fn a_consumer_created_through_the_api_authenticates_at_once_and_its_key_is_shown_once() {
    let dir = tempfile::tempdir().unwrap();
    let n = start(&config(PRIVATE), dir.path()).await;
    let r = put(
        n.admin,
        "/config/consumers/alice",
        json!({"groups": ["beta"]}),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    assert_eq!(r.etag(), "\"1\"");
    let k = post(n.admin, "/config/consumers/alice/keys", json!({})).await;
    assert_eq!(k.status, StatusCode::CREATED, "{}", k.text());
    let key = k.json()["key"].as_str().unwrap().to_string();
    assert!(key.len() >= 43);
    let ok = call(
        n.public,
        Method::GET,
        "/private",
        &[("x-api-key", &key)],
        None,
    )
    .await;
    assert_eq!(ok.status, StatusCode::OK);
    assert_eq!(ok.text(), "secret");
    let wrong = call(
        n.public,
        Method::GET,
        "/private",
        &[("x-api-key", "nope-nope-nope-nope")],
        None,
    )
    .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    // A key given by the client is taken too.
    let given = post(
        n.admin,
        "/config/consumers/alice/keys",
        json!({"key": "a-client-chosen-key-0123456789"}),
    )
    .await;
    assert_eq!(given.status, StatusCode::CREATED);
    let ok = call(
        n.public,
        Method::GET,
        "/private",
        &[("x-api-key", "a-client-chosen-key-0123456789")],
        None,
    )
    .await;
    assert_eq!(ok.status, StatusCode::OK);
    // Reads show hashes only; no read anywhere returns the key.
    for path in [
        "/config/consumers/alice",
        "/config/consumers",
        "/config/revisions/2",
        "/config/revisions",
    ] {
        let r = get(n.admin, path).await;
        assert_eq!(r.status, StatusCode::OK, "{path}");
        assert!(!r.text().contains(&key), "{path} returned the key");
        assert!(!r.text().contains("a-client-chosen-key"), "{path}");
    }
    let c = get(n.admin, "/config/consumers/alice").await.json();
    assert_eq!(c["owner"], "runtime");
    assert_eq!(c["value"]["keys"].as_array().unwrap().len(), 2);
    assert!(
        c["value"]["keys"][0]
            .as_str()
            .unwrap()
            .starts_with("sha256:")
    );
    // Basic-auth passwords are stored as argon2 hashes.
    let b = post(
        n.admin,
        "/config/consumers/alice/basic_auth",
        json!({"username": "alice", "password": "pw-123"}),
    )
    .await;
    assert_eq!(b.status, StatusCode::CREATED, "{}", b.text());
    let c = get(n.admin, "/config/consumers/alice").await;
    assert!(!c.text().contains("pw-123"));
    assert!(
        c.json()["value"]["basic_auth"][0]["password_hash"]
            .as_str()
            .unwrap()
            .starts_with("$argon2id$")
    );
}

#[tokio::test]
async fn runtime_upstreams_and_routes_serve_traffic_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let up = upstream("from upstream").await;
    {
        let n = start(&config(""), dir.path()).await;
        let u = put(
            n.admin,
            "/config/upstreams/backend",
            json!({"targets": [{"url": format!("http://{up}")}]}),
        )
        .await;
        assert_eq!(u.status, StatusCode::CREATED, "{}", u.text());
        let r = put(
            n.admin,
            "/config/routes/api",
            json!({"match": {"path_prefix": "/api"}, "upstream": "backend"}),
        )
        .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
        let got = get(n.public, "/api/x").await;
        assert_eq!(got.status, StatusCode::OK);
        assert_eq!(got.text(), "from upstream");
        n.gw.shutdown(std::time::Duration::from_millis(100)).await;
    }
    // A new process on the same data directory starts with them.
    let n = start(&config(""), dir.path()).await;
    assert_eq!(get(n.public, "/api/x").await.text(), "from upstream");
    let summary = get(n.admin, "/config").await;
    assert_eq!(summary.json()["revision"], 2);
    assert_eq!(summary.json()["runtime"]["routes"], 1);
    // Deleting the upstream while a route uses it is refused; deleting the route works.
    let d = call(
        n.admin,
        Method::DELETE,
        "/config/upstreams/backend",
        &[],
        None,
    )
    .await;
    assert_eq!(d.status, StatusCode::BAD_REQUEST, "{}", d.text());
    let d = call(n.admin, Method::DELETE, "/config/routes/api", &[], None).await;
    assert_eq!(d.status, StatusCode::NO_CONTENT);
    assert_eq!(get(n.public, "/api/x").await.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn an_invalid_write_is_refused_with_a_json_pointer_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let n = start(&config(PRIVATE), dir.path()).await;
    let r = put(
        n.admin,
        "/config/routes/x",
        json!({"match": {"path": "/x"}, "upstream": "nope"}),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let e = r.json();
    assert_eq!(e["error"], "invalid_config");
    assert_eq!(e["errors"][0]["pointer"], "/routes/x/upstream", "{e}");
    // A schema problem deep in an entity, and a raw key where a hash belongs.
    let r = put(
        n.admin,
        "/config/consumers/c",
        json!({"keys": ["raw-key"], "groups": "not-a-list"}),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let pointers: Vec<String> = r.json()["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["pointer"].as_str().unwrap_or("").to_string())
        .collect();
    assert!(
        pointers.iter().any(|p| p == "/consumers/c/groups"),
        "{pointers:?}"
    );
    // Nothing reached the store or the running config.
    assert_eq!(get(n.admin, "/config").await.json()["revision"], 0);
    assert_eq!(
        get(n.admin, "/config/consumers/c").await.status,
        StatusCode::NOT_FOUND
    );
    assert!(
        get(n.admin, "/config/revisions").await.json()["items"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    assert!(!dir.path().join("runtime.json").exists());
}

#[tokio::test]
async fn stale_if_match_gets_412_and_of_two_concurrent_writes_one_wins() {
    let dir = tempfile::tempdir().unwrap();
    let n = start(&config(""), dir.path()).await;
    let r = put(n.admin, "/config/consumers/c", json!({"groups": ["a"]})).await;
    let tag = r.etag();
    let write = |group: &'static str| {
        let tag = tag.clone();
        let admin = n.admin;
        async move {
            call(
                admin,
                Method::PUT,
                "/config/consumers/c",
                &[("if-match", &tag)],
                Some(json!({"groups": [group]})),
            )
            .await
            .status
        }
    };
    let (a, b) = tokio::join!(write("x"), write("y"));
    let mut got = [a, b];
    got.sort();
    assert_eq!(got, [StatusCode::OK, StatusCode::PRECONDITION_FAILED]);
    // The stale tag keeps failing; create-only on an existing name fails too.
    assert_eq!(write("z").await, StatusCode::PRECONDITION_FAILED);
    let r = call(
        n.admin,
        Method::PUT,
        "/config/consumers/c",
        &[("if-none-match", "*")],
        Some(json!({})),
    )
    .await;
    assert_eq!(r.status, StatusCode::PRECONDITION_FAILED);
    let e = get(n.admin, "/config/consumers/c").await;
    let del = call(
        n.admin,
        Method::DELETE,
        "/config/consumers/c",
        &[("if-match", "\"1\"")],
        None,
    )
    .await;
    assert_eq!(del.status, StatusCode::PRECONDITION_FAILED);
    let del = call(
        n.admin,
        Method::DELETE,
        "/config/consumers/c",
        &[("if-match", &e.etag())],
        None,
    )
    .await;
    assert_eq!(del.status, StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn the_file_owns_what_it_declares_and_a_reload_keeps_runtime_entities() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("torii.yaml");
    let data = dir.path().join("data");
    let text = config(PRIVATE);
    std::fs::write(&file, &text).unwrap();
    let n = start_named(file.to_str().unwrap(), &text, &data).await;
    let r = put(n.admin, "/config/consumers/from-file", json!({})).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(r.json()["error"], "owned_by_file");
    let r = get(n.admin, "/config/consumers/from-file").await.json();
    assert_eq!(r["owner"], "file");
    put(n.admin, "/config/consumers/rt", json!({})).await;
    let key = post(n.admin, "/config/consumers/rt/keys", json!({}))
        .await
        .json()["key"]
        .as_str()
        .unwrap()
        .to_string();
    // The file changes (a new route): the runtime consumer stays.
    let text2 = format!(
        "{}  - name: extra\n    match: {{path: /extra}}\n    direct_response: {{body: extra}}\n",
        text.replace("consumers:\n  - name: from-file\n    keys: ['sha256:090d1548c9d65f413a1a2c828a0bee3a7ae02d2137caf51e6029e6c3cb1f1fa4']\n", "")
    );
    let text2 = format!(
        "{text2}consumers:\n  - name: from-file\n    keys: ['sha256:090d1548c9d65f413a1a2c828a0bee3a7ae02d2137caf51e6029e6c3cb1f1fa4']\n"
    );
    std::fs::write(&file, &text2).unwrap();
    torii_proxy::reload::reload_from(&n.gw, &file, &torii_config::ProcessEnv)
        .await
        .unwrap();
    assert_eq!(get(n.public, "/extra").await.text(), "extra");
    let ok = call(
        n.public,
        Method::GET,
        "/private",
        &[("x-api-key", &key)],
        None,
    )
    .await;
    assert_eq!(ok.status, StatusCode::OK);
    // A file that starts declaring a runtime name is refused, and the old config stays.
    std::fs::write(&file, format!("{text2}  - name: rt\n")).unwrap();
    let err = torii_proxy::reload::reload_from(&n.gw, &file, &torii_config::ProcessEnv)
        .await
        .unwrap_err();
    assert!(
        err.contains("declared in the config file and in the config store"),
        "{err}"
    );
    assert!(err.contains("/consumers/rt"), "{err}");
    let ok = call(
        n.public,
        Method::GET,
        "/private",
        &[("x-api-key", &key)],
        None,
    )
    .await;
    assert_eq!(ok.status, StatusCode::OK);
}

#[tokio::test]
async fn rollback_restores_the_earlier_behaviour() {
    let dir = tempfile::tempdir().unwrap();
    let n = start(&config(""), dir.path()).await;
    let route = |body: &str| json!({"match": {"path": "/r"}, "direct_response": {"body": body}});
    put(n.admin, "/config/routes/r", route("one")).await;
    put(n.admin, "/config/routes/r", route("two")).await;
    put(n.admin, "/config/consumers/later", json!({})).await;
    assert_eq!(get(n.public, "/r").await.text(), "two");
    let rb = call(
        n.admin,
        Method::POST,
        "/config/revisions/1/rollback",
        &[],
        None,
    )
    .await;
    assert_eq!(rb.status, StatusCode::OK, "{}", rb.text());
    assert_eq!(rb.json()["revision"], 4);
    assert_eq!(get(n.public, "/r").await.text(), "one");
    assert_eq!(
        get(n.admin, "/config/consumers/later").await.status,
        StatusCode::NOT_FOUND
    );
    // The rollback is itself a revision, with its diff.
    let rev = get(n.admin, "/config/revisions/4").await.json();
    assert_eq!(rev["action"], "rollback");
    assert_eq!(rev["actor"], "local");
    // Rolling back the rollback: to revision 3.
    let rb = call(
        n.admin,
        Method::POST,
        "/config/revisions/3/rollback",
        &[],
        None,
    )
    .await;
    assert_eq!(rb.status, StatusCode::OK);
    assert_eq!(get(n.public, "/r").await.text(), "two");
    let rb = call(
        n.admin,
        Method::POST,
        "/config/revisions/0/rollback",
        &[],
        None,
    )
    .await;
    assert_eq!(rb.status, StatusCode::OK);
    assert_eq!(get(n.public, "/r").await.status, StatusCode::NOT_FOUND);
    let rb = call(
        n.admin,
        Method::POST,
        "/config/revisions/99/rollback",
        &[],
        None,
    )
    .await;
    assert_eq!(rb.status, StatusCode::NOT_FOUND);
}

const RW: &str = "rw-token-0123456789abcdef";
const RO: &str = "ro-token-0123456789abcdef";

#[tokio::test]
async fn admin_tokens_authenticate_and_roles_limit_writes() {
    let dir = tempfile::tempdir().unwrap();
    let hash = |t: &str| torii_plugins::consumers::format_key_hash(t.as_bytes());
    let text = config("").replace(
        "admin:\n  bind: 127.0.0.1:0\n",
        &format!(
            "admin:\n  bind: 127.0.0.1:0\n  tokens:\n    - name: deployer\n      token_hash: '{}'\n    - name: viewer\n      token_hash: '{}'\n      role: read_only\n",
            hash(RW),
            hash(RO)
        ),
    );
    let n = start(&text, dir.path()).await;
    assert_eq!(get(n.admin, "/healthz").await.status, StatusCode::OK);
    let none = get(n.admin, "/config").await;
    assert_eq!(none.status, StatusCode::UNAUTHORIZED);
    assert!(none.headers.contains_key("www-authenticate"));
    assert_eq!(
        get(n.admin, "/metrics").await.status,
        StatusCode::UNAUTHORIZED
    );
    let bad = call(
        n.admin,
        Method::GET,
        "/config",
        &[("authorization", "Bearer nope")],
        None,
    )
    .await;
    assert_eq!(bad.status, StatusCode::UNAUTHORIZED);
    let ro = format!("Bearer {RO}");
    let rw = format!("Bearer {RW}");
    let r = call(
        n.admin,
        Method::GET,
        "/config",
        &[("authorization", &ro)],
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = call(
        n.admin,
        Method::PUT,
        "/config/consumers/x",
        &[("authorization", &ro)],
        Some(json!({})),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = call(
        n.admin,
        Method::PUT,
        "/config/consumers/x",
        &[("authorization", &rw)],
        Some(json!({})),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let h = call(
        n.admin,
        Method::GET,
        "/config/revisions/1",
        &[("authorization", &ro)],
        None,
    )
    .await;
    assert_eq!(h.json()["actor"], "deployer");
}

#[test]
fn a_non_loopback_admin_listener_without_tokens_is_a_config_error() {
    let text = config("").replace("admin:\n  bind: 127.0.0.1:0", "admin:\n  bind: 0.0.0.0:0");
    let e = torii_config::load_str("t.yaml", &text, &torii_config::ProcessEnv, &*catalog())
        .unwrap_err()
        .to_string();
    assert!(e.contains("admin.bind"), "{e}");
    assert!(e.contains("without authentication"), "{e}");
    let text = text.replace(
        "bind: 0.0.0.0:0\n",
        "bind: 0.0.0.0:0\n  tokens:\n    - name: a\n      token_hash: not-a-hash\n",
    );
    let e = torii_config::load_str("t.yaml", &text, &torii_config::ProcessEnv, &*catalog())
        .unwrap_err()
        .to_string();
    assert!(e.contains("admin.tokens[0].token_hash"), "{e}");
}

#[tokio::test]
async fn collections_page_and_filter() {
    let dir = tempfile::tempdir().unwrap();
    let n = start(&config(PRIVATE), dir.path()).await;
    for name in ["a1", "a2", "a3", "b1", "b2"] {
        assert_eq!(
            put(n.admin, &format!("/config/consumers/{name}"), json!({}))
                .await
                .status,
            StatusCode::CREATED
        );
    }
    let mut seen = Vec::new();
    let mut after = String::new();
    loop {
        let p = get(n.admin, &format!("/config/consumers?limit=2&after={after}"))
            .await
            .json();
        for i in p["items"].as_array().unwrap() {
            seen.push(i["name"].as_str().unwrap().to_string());
        }
        match p["next"].as_str() {
            Some(nx) => after = nx.to_string(),
            None => break,
        }
    }
    assert_eq!(seen, ["a1", "a2", "a3", "b1", "b2", "from-file"]);
    let p = get(n.admin, "/config/consumers?prefix=b").await.json();
    assert_eq!(p["items"].as_array().unwrap().len(), 2);
    let p = get(n.admin, "/config/consumers?owner=file").await.json();
    assert_eq!(p["items"][0]["name"], "from-file");
    assert_eq!(p["items"].as_array().unwrap().len(), 1);
    let h = get(n.admin, "/config/revisions?limit=2").await.json();
    assert_eq!(h["items"][0]["revision"], 5);
    assert_eq!(h["next_before"], 4);
    let h = get(n.admin, "/config/revisions?limit=2&before=4")
        .await
        .json();
    assert_eq!(h["items"][0]["revision"], 3);
}

#[tokio::test]
async fn bad_requests_get_a_clear_4xx() {
    let dir = tempfile::tempdir().unwrap();
    let n = start(&config(""), dir.path()).await;
    let raw = |m: Method, p: &'static str, body: &'static str| {
        let admin = n.admin;
        async move {
            let req = Request::builder()
                .method(m)
                .uri(format!("http://{admin}{p}"))
                .body(Full::new(Bytes::from_static(body.as_bytes())))
                .unwrap();
            client().request(req).await.unwrap().status()
        }
    };
    assert_eq!(
        raw(Method::PUT, "/config/consumers/a", "{not json").await,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        raw(Method::PUT, "/config/consumers/a", "[1]").await,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        raw(Method::PUT, "/config/consumers/a", "{\"name\": \"b\"}").await,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        raw(Method::GET, "/config/nothing", "").await,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        raw(Method::PATCH, "/config/consumers/a", "").await,
        StatusCode::METHOD_NOT_ALLOWED
    );
    assert_eq!(
        raw(Method::GET, "/config/consumers?limit=0", "").await,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        raw(Method::GET, "/config/revisions/abc", "").await,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        raw(Method::POST, "/config/consumers/none/keys", "{}").await,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        raw(Method::POST, "/config/consumers/none/keys", "{\"x\": 1}").await,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        raw(Method::DELETE, "/config/routes/none", "").await,
        StatusCode::NOT_FOUND
    );
    let big = "x".repeat(2 << 20);
    let req = Request::put(format!("http://{}/config/consumers/a", n.admin))
        .body(Full::new(Bytes::from(big)))
        .unwrap();
    assert_eq!(
        client().request(req).await.unwrap().status(),
        StatusCode::PAYLOAD_TOO_LARGE
    );
}

#[tokio::test]
async fn without_a_store_the_api_reads_and_refuses_writes() {
    let text = config(PRIVATE);
    let loaded =
        torii_config::load_str("t.yaml", &text, &torii_config::ProcessEnv, &*catalog()).unwrap();
    let gw = Gateway::start(loaded, catalog()).await.unwrap();
    Admin::install(&gw, Store::None, Arc::new(torii_config::ProcessEnv));
    let admin = gw.admin_addr().unwrap();
    assert_eq!(get(admin, "/config/consumers").await.status, StatusCode::OK);
    let r = put(admin, "/config/consumers/x", json!({})).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert!(r.json()["hint"].as_str().unwrap().contains("--data-dir"));
}

/// A value for a path parameter of the OpenAPI document.
fn fill(path: &str, kind_names: &[(&str, &str)]) -> String {
    let mut out = path.to_string();
    for (prefix, name) in kind_names {
        if path.starts_with(prefix) {
            out = out.replace("{name}", name);
        }
    }
    out.replace("{name}", "backend").replace("{revision}", "1")
}

#[tokio::test]
async fn the_openapi_document_is_valid_openapi_3_1_and_every_operation_answers_as_documented() {
    let dir = tempfile::tempdir().unwrap();
    let up = upstream("ok").await;
    let n = start(
        &config(&format!(
            "upstreams:\n  - name: backend\n    targets: [{{url: 'http://{up}'}}]\n{}",
            PRIVATE
        )),
        dir.path(),
    )
    .await;
    let doc = get(n.admin, "/openapi.json").await.json();
    let meta: Value =
        serde_json::from_str(include_str!("fixtures/openapi-3.1-schema.json")).unwrap();
    let validator = jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .build(&meta)
        .unwrap();
    let errors: Vec<String> = validator
        .iter_errors(&doc)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "not OpenAPI 3.1: {errors:#?}");
    // The check can fail: a broken operation is caught.
    let mut broken = doc.clone();
    broken["paths"]["/config"]["get"]["responses"] = json!("none");
    assert!(!validator.is_valid(&broken));
    // Every $ref resolves inside the document.
    fn refs(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                for (k, v) in m {
                    if k == "$ref" {
                        out.push(v.as_str().unwrap().to_string());
                    } else {
                        refs(v, out);
                    }
                }
            }
            Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }
    let mut all = Vec::new();
    refs(&doc, &mut all);
    for r in &all {
        assert!(
            doc.pointer(r.trim_start_matches('#')).is_some(),
            "dangling {r}"
        );
    }

    // Exercise every operation, in an order where each finds what it needs, and check the
    // status is one the document lists for it.
    let bodies: Vec<(&str, Value)> = vec![
        (
            "/config/upstreams/{name}",
            json!({"targets": [{"url": format!("http://{up}")}]}),
        ),
        (
            "/config/routes/{name}",
            json!({"match": {"path": "/rt"}, "direct_response": {"body": "rt"}}),
        ),
        ("/config/consumers/{name}", json!({"groups": ["g"]})),
        (
            "/config/plugins/{name}",
            json!({"allow_origins": ["https://example.com"]}),
        ),
        ("/config/consumers/{name}/keys", json!({})),
        (
            "/config/consumers/{name}/basic_auth",
            json!({"username": "u", "password": "p"}),
        ),
        ("/cache/purge", json!({"tag": "t"})),
        (
            "/config/apply",
            json!({"consumers": [{"name": "rt-consumer", "groups": ["g"]}]}),
        ),
    ];
    let names = [
        ("/config/upstreams", "rt-up"),
        ("/config/routes", "rt-route"),
        ("/config/consumers", "rt-consumer"),
        ("/config/plugins", "cors"),
        ("/config/certificates", "rt-cert"),
    ];
    let mut ops: Vec<(String, String)> = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            ops.push((method.clone(), path.clone()));
        }
    }
    let rank = |m: &str| match m {
        "put" => 0,
        "post" => 1,
        "get" => 2,
        _ => 3,
    };
    ops.sort_by_key(|(m, p)| (rank(m), p.contains("rollback"), p.len(), p.clone()));
    let mut exercised = 0;
    for (method, path) in &ops {
        let url = fill(path, &names);
        let body = bodies
            .iter()
            .find(|(p, _)| p == path)
            .map(|(_, b)| b.clone());
        let m = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        let r = call(n.admin, m, &url, &[], body).await;
        let documented = doc["paths"][path][method]["responses"].as_object().unwrap();
        assert!(
            documented.contains_key(r.status.as_str()),
            "{method} {url} answered {} which is not documented: {}",
            r.status,
            r.text()
        );
        assert!(!r.status.is_server_error(), "{method} {url}: {}", r.text());
        exercised += 1;
    }
    assert!(exercised >= 25, "{exercised}");
}

#[tokio::test]
async fn apply_makes_the_runtime_entities_exactly_those_given_and_export_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let n = start(&config(PRIVATE), dir.path()).await;
    put(n.admin, "/config/consumers/old", json!({})).await;
    let desired = json!({
        "routes": [{"name": "r", "match": {"path": "/r"}, "direct_response": {"body": "r"}}],
        "consumers": [{"name": "new", "groups": ["g"]}],
    });
    // A dry run answers the diff and changes nothing.
    let dry = post(n.admin, "/config/apply?dry_run=true", desired.clone()).await;
    assert_eq!(dry.status, StatusCode::OK, "{}", dry.text());
    let ops: Vec<String> = dry.json()["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            format!(
                "{} {} {}",
                c["op"].as_str().unwrap(),
                c["kind"].as_str().unwrap(),
                c["name"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        ops,
        [
            "create route r",
            "create consumer new",
            "delete consumer old"
        ]
    );
    assert_eq!(get(n.public, "/r").await.status, StatusCode::NOT_FOUND);
    assert_eq!(get(n.admin, "/config").await.json()["revision"], 1);
    // Applied: one revision.
    let done = post(n.admin, "/config/apply", desired.clone()).await;
    assert_eq!(done.status, StatusCode::OK);
    assert_eq!(done.json()["revision"], 2);
    assert_eq!(get(n.public, "/r").await.text(), "r");
    assert_eq!(
        get(n.admin, "/config/consumers/old").await.status,
        StatusCode::NOT_FOUND
    );
    // Export, parsed back, is the same set: applying it changes nothing.
    let text = get(n.admin, "/config/export").await.text();
    let back = torii_config::yaml::parse(&text).unwrap().to_json();
    let again = post(n.admin, "/config/apply?dry_run=true", back).await;
    assert!(
        again.json()["changes"].as_array().unwrap().is_empty(),
        "{text}"
    );
    // The whole effective config loads as a file.
    let all = get(n.admin, "/config/export?scope=all").await.text();
    torii_config::load_str("export.yaml", &all, &torii_config::ProcessEnv, &*catalog())
        .unwrap_or_else(|d| panic!("{all}\n{d}"));
    // File entities cannot be applied; other sections are refused; bad results change nothing.
    let owned = post(
        n.admin,
        "/config/apply",
        json!({"consumers": [{"name": "from-file"}]}),
    )
    .await;
    assert_eq!(owned.status, StatusCode::CONFLICT);
    let listeners = post(n.admin, "/config/apply", json!({"listeners": []})).await;
    assert_eq!(listeners.status, StatusCode::BAD_REQUEST);
    let bad = post(
        n.admin,
        "/config/apply",
        json!({"routes": [{"name": "b", "match": {"path": "/b"}, "upstream": "none"}]}),
    )
    .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert_eq!(bad.json()["errors"][0]["pointer"], "/routes/b/upstream");
    assert_eq!(get(n.public, "/r").await.text(), "r");
}

#[tokio::test]
async fn without_tokens_web_pages_and_rebinding_are_refused_and_a_reload_cannot_open_the_listener()
{
    let dir = tempfile::tempdir().unwrap();
    let n = start(&config(""), dir.path()).await;
    let with = |h: &'static [(&'static str, &'static str)]| {
        let admin = n.admin;
        async move {
            call(
                admin,
                Method::PUT,
                "/config/consumers/x",
                h,
                Some(json!({})),
            )
            .await
            .status
        }
    };
    assert_eq!(
        with(&[("origin", "https://evil.example")]).await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        with(&[("sec-fetch-site", "cross-site")]).await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        with(&[("host", "evil.example:9901")]).await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        with(&[("host", "localhost:9901")]).await,
        StatusCode::CREATED
    );
    // Too deep a body is refused before anything else.
    let mut deep = json!(1);
    for _ in 0..60 {
        deep = json!([deep]);
    }
    let r = put(
        n.admin,
        "/config/routes/deep",
        json!({"match": {"path": "/d"}, "direct_response": {"body": "x"}, "x": deep}),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.text().contains("nests deeper"), "{}", r.text());

    // A listener bound off loopback with tokens, reloaded without them: the socket stays where
    // it is, so it keeps refusing requests without a token.
    let file = dir.path().join("t.yaml");
    let hash = torii_plugins::consumers::format_key_hash(b"tok-0123456789abcdef");
    let open = config("").replace(
        "admin:\n  bind: 127.0.0.1:0\n",
        &format!(
            "admin:\n  bind: 0.0.0.0:0\n  tokens:\n    - name: t\n      token_hash: '{hash}'\n"
        ),
    );
    std::fs::write(&file, &open).unwrap();
    let data = dir.path().join("d2");
    let m = start_named(file.to_str().unwrap(), &open, &data).await;
    let local = SocketAddr::from(([127, 0, 0, 1], m.admin.port()));
    std::fs::write(&file, config("")).unwrap();
    torii_proxy::reload::reload_from(&m.gw, &file, &torii_config::ProcessEnv)
        .await
        .unwrap();
    assert_eq!(get(local, "/config").await.status, StatusCode::FORBIDDEN);
}

/// Found by schemathesis (scripts/admin-fuzz.sh): a malformed body is refused for what it is
/// before preconditions are looked at, and a key that is not a string is not taken as "none".
#[tokio::test]
async fn a_malformed_body_gets_400_before_preconditions() {
    let dir = tempfile::tempdir().unwrap();
    let n = start(&config(PRIVATE), dir.path()).await;
    let r = call(
        n.admin,
        Method::PUT,
        "/config/consumers/bob",
        &[("if-match", "*")],
        Some(json!({"groups": "not-a-list"})),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());
    assert_eq!(r.json()["errors"][0]["pointer"], "/consumers/bob/groups");
    let r = call(
        n.admin,
        Method::PUT,
        "/config/plugins/no-such-plugin",
        &[("if-match", "\"1\"")],
        Some(json!({})),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());
    assert!(r.text().contains("unknown plugin"), "{}", r.text());
    // A secret in a malformed body is not echoed by its error.
    let r = put(
        n.admin,
        "/config/consumers/eve",
        json!({"basic_auth": [{"username": "u", "password_hash": 987654321}]}),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());
    assert!(!r.text().contains("987654321"), "{}", r.text());
    assert_eq!(
        put(n.admin, "/config/consumers/bob", json!({}))
            .await
            .status,
        StatusCode::CREATED
    );
    let k = post(n.admin, "/config/consumers/bob/keys", json!({"key": null})).await;
    assert_eq!(k.status, StatusCode::BAD_REQUEST, "{}", k.text());
}
