//! Promotion through a pull request: the promotion commit on a branch of its own, made from the
//! environment branch's head, for the host to merge.

use super::*;

impl Writer {
    /// Writes with `write` on branch `branch` instead of the environment's (made from the head of
    /// `dest.branch` when it does not exist; one left by an earlier attempt is built on), for a
    /// request to merge, and keeps the sealed commit it wrote: the environment branch is not touched.
    fn via_branch(&self, dest: &Destination, branch: &str, write: impl FnOnce(&Destination) -> Result<Report, GitError>) -> Result<Report, GitError> {
        commit::one_line("branch", branch)?;
        if !git2::Reference::is_valid_name(&format!("refs/heads/{branch}")) {
            return Err(GitError::Refused(format!("`{branch}` is not a branch name git takes (from the pipeline, environment and version)")));
        }
        self.create_branch(dest, branch)?;
        let mut on_branch = dest.clone();
        on_branch.branch = branch.to_string();
        let report = write(&on_branch)?;
        self.remember_request(dest, branch, &report)?;
        Ok(report)
    }

    /// Writes the promotion of `p` on branch `branch` (a commit of this run's stage found on it is
    /// `AlreadyDone`).
    pub fn promote_via_branch(&self, dest: &Destination, branch: &str, p: &Promotion<'_>) -> Result<Report, GitError> {
        self.via_branch(dest, branch, |on| self.promote(on, p))
    }

    /// Writes rollback `r` on branch `branch`, for a request to merge.
    pub fn rollback_via_branch(&self, dest: &Destination, branch: &str, r: &RollbackRequest<'_>) -> Result<Report, GitError> {
        self.via_branch(dest, branch, |on| self.rollback(on, r))
    }

    /// Writes a revert to `to` (see [`Writer::revert_to`]) on branch `branch`, for a request to merge.
    #[allow(clippy::too_many_arguments)]
    pub fn revert_to_via_branch(
        &self,
        dest: &Destination,
        branch: &str,
        key: &crate::seal::Key,
        pipeline: &str,
        environment: &str,
        to: &str,
        why: super::drift::RevertFor<'_>,
    ) -> Result<Report, GitError> {
        self.via_branch(dest, branch, |on| self.revert_to(on, key, pipeline, environment, to, why))
    }

    /// Keeps the sealed commit written on a request's branch at `refs/promote/requests/BRANCH` in
    /// the cache: a squash (or any merge the host makes without it as a parent) is recognised by
    /// it after the host deleted the branch (see `Writer::scan`).
    fn remember_request(&self, dest: &Destination, branch: &str, report: &Report) -> Result<(), GitError> {
        let commit = match &report.outcome {
            Outcome::Committed(w) => w.commit,
            Outcome::AlreadyDone { commit } => *commit,
            Outcome::Unchanged { .. } => return Ok(()),
        };
        let (repo, lock) = self.open_cache(&dest.remote)?;
        let _guard = self.lock(&repo, &lock)?;
        repo.reference(&request_ref(branch), commit, true, "promote: a request's sealed commit").map_err(|e| self.cache_err(&repo, e))?;
        Ok(())
    }

    /// Makes `branch` on the remote at the head of `dest.branch`, unless it exists (a local repo
    /// refuses to create it again; a remote refuses the push of the base's head over a branch
    /// with commits of its own, and takes it as a no-op or fast-forward otherwise); whether it
    /// made it.
    fn create_branch(&self, dest: &Destination, branch: &str) -> Result<bool, GitError> {
        let name = format!("refs/heads/{branch}");
        let (repo, lock) = self.open_cache(&dest.remote)?;
        let _guard = self.lock(&repo, &lock)?;
        let tip = self.fetch(&repo, dest)?;
        match local_path(dest.remote.url()) {
            Some(path) => {
                let remote = Repository::open(&path).map_err(|e| self.remote_err(dest, "push", e))?;
                match remote.reference(&name, tip, false, "promote: a pull request's branch") {
                    Ok(_) => Ok(true),
                    // Made meanwhile by another attempt: built on.
                    Err(e) if e.code() == git2::ErrorCode::Exists => Ok(false),
                    Err(e) => Err(self.remote_err(dest, "push", e)),
                }
            }
            None => {
                let out = format!("refs/promote/out/{tip}");
                repo.reference(&out, tip, true, "promote: to push").map_err(|e| self.cache_err(&repo, e))?;
                let pushed = self.push_ref(&repo, &dest.remote, &out, &name);
                if let Ok(mut r) = repo.find_reference(&out) {
                    let _ = r.delete();
                }
                match pushed {
                    Ok(()) => Ok(true),
                    Err(PushError::Rejected(_)) => Ok(false),
                    Err(PushError::Fatal(e)) => Err(e),
                }
            }
        }
    }
}

/// Where the cache keeps the sealed commit of a request's branch `promote/PIPELINE/ENV/LABEL`.
pub(super) fn request_ref(branch: &str) -> String {
    format!("refs/promote/requests/{branch}")
}
