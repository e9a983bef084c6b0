//! Cluster mode against a real PostgreSQL (`DATABASE_URL`; `scripts/test.sh` starts a
//! throwaway one when it is unset, and in CI a missing PostgreSQL is a failure): three
//! gateway nodes share one database, each with its own data directory for the last known
//! good config. Each test gets its own database.
#![allow(clippy::unwrap_used)]

mod support;

use http::{Method, StatusCode};
use serde_json::json;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::*;
use torii_admin::Admin;
use torii_admin::store::{LocalStore, PgStore, Store};
use torii_config::Source;
use torii_proxy::Gateway;

/// A fresh database on the test PostgreSQL; `None` outside CI when there is none.
async fn database() -> Option<String> {
    let Ok(url) = std::env::var("DATABASE_URL") else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "DATABASE_URL is unset in CI: scripts/test.sh starts PostgreSQL"
        );
        eprintln!("skipped: DATABASE_URL is unset (scripts/test.sh sets it)");
        return None;
    };
    use sqlx::Connection as _;
    let mut c = sqlx::PgConnection::connect(&url).await.unwrap();
    let name = format!("torii_test_{:016x}", fastrand_u64());
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut c)
        .await
        .unwrap();
    let base = url.split('?').next().unwrap();
    let (server, _) = base.rsplit_once('/').unwrap();
    Some(format!("{server}/{name}"))
}

/// Drops a database `database()` made (its nodes' connections are cut), so a shared
/// `DATABASE_URL` does not collect them.
async fn drop_database(db: &str) {
    use sqlx::Connection as _;
    let (Ok(url), Some((_, name))) = (std::env::var("DATABASE_URL"), db.rsplit_once('/')) else {
        return;
    };
    if let Ok(mut c) = sqlx::PgConnection::connect(&url).await {
        let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&mut c)
            .await;
    }
}

fn fastrand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    );
    h.finish()
}

struct Node {
    gw: Arc<Gateway>,
    admin: SocketAddr,
    public: SocketAddr,
}

/// Starts a node as `torii run --database-url URL --data-dir DIR` does.
async fn node(url: &str, text: &str, dir: &Path) -> Node {
    let store = Store::Postgres(
        PgStore::new(url).unwrap(),
        Some(LocalStore::open(dir).unwrap()),
    );
    let runtime = torii_admin::cluster::initial_runtime(&store).await.unwrap();
    let source = Source::file("node.yaml", text).with_runtime(Arc::new(runtime));
    let loaded = match torii_config::load_source(&source, &torii_config::ProcessEnv, &*catalog()) {
        Ok(l) => l,
        Err(d) => panic!("invalid test config:\n{d}"),
    };
    let gw = Gateway::start(loaded, catalog()).await.unwrap();
    let admin = Admin::install(&gw, store, Arc::new(torii_config::ProcessEnv));
    torii_admin::cluster::follow(admin);
    Node {
        admin: gw.admin_addr().unwrap(),
        public: gw.listener_addr("public").await.unwrap(),
        gw,
    }
}

const FILE: &str = "routes:\n  - name: private\n    match: {path: /private}\n    direct_response: {body: secret}\n    plugins:\n      key_auth: {}\n";

async fn status_with_key(n: &Node, path: &str, key: &str) -> StatusCode {
    call(n.public, Method::GET, path, &[("x-api-key", key)], None)
        .await
        .status
}

