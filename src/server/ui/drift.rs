//! A drift's own page (`/ui/drifts/{id}`): a change to an environment that did not come through
//! the pipeline, in a business person's words (what changed, by whom, since when; accept keeps it,
//! reject reverts it), the commits and the diff one click away, and accept or reject through a
//! confirmation step that names the action. Who may decide is `ops`'s rule
//! (`drift.approvers`), asked here only to know whether to show the buttons.

use askama::Template;
use axum::Form;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;

use super::decision::{When, when};
use super::{Page, Refusal, Server, internal};
use crate::ops::access::Caller;

pub(super) struct DriftView {
    id: String,
    pipeline: String,
    environment: String,
    /// "Keep the change made to prod of checkout outside the pipeline?"
    question: String,
    accept_action: String,
    reject_action: String,
    what: String,
    seen: When,
    commits: Vec<String>,
    diff: String,
    /// open, accepted, rejected, reverted.
    state: String,
    may_decide: bool,
}

#[derive(Template)]
#[template(path = "ui/drift.html")]
struct DriftPage {
    user: Option<String>,
    csrf: String,
    d: DriftView,
    error: Option<String>,
    reason: String,
    /// `accept` or `reject` when this is the confirmation step.
    confirm: Option<String>,
}

async fn view(server: &Server, s: &super::Session, id: &str) -> Result<DriftView, Refusal> {
    let store = &server.exec.store;
    let Some(d) = store.drift(id).await.map_err(internal)? else {
        return Err(Refusal(StatusCode::NOT_FOUND, format!("no drift `{}`", crate::diag::printable(id))));
    };
    let loaded = super::viewable(server, s, &d.pipeline)?;
    let me = Caller::Person(&s.person);
    let may_decide = d.state == crate::store::DriftState::Open
        && loaded
            .plan
            .pipeline
            .environments
            .iter()
            .find(|e| e.name.value == d.environment)
            .is_some_and(|env| crate::ops::access::allow_listed(&loaded.plan.pipeline, &env.spec.drift.approvers, "drift.approvers", "", &me).is_ok());
    let (p, e) = (&d.pipeline, &d.environment);
    Ok(DriftView {
        question: format!("Keep the change to {e} of {p} that did not come through the pipeline?"),
        accept_action: format!("Keep the change to {e} of {p}"),
        reject_action: format!("Revert the change to {e} of {p}"),
        what: d.describe(),
        seen: when(d.at, crate::clock::now_ms()),
        commits: d.commits.iter().map(|c| format!("{} {} ({})", &c.id[..c.id.len().min(10)], crate::diag::printable(&c.summary), c.author)).collect(),
        diff: crate::redact::text(&d.diff).chars().take(8000).collect(),
        state: d.state.to_string(),
        id: d.id,
        pipeline: d.pipeline,
        environment: d.environment,
        may_decide,
    })
}

async fn render(server: &Server, s: &super::Session, id: &str, error: Option<String>, confirm: Option<String>, reason: String) -> Page {
    let d = view(server, s, id).await?;
    let status = if error.is_some() { StatusCode::UNPROCESSABLE_ENTITY } else { StatusCode::OK };
    let page = DriftPage { user: Some(s.user.clone()), csrf: s.csrf(server.exec.store.key()), d, error, reason, confirm };
    Ok((status, axum::response::Html(page.render().map_err(internal)?)).into_response())
}

/// `GET /ui/drifts/{id}`.
pub(super) async fn page(State(server): State<Server>, headers: HeaderMap, Path(id): Path<String>) -> Page {
    let Some(s) = super::session(&server, &headers).await else { return Ok(super::to_login()) };
    render(&server, &s, &id, None, None, String::new()).await
}

#[derive(serde::Deserialize)]
pub(super) struct StepForm {
    #[serde(default)]
    csrf: Option<String>,
    decision: String,
    #[serde(default)]
    reason: Option<String>,
}

/// `POST /ui/drifts/{id}`: the confirmation step; a reject without a reason is asked for in place.
pub(super) async fn step(State(server): State<Server>, headers: HeaderMap, Path(id): Path<String>, Form(f): Form<StepForm>) -> Page {
    let s = super::poster(&server, &headers, f.csrf.as_deref()).await?;
    let reason = f.reason.as_deref().map(str::trim).unwrap_or_default().to_string();
    // Only who may decide gets the confirmation (`/ui/drift` checks again when it is posted).
    let v = view(&server, &s, &id).await?;
    if v.state != "open" {
        return Err(Refusal(StatusCode::CONFLICT, format!("drift {} is {} already: nothing to decide", v.id, v.state)));
    }
    if !v.may_decide {
        return Err(Refusal(
            StatusCode::FORBIDDEN,
            format!("{} may not decide drifts of {} in {}: that needs its `drift.approvers`", s.user, v.pipeline, v.environment),
        ));
    }
    match f.decision.as_str() {
        "reject" if reason.is_empty() => reason_missing(&server, &s, &id).await,
        "accept" | "reject" => render(&server, &s, &id, None, Some(f.decision.clone()), reason).await,
        other => Err(Refusal(StatusCode::BAD_REQUEST, format!("`{}`: a drift is accepted or rejected", crate::diag::printable(other)))),
    }
}

/// A reject without a reason: the drift's page again, the message next to the field.
pub(super) async fn reason_missing(server: &Server, s: &super::Session, id: &str) -> Page {
    render(server, s, id, Some("Say why you revert it: the reason goes into the revert's commit and the audit trail.".into()), None, String::new()).await
}
