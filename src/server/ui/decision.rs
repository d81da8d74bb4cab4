//! A decision in a business person's words: the page of one waiting decision
//! (`/ui/runs/{run}/decisions/{stage}`), the inbox's cards and the run page's controls. One
//! sentence on top (what approving does, who asked, since when, how many approvals, by when), the
//! evidence as plain verdicts with units, the engineer's detail one click away; approve and
//! reject go through a confirmation step that names the action. Who may decide is `ops`'s rule,
//! asked here only to know whether to show the buttons.

use askama::Template;
use axum::Form;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use serde_json::Value;

use super::{Change, Evidence, Page, Refusal, Server, internal};
use crate::ops::access::Caller;
use crate::ops::decide::Mode;
use crate::store::{RunRecord, StageRecord, StageState};

/// A moment, for a person: UTC for the page's script (`datetime`), and words that read without
/// it ("2 hours ago, Thu 3 Dec 2026 11:55 UTC").
pub(super) struct When {
    pub iso: String,
    pub text: String,
    /// The absolute time first, for a deadline: "Sat 5 Dec 2026 17:00 UTC (in 2 days)".
    pub by: String,
}

/// `ms` as a [`When`], relative to `now`.
pub(super) fn when(ms: i64, now: i64) -> When {
    let absolute = jiff::Timestamp::from_millisecond(ms).map(|t| t.strftime("%a %-d %b %Y %H:%M UTC").to_string()).unwrap_or_default();
    let rel = relative(ms - now);
    When { iso: crate::clock::rfc3339(ms), text: format!("{rel} ({absolute})"), by: format!("{absolute} ({rel})") }
}

/// "just now", "5 minutes ago", "in 2 hours", "3 days ago".
pub(super) fn relative(delta_ms: i64) -> String {
    let s = delta_ms.abs() / 1000;
    if s < 45 {
        return "just now".into();
    }
    let (n, unit) = match s {
        0..3_600 => ((s + 30) / 60, "minute"),
        3_600..86_400 => ((s + 1_800) / 3_600, "hour"),
        _ => ((s + 43_200) / 86_400, "day"),
    };
    let n = n.max(1);
    let amount = format!("{n} {unit}{}", if n == 1 { "" } else { "s" });
    if delta_ms < 0 { format!("{amount} ago") } else { format!("in {amount}") }
}

/// One measured check in plain words: "error rate at most 1.1% over 3 measurements (limit 5%)".
pub(super) struct Verdict {
    /// passed, failed, inconclusive.
    pub outcome: String,
    /// Its class: ok, bad, wait.
    pub class: &'static str,
    pub text: String,
}

/// What a stage's state means to a person.
pub(super) fn plain_state(state: &str) -> (&'static str, &'static str) {
    match state {
        "succeeded" => ("passed", "ok"),
        "failed" | "rolled-back" | "reverted" | "cancelled" => ("failed", "bad"),
        "waiting" => ("waiting for a decision", "wait"),
        "running" => ("still running", "run"),
        "skipped" => ("skipped", "muted"),
        _ => ("not started", "muted"),
    }
}

/// `result < 0.05`, `result <= 2`: the operator and the limit, when a condition is that simple.
fn limit_of(condition: &str) -> Option<(&'static str, f64)> {
    let rest = condition.trim().strip_prefix("result")?.trim_start();
    for op in ["<=", ">=", "<", ">"] {
        if let Some(n) = rest.strip_prefix(op) {
            return n.trim().parse::<f64>().ok().map(|v| (op, v));
        }
    }
    None
}

