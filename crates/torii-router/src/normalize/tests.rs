#![allow(clippy::unwrap_used)]

use super::*;

fn norm(p: &str) -> String {
    normalize_path(p).unwrap().into_owned()
}

fn borrowed(p: &str) -> bool {
    matches!(normalize_path(p).unwrap(), Cow::Borrowed(_))
}

#[test]
fn canonical_paths_are_borrowed() {
    for p in [
        "/",
        "/a",
        "/a/",
        "/users/42/posts",
        "/a%2Fb",
        "/a%20b",
        "/a;b=c/d",
        "/~user/x-y_z.txt",
        "/a:b@c!$&'()*+,=",
        "/%252e",
        "/...",
        "/.a/..b",
    ] {
        assert!(borrowed(p), "{p} should be borrowed");
        assert_eq!(norm(p), p);
    }
}

#[test]
fn must_start_with_slash() {
    assert_eq!(normalize_path(""), Err(PathError::Empty));
    assert_eq!(normalize_path("a/b"), Err(PathError::NotAbsolute));
    assert_eq!(normalize_path("*"), Err(PathError::NotAbsolute));
    assert_eq!(normalize_path("%2Fa"), Err(PathError::NotAbsolute));
}

#[test]
fn unreserved_escapes_are_decoded() {
    assert_eq!(norm("/a/%7Eb"), "/a/~b");
    assert_eq!(norm("/%41%62%2d%2E%5f%7e%30"), "/Ab-._~0");
    assert!(!borrowed("/a/%7Eb"));
}

#[test]
fn other_escapes_stay_encoded_uppercased() {
    assert_eq!(norm("/a%2fb"), "/a%2Fb");
    assert_eq!(norm("/a%2Fb"), "/a%2Fb");
    assert_eq!(norm("/a%5cb"), "/a%5Cb");
    assert_eq!(norm("/a%5Cb"), "/a%5Cb");
    assert_eq!(norm("/%e2%82%ac"), "/%E2%82%AC");
    assert_eq!(norm("/a%3bb"), "/a%3Bb");
}

#[test]
fn double_encoding_is_not_decoded_twice() {
    assert_eq!(norm("/%252e"), "/%252e");
    assert_eq!(norm("/%252e%252e/x"), "/%252e%252e/x");
    assert_eq!(norm("/%25%32%65"), "/%252e");
}

#[test]
fn invalid_escapes_are_errors() {
    assert_eq!(
        normalize_path("/a%zz"),
        Err(PathError::InvalidPercentEncoding { position: 2 })
    );
    assert_eq!(
        normalize_path("/a%4"),
        Err(PathError::InvalidPercentEncoding { position: 2 })
    );
    assert_eq!(
        normalize_path("/a%"),
        Err(PathError::InvalidPercentEncoding { position: 2 })
    );
    assert!(normalize_path("/x/%g1").is_err());
    // The error is found even when the path is also dirty elsewhere.
    assert!(normalize_path("//a/%4").is_err());
}

#[test]
fn invalid_raw_bytes_are_errors() {
    for (p, byte) in [
        ("/a b", b' '),
        ("/a\\b", b'\\'),
        ("/a\"b", b'"'),
        ("/a<b", b'<'),
        ("/a>b", b'>'),
        ("/a^b", b'^'),
        ("/a`b", b'`'),
        ("/a{b", b'{'),
        ("/a|b", b'|'),
        ("/a}b", b'}'),
        ("/a\tb", b'\t'),
        ("/a\x7fb", 0x7f),
        ("/a\0b", 0),
        ("/a[b", b'['),
        ("/a#b", b'#'),
        ("/a?b", b'?'),
    ] {
        assert_eq!(
            normalize_path(p),
            Err(PathError::InvalidCharacter { position: 2, byte }),
            "{p:?}"
        );
    }
    assert!(matches!(
        normalize_path("/caf\u{e9}"),
        Err(PathError::InvalidCharacter { position: 4, .. })
    ));
}

#[test]
fn consecutive_slashes_are_merged() {
    assert_eq!(norm("//a///b"), "/a/b");
    assert_eq!(norm("//private"), "/private");
    assert_eq!(norm("//"), "/");
    assert_eq!(norm("/a//"), "/a/");
    assert_eq!(norm("///"), "/");
}

#[test]
fn dot_segments_are_removed() {
    assert_eq!(norm("/private/../public"), "/public");
    assert_eq!(norm("/a/./b"), "/a/b");
    assert_eq!(norm("/a/b/../c"), "/a/c");
    assert_eq!(norm("/a/b/../../c"), "/c");
    assert_eq!(norm("/."), "/");
    assert_eq!(norm("/.."), "/");
    assert_eq!(norm("/./"), "/");
}

#[test]
fn dot_segments_never_go_above_root() {
    assert_eq!(norm("/../a"), "/a");
    assert_eq!(norm("/../../../etc/passwd"), "/etc/passwd");
    assert_eq!(norm("/a/../../b"), "/b");
}

#[test]
fn dot_segments_are_removed_after_decoding() {
    assert_eq!(norm("/%2e%2e/x"), "/x");
    assert_eq!(norm("/private/%2E%2E/public"), "/public");
    assert_eq!(norm("/a/.%2e/b"), "/b");
    assert_eq!(norm("/a/%2e/b"), "/a/b");
}

#[test]
fn trailing_slash_is_kept() {
    assert_eq!(norm("/a/"), "/a/");
    assert_eq!(norm("/a/b/.."), "/a/");
    assert_eq!(norm("/a/b/."), "/a/b/");
    assert_eq!(norm("/a/b/../"), "/a/");
    assert_eq!(norm("/a//b//"), "/a/b/");
}

