//! Polling each trigger's source (`git.url`) for what its webhooks missed, and every
//! environment for drift (`drift_poll`): the refs it has now are
//! compared with those it had at the last poll (kept in the state, so a push made while no server
//! ran is caught at the next start); a new or moved ref the trigger watches starts a run, through
//! the same record as a webhook (one run per pipeline and version, whoever sees it first).

use crate::ops::start::Delivered;
use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::Server;
use super::hooks::{Event, version_for};
use crate::git::Remote;
use crate::store::Delivery;

/// How often a source is polled unless its trigger says.
pub const DEFAULT_POLL: Duration = Duration::from_secs(60);

/// Polls every source that is due, until the server stops.
pub(super) async fn run(server: Server) {
    let mut due: HashMap<String, Instant> = HashMap::new();
    let drift_every = if server.config.drift_poll.is_zero() { DEFAULT_POLL } else { server.config.drift_poll };
    let mut drift_due = Instant::now();
    loop {
        let pipelines = server.pipelines();
        // Drift: every environment of every pipeline, one pipeline after the other.
        if Instant::now() >= drift_due {
            drift_due = Instant::now() + drift_every;
            for loaded in pipelines.by_name.values() {
                server.check_drift(loaded).await;
            }
        }
        for loaded in pipelines.by_name.values() {
            for t in &loaded.plan.pipeline.triggers {
                let Some(g) = &t.value.git else { continue };
                let Some(url) = &g.url else { continue };
                let base = loaded.file.parent().unwrap_or(std::path::Path::new("."));
                let remote = Remote::resolve(&url.value, base);
                let source = format!("{}\n{}", loaded.plan.pipeline.name.value, remote.url());
                let every = g.poll.map_or(DEFAULT_POLL, |p| p.0);
                if due.get(&source).is_some_and(|at| Instant::now() < *at) {
                    continue;
                }
                due.insert(source.clone(), Instant::now() + every);
                if let Err(e) = poll_one(&server, loaded, &t.value, &remote, &source).await {
                    tracing::warn!(pipeline = %loaded.plan.pipeline.name.value, source = %remote, error = %e, "could not poll a trigger's source");
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = server.stop.cancelled() => return,
        }
    }
}

async fn poll_one(
    server: &Server,
    loaded: &super::pipelines::Loaded,
    t: &crate::model::triggers::Trigger,
    remote: &Remote,
    source: &str,
) -> Result<(), String> {
    let (writer, r) = (server.exec.writer.clone(), remote.clone());
    let refs = tokio::task::spawn_blocking(move || writer.list_refs(&r)).await.map_err(|e| e.to_string())?.map_err(|e| e.to_string())?;
    let now: Vec<(String, String)> = refs.into_iter().filter(|(name, _)| !name.ends_with("^{}")).map(|(n, o)| (n, o.to_string())).collect();
    let store = &server.exec.store;
    let before = store.polled(source).await.map_err(|e| e.to_string())?;
    if let Some(before) = before {
        let g = t.git.as_ref().expect("a git trigger");
        for (git_ref, commit) in &now {
            if before.iter().any(|(r, o)| r == git_ref && o == commit) {
                continue;
            }
            let event = Event::Push { repo: g.repo.value.clone(), git_ref: git_ref.clone(), commit: commit.clone() };
            let Some(version) = version_for(t, &event) else { continue };
            let version = super::hooks::read_version(server, loaded, t, version).await?;
            let delivery = Delivery { provider: "poll".into(), id: format!("{git_ref}@{commit}"), body_hash: String::new(), origin_at: None };
            match crate::ops::start::delivered(&server.exec, &loaded.file, &loaded.source, &loaded.plan, &version, "poll", delivery).await {
                Ok(Delivered::Refused(why)) => tracing::warn!(version = %crate::diag::printable(&version), "a polled ref's run is refused: {why}"),
                Ok(Delivered::Started(run)) => {
                    tracing::info!(run = %run.id, version, "a poll found a push no webhook announced");
                    server.exec.metrics.delivery("poll", "started");
                    server.drive_started(run, loaded);
                }
                Ok(Delivered::Duplicate(_)) => {}
                Ok(Delivered::Held(why)) => tracing::info!(version, "a polled ref names a held version: {why}"),
                Err(e) => return Err(e.to_string()),
            }
        }
    }
    // The first poll of a source only learns what is there: old tags start nothing.
    store.set_polled(source, now).await.map_err(|e| e.to_string())
}
