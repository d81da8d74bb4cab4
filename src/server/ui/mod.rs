//! `/ui/`: the web pages (server-rendered, templates checked at compile time, assets in the
//! binary): the inbox of decisions, runs and their DAG drawn live, the environments matrix, the
//! audit trail. Every action goes through the same `ops` as the CLI and the API, as the signed-in
//! person, with the CSRF token of their session; nothing is allowed because a button was shown.

mod compliance;
mod dag;
mod decision;
mod drift;
mod report;
pub mod session;
mod sso;

use askama::Template;
use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde_json::Value;

use super::Server;
use crate::ops::access::Caller;
use crate::ops::decide::Mode;
use crate::store::{RunRecord, StageState};
use session::Session;

pub(super) fn routes() -> axum::Router<Server> {
    axum::Router::new()
        .route("/ui", get(|| async { Redirect::permanent("/ui/") }))
        .route("/ui/", get(inbox))
        .route("/ui/login", get(login_page).post(login))
        .route("/ui/logout", post(logout))
        .route("/ui/auth/login", get(sso::login))
        .route("/ui/auth/callback", get(sso::callback))
        .route("/ui/decide", post(decide))
        .route("/ui/drift", post(decide_drift))
        .route("/ui/drifts/{id}", get(drift::page).post(drift::step))
        .route("/ui/compliance/{id}", get(compliance::page).post(compliance::step))
        .route("/ui/watch/clear", post(clear_watch))
        .route("/ui/runs", get(runs))
        .route("/ui/runs/{id}", get(run))
        .route("/ui/runs/{id}/report", get(report::page))
        .route("/ui/runs/{id}/decisions/{stage}", get(decision::page).post(decision::step))
        .route("/ui/runs/{id}/state", get(run_state))
        .route("/ui/runs/{id}/events", get(run_events))
        .route("/ui/environments", get(environments))
        .route("/ui/rollback", post(rollback))
        .route("/ui/audit", get(audit))
        .route("/ui/assets/app.css", get(|| async { ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], include_str!("app.css")) }))
        .route("/ui/assets/app.js", get(|| async { ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8")], include_str!("app.js")) }))
}

/// A page's answer when it cannot be shown: its status and why (in the page's frame).
struct Refusal(StatusCode, String);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let page = Message {
            title: self.0.canonical_reason().unwrap_or("Error").to_string(),
            message: crate::redact::text(&self.1).into_owned(),
            user: None,
            csrf: String::new(),
        };
        (self.0, Html(page.render().unwrap_or_default())).into_response()
    }
}

type Page = Result<Response, Refusal>;

