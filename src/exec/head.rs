//! The audit trail's head, kept in Git at the end of every run: in the pipeline's first
//! environment repo, under `refs/promote/audit` (see [`crate::git::HEAD_REF`]).

use std::path::Path;

use super::Executor;
use crate::git::Remote;
use crate::model::Pipeline;

/// The repo where a pipeline's runs keep the trail's head: its first environment's.
pub fn head_remote(pipeline: &Pipeline, base_dir: &Path) -> Option<Remote> {
    pipeline.environments.first().map(|e| Remote::resolve(&e.spec.repo.value, base_dir))
}

impl Executor {
    /// Pushes the trail's current head, sealed, to the pipeline's head repo. Best effort: a run
    /// that could not keep it says so in the log, and `promote audit verify` compares against the
    /// newest head that was kept.
    pub(super) async fn keep_head(&self, pipeline: &Pipeline, base_dir: &Path) {
        let Some(remote) = head_remote(pipeline, base_dir) else { return };
        let found = async {
            let Some(state) = self.store.state_id().await? else { return Ok(None) };
            let last = self.store.last_entry().await?;
            let entry = self.store.audit_entries(None, last - 1, 1).await?.into_iter().next();
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
        let (writer, key, shown) = (self.writer.clone(), self.store.key().clone(), remote.to_string());
        match tokio::task::spawn_blocking(move || writer.keep_head(&remote, &key, &state, seq, &hash)).await {
            Ok(Ok(commit)) => tracing::debug!(remote = %shown, seq, %commit, "audit head kept in Git"),
            Ok(Err(e)) => tracing::warn!(remote = %shown, error = %e, "could not keep the audit trail's head in Git"),
            Err(e) => tracing::warn!(error = %e, "the git writer stopped while keeping the audit head"),
        }
    }
}
