//! Prometheus metrics. Each gateway owns its recorder (no global), and route metric handles are
//! registered once when a config is compiled, so the request path only bumps atomics.

use metrics::{Counter, Gauge, Key, Label, Level, Metadata, Recorder};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

static META: Metadata<'static> = Metadata::new(module_path!(), Level::INFO, None);

/// The gateway's metrics registry.
pub struct Metrics {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    /// Reloads that were applied.
    pub reloads_ok: Counter,
    /// Reloads rejected (the old config kept serving).
    pub reloads_failed: Counter,
    /// Open client connections.
    pub open_connections: Gauge,
    /// Access-log lines dropped.
    pub access_log_dropped: Counter,
    /// Client connections closed by the transfer-rate rule.
    pub slow_clients_cut: Counter,
    /// Upstream responses whose read-ahead went to a temporary file.
    pub responses_spooled: Counter,
    /// Bytes of response read-ahead on disk now (the gauge of `spool_on_disk`).
    pub spool_disk_bytes: Gauge,
    /// Bytes of response read-ahead on disk now, for every response of this gateway: the
    /// count `server.response_buffering.max_temp_total` is held against, kept across reloads.
    pub spool_on_disk: Arc<AtomicU64>,
    /// Latency histograms by route name, kept across reloads like the exporter's series.
    latency: Mutex<BTreeMap<String, Arc<Latency>>>,
}

/// Upper bounds of the latency histogram's buckets, in seconds.
const LATENCY_BUCKETS: [f64; 15] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// A request-latency histogram with fixed buckets: a sample is two atomic adds, and the
/// buckets are read when `/metrics` is rendered. Not the exporter's histogram, which buffers
/// every sample until an upkeep pass folds them in, and whose upkeep formats every
/// histogram's name again on each pass: work that grows with the number of routes (~17 ms of
/// CPU every 5 s with 10,000 routes) whether or not anything was recorded (docs/performance.md).
#[derive(Default)]
pub struct Latency {
    /// Samples per bucket (not cumulative); the last one is `+Inf`.
    buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    /// Sum of the samples, in nanoseconds.
    sum_nanos: AtomicU64,
}

impl Latency {
    fn record(&self, seconds: f64) {
        let i = LATENCY_BUCKETS
            .iter()
            .position(|&b| seconds <= b)
            .unwrap_or(LATENCY_BUCKETS.len());
        if let Some(b) = self.buckets.get(i) {
            b.fetch_add(1, Ordering::Relaxed);
        }
        // `as` saturates: a negative or NaN sample adds 0.
        self.sum_nanos
            .fetch_add((seconds * 1e9) as u64, Ordering::Relaxed);
    }

    /// Appends this histogram's series in the Prometheus text format.
    fn render(&self, route: &str, out: &mut String) {
        const NAME: &str = "torii_request_duration_seconds";
        let label = route
            .replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n");
        let mut count = 0u64;
        for (bound, n) in LATENCY_BUCKETS.iter().zip(&self.buckets) {
            count += n.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "{NAME}_bucket{{route=\"{label}\",le=\"{bound}\"}} {count}"
            );
        }
        count += self.buckets.last().map_or(0, |n| n.load(Ordering::Relaxed));
        let sum = self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        let _ = writeln!(
            out,
            "{NAME}_bucket{{route=\"{label}\",le=\"+Inf\"}} {count}"
        );
        let _ = writeln!(out, "{NAME}_sum{{route=\"{label}\"}} {sum}");
        let _ = writeln!(out, "{NAME}_count{{route=\"{label}\"}} {count}");
    }
}

/// The metric handles of one route (or of "no route").
pub struct RouteMetrics {
    by_class: [Counter; 5],
    latency: Arc<Latency>,
}

impl RouteMetrics {
    /// Records one finished request.
    pub fn record(&self, status: u16, seconds: f64) {
        let class = (status / 100).clamp(1, 5) as usize - 1;
        self.by_class[class].increment(1);
        self.latency.record(seconds);
    }
}

