//! `/ui/`: the audit trail, verified.

use super::*;

#[derive(Template)]
#[template(path = "ui/audit.html")]
pub(super) struct Audit {
    pub(super) user: Option<String>,
    pub(super) csrf: String,
    pub(super) entries: Vec<(i64, EventRow, String)>,
    pub(super) intact: bool,
    pub(super) problem: String,
    pub(super) total: i64,
    pub(super) run: String,
    pub(super) kind: String,
    pub(super) actor: String,
}

#[derive(serde::Deserialize, Default)]
pub(super) struct AuditQuery {
    #[serde(default)]
    pub(super) run: String,
    #[serde(default)]
    pub(super) kind: String,
    #[serde(default)]
    pub(super) actor: String,
}

pub(super) async fn audit(State(server): State<Server>, headers: HeaderMap, Query(q): Query<AuditQuery>) -> Page {
    let Some(s) = session(&server, &headers).await else { return Ok(to_login()) };
    let store = &server.exec.store;
    let last = store.last_entry().await.map_err(internal)?;
    let run = (!q.run.is_empty()).then_some(q.run.as_str());
    let visible = crate::server::api::Visible::of(&server, &s.person).await.map_err(internal)?;
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
