//! A run as people see it: its stages in the order they need eyes, who decided what, its newest
//! entries and the decisions waiting on the viewer (the run's page), and the leases around it:
//! who drives it, what it queues for, which holder went stale (`promote status`). The surfaces
//! draw and print these; the rules are here.

use std::collections::HashMap;
use std::sync::Arc;

use crate::clock::humanize;
use crate::ops::OpsError;
use crate::ops::access::Caller;
use crate::ops::decide::Mode;
use crate::plan::Plan;
use crate::store::{Decision, Event, RunRecord, RunState, StageRecord, StageState, Store, StoreError};

/// How much of a run one view holds.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Stages listed (a bigger run is whole in its DAG).
    pub rows: usize,
    /// The newest entries.
    pub entries: usize,
    /// Waiting stages asked whether the viewer may decide them (each reads the run's pipeline).
    pub decisions: usize,
}

/// A run's page.
#[derive(Debug)]
pub struct RunView {
    /// Every stage, in file order (what the DAG colours).
    pub stages: Arc<Vec<StageRecord>>,
    /// The stages listed: those that need eyes first (not succeeded), then the rest, up to
    /// `Limits::rows`, in file order when some are left out.
    pub rows: Vec<StageRow>,
    /// How many stages are not listed.
    pub unlisted: usize,
    /// The newest entries, newest last.
    pub entries: Vec<Event>,
    /// How many older entries are not shown (the audit page has them).
    pub earlier: usize,
    /// The number of the newest entry shown: a live view asks only for those after it.
    pub last_entry: i64,
    /// Whether the run may still change.
    pub live: bool,
    /// The stages waiting on a decision the viewer may make: their places in the plan.
    pub yours: Vec<usize>,
}

/// One listed stage and the decisions made on it, oldest first.
#[derive(Debug)]
pub struct StageRow {
    /// The stage as stored.
    pub stage: StageRecord,
    /// Who decided what on it.
    pub decided: Vec<Decision>,
}

/// What `viewer` sees of `run` (whose pipeline they may view: the caller checked `access.view`).
/// `plan` is the run's, when it is known: without it no decision is offered.
pub async fn view(store: &Store, run: &RunRecord, plan: Option<&Plan>, viewer: &Caller<'_>, limits: Limits) -> Result<RunView, OpsError> {
    let stages = store.stages_kept(&run.id).await?;
    let live = run.state == RunState::Running;
    let mut yours = Vec::new();
    if let Some(plan) = plan
        && live
    {
        // A stage waits on a person only when its kind is decided by hand (a sign-off; a verdict
        // left inconclusive); `may_decide` holds every other rule (who, quorum, own trigger).
        // Stored stages are in file order: a stage's place is its own, looked up only if not.
        let place = |i: usize, st: &StageRecord| {
            if plan.pipeline.stages.get(i).is_some_and(|x| x.name.value == st.name) {
                Some(i)
            } else {
                plan.pipeline.stages.iter().position(|x| x.name.value == st.name)
            }
        };
        let waiting = stages.iter().enumerate().filter(|(_, st)| st.state == StageState::Waiting).filter_map(|(i, st)| {
            let index = place(i, st)?;
            plan.pipeline.stages[index].kind.decided_by().is_some().then_some((st, index))
        });
        for (st, index) in waiting.take(limits.decisions) {
            if crate::ops::decide::may_decide(store, &run.id, &st.name, viewer, Mode::Approve).await?.is_ok() {
                yours.push(index);
            }
        }
    }
    let mut listed: Vec<&StageRecord> = stages.iter().filter(|s| s.state != StageState::Succeeded).collect();
    listed.extend(stages.iter().filter(|s| s.state == StageState::Succeeded));
    let unlisted = listed.len().saturating_sub(limits.rows);
    listed.truncate(limits.rows);
    if unlisted > 0 {
        let order: HashMap<&str, usize> = stages.iter().enumerate().map(|(i, s)| (s.name.as_str(), i)).collect();
        listed.sort_by_key(|s| order[s.name.as_str()]);
    }
    // Every decision of the run in one read, whatever kind took it.
    let mut decided = store.decisions_of_runs(std::slice::from_ref(&run.id)).await?;
    let rows =
        listed.into_iter().map(|st| StageRow { decided: decided.remove(&(run.id.clone(), st.name.clone())).unwrap_or_default(), stage: st.clone() }).collect();
    let (entries, total) = store.last_events(&run.id, limits.entries as i64).await?;
    let earlier = (total as usize).saturating_sub(entries.len());
    let last_entry = entries.iter().map(|e| e.id).max().unwrap_or(0);
    Ok(RunView { stages, rows, unlisted, entries, earlier, last_entry, live, yours })
}

