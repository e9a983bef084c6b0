//! Checks of the resilience settings: an upstream's load balancing, outlier detection,
//! health checks, retries, circuit breaker and bulkhead, and a route's fallback.

use super::Ctx;
use crate::schema::{DnsDiscovery, DnsRecord, Upstream};
use crate::yaml::PathSeg;

/// Load balancing, outlier detection and retries of upstream `i`.
pub(super) fn resilience(ctx: &mut Ctx<'_>, i: usize, u: &Upstream) {
    use crate::schema::Algorithm;
    let at = |section: &'static str, k: &'static str| {
        [
            PathSeg::Key("upstreams"),
            PathSeg::Index(i),
            PathSeg::Key(section),
            PathSeg::Key(k),
        ]
    };
    let lb = &u.load_balancing;
    let hashing = lb.algorithm == Algorithm::ConsistentHash;
    if hashing && lb.hash_on.is_none() {
        ctx.err(
            &at("load_balancing", "algorithm"),
            "`consistent_hash` needs `hash_on`",
            "add e.g. `hash_on: {header: x-user-id}`, `hash_on: client_address` or `hash_on: consumer`",
        );
    }
    if let Some(crate::schema::HashOn::Header(name)) = &lb.hash_on
        && http::HeaderName::from_bytes(name.as_bytes()).is_err()
    {
        ctx.err(
            &at("load_balancing", "hash_on"),
            format!("`{name}` is not a header name"),
            "write a header name such as `x-user-id`",
        );
    }
    if !hashing && lb.hash_on.is_some() {
        ctx.err(
            &at("load_balancing", "hash_on"),
            "`hash_on` is only used by `algorithm: consistent_hash`",
            "set `algorithm: consistent_hash` or remove `hash_on`",
        );
    }
    if let Some(f) = lb.bounded_load {
        if !hashing {
            ctx.err(
                &at("load_balancing", "bounded_load"),
                "`bounded_load` is only used by `algorithm: consistent_hash`",
                "set `algorithm: consistent_hash` or remove `bounded_load`",
            );
        } else if !(f >= 1.0 && f.is_finite()) {
            ctx.err(
                &at("load_balancing", "bounded_load"),
                format!("`{f}` is below 1: no target could take its share"),
                "use a factor of at least 1, e.g. 1.25",
            );
        }
    }
    if let Some(d) = lb.decay {
        if lb.algorithm != Algorithm::PeakEwma {
            ctx.err(
                &at("load_balancing", "decay"),
                "`decay` is only used by `algorithm: peak_ewma`",
                "set `algorithm: peak_ewma` or remove `decay`",
            );
        } else if d.0 < std::time::Duration::from_millis(1) {
            ctx.err(
                &at("load_balancing", "decay"),
                "`decay` must be at least 1ms",
                "use e.g. `10s`",
            );
        }
    }
    let od = &u.outlier_detection;
    if od.consecutive_failures == 0 {
        ctx.err(
            &at("outlier_detection", "consecutive_failures"),
            "must be at least 1",
            "e.g. 5; set `enabled: false` to turn outlier detection off",
        );
    }
    if od.max_ejection_percent > 100 {
        ctx.err(
            &at("outlier_detection", "max_ejection_percent"),
            format!("`{}` is over 100 percent", od.max_ejection_percent),
            "give a share between 0 and 100",
        );
    }
    if od.max_ejection_time < od.base_ejection_time {
        ctx.err(
            &at("outlier_detection", "max_ejection_time"),
            "is shorter than `base_ejection_time`",
            "make it at least the base ejection time",
        );
    }
    if let Some(hc) = &u.health_check {
        health_check(ctx, i, u, hc);
    }
    if let Some(cb) = &u.circuit_breaker {
        if cb.failure_rate_percent == 0 || cb.failure_rate_percent > 100 {
            ctx.err(
                &at("circuit_breaker", "failure_rate_percent"),
                format!(
                    "`{}` is not a share from 1 to 100 percent",
                    cb.failure_rate_percent
                ),
                "e.g. 50",
            );
        }
        if cb.half_open_calls == 0 {
            ctx.err(
                &at("circuit_breaker", "half_open_calls"),
                "must be at least 1",
                "let a few probe calls through, e.g. 3",
            );
        }
        if cb.window.0 < std::time::Duration::from_secs(1) {
            ctx.err(
                &at("circuit_breaker", "window"),
                "is shorter than 1s",
                "measure over a few seconds, e.g. `10s`",
            );
        }
        if let Some(bad) = cb
            .failure_statuses
            .iter()
            .find(|s| !(100..=599).contains(*s))
        {
            ctx.err(
                &at("circuit_breaker", "failure_statuses"),
                format!("`{bad}` is not an HTTP status"),
                "list statuses from 100 to 599, e.g. [500, 502, 503, 504]",
            );
        }
    }
    if let Some(c) = &u.concurrency
        && c.max_in_flight == 0
    {
        ctx.err(
            &at("concurrency", "max_in_flight"),
            "must be at least 1",
            "remove `concurrency` for no limit",
        );
    }
    let r = &u.retries;
    if r.attempts == 0 || r.attempts > 10 {
        ctx.err(
            &at("retries", "attempts"),
            format!("`{}` tries: give 1 (no retries) to 10", r.attempts),
            "tries count the first one: 2 means one retry",
        );
    }
    if !(0.0..=1.0).contains(&r.budget_ratio) {
        ctx.err(
            &at("retries", "budget_ratio"),
            format!("`{}` is not a share between 0 and 1", r.budget_ratio),
            "e.g. 0.2 lets retries add at most 20 % to the requests",
        );
    }
    if r.max_backoff < r.backoff {
        ctx.err(
            &at("retries", "max_backoff"),
            "is shorter than `backoff`",
            "make it at least the first wait",
        );
    }
    for (section, key, list) in [
        (
            "outlier_detection",
            "failure_statuses",
            &od.failure_statuses,
        ),
        ("retries", "on_status", &r.on_status),
    ] {
        if let Some(bad) = list.iter().find(|s| !(100..=599).contains(*s)) {
            ctx.err(
                &at(section, key),
                format!("`{bad}` is not an HTTP status"),
                "list statuses from 100 to 599, e.g. [502, 503, 504]",
            );
        }
    }
}

