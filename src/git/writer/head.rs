//! The audit trail's head kept where GitOps keeps truth: a ref of an environment repo
//! (`refs/promote/audit`) whose commits (an empty tree each, one after the other) carry a state's
//! id, its last entry and a seal. Someone who can write the state cannot move it; someone who can
//! push can, but not seal what they push.

use super::*;
use crate::seal::Key;

/// The ref that holds the heads.
pub const HEAD_REF: &str = "refs/promote/audit";
/// How far back the heads' history is read.
const MAX_HEADS: usize = 10_000;

/// One head kept in Git.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeptHead {
    /// The state's id.
    pub state: String,
    /// The trail's last entry then.
    pub seq: i64,
    /// Its hash.
    pub hash: String,
    /// Whether the seal is this key's: only a sealed head is believed.
    pub sealed: bool,
    /// The commit that holds it.
    pub commit: String,
}

fn seal_of(key: &Key, state: &str, seq: i64, hash: &str) -> String {
    let seq = seq.to_string();
    key.mac("audit-head", &[Some(state.as_bytes()), Some(seq.as_bytes()), Some(hash.as_bytes())])
}

impl Writer {
    /// Records `(state, seq, hash)` as the newest head in `remote`'s [`HEAD_REF`], sealed with
    /// `key`; retried when someone else moved the ref meanwhile.
    pub fn keep_head(&self, remote: &Remote, key: &Key, state: &str, seq: i64, hash: &str) -> Result<String, GitError> {
        for (what, text) in [("state id", state), ("hash", hash)] {
            commit::one_line(what, text)?;
        }
        let (repo, lock) = self.open_cache(remote)?;
        let seq_s = seq.to_string();
        let seal = seal_of(key, state, seq, hash);
        let message = commit::message(
            &format!("promote audit head #{seq}"),
            &[("Promote-Audit-State", state), ("Promote-Audit-Seq", &seq_s), ("Promote-Audit-Hash", hash), ("Promote-Audit-Seal", &seal)],
        );
        let mut attempt = 0;
        loop {
            attempt += 1;
            let _guard = self.lock(&repo, &lock)?;
            let tip = self.fetch_ref(&repo, remote, HEAD_REF)?;
            let git = |e: git2::Error| self.cache_err(&repo, e);
            let tree = repo.treebuilder(None).and_then(|t| t.write()).map_err(git)?;
            let tree = repo.find_tree(tree).map_err(git)?;
            let parent = tip.map(|t| repo.find_commit(t)).transpose().map_err(git)?;
            let sig = git2::Signature::now(&self.config.committer.name, &self.config.committer.email).map_err(git)?;
            let parents: Vec<&git2::Commit<'_>> = parent.iter().collect();
            let id = repo.commit(None, &sig, &sig, &message, &tree, &parents).map_err(git)?;
            let pushed = match local_path(remote.url()) {
                Some(path) => self.push_ref_local(&repo, remote, &path, HEAD_REF, id, tip),
                None => {
                    let out = format!("refs/promote/out/{id}");
                    repo.reference(&out, id, true, "promote: to push").map_err(git)?;
                    let r = self.push_ref(&repo, remote, &out, HEAD_REF);
                    if let Ok(mut r) = repo.find_reference(&out) {
                        let _ = r.delete();
                    }
                    r
                }
            };
            match pushed {
                Ok(()) => return Ok(id.to_string()),
                Err(PushError::Rejected(last)) if attempt >= self.config.max_attempts => {
                    return Err(GitError::Rejected { remote: remote.to_string(), branch: HEAD_REF.into(), attempts: attempt, last });
                }
                Err(PushError::Rejected(_)) => std::thread::sleep(backoff(attempt)),
                Err(PushError::Fatal(e)) => return Err(e),
            }
        }
    }

    /// The heads kept in `remote`, newest first; empty when it keeps none.
    pub fn kept_heads(&self, remote: &Remote, key: &Key) -> Result<Vec<KeptHead>, GitError> {
        let (repo, lock) = self.open_cache(remote)?;
        let _guard = self.lock(&repo, &lock)?;
        let Some(tip) = self.fetch_ref(&repo, remote, HEAD_REF)? else { return Ok(Vec::new()) };
        let mut out = Vec::new();
        let mut walk = repo.revwalk().map_err(|e| self.cache_err(&repo, e))?;
        walk.push(tip).map_err(|e| self.cache_err(&repo, e))?;
        for id in walk.take(MAX_HEADS) {
            let id = id.map_err(|e| self.cache_err(&repo, e))?;
            let c = repo.find_commit(id).map_err(|e| self.cache_err(&repo, e))?;
            let m = c.message().unwrap_or("");
            let one = |k: &str| trailer_values(m, k).first().map(|s| s.to_string());
            let (Some(state), Some(seq), Some(hash)) =
                (one("Promote-Audit-State"), one("Promote-Audit-Seq").and_then(|s| s.parse().ok()), one("Promote-Audit-Hash"))
            else {
                continue;
            };
            let sealed = key.verify_hex(&seal_of(key, &state, seq, &hash), one("Promote-Audit-Seal").as_deref());
            out.push(KeptHead { state, seq, hash, sealed, commit: id.to_string() });
        }
        Ok(out)
    }

    /// Fetches `name` of the remote into `refs/promote/fetched-ref/NAME`: its id, `None` when
    /// the remote has no such ref.
    fn fetch_ref(&self, repo: &Repository, remote: &Remote, name: &str) -> Result<Option<Oid>, GitError> {
        let local = format!("refs/promote/fetched-ref/{}", name.trim_start_matches("refs/"));
        if let Ok(mut r) = repo.find_reference(&local) {
            r.delete().map_err(|e| self.cache_err(repo, e))?;
        }
        self.fetch_into(repo, remote, &[&format!("+{name}:{local}")])?;
        Ok(repo.refname_to_id(&local).ok())
    }

    /// As `push_local`, for any ref: the objects copied, the ref moved by compare-and-swap from
    /// `expected` (created only if absent when `None`).
    fn push_ref_local(&self, repo: &Repository, remote: &Remote, path: &Path, name: &str, id: Oid, expected: Option<Oid>) -> Result<(), PushError> {
        let fatal = |e: git2::Error| {
            PushError::Fatal(GitError::Remote { remote: remote.to_string(), action: "push", message: self.config.credentials.redact(remote, e.message()) })
        };
        let dst_repo = Repository::open(path).map_err(fatal)?;
        let (src, dst) = (repo.odb().map_err(fatal)?, dst_repo.odb().map_err(fatal)?);
        transport::copy_missing(&src, &dst, id).map_err(fatal)?;
        let _pushing = transport::clear_stale_ref_lock(dst_repo.path(), name);
        let moved = match expected {
            Some(e) => dst_repo.reference_matching(name, id, true, e, "promote: audit head"),
            None => dst_repo.reference(name, id, false, "promote: audit head"),
        };
        match moved {
            Ok(_) => Ok(()),
            Err(e) if transport::is_race(&e) || e.code() == git2::ErrorCode::Exists => Err(PushError::Rejected(format!("the ref moved: {}", e.message()))),
            Err(e) => Err(fatal(e)),
        }
    }
}
