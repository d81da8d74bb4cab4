//! Drift: a change in an environment branch that promote did not make. Looking for it (each
//! environment whose `drift.action` is not `ignore`), recording and announcing it, reverting it
//! at once (`action: revert`), and a person's decision: accept (it becomes the state the next
//! promotion builds on) or reject (a revert commit restores the last approved state's files).

use std::path::Path;

use super::OpsError;
use super::access::Caller;
use crate::git::{Destination, Outcome};
use crate::model::DriftAction;
use crate::plan::Plan;
use crate::store::{DriftRecord, DriftState, EntryKind, Store};

/// What a look at one environment found.
#[derive(Debug, Clone)]
pub struct Looked {
    /// The environment.
    pub environment: String,
    /// The drift, recorded now or before; `None`: clean.
    pub drift: Option<DriftRecord>,
    /// One line for a person.
    pub line: String,
}

/// Tells the pipeline's channels of drift `id`, linking its card in the inbox (where it is
/// accepted or rejected) when the server's public URL is known.
fn notify(
    pipeline: &crate::model::Pipeline,
    id: &str,
    environment: &str,
    message: String,
    public_url: Option<&str>,
) -> Option<std::sync::Arc<crate::governance::notify::Notifier>> {
    let n = std::sync::Arc::new(crate::governance::notify::Notifier::new(&pipeline.notifications, vec![]).ok()?.linked(public_url));
    let name = &pipeline.name.value;
    n.send(crate::governance::notify::Note {
        event: "drift".into(),
        pipeline: name.clone(),
        run: crate::store::NO_RUN.into(),
        version: String::new(),
        stage: None,
        message,
        link: None,
        headline: format!("{name} in {environment} was changed outside promote: keep the change or undo it?"),
        page: Some(format!("/ui/drifts/{id}")),
        ..Default::default()
    });
    Some(n)
}

