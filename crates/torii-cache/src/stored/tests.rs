#![allow(clippy::unwrap_used)]
use super::*;

fn settings() -> Settings {
    Settings {
        heuristic: 0.1,
        stale_if_error: Duration::ZERO,
        stale_while_revalidate: Duration::ZERO,
        max_object_size: 1 << 20,
    }
}

fn req(method: Method, headers: &[(&'static str, &'static str)]) -> http::request::Parts {
    let mut b = http::Request::builder().method(method).uri("/a?x=1");
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(()).unwrap().into_parts().0
}

fn h(fields: &[(&'static str, &'static str)]) -> HeaderMap {
    let mut m = HeaderMap::new();
    for (k, v) in fields {
        m.append(*k, HeaderValue::from_static(v));
    }
    m
}

fn get() -> http::request::Parts {
    req(Method::GET, &[])
}

fn stored(fields: &[(&'static str, &'static str)]) -> Stored {
    assess(&get(), StatusCode::OK, &h(fields), false, &settings())
        .unwrap()
        .finish(Bytes::from_static(b"body"))
}

#[test]
fn storability_follows_the_rfc_for_a_shared_cache() {
    let ok = |status: u16, fields: &[(&'static str, &'static str)], auth: bool| {
        assess(
            &get(),
            StatusCode::from_u16(status).unwrap(),
            &h(fields),
            auth,
            &settings(),
        )
        .map(|_| ())
    };
    assert!(ok(200, &[("cache-control", "max-age=60")], false).is_ok());
    // Cacheable by default: stored without explicit freshness when a heuristic applies.
    assert!(
        ok(
            404,
            &[("last-modified", "Sun, 06 Dec 2026 10:00:00 GMT")],
            false
        )
        .is_ok()
    );
    // Without freshness, validator or stale permission it could never be used.
    assert_eq!(ok(200, &[], false), Err("no-freshness"));
    assert!(ok(200, &[("etag", "\"a\"")], false).is_ok());
    // Names are compared without case.
    assert_eq!(
        ok(200, &[("cache-control", "max-age=60, PRIVATE")], false),
        Err("private")
    );
    assert!(ok(200, &[("cache-control", "private, max-age=60")], false).is_err());
    assert!(ok(200, &[("cache-control", "no-store")], false).is_err());
    assert_eq!(
        ok(206, &[("cache-control", "max-age=60")], false),
        Err("status")
    );
    // Not cacheable by default and no explicit freshness.
    assert!(ok(302, &[], false).is_err());
    assert!(ok(302, &[("cache-control", "max-age=60")], false).is_ok());
    assert_eq!(
        ok(
            200,
            &[("cache-control", "max-age=60"), ("vary", "*")],
            false
        ),
        Err("vary-star")
    );
    assert_eq!(
        ok(200, &[("cache-control", "max-age=60")], true),
        Err("authenticated")
    );
    assert!(ok(200, &[("cache-control", "public, max-age=60")], true).is_ok());
    assert!(ok(200, &[("cache-control", "s-maxage=60")], true).is_ok());
    assert_eq!(
        ok(
            200,
            &[("cache-control", "max-age=60"), ("set-cookie", "a=b")],
            false
        ),
        Err("set-cookie")
    );
    assert_eq!(
        ok(
            200,
            &[
                ("cache-control", "max-age=60"),
                ("content-length", "2000000")
            ],
            false
        ),
        Err("too-large")
    );
    // must-understand with an understood status overrides no-store.
    assert!(
        ok(
            200,
            &[("cache-control", "must-understand, no-store, max-age=60")],
            false
        )
        .is_ok()
    );
    let post = assess(
        &req(Method::POST, &[]),
        StatusCode::OK,
        &h(&[("cache-control", "max-age=60")]),
        false,
        &settings(),
    );
    assert_eq!(post.err(), Some("method"));
    let no_store_req = assess(
        &req(Method::GET, &[("cache-control", "no-store")]),
        StatusCode::OK,
        &h(&[("cache-control", "max-age=60")]),
        false,
        &settings(),
    );
    assert!(no_store_req.is_err());
}

