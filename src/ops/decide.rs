//! Deciding: approve, reject, break a freeze's glass. Who may decide what, the token check, the
//! decision and its audit entry, the notification; one function for the CLI and the server.

use super::OpsError;
use super::access::Caller;
use crate::diag::did_you_mean;
use crate::model::{ApprovalStage, DecidedBy};
use crate::stages::{ApprovalCheck, check_approver};
use crate::store::{RunState, StageState, Store};

/// What a person decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Approve an approval stage (or an inconclusive analysis).
    Approve,
    /// Reject it (a reason is required).
    Reject,
    /// Override the freeze of a deploy stage's environment for this run (a reason is required).
    BreakGlass,
}

/// A decision asked for.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    /// The run.
    pub run: &'a str,
    /// The stage.
    pub stage: &'a str,
    /// What.
    pub mode: Mode,
    /// The comment (approve) or the reason (reject, break-glass).
    pub comment: Option<&'a str>,
    /// Who decides: a person the server vouched for, or a local command's `--as` user (proven by
    /// their token against the pipeline's users file when it gives tokens).
    pub caller: Caller<'a>,
}

/// The users a rule is judged over: the pipeline's users file for a local caller, the person
/// (as the server's directory and their IdP describe them) for one the server vouched for.
pub(super) fn users_for(caller: &Caller<'_>, file: Option<crate::governance::Users>) -> Option<crate::governance::Users> {
    match caller {
        Caller::Local { .. } => file,
        Caller::Person(p) => Some(p.as_users()),
    }
}

/// Checks a local caller's token against the users file (a person the server vouched for has
/// proven who they are already).
pub(super) fn prove(caller: &Caller<'_>, users: Option<&crate::governance::Users>) -> Result<(), OpsError> {
    match (caller, users) {
        (Caller::Local { user, token }, Some(u)) => u.authenticate(user, *token).map_err(OpsError::Refused),
        _ => Ok(()),
    }
}

/// Records a decision once every rule allows it: a reason where one is needed, a running run, a
/// stage that takes this decision and is not over, a person among its deciders (names, groups,
/// the users file, separation of duties), and the person's token. Returns one line saying what
/// was done. A refusal is [`OpsError::Refused`] and writes nothing.
pub async fn decide(store: &Store, r: &Request<'_>) -> Result<String, OpsError> {
    let (run_id, stage, mode, comment) = (r.run, r.stage, r.mode, r.comment);
    let user = r.caller.login();
    if mode != Mode::Approve && comment.is_none_or(|c| c.trim().is_empty()) {
        return Err(OpsError::Refused(format!("{} needs a reason", if mode == Mode::Reject { "a rejection" } else { "breaking the glass" })));
    }
    if comment.is_some_and(|c| c.len() > MAX_REASON) {
        return Err(OpsError::Refused(format!("a comment or reason is at most {MAX_REASON} bytes")));
    }
    if store.decisions(run_id, stage).await?.iter().any(|d| d.user == user) {
        return Err(OpsError::Conflict(format!("{user} has decided `{stage}` of run {run_id} already: a person's decision is made once")));
    }
    let allowed = rules(store, run_id, stage, &r.caller, mode).await??;
    prove(&r.caller, allowed.users.as_ref())?;
    let (run, pipeline) = (allowed.run, allowed.pipeline);
    let kind = if mode == Mode::BreakGlass { crate::store::EntryKind::BreakGlass } else { crate::store::EntryKind::Decision };
    if !store.decide_as(run_id, stage, user, mode != Mode::Reject, comment, kind, vouched(&r.caller).as_deref()).await? {
        return Err(OpsError::Conflict(format!("{user} has decided `{stage}` of run {run_id} already: a person's decision is made once")));
    }
    if mode == Mode::BreakGlass {
        let notifier = std::sync::Arc::new(crate::governance::notify::Notifier::new(&pipeline.notifications, vec![]).unwrap_or_default());
        let message = format!("{user} broke the glass: {}", r.comment.unwrap_or(""));
        notifier.send(crate::governance::notify::Note::for_run(&run, "break-glass", Some(stage), &message));
        notifier.finish_audited(store, Some(run_id)).await?;
    }
    let what = match mode {
        Mode::Approve => "approved",
        Mode::Reject => "rejected",
        Mode::BreakGlass => "broke the freeze of",
    };
    Ok(format!("{what} `{stage}` of run {run_id} as {user}"))
}