/// Waits until `f` holds on every node, up to `limit`; returns how long it took.
async fn everywhere<F, Fut>(nodes: &[&Node], limit: Duration, f: F) -> Duration
where
    F: Fn(SocketAddr, SocketAddr) -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    for n in nodes {
        loop {
            if f(n.public, n.admin).await {
                break;
            }
            assert!(
                start.elapsed() < limit,
                "not on every node within {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    start.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_agree_within_a_second_refuse_bad_writes_and_roll_back_together() {
    let Some(url) = database().await else { return };
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let text = config(FILE);
    let a = node(&url, &text, dirs[0].path()).await;
    let b = node(&url, &text, dirs[1].path()).await;
    let c = node(&url, &text, dirs[2].path()).await;
    let all = [&a, &b, &c];

    // A consumer created on one node authenticates on all three within 1 s.
    assert_eq!(
        put(a.admin, "/config/consumers/alice", json!({}))
            .await
            .status,
        StatusCode::CREATED
    );
    let k = post(a.admin, "/config/consumers/alice/keys", json!({})).await;
    assert_eq!(k.status, StatusCode::CREATED, "{}", k.text());
    let key = k.json()["key"].as_str().unwrap().to_string();
    let took = everywhere(&all, Duration::from_secs(1), |p, _| {
        let key = key.clone();
        async move {
            call(p, Method::GET, "/private", &[("x-api-key", &key)], None)
                .await
                .status
                == StatusCode::OK
        }
    })
    .await;
    eprintln!("consumer key on 3 nodes after {took:?}");

    // A route change likewise, written on another node.
    let route = |body: &str| json!({"match": {"path": "/new"}, "direct_response": {"body": body}});
    assert_eq!(
        put(b.admin, "/config/routes/new", route("v1")).await.status,
        StatusCode::CREATED
    );
    everywhere(&all, Duration::from_secs(1), |p, _| async move {
        get(p, "/new").await.text() == "v1"
    })
    .await;
    let before_bad = get(c.admin, "/config").await.json()["revision"].clone();

    // An invalid write is refused with a precise error and reaches no node.
    let bad = put(
        c.admin,
        "/config/routes/broken",
        json!({"match": {"path": "/b"}, "upstream": "missing"}),
    )
    .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        bad.json()["errors"][0]["pointer"],
        "/routes/broken/upstream"
    );
    for n in all {
        assert_eq!(get(n.admin, "/config").await.json()["revision"], before_bad);
        assert_eq!(
            get(n.admin, "/config/routes/broken").await.status,
            StatusCode::NOT_FOUND
        );
    }

    // Two concurrent writes with the same If-Match on two nodes: one 200, one 412.
    let tag = get(a.admin, "/config/routes/new").await.etag();
    let write = |admin: SocketAddr, body: &'static str| {
        let tag = tag.clone();
        async move {
            call(
                admin,
                Method::PUT,
                "/config/routes/new",
                &[("if-match", &tag)],
                Some(route(body)),
            )
            .await
            .status
        }
    };
    let (x, y) = tokio::join!(write(a.admin, "v2"), write(b.admin, "v3"));
    let mut got = [x, y];
    got.sort();
    assert_eq!(got, [StatusCode::OK, StatusCode::PRECONDITION_FAILED]);
    let winner = if x == StatusCode::OK { "v2" } else { "v3" };
    everywhere(&all, Duration::from_secs(1), |p, _| async move {
        get(p, "/new").await.text() == winner
    })
    .await;

    // The history is shared; rollback (on the third node) restores the earlier behaviour
    // everywhere: before the route existed.
    let h = get(c.admin, "/config/revisions").await.json();
    let route_created = h["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["changes"][0]["name"] == "new" && r["changes"][0]["op"] == "create")
        .unwrap()["revision"]
        .as_u64()
        .unwrap();
    let rb = call(
        c.admin,
        Method::POST,
        &format!("/config/revisions/{}/rollback", route_created - 1),
        &[],
        None,
    )
    .await;
    assert_eq!(rb.status, StatusCode::OK, "{}", rb.text());
    everywhere(&all, Duration::from_secs(1), |p, _| async move {
        get(p, "/new").await.status == StatusCode::NOT_FOUND
    })
    .await;
    // The consumer (created before) still works everywhere.
    for n in all {
        assert_eq!(status_with_key(n, "/private", &key).await, StatusCode::OK);
    }
    drop_database(&url).await;
}

/// A TCP forwarder to PostgreSQL that the test can cut (closing every connection and
/// refusing new ones) and restore: from the nodes' side, PostgreSQL is down.
struct Cut {
    addr: SocketAddr,
    up: tokio::sync::watch::Sender<bool>,
}

impl Cut {
    async fn start(target: SocketAddr) -> Self {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let (up, rx) = tokio::sync::watch::channel(true);
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = l.accept().await else {
                    return;
                };
                if !*rx.borrow() {
                    drop(inbound);
                    continue;
                }
                let mut rx = rx.clone();
                tokio::spawn(async move {
                    let Ok(mut out) = tokio::net::TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut out) => {}
                        _ = rx.wait_for(|up| !*up) => {}
                    }
                });
            }
        });
        Self { addr, up }
    }
    /// A forwarder in front of the PostgreSQL of `url`, and the URL that goes through it.
    async fn in_front_of(url: &str) -> (Self, String) {
        let (server, db) = url.rsplit_once('/').unwrap();
        let rest = server.trim_start_matches("postgres://");
        let (user, host) = rest.rsplit_once('@').unwrap_or(("", rest));
        let target: SocketAddr = tokio::net::lookup_host(host).await.unwrap().next().unwrap();
        let cut = Self::start(target).await;
        let via = format!("postgres://{user}@{}/{db}", cut.addr);
        (cut, via)
    }

    fn set(&self, up: bool) {
        self.up.send_replace(up);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_postgres_down_nodes_serve_their_last_config_restart_from_it_and_catch_up() {
    let Some(url) = database().await else { return };
    let (cut, via_cut) = Cut::in_front_of(&url).await;
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let text = config(FILE);
    let a = node(&via_cut, &text, dirs[0].path()).await;
    let b = node(&via_cut, &text, dirs[1].path()).await;
    let c = node(&via_cut, &text, dirs[2].path()).await;
    put(a.admin, "/config/consumers/alice", json!({})).await;
    let key = post(a.admin, "/config/consumers/alice/keys", json!({}))
        .await
        .json()["key"]
        .as_str()
        .unwrap()
        .to_string();
    everywhere(&[&a, &b, &c], Duration::from_secs(1), |p, _| {
        let key = key.clone();
        async move {
            call(p, Method::GET, "/private", &[("x-api-key", &key)], None)
                .await
                .status
                == StatusCode::OK
        }
    })
    .await;

    // PostgreSQL goes away: every node keeps serving; writes are refused, not half-done.
    cut.set(false);
    for n in [&a, &b, &c] {
        assert_eq!(status_with_key(n, "/private", &key).await, StatusCode::OK);
    }
    let w = put(a.admin, "/config/consumers/bob", json!({})).await;
    assert_eq!(w.status, StatusCode::SERVICE_UNAVAILABLE, "{}", w.text());
    assert_eq!(
        get(a.admin, "/config/consumers/bob").await.status,
        StatusCode::NOT_FOUND
    );

    // A node restarted meanwhile starts from its last known good config.
    c.gw.shutdown(Duration::from_millis(100)).await;
    drop(c);
    let c = node(&via_cut, &text, dirs[2].path()).await;
    assert_eq!(status_with_key(&c, "/private", &key).await, StatusCode::OK);

    // Meanwhile a node that still reaches PostgreSQL makes a change.
    let d_dir = tempfile::tempdir().unwrap();
    let d = node(&url, &text, d_dir.path()).await;
    put(d.admin, "/config/consumers/late", json!({})).await;
    let late = post(d.admin, "/config/consumers/late/keys", json!({}))
        .await
        .json()["key"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        status_with_key(&a, "/private", &late).await,
        StatusCode::UNAUTHORIZED
    );

    // PostgreSQL is back: all catch up (within the reconnect backoff).
    cut.set(true);
    let took = everywhere(&[&a, &b, &c], Duration::from_secs(15), |p, _| {
        let late = late.clone();
        async move {
            call(p, Method::GET, "/private", &[("x-api-key", &late)], None)
                .await
                .status
                == StatusCode::OK
        }
    })
    .await;
    eprintln!("caught up {took:?} after PostgreSQL returned");
    for n in [&a, &b, &c] {
        assert_eq!(status_with_key(n, "/private", &key).await, StatusCode::OK);
    }
    drop_database(&url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_notices_a_store_restored_from_a_backup_and_reloads_it_whole() {
    let Some(url) = database().await else { return };
    let (cut, via_cut) = Cut::in_front_of(&url).await;
    let text = config(FILE);
    let (da, db_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = node(&via_cut, &text, da.path()).await;
    for name in ["old1", "old2"] {
        assert_eq!(
            put(a.admin, &format!("/config/consumers/{name}"), json!({}))
                .await
                .status,
            StatusCode::CREATED
        );
    }
    // A is cut off; the store is "restored" to empty and written again past A's revision.
    cut.set(false);
    {
        use sqlx::Connection as _;
        let mut c = sqlx::PgConnection::connect(&url).await.unwrap();
        sqlx::query("TRUNCATE torii_entities, torii_revisions")
            .execute(&mut c)
            .await
            .unwrap();
    }
    let b = node(&url, &text, db_dir.path()).await;
    for name in ["new1", "new2", "new3"] {
        assert_eq!(
            put(b.admin, &format!("/config/consumers/{name}"), json!({}))
                .await
                .status,
            StatusCode::CREATED
        );
    }
    cut.set(true);
    // A ends with exactly the store's consumers, not its old ones plus revision 3's change.
    let start = Instant::now();
    loop {
        let names: Vec<String> =
            get(a.admin, "/config/consumers?owner=runtime").await.json()["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["name"].as_str().unwrap().to_string())
                .collect();
        if names == ["new1", "new2", "new3"] {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(15), "A has {names:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop_database(&url).await;
}