/// The active health check of upstream `i`.
fn health_check(ctx: &mut Ctx<'_>, i: usize, u: &Upstream, hc: &crate::schema::HealthCheck) {
    use crate::schema::{HealthCheckKind, UpstreamProtocol};
    let at = |k: &'static str| {
        [
            PathSeg::Key("upstreams"),
            PathSeg::Index(i),
            PathSeg::Key("health_check"),
            PathSeg::Key(k),
        ]
    };
    if hc.kind == HealthCheckKind::Grpc && u.protocol != UpstreamProtocol::Http2 {
        ctx.err(
            &at("kind"),
            "gRPC health checks need `protocol: http2`",
            "set the upstream's `protocol: http2`, or use `kind: http` or `kind: tcp`",
        );
    }
    if !hc.path.starts_with('/') || hc.path.parse::<http::uri::PathAndQuery>().is_err() {
        ctx.err(
            &at("path"),
            format!("`{}` is not a path", hc.path),
            "write an absolute path, e.g. `/healthz`",
        );
    }
    if hc.expected_statuses.is_empty() {
        ctx.err(
            &at("expected_statuses"),
            "no status would pass",
            "list the healthy statuses, e.g. [200]",
        );
    } else if let Some(bad) = hc
        .expected_statuses
        .iter()
        .find(|s| !(100..=599).contains(*s))
    {
        ctx.err(
            &at("expected_statuses"),
            format!("`{bad}` is not an HTTP status"),
            "list statuses from 100 to 599, e.g. [200, 204]",
        );
    }
    for (key, n) in [
        ("healthy_threshold", hc.healthy_threshold),
        ("unhealthy_threshold", hc.unhealthy_threshold),
    ] {
        if n == 0 {
            ctx.err(
                &at(key),
                "must be at least 1",
                "e.g. 2 or 3 probes in a row",
            );
        }
    }
    if hc.interval.0 < std::time::Duration::from_millis(10) {
        ctx.err(
            &at("interval"),
            "is shorter than 10ms",
            "probe every few seconds, e.g. `10s`",
        );
    }
    if hc.timeout.0.is_zero() || hc.timeout > hc.interval {
        ctx.err(
            &at("timeout"),
            "must be above 0 and at most `interval`",
            "e.g. `2s` with a `10s` interval",
        );
    }
}

