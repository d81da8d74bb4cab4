//! The DORA figures kept with each write (schema 19; PostgreSQL's 7), so that reading them costs
//! the same with ten runs of history or a million: `/metrics` reads one row per pipeline and
//! environment and its histograms' buckets.
//!
//! What counts is said in [`crate::ops::figures`]; here is how it is kept. Each deployment has a
//! row of `dora_deployments` (its commit's time, its origin's, whether its stage failed or was
//! rolled back, and what it adds to the figures as they were last counted), each rollback by hand
//! a row of `dora_rollbacks`, and each (pipeline, environment) a row of `dora` (sums) and rows of
//! `dora_buckets` (the histograms). What a deployment adds depends on itself, on the next
//! deployment of its environment (a fix forward restores it) and on the rollbacks by hand between
//! its commit and the next one's (the newest deployment before a rollback fails, restored then):
//! so a write that records a deployment counts it and the one before it again, a rollback by hand
//! counts the deployment it undid again, and each recount moves the sums by the difference. All
//! of it in the write's own transaction (one writer at a time: SQLite's, or PostgreSQL's
//! transactions that lock the trail's head first), and counted in integer milliseconds, so that
//! the figures kept are exactly a recount's, whatever the order of the writes.

use serde::Deserialize;

use super::{StageRecord, StageState, Transition};
use crate::stages::DeployOutput;

/// The histograms' upper bounds, seconds: 1 minute to 4 weeks (then `+Inf`).
pub const BOUNDS_S: [i64; 9] = [60, 300, 900, 3600, 4 * 3600, 86400, 3 * 86400, 7 * 86400, 28 * 86400];

/// A histogram of durations: how many, their sum, and how many fell in each bucket (not
/// cumulative; the last is `+Inf`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Histogram {
    /// Observations.
    pub count: u64,
    /// Their sum, milliseconds.
    pub sum_ms: i64,
    /// Per bucket of [`BOUNDS_S`], then `+Inf`.
    pub buckets: [u64; BOUNDS_S.len() + 1],
}

impl Histogram {
    /// The bucket a duration of `ms` milliseconds falls in: the first whose bound it does not pass.
    pub fn bucket(ms: i64) -> usize {
        BOUNDS_S.iter().position(|b| ms <= b * 1000).unwrap_or(BOUNDS_S.len())
    }

    /// Counts one duration.
    pub fn observe(&mut self, ms: i64) {
        self.count += 1;
        self.sum_ms += ms;
        self.buckets[Self::bucket(ms)] += 1;
    }
}

/// One pipeline's figures in one environment.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Dora {
    /// Deployments (promotion commits written).
    pub deployments: u64,
    /// Of those, how many failed.
    pub failed: u64,
    /// Each deployment's lead time.
    pub lead_time: Histogram,
    /// Each restored failure's time to restore.
    pub time_to_restore: Histogram,
    /// Unix milliseconds of the newest deployment.
    pub last_deployment: Option<i64>,
}

impl Dora {
    /// Failed over all deployments (0 without deployments).
    pub fn change_failure_rate(&self) -> f64 {
        if self.deployments == 0 { 0.0 } else { self.failed as f64 / self.deployments as f64 }
    }
}

/// A deployment as its deploy stage's record says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deployment {
    /// The environment.
    pub environment: String,
    /// When its promotion commit was written (Unix ms).
    pub committed_at: i64,
    /// Where its lead time starts.
    pub origin_at: i64,
    /// Its stage failed after the commit, or its run rolled it back.
    pub failed: bool,
    /// When its run's rollback ended (a rolled-back stage's end).
    pub restored_at: Option<i64>,
}

