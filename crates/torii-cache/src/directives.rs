//! The `Cache-Control` directives the policy crate leaves to its caller: the RFC 5861
//! extensions (`stale-while-revalidate`, `stale-if-error`), `must-understand`, and the
//! request's `only-if-cached`. Everything else (freshness, `no-store`, `private`, `max-age`,
//! `min-fresh`, `max-stale`, ...) is read by `http-cache-semantics`.

use http::HeaderMap;
use http::header::CACHE_CONTROL;
use std::time::Duration;

/// One directive: its name (lowercase as compared) and its value, unquoted.
#[derive(Debug, PartialEq, Eq)]
pub struct Directive<'a> {
    /// The name as written.
    pub name: &'a str,
    /// The value, without quotes.
    pub value: Option<&'a str>,
}

/// Every directive of every `Cache-Control` line, in order. Commas inside quoted values do not
/// split; lines that are not visible ASCII are skipped.
pub fn all(headers: &HeaderMap) -> impl Iterator<Item = Directive<'_>> {
    headers
        .get_all(CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(split)
}

fn split(line: &str) -> impl Iterator<Item = Directive<'_>> {
    let mut rest = line;
    std::iter::from_fn(move || {
        loop {
            if rest.is_empty() {
                return None;
            }
            // The end of this item: the first comma outside quotes.
            let mut quoted = false;
            let mut escaped = false;
            let mut end = rest.len();
            for (i, b) in rest.bytes().enumerate() {
                match b {
                    _ if escaped => escaped = false,
                    b'\\' if quoted => escaped = true,
                    b'"' => quoted = !quoted,
                    b',' if !quoted => {
                        end = i;
                        break;
                    }
                    _ => {}
                }
            }
            let item = rest[..end].trim();
            rest = rest.get(end + 1..).unwrap_or("");
            if item.is_empty() {
                continue;
            }
            let (name, value) = match item.split_once('=') {
                Some((n, v)) => {
                    let v = v.trim();
                    let v = v
                        .strip_prefix('"')
                        .and_then(|v| v.strip_suffix('"'))
                        .unwrap_or(v);
                    (n.trim(), Some(v))
                }
                None => (item, None),
            };
            return Some(Directive { name, value });
        }
    })
}

/// Whether `headers` hold the directive `name`.
pub fn has(headers: &HeaderMap, name: &str) -> bool {
    all(headers).any(|d| d.name.eq_ignore_ascii_case(name))
}

/// A delta-seconds directive (`stale-if-error=60`); an invalid value counts as absent.
pub fn seconds(headers: &HeaderMap, name: &str) -> Option<Duration> {
    all(headers)
        .find(|d| d.name.eq_ignore_ascii_case(name))
        .and_then(|d| d.value)
        .and_then(|v| v.parse::<u64>().ok())
        .map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn h(lines: &[&'static str]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for l in lines {
            m.append(CACHE_CONTROL, HeaderValue::from_static(l));
        }
        m
    }

    #[test]
    fn splits_lines_items_and_quoted_values() {
        let m = h(&[
            r#"max-age=60, no-cache="set-cookie, x-a", Stale-If-Error=30"#,
            "must-understand,,no-store",
        ]);
        let d: Vec<_> = all(&m).collect();
        assert_eq!(d.len(), 5);
        assert_eq!(d[1].value, Some("set-cookie, x-a"));
        assert_eq!(seconds(&m, "stale-if-error"), Some(Duration::from_secs(30)));
        assert!(has(&m, "must-understand"));
        assert!(has(&m, "no-store"));
        assert!(!has(&m, "private"));
        assert_eq!(seconds(&h(&["stale-if-error=x"]), "stale-if-error"), None);
    }
}
