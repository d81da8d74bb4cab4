//! Drift in an environment branch: the commits on top of the last state promote wrote (a sealed
//! promotion, rollback or revert of the pipeline) or a person accepted, and a history rewrite;
//! and the revert that restores that state's files in a new commit (never a force push).

use super::*;

/// One commit of a drift.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct DriftCommit {
    /// Its id.
    pub id: String,
    /// `Name <email>`.
    pub author: String,
    /// Its subject.
    pub summary: String,
}

/// What a look at an environment branch found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scan {
    /// The branch's head now.
    pub head: String,
    /// The last approved state: the newest commit promote wrote or a person accepted (`None`:
    /// none in the history searched, nothing to compare with).
    pub baseline: Option<String>,
    /// The commits after the baseline, newest first (empty: no drift).
    pub commits: Vec<DriftCommit>,
    /// The history was rewritten: the head promote saw before, kept at `refs/promote/lost/...`,
    /// is no longer in the branch.
    pub rewritten: Option<Box<Rewrite>>,
    /// What changed from the baseline to the head, as a unified diff (at most 64 KB).
    pub diff: String,
}

/// The most of a drift's diff kept.
const MAX_DIFF: usize = 64 << 10;
/// The most requests' sealed commits a scan compares a landing with (the newest).
const MAX_REQUESTS: usize = 100;
/// How far below a request branch's head its sealed commit is looked for (commits a person
/// pushed on top of it).
const MAX_ABOVE_SEAL: usize = 16;

/// The tree of `sealed`'s change (from its first parent) applied on `onto`: its own tree when
/// made from `onto`; else a cherry-pick in memory (`None` when it conflicts).
fn applied_tree(repo: &Repository, sealed: &git2::Commit<'_>, onto: &git2::Commit<'_>) -> Option<Oid> {
    if sealed.parent_id(0).ok()? == onto.id() {
        return Some(sealed.tree_id());
    }
    let mut index = repo.cherrypick_commit(sealed, onto, 0, None).ok()?;
    if index.has_conflicts() {
        return None;
    }
    index.write_tree_to(repo).ok()
}

/// The seal of a revert commit: over the pipeline, the state restored and its tree.
fn revert_seal(key: &Key, pipeline: &str, to: &str, tree: Oid) -> String {
    let tree = tree.to_string();
    key.mac("revert", &[Some(pipeline.as_bytes()), Some(to.as_bytes()), Some(tree.as_bytes())])
}

impl Writer {
    /// Whether `c` is a commit promote sealed for `pipeline` in this destination: a promotion, a
    /// rollback or a drift revert whose seal verifies over its trailers and its content.
    fn promote_wrote(&self, repo: &Repository, dest: &Destination, c: &git2::Commit<'_>, key: &Key, pipeline: &str) -> bool {
        let m = c.message().unwrap_or("");
        if !trailer_values(m, "Promote-Pipeline").contains(&pipeline) {
            return false;
        }
        let one = |k: &str| trailer_values(m, k).first().copied();
        if let Some(to) = one("Promote-Revert-To") {
            let Some(given) = one("Promote-Seal") else { return false };
            return constant_eq(&revert_seal(key, pipeline, to, c.tree_id()), given);
        }
        if let (Some(run), Some(stage), Some(version)) = (one("Promote-Run"), one("Promote-Stage"), one("Promote-Version")) {
            let seal = |blob: Oid| {
                let blob = blob.to_string();
                key.mac(
                    "promotion",
                    &[
                        Some(pipeline.as_bytes()),
                        Some(run.as_bytes()),
                        Some(stage.as_bytes()),
                        Some(version.as_bytes()),
                        Some(dest.file.as_bytes()),
                        Some(blob.as_bytes()),
                    ],
                )
            };
            if self.sealed_file(repo, dest, c, seal, None) {
                return true;
            }
        }
        let (undoes, to) = (one("Promote-Rollback-Of"), one("Promote-Rollback-To"));
        self.sealed_file(repo, dest, c, |blob| rollback_seal(key, pipeline, undoes, to, &dest.file, blob), None)
    }

