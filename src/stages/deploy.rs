//! `deploy`: takes the environment (one promotion at a time), then writes the promotion commit
//! through the git writer. Idempotent: a resumed deploy finds its own commit.

pub use settings::DeployStage;

use serde::{Deserialize, Serialize};

use super::{StageContext, StageError, Step, Wait, Wake};
use crate::git::{Destination, Outcome, Promotion};
use crate::store::{DriftState, EntryKind, LockState};

/// What a deploy leaves as its output: stored with the stage as JSON (camelCase, the form the API,
/// the pages and policies' `input.stages` show) and read back by the watch, the pages, the report
/// and the DORA figures through [`DeployOutput::of`]. The one contract for a deploy's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeployOutput {
    /// The environment deployed to.
    pub environment: String,
    /// What the deploy did.
    pub outcome: DeployOutcome,
    /// The promotion commit (none when the environment already held the value).
    #[serde(default)]
    pub commit: Option<String>,
    /// The value the environment held before (a commit written now).
    #[serde(default)]
    pub old_value: Option<String>,
    /// The value the environment holds now.
    pub new_value: String,
    /// Pushes tried (a push that lost a race is tried again).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u32>,
    /// The head adopted as the environment's approved state (first run, found at its version).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adopted: Option<String>,
    /// When the commit landed, in ms (where DORA's lead time ends).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub committed_at: Option<i64>,
    /// The policies' warnings on the commit.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policy_warnings: Vec<String>,
    /// Who broke the glass of a frozen environment for this deploy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub break_glass: Option<BreakGlass>,
    /// The request the promotion was merged through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_request: Option<super::pull_request::Shown>,
    /// The commit written on the request's branch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch_commit: Option<String>,
    /// What the health checks saw.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthSeen>,
}

/// What a deploy did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DeployOutcome {
    /// Wrote and pushed the promotion commit.
    Committed,
    /// Found its own commit (a resumed deploy).
    AlreadyDone,
    /// The environment already held the value: nothing written.
    Unchanged,
    /// The promotion was merged through a pull request.
    Merged,
}

impl DeployOutcome {
    /// A commit of this deploy landed now (pushed or merged): a deployment for DORA.
    pub fn landed_now(self) -> bool {
        matches!(self, Self::Committed | Self::Merged)
    }

    /// The environment holds a commit of this deploy (landed now or found from before).
    pub fn holds_commit(self) -> bool {
        self != Self::Unchanged
    }
}

/// A freeze overridden for one deploy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BreakGlass {
    /// Who broke the glass.
    pub user: String,
    /// Why.
    #[serde(default)]
    pub reason: Option<String>,
    /// The freeze window overridden.
    pub window: String,
}

/// What the health checks saw: each check healthy, or why the deploy is not healthy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum HealthSeen {
    /// Every check, as it was seen healthy.
    Healthy(Vec<String>),
    /// Why it is not healthy.
    Unhealthy(String),
}

impl DeployOutput {
    /// A stored stage output read as a deploy's (`None` for another kind's, or none).
    pub fn of(output: Option<&serde_json::Value>) -> Option<Self> {
        output.and_then(|o| Self::deserialize(o).ok())
    }

    /// As stored.
    pub fn to_value(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("a deploy output is plain data")
    }
}

