#![allow(clippy::unwrap_used)]
//! Path matching, specificity, fallback and 405 tests for `Router`.

mod common;

use common::*;

#[test]
fn exact_static_and_params() {
    let r = build(vec![
        exact("users", "/users"),
        exact("user", "/users/{id}"),
        exact("post", "/users/{id}/posts/{post_id}"),
        exact("root", "/"),
    ]);
    assert_eq!(r.len(), 4);
    assert!(!r.is_empty());
    assert_eq!(hit(&r, &req("/users")), "users");
    assert_eq!(hit(&r, &req("/users/7")), "user");
    assert_eq!(hit(&r, &req("/users/7/posts/9")), "post");
    assert_eq!(hit(&r, &req("/")), "root");
    assert_eq!(hit(&r, &req("/users/7/posts")), "404");
    assert_eq!(hit(&r, &req("/Users")), "404", "case-sensitive");
    assert_eq!(
        params(&r, &req("/users/7/posts/9")),
        p(&[("id", "7"), ("post_id", "9")])
    );
    let q = req("/users/a%2Fb");
    match r.lookup(&q.view()) {
        Lookup::Found(m) => {
            assert_eq!(m.params.get("id"), Some("a%2Fb"));
            assert_eq!(m.params.get("nope"), None);
            assert_eq!(m.params.len(), 1);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn exact_trailing_slash_is_significant() {
    let r = build(vec![exact("a", "/a"), exact("a/", "/a/")]);
    assert_eq!(hit(&r, &req("/a")), "a");
    assert_eq!(hit(&r, &req("/a/")), "a/");
    let only = build(vec![exact("a/", "/a/")]);
    assert_eq!(hit(&only, &req("/a")), "404");
    let only = build(vec![exact("a", "/a")]);
    assert_eq!(hit(&only, &req("/a/")), "404");
}

#[test]
fn catch_all_needs_one_or_more_segments() {
    let r = build(vec![exact("files", "/files/{*rest}")]);
    assert_eq!(params(&r, &req("/files/a")), p(&[("rest", "a")]));
    assert_eq!(params(&r, &req("/files/a/b/c")), p(&[("rest", "a/b/c")]));
    assert_eq!(params(&r, &req("/files/a/")), p(&[("rest", "a/")]));
    assert_eq!(hit(&r, &req("/files")), "404");
    assert_eq!(hit(&r, &req("/files/")), "404");
    let r = build(vec![exact("t", "/t/{id}/{*rest}")]);
    assert_eq!(
        params(&r, &req("/t/1/x/y")),
        p(&[("id", "1"), ("rest", "x/y")])
    );
}

#[test]
fn prefix_matches_on_segment_boundary() {
    let r = build(vec![prefix("admin", "/admin")]);
    assert_eq!(hit(&r, &req("/admin")), "admin");
    assert_eq!(hit(&r, &req("/admin/")), "admin");
    assert_eq!(hit(&r, &req("/admin/x/y")), "admin");
    assert_eq!(hit(&r, &req("/administrator")), "404");
    assert_eq!(hit(&r, &req("/adm")), "404");
    assert_eq!(hit(&r, &req("/")), "404");

    let r = build(vec![prefix("admin/", "/admin/")]);
    assert_eq!(hit(&r, &req("/admin")), "admin/", "trailing slash ignored");
    assert_eq!(hit(&r, &req("/administrator")), "404");

    let r = build(vec![prefix("root", "/")]);
    for path in ["/", "/a", "/a/b/", "/x/y/z"] {
        assert_eq!(hit(&r, &req(path)), "root");
    }
}

#[test]
fn prefix_with_params() {
    let r = build(vec![prefix("tenant", "/tenants/{t}")]);
    assert_eq!(params(&r, &req("/tenants/acme")), p(&[("t", "acme")]));
    assert_eq!(params(&r, &req("/tenants/acme/x/y")), p(&[("t", "acme")]));
    assert_eq!(hit(&r, &req("/tenants")), "404");
    assert_eq!(hit(&r, &req("/tenants/")), "404");
}

#[test]
fn static_beats_param_beats_catch_all() {
    let r = build(vec![
        exact("catch", "/u/{*rest}"),
        exact("param", "/u/{id}"),
        exact("static", "/u/me"),
        prefix("prefix", "/u"),
    ]);
    assert_eq!(hit(&r, &req("/u/me")), "static");
    assert_eq!(hit(&r, &req("/u/42")), "param");
    assert_eq!(hit(&r, &req("/u/42/x")), "catch");
    assert_eq!(hit(&r, &req("/u")), "prefix");
}

#[test]
fn static_beats_param_per_segment() {
    let r = build(vec![
        exact("param-first", "/{a}/b/c"),
        exact("static-first", "/a/{b}/{c}"),
    ]);
    assert_eq!(hit(&r, &req("/a/b/c")), "static-first");
    assert_eq!(hit(&r, &req("/x/b/c")), "param-first");
}

#[test]
fn longer_static_match_wins() {
    let r = build(vec![
        prefix("p/a", "/a"),
        prefix("p/a/b", "/a/b"),
        exact("e/a/b", "/a/b"),
    ]);
    assert_eq!(hit(&r, &req("/a/b")), "e/a/b");
    assert_eq!(hit(&r, &req("/a/b/c")), "p/a/b");
    assert_eq!(hit(&r, &req("/a/c")), "p/a");
    assert_eq!(hit(&r, &req("/a")), "p/a");
}

#[test]
fn exact_beats_prefix_at_same_path() {
    let r = build(vec![prefix("prefix", "/a"), exact("exact", "/a")]);
    assert_eq!(hit(&r, &req("/a")), "exact");
    assert_eq!(hit(&r, &req("/a/")), "prefix");
}

#[test]
fn more_conditions_then_declaration_order() {
    let r = build(vec![
        exact("plain", "/x"),
        exact("get", "/x").methods(&[Method::GET]),
        exact("get+hdr", "/x")
            .methods(&[Method::GET])
            .header("x-beta", ValueMatcher::Present),
        exact("hdr+q", "/x")
            .header("x-beta", ValueMatcher::Present)
            .query("v", ValueMatcher::Exact("2".into())),
    ]);
    assert_eq!(hit(&r, &req("/x")), "get");
    assert_eq!(hit(&r, &req("/x").method(Method::POST)), "plain");
    assert_eq!(hit(&r, &req("/x").header("x-beta", "1")), "get+hdr");
    // Two conditions each: declaration order decides.
    assert_eq!(
        hit(&r, &req("/x").header("x-beta", "1").query("v=2")),
        "get+hdr"
    );
    assert_eq!(
        hit(
            &r,
            &req("/x")
                .method(Method::PUT)
                .header("x-beta", "1")
                .query("v=2")
        ),
        "hdr+q"
    );

    let r = build(vec![
        exact("first", "/y").header("a", ValueMatcher::Present),
        exact("second", "/y").header("b", ValueMatcher::Present),
    ]);
    assert_eq!(
        hit(&r, &req("/y").header("a", "1").header("b", "1")),
        "first"
    );
    assert_eq!(hit(&r, &req("/y").header("b", "1")), "second");
}

#[test]
fn params_differing_only_by_name_coexist() {
    let r = build(vec![
        exact("get", "/users/{id}").methods(&[Method::GET]),
        exact("delete", "/users/{user_id}").methods(&[Method::DELETE]),
    ]);
    assert_eq!(params(&r, &req("/users/1")), p(&[("id", "1")]));
    assert_eq!(
        params(&r, &req("/users/1").method(Method::DELETE)),
        p(&[("user_id", "1")])
    );
}

#[test]
fn fallback_from_param_route_with_failing_header_to_catch_all() {
    let r = build(vec![
        exact("v2", "/api/{id}").header("x-version", ValueMatcher::Exact("2".into())),
        exact("catch", "/api/{*rest}"),
    ]);
    assert_eq!(hit(&r, &req("/api/1").header("x-version", "2")), "v2");
    assert_eq!(hit(&r, &req("/api/1").header("x-version", "1")), "catch");
    assert_eq!(params(&r, &req("/api/1")), p(&[("rest", "1")]));
}

#[test]
fn fallback_through_several_levels() {
    let r = build(vec![
        exact("static", "/a/b/c").header("x-s", ValueMatcher::Present),
        exact("param", "/a/{x}/c").header("x-p", ValueMatcher::Present),
        prefix("prefix-ab", "/a/b").header("x-ab", ValueMatcher::Present),
        prefix("prefix-a", "/a"),
    ]);
    assert_eq!(hit(&r, &req("/a/b/c").header("x-s", "1")), "static");
    assert_eq!(
        params(&r, &req("/a/b/c").header("x-p", "1")),
        p(&[("x", "b")])
    );
    assert_eq!(hit(&r, &req("/a/b/c").header("x-ab", "1")), "prefix-ab");
    assert_eq!(hit(&r, &req("/a/b/c")), "prefix-a");
}

#[test]
fn method_not_allowed_vs_not_found() {
    let r = build(vec![
        exact("get", "/items/{id}").methods(&[Method::GET, Method::HEAD]),
        exact("put", "/items/{id}").methods(&[Method::PUT, Method::GET]),
        exact("patch", "/items/{id}")
            .methods(&[Method::PATCH])
            .header("x-admin", ValueMatcher::Present),
        exact("other", "/other").methods(&[Method::POST]),
    ]);
    assert_eq!(
        hit(&r, &req("/items/1").method(Method::DELETE)),
        "405:GET, HEAD, PUT"
    );
    assert_eq!(
        hit(
            &r,
            &req("/items/1")
                .method(Method::DELETE)
                .header("x-admin", "y")
        ),
        "405:GET, HEAD, PUT, PATCH"
    );
    assert_eq!(hit(&r, &req("/nothing")), "404");
    assert_eq!(hit(&r, &req("/other")), "405:POST");
    let q = req("/items/1").method(Method::POST);
    match r.lookup(&q.view()) {
        Lookup::MethodNotAllowed { allow } => {
            assert_eq!(allow.to_header_value(), "GET, HEAD, PUT");
            assert!(allow.contains(&Method::PUT));
            assert_eq!(allow.len(), 3);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn header_failure_is_404_not_405() {
    let r = build(vec![
        exact("v2", "/x")
            .methods(&[Method::GET])
            .header("x-version", ValueMatcher::Exact("2".into())),
    ]);
    assert_eq!(hit(&r, &req("/x").method(Method::POST)), "404");
    assert_eq!(
        hit(&r, &req("/x").method(Method::POST).header("x-version", "2")),
        "405:GET"
    );
}

#[test]
fn method_mismatch_then_later_match_is_found() {
    let r = build(vec![
        exact("get", "/a/{id}").methods(&[Method::GET]),
        prefix("any", "/a"),
    ]);
    assert_eq!(hit(&r, &req("/a/1").method(Method::POST)), "any");
}