/// Upstream error counters by kind.
pub struct UpstreamErrors {
    counters: Vec<(&'static str, Counter)>,
}

impl UpstreamErrors {
    /// Counts an error of `code`.
    pub fn record(&self, code: &str) {
        if let Some((_, c)) = self.counters.iter().find(|(k, _)| *k == code) {
            c.increment(1);
        }
    }
}

impl Metrics {
    /// A new registry.
    pub fn new() -> Arc<Self> {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let c = |name: &'static str| recorder.register_counter(&Key::from_name(name), &META);
        let reloads = |result: &'static str| {
            recorder.register_counter(
                &Key::from_parts(
                    "torii_config_reloads_total",
                    vec![Label::new("result", result)],
                ),
                &META,
            )
        };
        Arc::new(Self {
            reloads_ok: reloads("ok"),
            reloads_failed: reloads("failed"),
            open_connections: recorder
                .register_gauge(&Key::from_name("torii_open_connections"), &META),
            access_log_dropped: c("torii_access_log_dropped_total"),
            slow_clients_cut: c("torii_slow_client_connections_closed_total"),
            responses_spooled: c("torii_responses_spooled_to_disk_total"),
            spool_disk_bytes: recorder
                .register_gauge(&Key::from_name("torii_response_spool_disk_bytes"), &META),
            spool_on_disk: Arc::new(AtomicU64::new(0)),
            recorder,
            handle,
            latency: Mutex::new(BTreeMap::new()),
        })
    }

    /// Handles for one route (label values are route names: bounded).
    pub fn route(&self, route: &str) -> RouteMetrics {
        let classes = ["1xx", "2xx", "3xx", "4xx", "5xx"];
        let by_class = classes.map(|class| {
            let key = Key::from_parts(
                "torii_requests_total",
                vec![
                    Label::new("route", route.to_string()),
                    Label::new("status_class", class),
                ],
            );
            self.recorder.register_counter(&key, &META)
        });
        let latency = self
            .latency
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(route.to_string())
            .or_default()
            .clone();
        RouteMetrics { by_class, latency }
    }

    /// Error counters for one upstream.
    pub fn upstream_errors(&self, upstream: &str) -> UpstreamErrors {
        let kinds = [
            "upstream_connect_failed",
            "upstream_busy",
            "upstream_timeout",
            "upstream_reset",
            "no_healthy_target",
            "circuit_open",
            "upstream_saturated",
        ];
        UpstreamErrors {
            counters: kinds
                .iter()
                .map(|k| {
                    let key = Key::from_parts(
                        "torii_upstream_errors_total",
                        vec![
                            Label::new("upstream", upstream.to_string()),
                            Label::new("kind", *k),
                        ],
                    );
                    (*k, self.recorder.register_counter(&key, &META))
                })
                .collect(),
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = self.handle.render();
        let latency = self.latency.lock().unwrap_or_else(PoisonError::into_inner);
        if !latency.is_empty() {
            if !out.is_empty() && !out.ends_with("\n\n") {
                out.push('\n');
            }
            out.push_str("# TYPE torii_request_duration_seconds histogram\n");
            for (route, h) in latency.iter() {
                h.render(route, &mut out);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_is_rendered_as_a_cumulative_prometheus_histogram() {
        let m = Metrics::new();
        let r = m.route("a\"b");
        r.record(200, 0.0003);
        r.record(200, 0.2);
        r.record(500, 100.0);
        // The same route name after a reload shares the histogram.
        m.route("a\"b").record(200, 0.001);
        let text = m.render();
        let series = |le: &str| {
            format!("torii_request_duration_seconds_bucket{{route=\"a\\\"b\",le=\"{le}\"}} ")
        };
        for (le, n) in [
            ("0.0005", 1),
            ("0.001", 2),
            ("0.25", 3),
            ("30", 3),
            ("+Inf", 4),
        ] {
            assert!(
                text.contains(&format!("{}{n}\n", series(le))),
                "{le} {n}\n{text}"
            );
        }
        assert!(text.contains("torii_request_duration_seconds_count{route=\"a\\\"b\"} 4\n"));
        assert!(text.contains("torii_request_duration_seconds_sum{route=\"a\\\"b\"} 100.2013"));
        assert!(text.contains("# TYPE torii_request_duration_seconds histogram\n"));
        assert!(text.contains("torii_requests_total{route=\"a\\\"b\",status_class=\"5xx\"} 1"));
    }
}
