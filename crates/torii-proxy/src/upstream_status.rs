//! The live state of the running config's upstreams (retries, the retry budget, targets in
//! flight and ejected), as Prometheus text for `/metrics` and as JSON for the admin
//! listener's `/upstreams`. Read when asked, from the upstreams' own atomics: the request
//! path keeps no metric handles for them. Labels are upstream names and target addresses from
//! the config, never client input. Counters restart when a reload rebuilds an upstream.

use crate::snapshot::Snapshot;
use serde_json::{Value, json};
use std::fmt::Write as _;
use torii_upstream::Upstream;

/// The Redis client's health and counters as JSON (`GET /redis`).
pub fn redis_json(r: &torii_store::Redis) -> Value {
    let v = r.view();
    json!({
        "target": v.target,
        "health": v.health.as_str(),
        "calls": v.calls,
        "errors": v.errors,
        "timeouts": v.timeouts,
        "refused_while_down": v.refused,
        "mean_latency_us": v.mean_latency_us,
        "reopened_after_timeouts": v.reopens,
    })
}

fn redis_metrics(r: &torii_store::Redis, out: &mut String) {
    let v = r.view();
    let health = v.health.as_str();
    out.push_str("# TYPE torii_redis_health gauge\n");
    for h in ["up", "degraded", "down"] {
        let _ = writeln!(
            out,
            "torii_redis_health{{state=\"{h}\"}} {}",
            u8::from(h == health)
        );
    }
    out.push_str("# TYPE torii_redis_calls_total counter\n");
    for (result, n) in [
        (
            "ok",
            v.calls.saturating_sub(v.errors + v.timeouts + v.refused),
        ),
        ("error", v.errors),
        ("timeout", v.timeouts),
        ("refused", v.refused),
    ] {
        let _ = writeln!(out, "torii_redis_calls_total{{result=\"{result}\"}} {n}");
    }
    out.push_str("# TYPE torii_rate_limit_degraded_total counter\n");
    for (f, n) in torii_store::Fallback::ALL.iter().zip(v.fallbacks) {
        let _ = writeln!(
            out,
            "torii_rate_limit_degraded_total{{policy=\"{}\"}} {n}",
            f.as_str()
        );
    }
    out.push_str("# TYPE torii_redis_reopens_total counter\n");
    let _ = writeln!(out, "torii_redis_reopens_total {}", v.reopens);
    out.push_str("# TYPE torii_redis_mean_latency_microseconds gauge\n");
    let _ = writeln!(
        out,
        "torii_redis_mean_latency_microseconds {}",
        v.mean_latency_us
    );
}

/// The response cache's state as JSON (`GET /cache`): the memory tier, each cache's counters
/// and the shared tier's. `None` when no route caches.
pub fn cache_json(snap: &Snapshot) -> Option<Value> {
    let m = snap.cache.as_ref()?;
    let caches: serde_json::Map<String, Value> = snap
        .cache_counters
        .iter()
        .map(|(scope, c)| {
            let values: serde_json::Map<String, Value> = c
                .values()
                .iter()
                .map(|(k, v)| ((*k).to_string(), json!(v)))
                .collect();
            (scope.clone(), Value::Object(values))
        })
        .collect();
    let shared = snap.cache_shared.as_ref().map(|t| {
        use std::sync::atomic::Ordering::Relaxed;
        let c = &t.counters;
        json!({
            "hits": c.hits.load(Relaxed),
            "misses": c.misses.load(Relaxed),
            "banned": c.banned.load(Relaxed),
            "writes": c.writes.load(Relaxed),
            "errors": c.errors.load(Relaxed),
            "max_object_size": t.max_object_size,
            "max_ttl_ms": t.max_ttl.as_millis() as u64,
        })
    });
    Some(json!({
        "memory": {
            "bytes": m.bytes(),
            "entries": m.len(),
            "capacity": m.capacity(),
            "largest_entry": m.max_entry(),
            "filling_bytes": m.filling(),
            "evictions": m.evictions(),
            "purges": m.purges(),
        },
        "caches": caches,
        "shared": shared,
    }))
}

/// The response cache's series: per cache (labelled by its scope, `route:<name>` or
/// `global`) what happened to requests, and the memory tier's size and evictions.
fn cache_metrics(snap: &Snapshot, out: &mut String) {
    let Some(m) = &snap.cache else { return };
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    let esc = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
    out.push_str("# TYPE torii_cache_requests_total counter\n");
    for (scope, c) in &snap.cache_counters {
        for (result, n) in c.values() {
            let _ = writeln!(
                out,
                "torii_cache_requests_total{{scope=\"{}\",result=\"{result}\"}} {n}",
                esc(scope)
            );
        }
    }
    out.push_str("# TYPE torii_cache_memory_bytes gauge\n");
    let _ = writeln!(out, "torii_cache_memory_bytes {}", m.bytes());
    out.push_str("# TYPE torii_cache_memory_entries gauge\n");
    let _ = writeln!(out, "torii_cache_memory_entries {}", m.len());
    out.push_str("# TYPE torii_cache_filling_bytes gauge\n");
    let _ = writeln!(out, "torii_cache_filling_bytes {}", m.filling());
    out.push_str("# TYPE torii_cache_evictions_total counter\n");
    let _ = writeln!(out, "torii_cache_evictions_total {}", m.evictions());
    if let Some(t) = &snap.cache_shared {
        use std::sync::atomic::Ordering::Relaxed;
        let c = &t.counters;
        out.push_str("# TYPE torii_cache_shared_total counter\n");
        for (result, n) in [
            ("hit", &c.hits),
            ("miss", &c.misses),
            ("banned", &c.banned),
            ("write", &c.writes),
            ("error", &c.errors),
        ] {
            let _ = writeln!(
                out,
                "torii_cache_shared_total{{result=\"{result}\"}} {}",
                n.load(Relaxed)
            );
        }
    }
}