/// The static fallback of route `i`.
pub(super) fn fallback(ctx: &mut Ctx<'_>, i: usize, proxied: bool, f: &crate::schema::Fallback) {
    let at = |k: &'static str| {
        [
            PathSeg::Key("routes"),
            PathSeg::Index(i),
            PathSeg::Key("fallback"),
            PathSeg::Key(k),
        ]
    };
    if !proxied {
        ctx.err(
            &[
                PathSeg::Key("routes"),
                PathSeg::Index(i),
                PathSeg::Key("fallback"),
            ],
            "a fallback masks upstream failures: this route has no upstream",
            "remove `fallback`, or give the route an `upstream`",
        );
    }
    if let Some(status) = f.status
        && (http::StatusCode::from_u16(status).is_err() || !(100..=599).contains(&status))
    {
        ctx.err(
            &at("status"),
            format!("{status} is not an HTTP status"),
            "use a status from 100 to 599",
        );
    }
    if let Some(d) = f.stale
        && (d.0.is_zero() || d.0 > std::time::Duration::from_secs(7 * 86_400))
    {
        ctx.err(
            &at("stale"),
            "must be between 1s and 7d",
            "the oldest last good answer worth serving, e.g. `stale: 1h`",
        );
    }
    for (name, value) in &f.headers {
        if http::HeaderName::from_bytes(name.as_bytes()).is_err()
            || http::HeaderValue::from_str(value).is_err()
        {
            ctx.err(
                &at("headers"),
                format!("invalid header `{name}`"),
                "header names are letters, digits and `-`; values are visible ASCII",
            );
        }
    }
    for code in &f.on_errors {
        if !crate::schema::FALLBACK_ERRORS.contains(&code.as_str()) {
            ctx.err(
                &at("on_errors"),
                format!("`{code}` is not an upstream error code"),
                format!("use some of: {}", crate::schema::FALLBACK_ERRORS.join(", ")),
            );
        }
    }
    if let Some(bad) = f.on_status.iter().find(|s| !(100..=599).contains(*s)) {
        ctx.err(
            &at("on_status"),
            format!("`{bad}` is not an HTTP status"),
            "e.g. [502, 503, 504]",
        );
    }
}

/// Hedging of upstream `i`.
pub(super) fn hedging(ctx: &mut Ctx<'_>, i: usize, u: &Upstream) {
    let Some(h) = &u.hedging else { return };
    let at = [
        PathSeg::Key("upstreams"),
        PathSeg::Index(i),
        PathSeg::Key("hedging"),
        PathSeg::Key("delay"),
    ];
    if h.delay.0.is_zero() {
        ctx.err(
            &at,
            "`delay` must be above zero (every request would be sent twice)",
            "use about the upstream's 95th percentile latency, e.g. `50ms`",
        );
    } else if h.delay.0 >= u.timeouts.response_headers.0 {
        ctx.err(
            &at,
            format!(
                "`delay` ({:?}) is not below `timeouts.response_headers` ({:?}): no try would be hedged",
                h.delay.0, u.timeouts.response_headers.0
            ),
            "use a delay below the response-head timeout",
        );
    }
}

/// DNS discovery of upstream `i`.
pub(super) fn discovery(ctx: &mut Ctx<'_>, i: usize, d: &DnsDiscovery) {
    let at = |k: &'static str| {
        [
            PathSeg::Key("upstreams"),
            PathSeg::Index(i),
            PathSeg::Key("discovery"),
            PathSeg::Key("dns"),
            PathSeg::Key(k),
        ]
    };
    let name = d.name.strip_suffix('.').unwrap_or(&d.name);
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if name.is_empty() || name.len() > 253 || !name.split('.').all(label_ok) {
        ctx.err(
            &at("name"),
            format!("`{}` is not a DNS name", d.name),
            "write a name such as `users.internal` (or `_http._tcp.users.internal` for `record: srv`)",
        );
    }
    if d.record == DnsRecord::Srv && d.port.is_some() {
        ctx.err(
            &at("port"),
            "`port` is only used by `record: a`; SRV records carry their own ports",
            "remove `port`",
        );
    }
    if d.port == Some(0) {
        ctx.err(
            &at("port"),
            "port 0 is not a port",
            "write the targets' port, e.g. 8080",
        );
    }
    if d.min_ttl.0.is_zero() {
        ctx.err(
            &at("min_ttl"),
            "`min_ttl` must be above zero (a TTL of 0 would look the name up in a loop)",
            "use e.g. `1s`",
        );
    }
    if d.max_ttl.0 < d.min_ttl.0 {
        ctx.err(
            &at("max_ttl"),
            format!(
                "`max_ttl` ({:?}) is below `min_ttl` ({:?})",
                d.max_ttl.0, d.min_ttl.0
            ),
            "make `max_ttl` at least `min_ttl`",
        );
    }
    for (k, v) in [
        ("timeout", d.timeout.0),
        ("retry_interval", d.retry_interval.0),
    ] {
        if v.is_zero() {
            ctx.err(&at(k), format!("`{k}` must be above zero"), "use e.g. `2s`");
        }
    }
}