/// The longest comment or reason a person may give (a trail entry is read by people).
pub const MAX_REASON: usize = 4096;

/// Who vouched for a person the server authenticated, for the trail; `None` for a local caller.
pub(super) fn vouched(caller: &Caller<'_>) -> Option<String> {
    match caller {
        Caller::Local { .. } => None,
        Caller::Person(p) => Some(p.via.to_string()),
    }
}

/// Whether `user` may make decision `mode` on `stage` of `run` now, by every rule but the proof
/// of who they are and the reason (what the web pages ask before they show a button; the
/// server checks again when the button is pressed). `Err(why)` when not.
pub async fn may_decide(store: &Store, run: &str, stage: &str, caller: &Caller<'_>, mode: Mode) -> Result<Result<(), OpsError>, OpsError> {
    Ok(rules(store, run, stage, caller, mode).await?.map(|_| ()))
}

/// What the rules found when they allow a decision.
struct Allowed {
    run: crate::store::RunRecord,
    pipeline: crate::model::Pipeline,
    users: Option<crate::governance::users::Users>,
}

async fn rules(store: &Store, run_id: &str, stage: &str, caller: &Caller<'_>, mode: Mode) -> Result<Result<Allowed, OpsError>, OpsError> {
    let user = caller.login();
    let run = match store.run(run_id).await {
        Ok(r) => r,
        Err(e @ crate::store::StoreError::UnknownRun { .. }) => return Ok(Err(OpsError::Refused(e.to_string()))),
        Err(e) => return Err(e.into()),
    };
    if run.state != RunState::Running {
        return Ok(Err(OpsError::Refused(format!("run {run_id} already {}: nothing to decide", run.state))));
    }
    let (pipeline, users) = match load(&run) {
        Ok(l) => l,
        Err(why) => return Ok(Err(OpsError::Refused(why))),
    };
    let users = users_for(caller, users);
    let records = store.stages(run_id).await?;
    // A person who may not view the pipeline is not told who its deciders are.
    let field = if mode == Mode::BreakGlass { "freeze.breakGlass" } else { "approvers" };
    Ok(judge(&run, &pipeline, users.as_ref(), &records, stage, user, mode)
        .map_err(|e| match e {
            OpsError::Forbidden(m) => OpsError::Forbidden(crate::ops::access::refusal_for(&pipeline, caller, field, m)),
            other => other,
        })
        .map(|()| Allowed { run, pipeline, users }))
}

/// The pipeline stored with a run and its users file.
fn load(run: &crate::store::RunRecord) -> Result<(crate::model::Pipeline, Option<crate::governance::users::Users>), String> {
    let mut diags = crate::diag::Diagnostics::new(run.file.clone());
    let Some(pipeline) = crate::model::load(&run.source, &mut diags) else { return Err(format!("the pipeline stored with run {} does not load", run.id)) };
    let base = std::path::Path::new(&run.file).parent().unwrap_or(std::path::Path::new(".")).to_path_buf();
    let users = crate::governance::users_of(&pipeline, &base).map_err(|e| format!("the users file: {e}"))?;
    Ok((pipeline, users))
}