    /// Looks at the destination's branch: the drift on top of the last approved state (a commit
    /// promote sealed for `pipeline`, or one of `accepted`), and whether its history was rewritten
    /// since promote last saw it.
    pub fn scan(&self, dest: &Destination, key: &Key, pipeline: &str, accepted: &[String]) -> Result<Scan, GitError> {
        // The remote's head first (as `git ls-remote`): unmoved since the last scan, that scan holds.
        let memo = format!("{}\n{}\n{pipeline}\n{}", dest.remote.url(), dest.branch, accepted.join(","));
        let want = format!("refs/heads/{}", dest.branch);
        let head_now = self.list_refs(&dest.remote)?.into_iter().find(|(r, _)| *r == want).map(|(_, o)| o.to_string());
        if let Some(h) = &head_now
            && let Some(prev) = self.scans.lock().unwrap_or_else(|e| e.into_inner()).get(&memo)
            && &prev.head == h
        {
            // A rewrite is reported once: later looks see the head as it is.
            return Ok(Scan { rewritten: None, ..prev.clone() });
        }
        let scan = self.scan_now(dest, key, pipeline, accepted)?;
        self.scans.lock().unwrap_or_else(|e| e.into_inner()).insert(memo, scan.clone());
        Ok(scan)
    }

    fn scan_now(&self, dest: &Destination, key: &Key, pipeline: &str, accepted: &[String]) -> Result<Scan, GitError> {
        let (repo, lock) = self.open_cache(&dest.remote)?;
        let _guard = self.lock(&repo, &lock)?;
        let tip = self.fetch(&repo, dest)?;
        let rewritten = match self.check_history(&repo, dest, tip) {
            Ok(()) => None,
            Err(GitError::HistoryRewritten(r)) => {
                // Seen from now on: the rewrite is reported once, as this drift.
                repo.reference(&seen_ref(&dest.branch), tip, true, "promote: drift seen").map_err(|e| self.cache_err(&repo, e))?;
                Some(r)
            }
            Err(e) => return Err(e),
        };
        let requests = self.request_commits(&repo, dest, key, pipeline)?;
        let mut commits = Vec::new();
        let mut baseline = None;
        let mut walk = repo.revwalk().map_err(|e| self.cache_err(&repo, e))?;
        walk.set_sorting(Sort::TOPOLOGICAL | Sort::TIME).map_err(|e| self.cache_err(&repo, e))?;
        walk.push(tip).map_err(|e| self.cache_err(&repo, e))?;
        for id in walk.take(self.config.history_depth) {
            let id = id.map_err(|e| self.cache_err(&repo, e))?;
            let c = repo.find_commit(id).map_err(|e| self.cache_err(&repo, e))?;
            if accepted.iter().any(|a| a == &id.to_string())
                || self.promote_wrote(&repo, dest, &c, key, pipeline)
                || self.lands_request(&repo, dest, &c, key, pipeline, &requests)
            {
                baseline = Some(id);
                break;
            }
            let a = c.author();
            commits.push(DriftCommit {
                id: id.to_string(),
                author: format!("{} <{}>", a.name().unwrap_or(""), a.email().unwrap_or("")),
                summary: c.summary().ok().flatten().unwrap_or("").to_string(),
            });
        }
        // A rewrite restores what promote had seen: its baseline is the lost head's state.
        let baseline = match (&rewritten, baseline) {
            (Some(r), _) => Oid::from_str(&r.seen).ok(),
            (None, Some(b)) => Some(b),
            // Nothing promote wrote or accepted: nothing to compare with yet.
            (None, None) => return Ok(Scan { head: tip.to_string(), baseline: None, commits: Vec::new(), rewritten: None, diff: String::new() }),
        };
        let diff = match baseline {
            Some(b) if b != tip => self.diff(&repo, b, tip)?,
            _ => String::new(),
        };
        if rewritten.is_none() && baseline == Some(tip) {
            commits.clear();
        }
        Ok(Scan { head: tip.to_string(), baseline: baseline.map(|b| b.to_string()), commits, rewritten, diff })
    }