/// Promotes the run's version into the stage's environment: waits while another run holds the
/// environment (woken when that run ends) or while it is frozen (woken by a break-glass, or at
/// the window's end), then commits.
pub async fn run(d: &DeployStage, ctx: &StageContext) -> Result<Step, StageError> {
    let env_name = &d.environment.value;
    let Some(env) = ctx.plan.deploy_environment(ctx.index) else {
        return Err(StageError::Terminal(format!("`{env_name}` is not an environment of this pipeline")));
    };
    // One run at a time, in the order of the runs (see docs/pipeline-reference.md, "Order"); the
    // words of the wait stay the same while it waits, so that it is recorded once.
    let supersede = d.supersede.unwrap_or_else(|| ctx.plan.gating_approvals(ctx.index).is_empty());
    match ctx.store.lock_environment(env_name, &ctx.run.pipeline, &ctx.run.id, supersede).await? {
        LockState::Taken => {}
        LockState::Queued { next, until, .. } => {
            // Woken when the run that goes next lets it go (or ends), or at its lease's end: one
            // whose driver died is passed over then.
            let why = format!("waiting its turn for `{env_name}` (`promote status` shows who holds it)");
            return Ok(Step::Wait(Wait { why, wake: Wake::Turn(next), until: Some(until + 1), notify: None }));
        }
        LockState::Superseded { by } => {
            return Err(StageError::Superseded(format!("superseded by run {by}, a newer run of the pipeline, while queued for `{env_name}`")));
        }
    }
    // An environment never goes back to an older run's version (a rollback does that). A run
    // whose driver died after its push and before recording it finds its own commit under the
    // newer one: its promotion happened, and is recorded at its commit's time.
    let mut pushed_at = None;
    if let Some((last, version)) = ctx.store.last_promotion(&ctx.run.pipeline, env_name).await?
        && last != ctx.run.id
        && ctx.plan.pipeline.order.newer((&last, &version), (&ctx.run.id, &ctx.run.version))
    {
        match own_commit(ctx, env, env_name).await? {
            Some(at) => pushed_at = Some(at),
            None => {
                return Err(StageError::Superseded(format!(
                    "`{env_name}` holds {version} from run {last}, newer than this run's {}: an environment never goes back (`promote rollback` does that)",
                    ctx.run.version
                )));
            }
        }
    }
    // An undecided drift of the environment holds its promotions (woken by its decision), and one
    // whose rejection is reverting it (the promotion lands on top of the revert, never under it).
    let undecided = |state| crate::store::DriftFilter { pipeline: Some(&ctx.run.pipeline), environment: Some(env_name), state: Some(state), id: None };
    let rejecting = ctx.store.drifts(undecided(DriftState::Rejecting)).await?.into_iter().next();
    if let Some(d) = rejecting {
        let why = format!("`{env_name}` is being reverted to undo drift {}", d.id);
        return Ok(Step::Wait(Wait { why, wake: Wake::DriftDecided, until: Some(crate::clock::now_ms() + 5_000), notify: None }));
    }
    if env.spec.drift.block_promotions
        && let Some(d) = ctx.store.drifts(undecided(DriftState::Open)).await?.into_iter().next()
    {
        let why = format!("`{env_name}` has an undecided drift ({}): promote drift accept|reject {} --as USER decides it", d.describe(), d.id);
        return Ok(Step::Wait(Wait { why, wake: Wake::DriftDecided, until: Some(crate::clock::now_ms() + 60_000), notify: None }));
    }
    // A version whose watch failed is not promoted again until a person clears it.
    if let Some(w) = ctx.store.held(&ctx.run.pipeline, &ctx.run.version).await? {
        return Err(StageError::Terminal(held(&w)));
    }
    let stage = ctx.stage().name.value.clone();
    let break_glass = match &env.spec.freeze {
        Some(f) => match freeze_gate(f, ctx, env_name).await? {
            Gate::Open(bg) => bg,
            Gate::Frozen(w) => return Ok(Step::Wait(w)),
        },
        None => None,
    };
    let run = ctx.run.clone();
    let pipeline = ctx.plan.pipeline.name.value.clone();
    let value = ctx.deploy_value(env)?;
    let dest = Destination::of(env, &ctx.base_dir);
    // Through a pull request: a request an earlier attempt opened decides (its branch may be
    // gone once merged), and the stage stays waiting while it is open; else the commit goes on
    // the request's branch.
    let request = match &env.spec.pull_request {
        Some(spec) => Some(super::pull_request::Request::new(spec, ctx, env_name, &dest.branch)?),
        None => None,
    };
    if let Some(r) = &request
        && let Some(number) = r.recorded(ctx).await?
    {
        return merged(r, number, d, ctx, env_name, &value, &pipeline, break_glass, None).await;
    }
    // Past the lock and the freeze: running again, if it waited for either.
    ctx.resumed().await?;
    let via = request.as_ref().map(|r| r.branch.clone());
    // Everyone who approved an approval stage of this run gated this promotion: `Name <email>`
    // from the users file.
    let users = ctx.people()?;
    let mut approved_by = Vec::new();
    for i in ctx.plan.gating_approvals(ctx.index) {
        for decision in ctx.store.decisions(&run.id, &ctx.plan.pipeline.stages[i].name.value).await? {
            let signed = users.as_ref().map_or(decision.user.clone(), |u| u.signature(&decision.user));
            if decision.approve && !approved_by.contains(&signed) {
                approved_by.push(signed);
            }
        }
    }
    // Every policy of the pipeline judges the commit before it is pushed.
    let sets = super::policies::compiled(ctx).await?;
    let base = super::policies::input_base(ctx, "commit", Some(env_name)).await?;
    let checked = !sets.is_empty();
    let writer = ctx.writer.clone();
    let (run2, env2, stage2, value2) = (run.clone(), env_name.clone(), stage.clone(), value.clone());
    let pipeline2 = pipeline.clone();
    let key = ctx.store.key().clone();
    let report = tokio::task::spawn_blocking(move || {
        let check = super::policies::commit_check(sets.iter().map(|(_, s)| s), &base);
        let p = Promotion {
            pipeline: &pipeline2,
            environment: &env2,
            run: &run2.id,
            stage: &stage2,
            version: &run2.version,
            value: &value2,
            approved_by: &approved_by,
            check: checked.then_some(crate::git::CommitCheck(&check)),
            seal: Some(&key),
        };
        match &via {
            Some(branch) => writer.promote_via_branch(&dest, branch, &p),
            None => writer.promote(&dest, &p),
        }
    })
    .await
    .map_err(|e| StageError::Transient(format!("the git writer stopped: {e}")))?;
    let report = match report {
        Ok(r) => r,
        Err(e @ crate::git::GitError::Refused(_)) => {
            ctx.store.audit(Some(&run.id), Some(&stage), EntryKind::Policy, "promote", &format!("commit to `{env_name}` refused: {e}")).await?;
            return Err(StageError::Terminal(e.to_string()));
        }
        Err(e @ crate::git::GitError::HistoryRewritten(_)) => {
            ctx.store.audit(Some(&run.id), Some(&stage), EntryKind::HistoryRewrite, "promote", &e.to_string()).await?;
            return Err(StageError::Terminal(e.to_string()));
        }
        Err(e) if e.is_transient() => return Err(StageError::Transient(e.to_string())),
        Err(e) => return Err(StageError::Terminal(e.to_string())),
    };
    if checked && matches!(report.outcome, Outcome::Committed(_)) {
        let d = crate::providers::policy::Decision { deny: vec![], warn: report.warnings.clone() };
        ctx.store
            .audit(
                Some(&run.id),
                Some(&stage),
                EntryKind::Policy,
                "promote",
                &format!("commit: {}", super::policies::describe(&d, Some(env_name))),
            )
            .await?;
    }
    if let Some(r) = &request
        && !matches!(report.outcome, Outcome::Unchanged { .. })
    {
        let body = super::pull_request::body(ctx).await?;
        let number = r.open(ctx, env_name, &body).await?;
        let on_branch = match &report.outcome {
            Outcome::Committed(w) => Some(w.commit.to_string()),
            Outcome::AlreadyDone { commit } => Some(commit.to_string()),
            Outcome::Unchanged { .. } => None,
        };
        return merged(r, number, d, ctx, env_name, &value, &pipeline, break_glass, on_branch).await;
    }
    let (outcome, commit, old_value) = match &report.outcome {
        Outcome::Committed(w) => (DeployOutcome::Committed, Some(w.commit.to_string()), w.old_value.clone()),
        Outcome::AlreadyDone { commit } => (DeployOutcome::AlreadyDone, Some(commit.to_string()), None),
        Outcome::Unchanged { .. } => (DeployOutcome::Unchanged, None, None),
    };
    let mut out = DeployOutput {
        environment: env_name.clone(),
        outcome,
        commit,
        old_value,
        new_value: value.clone(),
        attempts: Some(report.attempts),
        adopted: None,
        committed_at: None,
        policy_warnings: report.warnings.clone(),
        break_glass,
        pull_request: None,
        branch_commit: None,
        health: None,
    };
    match pushed_at {
        Some(at) => ctx.store.promoted_at(&pipeline, env_name, &run.id, &run.version, at).await?,
        None => ctx.store.promoted(&pipeline, env_name, &run.id, &run.version, false).await?,
    }
    if outcome == DeployOutcome::Unchanged {
        out.adopted = adopt(ctx, env, &value).await?;
    }
    if outcome == DeployOutcome::Committed {
        // Where DORA's lead time ends (the stage's own end may come later, after health).
        out.committed_at = Some(crate::clock::now_ms());
        // What watched the release before this one watches no more.
        ctx.store.supersede_watches(&pipeline, env_name, &format!("the promotion of {} by run {}", run.version, run.id)).await?;
    }
    healthy(d, ctx, out).await
}

