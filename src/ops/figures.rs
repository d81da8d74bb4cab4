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

use std::collections::BTreeMap;

use crate::store::{StageState, Store, StoreError};

/// One pipeline's figures in one environment.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Dora {
    /// Deployments (promotion commits written).
    pub deployments: u64,
    /// Of those, how many failed.
    pub failed: u64,
    /// Each deployment's lead time, seconds.
    pub lead_times: Vec<f64>,
    /// Each restored failure's time to restore, seconds.
    pub restore_times: Vec<f64>,
    /// Unix milliseconds of the newest deployment.
    pub last_deployment: Option<i64>,
}

impl Dora {
    /// Failed over all deployments (0 without deployments).
    pub fn change_failure_rate(&self) -> f64 {
        if self.deployments == 0 { 0.0 } else { self.failed as f64 / self.deployments as f64 }
    }
}

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
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Figures {
    /// DORA per pipeline and environment.
    pub dora: BTreeMap<(String, String), Dora>,
    /// Waiting decisions per pipeline and stage kind (`approval`, `analysis`, a frozen `deploy`).
    pub waiting: BTreeMap<(String, String), Waiting>,
}

struct Deployment {
    committed_at: i64,
    origin_at: i64,
    failed: bool,
    restored_at: Option<i64>,
}

/// Reads the figures as of `now` (Unix milliseconds).
pub async fn figures(store: &Store, now: i64) -> Result<Figures, StoreError> {
    let mut by_env: BTreeMap<(String, String), Vec<Deployment>> = BTreeMap::new();
    for row in store.stages_where(Some("deploy"), None).await? {
        let Some(out) = &row.stage.output else { continue };
        // A deployment is a promotion commit that landed: pushed, or a request's merge.
        if !matches!(out["outcome"].as_str(), Some("committed" | "merged")) {
            continue;
        }
        let Some(env) = out["environment"].as_str() else { continue };
        let committed_at = out["committedAt"].as_i64().or(row.stage.started_at).or(row.stage.finished_at).unwrap_or(row.run_created_at);
        let (failed, restored_at) = match row.stage.state {
            StageState::RolledBack => (true, row.stage.finished_at),
            StageState::Failed => (true, None),
            _ => (false, None),
        };
        let origin_at = row.origin_at.filter(|o| *o <= committed_at).unwrap_or(row.run_created_at);
        by_env.entry((row.pipeline, env.to_string())).or_default().push(Deployment { committed_at, origin_at, failed, restored_at });
    }
    for list in by_env.values_mut() {
        list.sort_by_key(|d| d.committed_at);
    }
    // Rollbacks by hand: the newest deployment before each fails, restored then.
    let mut after = 0;
    loop {
        let page = store.audit_entries(Some("-"), after, 1000).await?;
        let Some(last) = page.last() else { break };
        after = last.seq;
        for e in page.iter().filter(|e| e.kind == "rollback") {
            let Some((pipeline, environment)) = super::rollback::parse_detail(&e.detail) else { continue };
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
            dora.lead_times.push((d.committed_at - d.origin_at).max(0) as f64 / 1000.0);
            dora.last_deployment = Some(d.committed_at);
            if d.failed {
                dora.failed += 1;
                // Not rolled back: restored by the next deployment, if there is one.
                if let Some(r) = d.restored_at.or_else(|| list.get(i + 1).map(|n| n.committed_at)) {
                    dora.restore_times.push((r - d.committed_at).max(0) as f64 / 1000.0);
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

/// The figures as OpenMetrics text (without the closing `# EOF`), to follow the executor's.
pub fn encode(f: &Figures) -> String {
    use prometheus_client::metrics::counter::Counter;
    use prometheus_client::metrics::family::Family;
    use prometheus_client::metrics::gauge::Gauge;
    use prometheus_client::metrics::histogram::Histogram;
    type Labels = Vec<(String, String)>;
    let mut registry = prometheus_client::registry::Registry::with_prefix("promote");
    // 1 minute to about 4 weeks.
    let hours = || Histogram::new([60.0, 300.0, 900.0, 3600.0, 4.0 * 3600.0, 86400.0, 3.0 * 86400.0, 7.0 * 86400.0, 28.0 * 86400.0]);
    let deployments = Family::<Labels, Counter>::default();
    let failed = Family::<Labels, Counter>::default();
    let rate = Family::<Labels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
    let lead = Family::<Labels, Histogram, _>::new_with_constructor(hours);
    let restore = Family::<Labels, Histogram, _>::new_with_constructor(hours);
    let last = Family::<Labels, Gauge>::default();
    for ((pipeline, environment), d) in &f.dora {
        let l = vec![("pipeline".to_string(), pipeline.clone()), ("environment".to_string(), environment.clone())];
        deployments.get_or_create(&l).inc_by(d.deployments);
        failed.get_or_create(&l).inc_by(d.failed);
        rate.get_or_create(&l).set(d.change_failure_rate());
        for t in &d.lead_times {
            lead.get_or_create(&l).observe(*t);
        }
        for t in &d.restore_times {
            restore.get_or_create(&l).observe(*t);
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