    /// The sealed commits of this pipeline's requests into the destination that the cache knows
    /// (written here, or fetched now from the remote's `promote/PIPELINE/...` branches, kept after
    /// the host deletes them), newest first, at most [`MAX_REQUESTS`]. A branch a person pushed
    /// more commits to counts by its newest sealed commit: what the merge brings beyond it is
    /// still a drift.
    fn request_commits(&self, repo: &Repository, dest: &Destination, key: &Key, pipeline: &str) -> Result<Vec<Oid>, GitError> {
        let prefix = request_ref(&format!("promote/{pipeline}/"));
        if !git2::Reference::is_valid_name(&format!("{prefix}x")) {
            return Ok(Vec::new());
        }
        self.fetch_into(repo, &dest.remote, &[&format!("+refs/heads/promote/{pipeline}/*:{prefix}*")])?;
        let refs = repo.references_glob(&format!("{prefix}*")).map_err(|e| self.cache_err(repo, e))?;
        let mut found: Vec<(i64, Oid)> = Vec::new();
        for r in refs.flatten() {
            let Some(mut at) = r.target().and_then(|id| repo.find_commit(id).ok()) else { continue };
            for _ in 0..MAX_ABOVE_SEAL {
                if self.promote_wrote(repo, dest, &at, key, pipeline) {
                    if !found.iter().any(|(_, id)| *id == at.id()) {
                        found.push((at.time().seconds(), at.id()));
                    }
                    break;
                }
                let Ok(parent) = at.parent(0) else { break };
                at = parent;
            }
        }
        found.sort_by_key(|(at, _)| std::cmp::Reverse(*at));
        Ok(found.into_iter().take(MAX_REQUESTS).map(|(_, id)| id).collect())
    }

    /// Whether `c` is the landing of a request promote made (a merge commit, a squash, a rebase,
    /// by any host): a sealed commit of `pipeline` (one of `c`'s other parents, or of `requests`)
    /// not yet in `c`'s first parent, whose change applied on that first parent gives exactly
    /// `c`'s tree. Anything else the merge brought (a person's commit on the request's branch, a
    /// hand edit while merging) makes the trees differ: a drift.
    fn lands_request(&self, repo: &Repository, dest: &Destination, c: &git2::Commit<'_>, key: &Key, pipeline: &str, requests: &[Oid]) -> bool {
        // Every request promote makes changes the destination's file.
        let Ok(base) = c.parent(0) else { return false };
        if !touches(c, &dest.file) {
            return false;
        }
        let blob = |x: &git2::Commit<'_>| x.tree().ok().and_then(|t| t.get_path(Path::new(&dest.file)).ok()).map(|e| e.id());
        let (here, before) = (blob(c), blob(&base));
        let parents = c.parent_ids().skip(1).filter(|id| repo.find_commit(*id).is_ok_and(|p| self.promote_wrote(repo, dest, &p, key, pipeline)));
        let candidates: Vec<Oid> = parents.chain(requests.iter().copied()).collect();
        candidates.into_iter().any(|id| {
            let Ok(sealed) = repo.find_commit(id) else { return false };
            // Cheap first: on an unchanged file, the landed file is the sealed commit's.
            if sealed.parent(0).ok().is_some_and(|from| blob(&from) == before) && blob(&sealed) != here {
                return false;
            }
            // Already landed before `c`: it lands no second time.
            if id == base.id() || repo.graph_descendant_of(base.id(), id).unwrap_or(true) {
                return false;
            }
            applied_tree(repo, &sealed, &base) == Some(c.tree_id())
        })
    }

    fn diff(&self, repo: &Repository, from: Oid, to: Oid) -> Result<String, GitError> {
        let tree = |id: Oid| repo.find_commit(id).and_then(|c| c.tree()).map_err(|e| self.cache_err(repo, e));
        let (a, b) = (tree(from)?, tree(to)?);
        let d = repo.diff_tree_to_tree(Some(&a), Some(&b), None).map_err(|e| self.cache_err(repo, e))?;
        let mut out = String::new();
        let _ = d.print(git2::DiffFormat::Patch, |_, _, line| {
            if out.len() < MAX_DIFF {
                if matches!(line.origin(), '+' | '-' | ' ') {
                    out.push(line.origin());
                }
                out.push_str(&String::from_utf8_lossy(line.content()));
            }
            true
        });
        if out.len() >= MAX_DIFF {
            out.truncate(MAX_DIFF);
            out.push_str("\n[diff cut at 64 KB]\n");
        }
        Ok(out)
    }