/// Every rule but the proof and the reason, over what is known of a running run: its pipeline,
/// users file and stage records (at least the stage decided and what it needs).
fn judge(
    run: &crate::store::RunRecord,
    pipeline: &crate::model::Pipeline,
    users: Option<&crate::governance::users::Users>,
    records: &[crate::store::StageRecord],
    stage: &str,
    user: &str,
    mode: Mode,
) -> Result<(), OpsError> {
    let run_id = &run.id;
    let Some(s) = pipeline.stages.iter().find(|s| s.name.value == stage) else {
        let names = pipeline.stages.iter().filter(|s| s.kind.is_sign_off()).map(|s| s.name.value.as_str());
        return Err(OpsError::Refused(format!("run {run_id} has no stage `{stage}`{}", did_you_mean(stage, names))));
    };
    let current = records.iter().find(|r| r.name == stage).map(|r| r.state).unwrap_or(StageState::Pending);
    let deciders;
    let a = match (mode, s.kind.promotes(), s.kind.decided_by()) {
        (Mode::BreakGlass, Some(d), _) => {
            let env = pipeline.environments.iter().find(|e| e.name.value == d.environment.value);
            let Some(f) = env.and_then(|e| e.spec.freeze.as_ref()) else {
                return Err(OpsError::Refused(format!("environment `{}` has no freeze windows: there is no glass to break", d.environment.value)));
            };
            if f.break_glass.is_empty() {
                return Err(OpsError::Refused(format!("environment `{}` names nobody under `freeze.breakGlass`", d.environment.value)));
            }
            deciders = ApprovalStage::of(f.break_glass.clone());
            &deciders
        }
        (Mode::BreakGlass, None, _) => {
            return Err(OpsError::Refused(format!("stage `{stage}` is a {} stage: break-glass overrides the freeze of a deploy", s.kind.name())));
        }
        (_, _, Some(DecidedBy::SignOff(a))) => a,
        // An inconclusive analysis waits for a person, with the same checks.
        (_, _, Some(by @ DecidedBy::Inconclusive(_))) if current == StageState::Waiting => {
            deciders = by.rules().into_owned();
            &deciders
        }
        (_, _, Some(DecidedBy::Inconclusive(_))) => {
            return Err(OpsError::Refused(format!(
                "stage `{stage}` is a {} stage that is {current}: only an inconclusive analysis (waiting) is decided by a person",
                s.kind.name()
            )));
        }
        (_, _, None) => return Err(OpsError::Refused(format!("stage `{stage}` is a {} stage, not an approval", s.kind.name()))),
    };
    if current.is_final() {
        return Err(OpsError::Refused(format!("stage `{stage}` is already {current}")));
    }
    match check_approver(a, run, users, user) {
        ApprovalCheck::Allowed => {}
        ApprovalCheck::NotAnApprover(m) | ApprovalCheck::SelfApproval(m) => return Err(OpsError::Forbidden(m)),
    }
    // A person approves what they have seen: not before the stages an approval needs succeeded.
    if s.kind.is_sign_off() {
        let unfinished: Vec<String> = s
            .needs
            .iter()
            .filter_map(|n| {
                let state = records.iter().find(|r| r.name == n.value).map_or(StageState::Pending, |r| r.state);
                (state != StageState::Succeeded).then(|| format!("`{}` is {state}", n.value))
            })
            .collect();
        if !unfinished.is_empty() {
            return Err(OpsError::Refused(format!(
                "stage `{stage}` cannot be decided yet: what it needs has not finished ({}); a person approves what they have seen",
                unfinished.join(", ")
            )));
        }
    }
    Ok(())
}

/// A stage waiting for a person's decision.
pub struct WaitingDecision {
    /// Its run.
    pub run: std::sync::Arc<crate::store::RunRecord>,
    /// The run's stage records (shared by its waiting stages).
    pub stages: std::sync::Arc<Vec<crate::store::StageRecord>>,
    /// The waiting stage: its index in `stages`.
    pub stage: usize,
    /// Its run's pipeline, as stored with the run (shared by the runs of the same source).
    pub pipeline: std::sync::Arc<crate::model::Pipeline>,
}

