//! `/ui/`: the inbox: the decisions waiting for the signed-in person, with their evidence.

use super::*;

/// One measured check of an analysis, for a person.
pub(super) struct Check {
    pub(super) name: String,
    pub(super) phase: String,
    pub(super) why: String,
    /// The condition it was judged by, as written.
    pub(super) condition: String,
    /// The measured values in words: the last, and the range.
    pub(super) values: String,
    pub(super) chart: String,
}

/// What a person sees of one stage of the run before deciding.
pub(super) struct Evidence {
    pub(super) stage: String,
    pub(super) kind: String,
    pub(super) state: String,
    pub(super) message: String,
    pub(super) checks: Vec<Check>,
    pub(super) templates: Vec<String>,
}

/// A promotion the decision lets through.
pub(super) struct Change {
    pub(super) environment: String,
    pub(super) file: String,
    pub(super) from: String,
    pub(super) to: String,
}

/// A version held by a failed watch, that the signed-in person may clear.
pub(super) struct HeldItem {
    pub(super) id: String,
    pub(super) pipeline: String,
    pub(super) version: String,
    pub(super) environment: String,
    pub(super) run: String,
    pub(super) why: String,
    pub(super) at: String,
}

/// A compliance violation waiting for the signed-in person.
pub(super) struct ViolationItem {
    pub(super) id: String,
    pub(super) pipeline: String,
    pub(super) environment: String,
    pub(super) denied: String,
    pub(super) seen: String,
}

/// A drift waiting for the signed-in person.
pub(super) struct DriftItem {
    pub(super) id: String,
    pub(super) pipeline: String,
    pub(super) environment: String,
    pub(super) what: String,
    pub(super) seen: String,
    pub(super) commits: Vec<String>,
    pub(super) diff: String,
}

#[derive(Template)]
#[template(path = "ui/inbox.html")]
pub(super) struct Inbox {
    pub(super) user: Option<String>,
    pub(super) csrf: String,
    pub(super) drifts: Vec<DriftItem>,
    pub(super) violations: Vec<ViolationItem>,
    pub(super) held: Vec<HeldItem>,
    pub(super) decisions: Vec<decision::Decision>,
    pub(super) total: usize,
    pub(super) page: usize,
    pub(super) pages: usize,
    pub(super) done: Option<String>,
    /// The reason field's message (only the decision's own page shows one).
    pub(super) error: Option<String>,
    pub(super) comment: String,
}

/// A small line chart of a check's measured values (SVG), empty without values.
/// A check's measured values, in order, and their range.
pub(super) fn series(measurements: &[Value]) -> (Vec<f64>, f64, f64) {
    let values: Vec<f64> = measurements.iter().filter_map(|m| m["value"].as_f64()).collect();
    let (lo, hi) = values.iter().fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(*v), hi.max(*v)));
    (values, lo, hi)
}

pub(super) fn sparkline(measurements: &[Value]) -> String {
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
pub(super) fn values_of(measurements: &[Value]) -> String {
    let (values, lo, hi) = series(measurements);
    let Some(last) = values.last() else { return "no value".into() };
    let f = crate::analysis::fmt_f64;
    if values.len() == 1 { f(*last) } else { format!("last {} ({} to {}, {} measurements)", f(*last), f(lo), f(hi), values.len()) }
}

/// Check `name` of metrics stage `stage`, as the plan has it.
pub(super) fn check_of<'a>(plan: &'a crate::plan::Plan, stage: &str, name: &str) -> Option<&'a crate::model::MetricCheck> {
    let Some(crate::model::StageKind::Metrics(m)) = plan.pipeline.stages.iter().find(|s| s.name.value == stage).map(|s| &s.kind) else { return None };
    m.checks.iter().find(|c| c.name.value == name)
}

/// The stages a person sees as evidence (started, other than `except`), each with its output.
pub(super) fn judged<'a>(stages: &'a [crate::store::StageRecord], except: &'a str) -> impl Iterator<Item = (&'a crate::store::StageRecord, Value)> + 'a {
    stages
        .iter()
        .filter(move |s| s.name != except && !matches!(s.state, StageState::Pending | StageState::Skipped))
        .map(|s| (s, s.output.clone().unwrap_or(Value::Null)))
}

/// The metrics checks in a stage's output: each one's JSON and its measurements.
pub(super) fn checks_in(out: &Value) -> impl Iterator<Item = (&Value, &[Value])> {
    out["metrics"]["checks"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|c| (c, c["measurements"].as_array().map(Vec::as_slice).unwrap_or_default()))
}

/// The condition check `name` of metrics stage `stage` was written with.
pub(super) fn condition_of(plan: &crate::plan::Plan, stage: &str, name: &str) -> String {
    let Some(c) = check_of(plan, stage, name) else { return String::new() };
    match (&c.success_condition, &c.failure_condition) {
        (Some(ok), Some(bad)) => format!("passes if {}, fails if {}", ok.value, bad.value),
        (Some(ok), None) => format!("passes if {}", ok.value),
        (None, Some(bad)) => format!("fails if {}", bad.value),
        (None, None) => c.compare.as_ref().map_or(String::new(), |_| "compared with the baseline".into()),
    }
}

