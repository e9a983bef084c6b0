#![allow(clippy::unwrap_used)]
//! Host tiers, header/query conditions and build-error tests for `Router`.

mod common;

use common::*;

#[test]
fn allow_set_covers_all_host_tiers_and_extension_methods() {
    let purge = Method::from_bytes(b"PURGE").unwrap();
    let r = build(vec![
        exact("exact", "/x")
            .hosts(&["api.example.com"])
            .methods(&[Method::DELETE]),
        exact("wild", "/x")
            .hosts(&["*.example.com"])
            .methods(&[purge.clone(), Method::GET]),
        exact("any", "/x").methods(&[Method::POST, Method::GET]),
    ]);
    assert_eq!(
        hit(&r, &req("/x").host("api.example.com").method(Method::PUT)),
        "405:GET, POST, DELETE, PURGE"
    );
    assert_eq!(
        hit(&r, &req("/x").host("api.example.com").method(purge)),
        "wild"
    );
    assert_eq!(
        hit(&r, &req("/x").host("other.org").method(Method::PUT)),
        "405:GET, POST"
    );
}

#[test]
fn host_tiers() {
    let r = build(vec![
        exact("any", "/x"),
        exact("wild", "/x").hosts(&["*.example.com"]),
        exact("wild-deep", "/x").hosts(&["*.eu.example.com"]),
        exact("exact", "/x").hosts(&["API.example.com"]),
    ]);
    assert_eq!(hit(&r, &req("/x").host("api.example.com")), "exact");
    assert_eq!(hit(&r, &req("/x").host("www.example.com")), "wild");
    assert_eq!(hit(&r, &req("/x").host("a.b.example.com")), "wild");
    assert_eq!(hit(&r, &req("/x").host("a.eu.example.com")), "wild-deep");
    assert_eq!(hit(&r, &req("/x").host("eu.example.com")), "wild");
    assert_eq!(
        hit(&r, &req("/x").host("example.com")),
        "any",
        "wildcard needs a label"
    );
    assert_eq!(hit(&r, &req("/x").host("example.org")), "any");
    assert_eq!(hit(&r, &req("/x").host("")), "any");
}

#[test]
fn host_tier_beats_path_specificity_and_falls_back() {
    let r = build(vec![
        exact("any-static", "/users/me"),
        prefix("host-prefix", "/").hosts(&["api.example.com"]),
        exact("host-hdr", "/users/me")
            .hosts(&["*.example.com"])
            .header("x-a", ValueMatcher::Present),
    ]);
    assert_eq!(
        hit(&r, &req("/users/me").host("api.example.com")),
        "host-prefix"
    );
    assert_eq!(
        hit(
            &r,
            &req("/users/me").host("www.example.com").header("x-a", "1")
        ),
        "host-hdr"
    );
    assert_eq!(
        hit(&r, &req("/users/me").host("www.example.com")),
        "any-static"
    );
    assert_eq!(hit(&r, &req("/zzz").host("www.example.com")), "404");
}

#[test]
fn route_with_several_hosts() {
    let r = build(vec![exact("multi", "/x").hosts(&["a.com", "*.b.com"])]);
    assert_eq!(hit(&r, &req("/x").host("a.com")), "multi");
    assert_eq!(hit(&r, &req("/x").host("z.b.com")), "multi");
    assert_eq!(hit(&r, &req("/x").host("b.com")), "404");
    let star = build(vec![exact("star", "/x").hosts(&["*"])]);
    assert_eq!(hit(&star, &req("/x").host("whatever.net")), "star");
}

#[test]
fn query_conditions() {
    let r = build(vec![
        exact("beta", "/s").query("mode", ValueMatcher::Exact("beta test".into())),
        exact("num", "/s").query("id", ValueMatcher::Regex(Regex::new("^[0-9]+$").unwrap())),
        exact("plain", "/s"),
    ]);
    assert_eq!(hit(&r, &req("/s").query("mode=beta+test")), "beta");
    assert_eq!(hit(&r, &req("/s").query("m%6fde=beta%20test")), "beta");
    assert_eq!(hit(&r, &req("/s").query("mode=x&mode=beta+test")), "beta");
    assert_eq!(hit(&r, &req("/s").query("id=abc&id=12")), "num");
    assert_eq!(hit(&r, &req("/s").query("id=abc")), "plain");
    assert_eq!(hit(&r, &req("/s")), "plain");
}

