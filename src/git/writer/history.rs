//! The branch's history: rewrites (force pushes) found and kept, accepted by a person; the
//! promotions and the commits a rollback looks for.

use super::*;

impl Writer {
    /// Refuses when the branch's head does not descend from the head seen last (a force push).
    pub(super) fn check_history(&self, repo: &Repository, dest: &Destination, tip: Oid) -> Result<(), GitError> {
        let seen_name = seen_ref(&dest.branch);
        if let Ok(seen) = repo.refname_to_id(&seen_name)
            && seen != tip
            && !repo.graph_descendant_of(tip, seen).map_err(|e| self.cache_err(repo, e))?
        {
            let mut lost = Vec::new();
            let mut walk = repo.revwalk().map_err(|e| self.cache_err(repo, e))?;
            walk.push(seen).and_then(|_| walk.hide(tip)).map_err(|e| self.cache_err(repo, e))?;
            for id in walk.flatten() {
                if let Ok(c) = repo.find_commit(id) {
                    let a = c.author();
                    lost.push(LostCommit {
                        id: id.to_string(),
                        summary: c.summary().ok().flatten().unwrap_or("").to_string(),
                        author: format!("{} <{}>", a.name().unwrap_or(""), a.email().unwrap_or("")),
                    });
                }
            }
            let kept_at = format!("refs/promote/lost/{}/{seen}", dest.branch);
            repo.reference(&kept_at, seen, true, "promote: history rewritten").map_err(|e| self.cache_err(repo, e))?;
            return Err(GitError::HistoryRewritten(Box::new(Rewrite {
                remote: dest.remote.to_string(),
                branch: dest.branch.clone(),
                seen: seen.to_string(),
                head: tip.to_string(),
                lost,
                kept_at,
            })));
        }
        repo.reference(&seen_name, tip, true, "promote: fetched").map_err(|e| self.cache_err(repo, e))?;
        Ok(())
    }

    /// The newest commit (at most `history_depth` back) that `pred` accepts.
    pub(super) fn find_in_history(&self, repo: &Repository, tip: Oid, mut pred: impl FnMut(&git2::Commit<'_>) -> bool) -> Result<Option<Oid>, GitError> {
        let mut walk = repo.revwalk().map_err(|e| self.cache_err(repo, e))?;
        walk.set_sorting(Sort::TOPOLOGICAL | Sort::TIME).map_err(|e| self.cache_err(repo, e))?;
        walk.push(tip).map_err(|e| self.cache_err(repo, e))?;
        for id in walk.take(self.config.history_depth) {
            let id = id.map_err(|e| self.cache_err(repo, e))?;
            let c = repo.find_commit(id).map_err(|e| self.cache_err(repo, e))?;
            if pred(&c) {
                return Ok(Some(id));
            }
        }
        Ok(None)
    }

    /// The newest promotion of `pipeline` that changed the file and is not rolled back, newer than
    /// `after` when given.
    pub(super) fn latest_promotion(
        &self,
        repo: &Repository,
        dest: &Destination,
        pipeline: &str,
        tip: Oid,
        after: Option<Oid>,
    ) -> Result<Option<Oid>, GitError> {
        let mut rolled_back: HashSet<String> = HashSet::new();
        let mut stop = false;
        self.find_in_history(repo, tip, |c| {
            if stop || Some(c.id()) == after {
                stop = true;
                return false;
            }
            let m = c.message().unwrap_or("");
            let undone = trailer_values(m, "Promote-Rollback-Of");
            if !undone.is_empty() {
                rolled_back.extend(undone.iter().map(|s| s.to_string()));
                return false;
            }
            trailer_values(m, "Promote-Pipeline").contains(&pipeline) && !rolled_back.contains(&c.id().to_string()) && touches(c, &dest.file)
        })
    }

    /// A commit named by SHA (or prefix) that is on the branch.
    pub(super) fn resolve_on_branch(&self, repo: &Repository, dest: &Destination, tip: Oid, sha: &str) -> Result<Oid, GitError> {
        let not_on = || GitError::Rollback(format!("commit `{sha}` is not on {} `{}` (give a SHA from `git log {}`)", dest.remote, dest.branch, dest.branch));
        let id = repo.revparse_single(sha).and_then(|o| o.peel_to_commit()).map_err(|_| not_on())?.id();
        if id == tip || repo.graph_descendant_of(tip, id).unwrap_or(false) { Ok(id) } else { Err(not_on()) }
    }

    /// Accepts a rewritten history: the branch's current head becomes the one promote saw last.
    /// The vanished commits stay kept under `refs/promote/lost/`. Returns the head accepted.
    pub fn accept_history(&self, dest: &Destination) -> Result<Oid, GitError> {
        let (repo, lock) = self.open_cache(&dest.remote)?;
        let _guard = self.lock(&repo, &lock)?;
        let tip = self.fetch(&repo, dest)?;
        repo.reference(&seen_ref(&dest.branch), tip, true, "promote: history accepted").map_err(|e| self.cache_err(&repo, e))?;
        Ok(tip)
    }
}

pub(super) fn seen_ref(branch: &str) -> String {
    format!("refs/promote/seen/{branch}")
}

/// Whether `c` changed `file` relative to its first parent.
pub(super) fn touches(c: &git2::Commit<'_>, file: &str) -> bool {
    let path = Path::new(file);
    let here = c.tree().ok().and_then(|t| t.get_path(path).ok()).map(|e| e.id());
    let before = c.parent(0).ok().and_then(|p| p.tree().ok()).and_then(|t| t.get_path(path).ok()).map(|e| e.id());
    here.is_some() && here != before
}
