//! Consumer changes through the admin API are applied without loading the whole config: the
//! running snapshot (routers, chains, upstreams) stays, only its consumer directory changes.
//! Checked from the outside (requests to the public listener) and by the snapshot's identity.
#![allow(clippy::unwrap_used)]

mod support;

use http::{Method, StatusCode};
use serde_json::json;
use std::net::SocketAddr;
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
    _dir: tempfile::TempDir,
}

impl Node {
    /// The running snapshot's address: the same value means nothing was rebuilt.
    fn snapshot(&self) -> usize {
        Arc::as_ptr(&self.gw.shared().snapshot.load_full()) as usize
    }
}

async fn start(rest: &str) -> Node {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::Local(LocalStore::open(dir.path()).unwrap());
    let runtime = Arc::new(store.load().await.unwrap());
    let source = Source::file("test.yaml", config(rest)).with_runtime(runtime);
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
        _dir: dir,
    }
}

fn hash(key: &str) -> String {
    torii_plugins::consumers::format_key_hash(key.as_bytes())
}

async fn with_key(n: &Node, key: &str) -> StatusCode {
    call(
        n.public,
        Method::GET,
        "/private",
        &[("x-api-key", key)],
        None,
    )
    .await
    .status
}

/// One route behind key_auth, a plan that allows one request a minute, and a consumer in
/// the file.
fn gateway_config() -> String {
    format!(
        "routes:\n  - name: private\n    match: {{path: /private}}\n    direct_response: {{body: secret}}\n    plugins:\n      key_auth: {{}}\nplans:\n  - name: tiny\n    plugins:\n      rate_limit: {{limits: [{{requests: 1, per: 1m}}], key: [consumer]}}\nconsumers:\n  - name: from-file\n    keys: ['{}']\n",
        hash("file-key-0123456789")
    )
}

