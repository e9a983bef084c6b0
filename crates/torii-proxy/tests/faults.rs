//! `fault_injection` end to end: aborts answered by the gateway (never reaching the
//! upstream) with the chosen status and the `fault_injected` code, shares honoured, delays
//! held before the upstream call, and bad settings refused at load.
#![allow(clippy::unwrap_used)]

mod support;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use support::*;

/// An upstream that counts the requests it gets.
async fn counting() -> (FakeUpstream, Arc<AtomicUsize>) {
    let n = Arc::new(AtomicUsize::new(0));
    let seen = n.clone();
    let up = upstream(false, move |_req: Request<Incoming>| {
        let seen = seen.clone();
        async move {
            seen.fetch_add(1, Ordering::SeqCst);
            Response::new(full("ok"))
        }
    })
    .await;
    (up, n)
}

fn route(up: &FakeUpstream, plugin: &str) -> String {
    config(&format!(
        "upstreams:\n  - name: up\n    targets: [{{url: 'http://{}'}}]\nroutes:\n  - name: r\n    match: {{path_prefix: /}}\n    upstream: up\n    plugins:\n      fault_injection: {plugin}\n  - name: clean\n    match: {{path_prefix: /clean}}\n    upstream: up\n",
        up.addr
    ))
}

#[tokio::test]
async fn aborts_answer_with_the_chosen_status_and_never_reach_the_upstream() {
    let (up, n) = counting().await;
    let gw = gateway(&route(&up, "{abort: {percent: 100, status: 503}}")).await;
    let a = addr(&gw).await;
    let client = h1_client();
    for _ in 0..20 {
        let (s, h, b) = get(&client, format!("http://{a}/x")).await;
        assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(h.get("content-type").unwrap(), "application/json");
        assert_eq!(json(&b)["error"]["code"], "fault_injected");
    }
    assert_eq!(n.load(Ordering::SeqCst), 0);
    // Another route of the same gateway is untouched.
    let (s, _, b) = get(&client, format!("http://{a}/clean")).await;
    assert_eq!((s, &b[..]), (StatusCode::OK, &b"ok"[..]));
    // An injected failure is not the upstream's: no upstream error is counted.
    let text = gw.shared().metrics_text();
    let counted: Vec<&str> = text
        .lines()
        .filter(|l| {
            l.starts_with("torii_upstream_errors_total{upstream=\"up\"") && !l.ends_with(" 0")
        })
        .collect();
    assert!(counted.is_empty(), "{counted:?}");
}

#[tokio::test]
async fn a_share_of_requests_is_aborted() {
    let (up, n) = counting().await;
    let gw = gateway(&route(&up, "{abort: {percent: 25, status: 500}}")).await;
    let a = addr(&gw).await;
    let client = h1_client();
    let mut aborted = 0;
    for _ in 0..2000 {
        let (s, _, _) = get(&client, format!("http://{a}/x")).await;
        match s {
            StatusCode::INTERNAL_SERVER_ERROR => aborted += 1,
            StatusCode::OK => {}
            other => panic!("{other}"),
        }
    }
    // 25 % of 2,000 within 5 points (the binomial spread is about 1 point).
    assert!((400..=600).contains(&aborted), "{aborted}");
    assert_eq!(n.load(Ordering::SeqCst), 2000 - aborted);
}

#[tokio::test]
async fn delays_hold_the_request_before_the_upstream() {
    let (up, n) = counting().await;
    let gw = gateway(&route(&up, "{delay: {percent: 100, duration: 300ms}}")).await;
    let a = addr(&gw).await;
    let client = h1_client();
    let started = Instant::now();
    let (s, _, _) = get(&client, format!("http://{a}/x")).await;
    assert_eq!(s, StatusCode::OK);
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(n.load(Ordering::SeqCst), 1);
    // Undelayed on the other route.
    let started = Instant::now();
    let (s, _, _) = get(&client, format!("http://{a}/clean")).await;
    assert_eq!(s, StatusCode::OK);
    assert!(started.elapsed() < Duration::from_millis(300));
}

#[test]
fn bad_faults_are_refused() {
    let cases = [
        ("{}", "fault_injection needs `delay`, `abort` or both"),
        (
            "{abort: {percent: 101, status: 503}}",
            "fault_injection.abort.percent: 101 is not a percentage",
        ),
        (
            "{abort: {percent: 5, status: 302}}",
            "fault_injection.abort.status: 302 is not an error status",
        ),
        (
            "{delay: {percent: 5, duration: 2h}}",
            "fault_injection.delay.duration: 7200s is not a delay from 1ms to 1h",
        ),
        ("{delay: {percent: 5}}", "duration"),
    ];
    let up = "127.0.0.1:1".parse().unwrap();
    let fake = FakeUpstream {
        addr: up,
        stats: Default::default(),
    };
    for (plugin, want) in cases {
        let err = match load_str("faults.yaml", &route(&fake, plugin)) {
            Ok(_) => panic!("accepted {plugin}"),
            Err(d) => d.to_string(),
        };
        assert!(err.contains(want), "{plugin}: wanted {want}, got:\n{err}");
    }
}