/// A check's measured values and limit in words, as a percentage when the check is a rate and
/// every number is a fraction.
pub(super) fn verdict_of(name: &str, phase: &str, success: Option<&str>, measurements: &[Value]) -> Verdict {
    let (values, lo, hi) = super::series(measurements);
    let limit = success.and_then(limit_of);
    let label = name.replace(['-', '_'], " ");
    let rate = ["rate", "ratio", "percent", "fraction", "share", "availability", "success"].iter().any(|w| label.to_lowercase().contains(w));
    let fraction = |v: f64| (0.0..=1.0).contains(&v);
    let percent = rate && !values.is_empty() && values.iter().all(|v| fraction(*v)) && limit.is_none_or(|(_, l)| fraction(l));
    let show = |v: f64| {
        if percent {
            let p = format!("{:.1}", v * 100.0);
            format!("{}%", p.trim_end_matches(".0"))
        } else {
            crate::analysis::fmt_f64(v)
        }
    };
    let (outcome, class) = match phase.to_ascii_lowercase().as_str() {
        "successful" => ("passed", "ok"),
        "failed" | "error" => ("failed", "bad"),
        "inconclusive" => ("inconclusive", "wait"),
        _ => ("not judged", "muted"),
    };
    let many = values.len() > 1;
    let over = if many { format!(" over {} measurements", values.len()) } else { String::new() };
    let text = match (values.last(), limit) {
        (None, _) => format!("{label}: no value was measured"),
        (Some(_), Some(("<" | "<=", l))) => format!("{label} {}{}{over} (limit {})", if many { "at most " } else { "" }, show(hi), show(l)),
        (Some(_), Some((_, l))) => format!("{label} {}{}{over} (at least {} needed)", if many { "at least " } else { "" }, show(lo), show(l)),
        (Some(last), None) => format!("{label} {}{over}", show(*last)),
    };
    Verdict { outcome: outcome.into(), class, text }
}

/// A stage of the run before the decision, in plain words, with the engineer's detail.
pub(super) struct StageVerdict {
    pub stage: String,
    pub outcome: &'static str,
    pub class: &'static str,
    pub checks: Vec<Verdict>,
    /// "2 new or grown log patterns" (the patterns are in the detail).
    pub logs: String,
}

/// One waiting decision, as the pages show it.
pub(super) struct Decision {
    pub run: String,
    pub pipeline: String,
    pub version: String,
    pub stage: String,
    pub kind: String,
    /// The question: "Approve deploying checkout 1.7.0 to prod?".
    pub question: String,
    /// What approving does, as its button says: "Approve deploying checkout 1.7.0 to prod".
    pub approve_action: String,
    /// What rejecting does: "Reject deploying checkout 1.7.0 to prod".
    pub reject_action: String,
    /// The stage's own message (the approval's `message`).
    pub what: String,
    pub requested_by: String,
    pub since: When,
    pub deadline: Option<When>,
    pub approvals: Vec<String>,
    pub rejections: Vec<String>,
    pub needed: u32,
    pub changes: Vec<Change>,
    pub verdicts: Vec<StageVerdict>,
    pub evidence: Vec<Evidence>,
    /// Whether the stage still waits.
    pub waiting: bool,
    /// Whether the signed-in person may decide it now (`ops`'s rule).
    pub may_decide: bool,
}

/// The environments a decision lets through, nearest wave first.
fn environments(changes: &[Change]) -> Vec<String> {
    let mut envs: Vec<String> = Vec::new();
    for c in changes {
        if !envs.contains(&c.environment) {
            envs.push(c.environment.clone());
        }
    }
    envs
}