/// What a person should know about the leases around a running run.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case", rename_all_fields = "camelCase")]
pub enum LeaseNote {
    /// Who drives it, or that nobody does (and how to carry it on).
    Driver { note: String },
    /// An environment it waits its turn for: who holds it, how many runs go before this one.
    Queued { environment: String, holder: Option<String>, ahead: usize, note: String, expires_at: i64 },
    /// An environment held by a run whose driver stopped: the next deploy there takes it over.
    StaleLock { environment: String, holder: String, expires_at: i64, note: String },
}

impl LeaseNote {
    /// The sentence a person reads.
    pub fn note(&self) -> &str {
        match self {
            LeaseNote::Driver { note } | LeaseNote::Queued { note, .. } | LeaseNote::StaleLock { note, .. } => note,
        }
    }
}

/// The leases around `run` (nothing once it ended): who drives it (a lapsed lease means its
/// process stopped), each environment it queues for, and each stale holder in its way.
pub async fn leases(store: &Store, run: &RunRecord, stages: &[StageRecord]) -> Result<Vec<LeaseNote>, StoreError> {
    let mut out = Vec::new();
    if run.state != RunState::Running {
        return Ok(out);
    }
    let now = crate::clock::now_ms();
    let ago = |t: i64| humanize(std::time::Duration::from_millis((now - t).max(0) as u64));
    let note = match store.driver(&run.id).await? {
        Some(d) if d.expires_at >= now => format!("driven by {} (lease renewed until {})", d.holder, crate::clock::rfc3339(d.expires_at)),
        Some(d) => {
            format!("not driven: the lease of {} lapsed {} ago (its process stopped); `promote resume {}` carries it on", d.holder, ago(d.expires_at), run.id)
        }
        None => format!("not driven by any process: `promote resume {}` carries it on", run.id),
    };
    out.push(LeaseNote::Driver { note });
    let waiting = stages.iter().any(|s| s.state == StageState::Waiting);
    let locks = store.env_locks().await?;
    // The environments it queues for: who holds each, and how many go before it.
    let queue = store.env_queue().await?;
    for (environment, q) in queue.iter().filter(|(_, q)| q.run == run.id && q.superseded_by.is_none()) {
        let ahead = queue.iter().filter(|(e, o)| e == environment && o.run < run.id && o.superseded_by.is_none() && o.expires_at >= now).count();
        let holder = locks.iter().find(|l| l.what == *environment).map(|l| l.holder.clone());
        let held = holder.as_deref().map_or("nobody holds it now".to_string(), |h| format!("run {h} holds it"));
        let note = format!("waits its turn for environment `{environment}`: {held}; {ahead} earlier run(s) queued before this one");
        out.push(LeaseNote::Queued { environment: environment.clone(), holder, ahead, note, expires_at: q.expires_at });
    }
    for l in locks {
        let lapsed = l.expires_at < now;
        let note = if l.holder == run.id && lapsed {
            format!(
                "holds environment `{}` as a stale holder: its lease lapsed {} ago (its driver stopped); the next run to deploy there takes it over",
                l.what,
                ago(l.expires_at)
            )
        } else if l.holder != run.id && lapsed && waiting {
            format!(
                "environment `{}` is held by run {}, a stale holder: its lease lapsed {} ago (its driver stopped); the next deploy there takes it over",
                l.what,
                l.holder,
                ago(l.expires_at)
            )
        } else {
            continue;
        };
        out.push(LeaseNote::StaleLock { environment: l.what, holder: l.holder, expires_at: l.expires_at, note });
    }
    Ok(out)
}
