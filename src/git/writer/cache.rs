//! The kept bare clone of each remote under the state folder, its file lock, stale lock files.

use super::*;

impl Writer {
    /// The cache folder (bare clone) of a remote.
    pub fn cache_path(&self, remote: &Remote) -> PathBuf {
        self.config.cache_dir.join(remote.cache_name())
    }

    pub(super) fn open_cache(&self, remote: &Remote) -> Result<(Repository, PathBuf), GitError> {
        let dir = self.cache_path(remote);
        let lock = dir.with_extension("lock");
        let err = |e: &dyn std::fmt::Display| GitError::Cache { path: dir.display().to_string(), message: e.to_string() };
        if let Ok(repo) = Repository::open_bare(&dir) {
            return Ok((repo, lock));
        }
        // The caches hold the environments' contents: the owner's only (0700).
        {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&self.config.cache_dir).map_err(|e| err(&e))?;
        }
        let file = File::options().create(true).truncate(false).write(true).open(&lock).map_err(|e| err(&e))?;
        file.lock().map_err(|e| err(&e))?;
        if let Ok(repo) = Repository::open_bare(&dir) {
            return Ok((repo, lock));
        }
        // A cache that exists but does not open was cut short (a process killed while creating
        // it): keep it aside, for a person to look at, and start a new one.
        if dir.exists() {
            let aside = dir.with_extension(format!("git.broken-{}", crate::clock::now_ms()));
            std::fs::rename(&dir, &aside).map_err(|e| err(&e))?;
            tracing::warn!(cache = %dir.display(), kept = %aside.display(), "a cache that does not open was set aside");
        }
        // Created beside and renamed into place: a kill leaves a temporary folder, never a half cache.
        let tmp = dir.with_extension(format!("git.new-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        Repository::init_bare(&tmp).map_err(|e| err(&e.message()))?;
        std::fs::rename(&tmp, &dir).map_err(|e| err(&e))?;
        let repo = Repository::open_bare(&dir).map_err(|e| err(&e.message()))?;
        Ok((repo, lock))
    }

    /// Takes the cache's file lock. Holding it, no other promote writes in this cache, so any git
    /// lock file left inside was left by a process that was killed: it is removed.
    pub(super) fn lock(&self, repo: &Repository, path: &Path) -> Result<File, GitError> {
        let file = File::options().create(true).truncate(false).write(true).open(path).map_err(|e| self.cache_err(repo, e))?;
        file.lock().map_err(|e| self.cache_err(repo, e))?;
        remove_stale_locks(repo.path());
        Ok(file)
    }

    pub(super) fn cache_err(&self, repo: &Repository, e: impl std::fmt::Display) -> GitError {
        GitError::Cache { path: repo.path().display().to_string(), message: e.to_string() }
    }
}

/// Removes `*.lock` files at the top of a bare repo and under `refs/` (left by a killed process).
pub(super) fn remove_stale_locks(git_dir: &Path) {
    pub(super) fn walk(dir: &Path, deep: bool) {
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        for e in entries.flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "lock") {
                if std::fs::remove_file(&p).is_ok() {
                    tracing::warn!(file = %p.display(), "removed a stale git lock file");
                }
            } else if deep && e.file_type().is_ok_and(|t| t.is_dir()) {
                walk(&p, true);
            }
        }
    }
    walk(git_dir, false);
    walk(&git_dir.join("refs"), true);
}
