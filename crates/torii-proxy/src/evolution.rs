//! API evolution on the request path: the version a request names (`versioning`, read at the
//! edge for the router's `match.version`), and a deprecated route (`routes[].deprecation`):
//! every answer carries `Deprecation` (RFC 9745), `Sunset` (RFC 8594) and `Link`s to the
//! successor and the deprecation notice, all built at load; after the sunset the route may
//! answer 410 instead.

use http::{HeaderMap, HeaderName, HeaderValue};
use std::time::{SystemTime, UNIX_EPOCH};
use torii_config::schema::{Deprecation as DeprecationConfig, Versioning};
use torii_core::{ErrorKind, GatewayError};

static DEPRECATION: HeaderName = HeaderName::from_static("deprecation");
static SUNSET: HeaderName = HeaderName::from_static("sunset");

/// A route's deprecation, its fields ready to send.
pub struct Deprecated {
    deprecation: HeaderValue,
    sunset: Option<(SystemTime, HeaderValue)>,
    link: Option<HeaderValue>,
    gone_after_sunset: bool,
}

impl Deprecated {
    /// The fields of `cfg` (checked by the validator; a field that cannot be sent is left
    /// out).
    pub fn new(cfg: &DeprecationConfig) -> Self {
        // A structured-field Date (RFC 9651 section 3.3.7): `@` and the seconds since 1970.
        let secs = |t: SystemTime| match t.duration_since(UNIX_EPOCH) {
            Ok(d) => d.as_secs() as i64,
            Err(e) => -(e.duration().as_secs() as i64),
        };
        let deprecation = HeaderValue::from_str(&format!("@{}", secs(cfg.since.0)))
            .unwrap_or(HeaderValue::from_static("@0"));
        let sunset = cfg.sunset.and_then(|t| {
            let v = HeaderValue::from_str(&httpdate::fmt_http_date(t.0)).ok()?;
            Some((t.0, v))
        });
        let links: Vec<String> = [
            (cfg.successor.as_deref(), "successor-version"),
            (cfg.link.as_deref(), "deprecation"),
        ]
        .into_iter()
        .filter_map(|(u, rel)| u.map(|u| format!("<{u}>; rel=\"{rel}\"")))
        .collect();
        let link = (!links.is_empty())
            .then(|| HeaderValue::from_str(&links.join(", ")).ok())
            .flatten();
        Self {
            deprecation,
            sunset,
            link,
            gone_after_sunset: cfg.gone_after_sunset,
        }
    }

    /// 410 when the route is past its sunset and says so.
    pub fn check(&self) -> Result<(), GatewayError> {
        match &self.sunset {
            Some((at, _)) if self.gone_after_sunset && SystemTime::now() >= *at => Err(
                GatewayError::new(ErrorKind::Gone, "the route's API is past its sunset"),
            ),
            _ => Ok(()),
        }
    }

    /// Adds the fields to an answer of the route (the upstream's own `Link`s are kept).
    pub fn decorate(&self, h: &mut HeaderMap) {
        h.insert(DEPRECATION.clone(), self.deprecation.clone());
        if let Some((_, v)) = &self.sunset {
            h.insert(SUNSET.clone(), v.clone());
        }
        if let Some(v) = &self.link {
            h.append(http::header::LINK, v.clone());
        }
    }
}

/// Where requests name their API version.
enum Source {
    Header(HeaderName),
    Query(Box<str>),
    /// A media type in `Accept`: what stands between these is the version.
    Accept {
        prefix: Box<str>,
        suffix: Box<str>,
    },
}

/// The top-level `versioning`, made at load.
pub struct Versions {
    source: Source,
    default: Option<Box<str>>,
}

impl Versions {
    /// The settings of `cfg` (checked by the validator).
    pub fn new(cfg: &Versioning) -> Option<Self> {
        let source = match (&cfg.header, &cfg.query, &cfg.accept) {
            (Some(h), _, _) => Source::Header(h.0.clone()),
            (None, Some(q), _) => Source::Query(q.as_str().into()),
            (None, None, Some(a)) => {
                let (prefix, suffix) = a.split_once("{version}")?;
                Source::Accept {
                    prefix: prefix.into(),
                    suffix: suffix.into(),
                }
            }
            (None, None, None) => return None,
        };
        Some(Self {
            source,
            default: cfg.default.as_deref().map(Into::into),
        })
    }

    /// The version the request names, or the default.
    pub fn of<'r>(&'r self, req: &'r http::request::Parts) -> Option<&'r str> {
        self.named(req).or(self.default.as_deref())
    }

    /// The version the request itself names.
    pub fn named<'r>(&self, req: &'r http::request::Parts) -> Option<&'r str> {
        match &self.source {
            Source::Header(name) => req
                .headers
                .get(name)?
                .to_str()
                .ok()
                .map(str::trim)
                .filter(|v| !v.is_empty()),
            Source::Query(name) => req.uri.query()?.split('&').find_map(|pair| {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                (k == &**name && !v.is_empty()).then_some(v)
            }),
            Source::Accept { prefix, suffix } => req
                .headers
                .get_all(http::header::ACCEPT)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .find_map(|item| media_version(item, prefix, suffix)),
        }
    }
}

/// The version in one `Accept` item (`application/vnd.example.v2+json; q=0.9`) whose media
/// type is `prefix` + version + `suffix`, compared without case.
fn media_version<'a>(item: &'a str, prefix: &str, suffix: &str) -> Option<&'a str> {
    let media = item.split(';').next()?.trim();
    let (p, rest) = media.split_at_checked(prefix.len())?;
    let (v, s) = rest.split_at_checked(rest.len().checked_sub(suffix.len())?)?;
    (p.eq_ignore_ascii_case(prefix) && s.eq_ignore_ascii_case(suffix) && !v.is_empty()).then_some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_in_accept_items() {
        let (p, s) = ("application/vnd.example.v", "+json");
        assert_eq!(
            media_version(" application/vnd.example.v2+json; q=0.9", p, s),
            Some("2")
        );
        assert_eq!(
            media_version("Application/VND.example.v10+JSON", p, s),
            Some("10")
        );
        assert_eq!(media_version("application/vnd.example.v+json", p, s), None);
        assert_eq!(media_version("application/json", p, s), None);
        assert_eq!(media_version("", p, s), None);
        // Text that is not ASCII never splits inside a character.
        assert_eq!(
            media_version("application/vnd.example.v\u{e9}+json", p, s),
            Some("\u{e9}")
        );
        assert_eq!(media_version("\u{e9}", p, s), None);
    }
}
