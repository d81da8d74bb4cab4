//! Talking to remotes: credentials callbacks, fetch, push (libgit2, or a compare-and-swap for a
//! path), the jittered backoff between attempts.

use super::*;

impl Writer {
    pub(super) fn callbacks(&self) -> RemoteCallbacks<'_> {
        let creds = &self.config.credentials;
        let mut cbs = RemoteCallbacks::new();
        let mut tries = 0;
        cbs.credentials(move |_url, username, allowed| {
            tries += 1;
            if tries > 3 {
                return Err(git2::Error::from_str(
                    "the remote refused the credentials (check PROMOTE_GIT_TOKEN, PROMOTE_GIT_TOKEN_FILE or PROMOTE_GIT_SSH_KEY)",
                ));
            }
            if allowed.contains(CredentialType::SSH_KEY) {
                let user = username.unwrap_or("git");
                return match &creds.ssh_key {
                    Some(key) => Cred::ssh_key(user, None, key, None),
                    None => Cred::ssh_key_from_agent(user),
                };
            }
            if allowed.contains(CredentialType::USER_PASS_PLAINTEXT) {
                return match &creds.token {
                    Some(t) => Cred::userpass_plaintext(username.unwrap_or("x-access-token"), t.expose()),
                    None => Err(git2::Error::from_str("the remote asks for credentials: set PROMOTE_GIT_TOKEN or PROMOTE_GIT_TOKEN_FILE")),
                };
            }
            if allowed.contains(CredentialType::USERNAME) {
                return Cred::username(username.unwrap_or("git"));
            }
            Err(git2::Error::from_str("the remote asks for an authentication method promote does not support"))
        });
        cbs
    }

    /// Fetches `refspecs` of `remote` into `repo` (no tags), with the writer's credentials.
    pub(super) fn fetch_into(&self, repo: &Repository, remote: &Remote, refspecs: &[&str]) -> Result<(), GitError> {
        let err =
            |e: git2::Error| GitError::Remote { remote: remote.to_string(), action: "fetch", message: self.config.credentials.redact(remote, e.message()) };
        let mut r = repo.remote_anonymous(remote.url()).map_err(err)?;
        let mut opts = FetchOptions::new();
        opts.remote_callbacks(self.callbacks());
        opts.download_tags(AutotagOption::None);
        r.fetch(refspecs, Some(&mut opts), None).map_err(err)
    }

    /// Fetches the branch into `refs/promote/fetched/BRANCH`; returns its head.
    pub(super) fn fetch(&self, repo: &Repository, dest: &Destination) -> Result<Oid, GitError> {
        let fetched = format!("refs/promote/fetched/{}", dest.branch);
        // A branch deleted on the remote must not leave the old head standing here.
        if let Ok(mut r) = repo.find_reference(&fetched) {
            r.delete().map_err(|e| self.cache_err(repo, e))?;
        }
        let mut remote = repo.remote_anonymous(dest.remote.url()).map_err(|e| self.remote_err(dest, "fetch", e))?;
        let mut opts = FetchOptions::new();
        opts.remote_callbacks(self.callbacks());
        opts.download_tags(AutotagOption::None);
        remote.fetch(&[format!("+refs/heads/{0}:{fetched}", dest.branch)], Some(&mut opts), None).map_err(|e| self.remote_err(dest, "fetch", e))?;
        repo.refname_to_id(&fetched).map_err(|_| GitError::BranchMissing { remote: dest.remote.to_string(), branch: dest.branch.clone() })
    }

    /// Every ref of `remote` and the commit it points to (as `git ls-remote`), with the writer's
    /// credentials.
    pub fn list_refs(&self, remote: &Remote) -> Result<Vec<(String, Oid)>, GitError> {
        let err =
            |e: git2::Error| GitError::Remote { remote: remote.to_string(), action: "fetch", message: self.config.credentials.redact(remote, e.message()) };
        let mut r = git2::Remote::create_detached(remote.url()).map_err(err)?;
        let conn = r.connect_auth(git2::Direction::Fetch, Some(self.callbacks()), None).map_err(err)?;
        let heads = conn.list().map_err(err)?;
        Ok(heads.iter().map(|h| (h.name().to_string(), h.oid())).collect())
    }

    pub(super) fn push(&self, repo: &Repository, dest: &Destination, out: &str) -> Result<(), PushError> {
        self.push_ref(repo, &dest.remote, out, &format!("refs/heads/{}", dest.branch))
    }

    /// Pushes the local ref `out` to the remote's ref `name` (no force: the remote refuses what
    /// does not fast-forward, which is a lost race).
    pub(super) fn push_ref(&self, repo: &Repository, remote: &Remote, out: &str, name: &str) -> Result<(), PushError> {
        let err =
            |e: git2::Error| GitError::Remote { remote: remote.to_string(), action: "push", message: self.config.credentials.redact(remote, e.message()) };
        let mut r = repo.remote_anonymous(remote.url()).map_err(|e| PushError::Fatal(err(e)))?;
        let refused: Cell<Option<String>> = Cell::new(None);
        let result = {
            let mut cbs = self.callbacks();
            cbs.push_update_reference(|_name, status| {
                if let Some(s) = status {
                    refused.set(Some(s.to_string()));
                }
                Ok(())
            });
            let mut opts = PushOptions::new();
            opts.remote_callbacks(cbs);
            r.push(&[format!("{out}:{name}")], Some(&mut opts))
        };
        match result {
            Ok(()) => match refused.take() {
                None => Ok(()),
                Some(why) => Err(PushError::Rejected(why)),
            },
            Err(e) if is_race(&e) => Err(PushError::Rejected(self.config.credentials.redact(remote, e.message()))),
            Err(e) => Err(PushError::Fatal(err(e))),
        }
    }

    /// Pushes to a repo on this machine by writing the new objects into it and moving its branch
    /// with a compare-and-swap from `expected`. (libgit2's local transport checks fast-forward
    /// against the heads it listed at connect time, then overwrites the ref: two racing pushes
    /// both "succeed" and one commit is lost. Seen here with 20 concurrent writers.)
    pub(super) fn push_local(&self, repo: &Repository, dest: &Destination, path: &Path, id: Oid, expected: Oid) -> Result<(), PushError> {
        let fatal = |e: git2::Error| PushError::Fatal(self.remote_err(dest, "push", e));
        let remote = Repository::open(path).map_err(fatal)?;
        // As `git push` refuses (receive.denyCurrentBranch): moving the branch a work tree has
        // checked out would leave that work tree holding a staged revert of the commit.
        if !remote.is_bare() && remote.head().ok().and_then(|h| h.shorthand().ok().map(String::from)).as_deref() == Some(dest.branch.as_str()) {
            return Err(PushError::Fatal(GitError::CheckedOut { remote: dest.remote.to_string(), branch: dest.branch.clone() }));
        }
        let (src, dst) = (repo.odb().map_err(fatal)?, remote.odb().map_err(fatal)?);
        copy_missing(&src, &dst, id).map_err(fatal)?;
        let _pushing = clear_stale_ref_lock(remote.path(), &format!("refs/heads/{}", dest.branch));
        match remote.reference_matching(&format!("refs/heads/{}", dest.branch), id, true, expected, "promote: push") {
            Ok(_) => Ok(()),
            Err(e) if is_race(&e) => Err(PushError::Rejected(format!("the branch moved: {}", e.message()))),
            Err(e) => Err(fatal(e)),
        }
    }

    pub(super) fn remote_err(&self, dest: &Destination, action: &'static str, e: git2::Error) -> GitError {
        GitError::Remote { remote: dest.remote.to_string(), action, message: self.config.credentials.redact(&dest.remote, e.message()) }
    }
}

