//! Reading repos promote does not write, through the same caches and credentials: the pipelines
//! of `promote serve --pipelines URL` (a branch's files, written out) and one file of an app's repo
//! at a pushed commit (a trigger's `version: {file}`).

use super::*;

/// The most files and bytes a pipelines snapshot writes out.
const MAX_SNAPSHOT_FILES: usize = 5000;
const MAX_SNAPSHOT_BYTES: usize = 64 << 20;

impl Writer {
    /// Writes the files of `branch`'s head of `remote` under `into` unless `into` holds that head
    /// already; returns the head. The folder is replaced whole (written beside, then renamed).
    pub fn snapshot(&self, remote: &Remote, branch: &str, into: &Path) -> Result<String, GitError> {
        let (repo, lock) = self.open_cache(remote)?;
        let _guard = self.lock(&repo, &lock)?;
        let fetched = format!("refs/promote/source/{branch}");
        self.fetch_into(&repo, remote, &[&format!("+refs/heads/{branch}:{fetched}")])?;
        let head = repo.refname_to_id(&fetched).map_err(|_| GitError::BranchMissing { remote: remote.to_string(), branch: branch.to_string() })?;
        let marker = into.join(".promote-commit");
        if std::fs::read_to_string(&marker).is_ok_and(|c| c.trim() == head.to_string()) {
            return Ok(head.to_string());
        }
        let cache = |e: &dyn std::fmt::Display| GitError::Cache { path: into.display().to_string(), message: e.to_string() };
        let tree = repo.find_commit(head).and_then(|c| c.tree()).map_err(|e| self.cache_err(&repo, e))?;
        let tmp = into.with_extension(format!("new-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp).map_err(|e| cache(&e))?;
        let (mut files, mut bytes) = (0usize, 0usize);
        let mut failed = None;
        tree.walk(git2::TreeWalkMode::PreOrder, |dir, entry| {
            if entry.kind() != Some(git2::ObjectType::Blob) {
                return git2::TreeWalkResult::Ok;
            }
            // Names git itself refuses to check out never reach the file system.
            let Some(name) = entry.name().ok().filter(|n| !matches!(*n, "." | ".." | ".git") && !n.contains(['/', '\\'])) else {
                return git2::TreeWalkResult::Skip;
            };
            if dir.split('/').any(|d| matches!(d, "." | ".." | ".git")) {
                return git2::TreeWalkResult::Skip;
            }
            let Ok(blob) = repo.find_blob(entry.id()) else { return git2::TreeWalkResult::Skip };
            files += 1;
            bytes += blob.size();
            if files > MAX_SNAPSHOT_FILES || bytes > MAX_SNAPSHOT_BYTES {
                failed = Some(format!("more than {MAX_SNAPSHOT_FILES} files or {} MiB: not loaded", MAX_SNAPSHOT_BYTES >> 20));
                return git2::TreeWalkResult::Abort;
            }
            let path = tmp.join(dir).join(name);
            let written = path.parent().map_or(Ok(()), std::fs::create_dir_all).and_then(|_| std::fs::write(&path, blob.content()));
            if let Err(e) = written {
                failed = Some(format!("{}: {e}", path.display()));
                return git2::TreeWalkResult::Abort;
            }
            git2::TreeWalkResult::Ok
        })
        .ok();
        if let Some(why) = failed {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(cache(&why));
        }
        std::fs::write(tmp.join(".promote-commit"), format!("{head}\n")).map_err(|e| cache(&e))?;
        let old = into.with_extension(format!("old-{}", std::process::id()));
        if into.exists() {
            std::fs::rename(into, &old).map_err(|e| cache(&e))?;
        }
        std::fs::rename(&tmp, into).map_err(|e| cache(&e))?;
        let _ = std::fs::remove_dir_all(&old);
        Ok(head.to_string())
    }

    /// The text of `path` at `commit` of `remote` (its branches and tags fetched when the cache
    /// does not have the commit yet), at most `limit` bytes.
    pub fn read_at(&self, remote: &Remote, commit: &str, path: &str, limit: usize) -> Result<String, GitError> {
        let (repo, lock) = self.open_cache(remote)?;
        let _guard = self.lock(&repo, &lock)?;
        let missing = |why: &'static str| GitError::FileMissing { remote: remote.to_string(), branch: commit.to_string(), file: path.to_string(), why };
        let oid = Oid::from_str(commit).map_err(|_| missing("cannot be read: the commit is not a full object id"))?;
        if repo.find_commit(oid).is_err() {
            self.fetch_into(&repo, remote, &["+refs/heads/*:refs/promote/source-heads/*", "+refs/tags/*:refs/promote/source-tags/*"])?;
        }
        let c = repo.find_commit(oid).map_err(|_| missing("cannot be read: the commit is not in the repo"))?;
        let tree = c.tree().map_err(|e| self.cache_err(&repo, e))?;
        let entry = tree.get_path(Path::new(path)).map_err(|_| missing("does not exist"))?;
        let blob = repo.find_blob(entry.id()).map_err(|_| missing("is not a file"))?;
        if blob.size() > limit {
            return Err(missing("is too large"));
        }
        String::from_utf8(blob.content().to_vec()).map_err(|_| missing("is not UTF-8 text"))
    }
}