/// Looks at every environment of `plan` (relative repos from `base`) for drift; records each new
/// one (with its entry and a `drift` notification) and reverts it at once where the environment
/// says `action: revert`.
/// `public_url`: the server's, the base of the notes' links.
pub async fn check(
    store: &Store,
    writer: &std::sync::Arc<crate::git::Writer>,
    plan: &Plan,
    base: &Path,
    public_url: Option<&str>,
) -> Result<Vec<Looked>, OpsError> {
    let pipeline = &plan.pipeline;
    let name = pipeline.name.value.clone();
    let recorded = store.drifts(crate::store::DriftFilter { pipeline: Some(&name), ..Default::default() }).await?;
    let mut out = Vec::new();
    for env in &pipeline.environments {
        if env.spec.drift.action == DriftAction::Ignore {
            continue;
        }
        let env_name = env.name.value.clone();
        let accepted: Vec<String> = recorded.iter().filter(|d| d.environment == env_name && d.state == DriftState::Accepted).map(|d| d.head.clone()).collect();
        let dest = Destination::of(env, base);
        let (w, key, p, d2) = (writer.clone(), store.key().clone(), name.clone(), dest.clone());
        let scan = tokio::task::spawn_blocking(move || w.scan(&d2, &key, &p, &accepted))
            .await
            .map_err(|e| OpsError::Stopped(format!("the git writer stopped: {e}")))??;
        if scan.commits.is_empty() && scan.rewritten.is_none() {
            out.push(Looked { environment: env_name.clone(), drift: None, line: format!("{env_name}: no drift (head {})", short(&scan.head)) });
            continue;
        }
        // Seen at an earlier look: nothing to write.
        if let Some(known) = recorded.iter().find(|d| d.environment == env_name && d.head == scan.head) {
            out.push(Looked {
                environment: env_name.clone(),
                line: format!("{env_name}: drift {} ({}), seen before", known.id, known.state),
                drift: Some(known.clone()),
            });
            continue;
        }
        let drift = DriftRecord {
            id: format!("d-{}", ulid::Ulid::new()),
            pipeline: name.clone(),
            environment: env_name.clone(),
            head: scan.head.clone(),
            baseline: scan.baseline.clone(),
            commits: scan.commits.clone(),
            diff: scan.diff.clone(),
            rewritten: scan.rewritten.is_some(),
            state: DriftState::Open,
            decided_by: None,
            reason: None,
            at: crate::clock::now_ms(),
            decided_at: None,
            seal: None,
        };
        if let Some(first) = store.record_drift(drift.clone()).await? {
            let known = store.drift(&first).await?;
            let state = known.as_ref().map_or("recorded".to_string(), |d| d.state.to_string());
            out.push(Looked { environment: env_name.clone(), line: format!("{env_name}: drift {first} ({state}), seen before"), drift: known });
            continue;
        }
        let what = drift.describe();
        let notifier = notify(pipeline, &drift.id, &env_name, format!("{env_name}: {what}"), public_url);
        let mut line = format!("{env_name}: drift {}: {what}", drift.id);
        let mut drift = drift;
        // The pipeline's policies judge the drifted state: a denial reverts it at once.
        let denied = match judge(writer, plan, base, &dest, &drift).await {
            // What a compliance exception in force names is not reverted.
            Ok(d) => super::compliance::unexcepted(store, &name, &env_name, d).await?,
            Err(why) => {
                store.audit(None, None, EntryKind::Policy, "promote", &format!("{name}: drift {} in {env_name} could not be judged: {why}", drift.id)).await?;
                Vec::new()
            }
        };
        if !denied.is_empty() {
            let reverted = revert(store, writer, env, base, &drift).await?;
            let why = format!("policy denied the drifted state: {}; {reverted}", denied.join("; "));
            store.decide_drift(&drift.id, DriftState::Open, DriftState::Reverted, "promote", Some(&why), None).await?;
            line.push_str(&format!("; {why}"));
            drift.state = DriftState::Reverted;
        } else if env.spec.drift.action == DriftAction::Revert {
            let reverted = revert(store, writer, env, base, &drift).await?;
            store.decide_drift(&drift.id, DriftState::Open, DriftState::Reverted, "promote", Some(&format!("drift.action: revert; {reverted}")), None).await?;
            line.push_str(&format!("; reverted at once: {reverted}"));
            drift.state = DriftState::Reverted;
        } else {
            line.push_str(&format!("; waiting for a decision: promote drift accept|reject {} --as USER", drift.id));
        }
        if let Some(n) = notifier {
            n.finish_audited(store, None).await?;
        }
        out.push(Looked { environment: env_name, drift: Some(drift), line });
    }
    Ok(out)
}

/// What the pipeline's policies deny of a drifted state (every policy stage's set, over the
/// manifests of the drifted head; input `phase: "drift"`, `environment`, `drift`).
async fn judge(writer: &std::sync::Arc<crate::git::Writer>, plan: &Plan, base: &Path, dest: &Destination, d: &DriftRecord) -> Result<Vec<String>, String> {
    let stages: Vec<crate::model::PolicyStage> = plan.pipeline.stages.iter().filter_map(|s| s.kind.policies().cloned()).collect();
    if stages.is_empty() {
        return Ok(Vec::new());
    }
    let (w, dest, base, file) = (writer.clone(), dest.clone(), base.to_path_buf(), dest.file.clone());
    let head = d.head.clone();
    let input = serde_json::json!({
        "phase": "drift",
        "pipeline": plan.pipeline.name.value,
        "environment": d.environment,
        "drift": {"id": d.id, "head": d.head, "baseline": d.baseline, "commits": d.commits, "rewritten": d.rewritten},
        "stages": {}, "approvals": [],
        "time": jiff::Timestamp::now().to_string(),
    });
    tokio::task::spawn_blocking(move || {
        let (_, manifests) = w.manifests(&dest).map_err(|e| e.to_string())?;
        let mut input = input;
        crate::stages::policies::add_change(&mut input, &file, None, "", &head, &manifests);
        let input = crate::providers::policy::to_value(&input);
        let mut denied = Vec::new();
        for p in &stages {
            let mut diags = crate::diag::Diagnostics::new(file.clone());
            let Some(set) = crate::providers::policy::PolicySet::load(&base, &p.policies, &p.data, &mut diags) else {
                return Err(diags.into_sorted().iter().map(|d| d.to_string()).collect::<Vec<_>>().join("; "));
            };
            denied.extend(set.evaluate(input.clone())?.deny);
        }
        Ok(denied)
    })
    .await
    .map_err(|e| e.to_string())?
}