#[test]
fn cache_fields_the_policy_would_misread() {
    // Only the first Age value counts.
    let s = stored(&[
        ("cache-control", "max-age=3600"),
        ("age", "7200, 0"),
        ("etag", "\"x\""),
    ]);
    assert_eq!(s.freshness(&get(), Instant::now()), Freshness::Stale);
    // An Expires that is not an HTTP date is in the past.
    let s = assess(
        &get(),
        StatusCode::OK,
        &h(&[
            ("expires", "Thu,  18 Aug 2050 02:01:18 GMT"),
            ("etag", "\"x\""),
        ]),
        false,
        &settings(),
    )
    .unwrap()
    .finish(Bytes::new());
    assert_eq!(s.freshness(&get(), Instant::now()), Freshness::Stale);
    let s = stored(&[("expires", "Thu, 18 Aug 2050 02:01:18 GMT")]);
    assert_eq!(s.freshness(&get(), Instant::now()), Freshness::Fresh);
    // Upper-case directives.
    let s = assess(
        &get(),
        StatusCode::OK,
        &h(&[
            ("cache-control", "max-age=3600, NO-CACHE"),
            ("etag", "\"x\""),
        ]),
        false,
        &settings(),
    )
    .unwrap()
    .finish(Bytes::new());
    assert_eq!(s.freshness(&get(), Instant::now()), Freshness::Stale);
    // CDN-Cache-Control replaces Cache-Control when valid, and is ignored when not.
    let s = stored(&[
        ("cache-control", "max-age=1"),
        ("cdn-cache-control", "max-age=3600"),
    ]);
    assert!(s.ttl(Instant::now()) > 3000);
    let s = stored(&[
        ("cache-control", "max-age=1000"),
        ("cdn-cache-control", "max-age =100"),
    ]);
    assert!(s.ttl(Instant::now()) > 900);
    let fresh_cc_no_store_cdn = assess(
        &get(),
        StatusCode::OK,
        &h(&[
            ("cache-control", "max-age=60"),
            ("cdn-cache-control", "no-store"),
        ]),
        false,
        &settings(),
    );
    assert_eq!(fresh_cc_no_store_cdn.err(), Some("no-store"));
}

#[test]
fn freshness_age_and_request_directives() {
    let now = Instant::now();
    let s = stored(&[("cache-control", "max-age=60"), ("age", "10")]);
    assert_eq!(s.freshness(&get(), now), Freshness::Fresh);
    assert_eq!(s.age(now), 10);
    assert!((49..=50).contains(&s.ttl(now)));
    assert_eq!(
        s.freshness(&get(), now + Duration::from_secs(51)),
        Freshness::Stale
    );
    // The request's own directives go through the policy.
    let no_cache = req(Method::GET, &[("cache-control", "no-cache")]);
    assert_eq!(s.freshness(&no_cache, now), Freshness::Stale);
    let pragma = req(Method::GET, &[("pragma", "no-cache")]);
    assert_eq!(s.freshness(&pragma, now), Freshness::Stale);
    let young = req(Method::GET, &[("cache-control", "max-age=5")]);
    assert_eq!(s.freshness(&young, now), Freshness::Stale);
    let old_ok = req(Method::GET, &[("cache-control", "max-age=3600")]);
    assert_eq!(s.freshness(&old_ok, now), Freshness::Fresh);
    // HEAD is answered from the stored GET.
    assert_eq!(s.freshness(&req(Method::HEAD, &[]), now), Freshness::Fresh);
    let headers = s.headers_at(now, 0);
    assert_eq!(headers.get("age").unwrap(), "10");
    assert_eq!(headers.get_all("age").iter().count(), 1);
}