/// Every stage waiting for a decision `user` may make now (approvals, inconclusive analyses),
/// oldest first, by the same rules as [`decide`]: one read of the state, each stored pipeline
/// and users file read once however many runs share it, and a person the server vouched for made
/// into the users of the rules once (not once per run).
pub async fn waiting_for(store: &Store, caller: &Caller<'_>) -> Result<Vec<WaitingDecision>, OpsError> {
    use std::collections::HashMap;
    use std::sync::Arc;
    type Loaded = Option<(Arc<crate::model::Pipeline>, Option<crate::governance::users::Users>)>;
    let user = caller.login();
    let person = match caller {
        Caller::Person(p) => Some(p.as_users()),
        Caller::Local { .. } => None,
    };
    // Runs of one source mostly follow one another: each run's source is compared with the last
    // one loaded first, and hashed only when it differs.
    let mut loaded: Vec<Loaded> = Vec::new();
    let mut by_source: HashMap<(String, u64), usize> = HashMap::new();
    let mut last: Option<(usize, String, String)> = None;
    let mut out = Vec::new();
    for (run, records) in store.waiting_runs().await?.iter() {
        let i = match &last {
            Some((i, file, source)) if *file == run.file && *source == run.source => *i,
            _ => {
                let h = {
                    use std::hash::{Hash, Hasher};
                    let mut h = std::collections::hash_map::DefaultHasher::new();
                    run.source.hash(&mut h);
                    h.finish()
                };
                let i = *by_source.entry((run.file.clone(), h)).or_insert_with(|| {
                    loaded.push(load(run).ok().map(|(p, u)| (Arc::new(p), u)));
                    loaded.len() - 1
                });
                last = Some((i, run.file.clone(), run.source.clone()));
                i
            }
        };
        let Some((pipeline, file_users)) = &loaded[i] else { continue };
        let users = if person.is_some() { person.as_ref() } else { file_users.as_ref() };
        for (k, s) in records.iter().enumerate() {
            if s.state == StageState::Waiting
                && matches!(s.kind.as_str(), "approval" | "metrics")
                && judge(run, pipeline, users, records, &s.name, user, Mode::Approve).is_ok()
            {
                out.push(WaitingDecision { run: run.clone(), stages: records.clone(), stage: k, pipeline: pipeline.clone() });
            }
        }
    }
    Ok(out)
}

/// A log template marked "not a risk" for the pipeline's `logs` stages.
#[derive(Debug, Clone)]
pub struct NotARisk<'a> {
    /// The run whose logs stage reported it.
    pub run: &'a str,
    /// The logs stage.
    pub stage: &'a str,
    /// The template's number in that stage's findings (1-based).
    pub number: usize,
    /// Who decides (through the server: an `admin` of the pipeline).
    pub caller: Caller<'a>,
    /// Why (required, at most [`MAX_REASON`] bytes).
    pub reason: &'a str,
}

/// Marks a template a logs stage found as not a risk: later runs of the pipeline ignore it. Only
/// an admin of the pipeline may (it silences the template for every later run); a template is
/// marked once (a later mark is a conflict, never a silent replacement). The mark and who made
/// it go into the trail. Returns one line saying what was done.
pub async fn not_a_risk(store: &Store, r: &NotARisk<'_>) -> Result<String, OpsError> {
    let refuse = |msg: String| Err(OpsError::Refused(msg));
    if r.reason.trim().is_empty() {
        return refuse("a reason is required: say why this template is not a risk".into());
    }
    if r.reason.len() > MAX_REASON {
        return refuse(format!("the reason is at most {MAX_REASON} bytes"));
    }
    let run = match store.run(r.run).await {
        Ok(x) => x,
        Err(e @ crate::store::StoreError::UnknownRun { .. }) => return refuse(e.to_string()),
        Err(e) => return Err(e.into()),
    };
    let (pipeline, _) = load(&run).map_err(OpsError::Refused)?;
    super::access::allow(&pipeline, super::access::Permission::Admin, None, &r.caller)?;
    let Some(stage) = store.stages(&run.id).await?.into_iter().find(|s| s.name == r.stage) else {
        return refuse(format!("run {} has no stage `{}`", run.id, r.stage));
    };
    let findings = stage.output.as_ref().and_then(|o| o["logs"]["verdict"]["findings"].as_array().cloned()).unwrap_or_default();
    if findings.is_empty() {
        return refuse(format!("stage `{}` of run {} reported no log templates", r.stage, run.id));
    }
    let Some(f) = r.number.checked_sub(1).and_then(|i| findings.get(i)) else {
        return refuse(format!("stage `{}` reported templates #1 to #{}, not #{}", r.stage, findings.len(), r.number));
    };
    let template = f["template"].as_str().unwrap_or_default();
    let user = r.caller.login();
    if let Some(by) = store.exempt_template(&run.id, &run.pipeline, template, user, r.reason, vouched(&r.caller).as_deref()).await? {
        return Err(OpsError::Conflict(format!("`{template}` was marked not a risk for pipeline {} already (by {by})", run.pipeline)));
    }
    Ok(format!("`{template}` is not a risk for pipeline {} (by {user}): later runs ignore it", run.pipeline))
}