/// The deployment a stage is, if it is one: a deploy stage whose output says its promotion commit
/// landed (pushed, or a request's merge). Its commit's time is the output's `committedAt` (older
/// outputs: the stage's start or end, else the run's); its lead time starts at the origin its
/// delivery gave (not after the commit) or the run's start.
pub fn deployment(stage: &StageRecord, run_created_at: i64, delivery_origin_at: Option<i64>) -> Option<Deployment> {
    if stage.kind != "deploy" {
        return None;
    }
    let out = DeployOutput::of(stage.output.as_ref()).filter(|o| o.outcome.landed_now())?;
    let environment = out.environment;
    let committed_at = out.committed_at.or(stage.started_at).or(stage.finished_at).unwrap_or(run_created_at);
    let (failed, restored_at) = match stage.state {
        StageState::RolledBack => (true, stage.finished_at),
        StageState::Failed => (true, None),
        _ => (false, None),
    };
    let origin_at = delivery_origin_at.filter(|o| *o <= committed_at).unwrap_or(run_created_at);
    Some(Deployment { environment, committed_at, origin_at, failed, restored_at })
}

/// Whether a stage's transition may make it a deployment, or change one: an output that says a
/// commit landed, a failure, a rollback. (A deploy's output is written once, at its end.)
pub fn may_change(t: &Transition) -> bool {
    // Only the outcome is read here (this runs for every transition with an output).
    let outcome = t.output.as_ref().and_then(|o| o.get("outcome")).and_then(|v| crate::stages::DeployOutcome::deserialize(v).ok());
    outcome.is_some_and(|o| o.landed_now()) || matches!(t.state, Some(StageState::Failed | StageState::RolledBack))
}

/// The pipeline and environment of a trail entry of kind `rollback` (run `-`) that a rollback by
/// hand wrote when it committed (`PIPELINE: rolled back ENV: ...`); `None` for one that did not.
pub fn rollback_target(detail: &str) -> Option<(&str, &str)> {
    let (pipeline, rest) = detail.split_once(": rolled back ")?;
    let (environment, _) = rest.split_once(": ")?;
    Some((pipeline, environment))
}

/// What one deployment adds to its environment's figures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counted {
    /// Whether it counts as failed.
    pub failed: bool,
    /// Its lead time, ms.
    pub lead_ms: i64,
    /// Its time to restore, ms, when it failed and was restored.
    pub restore_ms: Option<i64>,
}

/// What a deployment adds: `next_at` is the next deployment's commit (by commit time, then run and
/// stage), `by_hand` the first rollback by hand from its commit until the next one.
pub fn counted(committed_at: i64, origin_at: i64, stage_failed: bool, stage_restored_at: Option<i64>, next_at: Option<i64>, by_hand: Option<i64>) -> Counted {
    let failed = stage_failed || by_hand.is_some();
    let restored_at = match (stage_restored_at, by_hand) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let restore_ms = failed.then(|| restored_at.or(next_at).map(|r| (r - committed_at).max(0))).flatten();
    Counted { failed, lead_ms: (committed_at - origin_at).max(0), restore_ms }
}