    /// Restores every file of the approved state `to` on top of the branch's tip, in one sealed
    /// commit: for a drift, naming the drift commits it reverts (`Promote-Revert-Of`); for
    /// compliance, saying so (`Promote-Reason: compliance`). Unchanged when the tip already has
    /// that state's files.
    pub fn revert_to(&self, dest: &Destination, key: &Key, pipeline: &str, environment: &str, to: &str, why: RevertFor<'_>) -> Result<Report, GitError> {
        for (what, text) in [("pipeline", pipeline), ("environment", environment), ("commit", to)] {
            commit::one_line(what, text)?;
        }
        let to_id = Oid::from_str(to).map_err(|_| GitError::Rollback(format!("`{to}` is not a commit id")))?;
        self.write(dest, |repo, tip| {
            let target = repo.find_commit(to_id).map_err(|_| GitError::Rollback(format!("{to} is not in the cache of {}: fetch it first", dest.remote)))?;
            let tree = target.tree_id();
            if tip.tree_id() == tree {
                return Ok(Step::Done(Outcome::Unchanged { value: to.to_string() }));
            }
            let short = &to[..to.len().min(10)];
            let seal = revert_seal(key, pipeline, to, tree);
            let mut trailers = vec![("Promote-Pipeline", pipeline)];
            let subject = match why {
                RevertFor::Drift { reverts } => {
                    trailers.extend(reverts.iter().map(|r| ("Promote-Revert-Of", r.as_str())));
                    format!("revert drift in {environment} to {short}")
                }
                RevertFor::Compliance => format!("revert {environment} to {short} for compliance"),
            };
            trailers.push(("Promote-Revert-To", to));
            if why == RevertFor::Compliance {
                trailers.push(("Promote-Reason", "compliance"));
            }
            trailers.push(("Promote-Seal", seal.as_str()));
            let written = Written { commit: Oid::ZERO_SHA1, old_value: Some(tip.id().to_string()), new_value: to.to_string(), undoes: None };
            Ok(Step::Tree { tree, message: commit::message(&subject, &trailers), written })
        })
    }

    /// What commit `commit` of the destination's repo changed: its diff against its first parent
    /// (capped like a drift's), fetched first if the cache lacks it.
    pub fn commit_diff(&self, dest: &Destination, commit: &str) -> Result<String, GitError> {
        let id = Oid::from_str(commit).map_err(|_| GitError::Rollback(format!("`{commit}` is not a commit id")))?;
        let (repo, lock) = self.open_cache(&dest.remote)?;
        let _guard = self.lock(&repo, &lock)?;
        if repo.find_commit(id).is_err() {
            self.fetch(&repo, dest)?;
        }
        let c = repo.find_commit(id).map_err(|_| GitError::Rollback(format!("{commit} is not in {}", dest.remote)))?;
        match c.parent_id(0) {
            Ok(parent) => self.diff(&repo, parent, id),
            Err(_) => Ok(String::new()),
        }
    }

    /// The newest commit of the branch's first-parent history, tip excluded, at most `depth`
    /// back, whose YAML files `allowed` accepts (`None`: none of them); each distinct tree is
    /// judged once. `allowed`'s error stops the walk.
    pub fn newest_allowed<E>(
        &self,
        dest: &Destination,
        depth: usize,
        mut allowed: impl FnMut(&str, &[(String, String)]) -> Result<bool, E>,
    ) -> Result<Result<Option<String>, E>, GitError> {
        let (repo, lock) = self.open_cache(&dest.remote)?;
        let _guard = self.lock(&repo, &lock)?;
        let tip = self.fetch(&repo, dest)?;
        let mut commit = repo.find_commit(tip).map_err(|e| self.cache_err(&repo, e))?;
        let mut seen = std::collections::HashSet::from([commit.tree_id()]);
        for _ in 0..depth {
            let Ok(parent) = commit.parent(0) else { return Ok(Ok(None)) };
            commit = parent;
            if !seen.insert(commit.tree_id()) {
                continue;
            }
            let tree = commit.tree().map_err(|e| self.cache_err(&repo, e))?;
            let files = super::yaml_files(&repo, &tree);
            match allowed(&commit.id().to_string(), &files) {
                Ok(true) => return Ok(Ok(Some(commit.id().to_string()))),
                Ok(false) => {}
                Err(e) => return Ok(Err(e)),
            }
        }
        Ok(Ok(None))
    }
}

/// What a revert to an earlier state is for (its subject and trailers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevertFor<'a> {
    /// A drift: the commits it reverts.
    Drift {
        /// The drift's commits.
        reverts: &'a [String],
    },
    /// A compliance violation.
    Compliance,
}
