//! The figures read from the state rather than counted by one process (so that they survive a
//! restart and agree across replicas): the four DORA figures per pipeline and environment, and
//! the decisions waiting with their age.
//!
//! - A *deployment* is a deploy stage that wrote its promotion commit (`outcome: committed`).
//! - Its *lead time* runs from what triggered it (the pushed commit's or image's time that its
//!   webhook delivery gave; else the run's start) to its commit.
//! - It *failed* when its run rolled it back, when it failed after its commit (health) or when
//!   someone rolled its environment back by hand (`promote rollback`) while it was the newest.
//! - A failure is *restored* by that rollback, or else by the next deployment to the environment
//!   (a fix forward); the time to restore runs from its commit to then.
//! - Deployments of one environment are in the order of their commits (of one instant: by run,
//!   then stage); durations are counted in milliseconds (a histogram's sum is their sum over 1000).
//!
//! The figures are kept by the store with each write that changes them ([`crate::store::dora`]):
//! [`figures`] reads one row per pipeline and environment, whatever the history's length.
//! [`recount`] counts them again from the whole history, the definitions above said as code;
//! the two are the same figures.

use std::collections::BTreeMap;

pub use crate::store::dora::{Dora, Histogram};
use crate::store::{StageState, Store, StoreError};

/// Decisions of one kind waiting in one pipeline.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Waiting {
    /// How many stages wait.
    pub count: u64,
    /// Seconds the oldest has waited.
    pub oldest_seconds: f64,
}

/// Every figure, by (pipeline, environment) and by (pipeline, stage kind).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Figures {
    /// DORA per pipeline and environment.
    pub dora: BTreeMap<(String, String), Dora>,
    /// Waiting decisions per pipeline and stage kind (`approval`, `analysis`, a frozen `deploy`).
    pub waiting: BTreeMap<(String, String), Waiting>,
}

/// Reads the figures as of `now` (Unix milliseconds): the DORA figures the store keeps, and the
/// stages waiting now.
pub async fn figures(store: &Store, now: i64) -> Result<Figures, StoreError> {
    let mut figures = Figures { dora: store.dora().await?.into_iter().collect(), ..Default::default() };
    for (pipeline, kind, since) in store.waiting_stages().await? {
        let w = figures.waiting.entry((pipeline, kind)).or_default();
        w.count += 1;
        w.oldest_seconds = w.oldest_seconds.max((now - since).max(0) as f64 / 1000.0);
    }
    Ok(figures)
}

struct Deployment {
    committed_at: i64,
    run: String,
    stage: String,
    origin_at: i64,
    failed: bool,
    restored_at: Option<i64>,
}

/// Counts the figures again from the whole history, as of `now` (Unix milliseconds): every deploy
/// stage and every rollback by hand of the trail. What [`figures`] reads is the same; this one's
/// cost grows with the history (for checks and tests, never for a scrape).
pub async fn recount(store: &Store, now: i64) -> Result<Figures, StoreError> {
    let mut by_env: BTreeMap<(String, String), Vec<Deployment>> = BTreeMap::new();
    for row in store.stages_where(Some("deploy"), None).await? {
        let Some(d) = crate::store::dora::deployment(&row.stage, row.run_created_at, row.origin_at) else { continue };
        let (committed_at, origin_at, failed, restored_at) = (d.committed_at, d.origin_at, d.failed, d.restored_at);
        by_env.entry((row.pipeline, d.environment)).or_default().push(Deployment {
            committed_at,
            run: row.run,
            stage: row.stage.name,
            origin_at,
            failed,
            restored_at,
        });
    }
    // In the order of their commits (of one instant, by run and stage).
    for list in by_env.values_mut() {
        list.sort_by(|a, b| (a.committed_at, &a.run, &a.stage).cmp(&(b.committed_at, &b.run, &b.stage)));
    }
    // Rollbacks by hand: the newest deployment before each fails, restored then.
    let mut after = 0;
    loop {
        let page = store.audit_entries(Some(crate::store::NO_RUN), after, 1000).await?;
        let Some(last) = page.last() else { break };
        after = last.seq;
        for e in page.iter().filter(|e| e.kind == crate::store::EntryKind::Rollback.as_str()) {
            let Some((pipeline, environment)) = crate::store::dora::rollback_target(&e.detail) else { continue };
            if let Some(list) = by_env.get_mut(&(pipeline.to_string(), environment.to_string()))
                && let Some(d) = list.iter_mut().rev().find(|d| d.committed_at <= e.at)
            {
                d.failed = true;
                d.restored_at = Some(d.restored_at.map_or(e.at, |r| r.min(e.at)));
            }
        }
    }
    let mut figures = Figures::default();
    for (key, list) in by_env {
        let dora = figures.dora.entry(key).or_default();
        for (i, d) in list.iter().enumerate() {
            dora.deployments += 1;
            dora.lead_time.observe((d.committed_at - d.origin_at).max(0));
            dora.last_deployment = Some(d.committed_at);
            if d.failed {
                dora.failed += 1;
                // Not rolled back: restored by the next deployment, if there is one.
                if let Some(r) = d.restored_at.or_else(|| list.get(i + 1).map(|n| n.committed_at)) {
                    dora.time_to_restore.observe((r - d.committed_at).max(0));
                }
            }
        }
    }
    for row in store.stages_where(None, Some(StageState::Waiting)).await? {
        let w = figures.waiting.entry((row.pipeline, row.stage.kind)).or_default();
        w.count += 1;
        let since = row.stage.started_at.unwrap_or(row.run_created_at);
        w.oldest_seconds = w.oldest_seconds.max((now - since).max(0) as f64 / 1000.0);
    }
    Ok(figures)
}