/// When this run's stage already stands on the environment's branch (sealed by promote, holding
/// this run's value): its commit's time.
async fn own_commit(ctx: &StageContext, env: &crate::model::Environment, env_name: &str) -> Result<Option<i64>, StageError> {
    let value = ctx.deploy_value(env)?;
    let (writer, key, dest) = (ctx.writer.clone(), ctx.store.key().clone(), Destination::of(env, &ctx.base_dir));
    let (run, stage, pipeline, env_name) = (ctx.run.clone(), ctx.stage().name.value.clone(), ctx.plan.pipeline.name.value.clone(), env_name.to_string());
    let found = tokio::task::spawn_blocking(move || {
        let p = Promotion {
            pipeline: &pipeline,
            environment: &env_name,
            run: &run.id,
            stage: &stage,
            version: &run.version,
            value: &value,
            approved_by: &[],
            check: None,
            seal: Some(&key),
        };
        writer.promoted_commit(&dest, &p)
    })
    .await
    .map_err(|e| StageError::Transient(format!("the git writer stopped: {e}")))?;
    match found {
        Ok(found) => Ok(found.map(|(_, at)| at)),
        Err(e) if e.is_transient() => Err(StageError::Transient(e.to_string())),
        Err(e) => Err(StageError::Terminal(e.to_string())),
    }
}

