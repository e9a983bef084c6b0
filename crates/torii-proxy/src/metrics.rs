//! Prometheus metrics. Each gateway owns its recorder (no global), and route metric handles are
//! registered once when a config is compiled, so the request path only bumps atomics.

use metrics::{Counter, Gauge, Histogram, Key, Label, Level, Metadata, Recorder};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};
use std::sync::Arc;

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
}

/// The metric handles of one route (or of "no route").
pub struct RouteMetrics {
    by_class: [Counter; 5],
    latency: Histogram,
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
        let recorder = PrometheusBuilder::new()
            .set_buckets(&[
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0, 30.0,
            ])
            .map(|b| b.build_recorder())
            .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder());
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
            recorder,
            handle,
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
        let latency = self.recorder.register_histogram(
            &Key::from_parts(
                "torii_request_duration_seconds",
                vec![Label::new("route", route.to_string())],
            ),
            &META,
        );
        RouteMetrics { by_class, latency }
    }

    /// Error counters for one upstream.
    pub fn upstream_errors(&self, upstream: &str) -> UpstreamErrors {
        let kinds = [
            "upstream_connect_failed",
            "upstream_busy",
            "upstream_timeout",
            "upstream_reset",
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

    /// Folds recorded histogram samples into their buckets. Must run periodically: samples
    /// are buffered until then, so without it memory would grow with traffic when nobody
    /// scrapes `/metrics`.
    pub fn upkeep(&self) {
        self.handle.run_upkeep();
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        self.handle.run_upkeep();
        self.handle.render()
    }
}
