#![allow(clippy::unwrap_used)]

use super::*;

fn exact(s: &str) -> PathPattern {
    PathPattern::parse(PathKind::Exact, s).unwrap()
}

fn prefix(s: &str) -> PathPattern {
    PathPattern::parse(PathKind::Prefix, s).unwrap()
}

#[test]
fn parses_segments() {
    let p = exact("/users/{id}/posts/{post_id}");
    assert_eq!(
        p.segments(),
        &[
            Segment::Static("users".into()),
            Segment::Param("id".into()),
            Segment::Static("posts".into()),
            Segment::Param("post_id".into()),
        ]
    );
    assert_eq!(p.param_names().collect::<Vec<_>>(), ["id", "post_id"]);
    assert_eq!(p.kind(), PathKind::Exact);
    assert_eq!(p.to_string(), "/users/{id}/posts/{post_id}");

    let c = exact("/files/{*rest}");
    assert_eq!(c.segments()[1], Segment::CatchAll("rest".into()));
    assert_eq!(c.to_string(), "/files/{*rest}");
    assert_eq!(exact("/").segments(), &[]);
    assert_eq!(exact("/").to_string(), "/");
}

#[test]
fn pattern_text_is_normalised() {
    assert_eq!(exact("/a/%7Eb"), exact("/a/~b"));
    assert_eq!(exact("//a///b"), exact("/a/b"));
    assert_eq!(exact("/a/./b/../c"), exact("/a/c"));
    assert_eq!(exact("/a%2fb").to_string(), "/a%2Fb");
    assert_eq!(exact("/x/%2e%2e/y"), exact("/y"));
}

#[test]
fn trailing_slash_significant_for_exact_only() {
    assert!(exact("/a/").trailing_slash());
    assert!(!exact("/a").trailing_slash());
    assert_ne!(exact("/a/"), exact("/a"));
    assert!(!prefix("/a/").trailing_slash());
    assert_eq!(prefix("/a/"), prefix("/a"));
    assert!(!exact("/").trailing_slash());
}

#[test]
fn parameter_name_errors() {
    for bad in ["/{}", "/{1a}", "/{a-b}", "/{*}", "/{ a}", "/{*1}"] {
        assert!(
            matches!(
                PathPattern::parse(PathKind::Exact, bad),
                Err(PatternError::InvalidParamName { .. })
            ),
            "{bad}"
        );
    }
    assert!(PathPattern::parse(PathKind::Exact, "/{_a1}").is_ok());
}

#[test]
fn stray_braces_are_errors() {
    for bad in ["/a{b}", "/{a}b", "/{a", "/a}", "/{{a}}", "/x/}{"] {
        assert!(
            matches!(
                PathPattern::parse(PathKind::Exact, bad),
                Err(PatternError::StrayBrace { .. })
            ),
            "{bad}"
        );
    }
}

#[test]
fn duplicate_parameter_names_are_errors() {
    assert_eq!(
        PathPattern::parse(PathKind::Exact, "/{id}/x/{id}"),
        Err(PatternError::DuplicateParam { name: "id".into() })
    );
    assert_eq!(
        PathPattern::parse(PathKind::Exact, "/{id}/{*id}"),
        Err(PatternError::DuplicateParam { name: "id".into() })
    );
}

#[test]
fn catch_all_placement() {
    assert_eq!(
        PathPattern::parse(PathKind::Exact, "/{*rest}/x"),
        Err(PatternError::CatchAllNotLast)
    );
    assert_eq!(
        PathPattern::parse(PathKind::Exact, "/files/{*rest}/"),
        Err(PatternError::CatchAllNotLast)
    );
    assert_eq!(
        PathPattern::parse(PathKind::Prefix, "/files/{*rest}"),
        Err(PatternError::CatchAllInPrefix)
    );
}

#[test]
fn path_errors_propagate() {
    assert_eq!(
        PathPattern::parse(PathKind::Exact, "users"),
        Err(PatternError::Path(PathError::NotAbsolute))
    );
    assert_eq!(
        PathPattern::parse(PathKind::Exact, ""),
        Err(PatternError::Path(PathError::Empty))
    );
    assert!(matches!(
        PathPattern::parse(PathKind::Exact, "/a b"),
        Err(PatternError::Path(PathError::InvalidCharacter { .. }))
    ));
    assert!(matches!(
        PathPattern::parse(PathKind::Exact, "/a/%zz"),
        Err(PatternError::Path(PathError::InvalidPercentEncoding {
            position: 3
        }))
    ));
    assert!(matches!(
        PathPattern::parse(PathKind::Prefix, "/..;/a"),
        Err(PatternError::Path(PathError::DotSegmentParameter { .. }))
    ));
}

#[test]
fn shape_key_ignores_param_names() {
    assert_eq!(
        exact("/users/{id}").shape_key(),
        exact("/users/{user_id}").shape_key()
    );
    assert_ne!(
        exact("/users/{id}").shape_key(),
        prefix("/users/{id}").shape_key()
    );
    assert_ne!(exact("/a/").shape_key(), exact("/a").shape_key());
    assert_ne!(exact("/a/{x}").shape_key(), exact("/a/{*x}").shape_key());
}