/// How old a ref's lock file in a repo on this machine must be to count as left by a killed
/// process (git holds one for milliseconds).
const STALE_REF_LOCK: Duration = Duration::from_secs(2);

/// Takes promote's own push lock of a repo on this machine (held while the returned file lives),
/// then removes `REF.lock` if it is older than [`STALE_REF_LOCK`]: a promote killed while it
/// moved the ref leaves one behind, and every later push would fail on it.
pub(super) fn clear_stale_ref_lock(git_dir: &Path, name: &str) -> Option<File> {
    let ours = File::options().create(true).truncate(false).write(true).open(git_dir.join("promote-push.lock")).ok()?;
    ours.lock().ok()?;
    let lock = git_dir.join(format!("{name}.lock"));
    if let Ok(m) = std::fs::metadata(&lock)
        && m.modified().ok().and_then(|t| t.elapsed().ok()).is_some_and(|age| age > STALE_REF_LOCK)
        && std::fs::remove_file(&lock).is_ok()
    {
        tracing::warn!(file = %lock.display(), "removed a stale ref lock left by a killed process");
    }
    Some(ours)
}

/// The folder of a remote that is a path or a `file://` URL.
pub(super) fn local_path(url: &str) -> Option<PathBuf> {
    if let Some(p) = url.strip_prefix("file://") {
        return Some(PathBuf::from(p));
    }
    (!url.contains("://") && !url.split(':').next().is_some_and(|h| h.contains('@'))).then(|| PathBuf::from(url))
}

/// Writes `id` and what it points to into `dst`, children first, stopping at objects `dst` has:
/// for a promotion that is the commit, the trees on the changed path and the blob.
pub(super) fn copy_missing(src: &git2::Odb<'_>, dst: &git2::Odb<'_>, id: Oid) -> Result<(), git2::Error> {
    if dst.exists(id) {
        return Ok(());
    }
    let obj = src.read(id)?;
    match obj.kind() {
        git2::ObjectType::Commit => {
            let text = std::str::from_utf8(obj.data()).map_err(|_| git2::Error::from_str("commit is not UTF-8"))?;
            for line in text.lines().take_while(|l| !l.is_empty()) {
                if let Some(t) = line.strip_prefix("tree ").or_else(|| line.strip_prefix("parent ")) {
                    copy_missing(src, dst, Oid::from_str(t)?)?;
                }
            }
        }
        git2::ObjectType::Tree => {
            let mut data = obj.data();
            // Entries: "MODE NAME\0" + 20-byte id.
            while let Some(nul) = data.iter().position(|&b| b == 0) {
                let mode = &data[..data.iter().position(|&b| b == b' ').unwrap_or(0)];
                let child = Oid::from_bytes(&data[nul + 1..nul + 21])?;
                if mode != b"160000" {
                    copy_missing(src, dst, child)?;
                }
                data = &data[nul + 21..];
            }
        }
        _ => {}
    }
    dst.write(obj.kind(), obj.data())?;
    Ok(())
}

/// Whether a push failed because someone else updated the branch (or held its lock) first.
pub(super) fn is_race(e: &git2::Error) -> bool {
    matches!(e.code(), git2::ErrorCode::NotFastForward | git2::ErrorCode::Locked | git2::ErrorCode::Modified) || {
        let m = e.message();
        m.contains("fast-forward") || m.contains("fetch first") || m.contains("lock")
    }
}

/// 20 ms doubled per attempt (at most 1 s), times a random factor in [0.5, 1.5).
pub(super) fn backoff(attempt: u32) -> Duration {
    let base = 20u64.saturating_mul(1 << attempt.min(6)).min(1000);
    let r = RandomState::new().hash_one(std::time::Instant::now()) % 1000;
    Duration::from_micros(base * (500 + r))
}
