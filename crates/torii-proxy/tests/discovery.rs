//! DNS service discovery (`upstreams[].discovery.dns`) against a real DNS server on
//! 127.0.0.1 (a UDP server in the test process, answering from records the test changes):
//! A and SRV records become targets, changes take effect without dropping requests in flight,
//! failed lookups keep the last known targets and are counted, and the admin listener shows
//! the source and its lookups.
#![allow(clippy::unwrap_used)]

mod support;

use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::rdata::{A, SRV};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use http::StatusCode;
use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::*;
use torii_proxy::Gateway;

/// What the test DNS server answers.
#[derive(Default)]
struct Zone {
    a: HashMap<String, Vec<Ipv4Addr>>,
    /// priority, weight, port, target
    srv: HashMap<String, Vec<(u16, u16, u16, String)>>,
    /// Answer SERVFAIL to everything.
    failing: bool,
    /// The TTL of every record.
    ttl: u32,
}

/// A DNS server on 127.0.0.1 (UDP) answering from a [`Zone`]; counts the questions it got.
struct Dns {
    addr: SocketAddr,
    zone: Arc<Mutex<Zone>>,
    asked: Arc<AtomicUsize>,
}

impl Dns {
    async fn start() -> Self {
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        let zone = Arc::new(Mutex::new(Zone::default()));
        let asked = Arc::new(AtomicUsize::new(0));
        let (z, n) = (zone.clone(), asked.clone());
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            loop {
                let Ok((len, from)) = socket.recv_from(&mut buf).await else {
                    return;
                };
                let Ok(question) = Message::from_vec(&buf[..len]) else {
                    continue;
                };
                let answer = answer(&question, &z.lock().unwrap());
                n.fetch_add(1, Ordering::SeqCst);
                let _ = socket.send_to(&answer.to_vec().unwrap(), from).await;
            }
        });
        Dns { addr, zone, asked }
    }

    fn set(&self, f: impl FnOnce(&mut Zone)) {
        f(&mut self.zone.lock().unwrap());
    }

    /// Waits until the server has answered `n` more questions than now.
    async fn answers(&self, n: usize) {
        let start = self.asked.load(Ordering::SeqCst);
        eventually("the DNS server is asked again", || {
            self.asked.load(Ordering::SeqCst) >= start + n
        })
        .await;
    }
}

fn answer(q: &Message, zone: &Zone) -> Message {
    let mut m = Message::new();
    m.set_id(q.id())
        .set_message_type(MessageType::Response)
        .set_op_code(q.op_code())
        .set_recursion_desired(q.recursion_desired())
        .set_recursion_available(true)
        .set_authoritative(true);
    m.add_queries(q.queries().to_vec());
    if zone.failing {
        m.set_response_code(ResponseCode::ServFail);
        return m;
    }
    for query in q.queries() {
        let name = query.name().to_ascii();
        let name = name.trim_end_matches('.');
        match query.query_type() {
            RecordType::A => {
                for ip in zone.a.get(name).into_iter().flatten() {
                    m.add_answer(Record::from_rdata(
                        query.name().clone(),
                        zone.ttl,
                        RData::A(A(*ip)),
                    ));
                }
            }
            RecordType::SRV => {
                for (prio, weight, port, target) in zone.srv.get(name).into_iter().flatten() {
                    let target = Name::from_ascii(format!("{target}.")).unwrap();
                    m.add_answer(Record::from_rdata(
                        query.name().clone(),
                        zone.ttl,
                        RData::SRV(SRV::new(*prio, *weight, *port, target)),
                    ));
                }
            }
            _ => {}
        }
    }
    m
}