/// The writes that keep the figures, for connection type `$Conn`, expanded in each backend's
/// writer beside [`super::sql::common_writes`]: `dora_stage(conn, run, stage)` after a
/// transition [`may_change`], `dora_rollback(conn, pipeline, environment, at)` after a rollback
/// by hand's entry, and `dora_backfill(conn)` once, when the tables are made.
macro_rules! dora_writes {
    ($Conn:ty) => {
/// Keeps the figures of stage `stage` of `run` after a write changed it: its deployment recorded,
/// changed or taken away, and counted again with the one before it.
pub(super) async fn dora_stage(conn: &mut $Conn, run: &str, stage: &str) -> Result<(), sqlx::Error> {
    use sqlx::Row;
    // The run's delivery found by its unique (pipeline, version): no index has its run.
    let row = sqlx::query(
        "SELECT s.name, s.kind, s.state, s.attempt, s.started_at, s.finished_at, s.message, s.output, s.seal, r.pipeline, r.created_at,
                (SELECT d.origin_at FROM deliveries d WHERE d.pipeline = r.pipeline AND d.version = r.version AND d.run_id = r.id)
         FROM stages s JOIN runs r ON r.id = s.run_id WHERE s.run_id = $1 AND s.name = $2",
    )
    .bind(run)
    .bind(stage)
    .fetch_optional(&mut *conn)
    .await?;
    let now = row.as_ref().and_then(|r| {
        let s = super::stage_row(r, 0);
        $crate::store::dora::deployment(&s, r.get(10), r.get(11)).map(|d| (r.get::<String, _>(9), d))
    });
    let was: Option<(String, String, i64, i64, i64, Option<i64>)> = sqlx::query_as(
        "SELECT pipeline, environment, committed_at, origin_at, stage_failed, stage_restored_at FROM dora_deployments WHERE run_id = $1 AND stage = $2",
    )
    .bind(run)
    .bind(stage)
    .fetch_optional(&mut *conn)
    .await?;
    if let (Some((p, e, c, o, f, r)), Some((pipeline, d))) = (&was, &now)
        && (p, e, *c, *o, *f != 0, *r) == (pipeline, &d.environment, d.committed_at, d.origin_at, d.failed, d.restored_at)
    {
        return Ok(());
    }
    if let Some((pipeline, environment, committed_at, ..)) = &was {
        let old = dora_counted_of(conn, run, stage).await?;
        dora_add(conn, pipeline, environment, old, None).await?;
        sqlx::query("DELETE FROM dora_deployments WHERE run_id = $1 AND stage = $2").bind(run).bind(stage).execute(&mut *conn).await?;
        dora_recount_before(conn, pipeline, environment, *committed_at, run, stage).await?;
    }
    if let Some((pipeline, d)) = &now {
        sqlx::query(
            "INSERT INTO dora_deployments (run_id, stage, pipeline, environment, committed_at, origin_at, stage_failed, stage_restored_at, failed, lead_ms, restore_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 0, 0, NULL)",
        )
        .bind(run)
        .bind(stage)
        .bind(pipeline)
        .bind(&d.environment)
        .bind(d.committed_at)
        .bind(d.origin_at)
        .bind(d.failed as i64)
        .bind(d.restored_at)
        .execute(&mut *conn)
        .await?;
        dora_recount(conn, run, stage, false).await?;
        dora_recount_before(conn, pipeline, &d.environment, d.committed_at, run, stage).await?;
    }
    Ok(())
}

/// A rollback by hand of `environment` at `at`: kept, and the deployment it undid (the newest
/// committed by then) counted again.
pub(super) async fn dora_rollback(conn: &mut $Conn, pipeline: &str, environment: &str, at: i64) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO dora_rollbacks (pipeline, environment, at) VALUES ($1, $2, $3)").bind(pipeline).bind(environment).bind(at).execute(&mut *conn).await?;
    let undone: Option<(String, String)> = sqlx::query_as(
        "SELECT run_id, stage FROM dora_deployments WHERE pipeline = $1 AND environment = $2 AND committed_at <= $3
         ORDER BY committed_at DESC, run_id DESC, stage DESC LIMIT 1",
    )
    .bind(pipeline)
    .bind(environment)
    .bind(at)
    .fetch_optional(&mut *conn)
    .await?;
    if let Some((run, stage)) = undone {
        dora_recount(conn, &run, &stage, true).await?;
    }
    Ok(())
}

/// Counts a state's history once (the migration that makes the tables): every deploy stage with
/// an output, then every rollback by hand of the trail.
pub(super) async fn dora_backfill(conn: &mut $Conn) -> Result<(), sqlx::Error> {
    let stages: Vec<(String, String)> =
        sqlx::query_as("SELECT run_id, name FROM stages WHERE kind = 'deploy' AND output IS NOT NULL ORDER BY run_id, name").fetch_all(&mut *conn).await?;
    for (run, stage) in &stages {
        dora_stage(conn, run, stage).await?;
    }
    let rollbacks: Vec<(i64, String)> =
        sqlx::query_as("SELECT at, detail FROM events WHERE run_id = '-' AND kind = 'rollback' ORDER BY id").fetch_all(&mut *conn).await?;
    for (at, detail) in &rollbacks {
        if let Some((pipeline, environment)) = $crate::store::dora::rollback_target(detail) {
            dora_rollback(conn, pipeline, environment, *at).await?;
        }
    }
    Ok(())
}

/// What a recorded deployment adds, as last counted.
async fn dora_counted_of(conn: &mut $Conn, run: &str, stage: &str) -> Result<Option<$crate::store::dora::Counted>, sqlx::Error> {
    let row: Option<(i64, i64, Option<i64>)> = sqlx::query_as("SELECT failed, lead_ms, restore_ms FROM dora_deployments WHERE run_id = $1 AND stage = $2")
        .bind(run)
        .bind(stage)
        .fetch_optional(&mut *conn)
        .await?;
    Ok(row.map(|(failed, lead_ms, restore_ms)| $crate::store::dora::Counted { failed: failed != 0, lead_ms, restore_ms }))
}

/// Counts the deployment before (`committed_at`, `run`, `stage`) in its environment again.
async fn dora_recount_before(conn: &mut $Conn, pipeline: &str, environment: &str, committed_at: i64, run: &str, stage: &str) -> Result<(), sqlx::Error> {
    let before: Option<(String, String)> = sqlx::query_as(
        "SELECT run_id, stage FROM dora_deployments WHERE pipeline = $1 AND environment = $2 AND (committed_at, run_id, stage) < ($3, $4, $5)
         ORDER BY committed_at DESC, run_id DESC, stage DESC LIMIT 1",
    )
    .bind(pipeline)
    .bind(environment)
    .bind(committed_at)
    .bind(run)
    .bind(stage)
    .fetch_optional(&mut *conn)
    .await?;
    if let Some((run, stage)) = before {
        dora_recount(conn, &run, &stage, true).await?;
    }
    Ok(())
}

/// Counts a recorded deployment again (`counted`: its last count is in the sums, to be replaced).
async fn dora_recount(conn: &mut $Conn, run: &str, stage: &str, counted: bool) -> Result<(), sqlx::Error> {
    let row: Option<(String, String, i64, i64, i64, Option<i64>, i64, i64, Option<i64>)> = sqlx::query_as(
        "SELECT pipeline, environment, committed_at, origin_at, stage_failed, stage_restored_at, failed, lead_ms, restore_ms
         FROM dora_deployments WHERE run_id = $1 AND stage = $2",
    )
    .bind(run)
    .bind(stage)
    .fetch_optional(&mut *conn)
    .await?;
    let Some((pipeline, environment, committed_at, origin_at, stage_failed, stage_restored_at, failed, lead_ms, restore_ms)) = row else { return Ok(()) };
    let next_at: Option<i64> = sqlx::query_scalar(
        "SELECT committed_at FROM dora_deployments WHERE pipeline = $1 AND environment = $2 AND (committed_at, run_id, stage) > ($3, $4, $5)
         ORDER BY committed_at, run_id, stage LIMIT 1",
    )
    .bind(&pipeline)
    .bind(&environment)
    .bind(committed_at)
    .bind(run)
    .bind(stage)
    .fetch_optional(&mut *conn)
    .await?;
    let by_hand: Option<i64> = sqlx::query_scalar("SELECT min(at) FROM dora_rollbacks WHERE pipeline = $1 AND environment = $2 AND at >= $3 AND at < $4")
        .bind(&pipeline)
        .bind(&environment)
        .bind(committed_at)
        .bind(next_at.unwrap_or(i64::MAX))
        .fetch_one(&mut *conn)
        .await?;
    let new = $crate::store::dora::counted(committed_at, origin_at, stage_failed != 0, stage_restored_at, next_at, by_hand);
    let old = counted.then_some($crate::store::dora::Counted { failed: failed != 0, lead_ms, restore_ms });
    if old == Some(new) {
        return Ok(());
    }
    dora_add(conn, &pipeline, &environment, old, Some(new)).await?;
    sqlx::query("UPDATE dora_deployments SET failed = $1, lead_ms = $2, restore_ms = $3 WHERE run_id = $4 AND stage = $5")
        .bind(new.failed as i64)
        .bind(new.lead_ms)
        .bind(new.restore_ms)
        .bind(run)
        .bind(stage)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Moves an environment's sums from one deployment's count (`old`) to another (`new`).
async fn dora_add(
    conn: &mut $Conn,
    pipeline: &str,
    environment: &str,
    old: Option<$crate::store::dora::Counted>,
    new: Option<$crate::store::dora::Counted>,
) -> Result<(), sqlx::Error> {
    use $crate::store::dora::Histogram;
    let one = |c: Option<$crate::store::dora::Counted>| c.map_or((0i64, 0i64, 0i64, 0i64, 0i64), |c| {
        (1, c.failed as i64, c.lead_ms, c.restore_ms.is_some() as i64, c.restore_ms.unwrap_or(0))
    });
    let (o, n) = (one(old), one(new));
    sqlx::query(
        "INSERT INTO dora (pipeline, environment, deployments, failed, lead_sum_ms, restore_count, restore_sum_ms) VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (pipeline, environment) DO UPDATE SET deployments = dora.deployments + excluded.deployments, failed = dora.failed + excluded.failed,
           lead_sum_ms = dora.lead_sum_ms + excluded.lead_sum_ms, restore_count = dora.restore_count + excluded.restore_count,
           restore_sum_ms = dora.restore_sum_ms + excluded.restore_sum_ms",
    )
    .bind(pipeline)
    .bind(environment)
    .bind(n.0 - o.0)
    .bind(n.1 - o.1)
    .bind(n.2 - o.2)
    .bind(n.3 - o.3)
    .bind(n.4 - o.4)
    .execute(&mut *conn)
    .await?;
    let mut moves: Vec<(&str, usize, i64)> = Vec::with_capacity(4);
    if let Some(c) = old {
        moves.push(("lead", Histogram::bucket(c.lead_ms), -1));
        if let Some(r) = c.restore_ms {
            moves.push(("restore", Histogram::bucket(r), -1));
        }
    }
    if let Some(c) = new {
        moves.push(("lead", Histogram::bucket(c.lead_ms), 1));
        if let Some(r) = c.restore_ms {
            moves.push(("restore", Histogram::bucket(r), 1));
        }
    }
    // A move out and back into one bucket is none.
    let mut net: Vec<(&str, usize, i64)> = Vec::with_capacity(4);
    for (metric, bucket, by) in moves {
        match net.iter_mut().find(|(m, b, _)| *m == metric && *b == bucket) {
            Some(x) => x.2 += by,
            None => net.push((metric, bucket, by)),
        }
    }
    for (metric, bucket, by) in net.into_iter().filter(|x| x.2 != 0) {
        sqlx::query(
            "INSERT INTO dora_buckets (pipeline, environment, metric, bucket, n) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (pipeline, environment, metric, bucket) DO UPDATE SET n = dora_buckets.n + excluded.n",
        )
        .bind(pipeline)
        .bind(environment)
        .bind(metric)
        .bind(bucket as i64)
        .bind(by)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}
    };
}
pub(crate) use dora_writes;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_duration_falls_in_the_first_bucket_whose_bound_it_does_not_pass() {
        assert_eq!(Histogram::bucket(0), 0);
        assert_eq!(Histogram::bucket(60_000), 0);
        assert_eq!(Histogram::bucket(60_001), 1);
        assert_eq!(Histogram::bucket(28 * 86_400_000), 8);
        assert_eq!(Histogram::bucket(28 * 86_400_000 + 1), 9);
    }

    #[test]
    fn a_failure_is_restored_by_its_rollback_or_else_the_next_deployment() {
        // Rolled back by its run at 50, by hand at 40: the first.
        assert_eq!(counted(10, 0, true, Some(50), Some(100), Some(40)), Counted { failed: true, lead_ms: 10, restore_ms: Some(30) });
        // Failed after its commit, not rolled back: the next deployment restores it.
        assert_eq!(counted(10, 0, true, None, Some(100), None), Counted { failed: true, lead_ms: 10, restore_ms: Some(90) });
        // Not yet restored.
        assert_eq!(counted(10, 0, true, None, None, None).restore_ms, None);
        // A rollback by hand fails a deployment that passed.
        assert_eq!(counted(10, 20, false, None, None, Some(70)), Counted { failed: true, lead_ms: 0, restore_ms: Some(60) });
        assert_eq!(counted(10, 0, false, None, Some(100), None), Counted { failed: false, lead_ms: 10, restore_ms: None });
    }
}