fn short(id: &str) -> &str {
    &id[..id.len().min(10)]
}

/// Restores the last approved state's files in a new commit: on the branch itself, or through
/// a pull request where the environment is protected (`pullRequest`), which nothing bypasses.
async fn revert(
    store: &Store,
    writer: &std::sync::Arc<crate::git::Writer>,
    env: &crate::model::Environment,
    base: &Path,
    d: &DriftRecord,
) -> Result<String, OpsError> {
    let Some(to) = d.baseline.clone() else { return Err(OpsError::Refused(format!("drift {} has no approved state to go back to", d.id))) };
    let dest = Destination::of(env, base);
    let request = match &env.spec.pull_request {
        Some(spec) => Some(
            crate::stages::pull_request::Request::of(spec, &d.pipeline, &d.environment, &dest.branch, base, &format!("revert-{}", crate::clock::now_ms()))
                .map_err(|e| OpsError::Refused(e.to_string()))?,
        ),
        None => None,
    };
    let (w, key, p, e, reverts, branch) = (
        writer.clone(),
        store.key().clone(),
        d.pipeline.clone(),
        d.environment.clone(),
        d.commits.iter().map(|c| c.id.clone()).collect::<Vec<_>>(),
        request.as_ref().map(|r| r.branch.clone()),
    );
    let to2 = to.clone();
    let report = tokio::task::spawn_blocking(move || {
        let why = crate::git::RevertFor::Drift { reverts: &reverts };
        match &branch {
            Some(b) => w.revert_to_via_branch(&dest, b, &key, &p, &e, &to2, why),
            None => w.revert_to(&dest, &key, &p, &e, &to2, why),
        }
    })
    .await
    .map_err(|e| OpsError::Stopped(format!("the git writer stopped: {e}")))??;
    let done = match &report.outcome {
        Outcome::Committed(w) => format!("commit {} restores the files of {}", short(&w.commit.to_string()), short(&to)),
        Outcome::AlreadyDone { commit } => format!("already restored in {}", short(&commit.to_string())),
        Outcome::Unchanged { .. } => format!("the branch already holds the files of {}", short(&to)),
    };
    match (&request, &report.outcome) {
        (Some(r), Outcome::Committed(_)) => crate::stages::pull_request::propose_rollback(r, &d.environment, &format!("revert of drift {}", d.id))
            .await
            .map(|(_, line)| line)
            .map_err(|e| OpsError::Refused(format!("the revert commit is on {}, but its request could not be opened: {e}", r.branch))),
        _ => Ok(done),
    }
}

/// Whether `user` may decide drift in `env` (its `drift.approvers`; none: any user of the users
/// file, or anyone without one).
pub fn may_decide(env: &crate::model::Environment, users: Option<&crate::governance::users::Users>, user: &str) -> Result<(), String> {
    let approvers = &env.spec.drift.approvers;
    if crate::governance::may_act(approvers, users, user) {
        return Ok(());
    }
    let who: Vec<&str> = approvers.iter().map(|a| a.value.as_str()).collect();
    Err(format!(
        "{user} may not decide drift in `{}` (drift.approvers: {})",
        env.name.value,
        if who.is_empty() { "any user of the users file".to_string() } else { who.join(", ") }
    ))
}

/// A person's decision on a drift.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Keep it: it becomes the state the next promotion builds on.
    Accept,
    /// Revert it: a new commit restores the last approved state's files.
    Reject,
}

/// Who decides.
pub struct Decision<'a> {
    /// The drift.
    pub id: &'a str,
    /// Accept or reject.
    pub verdict: Verdict,
    /// Why (required to reject).
    pub reason: Option<&'a str>,
    /// Who: a person the server vouched for (the environment's `drift.approvers` or the
    /// pipeline's admins), or a local command's user (the approvers; none listed: any user of the
    /// users file), with their token.
    pub caller: Caller<'a>,
}