fn internal(e: impl std::fmt::Display) -> Refusal {
    Refusal(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

/// Whether the pages are served over TLS (a proxy in front says so): cookies are `Secure` then.
fn over_tls(server: &Server, headers: &HeaderMap) -> bool {
    headers.get("x-forwarded-proto").is_some_and(|v| v == "https") || server.exec.public_url.as_deref().is_some_and(|u| u.starts_with("https://"))
}

/// The header through which the middleware tells handlers which trusted proxy a request came
/// from (removed from every request first: nobody can send it).
const PROXY_ADDR: &str = "x-promote-trusted-proxy";

/// Drops the identity headers of every request that does not come from a trusted proxy, so that
/// no handler can take them from anyone else; names the proxy for those that do.
pub(super) async fn only_trusted_identity(State(server): State<Server>, mut request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let peer = request.extensions().get::<axum::extract::ConnectInfo<std::net::SocketAddr>>().map(|c| c.0.ip());
    request.headers_mut().remove(PROXY_ADDR);
    match peer.filter(|ip| server.config.trusted_proxies.contains(ip)) {
        Some(ip) => {
            if let Ok(v) = axum::http::HeaderValue::from_str(&ip.to_string()) {
                request.headers_mut().insert(PROXY_ADDR, v);
            }
        }
        None => {
            for h in super::auth::PROXY_HEADERS {
                request.headers_mut().remove(h);
            }
        }
    }
    next.run(request).await
}

/// The signed-in person: named by a trusted proxy, else by the session kept on the server.
async fn session(server: &Server, headers: &HeaderMap) -> Option<Session> {
    let proxy = headers.get(PROXY_ADDR).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
    super::auth::session(server, headers, proxy).await
}

/// The sign-in page, for who is not signed in.
fn to_login() -> Response {
    Redirect::to("/ui/login").into_response()
}

fn html(t: impl Template) -> Page {
    Ok(Html(t.render().map_err(internal)?).into_response())
}

// ---- sign-in ----

#[derive(Template)]
#[template(path = "ui/login.html")]
struct Login {
    error: Option<String>,
    user: Option<String>,
    csrf: String,
    /// Whether "Sign in with SSO" is offered (OIDC is set up).
    sso: bool,
}

/// The sign-in form, with a CSRF token bound to a nonce cookie of its own.
async fn login_page(State(server): State<Server>, headers: HeaderMap) -> Page {
    let (nonce, _) = session::new_cookie().map_err(internal)?;
    let csrf = session::form_csrf(server.exec.store.key(), &nonce);
    let page = Login { error: None, user: None, csrf, sso: server.config.oidc.is_some() };
    Ok(([(header::SET_COOKIE, session::set_form_cookie(&nonce, over_tls(&server, &headers)))], Html(page.render().map_err(internal)?)).into_response())
}

#[derive(serde::Deserialize)]
struct LoginForm {
    token: String,
    #[serde(default)]
    csrf: Option<String>,
}

async fn login(State(server): State<Server>, headers: HeaderMap, Form(f): Form<LoginForm>) -> Page {
    let peer = headers.get(PROXY_ADDR).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
    let form_ok = super::auth::cookie(&headers, session::FORM_COOKIE)
        .is_some_and(|n| server.exec.store.key().verify_hex(&session::form_csrf(server.exec.store.key(), &n), f.csrf.as_deref()));
    if !form_ok {
        return Err(Refusal(StatusCode::FORBIDDEN, "the sign-in form's CSRF token is missing or wrong: open the sign-in page again".into()));
    }
    let token = f.token.trim();
    let Some(person) = super::auth::person_by_token(&server, token) else {
        super::auth::refused_sign_in(&server, peer, "a token that is no one's in the directory (or someone disabled)").await;
        let (nonce, _) = session::new_cookie().map_err(internal)?;
        let csrf = session::form_csrf(server.exec.store.key(), &nonce);
        let page =
            Login { error: Some("That token is no one's in this server's directory of people.".into()), user: None, csrf, sso: server.config.oidc.is_some() };
        return Ok((
            StatusCode::UNAUTHORIZED,
            [(header::SET_COOKIE, session::set_form_cookie(&nonce, over_tls(&server, &headers)))],
            Html(page.render().map_err(internal)?),
        )
            .into_response());
    };
    let hash = server.directory().users.token_hash(&person.login).map(String::from);
    let cookie = super::auth::open_session(&server, &person, hash, &[]).await.map_err(internal)?;
    Ok(([(header::SET_COOKIE, session::set_cookie(&cookie, over_tls(&server, &headers)))], Redirect::to("/ui/")).into_response())
}

#[derive(serde::Deserialize)]
struct CsrfForm {
    #[serde(default)]
    csrf: Option<String>,
}

/// Ends the session on the server (the cookie is cleared too).
async fn logout(State(server): State<Server>, headers: HeaderMap, Form(f): Form<CsrfForm>) -> Page {
    if let Some(s) = session(&server, &headers).await {
        if !s.csrf_ok(server.exec.store.key(), f.csrf.as_deref()) {
            return Err(Refusal(StatusCode::FORBIDDEN, "the form's CSRF token is missing or wrong: reload the page".into()));
        }
        super::auth::sign_out(&server, &s).await.map_err(internal)?;
    }
    Ok(([(header::SET_COOKIE, session::clear_cookie(over_tls(&server, &headers)))], Redirect::to("/ui/login")).into_response())
}

#[derive(Template)]
#[template(path = "ui/message.html")]
struct Message {
    title: String,
    message: String,
    user: Option<String>,
    csrf: String,
}

// ---- the inbox ----

/// One measured check of an analysis, for a person.
struct Check {
    name: String,
    phase: String,
    why: String,
    /// The condition it was judged by, as written.
    condition: String,
    /// The measured values in words: the last, and the range.
    values: String,
    chart: String,
}

/// What a person sees of one stage of the run before deciding.
struct Evidence {
    stage: String,
    kind: String,
    state: String,
    message: String,
    checks: Vec<Check>,
    templates: Vec<String>,
}

/// A promotion the decision lets through.
struct Change {
    environment: String,
    file: String,
    from: String,
    to: String,
}

/// A version held by a failed watch, that the signed-in person may clear.
struct HeldItem {
    id: String,
    pipeline: String,
    version: String,
    environment: String,
    run: String,
    why: String,
    at: String,
}

/// A compliance violation waiting for the signed-in person.
struct ViolationItem {
    id: String,
    pipeline: String,
    environment: String,
    denied: String,
    seen: String,
}

/// A drift waiting for the signed-in person.
struct DriftItem {
    id: String,
    pipeline: String,
    environment: String,
    what: String,
    seen: String,
    commits: Vec<String>,
    diff: String,
}

#[derive(Template)]
#[template(path = "ui/inbox.html")]
struct Inbox {
    user: Option<String>,
    csrf: String,
    drifts: Vec<DriftItem>,
    violations: Vec<ViolationItem>,
    held: Vec<HeldItem>,
    decisions: Vec<decision::Decision>,
    total: usize,
    page: usize,
    pages: usize,
    done: Option<String>,
    /// The reason field's message (only the decision's own page shows one).
    error: Option<String>,
    comment: String,
}

/// A small line chart of a check's measured values (SVG), empty without values.
/// A check's measured values, in order, and their range.
fn series(measurements: &[Value]) -> (Vec<f64>, f64, f64) {
    let values: Vec<f64> = measurements.iter().filter_map(|m| m["value"].as_f64()).collect();
    let (lo, hi) = values.iter().fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(*v), hi.max(*v)));
    (values, lo, hi)
}

fn sparkline(measurements: &[Value]) -> String {
    let (values, lo, hi) = series(measurements);
    if values.len() < 2 {
        return String::new();
    }
    let span = if hi > lo { hi - lo } else { 1.0 };
    let (w, h) = (160.0, 32.0);
    let points: Vec<String> = values
        .iter()
        .enumerate()
        .map(|(i, v)| format!("{:.1},{:.1}", i as f64 * w / (values.len() - 1) as f64, h - 2.0 - (v - lo) / span * (h - 4.0)))
        .collect();
    format!(
        r#"<svg class="spark" width="160" height="32" viewBox="0 0 160 32" role="img" aria-label="{} measurements from {} to {}"><polyline fill="none" stroke="currentColor" stroke-width="1.5" points="{}"/></svg>"#,
        values.len(),
        crate::analysis::fmt_f64(lo),
        crate::analysis::fmt_f64(hi),
        points.join(" ")
    )
}