/// Plugins' own counters: `torii_<family>_requests_total{scope, result}`, one family after
/// the other.
fn plugin_metrics(snap: &Snapshot, out: &mut String) {
    let esc = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
    let mut families: Vec<&'static str> = snap.plugin_counters.iter().map(|c| c.family).collect();
    families.sort_unstable();
    families.dedup();
    for family in families {
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        let _ = writeln!(out, "# TYPE torii_{family}_requests_total counter");
        for c in snap.plugin_counters.iter().filter(|c| c.family == family) {
            for (result, n) in c.counters.values() {
                let _ = writeln!(
                    out,
                    "torii_{family}_requests_total{{scope=\"{}\",result=\"{result}\"}} {n}",
                    esc(&c.scope)
                );
            }
        }
    }
}

/// Appends the upstream (and Redis) series to a Prometheus text exposition.
pub fn render_metrics(snap: &Snapshot, out: &mut String) {
    cache_metrics(snap, out);
    plugin_metrics(snap, out);
    if let Some(r) = &snap.redis {
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        redis_metrics(r, out);
    }
    if snap.upstreams.is_empty() {
        return;
    }
    let mut ups: Vec<&std::sync::Arc<Upstream>> = snap.upstreams.values().collect();
    ups.sort_by(|a, b| a.name.cmp(&b.name));
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    let esc = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
    out.push_str("# TYPE torii_upstream_retries_total counter\n");
    for u in &ups {
        let _ = writeln!(
            out,
            "torii_upstream_retries_total{{upstream=\"{}\"}} {}",
            esc(&u.name),
            u.retry_counts().0
        );
    }
    out.push_str("# TYPE torii_upstream_retries_refused_total counter\n");
    for u in &ups {
        let _ = writeln!(
            out,
            "torii_upstream_retries_refused_total{{upstream=\"{}\"}} {}",
            esc(&u.name),
            u.retry_counts().1
        );
    }
    breaker_and_bulkhead(&ups, out, &esc);
    discovery(&ups, out, &esc);
    let views: Vec<_> = ups
        .iter()
        .map(|u| (esc(&u.name), u.targets_view()))
        .collect();
    out.push_str("# TYPE torii_upstream_target_ejected gauge\n");
    for (u, targets) in &views {
        for t in targets {
            let _ = writeln!(
                out,
                "torii_upstream_target_ejected{{upstream=\"{u}\",target=\"{}\"}} {}",
                esc(&t.name),
                u8::from(t.ejected_for.is_some())
            );
        }
    }
    out.push_str("# TYPE torii_upstream_target_down gauge\n");
    for (u, targets) in &views {
        for t in targets {
            let _ = writeln!(
                out,
                "torii_upstream_target_down{{upstream=\"{u}\",target=\"{}\"}} {}",
                esc(&t.name),
                u8::from(t.down)
            );
        }
    }
    out.push_str("# TYPE torii_upstream_target_ejections_total counter\n");
    for (u, targets) in &views {
        for t in targets {
            let _ = writeln!(
                out,
                "torii_upstream_target_ejections_total{{upstream=\"{u}\",target=\"{}\"}} {}",
                esc(&t.name),
                t.ejections
            );
        }
    }
    out.push_str("# TYPE torii_upstream_target_in_flight gauge\n");
    for (u, targets) in &views {
        for t in targets {
            let _ = writeln!(
                out,
                "torii_upstream_target_in_flight{{upstream=\"{u}\",target=\"{}\"}} {}",
                esc(&t.name),
                t.in_flight
            );
        }
    }
}