#[tokio::test]
async fn consumer_changes_swap_the_directory_and_rebuild_nothing_else() {
    let n = start(&gateway_config()).await;
    let before = n.snapshot();
    let r = put(
        n.admin,
        "/config/consumers/alice",
        json!({"keys": [hash("alice-key-0123456789")]}),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    assert_eq!(with_key(&n, "alice-key-0123456789").await, StatusCode::OK);
    assert_eq!(with_key(&n, "file-key-0123456789").await, StatusCode::OK);
    // A new key replaces the old one at once.
    let r = put(
        n.admin,
        "/config/consumers/alice",
        json!({"keys": [hash("alice-key-new-0123456789")]}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(
        with_key(&n, "alice-key-0123456789").await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        with_key(&n, "alice-key-new-0123456789").await,
        StatusCode::OK
    );
    // Joining a plan applies the plan's plugins compiled at load: one request a minute.
    let r = put(
        n.admin,
        "/config/consumers/alice",
        json!({"keys": [hash("alice-key-new-0123456789")], "plan": "tiny"}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(
        with_key(&n, "alice-key-new-0123456789").await,
        StatusCode::OK
    );
    assert_eq!(
        with_key(&n, "alice-key-new-0123456789").await,
        StatusCode::TOO_MANY_REQUESTS
    );
    // Its own plugin settings are built with the change (here a limit of two).
    let r = put(
        n.admin,
        "/config/consumers/bob",
        json!({"keys": [hash("bob-key-0123456789")], "plugins": {"rate_limit": {"limits": [{"requests": 2, "per": "1m"}], "key": ["consumer"]}}}),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    for want in [
        StatusCode::OK,
        StatusCode::OK,
        StatusCode::TOO_MANY_REQUESTS,
    ] {
        assert_eq!(with_key(&n, "bob-key-0123456789").await, want);
    }
    // A deleted consumer's key stops working; the others keep theirs.
    let d = call(n.admin, Method::DELETE, "/config/consumers/bob", &[], None).await;
    assert_eq!(d.status, StatusCode::NO_CONTENT, "{}", d.text());
    assert_eq!(
        with_key(&n, "bob-key-0123456789").await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(with_key(&n, "file-key-0123456789").await, StatusCode::OK);
    // None of this built a new snapshot, and the admin API reads the new entities.
    assert_eq!(n.snapshot(), before, "a consumer change rebuilt the config");
    let summary = get(n.admin, "/config").await.json();
    assert_eq!(summary["effective"]["consumers"], 2, "{summary}");
    assert_eq!(summary["runtime"]["consumers"], 1, "{summary}");
    assert_eq!(summary["revision"], 5, "{summary}");
}

#[tokio::test]
async fn an_invalid_consumer_change_is_refused_with_pointers_and_changes_nothing() {
    let n = start(&gateway_config()).await;
    let cases = [
        // Another consumer's key.
        (
            json!({"keys": [hash("file-key-0123456789")]}),
            "/consumers/bob/keys/0",
            "used twice",
        ),
        // A plan that does not exist.
        (json!({"plan": "gold"}), "/consumers/bob/plan", "no plan"),
        // Plugin settings that do not build.
        (
            json!({"plugins": {"rate_limit": {"limits": []}}}),
            "/consumers/bob/plugins/rate_limit",
            "",
        ),
        // A plugin that cannot be set per consumer.
        (
            json!({"plugins": {"key_auth": {}}}),
            "/consumers/bob/plugins/key_auth",
            "per consumer",
        ),
        // A schema problem.
        (json!({"groups": "beta"}), "/consumers/bob/groups", ""),
    ];
    for (body, pointer, message) in cases {
        let r = put(n.admin, "/config/consumers/bob", body.clone()).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}: {}", r.text());
        let e = r.json();
        assert_eq!(e["error"], "invalid_config", "{e}");
        let hit = e["errors"].as_array().unwrap().iter().any(|i| {
            i["pointer"]
                .as_str()
                .is_some_and(|p| p.starts_with(pointer))
                && i["message"].as_str().unwrap_or("").contains(message)
        });
        assert!(hit, "{body}: expected {pointer} ({message}) in {e}");
    }
    assert_eq!(get(n.admin, "/config").await.json()["revision"], 0);
    assert_eq!(
        get(n.admin, "/config/consumers/bob").await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn a_consumer_a_route_names_is_changed_by_a_full_load() {
    let n = start(&gateway_config()).await;
    // `guest` is a route's anonymous consumer: the route holds a copy made at load.
    let r = put(n.admin, "/config/consumers/guest", json!({"groups": ["a"]})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let r = put(
        n.admin,
        "/config/routes/open",
        json!({"match": {"path": "/open"}, "anonymous": "guest", "direct_response": {"body": "open"}, "plugins": {"key_auth": {}, "acl": {"allow_groups": ["b"]}}}),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let open = || async { call(n.public, Method::GET, "/open", &[], None).await.status };
    assert_eq!(open().await, StatusCode::FORBIDDEN);
    let before = n.snapshot();
    let r = put(n.admin, "/config/consumers/guest", json!({"groups": ["b"]})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_ne!(
        n.snapshot(),
        before,
        "the route's copy of guest would be stale"
    );
    assert_eq!(open().await, StatusCode::OK);
}

/// The claims of a gateway-signed identity token (signature checked elsewhere:
/// torii-proxy/tests/identity.rs).
fn claims(token: &[u8]) -> serde_json::Value {
    use base64::Engine as _;
    let token = std::str::from_utf8(token).unwrap();
    let payload = token.split('.').nth(1).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

#[tokio::test]
async fn identity_tokens_follow_a_consumer_changed_without_a_reload() {
    let key_file = tempfile::NamedTempFile::new().unwrap();
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    std::fs::write(key_file.path(), pair.serialize_pem()).unwrap();
    let up = echo_header("x-identity-token").await;
    let n = start(&format!(
        "identity:\n  token:\n    issuer: https://gateway.test\n    keys: [{{kid: k1, algorithm: ES256, private_key: '{}'}}]\nupstreams:\n  - name: app\n    targets: [{{url: 'http://{up}'}}]\n    identity_token: {{audience: app}}\nroutes:\n  - name: app\n    match: {{path: /app}}\n    upstream: app\n    plugins: {{key_auth: {{}}}}\n",
        key_file.path().display()
    ))
    .await;
    let key = "carol-key-0123456789";
    let token = |groups: serde_json::Value| {
        let body = json!({"id": "u-1", "groups": groups, "keys": [hash(key)]});
        async move {
            let r = put(n.admin, "/config/consumers/carol", body).await;
            assert!(r.status.is_success(), "{}", r.text());
            let r = call(n.public, Method::GET, "/app", &[("x-api-key", key)], None).await;
            assert_eq!(r.status, StatusCode::OK);
            claims(&r.body)
        }
    };
    let before = n.snapshot();
    assert_eq!(token(json!(["staff"])).await["groups"], json!(["staff"]));
    // Tokens are cached for half their lifetime; a changed consumer gets a new one at once.
    assert_eq!(token(json!(["admin"])).await["groups"], json!(["admin"]));
    assert_eq!(n.snapshot(), before);
}
