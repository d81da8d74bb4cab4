//! A run's report page (`/ui/runs/{id}/report`): what the run changed (each environment's diff),
//! what its evidence saw (each check's values drawn as a small chart, each new or grown log
//! template with samples), what else changed everywhere in the window on one timeline, and what
//! was decided. The view model is `ops::report`'s; this only draws it. Linked from the run page
//! and from the `stage-failed`, `rollback` and `watch-failed` notes.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};

use super::{Page, Refusal, Server, internal};
use crate::ops::report::{CheckEvidence, Report};

struct Check {
    stage: String,
    name: String,
    phase: String,
    why: String,
    /// The chart (SVG), empty with fewer than two values.
    chart: String,
    /// `0.011 → 0.31 (0.009 to 0.31)`.
    values: String,
}

struct Entry {
    time: String,
    kind: String,
    own: bool,
    run: String,
    actor: String,
    detail: String,
}

#[derive(Template)]
#[template(path = "ui/report.html")]
struct ReportPage {
    user: Option<String>,
    /// The sign-out form's token.
    csrf: String,
    r: Report,
    /// Still running: no end to speak of yet.
    running: bool,
    failed: String,
    from: String,
    to: String,
    checks: Vec<Check>,
    timeline: Vec<Entry>,
    decisions: Vec<(String, String)>,
}

#[derive(serde::Deserialize)]
pub(super) struct ReportQuery {
    #[serde(default)]
    window: Option<String>,
}

/// A check's values as a line over time, its first and last values and its range labelled.
fn chart(c: &CheckEvidence) -> String {
    let Some((_, _, lo, hi)) = c.range() else { return String::new() };
    if c.values.len() < 2 {
        return String::new();
    }
    let (t0, t1) = (c.values[0].0, c.values[c.values.len() - 1].0);
    let (w, h, pad) = (320.0, 80.0, 4.0);
    let span = if hi > lo { hi - lo } else { 1.0 };
    let tspan = if t1 > t0 { (t1 - t0) as f64 } else { 1.0 };
    let points: Vec<String> = c
        .values
        .iter()
        .map(|(t, v)| format!("{:.1},{:.1}", pad + (*t - t0) as f64 / tspan * (w - 2.0 * pad), h - pad - (v - lo) / span * (h - 2.0 * pad)))
        .collect();
    let f = crate::analysis::fmt_f64;
    format!(
        r#"<svg class="chart" width="320" height="80" viewBox="0 0 320 80" style="max-width:100%;height:auto" role="img" aria-label="{name}: {n} values from {first} to {last}, between {lo} and {hi}"><line x1="4" y1="76" x2="316" y2="76" stroke="currentColor" stroke-opacity="0.3"/><polyline fill="none" stroke="currentColor" stroke-width="1.5" points="{points}"/><text x="4" y="12" font-size="10">{hi}</text><text x="4" y="74" font-size="10">{lo}</text></svg>"#,
        name = askama::filters::escape(&c.name, askama::filters::Html).map(|e| e.to_string()).unwrap_or_default(),
        n = c.values.len(),
        first = f(c.values[0].1),
        last = f(c.values[c.values.len() - 1].1),
        lo = f(lo),
        hi = f(hi),
        points = points.join(" ")
    )
}

/// `GET /ui/runs/{id}/report[?window=1h]`.
pub(super) async fn page(State(server): State<Server>, headers: HeaderMap, Path(id): Path<String>, Query(q): Query<ReportQuery>) -> Page {
    let Some(s) = super::session(&server, &headers).await else { return Ok(super::to_login()) };
    let run = match server.exec.store.run(&id).await {
        Ok(r) => r,
        Err(crate::store::StoreError::UnknownRun { .. }) => return Err(Refusal(StatusCode::NOT_FOUND, format!("no run `{}`", crate::diag::printable(&id)))),
        Err(e) => return Err(internal(e)),
    };
    if !super::sees(&server, &s, &run) {
        return Err(Refusal(StatusCode::FORBIDDEN, format!("{} may not see runs of pipeline {}: that needs its `access.view`", s.user, run.pipeline)));
    }
    let window = match q.window.as_deref() {
        Some(w) => w.parse::<crate::model::Duration>().map_err(|e| Refusal(StatusCode::BAD_REQUEST, e.to_string()))?.0,
        None => crate::ops::report::DEFAULT_WINDOW,
    };
    let mut r = match crate::ops::report::report(&server.exec.store, &server.exec.writer, &id, window).await {
        Ok(r) => r,
        Err(crate::ops::OpsError::Refused(why)) => return Err(Refusal(StatusCode::BAD_REQUEST, why)),
        Err(e) => return Err(internal(e)),
    };
    let person = s.person.clone();
    r.only_visible(|p| {
        p == run.pipeline
            || server.pipelines().get(p).is_some_and(|l| crate::ops::access::holds(&l.plan.pipeline, crate::ops::access::Permission::View, None, &person))
    });
    let f = crate::analysis::fmt_f64;
    let checks = r
        .checks
        .iter()
        .map(|c| Check {
            stage: c.stage.clone(),
            name: c.name.clone(),
            phase: c.phase.clone(),
            why: crate::diag::printable(&c.why).into_owned(),
            chart: chart(c),
            values: c.range().map(|(a, b, lo, hi)| format!("{} → {} ({} to {})", f(a), f(b), f(lo), f(hi))).unwrap_or_else(|| "no value".into()),
        })
        .collect();
    let timeline = r
        .timeline
        .iter()
        .map(|e| Entry {
            time: crate::clock::rfc3339(e.at),
            kind: e.kind.clone(),
            own: e.own,
            run: e.run.clone(),
            actor: e.actor.clone(),
            detail: crate::diag::printable(&e.detail).into_owned(),
        })
        .collect();
    let decisions = r
        .decisions
        .iter()
        .map(|d| {
            let said = d.comment.as_deref().map(|c| format!(": {}", crate::diag::printable(c))).unwrap_or_default();
            (crate::clock::rfc3339(d.at), format!("{} {} {}{said}", d.user, if d.approve { "approved" } else { "rejected" }, d.stage))
        })
        .collect();
    super::html(ReportPage {
        csrf: s.csrf(server.exec.store.key()),
        user: Some(s.user),
        running: r.state == crate::store::RunState::Running,
        failed: crate::clock::rfc3339(r.failed_at),
        from: crate::clock::rfc3339(r.from),
        to: crate::clock::rfc3339(r.to),
        checks,
        timeline,
        decisions,
        r,
    })
}