/// Builds the decision on `stage` (index `index` in `plan`) of `run`, whose stage records are
/// `stages` and whose decisions on `stage` are `all` (as the caller read them: the inbox reads
/// its page's at once).
#[allow(clippy::too_many_arguments)]
pub(super) async fn decision_of(
    server: &Server,
    caller: &Caller<'_>,
    run: &RunRecord,
    stages: &[StageRecord],
    stage: &StageRecord,
    plan: &crate::plan::Plan,
    index: usize,
    last: &std::collections::HashMap<(String, String), String>,
    all: Vec<crate::store::Decision>,
    known_may: Option<bool>,
) -> Result<Decision, Refusal> {
    let store = &server.exec.store;
    let now = crate::clock::now_ms();
    let since = stage.started_at.unwrap_or(run.created_at);
    let changes = super::changes_after(last, run, plan, index);
    let envs = environments(&changes);
    let (p, v) = (&run.pipeline, &run.version);
    let doing = match envs.as_slice() {
        [] => format!("{p} {v} at {}", stage.name),
        [one] => format!("deploying {p} {v} to {one}"),
        [first, rest @ ..] => format!("deploying {p} {v} to {first} (then {})", rest.join(", ")),
    };
    let (needed, deadline, what, question, approve_action, reject_action) = match plan.pipeline.stages[index].kind.decided_by() {
        Some(crate::model::DecidedBy::SignOff(a)) => (
            a.min_approvals.value,
            a.deadline(since).map(|at| when(at, now)),
            a.message.clone().unwrap_or_default(),
            format!("Approve {doing}?"),
            format!("Approve {doing}"),
            format!("Reject {doing}"),
        ),
        _ => (
            1,
            None,
            "The analysis was inconclusive: a person decides whether the release goes on.".into(),
            format!("The analysis {} was inconclusive: go on with {doing}?", stage.name),
            format!("Go on with {doing}"),
            format!("Stop {doing}"),
        ),
    };
    let evidence = super::evidence_of(plan, stages, &stage.name);
    let verdicts = super::judged(stages, &stage.name)
        .map(|(s, out)| {
            let checks = super::checks_in(&out)
                .map(|(c, measured)| {
                    let name = c["name"].as_str().unwrap_or_default();
                    let success = super::check_of(plan, &s.name, name).and_then(|c| c.success_condition.as_ref()).map(|c| c.value.as_str());
                    verdict_of(name, c["phase"].as_str().unwrap_or_default(), success, measured)
                })
                .collect();
            let found = out["logs"]["verdict"]["findings"].as_array().map_or(0, Vec::len);
            let logs = if out["logs"].is_null() {
                String::new()
            } else if found == 0 {
                "no new or grown log patterns".into()
            } else {
                format!("{found} new or grown log pattern{}", if found == 1 { "" } else { "s" })
            };
            let (outcome, class) = match (s.kind.as_str(), s.state) {
                ("deploy", StageState::Succeeded) => ("deployed", "ok"),
                _ => plain_state(s.state.as_str()),
            };
            StageVerdict { stage: s.name.clone(), outcome, class, checks, logs }
        })
        .collect();
    let waiting = stage.state == StageState::Waiting && run.state == crate::store::RunState::Running;
    let may_decide = match known_may {
        Some(m) => m,
        None => waiting && crate::ops::decide::may_decide(store, &run.id, &stage.name, caller, Mode::Approve).await.map_err(internal)?.is_ok(),
    };
    Ok(Decision {
        run: run.id.clone(),
        pipeline: run.pipeline.clone(),
        version: run.version.clone(),
        stage: stage.name.clone(),
        kind: stage.kind.clone(),
        question,
        approve_action,
        reject_action,
        what,
        requested_by: run.triggered_by.clone(),
        since: when(since, now),
        deadline,
        approvals: all.iter().filter(|d| d.approve).map(|d| d.user.clone()).collect(),
        rejections: all.iter().filter(|d| !d.approve).map(|d| d.user.clone()).collect(),
        needed,
        changes,
        verdicts,
        evidence,
        waiting,
        may_decide,
    })
}

/// The success condition check `name` of metrics stage `stage` was written with.
#[derive(Template)]
#[template(path = "ui/decision.html")]
struct DecisionPage {
    user: Option<String>,
    csrf: String,
    d: Decision,
    /// What the reason field says is wrong (a reject without one).
    error: Option<String>,
    comment: String,
}

#[derive(Template)]
#[template(path = "ui/confirm.html")]
struct Confirm {
    user: Option<String>,
    csrf: String,
    d: Decision,
    /// approve or reject.
    decision: String,
    action: String,
    comment: String,
    back: String,
}

/// The run, the stage and its plan, for a person who may view the run.
async fn load(
    server: &Server,
    s: &super::Session,
    id: &str,
    stage: &str,
) -> Result<(RunRecord, Vec<StageRecord>, StageRecord, std::sync::Arc<crate::plan::Plan>, usize), Refusal> {
    let store = &server.exec.store;
    let run = match store.run(id).await {
        Ok(r) => r,
        Err(e @ crate::store::StoreError::UnknownRun { .. }) => return Err(Refusal(StatusCode::NOT_FOUND, e.to_string())),
        Err(e) => return Err(internal(e)),
    };
    if !super::sees(server, s, &run) {
        return Err(Refusal(StatusCode::FORBIDDEN, format!("{} may not see runs of pipeline {}: that needs its `access.view`", s.user, run.pipeline)));
    }
    let stages = store.stages(id).await.map_err(internal)?;
    let Some(record) = stages.iter().find(|x| x.name == stage).cloned() else {
        return Err(Refusal(StatusCode::NOT_FOUND, format!("run {id} has no stage `{}`", crate::diag::printable(stage))));
    };
    let plan = server.plan_of(&run).ok_or_else(|| internal(format!("the pipeline stored with run {id} does not load")))?;
    let index = plan.pipeline.stages.iter().position(|x| x.name.value == stage).ok_or_else(|| internal("the stage is not in the plan"))?;
    Ok((run, stages, record, plan, index))
}