/// An environment found already at its version, where promote has never written or accepted a
/// state (its first run: "qa already at 1.0.0"), is adopted: its head is recorded as an approved
/// state (an accepted drift by `promote`, with its entry), so that drift is watched from now on
/// rather than from its next real promotion. `Some(head)` when it was adopted now.
async fn adopt(ctx: &StageContext, env: &crate::model::Environment, value: &str) -> Result<Option<String>, StageError> {
    if env.spec.drift.action == crate::model::DriftAction::Ignore {
        return Ok(None);
    }
    let (pipeline, env_name) = (ctx.plan.pipeline.name.value.clone(), env.name.value.clone());
    let known = ctx.store.drifts(crate::store::DriftFilter { pipeline: Some(&pipeline), environment: Some(&env_name), ..Default::default() }).await?;
    let accepted: Vec<String> = known.iter().filter(|d| d.state == DriftState::Accepted).map(|d| d.head.clone()).collect();
    let (w, key, dest, p) = (ctx.writer.clone(), ctx.store.key().clone(), Destination::of(env, &ctx.base_dir), pipeline.clone());
    let scan = tokio::task::spawn_blocking(move || w.scan(&dest, &key, &p, &accepted))
        .await
        .map_err(|e| StageError::Transient(format!("the git writer stopped: {e}")))?
        .map_err(|e| StageError::Transient(format!("looking at `{env_name}` for its approved state: {e}")))?;
    if scan.baseline.is_some() || scan.rewritten.is_some() || known.iter().any(|d| d.head == scan.head) {
        return Ok(None);
    }
    let reason = format!("adopted: {env_name} already held {value} when run {} deployed {}; drift is judged from this state", ctx.run.id, ctx.run.version);
    let drift = crate::store::DriftRecord {
        id: format!("d-{}", ulid::Ulid::new()),
        pipeline,
        environment: env_name,
        head: scan.head.clone(),
        baseline: None,
        commits: Vec::new(),
        diff: String::new(),
        rewritten: false,
        state: DriftState::Accepted,
        decided_by: Some("promote".into()),
        reason: Some(reason),
        at: crate::clock::now_ms(),
        decided_at: Some(crate::clock::now_ms()),
        seal: None,
    };
    Ok(ctx.store.record_drift(drift).await?.is_none().then_some(scan.head))
}

