//! The audit trail's head, kept in Git at the end of every run: in the pipeline's first
//! environment repo, under `refs/promote/audit` (see [`crate::git::HEAD_REF`]).
//!
//! Pushing it is off the run's path: a run's end asks for a push and goes on; one push per
//! (state, repo) is in flight at a time, and runs ending meanwhile are covered by one more push
//! of the newest head a quarter second after it. Whoever exits ([`settle_heads`]: the CLI, the
//! server on shutdown) waits for the pushes asked for.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{LazyLock, Mutex};

use super::Executor;
use crate::git::Remote;
use crate::model::Pipeline;

/// Per (state, repo): a push is in flight, and another was asked for meanwhile.
#[derive(Default)]
struct Slot {
    running: bool,
    again: bool,
}

/// The pause between two pushes of one slot while runs keep ending: how far the head kept in
/// Git may lag behind a busy trail (a push costs a fetch, a commit and a push: back to back they
/// took a fifth of a busy server's CPU).
const BACK_TO_BACK: std::time::Duration = std::time::Duration::from_millis(250);

static SLOTS: LazyLock<Mutex<HashMap<String, Slot>>> = LazyLock::new(|| Mutex::new(HashMap::new()));
static TASKS: LazyLock<Mutex<Vec<tokio::task::JoinHandle<()>>>> = LazyLock::new(|| Mutex::new(Vec::new()));

/// The repo where a pipeline's runs keep the trail's head: its first environment's.
pub fn head_remote(pipeline: &Pipeline, base_dir: &Path) -> Option<Remote> {
    pipeline.environments.first().map(|e| Remote::resolve(&e.spec.repo.value, base_dir))
}

/// Waits for every head push asked for so far (call before the store closes or the process
/// exits).
pub async fn settle_heads() {
    loop {
        let tasks = std::mem::take(&mut *TASKS.lock().unwrap_or_else(|e| e.into_inner()));
        if tasks.is_empty() {
            return;
        }
        for t in tasks {
            let _ = t.await;
        }
    }
}

impl Executor {
    /// Asks for the trail's current head to be pushed, sealed, to the pipeline's head repo. Best
    /// effort: a push that fails says so in the log, and `promote audit verify` compares against
    /// the newest head that was kept.
    pub(super) fn keep_head(&self, pipeline: &Pipeline, base_dir: &Path) {
        let Some(remote) = head_remote(pipeline, base_dir) else { return };
        let slot = format!("{}\n{}", self.store.path(), remote.url());
        {
            let mut slots = SLOTS.lock().unwrap_or_else(|e| e.into_inner());
            let s = slots.entry(slot.clone()).or_default();
            if s.running {
                s.again = true;
                return;
            }
            s.running = true;
        }
        let (store, writer) = (self.store.clone(), self.writer.clone());
        let task = tokio::spawn(async move {
            loop {
                push_head(&store, &writer, &remote).await;
                let again = {
                    let mut slots = SLOTS.lock().unwrap_or_else(|e| e.into_inner());
                    let s = slots.entry(slot.clone()).or_default();
                    let again = std::mem::take(&mut s.again);
                    s.running = again;
                    again
                };
                if !again {
                    return;
                }
                // Runs ending back to back: the next push covers those ending meanwhile too.
                tokio::time::sleep(BACK_TO_BACK).await;
            }
        });
        TASKS.lock().unwrap_or_else(|e| e.into_inner()).push(task);
    }
}

/// One push of the trail's newest head.
async fn push_head(store: &crate::store::Store, writer: &std::sync::Arc<crate::git::Writer>, remote: &Remote) {
    let found = async {
        let Some(state) = store.state_id().await? else { return Ok(None) };
        let last = store.last_entry().await?;
        let entry = store.audit_entries(None, last - 1, 1).await?.into_iter().next();
        Ok::<_, crate::store::StoreError>(entry.and_then(|e| Some((state, e.seq, e.hash?))))
    };
    let (state, seq, hash) = match found.await {
        Ok(Some(h)) => h,
        Ok(None) => return,
        Err(e) => {
            tracing::warn!(error = %e, "could not read the audit trail's head to keep it in Git");
            return;
        }
    };
    let (writer, key, remote, shown) = (writer.clone(), store.key().clone(), remote.clone(), remote.to_string());
    match tokio::task::spawn_blocking(move || writer.keep_head(&remote, &key, &state, seq, &hash)).await {
        Ok(Ok(commit)) => tracing::debug!(remote = %shown, seq, %commit, "audit head kept in Git"),
        Ok(Err(e)) => tracing::warn!(remote = %shown, error = %e, "could not keep the audit trail's head in Git"),
        Err(e) => tracing::warn!(error = %e, "the git writer stopped while keeping the audit head"),
    }
}