/// A called system's verdict on a `webhook` stage with `callback: true`, posted to its one-time URL.
#[derive(Debug, Clone)]
pub struct Callback<'a> {
    /// The run.
    pub run: &'a str,
    /// The webhook stage.
    pub stage: &'a str,
    /// The secret part of the URL.
    pub token: &'a str,
    /// Passed (true) or failed.
    pub passed: bool,
    /// What the system says (kept with the verdict).
    pub message: Option<&'a str>,
}

/// Why a callback is not taken: unknown (no such URL: 404, the same whatever is wrong, so that
/// the answer tells a guesser nothing), or no longer open (used, or the stage is not waiting: 409).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallbackRefused {
    /// The token does not verify, or no such run or stage.
    Unknown,
    /// The verdict came already, or the stage no longer waits for one.
    Closed(String),
}

/// Records a callback's verdict once: the token must be the stage's, the stage a waiting
/// `webhook` stage with no verdict yet. The waiting stage is woken by it.
pub async fn callback(store: &Store, c: &Callback<'_>) -> Result<Result<String, CallbackRefused>, OpsError> {
    let want = crate::stages::webhook::callback_token(store.key(), c.run, c.stage);
    if !store.key().verify_hex(&want, Some(c.token)) {
        return Ok(Err(CallbackRefused::Unknown));
    }
    let run = match store.run(c.run).await {
        Ok(r) => r,
        Err(crate::store::StoreError::UnknownRun { .. }) => return Ok(Err(CallbackRefused::Unknown)),
        Err(e) => return Err(e.into()),
    };
    let Some(stage) = store.stages(&run.id).await?.into_iter().find(|s| s.name == c.stage && s.kind == "webhook") else {
        return Ok(Err(CallbackRefused::Unknown));
    };
    let user = crate::stages::webhook::CALLBACK_USER;
    if store.decisions(&run.id, c.stage).await?.iter().any(|d| d.user == user) {
        return Ok(Err(CallbackRefused::Closed(format!("stage `{}` of run {} has its verdict already: a callback URL is used once", c.stage, run.id))));
    }
    if stage.state != crate::store::StageState::Waiting {
        return Ok(Err(CallbackRefused::Closed(format!("stage `{}` of run {} is {}, not waiting for a verdict", c.stage, run.id, stage.state.as_str()))));
    }
    let message = c.message.map(|m| crate::diag::printable(&m.chars().take(2000).collect::<String>()).into_owned());
    if !store.decide_as(&run.id, c.stage, user, c.passed, message.as_deref(), crate::store::EntryKind::Callback, Some("its one-time callback URL")).await? {
        return Ok(Err(CallbackRefused::Closed(format!("stage `{}` of run {} has its verdict already: a callback URL is used once", c.stage, run.id))));
    }
    Ok(Ok(format!("stage `{}` of run {} {}", c.stage, run.id, if c.passed { "passed" } else { "failed" })))
}
