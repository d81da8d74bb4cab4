//! A compliance violation's own page (`/ui/compliance/{id}`): an environment whose files break
//! the company's policies, in a business person's words (what the policies say, since when), and
//! the two ways out, each through a confirmation step that names it: an exception with a reason
//! and an end, or putting back the newest files the policies allow. Who may decide is `ops`'s
//! rule (`drift.approvers`, admins), asked here only to know whether to show the buttons.

use askama::Template;
use axum::Form;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};

use super::decision::{When, when};
use super::{Page, Refusal, Server, internal};
use crate::ops::access::Caller;
use crate::store::ViolationState;

/// The exception lengths offered on the page, in days.
const EXCEPTION_DAYS: &[u32] = &[1, 7, 30, 90];

pub(super) struct ViolationView {
    id: String,
    pipeline: String,
    environment: String,
    /// "prod of checkout breaks the company's policies: make an exception or put it back?"
    question: String,
    accept_action: String,
    revert_action: String,
    denied: Vec<String>,
    head: String,
    seen: When,
    /// open, accepted, reverting, reverted, resolved.
    state: String,
    decided: Option<String>,
    may_decide: bool,
}

#[derive(Template)]
#[template(path = "ui/compliance.html")]
struct ViolationPage {
    user: Option<String>,
    csrf: String,
    v: ViolationView,
    error: Option<String>,
    reason: String,
    days: u32,
    choices: &'static [u32],
    /// `accept` or `revert` when this is the confirmation step.
    confirm: Option<String>,
}

async fn view(server: &Server, s: &super::Session, id: &str) -> Result<ViolationView, Refusal> {
    let Some(v) = server.exec.store.violation(id).await.map_err(internal)? else {
        return Err(Refusal(StatusCode::NOT_FOUND, format!("no compliance violation `{}`", crate::diag::printable(id))));
    };
    let loaded = super::viewable(server, s, &v.pipeline)?;
    let me = Caller::Person(&s.person);
    let may_decide = v.state == ViolationState::Open
        && loaded
            .plan
            .environment(&v.environment)
            .is_some_and(|env| crate::ops::access::allow_listed(&loaded.plan.pipeline, &env.spec.drift.approvers, "drift.approvers", "", &me).is_ok());
    let (p, e) = (&v.pipeline, &v.environment);
    let decided = v.decided_by.as_ref().map(|by| {
        let until = v.until.filter(|_| v.state == ViolationState::Accepted).map(|u| format!(" until {}", crate::clock::rfc3339(u))).unwrap_or_default();
        format!("{} by {by}{until}: {}", v.state, crate::diag::printable(v.reason.as_deref().unwrap_or("")))
    });
    Ok(ViolationView {
        question: format!("{e} of {p} breaks the company's policies: make an exception or put it back?"),
        accept_action: format!("Make an exception for {e} of {p}"),
        revert_action: format!("Put {e} of {p} back to files the policies allow"),
        denied: v.deny.0.iter().map(|d| crate::diag::printable(d).into_owned()).collect(),
        head: v.head[..v.head.len().min(10)].to_string(),
        seen: when(v.at, crate::clock::now_ms()),
        state: v.state.to_string(),
        decided,
        id: v.id,
        pipeline: v.pipeline,
        environment: v.environment,
        may_decide,
    })
}

async fn render(server: &Server, s: &super::Session, id: &str, error: Option<String>, confirm: Option<String>, reason: String, days: u32) -> Page {
    let v = view(server, s, id).await?;
    let status = if error.is_some() { StatusCode::UNPROCESSABLE_ENTITY } else { StatusCode::OK };
    let page = ViolationPage { user: Some(s.user.clone()), csrf: s.csrf(server.exec.store.key()), v, error, reason, days, choices: EXCEPTION_DAYS, confirm };
    Ok(axum::response::IntoResponse::into_response((status, axum::response::Html(page.render().map_err(internal)?))))
}

/// `GET /ui/compliance/{id}`.
pub(super) async fn page(State(server): State<Server>, headers: HeaderMap, Path(id): Path<String>) -> Page {
    let Some(s) = super::session(&server, &headers).await else { return Ok(super::to_login()) };
    render(&server, &s, &id, None, None, String::new(), 30).await
}

#[derive(serde::Deserialize)]
pub(super) struct StepForm {
    #[serde(default)]
    csrf: Option<String>,
    decision: String,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    days: Option<u32>,
    /// Present on the confirmation step's own button: decide now.
    #[serde(default)]
    confirmed: Option<String>,
}

/// `POST /ui/compliance/{id}`: the confirmation step, then the decision; an exception without a
/// reason is asked for in place.
pub(super) async fn step(State(server): State<Server>, headers: HeaderMap, Path(id): Path<String>, Form(f): Form<StepForm>) -> Page {
    use crate::ops::compliance::{Decision, Verdict};
    let s = super::poster(&server, &headers, f.csrf.as_deref()).await?;
    let reason = f.reason.as_deref().map(str::trim).unwrap_or_default().to_string();
    let days = f.days.filter(|d| EXCEPTION_DAYS.contains(d)).unwrap_or(30);
    let v = view(&server, &s, &id).await?;
    if v.state != "open" {
        return Err(Refusal(StatusCode::CONFLICT, format!("violation {} is {} already: nothing to decide", v.id, v.state)));
    }
    if !v.may_decide {
        return Err(Refusal(
            StatusCode::FORBIDDEN,
            format!("{} may not decide compliance of {} in {}: that needs its `drift.approvers`", s.user, v.pipeline, v.environment),
        ));
    }
    let verdict = match f.decision.as_str() {
        "accept" if reason.is_empty() => {
            let why = "Say why these files may break the policies for now: the reason goes into the audit trail.".to_string();
            return render(&server, &s, &id, Some(why), None, String::new(), days).await;
        }
        "accept" => Verdict::Accept { until: crate::clock::now_ms() + i64::from(days) * 24 * 3600 * 1000 },
        "revert" => Verdict::Revert,
        other => return Err(Refusal(StatusCode::BAD_REQUEST, format!("`{}`: a violation is accepted or reverted", crate::diag::printable(other)))),
    };
    if f.confirmed.is_none() {
        return render(&server, &s, &id, None, Some(f.decision.clone()), reason, days).await;
    }
    let pipelines = server.pipelines();
    let Some(loaded) = pipelines.get(&v.pipeline) else { return Err(Refusal(StatusCode::NOT_FOUND, format!("pipeline `{}` is not loaded", v.pipeline))) };
    let base = loaded.file.parent().unwrap_or(std::path::Path::new("."));
    let reason = Some(reason.as_str()).filter(|r| !r.is_empty());
    let d = Decision { id: &id, verdict, reason, caller: Caller::Person(&s.person) };
    let action = format!("to {} compliance violation {id}", f.decision);
    super::after(&server, &s, &action, "/ui/", crate::ops::compliance::decide(&server.exec.store, &server.exec.writer, &loaded.plan, base, &d).await).await
}
