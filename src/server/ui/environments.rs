//! `/ui/`: the environments matrix: what each environment holds, and its rollback.

use super::*;

pub(super) struct Cell {
    pub(super) version: String,
    pub(super) since: String,
    pub(super) run: String,
    pub(super) approved_by: Vec<String>,
    pub(super) history: Vec<(String, String, String)>,
}

pub(super) struct Row {
    pub(super) pipeline: String,
    pub(super) cells: Vec<(String, Option<Cell>)>,
}

#[derive(Template)]
#[template(path = "ui/environments.html")]
pub(super) struct Environments {
    pub(super) user: Option<String>,
    pub(super) csrf: String,
    pub(super) rows: Vec<Row>,
    pub(super) done: Option<String>,
}

pub(super) async fn environments(State(server): State<Server>, headers: HeaderMap, Query(q): Query<InboxQuery>) -> Page {
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
pub(super) struct RollbackForm {
    #[serde(default)]
    pub(super) csrf: Option<String>,
    pub(super) pipeline: String,
    pub(super) environment: String,
}

pub(super) async fn rollback(State(server): State<Server>, headers: HeaderMap, Form(f): Form<RollbackForm>) -> Page {
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