pub(super) fn evidence_of(plan: &crate::plan::Plan, stages: &[crate::store::StageRecord], except: &str) -> Vec<Evidence> {
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
pub(super) fn changes_after(
    last: &std::collections::HashMap<(String, String), String>,
    run: &RunRecord,
    plan: &crate::plan::Plan,
    index: usize,
) -> Vec<Change> {
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
pub(super) async fn last_values(
    server: &Server,
    pipeline: &str,
    plan: &crate::plan::Plan,
    into: &mut std::collections::HashMap<(String, String), String>,
) -> Result<(), Refusal> {
    crate::ops::environments::last_values(&server.exec.store, pipeline, plan, into).await.map_err(internal)
}

#[derive(serde::Deserialize, Default)]
pub(super) struct InboxQuery {
    #[serde(default)]
    pub(super) done: Option<String>,
    /// The banner's seal.
    #[serde(default)]
    pub(super) sig: Option<String>,
    #[serde(default)]
    pub(super) page: Option<usize>,
}

/// How many decisions the inbox shows in full on a page.
pub(super) const PER_PAGE: usize = 50;

pub(super) async fn inbox(State(server): State<Server>, headers: HeaderMap, Query(q): Query<InboxQuery>) -> Page {
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
pub(super) struct DecideForm {
    #[serde(default)]
    pub(super) csrf: Option<String>,
    pub(super) run: String,
    pub(super) stage: String,
    pub(super) decision: String,
    #[serde(default)]
    pub(super) comment: Option<String>,
    /// `run`: back to the run's page after the decision; else the inbox.
    #[serde(default)]
    pub(super) back: Option<String>,
}

pub(super) async fn decide(State(server): State<Server>, headers: HeaderMap, Form(f): Form<DecideForm>) -> Page {
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
pub(super) struct DriftForm {
    #[serde(default)]
    pub(super) csrf: Option<String>,
    pub(super) id: String,
    pub(super) decision: String,
    #[serde(default)]
    pub(super) reason: Option<String>,
}

pub(super) async fn decide_drift(State(server): State<Server>, headers: HeaderMap, Form(f): Form<DriftForm>) -> Page {
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
pub(super) struct ClearForm {
    #[serde(default)]
    pub(super) csrf: Option<String>,
    pub(super) id: String,
    #[serde(default)]
    pub(super) reason: String,
}

/// Clears a held version, as `promote watch clear`, by the signed-in person.
pub(super) async fn clear_watch(State(server): State<Server>, headers: HeaderMap, Form(f): Form<ClearForm>) -> Page {
    let s = poster(&server, &headers, f.csrf.as_deref()).await?;
    let store = &server.exec.store;
    let c = crate::ops::watch::Clear { id: &f.id, reason: f.reason.trim(), caller: Caller::Person(&s.person) };
    let action = format!("to clear the hold of watch {}", f.id);
    after(&server, &s, &action, "/ui/", crate::ops::watch::clear(store, &c).await).await
}

/// The person posting a form: signed in, and the form's CSRF token theirs (refused otherwise,
/// before anything of the form is acted on).
pub(super) async fn poster(server: &Server, headers: &HeaderMap, csrf: Option<&str>) -> Result<Session, Refusal> {
    let Some(s) = session(server, headers).await else { return Err(Refusal(StatusCode::UNAUTHORIZED, "sign in first".into())) };
    if !s.csrf_ok(server.exec.store.key(), csrf) {
        return Err(Refusal(StatusCode::FORBIDDEN, "the form's CSRF token is missing or wrong: reload the page and try again".into()));
    }
    Ok(s)
}

/// What an action through `ops` gives a form: back to `page` saying what was done (the banner's
/// text sealed, so that no link can put words there), or the refusal (403 for a rule of
/// `access:`, recorded in the trail; 409 for a decision made already).
pub(super) async fn after(server: &Server, s: &Session, action: &str, page: &str, done: Result<String, crate::ops::OpsError>) -> Page {
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
pub(super) fn viewable(server: &Server, s: &Session, name: &str) -> Result<crate::server::pipelines::Loaded, Refusal> {
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
pub(super) fn banner(key: &crate::seal::Key, done: Option<String>, sig: Option<String>) -> Option<String> {
    let done = done?;
    key.verify_hex(&key.mac("banner", &[Some(done.as_bytes())]), sig.as_deref()).then(|| crate::diag::printable(&done).into_owned())
}

/// Whether the person may see what belongs to a run (its pipeline's `access.view`).
pub(super) fn sees(server: &Server, s: &Session, run: &RunRecord) -> bool {
    crate::server::api::may_view(server, &s.person, &run.pipeline, Some(run))
}
