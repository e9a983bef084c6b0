//! A route split between upstreams (`routes[].split`): weights honoured over many requests,
//! sticky assignments stable, overrides (header, cookie) winning over weights, a weight of 0
//! reached only through an override, errors counted for the upstream that failed, and bad
//! splits refused at load with their place and fix.
#![allow(clippy::unwrap_used)]

mod support;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use std::collections::HashMap;
use support::*;

/// An upstream that answers with its name.
async fn named(name: &'static str) -> FakeUpstream {
    upstream(false, move |_req: Request<Incoming>| async move {
        Response::new(full(name))
    })
    .await
}

async fn send(
    client: &hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        BoxBody,
    >,
    url: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, String) {
    use http_body_util::BodyExt;
    let mut b = Request::get(url);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let resp = client.request(b.body(full("")).unwrap()).await.unwrap();
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

fn upstreams(stable: &FakeUpstream, canary: &FakeUpstream) -> String {
    format!(
        "upstreams:\n  - name: stable\n    targets: [{{url: 'http://{}'}}]\n  - name: canary\n    targets: [{{url: 'http://{}'}}]\n",
        stable.addr, canary.addr
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_are_honoured_over_ten_thousand_requests() {
    let (stable, canary) = (named("stable").await, named("canary").await);
    let gw = gateway(&config(&format!(
        "{}routes:\n  - name: r\n    match: {{path_prefix: /}}\n    split:\n      upstreams:\n        - {{upstream: stable, weight: 80}}\n        - {{upstream: canary, weight: 20}}\n",
        upstreams(&stable, &canary)
    )))
    .await;
    let url = format!("http://{}/x", addr(&gw).await);
    let client = h1_client();
    // Eight connections at a time, 10,000 requests in all.
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (client, url) = (client.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            let mut seen: HashMap<String, u32> = HashMap::new();
            for _ in 0..1250 {
                let (s, b) = send(&client, &url, &[]).await;
                assert_eq!(s, StatusCode::OK);
                *seen.entry(b).or_default() += 1;
            }
            seen
        }));
    }
    let mut seen: HashMap<String, u32> = HashMap::new();
    for t in tasks {
        for (k, v) in t.await.unwrap() {
            *seen.entry(k).or_default() += v;
        }
    }
    let canary_share = f64::from(seen["canary"]) / 10_000.0;
    assert_eq!(seen["stable"] + seen["canary"], 10_000);
    // 20 % within 3 points (the binomial spread at this size is 0.4 points).
    assert!(
        (canary_share - 0.20).abs() <= 0.03,
        "canary got {canary_share}: {seen:?}"
    );
}

#[tokio::test]
async fn sticky_clients_stay_on_one_upstream_and_overrides_win() {
    let (stable, canary) = (named("stable").await, named("canary").await);
    let gw = gateway(&config(&format!(
        "{}routes:\n  - name: r\n    match: {{path_prefix: /}}\n    split:\n      upstreams:\n        - {{upstream: stable, weight: 50}}\n        - {{upstream: canary, weight: 50}}\n      sticky: {{header: x-user}}\n      overrides:\n        - {{header: x-canary, value: '1', upstream: canary}}\n        - {{cookie: track, value: stable, upstream: stable}}\n",
        upstreams(&stable, &canary)
    )))
    .await;
    let url = format!("http://{}/x", addr(&gw).await);
    let client = h1_client();
    let mut first: HashMap<String, String> = HashMap::new();
    for round in 0..4 {
        for u in 0..100 {
            let user = format!("user-{u}");
            let (s, b) = send(&client, &url, &[("x-user", &user)]).await;
            assert_eq!(s, StatusCode::OK);
            match first.get(&user) {
                None => {
                    first.insert(user, b);
                }
                Some(was) => assert_eq!(was, &b, "{user} moved in round {round}"),
            }
        }
    }
    // Both upstreams have users (50/50 over 100 keys).
    let on_canary = first.values().filter(|b| *b == "canary").count();
    assert!(
        (20..=80).contains(&on_canary),
        "{on_canary} of 100 on canary"
    );
    // A sticky user on stable with the override header goes to the canary; the cookie
    // override sends a canary user to stable.
    let (stable_user, _) = first.iter().find(|(_, b)| *b == "stable").unwrap();
    let (canary_user, _) = first.iter().find(|(_, b)| *b == "canary").unwrap();
    for _ in 0..20 {
        let (_, b) = send(&client, &url, &[("x-user", stable_user), ("x-canary", "1")]).await;
        assert_eq!(b, "canary");
        let (_, b) = send(
            &client,
            &url,
            &[("x-user", canary_user), ("cookie", "a=b; track=stable")],
        )
        .await;
        assert_eq!(b, "stable");
        // Another value of the header is no override.
        let (_, b) = send(&client, &url, &[("x-user", stable_user), ("x-canary", "0")]).await;
        assert_eq!(b, "stable");
    }
}