/// Waits (bounded) until `f` holds, checking every 10 ms.
async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let end = tokio::time::Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(tokio::time::Instant::now() < end, "never: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Requests to `/slow` that reached a target (for all targets of a test).
static SLOW: AtomicUsize = AtomicUsize::new(0);

/// A target answering its name, bound to `ip:port` (port 0: any); `/slow` answers after
/// 300 ms.
async fn named_target(ip: &str, port: u16, name: &'static str) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind((ip, port)).await.unwrap();
    upstream_on(
        listener,
        false,
        move |req: http::Request<hyper::body::Incoming>| async move {
            if req.uri().path() == "/slow" {
                SLOW.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            let mut r = http::Response::new(full(name));
            if let Some(h) = req.headers().get(http::header::HOST) {
                r.headers_mut().insert("x-seen-host", h.clone());
            }
            r
        },
    )
    .addr
}

fn cfg(dns: SocketAddr, discovery: &str) -> String {
    config(&format!(
        "upstreams:\n  - name: up\n    host_header: target\n    discovery:\n      dns: {{nameservers: ['{dns}'], min_ttl: 20ms, max_ttl: 100ms, timeout: 500ms, retry_interval: 20ms, {discovery}}}\nroutes:\n  - name: all\n    match: {{path_prefix: /}}\n    upstream: up\n"
    ))
}

/// The targets of upstream `up` now.
fn targets(gw: &Gateway) -> Vec<String> {
    let mut t: Vec<String> = gw.shared().snapshot.load().upstreams["up"]
        .targets_view()
        .iter()
        .map(|t| t.name.to_string())
        .collect();
    t.sort();
    t
}

async fn get_path(a: SocketAddr, path: &str) -> (StatusCode, String) {
    let (s, _, b) = get(&h1_client(), format!("http://{a}{path}")).await;
    (s, String::from_utf8_lossy(&b).into_owned())
}

/// Who answered `n` requests, by name.
async fn spread(addr: SocketAddr, n: usize) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    for _ in 0..n {
        let (s, who) = get_path(addr, "/x").await;
        assert_eq!(s, StatusCode::OK, "{who}");
        *seen.entry(who).or_default() += 1;
    }
    seen
}

#[tokio::test]
async fn a_records_become_targets_and_changes_take_effect_without_dropping_requests() {
    let dns = Dns::start().await;
    let one = named_target("127.0.0.1", 0, "one").await;
    // The second target listens on another loopback address, on the same port.
    let two = named_target("127.0.0.2", one.port(), "two").await;
    dns.set(|z| {
        z.a.insert("svc.test".into(), vec![Ipv4Addr::new(127, 0, 0, 1)]);
    });
    let gw = gateway(&cfg(
        dns.addr,
        &format!("name: svc.test, port: {}", one.port()),
    ))
    .await;
    let addr = addr(&gw).await;
    // The first request may come before the first answer: it waits for it.
    assert_eq!(get_path(addr, "/x").await, (StatusCode::OK, "one".into()));
    // The Host sent is the discovered name (host_header: target), not the address.
    let (_, h, _) = get(&h1_client(), format!("http://{addr}/x")).await;
    assert_eq!(
        h["x-seen-host"],
        format!("svc.test:{}", one.port()).as_str()
    );

    // A second address: both take traffic.
    dns.set(|z| {
        z.a.insert(
            "svc.test".into(),
            vec![Ipv4Addr::new(127, 0, 0, 1), Ipv4Addr::new(127, 0, 0, 2)],
        );
    });
    eventually("two targets", || {
        targets(&gw) == [one.to_string(), two.to_string()]
    })
    .await;
    let seen = spread(addr, 20).await;
    assert_eq!(seen.get("one"), Some(&10), "{seen:?}");
    assert_eq!(seen.get("two"), Some(&10), "{seen:?}");

    // A slow request in flight at `one` when `one` leaves still gets its answer.
    let slow = tokio::spawn(async move {
        // Round robin: the next request goes to `one` or `two`; send two, one of them lands
        // on `one`.
        let (a, b) = tokio::join!(get_path(addr, "/slow"), get_path(addr, "/slow"));
        vec![a, b]
    });
    eventually("both slow requests at their targets", || {
        SLOW.load(Ordering::SeqCst) == 2
    })
    .await;
    dns.set(|z| {
        z.a.insert("svc.test".into(), vec![Ipv4Addr::new(127, 0, 0, 2)]);
    });
    eventually("only two", || targets(&gw) == [two.to_string()]).await;
    let answers = slow.await.unwrap();
    let mut who: Vec<String> = answers
        .iter()
        .map(|(s, b)| {
            assert_eq!(*s, StatusCode::OK);
            b.clone()
        })
        .collect();
    who.sort();
    assert_eq!(
        who,
        ["one", "two"],
        "the request at the removed target finished"
    );
    let seen = spread(addr, 10).await;
    assert_eq!(seen.get("two"), Some(&10), "{seen:?}");
}

#[tokio::test]
async fn a_failed_lookup_keeps_the_last_known_targets_and_is_counted() {
    let dns = Dns::start().await;
    let one = named_target("127.0.0.1", 0, "one").await;
    dns.set(|z| {
        z.a.insert("svc.test".into(), vec![Ipv4Addr::new(127, 0, 0, 1)]);
    });
    let gw = gateway(&cfg(
        dns.addr,
        &format!("name: svc.test, port: {}", one.port()),
    ))
    .await;
    let addr = addr(&gw).await;
    eventually("one target", || targets(&gw) == [one.to_string()]).await;
    let admin = gw.admin_addr().unwrap();

    // The server fails: the target stays, requests go on, failures are counted and shown.
    dns.set(|z| z.failing = true);
    dns.answers(3).await;
    assert_eq!(targets(&gw), [one.to_string()]);
    assert_eq!(get_path(addr, "/x").await, (StatusCode::OK, "one".into()));
    let (_, _, v) = get(&h1_client(), format!("http://{admin}/upstreams/up")).await;
    let d = &json(&v)["discovery"];
    assert_eq!(
        d["source"],
        format!("dns a svc.test:{}", one.port()).as_str()
    );
    assert!(d["failures"].as_u64().unwrap() >= 1, "{d}");
    assert!(d["last_error"].is_string(), "{d}");
    let (_, _, m) = get(&h1_client(), format!("http://{admin}/metrics")).await;
    let m = String::from_utf8_lossy(&m).into_owned();
    assert!(
        m.contains("torii_upstream_discovery_failures_total{upstream=\"up\"}"),
        "{m}"
    );

    // A name with no records (the service was removed from DNS) keeps them too.
    dns.set(|z| {
        z.failing = false;
        z.a.clear();
    });
    dns.answers(3).await;
    assert_eq!(targets(&gw), [one.to_string()]);

    // The server recovers: its answer is taken, and the error clears.
    dns.set(|z| {
        z.a.insert("svc.test".into(), vec![Ipv4Addr::new(127, 0, 0, 1)]);
    });
    eventually("the error clears", || {
        let up = &gw.shared().snapshot.load().upstreams["up"];
        up.discovery_view().unwrap().last_error.is_none()
    })
    .await;
    let (_, _, v) = get(&h1_client(), format!("http://{admin}/upstreams/up")).await;
    assert!(json(&v)["discovery"]["last_success_ms_ago"].is_u64());
}

#[tokio::test]
async fn srv_records_give_ports_and_weights_and_the_best_priority_wins() {
    let dns = Dns::start().await;
    let heavy = named_target("127.0.0.1", 0, "heavy").await;
    let light = named_target("127.0.0.1", 0, "light").await;
    let backup = named_target("127.0.0.1", 0, "backup").await;
    dns.set(|z| {
        z.a.insert("host.test".into(), vec![Ipv4Addr::new(127, 0, 0, 1)]);
        z.srv.insert(
            "_http._tcp.svc.test".into(),
            vec![
                (10, 3, heavy.port(), "host.test".into()),
                (10, 1, light.port(), "host.test".into()),
                // A worse priority: a fallback, not a target.
                (20, 100, backup.port(), "host.test".into()),
            ],
        );
    });
    let gw = gateway(&cfg(dns.addr, "name: _http._tcp.svc.test, record: srv")).await;
    let addr = addr(&gw).await;
    eventually("two targets", || targets(&gw).len() == 2).await;
    let mut want = vec![heavy.to_string(), light.to_string()];
    want.sort();
    assert_eq!(targets(&gw), want);
    // Smooth weighted round robin: exactly 3:1 over whole rounds.
    let seen = spread(addr, 40).await;
    assert_eq!(seen.get("heavy"), Some(&30), "{seen:?}");
    assert_eq!(seen.get("light"), Some(&10), "{seen:?}");
    assert_eq!(seen.get("backup"), None, "{seen:?}");
    // The Host is the service's own domain (not the SRV answer's host name) with the port.
    let (_, h, b) = get(&h1_client(), format!("http://{addr}/x")).await;
    let port = if &b[..] == b"heavy" {
        heavy.port()
    } else {
        light.port()
    };
    assert_eq!(h["x-seen-host"], format!("svc.test:{port}").as_str());
}

#[tokio::test]
async fn an_upstream_takes_targets_from_the_config_or_from_discovery() {
    let both = config(
        "upstreams:\n  - name: up\n    targets: [{url: 'http://127.0.0.1:1'}]\n    discovery: {dns: {name: svc.test}}\nroutes:\n  - name: all\n    match: {path_prefix: /}\n    upstream: up\n",
    );
    let e = load_str("t.yaml", &both).err().unwrap().to_string();
    assert!(e.contains("upstreams[0].discovery"), "{e}");
    assert!(e.contains("not both"), "{e}");
    let bad = config(
        "upstreams:\n  - name: up\n    discovery: {dns: {name: 'svc test', min_ttl: 10s, max_ttl: 1s}}\nroutes:\n  - name: all\n    match: {path_prefix: /}\n    upstream: up\n",
    );
    let e = load_str("t.yaml", &bad).err().unwrap().to_string();
    assert!(e.contains("upstreams[0].discovery.dns.name"), "{e}");
    assert!(e.contains("not a DNS name"), "{e}");
    assert!(e.contains("upstreams[0].discovery.dns.max_ttl"), "{e}");
    let srv_port = config(
        "upstreams:\n  - name: up\n    discovery: {dns: {name: _http._tcp.svc.test, record: srv, port: 80}}\nroutes:\n  - name: all\n    match: {path_prefix: /}\n    upstream: up\n",
    );
    let e = load_str("t.yaml", &srv_port).err().unwrap().to_string();
    assert!(e.contains("upstreams[0].discovery.dns.port"), "{e}");
}
