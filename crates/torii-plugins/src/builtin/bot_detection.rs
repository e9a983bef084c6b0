//! `bot_detection`: refuse requests by User-Agent. Patterns (a built-in list of scanners and
//! aggressive crawlers, plus your own) are case-insensitive, unanchored regular expressions
//! compiled into one set at load; an allow match wins over a deny match.

use crate::{BuildCtx, ConfigError, Phase, PluginFactory};
use regex::{RegexSet, RegexSetBuilder};
use schemars::JsonSchema;
use serde::Deserialize;
use std::sync::Arc;
use torii_core::{ErrorKind, Flow, GatewayError, Plugin, RequestContext};

/// The built-in deny list: vulnerability scanners and crawlers that ignore robots.txt or
/// hammer APIs. Generic HTTP libraries (curl, python-requests, Go) are not on it: they are how
/// many legitimate API clients look.
pub const BUILTIN: &[&str] = &[
    r"nikto",
    r"sqlmap",
    r"nmap",
    r"masscan",
    r"zgrab",
    r"nuclei",
    r"wpscan",
    r"dirbuster",
    r"gobuster",
    r"feroxbuster",
    r"httrack",
    r"scrapy",
    r"ahrefsbot",
    r"semrushbot",
    r"mj12bot",
    r"dotbot",
    r"petalbot",
    r"bytespider",
    r"blexbot",
    r"megaindex",
];

/// Settings of `bot_detection`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BotDetectionConfig {
    /// Use the built-in deny list (see docs/plugins.md).
    #[serde(default = "yes")]
    pub builtin: bool,
    /// More deny patterns (case-insensitive regular expressions, matched anywhere in the
    /// User-Agent).
    #[serde(default)]
    pub deny: Vec<String>,
    /// Allow patterns; a match here wins over any deny pattern.
    #[serde(default)]
    pub allow: Vec<String>,
    /// Refuse requests without a User-Agent (or with an empty one).
    #[serde(default)]
    pub deny_empty_user_agent: bool,
}

fn yes() -> bool {
    true
}

/// The plugin type.
pub struct BotDetection;

fn set(patterns: &[&str], key: &str, offset: usize) -> Result<RegexSet, ConfigError> {
    RegexSetBuilder::new(patterns)
        .case_insensitive(true)
        .size_limit(8 << 20)
        .build()
        .map_err(|_| {
            // Find the culprit for a precise message.
            for (i, p) in patterns.iter().enumerate() {
                if let Err(e) = regex::Regex::new(p) {
                    return ConfigError::here(
                        format!("invalid regular expression `{p}`: {e}"),
                        "fix the pattern",
                    )
                    .in_list(key, i.saturating_sub(offset));
                }
            }
            ConfigError::at(
                key,
                "the patterns are too large together",
                "use fewer patterns",
            )
        })
}

impl PluginFactory for BotDetection {
    const NAME: &'static str = "bot_detection";
    const PHASE: Phase = Phase::Access;
    const ORDER: u16 = 20;
    type Config = BotDetectionConfig;

    fn build(config: BotDetectionConfig, _: &BuildCtx<'_>) -> Result<Arc<dyn Plugin>, ConfigError> {
        let mut deny: Vec<&str> = if config.builtin {
            BUILTIN.to_vec()
        } else {
            Vec::new()
        };
        let offset = deny.len();
        deny.extend(config.deny.iter().map(String::as_str));
        let allow: Vec<&str> = config.allow.iter().map(String::as_str).collect();
        Ok(Arc::new(BotRules {
            deny: set(&deny, "deny", offset)?,
            allow: set(&allow, "allow", 0)?,
            deny_empty: config.deny_empty_user_agent,
        }))
    }
}

struct BotRules {
    deny: RegexSet,
    allow: RegexSet,
    deny_empty: bool,
}

impl Plugin for BotRules {
    fn on_request<'a>(
        &'a self,
        req: &'a mut http::request::Parts,
        _: &'a mut RequestContext,
    ) -> Result<Flow<'a>, GatewayError> {
        // A User-Agent that is not visible ASCII is compared as lossy text.
        let ua = req
            .headers
            .get(http::header::USER_AGENT)
            .map(|v| String::from_utf8_lossy(v.as_bytes()));
        let ua = match ua {
            Some(ua) if !ua.trim().is_empty() => ua,
            _ if self.deny_empty => {
                return Err(GatewayError::new(ErrorKind::Forbidden, "empty User-Agent"));
            }
            _ => return Ok(Flow::Continue),
        };
        if self.deny.is_match(&ua) && !self.allow.is_match(&ua) {
            return Err(GatewayError::new(
                ErrorKind::Forbidden,
                format!("bot User-Agent `{ua}`"),
            ));
        }
        Ok(Flow::Continue)
    }
}