#[test]
fn header_conditions() {
    let r = build(vec![
        exact("re", "/h").header("x-v", ValueMatcher::Regex(Regex::new("^v[0-9]$").unwrap())),
        exact("present", "/h").header("x-p", ValueMatcher::Present),
    ]);
    assert_eq!(hit(&r, &req("/h").header("x-v", "v2")), "re");
    assert_eq!(hit(&r, &req("/h").header("x-v", "v22")), "404");
    assert_eq!(hit(&r, &req("/h").header("x-p", "")), "present");
    assert_eq!(
        hit(&r, &req("/h").header("x-v", "no").header("x-v", "v1")),
        "re"
    );
}

#[test]
fn many_params_spill_beyond_inline() {
    let r = build(vec![exact(
        "deep",
        "/{a}/{b}/{c}/{d}/{e}/{f}/{g}/{h}/{i}/{j}",
    )]);
    let got = params(&r, &req("/1/2/3/4/5/6/7/8/9/10"));
    assert_eq!(got.len(), 10);
    assert_eq!(got[9], ("j".to_string(), "10".to_string()));
}

#[test]
fn non_absolute_or_empty_segments() {
    let r = build(vec![exact("p", "/a/{x}/b"), prefix("root", "/")]);
    assert_eq!(hit(&r, &req("*")), "404");
    assert_eq!(hit(&r, &req("")), "404");
    // A param never captures an empty segment (paths should be normalised).
    assert_eq!(hit(&r, &req("/a//b")), "root");
}

#[test]
fn duplicates_are_all_reported() {
    let specs = vec![
        exact("0", "/users/{id}").methods(&[Method::GET, Method::HEAD]),
        exact("1", "/users/{user}").methods(&[Method::HEAD, Method::GET]),
        exact("2", "/users/{id}").methods(&[Method::DELETE]),
        exact("3", "/x").hosts(&["b.com", "a.com"]),
        exact("4", "/x").hosts(&["A.com", "b.com"]),
        exact("5", "/users/{u}").methods(&[Method::GET, Method::HEAD]),
        exact("6", "/h").header("x", ValueMatcher::Regex(Regex::new("^a$").unwrap())),
        exact("7", "/h").header("x", ValueMatcher::Regex(Regex::new("^a$").unwrap())),
        exact("8", "/h").header("x", ValueMatcher::Exact("^a$".into())),
        exact("9", "/q").query("a", ValueMatcher::Present),
        exact("10", "/q").query("a", ValueMatcher::Present),
        prefix("11", "/q"),
        exact("12", "/x").hosts(&["*"]),
        exact("13", "/x"),
    ];
    let errors = Router::build(specs.into_iter().map(|s| s.0).collect()).unwrap_err();
    assert_eq!(
        errors,
        vec![
            BuildError::Duplicate {
                first: 0,
                second: 1
            },
            BuildError::Duplicate {
                first: 3,
                second: 4
            },
            BuildError::Duplicate {
                first: 0,
                second: 5
            },
            BuildError::Duplicate {
                first: 6,
                second: 7
            },
            BuildError::Duplicate {
                first: 9,
                second: 10
            },
            BuildError::Duplicate {
                first: 12,
                second: 13
            },
        ]
    );
}

#[test]
fn not_duplicates() {
    let r = build(vec![
        exact("a", "/x"),
        exact("b", "/x/"),
        prefix("c", "/x"),
        exact("d", "/x").hosts(&["a.com"]),
        exact("e", "/x").hosts(&["*.a.com"]),
        exact("f", "/x").methods(&[Method::GET]),
        exact("g", "/{p}"),
        exact("h", "/{*p}"),
    ]);
    assert_eq!(r.len(), 8);
    assert_eq!(r.get(7), Some(&"h"));
}

#[test]
fn invalid_hosts_are_reported() {
    let errors = Router::build(vec![
        exact("a", "/").hosts(&["a.*.com"]).0,
        exact("b", "/").hosts(&["ok.com", "bad host"]).0,
        exact("c", "/").hosts(&["a.com:80"]).0,
    ])
    .unwrap_err();
    assert_eq!(errors.len(), 3);
    assert!(
        matches!(&errors[1], BuildError::InvalidHost { route: 1, host, .. } if host == "bad host")
    );
}
