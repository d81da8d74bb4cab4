//! `/ui/`: the runs list, a run's page with its DAG drawn live, and its state and events.

use super::*;

pub(super) struct RunRow {
    pub(super) id: String,
    pub(super) pipeline: String,
    pub(super) version: String,
    pub(super) state: String,
    pub(super) triggered_by: String,
    pub(super) created: String,
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
pub(super) struct Runs {
    pub(super) user: Option<String>,
    pub(super) csrf: String,
    pub(super) runs: Vec<RunRow>,
    pub(super) pipeline: String,
    pub(super) state: String,
    pub(super) version: String,
}

#[derive(serde::Deserialize, Default)]
pub(super) struct RunsQuery {
    #[serde(default)]
    pub(super) pipeline: String,
    #[serde(default)]
    pub(super) state: String,
    #[serde(default)]
    pub(super) version: String,
}

pub(super) async fn runs(State(server): State<Server>, headers: HeaderMap, Query(q): Query<RunsQuery>) -> Page {
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

pub(super) struct StageRow {
    pub(super) name: String,
    pub(super) kind: String,
    pub(super) state: String,
    pub(super) attempt: i64,
    pub(super) message: String,
    pub(super) decided: Vec<String>,
}

pub(super) struct EventRow {
    pub(super) time: String,
    pub(super) stage: String,
    pub(super) kind: String,
    pub(super) actor: String,
    pub(super) detail: String,
}

#[derive(Template)]
#[template(path = "ui/run.html")]
pub(super) struct RunPage {
    pub(super) user: Option<String>,
    pub(super) csrf: String,
    pub(super) run: RunRow,
    pub(super) svg: String,
    pub(super) stages: Vec<StageRow>,
    pub(super) unlisted: usize,
    pub(super) events: Vec<EventRow>,
    pub(super) earlier: usize,
    pub(super) live: bool,
    /// The number of the newest entry shown: the script streams only those after it.
    pub(super) last_entry: i64,
    /// The decisions waiting on this run that the signed-in person may make.
    pub(super) decisions: Vec<decision::Decision>,
    pub(super) done: Option<String>,
    pub(super) error: Option<String>,
    pub(super) comment: String,
}

/// How many stages a run page's table lists (a bigger run is in its DAG whole).
pub(super) const MAX_ROWS: usize = 300;

/// How many of a run's entries its page shows (the newest).
pub(super) const MAX_EVENTS: usize = 300;

/// How many waiting decisions of one run its page asks `ops` about (each reads the run's pipeline).
pub(super) const MAX_DECISIONS: usize = 10;

pub(super) async fn run(State(server): State<Server>, headers: HeaderMap, Path(id): Path<String>, Query(q): Query<InboxQuery>) -> Page {
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
    let plan = server.plan_of(&run);
    let me = Caller::Person(&s.person);
    let limits = crate::ops::runs::Limits { rows: MAX_ROWS, entries: MAX_EVENTS, decisions: MAX_DECISIONS };
    let v = crate::ops::runs::view(store, &run, plan.as_deref(), &me, limits).await.map_err(internal)?;
    let stages = &v.stages;
    let svg = match &plan {
        Some(plan) => dag::svg(plan, |i| stages.get(i).map_or("pending", |r| r.state.as_str())),
        None => String::new(),
    };
    // The same controls as the inbox, for the stages waiting on this person.
    let mut decisions = Vec::new();
    if let Some(plan) = &plan {
        let mut last = std::collections::HashMap::new();
        for &index in &v.yours {
            let name = &plan.pipeline.stages[index].name.value;
            let Some(st) = stages.iter().find(|x| x.name == *name) else { continue };
            last_values(&server, &run.pipeline, plan, &mut last).await?;
            let all = store.decisions(&id, &st.name).await.map_err(internal)?;
            decisions.push(decision::decision_of(&server, &me, &run, stages, st, plan, index, &last, all, Some(true)).await?);
        }
    }
    let rows = v
        .rows
        .into_iter()
        .map(|r| StageRow {
            decided: r
                .decided
                .into_iter()
                .map(|d| {
                    format!("{} by {}{}", if d.approve { "approved" } else { "rejected" }, d.user, d.comment.map(|c| format!(": {c}")).unwrap_or_default())
                })
                .collect(),
            name: r.stage.name,
            kind: r.stage.kind,
            state: r.stage.state.as_str().to_string(),
            attempt: r.stage.attempt,
            message: crate::redact::text(r.stage.message.as_deref().unwrap_or("")).into_owned(),
        })
        .collect();
    let (unlisted, earlier, last_entry, live) = (v.unlisted, v.earlier, v.last_entry, v.live);
    let events = v
        .entries
        .into_iter()
        .map(|e| EventRow {
            time: crate::clock::rfc3339(e.at),
            stage: e.stage.unwrap_or_default(),
            kind: e.kind,
            actor: e.actor,
            detail: crate::redact::text(&e.detail).into_owned(),
        })
        .collect();
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
pub(super) async fn run_state(State(server): State<Server>, headers: HeaderMap, Path(id): Path<String>) -> Page {
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
pub(super) async fn run_events(
    State(server): State<Server>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<crate::server::api::StreamQuery>,
) -> Response {
    let Some(s) = session(&server, &headers).await else {
        return Refusal(StatusCode::UNAUTHORIZED, "sign in first".into()).into_response();
    };
    match server.exec.store.run(&id).await {
        Ok(run) if sees(&server, &s, &run) => {}
        Ok(run) => return Refusal(StatusCode::FORBIDDEN, format!("{} may not see runs of pipeline {}", s.user, run.pipeline)).into_response(),
        Err(e) => return Refusal(StatusCode::NOT_FOUND, e.to_string()).into_response(),
    }
    let after = crate::server::api::resume_after(&headers, &q);
    crate::server::api::event_stream(server.exec.store.clone(), id, after).await.into_response()
}