#[test]
fn stale_permissions() {
    let route = Settings {
        stale_if_error: Duration::from_secs(30),
        ..settings()
    };
    let assess_with = |fields: &[(&'static str, &'static str)], s: &Settings| {
        assess(&get(), StatusCode::OK, &h(fields), false, s)
            .unwrap()
            .finish(Bytes::new())
    };
    let now = Instant::now();
    let later = now + Duration::from_secs(60 + 20);
    let s = assess_with(&[("cache-control", "max-age=60")], &route);
    assert!(s.usable_on_error(later));
    assert!(!s.usable_on_error(later + Duration::from_secs(20)));
    assert!(!s.usable_while_revalidating(later));
    let s = assess_with(
        &[("cache-control", "max-age=60, stale-while-revalidate=40")],
        &settings(),
    );
    assert!(s.usable_while_revalidating(later));
    assert!(!s.usable_on_error(later));
    let s = assess_with(
        &[(
            "cache-control",
            "max-age=60, must-revalidate, stale-if-error=600",
        )],
        &route,
    );
    assert!(!s.usable_on_error(later));
    let s = assess_with(
        &[("cache-control", "max-age=60, stale-if-error=600")],
        &settings(),
    );
    assert!(s.usable_on_error(later));
}

#[test]
fn client_conditionals() {
    let s = stored(&[
        ("cache-control", "max-age=60"),
        ("etag", "\"v1\""),
        ("last-modified", "Sun, 06 Dec 2026 10:00:00 GMT"),
    ]);
    let inm = |v: &'static str| req(Method::GET, &[("if-none-match", v)]);
    assert!(s.not_modified_for(&inm("\"v1\"")));
    assert!(s.not_modified_for(&inm("W/\"v1\"")));
    assert!(s.not_modified_for(&inm("\"v0\", \"v1\"")));
    assert!(s.not_modified_for(&inm("*")));
    assert!(!s.not_modified_for(&inm("\"v2\"")));
    // If-None-Match wins over If-Modified-Since.
    let both = req(
        Method::GET,
        &[
            ("if-none-match", "\"v2\""),
            ("if-modified-since", "Sun, 06 Dec 2026 11:00:00 GMT"),
        ],
    );
    assert!(!s.not_modified_for(&both));
    let ims = |v: &'static str| req(Method::GET, &[("if-modified-since", v)]);
    assert!(s.not_modified_for(&ims("Sun, 06 Dec 2026 10:00:00 GMT")));
    assert!(!s.not_modified_for(&ims("Sun, 06 Dec 2026 09:59:59 GMT")));
    assert!(!s.not_modified_for(&ims("yesterday")));
    let h304 = s.not_modified_headers(Instant::now());
    assert_eq!(h304.get("etag").unwrap(), "\"v1\"");
    assert!(h304.get("content-length").is_none());
}

#[test]
fn revalidation_and_304_merge() {
    let s = stored(&[
        ("cache-control", "max-age=0"),
        ("etag", "\"v1\""),
        ("content-length", "4"),
        ("x-a", "old"),
    ]);
    let r = s.revalidation(&req(
        Method::HEAD,
        &[("if-none-match", "\"mine\""), ("range", "bytes=0-1")],
    ));
    assert_eq!(r.method, Method::GET);
    assert_eq!(r.headers.get("if-none-match").unwrap(), "\"v1\"");
    assert!(r.headers.get("range").is_none());
    let (merged, again) = s.refreshed(
        &get(),
        &h(&[
            ("cache-control", "max-age=60"),
            ("x-a", "new"),
            ("content-length", "0"),
        ]),
        false,
        &settings(),
    );
    assert_eq!(merged.get("x-a").unwrap(), "new");
    assert_eq!(merged.get("content-length").unwrap(), "4");
    let again = again.unwrap();
    assert_eq!(again.freshness(&get(), Instant::now()), Freshness::Fresh);
    assert_eq!(&again.body[..], b"body");
    // A 304 that forbids storing: answered once, not kept.
    let (_, gone) = s.refreshed(
        &get(),
        &h(&[("cache-control", "no-store")]),
        false,
        &settings(),
    );
    assert!(gone.is_err());
}

#[test]
fn vary_and_tags() {
    let c = assess(
        &get(),
        StatusCode::OK,
        &h(&[
            ("cache-control", "max-age=60"),
            ("vary", "Accept-Encoding, accept-language"),
            ("vary", "accept-encoding"),
            ("surrogate-key", "a b"),
            ("cache-tag", "b, c"),
        ]),
        false,
        &settings(),
    )
    .unwrap();
    assert_eq!(c.vary().len(), 2);
    let s = c.finish(Bytes::new());
    let tags: Vec<&str> = s.tags.iter().map(|t| &**t).collect();
    assert_eq!(tags, ["a", "b", "c"]);
}