/// The circuit breakers' states and transitions, and the bulkheads' load.
fn breaker_and_bulkhead(
    ups: &[&std::sync::Arc<Upstream>],
    out: &mut String,
    esc: &dyn Fn(&str) -> String,
) {
    let breakers: Vec<_> = ups.iter().filter(|u| u.breaker_state().is_some()).collect();
    if !breakers.is_empty() {
        out.push_str("# TYPE torii_upstream_circuit_state gauge\n");
        for u in &breakers {
            let state = u.breaker_state().map_or("closed", |s| s.as_str());
            for s in ["closed", "open", "half_open"] {
                let _ = writeln!(
                    out,
                    "torii_upstream_circuit_state{{upstream=\"{}\",state=\"{s}\"}} {}",
                    esc(&u.name),
                    u8::from(s == state)
                );
            }
        }
        out.push_str("# TYPE torii_upstream_circuit_transitions_total counter\n");
        for u in &breakers {
            for (to, n) in ["open", "half_open", "closed"]
                .iter()
                .zip(u.breaker_transitions())
            {
                let _ = writeln!(
                    out,
                    "torii_upstream_circuit_transitions_total{{upstream=\"{}\",to=\"{to}\"}} {n}",
                    esc(&u.name)
                );
            }
        }
    }
    let loads: Vec<_> = ups
        .iter()
        .filter_map(|u| Some((esc(&u.name), u.bulkhead_load()?)))
        .collect();
    if !loads.is_empty() {
        out.push_str("# TYPE torii_upstream_in_flight gauge\n");
        for (u, (in_flight, _, _)) in &loads {
            let _ = writeln!(
                out,
                "torii_upstream_in_flight{{upstream=\"{u}\"}} {in_flight}"
            );
        }
        out.push_str("# TYPE torii_upstream_waiting gauge\n");
        for (u, (_, waiting, _)) in &loads {
            let _ = writeln!(out, "torii_upstream_waiting{{upstream=\"{u}\"}} {waiting}");
        }
        out.push_str("# TYPE torii_upstream_saturated_total counter\n");
        for (u, (_, _, refused)) in &loads {
            let _ = writeln!(
                out,
                "torii_upstream_saturated_total{{upstream=\"{u}\"}} {refused}"
            );
        }
    }
}

/// Hedges, and the lookups of the upstreams whose targets discovery finds.
fn discovery(ups: &[&std::sync::Arc<Upstream>], out: &mut String, esc: &dyn Fn(&str) -> String) {
    let hedging: Vec<_> = ups
        .iter()
        .filter_map(|u| Some((esc(&u.name), u.hedge_counts()?)))
        .collect();
    if !hedging.is_empty() {
        out.push_str("# TYPE torii_upstream_hedges_total counter\n");
        for (u, (sent, _)) in &hedging {
            let _ = writeln!(
                out,
                "torii_upstream_hedges_total{{upstream=\"{u}\"}} {sent}"
            );
        }
        out.push_str("# TYPE torii_upstream_hedges_won_total counter\n");
        for (u, (_, won)) in &hedging {
            let _ = writeln!(
                out,
                "torii_upstream_hedges_won_total{{upstream=\"{u}\"}} {won}"
            );
        }
    }
    let views: Vec<_> = ups
        .iter()
        .filter_map(|u| Some((esc(&u.name), u.discovery_view()?)))
        .collect();
    if views.is_empty() {
        return;
    }
    for (name, kind, value) in [
        ("torii_upstream_discovery_resolutions_total", "counter", 0),
        ("torii_upstream_discovery_failures_total", "counter", 1),
        ("torii_upstream_discovery_changes_total", "counter", 2),
    ] {
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (u, d) in &views {
            let v = [d.resolutions, d.failures, d.changes][value];
            let _ = writeln!(out, "{name}{{upstream=\"{u}\"}} {v}");
        }
    }
}

/// One upstream as JSON.
pub fn upstream_json(u: &Upstream) -> Value {
    let (retries, refused) = u.retry_counts();
    let targets: Vec<Value> = u
        .targets_view()
        .into_iter()
        .map(|t| {
            json!({
                "target": &*t.name,
                "state": if t.down { "down" } else if t.ejected_for.is_some() { "ejected" } else { "in" },
                "ejected_for_ms": t.ejected_for.map(|d| d.as_millis() as u64),
                "ejections": t.ejections,
                "failures_in_a_row": t.failures_in_a_row,
                "in_flight": t.in_flight,
            })
        })
        .collect();
    let [opened, half_opened, closed] = u.breaker_transitions();
    json!({
        "name": &*u.name,
        "retries": retries,
        "retries_refused_by_budget": refused,
        "circuit_breaker": u.breaker_state().map(|s| json!({
            "state": s.as_str(),
            "opened": opened,
            "half_opened": half_opened,
            "closed": closed,
        })),
        "concurrency": u.bulkhead_load().map(|(in_flight, waiting, refused)| json!({
            "in_flight": in_flight,
            "waiting": waiting,
            "refused": refused,
        })),
        "hedging": u.hedge_counts().map(|(sent, won)| json!({
            "hedges": sent,
            "hedges_won": won,
        })),
        "discovery": u.discovery_view().map(|d| json!({
            "source": d.source,
            "last_success_ms_ago": d.last_success.map(|t| t.as_millis() as u64),
            "last_error": d.last_error,
            "resolutions": d.resolutions,
            "failures": d.failures,
            "changes": d.changes,
        })),
        "targets": targets,
    })
}

/// Every upstream of the running config, by name.
pub fn all_json(snap: &Snapshot) -> Value {
    let mut ups: Vec<&std::sync::Arc<Upstream>> = snap.upstreams.values().collect();
    ups.sort_by(|a, b| a.name.cmp(&b.name));
    Value::Array(ups.into_iter().map(|u| upstream_json(u)).collect())
}