/// Waits for the deploy's health checks (if any) on its commit, then the stage is done with `out`.
async fn healthy(d: &DeployStage, ctx: &StageContext, mut out: DeployOutput) -> Result<Step, StageError> {
    let (commit, value) = (out.commit.clone(), out.new_value.clone());
    let variables = ctx.variables_for(&d.environment.value);
    let vars = |n: &str| variables.get(n).map(String::as_str);
    if let Some(h) = &d.health {
        let url = match &h.http {
            Some(x) => {
                Some(crate::model::interpolate(&x.url.value, vars).map_err(|v| StageError::Terminal(format!("health url: `${{{v}}}` has no value here")))?)
            }
            None => None,
        };
        match wait_healthy(h, ctx, commit.as_deref(), &value, url).await {
            Ok(seen) => out.health = Some(HealthSeen::Healthy(seen)),
            Err(why) => {
                // The commit stays (a rollback reverts it); the evidence says what was seen.
                let message = format!("committed {}, but not healthy: {why}", commit.as_deref().map_or("nothing", |c| &c[..c.len().min(10)]));
                out.health = Some(HealthSeen::Unhealthy(why));
                return Err(StageError::Verdict { message, evidence: out.to_value() });
            }
        }
    }
    Ok(Step::Done(out.to_value()))
}

/// A deploy through request `number`: waits until it is merged, then the merge commit is the
/// promotion (recorded, watched, health-checked as a pushed commit would be).
#[allow(clippy::too_many_arguments)]
async fn merged(
    r: &super::pull_request::Request,
    number: u64,
    d: &DeployStage,
    ctx: &StageContext,
    env_name: &str,
    value: &str,
    pipeline: &str,
    break_glass: Option<BreakGlass>,
    on_branch: Option<String>,
) -> Result<Step, StageError> {
    let (sha, shown) = match r.follow(ctx, number).await? {
        super::pull_request::Follow::Merged(sha, shown) => (sha, shown),
        super::pull_request::Follow::Wait(w) => return Ok(Step::Wait(w)),
    };
    ctx.resumed().await?;
    let stage = ctx.stage().name.value.clone();
    ctx.store
        .audit(Some(&ctx.run.id), Some(&stage), EntryKind::PullRequest, "promote", &format!("#{number} merged into `{}` as {sha}", r.base))
        .await?;
    ctx.store.supersede_watches(pipeline, env_name, &format!("the promotion of {} by run {}", ctx.run.version, ctx.run.id)).await?;
    ctx.store.promoted(pipeline, env_name, &ctx.run.id, &ctx.run.version, false).await?;
    let out = DeployOutput {
        environment: env_name.to_string(),
        outcome: DeployOutcome::Merged,
        commit: Some(sha),
        old_value: None,
        new_value: value.to_string(),
        attempts: None,
        adopted: None,
        committed_at: Some(crate::clock::now_ms()),
        policy_warnings: Vec::new(),
        break_glass,
        pull_request: Some(shown),
        branch_commit: on_branch,
        health: None,
    };
    healthy(d, ctx, out).await
}

/// Why a held version is not promoted, and what clears it.
pub fn held(w: &crate::store::WatchRecord) -> String {
    format!(
        "{} {} is held: its watch in `{}` failed ({}); `promote watch clear {} --as USER --reason TEXT` lets it be promoted again",
        w.pipeline,
        w.version,
        w.environment,
        w.message.as_deref().unwrap_or("reverted"),
        w.id
    )
}

/// Whether a frozen environment lets the deploy through.
enum Gate {
    /// Not frozen, or the glass was broken (who, why, which window).
    Open(Option<BreakGlass>),
    /// Frozen: wait for a break-glass or the window's end.
    Frozen(Wait),
}