/// Histograms of fixed buckets, one per label set, encoded as prometheus-client's own
/// `Histogram` is (its sum in seconds, its count, its buckets cumulated up to `+Inf`).
struct Histograms(Vec<(Vec<(String, String)>, Histogram)>);

impl prometheus_client::encoding::EncodeMetric for Histograms {
    fn encode(&self, mut encoder: prometheus_client::encoding::MetricEncoder) -> Result<(), std::fmt::Error> {
        for (labels, h) in &self.0 {
            let buckets: Vec<(f64, u64)> =
                crate::store::dora::BOUNDS_S.iter().map(|b| *b as f64).chain(std::iter::once(f64::INFINITY)).zip(h.buckets.iter().copied()).collect();
            encoder.encode_family(labels)?.encode_histogram::<prometheus_client::encoding::NoLabelSet>(h.sum_ms as f64 / 1000.0, h.count, &buckets, None)?;
        }
        Ok(())
    }

    fn metric_type(&self) -> prometheus_client::metrics::MetricType {
        prometheus_client::metrics::MetricType::Histogram
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for Histograms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.0.iter().map(|(l, _)| l)).finish()
    }
}

/// The figures as OpenMetrics text (without the closing `# EOF`), to follow the executor's.
pub fn encode(f: &Figures) -> String {
    use prometheus_client::metrics::counter::Counter;
    use prometheus_client::metrics::family::Family;
    use prometheus_client::metrics::gauge::Gauge;
    type Labels = Vec<(String, String)>;
    let mut registry = prometheus_client::registry::Registry::with_prefix("promote");
    let deployments = Family::<Labels, Counter>::default();
    let failed = Family::<Labels, Counter>::default();
    let rate = Family::<Labels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
    let mut lead = Histograms(Vec::new());
    let mut restore = Histograms(Vec::new());
    let last = Family::<Labels, Gauge>::default();
    for ((pipeline, environment), d) in &f.dora {
        let l = vec![("pipeline".to_string(), pipeline.clone()), ("environment".to_string(), environment.clone())];
        deployments.get_or_create(&l).inc_by(d.deployments);
        failed.get_or_create(&l).inc_by(d.failed);
        rate.get_or_create(&l).set(d.change_failure_rate());
        lead.0.push((l.clone(), d.lead_time.clone()));
        // A label set without a restore has no series (as an unobserved family member has none).
        if d.time_to_restore.count > 0 {
            restore.0.push((l.clone(), d.time_to_restore.clone()));
        }
        if let Some(at) = d.last_deployment {
            last.get_or_create(&l).set(at / 1000);
        }
    }
    let waiting = Family::<Labels, Gauge>::default();
    let oldest = Family::<Labels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
    for ((pipeline, kind), w) in &f.waiting {
        let l = vec![("pipeline".to_string(), pipeline.clone()), ("kind".to_string(), kind.clone())];
        waiting.get_or_create(&l).set(w.count as i64);
        oldest.get_or_create(&l).set(w.oldest_seconds);
    }
    registry.register("deployments", "Promotion commits written, by pipeline and environment (DORA: deployment frequency is its rate)", deployments);
    registry.register("deployments_failed", "Deployments rolled back, reverted by hand or failed after their commit", failed);
    registry.register("change_failure_ratio", "DORA change failure rate: failed deployments over deployments", rate);
    registry.register("lead_time_seconds", "DORA lead time: from the triggering commit or image push to the promotion commit", lead);
    registry.register("time_to_restore_seconds", "DORA time to restore: from a failed deployment's commit to its rollback or the next deployment", restore);
    registry.register("last_deployment_timestamp_seconds", "When the newest deployment was committed", last);
    registry.register("decisions_waiting", "Stages waiting for a decision, by pipeline and kind", waiting);
    registry.register("decision_oldest_wait_seconds", "How long the oldest waiting stage has waited, by pipeline and kind", oldest);
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &registry).expect("writing to a String does not fail");
    out.strip_suffix("# EOF\n").unwrap_or(&out).to_string()
}