#[test]
fn review_findings_hold() {
    // max-stale never takes a response that must be revalidated once stale.
    for cc in [
        "max-age=0, must-revalidate",
        "no-cache",
        "s-maxage=0",
        "max-age=0, proxy-revalidate",
    ] {
        let s = assess(
            &get(),
            StatusCode::OK,
            &h(&[("cache-control", cc), ("etag", "\"e\"")]),
            false,
            &settings(),
        )
        .unwrap()
        .finish(Bytes::new());
        let r = req(Method::GET, &[("cache-control", "max-stale")]);
        assert_eq!(s.freshness(&r, Instant::now()), Freshness::Stale, "{cc}");
    }
    let s = stored(&[("cache-control", "max-age=0"), ("etag", "\"e\"")]);
    let r = req(Method::GET, &[("cache-control", "max-stale")]);
    assert_eq!(s.freshness(&r, Instant::now()), Freshness::Fresh);
    // A huge max-age neither panics nor overflows.
    let s = stored(&[("cache-control", "max-age=18446744073709551615")]);
    assert_eq!(s.freshness(&get(), Instant::now()), Freshness::Fresh);
    let _ = s.keep_until();
    let _ = s.shared_ttl(Instant::now(), Duration::from_secs(60));
    // immutable alone gives no freshness.
    assert_eq!(
        assess(
            &get(),
            StatusCode::OK,
            &h(&[("cache-control", "immutable")]),
            false,
            &settings()
        )
        .err(),
        Some("no-freshness")
    );
    // A public response's cookie is not handed to the next client.
    let s = stored(&[
        ("cache-control", "public, max-age=60"),
        ("set-cookie", "session=1"),
    ]);
    assert!(s.headers.get("set-cookie").is_none());
    // A 304 for another representation does not update this one.
    let s = stored(&[("cache-control", "max-age=0"), ("etag", "\"v1\"")]);
    let (_, r) = s.refreshed(&get(), &h(&[("etag", "\"v2\"")]), false, &settings());
    assert_eq!(r.err(), Some("validator-mismatch"));
    // Preconditions are for 2xx answers.
    let s = assess(
        &get(),
        StatusCode::NOT_FOUND,
        &h(&[("cache-control", "max-age=60"), ("etag", "\"n\"")]),
        false,
        &settings(),
    )
    .unwrap()
    .finish(Bytes::new());
    assert!(!s.not_modified_for(&req(Method::GET, &[("if-none-match", "\"n\"")])));
    // The policy keeps no client field but what its rules read: another Host still matches.
    let s = assess(
        &req(
            Method::GET,
            &[
                ("host", "a:1"),
                ("authorization", "Bearer secret"),
                ("cookie", "c=1"),
            ],
        ),
        StatusCode::OK,
        &h(&[("cache-control", "public, max-age=60")]),
        false,
        &settings(),
    )
    .unwrap()
    .finish(Bytes::new());
    let other = req(
        Method::GET,
        &[("host", "a:2"), ("cache-control", "max-age=100")],
    );
    assert_eq!(s.freshness(&other, Instant::now()), Freshness::Fresh);
    let frame = String::from_utf8_lossy(&s.encode()).into_owned();
    assert!(
        !frame.contains("secret") && !frame.contains("c=1"),
        "{frame}"
    );
}