/// The decision's page, `error` next to its reason field when set.
async fn render(server: &Server, s: &super::Session, id: &str, stage: &str, error: Option<String>, comment: String) -> Page {
    let (run, stages, record, plan, index) = load(server, s, id, stage).await?;
    let mut last = std::collections::HashMap::new();
    super::last_values(server, &run.pipeline, &plan, &mut last).await?;
    let all = server.exec.store.decisions(&run.id, stage).await.map_err(internal)?;
    let d = decision_of(server, &Caller::Person(&s.person), &run, &stages, &record, &plan, index, &last, all, None).await?;
    let status = if error.is_some() { StatusCode::UNPROCESSABLE_ENTITY } else { StatusCode::OK };
    let page = DecisionPage { user: Some(s.user.clone()), csrf: s.csrf(server.exec.store.key()), d, error, comment };
    Ok((status, axum::response::Html(page.render().map_err(internal)?)).into_response())
}

/// `GET /ui/runs/{id}/decisions/{stage}`.
pub(super) async fn page(State(server): State<Server>, headers: HeaderMap, Path((id, stage)): Path<(String, String)>) -> Page {
    let Some(s) = super::session(&server, &headers).await else { return Ok(super::to_login()) };
    render(&server, &s, &id, &stage, None, String::new()).await
}

#[derive(serde::Deserialize)]
pub(super) struct StepForm {
    #[serde(default)]
    csrf: Option<String>,
    decision: String,
    #[serde(default)]
    comment: Option<String>,
    /// Where to go after the decision: `run` for the run's page; else the inbox.
    #[serde(default)]
    back: Option<String>,
}

/// `POST /ui/runs/{id}/decisions/{stage}`: the confirmation step (a page naming the action, whose
/// button posts the decision to `/ui/decide`); a reject without a reason shows the decision again
/// with the message next to the field.
pub(super) async fn step(State(server): State<Server>, headers: HeaderMap, Path((id, stage)): Path<(String, String)>, Form(f): Form<StepForm>) -> Page {
    let s = super::poster(&server, &headers, f.csrf.as_deref()).await?;
    let mode = match f.decision.as_str() {
        "approve" => Mode::Approve,
        "reject" => Mode::Reject,
        other => return Err(Refusal(StatusCode::BAD_REQUEST, format!("`{}`: a decision is approve or reject", crate::diag::printable(other)))),
    };
    let comment = f.comment.as_deref().map(str::trim).unwrap_or_default().to_string();
    if mode == Mode::Reject && comment.is_empty() {
        return reason_missing(&server, &s, &id, &stage).await;
    }
    let me = Caller::Person(&s.person);
    let action = format!("to {} `{}` of run {}", f.decision, stage, id);
    if let Err(e) = crate::ops::decide::may_decide(&server.exec.store, &id, &stage, &me, mode).await.map_err(internal)? {
        return super::after(&server, &s, &action, "/ui/", Err(e)).await;
    }
    let (run, stages, record, plan, index) = load(&server, &s, &id, &stage).await?;
    let mut last = std::collections::HashMap::new();
    super::last_values(&server, &run.pipeline, &plan, &mut last).await?;
    let all = server.exec.store.decisions(&run.id, &stage).await.map_err(internal)?;
    let d = decision_of(&server, &me, &run, &stages, &record, &plan, index, &last, all, Some(true)).await?;
    let action = if mode == Mode::Approve { d.approve_action.clone() } else { d.reject_action.clone() };
    let back = if f.back.as_deref() == Some("run") { "run".to_string() } else { String::new() };
    html(Confirm { user: Some(s.user.clone()), csrf: s.csrf(server.exec.store.key()), d, decision: f.decision, action, comment, back })
}

/// A reject without a reason: the decision's page again, the message next to the field.
pub(super) async fn reason_missing(server: &Server, s: &super::Session, id: &str, stage: &str) -> Page {
    render(server, s, id, stage, Some("Say why you reject it: the reason goes to the people who asked, and into the audit trail.".into()), String::new()).await
}

fn html(t: impl Template) -> Page {
    super::html(t)
}