/// `last 0.007 (0.004 to 0.011, 3 measurements)`.
fn values_of(measurements: &[Value]) -> String {
    let (values, lo, hi) = series(measurements);
    let Some(last) = values.last() else { return "no value".into() };
    let f = crate::analysis::fmt_f64;
    if values.len() == 1 { f(*last) } else { format!("last {} ({} to {}, {} measurements)", f(*last), f(lo), f(hi), values.len()) }
}

/// Check `name` of metrics stage `stage`, as the plan has it.
fn check_of<'a>(plan: &'a crate::plan::Plan, stage: &str, name: &str) -> Option<&'a crate::model::MetricCheck> {
    let Some(crate::model::StageKind::Metrics(m)) = plan.pipeline.stages.iter().find(|s| s.name.value == stage).map(|s| &s.kind) else { return None };
    m.checks.iter().find(|c| c.name.value == name)
}

/// The stages a person sees as evidence (started, other than `except`), each with its output.
fn judged<'a>(stages: &'a [crate::store::StageRecord], except: &'a str) -> impl Iterator<Item = (&'a crate::store::StageRecord, Value)> + 'a {
    stages
        .iter()
        .filter(move |s| s.name != except && !matches!(s.state, StageState::Pending | StageState::Skipped))
        .map(|s| (s, s.output.clone().unwrap_or(Value::Null)))
}

/// The metrics checks in a stage's output: each one's JSON and its measurements.
fn checks_in(out: &Value) -> impl Iterator<Item = (&Value, &[Value])> {
    out["metrics"]["checks"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|c| (c, c["measurements"].as_array().map(Vec::as_slice).unwrap_or_default()))
}

/// The condition check `name` of metrics stage `stage` was written with.
fn condition_of(plan: &crate::plan::Plan, stage: &str, name: &str) -> String {
    let Some(c) = check_of(plan, stage, name) else { return String::new() };
    match (&c.success_condition, &c.failure_condition) {
        (Some(ok), Some(bad)) => format!("passes if {}, fails if {}", ok.value, bad.value),
        (Some(ok), None) => format!("passes if {}", ok.value),
        (None, Some(bad)) => format!("fails if {}", bad.value),
        (None, None) => c.compare.as_ref().map_or(String::new(), |_| "compared with the baseline".into()),
    }
}

