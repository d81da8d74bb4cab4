//! The executor's Prometheus metrics (prometheus-client registry; `promote serve` exposes it).

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

type Labels = Vec<(String, String)>;

fn stage_histogram() -> Histogram {
    // 10 ms to ~3 h.
    Histogram::new(exponential_buckets(0.01, 4.0, 12))
}

/// Runs by outcome, stage durations by kind, promotions by environment, approvals waiting.
pub struct Metrics {
    registry: Registry,
    runs: Family<Labels, Counter>,
    stage_seconds: Family<Labels, Histogram, fn() -> Histogram>,
    promotions: Family<Labels, Counter>,
    approvals_waiting: Gauge,
    deliveries: Family<Labels, Counter>,
    registry_polls: Family<Labels, Counter>,
    registry_poll_errors: Family<Labels, Counter>,
    registry_backing_off: Family<Labels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("promote");
        let runs = Family::<Labels, Counter>::default();
        let stage_seconds = Family::<Labels, Histogram, fn() -> Histogram>::new_with_constructor(stage_histogram as fn() -> Histogram);
        let promotions = Family::<Labels, Counter>::default();
        let approvals_waiting = Gauge::default();
        let deliveries = Family::<Labels, Counter>::default();
        registry.register("runs", "Runs finished, by outcome", runs.clone());
        registry.register("stage_duration_seconds", "Stage durations, by kind and final state", stage_seconds.clone());
        registry.register("promotions", "Promotion commits written, by environment", promotions.clone());
        registry.register("approvals_waiting", "Approval stages waiting for people", approvals_waiting.clone());
        registry.register("webhook_deliveries", "Webhook deliveries received, by provider and result", deliveries.clone());
        // Registry polls, by pipeline only (a pipeline's name comes from a loaded file, never
        // from a request).
        let registry_polls = Family::<Labels, Counter>::default();
        let registry_poll_errors = Family::<Labels, Counter>::default();
        let registry_backing_off = Family::<Labels, Gauge>::default();
        registry.register("registry_polls", "Looks at polled registry repositories, by pipeline", registry_polls.clone());
        registry.register("registry_poll_errors", "Looks at polled registry repositories that failed, by pipeline", registry_poll_errors.clone());
        registry.register(
            "registry_polls_backing_off",
            "Polled registry repositories backing off after a 429 or 5xx, by pipeline",
            registry_backing_off.clone(),
        );
        Metrics { registry, runs, stage_seconds, promotions, approvals_waiting, deliveries, registry_polls, registry_poll_errors, registry_backing_off }
    }
}

impl Metrics {
    /// A run ended.
    pub fn run_finished(&self, outcome: &str) {
        self.runs.get_or_create(&vec![("outcome".into(), outcome.into())]).inc();
    }

    /// A stage ended after `seconds`.
    pub fn stage_finished(&self, kind: &str, state: &str, seconds: f64) {
        self.stage_seconds.get_or_create(&vec![("kind".into(), kind.into()), ("state".into(), state.into())]).observe(seconds);
    }

    /// A promotion commit landed.
    pub fn promoted(&self, environment: &str) {
        self.promotions.get_or_create(&vec![("environment".into(), environment.into())]).inc();
    }

    /// An approval started (+1) or stopped (-1) waiting.
    pub fn approval_waiting(&self, delta: i64) {
        self.approvals_waiting.inc_by(delta);
    }

    /// A webhook delivery was answered: `result` is `started`, `duplicate`, `ignored`, `refused`,
    /// `invalid`, `ping`.
    pub fn delivery(&self, provider: &str, result: &str) {
        self.deliveries.get_or_create(&vec![("provider".into(), provider.into()), ("result".into(), result.into())]).inc();
    }

    /// A registry repository of `pipeline` was looked at; `failed` when the look failed.
    pub fn registry_polled(&self, pipeline: &str, failed: bool) {
        let labels = vec![("pipeline".into(), pipeline.into())];
        self.registry_polls.get_or_create(&labels).inc();
        // The series is there (at 0) from the first look, not only once a registry was busy.
        let _ = self.registry_backing_off.get_or_create(&labels);
        if failed {
            self.registry_poll_errors.get_or_create(&labels).inc();
        }
    }

    /// A polled repository of `pipeline` started (+1) or stopped (-1) backing off.
    pub fn registry_backing_off(&self, pipeline: &str, delta: i64) {
        self.registry_backing_off.get_or_create(&vec![("pipeline".into(), pipeline.into())]).inc_by(delta);
    }

    /// The OpenMetrics text of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String does not fail");
        out
    }
}