#[test]
fn ranges_of_a_stored_answer() {
    let s = assess(
        &get(),
        StatusCode::OK,
        &h(&[
            ("cache-control", "max-age=60"),
            ("etag", "\"s\""),
            ("last-modified", "Sun, 06 Dec 2026 10:00:00 GMT"),
        ]),
        false,
        &settings(),
    )
    .unwrap()
    .finish(Bytes::from_static(b"0123456789"));
    let r = |fields: &[(&'static str, &'static str)]| s.range(&req(Method::GET, fields));
    assert_eq!(r(&[("range", "bytes=0-1")]), Some(Part::Bytes(0, 1, 10)));
    assert_eq!(r(&[("range", "bytes=8-")]), Some(Part::Bytes(8, 9, 10)));
    assert_eq!(r(&[("range", "bytes=-3")]), Some(Part::Bytes(7, 9, 10)));
    assert_eq!(r(&[("range", "bytes=5-100")]), Some(Part::Bytes(5, 9, 10)));
    assert_eq!(r(&[("range", "bytes=10-")]), Some(Part::Unsatisfiable(10)));
    assert_eq!(r(&[("range", "bytes=0-1,3-4")]), None);
    assert_eq!(r(&[("range", "items=0-1")]), None);
    assert_eq!(r(&[("range", "bytes=3-1")]), None);
    assert_eq!(r(&[]), None);
    assert_eq!(
        r(&[("range", "bytes=0-1"), ("if-range", "\"s\"")]),
        Some(Part::Bytes(0, 1, 10))
    );
    assert_eq!(r(&[("range", "bytes=0-1"), ("if-range", "\"t\"")]), None);
    assert_eq!(
        r(&[
            ("range", "bytes=0-1"),
            ("if-range", "Sun, 06 Dec 2026 10:00:00 GMT")
        ]),
        Some(Part::Bytes(0, 1, 10))
    );
    assert_eq!(
        r(&[
            ("range", "bytes=0-1"),
            ("if-range", "Sun, 06 Dec 2026 10:00:01 GMT")
        ]),
        None
    );
}

#[test]
fn second_review_findings_hold() {
    // The last good answer: never a part, never an answer to a request with credentials
    // the gateway did not check.
    let ok = h(&[("content-type", "text/plain")]);
    assert!(keep(&get(), StatusCode::OK, &ok, false).is_ok());
    assert_eq!(
        keep(&get(), StatusCode::PARTIAL_CONTENT, &ok, false).err(),
        Some("status")
    );
    assert_eq!(
        keep(
            &req(Method::GET, &[("range", "bytes=0-1")]),
            StatusCode::OK,
            &ok,
            false
        )
        .err(),
        Some("partial")
    );
    for cred in ["authorization", "cookie", "proxy-authorization"] {
        let r = req(Method::GET, &[(cred, "secret")]);
        assert_eq!(
            keep(&r, StatusCode::OK, &ok, false).err(),
            Some("credentials"),
            "{cred}"
        );
        assert!(keep(&r, StatusCode::OK, &ok, true).is_ok(), "{cred}");
    }
    // Neither a Set-Cookie nor a credential named by Vary reaches the frame.
    let s = assess(
        &req(Method::GET, &[("cookie", "sid=secret-cookie")]),
        StatusCode::OK,
        &h(&[
            ("cache-control", "public, max-age=60"),
            ("set-cookie", "session=secret-set"),
            ("vary", "cookie"),
        ]),
        false,
        &settings(),
    )
    .unwrap()
    .finish(Bytes::new());
    let frame = String::from_utf8_lossy(&s.encode()).into_owned();
    assert!(!frame.contains("secret"), "{frame}");
    // A frame whose body is not as long as it says is a bad frame.
    let s = stored(&[("cache-control", "max-age=60"), ("content-length", "4")]);
    let mut frame = s.encode();
    assert!(wire::decode(Bytes::from(frame.clone())).is_some());
    frame.push(b'!');
    assert!(wire::decode(Bytes::from(frame)).is_none());
}