/// Accepts or rejects an open drift of `plan`'s pipeline; a rejection reverts. Of concurrent
/// decisions on one drift exactly one is taken ([`OpsError::Conflict`] for the others): the
/// decision is claimed by a conditional write before anything is reverted.
pub async fn decide(store: &Store, writer: &std::sync::Arc<crate::git::Writer>, plan: &Plan, base: &Path, d: &Decision<'_>) -> Result<String, OpsError> {
    let refuse = |m: String| Err(OpsError::Refused(m));
    let Some(drift) = store.drift(d.id).await? else {
        return refuse(format!("no drift `{}` (promote drift list shows them)", d.id));
    };
    if drift.pipeline != plan.pipeline.name.value {
        return refuse(format!("drift {} is of pipeline {}, not {}", drift.id, drift.pipeline, plan.pipeline.name.value));
    }
    let decided = |drift: &DriftRecord| {
        OpsError::Conflict(format!(
            "drift {} is {} already{}",
            drift.id,
            drift.state,
            drift.decided_by.as_deref().map(|u| format!(" (by {u})")).unwrap_or_default()
        ))
    };
    let Some(env) = plan.pipeline.environments.iter().find(|e| e.name.value == drift.environment) else {
        return refuse(format!("pipeline {} has no environment `{}` any more", drift.pipeline, drift.environment));
    };
    let users = crate::governance::users_of(&plan.pipeline, base).map_err(|e| OpsError::Refused(format!("the users file: {e}")))?;
    match d.caller {
        Caller::Person(_) => {
            let what = format!("decide drift in `{}`", env.name.value);
            super::access::allow_listed(&plan.pipeline, &env.spec.drift.approvers, "drift.approvers", &what, &d.caller)?;
        }
        Caller::Local { user, .. } => {
            if let Err(why) = may_decide(env, users.as_ref(), user) {
                return refuse(why);
            }
            super::decide::prove(&d.caller, users.as_ref())?;
        }
    }
    // Who may, first: the state of a drift is not told to who may not decide it.
    if drift.state != DriftState::Open {
        return Err(decided(&drift));
    }
    if d.verdict == Verdict::Reject && d.reason.is_none_or(|r| r.trim().is_empty()) {
        return refuse("rejecting a drift needs a reason".into());
    }
    if d.reason.is_some_and(|r| r.len() > super::decide::MAX_REASON) {
        return refuse(format!("the reason is at most {} bytes", super::decide::MAX_REASON));
    }
    let user = d.caller.login();
    let reason = d.reason.map(String::from);
    let via = super::decide::vouched(&d.caller);
    let again = || async {
        Ok::<_, OpsError>(store.drift(d.id).await?.map(|x| decided(&x)).unwrap_or_else(|| OpsError::Conflict(format!("drift {} was decided already", d.id))))
    };
    match d.verdict {
        Verdict::Accept => {
            if !store.decide_drift(&drift.id, DriftState::Open, DriftState::Accepted, user, reason.as_deref(), via.as_deref()).await? {
                return Err(again().await?);
            }
            Ok(format!("drift {} in {} accepted by {user}: the next promotion builds on {}", drift.id, drift.environment, short(&drift.head)))
        }
        Verdict::Reject => {
            // Claimed first: a concurrent accept or reject finds it `rejecting` and is refused.
            if !store.decide_drift(&drift.id, DriftState::Open, DriftState::Rejecting, user, reason.as_deref(), via.as_deref()).await? {
                return Err(again().await?);
            }
            let done = match revert(store, writer, env, base, &drift).await {
                Ok(done) => done,
                Err(e) => {
                    // Open again, so that it can be decided once the cause is fixed.
                    store
                        .decide_drift(&drift.id, DriftState::Rejecting, DriftState::Open, user, Some(&format!("the revert failed: {e}")), via.as_deref())
                        .await?;
                    return Err(e);
                }
            };
            let reason = format!("{}; {done}", reason.unwrap_or_default());
            store.decide_drift(&drift.id, DriftState::Rejecting, DriftState::Rejected, user, Some(&reason), via.as_deref()).await?;
            Ok(format!("drift {} in {} rejected by {user}: {done}", drift.id, drift.environment))
        }
    }
}
