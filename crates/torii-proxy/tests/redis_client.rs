//! The gateway's Redis client against real servers started by the test: a password, TLS
//! with the config's CA, a Redis Cluster of three nodes (a decision over several limits
//! touches one slot), and a server that stops answering without closing its connections
//! (SIGSTOP): calls time out, the connection is opened again, and decisions come back when
//! the server does.
#![allow(clippy::unwrap_used)]

mod support;

use http::StatusCode;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use std::net::SocketAddr;
use std::time::Duration;
use support::redis::*;
use support::*;

fn cfg(upstream: SocketAddr, redis: &str) -> String {
    config(&format!(
        "redis: {redis}\nupstreams:\n  - name: up\n    targets: [{{url: 'http://{upstream}'}}]\nroutes:\n  - name: r\n    match: {{path_prefix: /}}\n    upstream: up\n    plugins:\n      rate_limit: {{limits: [{{requests: 5, per: 1h}}, {{requests: 50, per: 24h}}], policy: redis, on_redis_failure: fail_open, key: [{{header: x-client}}]}}\n"
    ))
}

async fn send(addr: SocketAddr, key: &str) -> (StatusCode, http::HeaderMap) {
    get_with_header(addr, "/", ("x-client", key)).await
}

/// Sends until an answer comes from Redis (not degraded), within `within`.
async fn until_redis_answers(
    addr: SocketAddr,
    key: &str,
    within: Duration,
) -> (StatusCode, http::HeaderMap) {
    let end = tokio::time::Instant::now() + within;
    loop {
        let (s, h) = send(addr, key).await;
        if h.get("torii-ratelimit-degraded").is_none() {
            return (s, h);
        }
        assert!(tokio::time::Instant::now() < end, "redis never answered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Five pass and the sixth is refused: the decisions are Redis's.
async fn five_then_refused(addr: SocketAddr) {
    let key = run_id();
    let (s, _) = until_redis_answers(addr, &key, Duration::from_secs(10)).await;
    assert_eq!(s, StatusCode::OK);
    for _ in 0..4 {
        let (s, h) = send(addr, &key).await;
        assert_eq!(s, StatusCode::OK);
        assert!(h.get("torii-ratelimit-degraded").is_none());
    }
    assert_eq!(send(addr, &key).await.0, StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn a_password_protected_redis_is_used_with_the_urls_credentials() {
    let Some(server) = RedisServer::start_with(&["--requirepass", "s3cret"], true) else {
        return;
    };
    let up = echo_upstream(false).await;
    let good = format!(
        "{{url: 'redis://:s3cret@127.0.0.1:{}', timeout: 2s}}",
        server.port
    );
    let gw = own_gateway(&cfg(up.addr, &good)).await;
    five_then_refused(addr(&gw).await).await;
    // The admin view never shows the password.
    let (_, _, v) = get(
        &h1_client(),
        format!("http://{}/redis", gw.admin_addr().unwrap()),
    )
    .await;
    assert!(!String::from_utf8_lossy(&v).contains("s3cret"));
    // A wrong password: Redis refuses, the declared failure policy applies, visibly.
    let bad = format!(
        "{{url: 'redis://:wrong@127.0.0.1:{}', timeout: 2s, connect_timeout: 300ms}}",
        server.port
    );
    let gw = own_gateway(&cfg(up.addr, &bad)).await;
    let (s, h) = send(addr(&gw).await, "k").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(h["torii-ratelimit-degraded"], "fail_open");
}

#[tokio::test]
async fn a_tls_redis_is_verified_against_the_configured_ca() {
    let dir = std::env::temp_dir().join(format!("torii-redis-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let ca = Issuer::new(ca_params, ca_key);
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&leaf_key, &ca)
        .unwrap();
    let path = |n: &str| dir.join(n).display().to_string();
    std::fs::write(path("ca.pem"), ca_cert.pem()).unwrap();
    std::fs::write(path("redis.pem"), leaf.pem()).unwrap();
    std::fs::write(path("redis.key"), leaf_key.serialize_pem()).unwrap();
    let Some(server) = RedisServer::start_with(
        &[
            "--port",
            "0",
            "--tls-port",
            "{port}",
            "--tls-cert-file",
            &path("redis.pem"),
            "--tls-key-file",
            &path("redis.key"),
            "--tls-ca-cert-file",
            &path("ca.pem"),
            "--tls-auth-clients",
            "no",
        ],
        true,
    ) else {
        return;
    };
    let up = echo_upstream(false).await;
    let url = format!("rediss://127.0.0.1:{}", server.port);
    let trusted = format!(
        "{{url: '{url}', timeout: 2s, tls: {{ca: '{}'}}}}",
        path("ca.pem")
    );
    let gw = own_gateway(&cfg(up.addr, &trusted)).await;
    five_then_refused(addr(&gw).await).await;
    // Without the CA the server's certificate is not trusted: no decisions from it.
    let untrusted = format!("{{url: '{url}', timeout: 2s, connect_timeout: 300ms}}");
    let gw = own_gateway(&cfg(up.addr, &untrusted)).await;
    let (_, h) = send(addr(&gw).await, "k").await;
    assert_eq!(h["torii-ratelimit-degraded"], "fail_open");
    // `tls` with a plain URL is a config error.
    let plain = format!(
        "{{url: 'redis://127.0.0.1:{}', tls: {{ca: '{}'}}}}",
        server.port,
        path("ca.pem")
    );
    let e = load_str("t.yaml", &cfg(up.addr, &plain))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("rediss://"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_redis_cluster_decides_several_limits_of_a_key_in_one_slot() {
    let dir = std::env::temp_dir().join(format!("torii-redis-cluster-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut nodes = Vec::new();
    for i in 0..3 {
        let conf = dir.join(format!("nodes-{i}.conf")).display().to_string();
        let Some(n) = RedisServer::start_with(
            &[
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                &conf,
                "--dir",
                &dir.display().to_string(),
            ],
            false,
        ) else {
            return;
        };
        nodes.push(n);
    }
    let addrs: Vec<String> = nodes
        .iter()
        .map(|n| format!("127.0.0.1:{}", n.port))
        .collect();
    let out = std::process::Command::new("redis-cli")
        .args(["--cluster", "create"])
        .args(&addrs)
        .args(["--cluster-replicas", "0", "--cluster-yes"])
        .output()
        .expect("redis-cli (from the redis-tools package) creates the cluster");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // Ready when every node says the cluster is ok.
    let end = std::time::Instant::now() + Duration::from_secs(20);
    for n in &nodes {
        loop {
            let info = std::process::Command::new("redis-cli")
                .args(["-p", &n.port.to_string(), "cluster", "info"])
                .output()
                .unwrap();
            if String::from_utf8_lossy(&info.stdout).contains("cluster_state:ok") {
                break;
            }
            assert!(std::time::Instant::now() < end, "the cluster never formed");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let up = echo_upstream(false).await;
    let seeds: Vec<String> = addrs.iter().map(|a| format!("'redis://{a}'")).collect();
    let redis = format!("{{cluster_nodes: [{}], timeout: 2s}}", seeds.join(", "));
    let gw = own_gateway(&cfg(up.addr, &redis)).await;
    let a = addr(&gw).await;
    // Several keys, so their slots land on different nodes: each is exact.
    for _ in 0..3 {
        five_then_refused(a).await;
    }
    drop(nodes);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_redis_that_stops_answering_gets_a_new_connection_and_decisions_return() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let up = echo_upstream(false).await;
    let redis = format!(
        "{{url: '{}', timeout: 100ms, connect_timeout: 500ms, recheck_interval: 50ms}}",
        server.url()
    );
    let gw = own_gateway(&cfg(up.addr, &redis)).await;
    let a = addr(&gw).await;
    let admin = gw.admin_addr().unwrap();
    let key = run_id();
    until_redis_answers(a, &key, Duration::from_secs(10)).await;
    // The server stops answering but keeps its connections open: calls time out.
    let pid = server.pid().to_string();
    let signal = |s: &str| {
        assert!(
            std::process::Command::new("kill")
                .args([s, &pid])
                .status()
                .unwrap()
                .success()
        );
    };
    signal("-STOP");
    let end = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (s, h) = send(a, &key).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(h["torii-ratelimit-degraded"], "fail_open");
        let (_, _, v) = get(&h1_client(), format!("http://{admin}/redis")).await;
        if json(&v)["reopened_after_timeouts"].as_u64().unwrap_or(0) >= 1 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < end,
            "never opened a new connection: {}",
            json(&v)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    signal("-CONT");
    until_redis_answers(a, &key, Duration::from_secs(20)).await;
    let (_, _, m) = get(&h1_client(), format!("http://{admin}/metrics")).await;
    assert!(String::from_utf8_lossy(&m).contains("torii_redis_reopens_total"));
}