/// Holds the deploy while its environment is frozen (or fails it, with `onFreeze: fail`) until the
/// window ends or someone allowed breaks the glass for this run and stage.
async fn freeze_gate(f: &crate::model::Freeze, ctx: &StageContext, env: &str) -> Result<Gate, StageError> {
    use crate::governance::freeze::Windows;
    let mut diags = crate::diag::Diagnostics::new(ctx.run.file.clone());
    let Some(windows) = Windows::parse(f, &mut diags) else {
        return Err(StageError::Terminal(format!(
            "freeze of `{env}` does not parse: {}",
            diags.into_sorted().iter().map(|d| d.to_string()).collect::<Vec<_>>().join("; ")
        )));
    };
    let stage = ctx.stage().name.value.clone();
    let Some(frozen) = windows.active(crate::clock::now()) else { return Ok(Gate::Open(None)) };
    if let Some(d) = ctx.store.decisions(&ctx.run.id, &stage).await?.into_iter().find(|d| d.approve) {
        return Ok(Gate::Open(Some(BreakGlass { user: d.user, reason: d.comment, window: frozen.name.clone() })));
    }
    let why = format!(
        "`{env}` is frozen ({}) until {}; `promote break-glass {} {stage} --as USER --reason TEXT` overrides it",
        frozen.name,
        frozen.until.to_zoned(jiff::tz::TimeZone::get(&f.timezone.value).unwrap_or(jiff::tz::TimeZone::UTC)).strftime("%Y-%m-%d %H:%M %Z"),
        ctx.run.id
    );
    if f.on_freeze == crate::model::OnFreeze::Fail {
        ctx.notify("freeze", Some(&stage), &why);
        return Err(StageError::Terminal(format!("{why}; nothing was committed (onFreeze: fail)")));
    }
    Ok(Gate::Frozen(Wait { why, wake: Wake::Decision, until: Some(frozen.until.as_millisecond()), notify: Some(EntryKind::Freeze) }))
}

/// Waits until every health check given is healthy; fails at `health.timeout` (saying what each
/// check saw last) or as soon as one cannot become healthy.
async fn wait_healthy(h: &crate::model::Health, ctx: &StageContext, commit: Option<&str>, value: &str, url: Option<String>) -> Result<Vec<String>, String> {
    use crate::providers::kubernetes::{self, Health};
    let deadline = tokio::time::Instant::now() + h.timeout.0;
    // Each check asks the cluster of its own context.
    let argo = match &h.argocd {
        Some(a) => Some(kubernetes::client_for(a.context.as_deref()).await.map_err(|e| e.to_string())?),
        None => None,
    };
    let kube = match &h.kubernetes {
        Some(d) => Some(kubernetes::client_for(d.context.as_deref()).await.map_err(|e| e.to_string())?),
        None => None,
    };
    // Argo CD told at once that Git moved (a refused refresh is said, not fatal: its next poll
    // sees the commit all the same).
    let mut refreshed = None;
    if let (Some(a), Some(k), Some(_)) = (&h.argocd, &argo, commit)
        && a.refresh
    {
        refreshed = Some(match kubernetes::refresh_argocd(k, &a.namespace, &a.application).await {
            Ok(()) => format!("argocd {}: refresh asked after the commit", a.application),
            Err(e) => format!("argocd {}: refresh not asked ({e}); Argo CD's next poll sees the commit", a.application),
        });
    }
    let mut said_waiting = false;
    loop {
        let mut seen = Vec::new();
        let mut waiting = Vec::new();
        if let (Some(x), Some(url)) = (&h.http, &url) {
            match crate::providers::http_ok(url, x.expect, ctx.poll.max(std::time::Duration::from_secs(5))).await {
                None => seen.push(format!("http: {url} answered {}", x.expect)),
                Some(why) => waiting.push(format!("http: {why}")),
            }
        }
        let mut judge = |what: &str, r: Result<Health, kubernetes::KubeError>| -> Result<(), String> {
            match r {
                Ok(Health::Healthy(s)) => seen.push(format!("{what}: {s}")),
                Ok(Health::Progressing(s)) => waiting.push(format!("{what}: {s}")),
                Ok(Health::Failed(s)) => return Err(format!("{what}: {s}")),
                Err(e) => waiting.push(format!("{what}: {e}")),
            }
            Ok(())
        };
        if let (Some(a), Some(k)) = (&h.argocd, &argo) {
            judge(&format!("argocd {}", a.application), kubernetes::argocd(k, &a.namespace, &a.application, commit).await)?;
        }
        if let (Some(d), Some(k)) = (&h.kubernetes, &kube) {
            judge(&format!("deployment {}/{}", d.namespace, d.deployment), kubernetes::deployment(k, &d.namespace, &d.deployment, value).await)?;
        }
        if waiting.is_empty() {
            if said_waiting {
                ctx.resumed().await.map_err(|e| e.to_string())?;
            }
            seen.extend(refreshed);
            return Ok(seen);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!("health not reached within {}: {}", crate::clock::humanize(h.timeout.0), waiting.join("; ")));
        }
        if !said_waiting {
            ctx.waiting(&format!("health: {}", waiting.join("; "))).await.map_err(|e| e.to_string())?;
            said_waiting = true;
        }
        tokio::time::sleep(ctx.poll.min(deadline.saturating_duration_since(tokio::time::Instant::now()))).await;
    }
}

