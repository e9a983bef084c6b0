//! `fault_injection`: for testing clients against a misbehaving API. A configured share of a
//! route's requests is held back before it goes upstream (`delay`) and/or answered with an
//! error status instead (`abort`, through the one place errors become responses, with the
//! code `fault_injected`). Off unless configured; it runs after authentication and the
//! traffic limits, so injected failures reach only requests that would have been served.

use crate::{BuildCtx, ConfigError, Phase, PluginFactory};
use schemars::JsonSchema;
use serde::Deserialize;
use std::sync::Arc;
use std::time::Duration;
use torii_config::Seg;
use torii_core::{ErrorKind, Flow, GatewayError, Plugin, RequestContext};

/// Settings of `fault_injection`: at least one of `delay` and `abort`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FaultInjectionConfig {
    /// Hold back a share of requests before they go upstream.
    #[serde(default)]
    pub delay: Option<DelayConfig>,
    /// Answer a share of requests with an error status instead of going upstream (after
    /// the delay, when both hit).
    #[serde(default)]
    pub abort: Option<AbortConfig>,
}

/// A delay injected into a share of requests.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DelayConfig {
    /// The share of requests delayed, in percent (0 to 100; fractions allowed).
    pub percent: f64,
    /// How long (1ms to 1h).
    pub duration: torii_config::values::Duration,
}

/// An error status injected into a share of requests.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AbortConfig {
    /// The share of requests answered with `status`, in percent (0 to 100).
    pub percent: f64,
    /// The status: 400 to 599.
    pub status: u16,
}

/// The plugin type.
pub struct FaultInjection;

/// The longest delay that may be injected.
const MAX_DELAY: Duration = Duration::from_secs(3600);

/// `percent` as a threshold for a uniform `u64` (a hit is a draw below it).
fn threshold(percent: f64) -> u64 {
    // 100 % is every draw but u64::MAX itself: one in 2^64, and `hit` treats it as a hit.
    (percent / 100.0 * u64::MAX as f64) as u64
}

fn hit(threshold: u64) -> bool {
    threshold == u64::MAX || (threshold > 0 && fastrand::u64(..) < threshold)
}

fn percent(key: &str, p: f64) -> Result<u64, ConfigError> {
    if !(0.0..=100.0).contains(&p) {
        return Err(ConfigError {
            path: vec![Seg::Key(key.to_string()), Seg::Key("percent".to_string())],
            message: format!("{p} is not a percentage"),
            hint: "give a share from 0 to 100, e.g. `percent: 5`".to_string(),
        });
    }
    Ok(if p >= 100.0 { u64::MAX } else { threshold(p) })
}

impl PluginFactory for FaultInjection {
    const NAME: &'static str = "fault_injection";
    const PHASE: Phase = Phase::Traffic;
    const ORDER: u16 = 80;
    const PER_CONSUMER: bool = true;
    type Config = FaultInjectionConfig;

    fn build(c: FaultInjectionConfig, _: &BuildCtx<'_>) -> Result<Arc<dyn Plugin>, ConfigError> {
        if c.delay.is_none() && c.abort.is_none() {
            return Err(ConfigError::here(
                "fault_injection needs `delay`, `abort` or both",
                "e.g. `abort: {percent: 5, status: 503}` or `delay: {percent: 10, duration: 2s}`",
            ));
        }
        let delay = match c.delay {
            None => None,
            Some(d) => {
                let t = percent("delay", d.percent)?;
                if d.duration.0.is_zero() || d.duration.0 > MAX_DELAY {
                    return Err(ConfigError {
                        path: vec![
                            Seg::Key("delay".to_string()),
                            Seg::Key("duration".to_string()),
                        ],
                        message: format!("{:?} is not a delay from 1ms to 1h", d.duration.0),
                        hint: "e.g. `duration: 2s`".to_string(),
                    });
                }
                Some((t, d.duration.0))
            }
        };
        let abort = match c.abort {
            None => None,
            Some(a) => {
                let t = percent("abort", a.percent)?;
                let status = http::StatusCode::from_u16(a.status)
                    .ok()
                    .filter(|s| s.is_client_error() || s.is_server_error())
                    .ok_or_else(|| ConfigError {
                        path: vec![
                            Seg::Key("abort".to_string()),
                            Seg::Key("status".to_string()),
                        ],
                        message: format!("{} is not an error status", a.status),
                        hint: "give a status from 400 to 599, e.g. `status: 503`".to_string(),
                    })?;
                Some((t, status))
            }
        };
        Ok(Arc::new(Faults { delay, abort }))
    }
}

struct Faults {
    /// The hit threshold and the delay.
    delay: Option<(u64, Duration)>,
    /// The hit threshold and the status.
    abort: Option<(u64, http::StatusCode)>,
}

fn injected(status: http::StatusCode) -> GatewayError {
    GatewayError::new(
        ErrorKind::Injected(status),
        format!("fault injected: {}", status.as_u16()),
    )
}

impl Plugin for Faults {
    fn on_request<'a>(
        &'a self,
        _req: &'a mut http::request::Parts,
        _ctx: &'a mut RequestContext,
    ) -> Result<Flow<'a>, GatewayError> {
        let delay = self.delay.filter(|(t, _)| hit(*t)).map(|(_, d)| d);
        let abort = self.abort.filter(|(t, _)| hit(*t)).map(|(_, s)| s);
        match (delay, abort) {
            (None, None) => Ok(Flow::Continue),
            (None, Some(s)) => Err(injected(s)),
            (Some(d), abort) => Ok(Flow::Wait(Box::pin(async move {
                tokio::time::sleep(d).await;
                match abort {
                    Some(s) => Err(injected(s)),
                    None => Ok(None),
                }
            }))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_become_thresholds() {
        assert_eq!(percent("abort", 100.0).ok(), Some(u64::MAX));
        assert_eq!(percent("abort", 0.0).ok(), Some(0));
        assert!(percent("abort", 100.5).is_err());
        assert!(percent("abort", -1.0).is_err());
        assert!(percent("abort", f64::NAN).is_err());
        assert!(!hit(0));
        assert!(hit(u64::MAX));
        let half = percent("abort", 50.0).unwrap_or(0);
        let n = (0..10_000).filter(|_| hit(half)).count();
        assert!((4_500..=5_500).contains(&n), "{n}");
    }
}