#[tokio::test]
async fn a_zero_weight_is_reached_only_through_an_override_and_errors_count_per_upstream() {
    let stable = named("stable").await;
    // The canary's port is closed: its requests fail to connect.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let closed_addr = closed.local_addr().unwrap();
    drop(closed);
    let gw = gateway(&config(&format!(
        "upstreams:\n  - name: stable\n    targets: [{{url: 'http://{}'}}]\n  - name: canary\n    targets: [{{url: 'http://{closed_addr}'}}]\n    retries: {{attempts: 1}}\nroutes:\n  - name: r\n    match: {{path_prefix: /}}\n    split:\n      upstreams:\n        - {{upstream: stable, weight: 1}}\n        - {{upstream: canary, weight: 0}}\n      overrides:\n        - {{header: x-canary, upstream: canary}}\n",
        stable.addr
    )))
    .await;
    let url = format!("http://{}/x", addr(&gw).await);
    let client = h1_client();
    for _ in 0..200 {
        let (s, b) = send(&client, &url, &[]).await;
        assert_eq!((s, b.as_str()), (StatusCode::OK, "stable"));
    }
    // Any value of the header selects the canary, which is down.
    for _ in 0..3 {
        let (s, _) = send(&client, &url, &[("x-canary", "yes")]).await;
        assert_eq!(s, StatusCode::BAD_GATEWAY);
    }
    let text = gw.shared().metrics_text();
    assert!(
        text.contains(
            "torii_upstream_errors_total{upstream=\"canary\",kind=\"upstream_connect_failed\"} 3"
        ),
        "{text}"
    );
    assert!(
        !text.contains(
            "torii_upstream_errors_total{upstream=\"stable\",kind=\"upstream_connect_failed\"} 1"
        ),
        "{text}"
    );
}

#[test]
fn bad_splits_are_refused_with_their_place_and_fix() {
    let ups = "upstreams:\n  - name: stable\n    targets: [{url: 'http://127.0.0.1:1'}]\n  - name: canary\n    targets: [{url: 'http://127.0.0.1:2'}]\n";
    let cases = [
        (
            "split:\n      upstreams:\n        - {upstream: stable, weight: 1}\n        - {upstream: canry, weight: 1}\n",
            "routes[0].split.upstreams[1].upstream: unknown upstream `canry`",
            "did you mean `canary`?",
        ),
        (
            "split:\n      upstreams:\n        - {upstream: stable, weight: 0}\n",
            "routes[0].split.upstreams: every weight is 0",
            "give at least one upstream a positive weight",
        ),
        (
            "split:\n      upstreams:\n        - {upstream: stable, weight: 1}\n        - {upstream: stable, weight: 2}\n",
            "upstream `stable` is listed twice",
            "with the sum of its weights",
        ),
        (
            "split:\n      upstreams:\n        - {upstream: stable, weight: 2000000}\n",
            "weight 2000000 is above 1000000",
            "weights are relative",
        ),
        (
            "split:\n      upstreams: []\n",
            "a split shares requests between 1 to 16 upstreams, not 0",
            "list e.g.",
        ),
        (
            "split:\n      upstreams:\n        - {upstream: stable, weight: 1}\n      overrides:\n        - {header: x-a, cookie: b, upstream: canary}\n",
            "routes[0].split.overrides[0].upstream: an override names exactly one of `header` and `cookie`",
            "x-canary",
        ),
        (
            "split:\n      upstreams:\n        - {upstream: stable, weight: 1}\n      overrides:\n        - {cookie: 'a b', upstream: nope}\n",
            "`a b` is not a cookie name",
            "unknown upstream `nope`",
        ),
        (
            "upstream: stable\n    split:\n      upstreams:\n        - {upstream: stable, weight: 1}\n",
            "a route has exactly one of `upstream`, `split`, `direct_response` and `compose`",
            "keep one of them",
        ),
    ];
    for (route, want, hint) in cases {
        let yaml = config(&format!(
            "{ups}routes:\n  - name: r\n    match: {{path_prefix: /}}\n    {route}"
        ));
        let err = match load_str("split.yaml", &yaml) {
            Ok(_) => panic!("accepted:\n{route}"),
            Err(d) => d.to_string(),
        };
        assert!(err.contains(want), "{route}\nwanted {want}\ngot:\n{err}");
        assert!(err.contains(hint), "{route}\nwanted {hint}\ngot:\n{err}");
        assert!(err.contains("split.yaml:"), "{err}");
    }
}