impl super::Run for crate::model::DeployStage {
    // The explicit form promises `Send`, which the engine's tasks need.
    #[allow(clippy::manual_async_fn)]
    fn run<'a>(&'a self, ctx: &'a StageContext) -> impl std::future::Future<Output = Result<Step, StageError>> + Send + 'a {
        run(self, ctx)
    }
    fn deployed(&self, output: &serde_json::Value) -> Option<DeployOutput> {
        DeployOutput::of(Some(output))
    }
    fn describe(&self, output: &serde_json::Value) -> String {
        let Some(o) = DeployOutput::of(Some(output)) else { return String::new() };
        let (env, value) = (&o.environment, &o.new_value);
        let line = match (o.outcome, o.commit.as_deref()) {
            (DeployOutcome::Committed, Some(c)) => format!("{env} -> {value} in {}", super::short(c)),
            (DeployOutcome::AlreadyDone, Some(c)) => format!("{env}: already promoted in {}", super::short(c)),
            (DeployOutcome::Merged, Some(c)) => {
                let pr = o.pull_request.as_ref().map(|p| format!(" (request #{})", p.number)).unwrap_or_default();
                format!("{env} -> {value} in {}, merged{pr}", super::short(c))
            }
            _ => format!("{env} already at {value}"),
        };
        let warnings = o.policy_warnings.len();
        let warned = if warnings > 0 { format!(" ({} from policy)", crate::diag::plural(warnings, "warning")) } else { String::new() };
        let glass = o.break_glass.map(|b| format!("; freeze overridden by {}", b.user)).unwrap_or_default();
        format!("{line}{warned}{glass}")
    }
}

/// The kind's settings as the pipeline file writes them under `deploy:`, what the kind says of itself
/// (`model::Kind`) and its own checks (`plan::Checks`): with its runner above, the kind in one place.
mod settings {
    use serde::{Deserialize, Serialize};

    use crate::diag::Diagnostics;

    use crate::model::*;
    use crate::plan::Checks;
    use crate::plan::checks::*;

    /// `deploy`: writes the promotion commit into an environment repo, then optionally waits for health.
    #[derive(Debug, Clone, Serialize, Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    pub struct DeployStage {
        /// The environment (a key of `environments`) to promote into.
        pub environment: Spanned<String>,
        /// What must be healthy after the commit before the stage succeeds.
        #[serde(default)]
        pub health: Option<Health>,
        /// How the release keeps being judged after the run (replaces the environment's `watch`).
        #[serde(default)]
        pub watch: Option<Box<Watch>>,
        /// Whether this run, once it reaches the deploy, supersedes the older runs of the pipeline
        /// queued for the environment (they end `superseded`; only the newest is promoted). Default:
        /// true when no approval stage is upstream of this deploy (nobody signed the older runs off).
        #[serde(default)]
        pub supersede: Option<bool>,
    }

    impl DeployStage {
        /// The watch this deploy's releases get: its own, else its environment's.
        pub fn watch_in<'a>(&'a self, env: &'a crate::model::Environment) -> Option<&'a Watch> {
            self.watch.as_deref().or(env.spec.watch.as_deref())
        }
    }

    impl Kind for DeployStage {
        const NAME: &'static str = "deploy";
        const SHAPE: (&'static str, &'static str) = ("[/\"", "\"/]");
        fn summary(&self) -> String {
            format!("deploy → {}", self.environment.value)
        }
        fn promotes(&self) -> Option<&DeployStage> {
            Some(self)
        }
    }

    impl Checks for DeployStage {
        #[allow(clippy::neg_cmp_op_on_partial_ord)]
        fn check(&self, _stage: &Stage, diags: &mut Diagnostics) {
            let d = self;
            if let Some(h) = d.health.as_ref().and_then(|h| h.http.as_ref()) {
                check_http_url(&h.url, "url", diags);
            }
        }
    }

    impl crate::governance::Govern for DeployStage {}
}