#[test]
fn tomcat_dot_parameters_are_rejected() {
    for p in [
        "/..;/x",
        "/a/..;jsessionid=1/b",
        "/.;/x",
        "/a/.;x",
        "/%2e%2e;/x",
        "/%2e;/x",
        "/..%3b/x",
        "/..%3B/x",
        "//..;/x",
    ] {
        assert!(
            matches!(
                normalize_path(p),
                Err(PathError::DotSegmentParameter { .. })
            ),
            "{p}"
        );
    }
    // Only dot segments are affected.
    assert_eq!(norm("/a;b/x"), "/a;b/x");
    assert_eq!(norm("/...;/x"), "/...;/x");
    assert_eq!(norm("/.a;/x"), "/.a;/x");
}

#[test]
fn host_lowercase_port_and_trailing_dot() {
    let h = |s| normalize_host(s).unwrap().into_owned();
    assert_eq!(h("API.Example.COM"), "api.example.com");
    assert_eq!(h("api.example.com:8080"), "api.example.com");
    assert_eq!(h("api.example.com."), "api.example.com");
    assert_eq!(h("Api.Example.com.:443"), "api.example.com");
    assert_eq!(h("localhost:"), "localhost");
    assert_eq!(h("[::1]:8080"), "[::1]");
    assert_eq!(h("[::1]"), "[::1]");
    assert_eq!(h("[2001:DB8::1]"), "[2001:db8::1]");
    assert_eq!(h("[::ffff:10.0.0.1]"), "[::ffff:10.0.0.1]");
    assert_eq!(h("10.0.0.1:80"), "10.0.0.1");
    assert_eq!(h("xn--bcher-kva.example"), "xn--bcher-kva.example");
}

#[test]
fn host_borrowed_when_unchanged() {
    for s in ["api.example.com", "api.example.com:8080", "a.b.", "[::1]:1"] {
        assert!(
            matches!(normalize_host(s).unwrap(), Cow::Borrowed(_)),
            "{s}"
        );
    }
    assert!(matches!(normalize_host("A.b").unwrap(), Cow::Owned(_)));
}

#[test]
fn host_errors() {
    assert_eq!(normalize_host(""), Err(HostError::Empty));
    assert_eq!(normalize_host(":80"), Err(HostError::Empty));
    assert_eq!(normalize_host("."), Err(HostError::Empty));
    assert_eq!(normalize_host("a.com:http"), Err(HostError::InvalidPort));
    assert_eq!(normalize_host("a.com:99999"), Err(HostError::InvalidPort));
    assert_eq!(normalize_host("a:b:c"), Err(HostError::InvalidPort));
    assert_eq!(normalize_host("[::1"), Err(HostError::InvalidIpv6));
    assert_eq!(normalize_host("[]"), Err(HostError::InvalidIpv6));
    assert_eq!(normalize_host("[::1]x"), Err(HostError::InvalidPort));
    assert_eq!(
        normalize_host("a_b.com"),
        Err(HostError::InvalidCharacter {
            position: 1,
            byte: b'_'
        })
    );
    assert!(matches!(
        normalize_host("a b"),
        Err(HostError::InvalidCharacter { byte: b' ', .. })
    ));
    assert!(matches!(
        normalize_host("[::g]"),
        Err(HostError::InvalidCharacter { byte: b'g', .. })
    ));
    assert!(normalize_host("ex\u{e4}mple.com").is_err());
    assert!(normalize_host("user@host").is_err());
}

#[test]
fn hosts_with_empty_labels_are_rejected() {
    for bad in ["..", ".", ".example.com", "a..b", "..example.com", "a..:80"] {
        assert!(normalize_host(bad).is_err(), "{bad}");
    }
    assert_eq!(normalize_host("example.com.").unwrap(), "example.com");
}

/// The plain formulation of the host rules (as the one-pass version replaced it): checked
/// against [`normalize_host`] on every string over an alphabet that reaches each rule.
fn reference_host(raw: &str) -> Result<String, HostError> {
    if raw.is_empty() {
        return Err(HostError::Empty);
    }
    // (Bracketed literals keep their own unchanged branch; the alphabet below has no `[`.)
    let host = match raw.split_once(':') {
        Some((host, port)) => {
            check_port(port)?;
            host
        }
        None => raw,
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.is_empty() {
        return Err(HostError::Empty);
    }
    if host.starts_with('.') || host.ends_with('.') || host.contains("..") {
        return Err(HostError::EmptyLabel);
    }
    if let Some((position, &byte)) = host
        .as_bytes()
        .iter()
        .enumerate()
        .find(|(_, b)| !(b.is_ascii_alphanumeric() || **b == b'-' || **b == b'.'))
    {
        return Err(HostError::InvalidCharacter { position, byte });
    }
    Ok(host.to_ascii_lowercase())
}

#[test]
fn host_one_pass_matches_the_plain_rules() {
    let alphabet = ['a', 'Z', '7', '-', '.', ':', '_'];
    let mut checked = 0;
    let mut current = vec![String::new()];
    for _ in 0..6 {
        let mut next = Vec::with_capacity(current.len() * alphabet.len());
        for s in &current {
            for c in alphabet {
                let t = format!("{s}{c}");
                assert_eq!(
                    normalize_host(&t).map(Cow::into_owned),
                    reference_host(&t),
                    "{t:?}"
                );
                checked += 1;
                next.push(t);
            }
        }
        current = next;
    }
    assert_eq!(checked, 7 + 49 + 343 + 2401 + 16807 + 117_649);
}
