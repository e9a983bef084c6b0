//! A deprecated route (`routes[].deprecation`): every answer carries `Deprecation` (RFC
//! 9745), `Sunset` (RFC 8594) and `Link`s to the successor and the deprecation notice, all
//! built at load; after the sunset the route may answer 410 instead.

use http::{HeaderMap, HeaderName, HeaderValue};
use std::time::{SystemTime, UNIX_EPOCH};
use torii_config::schema::Deprecation as DeprecationConfig;
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