fn evidence_of(plan: &crate::plan::Plan, stages: &[crate::store::StageRecord], except: &str) -> Vec<Evidence> {
    judged(stages, except)
        .map(|(s, out)| {
            let checks = checks_in(&out)
                .map(|(c, measured)| {
                    let name = c["name"].as_str().unwrap_or_default().to_string();
                    Check {
                        condition: condition_of(plan, &s.name, &name),
                        values: values_of(measured),
                        chart: sparkline(measured),
                        phase: c["phase"].as_str().unwrap_or_default().to_string(),
                        why: c["why"].as_str().unwrap_or_default().to_string(),
                        name,
                    }
                })
                .collect();
            let templates = out["logs"]["verdict"]["findings"]
                .as_array()
                .map(|fs| {
                    fs.iter()
                        .map(|f| {
                            let sample = f["samples"][0].as_str().map(|x| format!(" — e.g. {}", crate::redact::text(x))).unwrap_or_default();
                            format!(
                                "{} ({}): {}{sample}",
                                f["change"].as_str().unwrap_or(""),
                                f["level"].as_str().unwrap_or(""),
                                f["template"].as_str().unwrap_or("")
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            Evidence {
                stage: s.name.clone(),
                kind: s.kind.clone(),
                state: s.state.as_str().to_string(),
                message: crate::redact::text(s.message.as_deref().unwrap_or("")).into_owned(),
                checks,
                templates,
            }
        })
        .collect()
}

/// The deploys a decision on stage `index` lets through, with the value each environment holds
/// now (its last promotion's, from `last`) and the one it will get.
fn changes_after(last: &std::collections::HashMap<(String, String), String>, run: &RunRecord, plan: &crate::plan::Plan, index: usize) -> Vec<Change> {
    let mut out = Vec::new();
    for i in 0..plan.pipeline.stages.len() {
        let Some(env) = plan.deploy_environment(i) else { continue };
        if !plan.is_upstream(index, i) {
            continue;
        }
        let vars = crate::stages::variables_of(run, plan, i);
        let to = crate::git::Destination::value(&env.spec.update.value, |n| vars.get(n).map(String::as_str))
            .unwrap_or_else(|v| format!("(`${{{v}}}` has no value)"));
        let from = last.get(&(run.pipeline.clone(), env.name.value.clone())).cloned().unwrap_or_else(|| "(as it is in the repo)".into());
        out.push(Change { environment: env.name.value.clone(), file: env.spec.file.value.clone(), from, to });
    }
    out
}

/// As [`crate::ops::environments::last_values`], refused as the pages refuse.
async fn last_values(
    server: &Server,
    pipeline: &str,
    plan: &crate::plan::Plan,
    into: &mut std::collections::HashMap<(String, String), String>,
) -> Result<(), Refusal> {
    crate::ops::environments::last_values(&server.exec.store, pipeline, plan, into).await.map_err(internal)
}

#[derive(serde::Deserialize, Default)]
struct InboxQuery {
    #[serde(default)]
    done: Option<String>,
    /// The banner's seal.
    #[serde(default)]
    sig: Option<String>,
    #[serde(default)]
    page: Option<usize>,
}

/// How many decisions the inbox shows in full on a page.
const PER_PAGE: usize = 50;

async fn inbox(State(server): State<Server>, headers: HeaderMap, Query(q): Query<InboxQuery>) -> Page {
    let Some(s) = session(&server, &headers).await else { return Ok(to_login()) };
    let store = &server.exec.store;
    let me = Caller::Person(&s.person);
    let mine = crate::ops::decide::waiting_for(store, &me).await.map_err(internal)?;
    let total = mine.len();
    let page = q.page.unwrap_or(1).max(1);
    let shown: Vec<_> = mine.into_iter().skip((page - 1) * PER_PAGE).take(PER_PAGE).collect();
    // The shown cards' stages whole (`waiting_for` read only names, kinds and states) and their
    // decisions: one read each for the page.
    let mut ids: Vec<String> = shown.iter().map(|w| w.run.id.clone()).collect();
    ids.dedup();
    let full = store.stages_of_runs(&ids).await.map_err(internal)?;
    let mut decided = store.decisions_of_runs(&ids).await.map_err(internal)?;
    let mut last = std::collections::HashMap::new();
    // The plan of each stored source (shared by its runs), from the server's cache of plans.
    let mut plans: std::collections::HashMap<usize, Option<std::sync::Arc<crate::plan::Plan>>> = std::collections::HashMap::new();
    let mut decisions = Vec::with_capacity(shown.len());
    for w in shown {
        let plan = plans.entry(std::sync::Arc::as_ptr(&w.pipeline) as usize).or_insert_with(|| server.plan_of(&w.run)).clone();
        let Some(plan) = plan else { continue };
        let Some(name) = w.stages.get(w.stage).map(|s| s.name.clone()) else { continue };
        let stages = full.get(&w.run.id).map(Vec::as_slice).unwrap_or_default();
        let Some(stage) = stages.iter().find(|s| s.name == name) else { continue };
        let Some(index) = plan.pipeline.stages.iter().position(|x| x.name.value == stage.name) else { continue };
        last_values(&server, &w.run.pipeline, &plan, &mut last).await?;
        let all = decided.remove(&(w.run.id.clone(), name)).unwrap_or_default();
        // `waiting_for` judged already that this person may decide it.
        decisions.push(decision::decision_of(&server, &me, &w.run, stages, stage, &plan, index, &last, all, Some(true)).await?);
    }
    let pages = total.div_ceil(PER_PAGE).max(1);
    // Open drifts of the loaded pipelines this person may decide.
    let pipelines = server.pipelines();
    let mut drifts = Vec::new();
    for d in store.drifts(crate::store::DriftFilter { state: Some(crate::store::DriftState::Open), ..Default::default() }).await.map_err(internal)?.into_iter()
    {
        let Some(loaded) = pipelines.get(&d.pipeline) else { continue };
        let Some(env) = loaded.plan.pipeline.environments.iter().find(|e| e.name.value == d.environment) else { continue };
        if crate::ops::access::allow_listed(&loaded.plan.pipeline, &env.spec.drift.approvers, "drift.approvers", "", &me).is_err() {
            continue;
        }
        drifts.push(DriftItem {
            what: d.describe(),
            seen: crate::clock::rfc3339(d.at),
            commits: d.commits.iter().map(|c| format!("{} {} ({})", &c.id[..c.id.len().min(10)], crate::diag::printable(&c.summary), c.author)).collect(),
            diff: crate::redact::text(&d.diff).chars().take(8000).collect(),
            id: d.id,
            pipeline: d.pipeline,
            environment: d.environment,
        });
    }
    // Open compliance violations this person may decide.
    let mut violations = Vec::new();
    for v in
        store.violations(crate::store::ViolationFilter { state: Some(crate::store::ViolationState::Open), ..Default::default() }).await.map_err(internal)?
    {
        let Some(loaded) = pipelines.get(&v.pipeline) else { continue };
        let Some(env) = loaded.plan.environment(&v.environment) else { continue };
        if crate::ops::access::allow_listed(&loaded.plan.pipeline, &env.spec.drift.approvers, "drift.approvers", "", &me).is_err() {
            continue;
        }
        violations.push(ViolationItem {
            denied: crate::diag::printable(&v.deny.0.join("; ")).into_owned(),
            seen: crate::clock::rfc3339(v.at),
            id: v.id,
            pipeline: v.pipeline,
            environment: v.environment,
        });
    }
    // Versions held by a failed watch that this person may clear.
    let held: Vec<HeldItem> = crate::ops::watch::held_for(store, &me)
        .await
        .map_err(internal)?
        .into_iter()
        .map(|w| HeldItem {
            why: crate::diag::printable(w.message.as_deref().unwrap_or("")).into_owned(),
            at: w.ended_at.map(crate::clock::rfc3339).unwrap_or_default(),
            id: w.id,
            pipeline: w.pipeline,
            version: w.version,
            environment: w.environment,
            run: w.run,
        })
        .collect();
    let csrf = s.csrf(store.key());
    let total = total + drifts.len() + violations.len() + held.len();
    let done = banner(store.key(), q.done, q.sig);
    html(Inbox { user: Some(s.user), csrf, drifts, violations, held, decisions, total, page, pages, done, error: None, comment: String::new() })
}

#[derive(serde::Deserialize)]
struct DecideForm {
    #[serde(default)]
    csrf: Option<String>,
    run: String,
    stage: String,
    decision: String,
    #[serde(default)]
    comment: Option<String>,
    /// `run`: back to the run's page after the decision; else the inbox.
    #[serde(default)]
    back: Option<String>,
}

async fn decide(State(server): State<Server>, headers: HeaderMap, Form(f): Form<DecideForm>) -> Page {
    let s = poster(&server, &headers, f.csrf.as_deref()).await?;
    let store = &server.exec.store;
    let mode = match f.decision.as_str() {
        "approve" => Mode::Approve,
        "reject" => Mode::Reject,
        other => return Err(Refusal(StatusCode::BAD_REQUEST, format!("`{}`: a decision is approve or reject", crate::diag::printable(other)))),
    };
    // Who may decide is checked here, on the server: 403 for anyone else, whatever they post.
    let me = Caller::Person(&s.person);
    let action = format!("to {} `{}` of run {}", f.decision, f.stage, f.run);
    if let Err(e) = crate::ops::decide::may_decide(store, &f.run, &f.stage, &me, mode).await.map_err(internal)? {
        return after(&server, &s, &action, "/ui/", Err(e)).await;
    }
    let comment = f.comment.as_deref().map(str::trim).filter(|c| !c.is_empty());
    if mode == Mode::Reject && comment.is_none() {
        // Asked in place: the decision's page again, the message next to its reason field.
        return decision::reason_missing(&server, &s, &f.run, &f.stage).await;
    }
    let request = crate::ops::decide::Request { run: &f.run, stage: &f.stage, mode, comment, caller: me };
    let back = if f.back.as_deref() == Some("run") { format!("/ui/runs/{}", f.run) } else { "/ui/".into() };
    after(&server, &s, &action, &back, crate::ops::decide::decide(store, &request).await).await
}

#[derive(serde::Deserialize)]
struct DriftForm {
    #[serde(default)]
    csrf: Option<String>,
    id: String,
    decision: String,
    #[serde(default)]
    reason: Option<String>,
}

async fn decide_drift(State(server): State<Server>, headers: HeaderMap, Form(f): Form<DriftForm>) -> Page {
    use crate::ops::drift::{Decision, Verdict};
    let s = poster(&server, &headers, f.csrf.as_deref()).await?;
    let store = &server.exec.store;
    let verdict = match f.decision.as_str() {
        "accept" => Verdict::Accept,
        "reject" => Verdict::Reject,
        other => return Err(Refusal(StatusCode::BAD_REQUEST, format!("`{}`: a drift is accepted or rejected", crate::diag::printable(other)))),
    };
    let Some(drift) = store.drift(&f.id).await.map_err(internal)? else {
        return Err(Refusal(StatusCode::NOT_FOUND, format!("no drift `{}`", crate::diag::printable(&f.id))));
    };
    let pipelines = server.pipelines();
    let Some(loaded) = pipelines.get(&drift.pipeline) else {
        return Err(Refusal(StatusCode::NOT_FOUND, format!("pipeline `{}` is not loaded", drift.pipeline)));
    };
    let base = loaded.file.parent().unwrap_or(std::path::Path::new("."));
    let reason = f.reason.as_deref().map(str::trim).filter(|r| !r.is_empty());
    if matches!(verdict, Verdict::Reject) && reason.is_none() {
        // Asked in place: the drift's page again, the message next to its reason field.
        return drift::reason_missing(&server, &s, &f.id).await;
    }
    let d = Decision { id: &f.id, verdict, reason, caller: Caller::Person(&s.person) };
    let action = format!("to {} drift {}", f.decision, f.id);
    after(&server, &s, &action, "/ui/", crate::ops::drift::decide(store, &server.exec.writer, &loaded.plan, base, &d).await).await
}

#[derive(serde::Deserialize)]
struct ClearForm {
    #[serde(default)]
    csrf: Option<String>,
    id: String,
    #[serde(default)]
    reason: String,
}

/// Clears a held version, as `promote watch clear`, by the signed-in person.
async fn clear_watch(State(server): State<Server>, headers: HeaderMap, Form(f): Form<ClearForm>) -> Page {
    let s = poster(&server, &headers, f.csrf.as_deref()).await?;
    let store = &server.exec.store;
    let c = crate::ops::watch::Clear { id: &f.id, reason: f.reason.trim(), caller: Caller::Person(&s.person) };
    let action = format!("to clear the hold of watch {}", f.id);
    after(&server, &s, &action, "/ui/", crate::ops::watch::clear(store, &c).await).await
}

/// The person posting a form: signed in, and the form's CSRF token theirs (refused otherwise,
/// before anything of the form is acted on).
async fn poster(server: &Server, headers: &HeaderMap, csrf: Option<&str>) -> Result<Session, Refusal> {
    let Some(s) = session(server, headers).await else { return Err(Refusal(StatusCode::UNAUTHORIZED, "sign in first".into())) };
    if !s.csrf_ok(server.exec.store.key(), csrf) {
        return Err(Refusal(StatusCode::FORBIDDEN, "the form's CSRF token is missing or wrong: reload the page and try again".into()));
    }
    Ok(s)
}

/// What an action through `ops` gives a form: back to `page` saying what was done (the banner's
/// text sealed, so that no link can put words there), or the refusal (403 for a rule of
/// `access:`, recorded in the trail; 409 for a decision made already).
async fn after(server: &Server, s: &Session, action: &str, page: &str, done: Result<String, crate::ops::OpsError>) -> Page {
    use crate::ops::OpsError;
    match done {
        Ok(line) => {
            let sig = server.exec.store.key().mac("banner", &[Some(line.as_bytes())]);
            let text = url::form_urlencoded::byte_serialize(line.as_bytes()).collect::<String>();
            Ok(Redirect::to(&format!("{page}?done={text}&sig={sig}")).into_response())
        }
        Err(OpsError::Refused(why)) => Err(Refusal(StatusCode::BAD_REQUEST, why)),
        Err(OpsError::Forbidden(why)) => {
            crate::ops::access::refused(&server.exec.store, &s.person, action, &why).await;
            Err(Refusal(StatusCode::FORBIDDEN, why))
        }
        Err(OpsError::Conflict(why)) => Err(Refusal(StatusCode::CONFLICT, why)),
        Err(e) => Err(internal(e)),
    }
}

/// The loaded pipeline `name`, when the signed-in person may view it (404 when it is not loaded,
/// 403 naming the rule otherwise).
fn viewable(server: &Server, s: &Session, name: &str) -> Result<crate::server::pipelines::Loaded, Refusal> {
    let pipelines = server.pipelines();
    let Some(loaded) = pipelines.get(name) else {
        return Err(Refusal(StatusCode::NOT_FOUND, format!("pipeline `{name}` is not loaded")));
    };
    if !crate::ops::access::holds(&loaded.plan.pipeline, crate::ops::access::Permission::View, None, &s.person) {
        return Err(Refusal(StatusCode::FORBIDDEN, format!("{} may not see pipeline {name}: that needs its `access.view`", s.user)));
    }
    Ok(loaded.clone())
}

/// The banner's text, when it carries the server's seal (an action's own redirect).
fn banner(key: &crate::seal::Key, done: Option<String>, sig: Option<String>) -> Option<String> {
    let done = done?;
    key.verify_hex(&key.mac("banner", &[Some(done.as_bytes())]), sig.as_deref()).then(|| crate::diag::printable(&done).into_owned())
}

/// Whether the person may see what belongs to a run (its pipeline's `access.view`).
fn sees(server: &Server, s: &Session, run: &RunRecord) -> bool {
    super::api::may_view(server, &s.person, &run.pipeline, Some(run))
}

// ---- runs ----

struct RunRow {
    id: String,
    pipeline: String,
    version: String,
    state: String,
    triggered_by: String,
    created: String,
}

impl From<RunRecord> for RunRow {
    fn from(r: RunRecord) -> RunRow {
        RunRow {
            created: crate::clock::rfc3339(r.created_at),
            state: r.state.as_str().to_string(),
            id: r.id,
            pipeline: r.pipeline,
            version: r.version,
            triggered_by: r.triggered_by,
        }
    }
}

#[derive(Template)]
#[template(path = "ui/runs.html")]
struct Runs {
    user: Option<String>,
    csrf: String,
    runs: Vec<RunRow>,
    pipeline: String,
    state: String,
    version: String,
}

#[derive(serde::Deserialize, Default)]
struct RunsQuery {
    #[serde(default)]
    pipeline: String,
    #[serde(default)]
    state: String,
    #[serde(default)]
    version: String,
}

async fn runs(State(server): State<Server>, headers: HeaderMap, Query(q): Query<RunsQuery>) -> Page {
    let Some(s) = session(&server, &headers).await else { return Ok(to_login()) };
    let all = server.exec.store.runs(2000).await.map_err(internal)?;
    let runs = all
        .into_iter()
        .filter(|r| sees(&server, &s, r))
        .filter(|r| q.pipeline.is_empty() || r.pipeline == q.pipeline)
        .filter(|r| q.state.is_empty() || r.state.as_str() == q.state)
        .filter(|r| q.version.is_empty() || r.version.contains(&q.version))
        .take(200)
        .map(RunRow::from)
        .collect();
    let csrf = s.csrf(server.exec.store.key());
    html(Runs { user: Some(s.user), csrf, runs, pipeline: q.pipeline, state: q.state, version: q.version })
}

struct StageRow {
    name: String,
    kind: String,
    state: String,
    attempt: i64,
    message: String,
    decided: Vec<String>,
}

struct EventRow {
    time: String,
    stage: String,
    kind: String,
    actor: String,
    detail: String,
}

#[derive(Template)]
#[template(path = "ui/run.html")]
struct RunPage {
    user: Option<String>,
    csrf: String,
    run: RunRow,
    svg: String,
    stages: Vec<StageRow>,
    unlisted: usize,
    events: Vec<EventRow>,
    earlier: usize,
    live: bool,
    /// The number of the newest entry shown: the script streams only those after it.
    last_entry: i64,
    /// The decisions waiting on this run that the signed-in person may make.
    decisions: Vec<decision::Decision>,
    done: Option<String>,
    error: Option<String>,
    comment: String,
}

/// How many stages a run page's table lists (a bigger run is in its DAG whole).
const MAX_ROWS: usize = 300;

/// How many of a run's entries its page shows (the newest).
const MAX_EVENTS: usize = 300;

/// How many waiting decisions of one run its page asks `ops` about (each reads the run's pipeline).
const MAX_DECISIONS: usize = 10;

async fn run(State(server): State<Server>, headers: HeaderMap, Path(id): Path<String>, Query(q): Query<InboxQuery>) -> Page {
    let Some(s) = session(&server, &headers).await else { return Ok(to_login()) };
    let store = &server.exec.store;
    let run = match store.run(&id).await {
        Ok(r) => r,
        Err(crate::store::StoreError::UnknownRun { .. }) => return Err(Refusal(StatusCode::NOT_FOUND, format!("no run `{}`", crate::diag::printable(&id)))),
        Err(e) => return Err(internal(e)),
    };
    if !sees(&server, &s, &run) {
        return Err(Refusal(StatusCode::FORBIDDEN, format!("{} may not see runs of pipeline {}: that needs its `access.view`", s.user, run.pipeline)));
    }
    let stages = store.stages_kept(&id).await.map_err(internal)?;
    let plan = server.plan_of(&run);
    let svg = match &plan {
        Some(plan) => dag::svg(plan, |i| stages.get(i).map_or("pending", |r| r.state.as_str())),
        None => String::new(),
    };
    // The same controls as the inbox, for the stages waiting on this person (ops's rule).
    let mut decisions = Vec::new();
    if let Some(plan) = &plan
        && run.state == crate::store::RunState::Running
    {
        let me = Caller::Person(&s.person);
        let mut last = std::collections::HashMap::new();
        for st in stages.iter().filter(|x| x.state == StageState::Waiting && matches!(x.kind.as_str(), "approval" | "metrics")).take(MAX_DECISIONS) {
            if crate::ops::decide::may_decide(store, &id, &st.name, &me, Mode::Approve).await.map_err(internal)?.is_err() {
                continue;
            }
            let Some(index) = plan.pipeline.stages.iter().position(|x| x.name.value == st.name) else { continue };
            last_values(&server, &run.pipeline, plan, &mut last).await?;
            let all = store.decisions(&id, &st.name).await.map_err(internal)?;
            decisions.push(decision::decision_of(&server, &me, &run, &stages, st, plan, index, &last, all, Some(true)).await?);
        }
    }
    let mut rows = Vec::new();
    // The table lists what needs eyes first (not succeeded), then the rest in file order, up to
    // MAX_ROWS; the DAG shows every stage.
    let mut listed: Vec<&crate::store::StageRecord> = stages.iter().filter(|s| s.state != StageState::Succeeded).collect();
    listed.extend(stages.iter().filter(|s| s.state == StageState::Succeeded));
    let unlisted = listed.len().saturating_sub(MAX_ROWS);
    listed.truncate(MAX_ROWS);
    if unlisted > 0 {
        // Keep file order among those listed.
        let order: std::collections::HashMap<&str, usize> = stages.iter().enumerate().map(|(i, s)| (s.name.as_str(), i)).collect();
        listed.sort_by_key(|s| order[s.name.as_str()]);
    }
    for st in listed {
        // Only these kinds take decisions (a 5,000-stage run asks once per such stage).
        let decides = matches!(st.kind.as_str(), "approval" | "metrics" | "webhook" | "deploy");
        let decided = if decides { store.decisions(&id, &st.name).await.map_err(internal)? } else { Vec::new() }
            .into_iter()
            .map(|d| format!("{} by {}{}", if d.approve { "approved" } else { "rejected" }, d.user, d.comment.map(|c| format!(": {c}")).unwrap_or_default()))
            .collect();
        rows.push(StageRow {
            name: st.name.clone(),
            kind: st.kind.clone(),
            state: st.state.as_str().to_string(),
            attempt: st.attempt,
            message: crate::redact::text(st.message.as_deref().unwrap_or("")).into_owned(),
            decided,
        });
    }
    // The newest entries; the whole history is the audit page's, filtered by the run.
    let (newest, total) = store.last_events(&id, MAX_EVENTS as i64).await.map_err(internal)?;
    let earlier = (total as usize).saturating_sub(newest.len());
    let last_entry = newest.iter().map(|e| e.id).max().unwrap_or(0);
    let events = newest
        .into_iter()
        .map(|e| EventRow {
            time: crate::clock::rfc3339(e.at),
            stage: e.stage.unwrap_or_default(),
            kind: e.kind,
            actor: e.actor,
            detail: crate::redact::text(&e.detail).into_owned(),
        })
        .collect();
    let live = run.state == crate::store::RunState::Running;
    let row = RunRow::from(run);
    let csrf = s.csrf(store.key());
    let done = banner(store.key(), q.done, q.sig);
    html(RunPage {
        user: Some(s.user),
        csrf,
        run: row,
        svg,
        stages: rows,
        unlisted,
        events,
        earlier,
        live,
        last_entry,
        decisions,
        done,
        error: None,
        comment: String::new(),
    })
}

/// `GET /ui/runs/{id}/state`: the run's and its stages' states, for the page's script.
async fn run_state(State(server): State<Server>, headers: HeaderMap, Path(id): Path<String>) -> Page {
    let Some(s) = session(&server, &headers).await else {
        return Err(Refusal(StatusCode::UNAUTHORIZED, "sign in first".into()));
    };
    let store = &server.exec.store;
    let run = store.run(&id).await.map_err(|e| Refusal(StatusCode::NOT_FOUND, e.to_string()))?;
    if !sees(&server, &s, &run) {
        return Err(Refusal(StatusCode::FORBIDDEN, format!("{} may not see runs of pipeline {}", s.user, run.pipeline)));
    }
    let stages: Vec<Value> = store
        .stages(&id)
        .await
        .map_err(internal)?
        .into_iter()
        .map(|s| serde_json::json!({"name": s.name, "state": s.state.as_str(), "attempt": s.attempt, "message": crate::redact::text(s.message.as_deref().unwrap_or(""))}))
        .collect();
    Ok(axum::Json(serde_json::json!({"state": run.state.as_str(), "stages": stages})).into_response())
}

/// `GET /ui/runs/{id}/events`: the run's entries as server-sent events, for the signed-in.
/// Only entries after `Last-Event-ID` or `?after=N` (the page's last rendered entry).
async fn run_events(State(server): State<Server>, headers: HeaderMap, Path(id): Path<String>, Query(q): Query<super::api::StreamQuery>) -> Response {
    let Some(s) = session(&server, &headers).await else {
        return Refusal(StatusCode::UNAUTHORIZED, "sign in first".into()).into_response();
    };
    match server.exec.store.run(&id).await {
        Ok(run) if sees(&server, &s, &run) => {}
        Ok(run) => return Refusal(StatusCode::FORBIDDEN, format!("{} may not see runs of pipeline {}", s.user, run.pipeline)).into_response(),
        Err(e) => return Refusal(StatusCode::NOT_FOUND, e.to_string()).into_response(),
    }
    let after = super::api::resume_after(&headers, &q);
    super::api::event_stream(server.exec.store.clone(), id, after).await.into_response()
}

// ---- environments ----

struct Cell {
    version: String,
    since: String,
    run: String,
    approved_by: Vec<String>,
    history: Vec<(String, String, String)>,
}

struct Row {
    pipeline: String,
    cells: Vec<(String, Option<Cell>)>,
}

#[derive(Template)]
#[template(path = "ui/environments.html")]
struct Environments {
    user: Option<String>,
    csrf: String,
    rows: Vec<Row>,
    done: Option<String>,
}

async fn environments(State(server): State<Server>, headers: HeaderMap, Query(q): Query<InboxQuery>) -> Page {
    let Some(s) = session(&server, &headers).await else { return Ok(to_login()) };
    let store = &server.exec.store;
    let pipelines = server.pipelines();
    let loaded: Vec<(&str, &crate::plan::Plan)> = pipelines.by_name.iter().map(|(name, l)| (name.as_str(), &*l.plan)).collect();
    let board = crate::ops::environments::board(store, &s.person, loaded, |run| server.plan_of(run)).await.map_err(internal)?;
    let rows = board
        .into_iter()
        .map(|r| Row {
            pipeline: r.pipeline,
            cells: r
                .environments
                .into_iter()
                .map(|(env, holding)| {
                    let cell = holding.map(|h| Cell {
                        version: h.version,
                        since: crate::clock::rfc3339(h.since),
                        run: h.run,
                        approved_by: h.approved_by,
                        history: h.history.into_iter().map(|(run, version, state)| (run, version, state.as_str().to_string())).collect(),
                    });
                    (env, cell)
                })
                .collect(),
        })
        .collect();
    let csrf = s.csrf(store.key());
    let done = banner(store.key(), q.done, q.sig);
    html(Environments { user: Some(s.user), csrf, rows, done })
}

#[derive(serde::Deserialize)]
struct RollbackForm {
    #[serde(default)]
    csrf: Option<String>,
    pipeline: String,
    environment: String,
}

async fn rollback(State(server): State<Server>, headers: HeaderMap, Form(f): Form<RollbackForm>) -> Page {
    let s = poster(&server, &headers, f.csrf.as_deref()).await?;
    let pipelines = server.pipelines();
    let Some(loaded) = pipelines.get(&f.pipeline) else { return Err(Refusal(StatusCode::NOT_FOUND, format!("no pipeline `{}` is loaded", f.pipeline))) };
    let shown = loaded.file.display().to_string();
    let base = loaded.file.parent().unwrap_or(std::path::Path::new("."));
    let request = crate::ops::rollback::Request {
        plan: &loaded.plan,
        shown: &shown,
        base,
        environment: &f.environment,
        target: crate::git::RollbackTarget::Latest,
        caller: Caller::Person(&s.person),
    };
    let action = format!("to roll back {} of {}", f.environment, f.pipeline);
    let done = crate::ops::rollback::rollback(&server.exec.store, &server.exec.writer, request).await;
    let done = match done {
        Ok(d) if d.result.is_err() => Err(crate::ops::OpsError::Conflict(d.line)),
        other => other.map(|d| d.line),
    };
    after(&server, &s, &action, "/ui/environments", done).await
}

// ---- audit ----

#[derive(Template)]
#[template(path = "ui/audit.html")]
struct Audit {
    user: Option<String>,
    csrf: String,
    entries: Vec<(i64, EventRow, String)>,
    intact: bool,
    problem: String,
    total: i64,
    run: String,
    kind: String,
    actor: String,
}

#[derive(serde::Deserialize, Default)]
struct AuditQuery {
    #[serde(default)]
    run: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    actor: String,
}

async fn audit(State(server): State<Server>, headers: HeaderMap, Query(q): Query<AuditQuery>) -> Page {
    let Some(s) = session(&server, &headers).await else { return Ok(to_login()) };
    let store = &server.exec.store;
    let last = store.last_entry().await.map_err(internal)?;
    let run = (!q.run.is_empty()).then_some(q.run.as_str());
    let visible = super::api::Visible::of(&server, &s.person).await.map_err(internal)?;
    // The newest 500 entries that pass the filters.
    let from = if run.is_some() { 0 } else { (last - 5000).max(0) };
    let mut entries: Vec<(i64, EventRow, String)> = store
        .audit_entries(run, from, 5000)
        .await
        .map_err(internal)?
        .into_iter()
        .filter(|e| q.kind.is_empty() || e.kind == q.kind)
        .filter(|e| q.actor.is_empty() || e.actor == q.actor)
        .filter(|e| visible.sees(&e.run))
        .map(|e| {
            let row = EventRow {
                time: e.time.clone(),
                stage: e.stage.clone().unwrap_or_default(),
                kind: e.kind.clone(),
                actor: e.actor.clone(),
                detail: crate::redact::text(&e.detail).into_owned(),
            };
            (e.seq, row, e.run)
        })
        .collect();
    entries.reverse();
    entries.truncate(500);
    let v = crate::ops::audit::verify(&server.exec, &[], &[]).await.map_err(internal)?;
    let csrf = s.csrf(store.key());
    html(Audit {
        user: Some(s.user),
        csrf,
        entries,
        intact: v.tamper.is_none(),
        problem: v.tamper.map(|t| t.to_string()).unwrap_or_default(),
        total: v.entries as i64,
        run: q.run,
        kind: q.kind,
        actor: q.actor,
    })
}
