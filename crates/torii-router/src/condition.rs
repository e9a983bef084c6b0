//! Header and query-string conditions of a route.

use std::borrow::Cow;

use http::{HeaderMap, HeaderName};

/// How a header or query value is compared.
#[derive(Debug, Clone)]
pub enum ValueMatcher {
    /// The value equals this string exactly (case-sensitive).
    Exact(String),
    /// The regex matches the value. The caller anchors it (`^...$`) if a
    /// whole-value match is wanted.
    Regex(regex::Regex),
    /// The header or query parameter is present, whatever its value.
    Present,
}

impl ValueMatcher {
    /// Whether `value` satisfies this matcher. Non-UTF-8 values never match
    /// a regex.
    pub fn matches(&self, value: &[u8]) -> bool {
        match self {
            ValueMatcher::Exact(s) => s.as_bytes() == value,
            ValueMatcher::Regex(re) => std::str::from_utf8(value).is_ok_and(|v| re.is_match(v)),
            ValueMatcher::Present => true,
        }
    }

    /// A key equal for matchers that behave the same (regex by source text).
    pub(crate) fn key(&self) -> (u8, &str) {
        match self {
            ValueMatcher::Exact(s) => (0, s),
            ValueMatcher::Regex(re) => (1, re.as_str()),
            ValueMatcher::Present => (2, ""),
        }
    }
}

impl PartialEq for ValueMatcher {
    /// Regexes compare by source text.
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl Eq for ValueMatcher {}

/// A condition on a request header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderCondition {
    /// The header name.
    pub name: HeaderName,
    /// How its value is compared.
    pub matcher: ValueMatcher,
}

impl HeaderCondition {
    /// Whether the condition holds: some occurrence of the header matches.
    pub fn holds(&self, headers: &HeaderMap) -> bool {
        headers
            .get_all(&self.name)
            .iter()
            .any(|v| self.matcher.matches(v.as_bytes()))
    }
}

/// A condition on a query-string parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryCondition {
    /// The parameter name, compared with the percent-decoded name.
    pub name: String,
    /// How its percent-decoded value is compared.
    pub matcher: ValueMatcher,
}

impl QueryCondition {
    /// Whether the condition holds for a raw query string (without `?`).
    ///
    /// Names and values are percent-decoded (`+` as space) before
    /// comparison; `a` and `a=` both give `a` an empty value. When a
    /// parameter is repeated, the condition holds if any occurrence matches.
    pub fn holds(&self, query: Option<&str>) -> bool {
        let Some(query) = query else {
            return false;
        };
        query.split('&').filter(|p| !p.is_empty()).any(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            *decode_component(name) == *self.name.as_bytes()
                && self.matcher.matches(&decode_component(value))
        })
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Decodes `application/x-www-form-urlencoded` text: `+` is a space, `%XX`
/// a byte; malformed escapes are kept literally. Borrows when unchanged.
pub(crate) fn decode_component(s: &str) -> Cow<'_, [u8]> {
    let bytes = s.as_bytes();
    if !bytes.iter().any(|&b| b == b'%' || b == b'+') {
        return Cow::Borrowed(bytes);
    }
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                if let (Some(h), Some(l)) = (
                    bytes.get(i + 1).copied().and_then(hex),
                    bytes.get(i + 2).copied().and_then(hex),
                ) {
                    out.push(h << 4 | l);
                    i += 3;
                    continue;
                }
                out.push(b'%');
            }
            b => out.push(b),
        }
        i += 1;
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn q(name: &str, matcher: ValueMatcher) -> QueryCondition {
        QueryCondition {
            name: name.into(),
            matcher,
        }
    }

    #[test]
    fn decodes_components() {
        assert_eq!(&*decode_component("a+b%20c"), b"a b c");
        assert_eq!(&*decode_component("%zz%4"), b"%zz%4");
        assert!(matches!(decode_component("plain"), Cow::Borrowed(_)));
        assert_eq!(&*decode_component("%C3%A9"), "é".as_bytes());
    }

    #[test]
    fn query_conditions() {
        let exact = q("v", ValueMatcher::Exact("a b".into()));
        assert!(exact.holds(Some("v=a+b")));
        assert!(exact.holds(Some("v=a%20b")));
        assert!(exact.holds(Some("x=1&v=no&v=a+b")));
        assert!(!exact.holds(Some("v=ab")));
        assert!(!exact.holds(None));
        assert!(!exact.holds(Some("")));

        let named = q("my key", ValueMatcher::Present);
        assert!(named.holds(Some("my+key")));
        assert!(named.holds(Some("my%20key=1")));
        assert!(!named.holds(Some("mykey=1")));

        let re = q(
            "id",
            ValueMatcher::Regex(regex::Regex::new("^[0-9]+$").unwrap()),
        );
        assert!(re.holds(Some("id=x&id=42")));
        assert!(!re.holds(Some("id=x")));
        assert!(!re.holds(Some("id=%FF")));

        let empty = q("flag", ValueMatcher::Exact(String::new()));
        assert!(empty.holds(Some("flag")));
        assert!(empty.holds(Some("a=1&&flag=")));
    }

    #[test]
    fn header_conditions() {
        let mut headers = HeaderMap::new();
        headers.append("x-version", "1".parse().unwrap());
        headers.append("x-version", "2".parse().unwrap());
        let c = |m| HeaderCondition {
            name: HeaderName::from_static("x-version"),
            matcher: m,
        };
        assert!(c(ValueMatcher::Exact("2".into())).holds(&headers));
        assert!(!c(ValueMatcher::Exact("3".into())).holds(&headers));
        assert!(c(ValueMatcher::Present).holds(&headers));
        assert!(c(ValueMatcher::Regex(regex::Regex::new("^[12]$").unwrap())).holds(&headers));
        assert!(!c(ValueMatcher::Present).holds(&HeaderMap::new()));
    }

    #[test]
    fn matcher_equality_by_regex_source() {
        let a = ValueMatcher::Regex(regex::Regex::new("^a$").unwrap());
        let b = ValueMatcher::Regex(regex::Regex::new("^a$").unwrap());
        let c = ValueMatcher::Exact("^a$".into());
        assert_eq!(a, b);
        assert_ne!(a, c);
    }
}