#[test]
fn the_age_counts_from_the_date_when_that_is_older_than_the_age_field_says() {
    let dated = |ago: u64, fields: &[(&'static str, &'static str)]| {
        let mut m = h(fields);
        let date = httpdate::fmt_http_date(SystemTime::now() - Duration::from_secs(ago));
        m.insert(header::DATE, HeaderValue::from_str(&date).unwrap());
        assess(&get(), StatusCode::OK, &m, false, &settings())
    };
    let now = Instant::now();
    // Dated 30 s ago, no Age: 30 s old, 30 s of its minute left.
    let s = dated(30, &[("cache-control", "max-age=60")])
        .unwrap()
        .finish(Bytes::new());
    assert!((30..=31).contains(&s.age(now)), "{}", s.age(now));
    assert!((28..=30).contains(&s.ttl(now)), "{}", s.ttl(now));
    assert_eq!(s.headers_at(now, 0).get_all("age").iter().count(), 1);
    // A larger Age wins over the date.
    let s = dated(30, &[("cache-control", "max-age=60"), ("age", "50")])
        .unwrap()
        .finish(Bytes::new());
    assert!((50..=51).contains(&s.age(now)));
    // Dated an hour ago with a minute of freshness and nothing to revalidate with: useless.
    assert_eq!(
        dated(3600, &[("cache-control", "max-age=60")]).err(),
        Some("no-freshness")
    );
    // A request's max-age is compared with the same age.
    let s = dated(30, &[("cache-control", "max-age=600")])
        .unwrap()
        .finish(Bytes::new());
    let young = req(Method::GET, &[("cache-control", "max-age=10")]);
    assert_eq!(s.freshness(&young, now), Freshness::Stale);
    let older = req(Method::GET, &[("cache-control", "max-age=60")]);
    assert_eq!(s.freshness(&older, now), Freshness::Fresh);
    // A date in the future (a fast origin clock) adds nothing.
    let mut m = h(&[("cache-control", "max-age=60")]);
    let later = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(300));
    m.insert(header::DATE, HeaderValue::from_str(&later).unwrap());
    let s = assess(&get(), StatusCode::OK, &m, false, &settings())
        .unwrap()
        .finish(Bytes::new());
    assert_eq!(s.age(now), 0);
}

#[test]
fn a_head_answer_updates_only_the_same_representation() {
    let s = stored(&[
        ("cache-control", "max-age=0"),
        ("etag", "\"a\""),
        ("content-length", "4"),
        ("x-old", "1"),
    ]);
    let head = |fields| s.freshened_by_head(&get(), &h(fields), false, &settings());
    let updated = head(&[
        ("etag", "\"a\""),
        ("cache-control", "max-age=60"),
        ("x-old", "2"),
    ])
    .unwrap()
    .unwrap();
    assert_eq!(updated.freshness(&get(), Instant::now()), Freshness::Fresh);
    assert_eq!(
        updated.headers_at(Instant::now(), 0).get("x-old").unwrap(),
        "2"
    );
    assert_eq!(&updated.body[..], b"body");
    assert!(head(&[("etag", "\"b\""), ("cache-control", "max-age=60")]).is_none());
    assert!(head(&[("etag", "\"a\""), ("content-length", "9")]).is_none());
    assert!(head(&[("last-modified", "Tue, 01 Dec 2026 00:00:00 GMT")]).is_none());
    assert!(
        head(&[("cache-control", "max-age=60")]).is_none(),
        "no validator"
    );
}

#[test]
fn an_update_without_a_date_starts_the_age_again() {
    let mut m = h(&[("cache-control", "max-age=60"), ("etag", "\"a\"")]);
    let old = httpdate::fmt_http_date(SystemTime::now() - Duration::from_secs(7200));
    m.insert(header::DATE, HeaderValue::from_str(&old).unwrap());
    let s = assess(&get(), StatusCode::OK, &m, false, &settings())
        .unwrap()
        .finish(Bytes::from_static(b"body"));
    let now = Instant::now();
    assert_eq!(s.freshness(&get(), now), Freshness::Stale, "two hours old");
    let (_, again) = s.refreshed(&get(), &h(&[("etag", "\"a\"")]), false, &settings());
    let again = again.unwrap();
    assert_eq!(again.freshness(&get(), now), Freshness::Fresh);
    assert!(again.age(now) <= 1);
    let head = h(&[("etag", "\"a\""), ("content-length", "4")]);
    let fresh = s.freshened_by_head(&get(), &head, false, &settings());
    assert!(
        fresh.unwrap().is_ok(),
        "the body's length, not a stored field"
    );
    // Only a stored 200 is updated by a HEAD's 200.
    let gone = assess(&get(), StatusCode::GONE, &m, false, &settings())
        .unwrap()
        .finish(Bytes::new());
    assert!(
        gone.freshened_by_head(&get(), &head, false, &settings())
            .is_none()
    );
}
