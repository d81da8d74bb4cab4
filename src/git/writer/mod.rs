//! The git writer: fetch into the kept bare clone, decide the edit on the branch's tip, build the
//! commit in memory, push; retried with jitter when the branch moved meanwhile.

use std::cell::Cell;
use std::collections::HashSet;
use std::fs::File;
use std::hash::{BuildHasher, RandomState};
use std::path::{Path, PathBuf};
use std::time::Duration;

use git2::{AutotagOption, Cred, CredentialType, FetchOptions, Oid, PushOptions, RemoteCallbacks, Repository, Sort};

use super::commit::{self, Identity, SigningKey, trailer_values};
use super::edit::{self, Target};
use super::remote::{Credentials, Remote, Secret};
use super::{GitError, Rewrite};
use crate::model::{Environment, Update};
use crate::seal::Key;

mod branch;
mod cache;
mod config;
mod destination;
mod drift;
mod head;
mod history;
mod source;
mod transport;

use branch::request_ref;
pub use config::WriterConfig;
pub use destination::{Destination, EditTarget};
pub use drift::{DriftCommit, RevertFor, Scan};
pub use head::{HEAD_REF, KeptHead};
use history::{seen_ref, touches};
use transport::{backoff, local_path};

/// What a commit check sees: the change about to be committed and every YAML file of the branch
/// as it will be after it.
#[derive(Debug)]
pub struct CheckInput<'a> {
    /// The file changed.
    pub file: &'a str,
    /// The value before (`None`: added).
    pub old_value: Option<&'a str>,
    /// The value written.
    pub new_value: &'a str,
    /// The branch head the commit goes on.
    pub head: String,
    /// (path, text) of every YAML file after the change.
    pub manifests: Vec<(String, String)>,
}

/// A check of the commit before it is pushed (policy as code): `Err` refuses it with the reasons,
/// `Ok` gives warnings to record.
#[derive(Clone, Copy)]
pub struct CommitCheck<'a>(pub &'a (dyn Fn(&CheckInput<'_>) -> Result<Vec<String>, String> + Sync));

impl std::fmt::Debug for CommitCheck<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CommitCheck")
    }
}

/// The most YAML files (and bytes per file) a commit check reads.
const MAX_MANIFESTS: usize = 5000;
const MAX_MANIFEST_BYTES: usize = 1 << 20;

/// One promotion: write `value` for `version` of `pipeline` into an environment.
#[derive(Debug, Clone, Copy)]
pub struct Promotion<'a> {
    /// The pipeline's name.
    pub pipeline: &'a str,
    /// The environment's name.
    pub environment: &'a str,
    /// The run's id.
    pub run: &'a str,
    /// The deploy stage's name.
    pub stage: &'a str,
    /// The version promoted.
    pub version: &'a str,
    /// What is written into the file (see [`Destination::value`]).
    pub value: &'a str,
    /// `Name <email>` of each approver that gated it.
    pub approved_by: &'a [String],
    /// Checked after the edit and before the push, on every round.
    pub check: Option<CommitCheck<'a>>,
    /// Seals the commit (`Promote-Seal`), and is what "already promoted" is proven with: only a
    /// commit sealed with this key, whose file holds the value, counts. `None`: nothing is
    /// sealed and nothing is believed already done.
    pub seal: Option<&'a Key>,
}

/// Which earlier state a rollback restores.
#[derive(Debug, Clone)]
pub enum RollbackTarget {
    /// The value before the newest promotion of the pipeline that is not rolled back yet.
    Latest,
    /// The value before this promotion commit (SHA or unique prefix).
    Of(String),
    /// The value as it was at this commit.
    To(String),
}

/// A rollback of one environment.
#[derive(Debug, Clone)]
pub struct RollbackRequest<'a> {
    /// The pipeline's name.
    pub pipeline: &'a str,
    /// The environment's name.
    pub environment: &'a str,
    /// What to restore.
    pub target: RollbackTarget,
    /// The run that rolls back, if any (trailer `Promote-Run`).
    pub run: Option<&'a str>,
    /// The stage that rolls back, if any (trailer `Promote-Stage`).
    pub stage: Option<&'a str>,
    /// Seals the commit and proves "already rolled back", as [`Promotion::seal`].
    pub seal: Option<&'a Key>,
    /// Only while the file holds this value ([`GitError::Conflict`] otherwise; a file that holds
    /// the value to restore already is [`Outcome::Unchanged`]): a watch's revert never lands over a
    /// newer promotion or another rollback, and one whose commit landed before a crash is found.
    pub only_if: Option<&'a str>,
    /// Values that may not be restored, each with why ([`GitError::Rollback`] with it; nothing
    /// is written): the values of held versions, whose watch failed.
    pub forbidden: &'a [(String, String)],
}

/// A commit that landed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// The new commit, now the branch's head.
    pub commit: Oid,
    /// The value before (`None`: the field was added).
    pub old_value: Option<String>,
    /// The value written.
    pub new_value: String,
    /// For a rollback: the promotion commit it undoes.
    pub undoes: Option<Oid>,
}

/// What a promotion or rollback did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A new commit landed.
    Committed(Written),
    /// This run's stage (or this rollback) already stands on the branch: nothing was written.
    AlreadyDone {
        /// The commit found.
        commit: Oid,
    },
    /// The file already holds the value: nothing was written.
    Unchanged {
        /// The value.
        value: String,
    },
}

/// The outcome and how many fetch-commit-push rounds it took.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// What happened.
    pub outcome: Outcome,
    /// Rounds (1 when nobody raced us).
    pub attempts: u32,
    /// What the commit check warned about (last round).
    pub warnings: Vec<String>,
}

/// A commit that a force push removed from a branch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LostCommit {
    /// Full SHA.
    pub id: String,
    /// First line of its message.
    pub summary: String,
    /// `Name <email>` of its author.
    pub author: String,
}

/// What one attempt decided on the branch's tip.
enum Step {
    /// Nothing to write.
    Done(Outcome),
    /// Commit `text` as the file with `message`.
    Write { text: String, message: String, written: Written },
    /// Commit `tree` (every file) with `message`.
    Tree { tree: Oid, message: String, written: Written },
}

enum PushError {
    Rejected(String),
    Fatal(GitError),
}

/// Writes promotion and rollback commits. Safe to share between threads and processes: each
/// remote's cache is guarded by a file lock; the remote's own ref update decides who wins a race.
pub struct Writer {
    config: WriterConfig,
    /// The last drift scan of each branch, by (remote, branch, pipeline, accepted): a branch whose
    /// head has not moved is not fetched and walked again (most of a fleet, most of the time).
    scans: std::sync::Mutex<std::collections::HashMap<String, drift::Scan>>,
}

impl Writer {
    /// A writer with its configuration.
    pub fn new(config: WriterConfig) -> Writer {
        Writer { config, scans: Default::default() }
    }

    /// The configuration.
    pub fn config(&self) -> &WriterConfig {
        &self.config
    }

    /// Promotes: commits `p.value` into the destination's file on top of the branch's tip, unless
    /// the run's stage already stands on the branch or the file already holds the value.
    pub fn promote(&self, dest: &Destination, p: &Promotion<'_>) -> Result<Report, GitError> {
        // Every text of the message is one line: nothing typed into a version or a name can add a
        // trailer.
        for (what, text) in [("pipeline", p.pipeline), ("run", p.run), ("stage", p.stage), ("version", p.version), ("environment", p.environment)]
            .into_iter()
            .chain(p.approved_by.iter().map(|a| ("approver", a.as_str())))
        {
            commit::one_line(what, text)?;
        }
        let subject = format!("promote {} {} to {}", p.pipeline, p.version, p.environment);
        let trailers = vec![("Promote-Pipeline", p.pipeline), ("Promote-Run", p.run), ("Promote-Stage", p.stage), ("Promote-Version", p.version)];
        let mut first_seen: Option<Option<String>> = None;
        let mut warnings = Vec::new();
        self.write(dest, |repo, tip| {
            // Already done: only a commit promote sealed for this run's stage, whose file holds
            // this value. Trailers alone are text anyone who can push can type.
            let found = match p.seal {
                None => None,
                Some(key) => self.find_in_history(repo, tip.id(), |c| self.is_own_promotion(repo, dest, p, key, c))?,
            };
            if let Some(commit) = found {
                return Ok(Step::Done(Outcome::AlreadyDone { commit }));
            }
            let text = self.read_file(repo, dest, tip)?;
            let edited = edit::apply(&dest.file, &text, dest.target.as_target(), p.value)?;
            if edited.old_value.as_deref() == Some(p.value) {
                return Ok(Step::Done(Outcome::Unchanged { value: p.value.to_string() }));
            }
            match &first_seen {
                None => first_seen = Some(edited.old_value.clone()),
                Some(before) if *before != edited.old_value => {
                    return Err(self.conflict(dest, format!("it was {} when this promotion began and is now {}", shown(before), shown(&edited.old_value))));
                }
                Some(_) => {}
            }
            if let Some(check) = p.check {
                let mut manifests = yaml_files(repo, &tip.tree().map_err(|e| self.cache_err(repo, e))?);
                match manifests.iter_mut().find(|(f, _)| *f == dest.file) {
                    Some(m) => m.1 = edited.text.clone(),
                    None => manifests.push((dest.file.clone(), edited.text.clone())),
                }
                let input = CheckInput { file: &dest.file, old_value: edited.old_value.as_deref(), new_value: p.value, head: tip.id().to_string(), manifests };
                warnings = (check.0)(&input).map_err(GitError::Refused)?;
            }
            let written = Written { commit: Oid::ZERO_SHA1, old_value: edited.old_value, new_value: p.value.to_string(), undoes: None };
            let seal = p.seal.map(|k| promotion_seal(k, dest, p, blob_id(&edited.text)));
            // The seal follows the version; the approvers stay last, as the commit format has them.
            let mut trailers = trailers.clone();
            trailers.extend(seal.as_deref().map(|s| ("Promote-Seal", s)));
            trailers.extend(p.approved_by.iter().map(|a| ("Approved-By", a.as_str())));
            Ok(Step::Write { text: edited.text, message: commit::message(&subject, &trailers), written })
        })
        .map(|mut r| {
            r.warnings = std::mem::take(&mut warnings);
            r
        })
    }

    /// The commit promote sealed for `p`'s run and stage with `p`'s value, if it stands on the
    /// branch, with its commit time (ms): a deploy whose driver died after the push and before
    /// recording it finds its own promotion this way. Nothing without a seal key.
    pub fn promoted_commit(&self, dest: &Destination, p: &Promotion<'_>) -> Result<Option<(Oid, i64)>, GitError> {
        let Some(key) = p.seal else { return Ok(None) };
        let (repo, lock) = self.open_cache(&dest.remote)?;
        let _guard = self.lock(&repo, &lock)?;
        let tip = self.fetch(&repo, dest)?;
        let Some(id) = self.find_in_history(&repo, tip, |c| self.is_own_promotion(&repo, dest, p, key, c))? else { return Ok(None) };
        let commit = repo.find_commit(id).map_err(|e| self.cache_err(&repo, e))?;
        Ok(Some((id, commit.committer().when().seconds() * 1000)))
    }

    /// Whether `c` is the commit promote sealed for `p`'s run and stage, its file holding `p`'s
    /// value. Trailers alone are text anyone who can push can type: the seal decides.
    fn is_own_promotion(&self, repo: &Repository, dest: &Destination, p: &Promotion<'_>, key: &Key, c: &git2::Commit<'_>) -> bool {
        let m = c.message().unwrap_or("");
        m.contains(p.run)
            && trailer_values(m, "Promote-Run").contains(&p.run)
            && trailer_values(m, "Promote-Stage").contains(&p.stage)
            && self.sealed_file(repo, dest, c, |blob| promotion_seal(key, dest, p, blob), Some(p.value))
    }

    /// Every YAML file of the branch's head, with the head's id (for policies judged before a
    /// deploy).
    pub fn manifests(&self, dest: &Destination) -> Result<(String, Vec<(String, String)>), GitError> {
        let (repo, lock) = self.open_cache(&dest.remote)?;
        let _guard = self.lock(&repo, &lock)?;
        let tip = self.fetch(&repo, dest)?;
        let commit = repo.find_commit(tip).map_err(|e| self.cache_err(&repo, e))?;
        let tree = commit.tree().map_err(|e| self.cache_err(&repo, e))?;
        Ok((tip.to_string(), yaml_files(&repo, &tree)))
    }

    /// Rolls back: a new commit that restores the value an earlier state had. History is never
    /// rewritten; other files changed since are left as they are.
    pub fn rollback(&self, dest: &Destination, r: &RollbackRequest<'_>) -> Result<Report, GitError> {
        for (what, text) in [("pipeline", Some(r.pipeline)), ("environment", Some(r.environment)), ("run", r.run), ("stage", r.stage)] {
            if let Some(text) = text {
                commit::one_line(what, text)?;
            }
        }
        self.write(dest, |repo, tip| {
            let text = self.read_file(repo, dest, tip)?;
            let current = edit::read(&dest.file, &text, dest.target.as_target())?;
            let (undoes, restore, to) = match &r.target {
                RollbackTarget::Latest | RollbackTarget::Of(_) => {
                    let promotion = match &r.target {
                        RollbackTarget::Of(sha) => self.resolve_on_branch(repo, dest, tip.id(), sha)?,
                        _ => self.latest_promotion(repo, dest, r.pipeline, tip.id(), None)?.ok_or_else(|| {
                            GitError::Rollback(format!(
                                "{} `{}`: no promotion of `{}` into {} left to roll back in the last {} commits",
                                dest.remote, dest.branch, r.pipeline, dest.file, self.config.history_depth
                            ))
                        })?,
                    };
                    let full = promotion.to_string();
                    // Already rolled back: only by a commit promote sealed (a typed
                    // `Promote-Rollback-Of` would otherwise stop a rollback).
                    if let Some(key) = r.seal
                        && let Some(commit) = self.find_in_history(repo, tip.id(), |c| {
                            let m = c.message().unwrap_or("");
                            trailer_values(m, "Promote-Rollback-Of").contains(&full.as_str()) && {
                                let to = trailer_values(m, "Promote-Rollback-To").first().map(|s| s.to_string());
                                self.sealed_file(repo, dest, c, |blob| rollback_seal(key, r.pipeline, Some(&full), to.as_deref(), &dest.file, blob), None)
                            }
                        })?
                    {
                        return Ok(Step::Done(Outcome::AlreadyDone { commit }));
                    }
                    let promoted = repo.find_commit(promotion).map_err(|e| self.cache_err(repo, e))?;
                    let parent =
                        promoted.parent(0).map_err(|_| GitError::Rollback(format!("{} is the first commit: there is no earlier state", short(promotion))))?;
                    let written_then = self.read_value(repo, dest, &promoted)?;
                    if written_then != current {
                        return Err(self.conflict(
                            dest,
                            format!(
                                "{} wrote {} but it is now {}: a later commit changed it; name the state to restore with --to COMMIT",
                                short(promotion),
                                shown(&written_then),
                                shown(&current)
                            ),
                        ));
                    }
                    (Some(promotion), self.read_value(repo, dest, &parent)?, None)
                }
                RollbackTarget::To(sha) => {
                    let to = self.resolve_on_branch(repo, dest, tip.id(), sha)?;
                    let at = repo.find_commit(to).map_err(|e| self.cache_err(repo, e))?;
                    let undoes = self.latest_promotion(repo, dest, r.pipeline, tip.id(), Some(to))?;
                    (undoes, self.read_value(repo, dest, &at)?, Some(to))
                }
            };
            let Some(restore) = restore else {
                return Err(GitError::Rollback(format!(
                    "{}: `{}` did not exist before; promote will not remove it (edit the file by hand)",
                    dest.file,
                    dest.target.describe()
                )));
            };
            if let Some((_, why)) = r.forbidden.iter().find(|(v, _)| *v == restore) {
                return Err(GitError::Rollback(why.clone()));
            }
            // Already there (a revert whose commit landed before a crash finds it so).
            if current.as_deref() == Some(restore.as_str()) {
                return Ok(Step::Done(Outcome::Unchanged { value: restore }));
            }
            if let Some(want) = r.only_if
                && current.as_deref() != Some(want)
            {
                return Err(self.conflict(dest, format!("it holds {}, not {want} any more: something else changed it since", shown(&current))));
            }
            let edited = edit::apply(&dest.file, &text, dest.target.as_target(), &restore)?;
            let subject = format!("roll back {} in {} to {}", r.pipeline, r.environment, restore);
            let undoes_s = undoes.map(|u| u.to_string());
            let to_s = to.map(|t| t.to_string());
            let mut trailers = vec![("Promote-Pipeline", r.pipeline)];
            trailers.extend(undoes_s.as_deref().map(|u| ("Promote-Rollback-Of", u)));
            trailers.extend(to_s.as_deref().map(|t| ("Promote-Rollback-To", t)));
            trailers.extend(r.run.map(|v| ("Promote-Run", v)));
            trailers.extend(r.stage.map(|v| ("Promote-Stage", v)));
            let seal = r.seal.map(|k| rollback_seal(k, r.pipeline, undoes_s.as_deref(), to_s.as_deref(), &dest.file, blob_id(&edited.text)));
            trailers.extend(seal.as_deref().map(|s| ("Promote-Seal", s)));
            let written = Written { commit: Oid::ZERO_SHA1, old_value: edited.old_value, new_value: restore, undoes };
            Ok(Step::Write { text: edited.text, message: commit::message(&subject, &trailers), written })
        })
    }

    /// The loop: fetch, check history, decide, commit, push; again when the push loses a race.
    fn write(&self, dest: &Destination, mut decide: impl FnMut(&Repository, &git2::Commit<'_>) -> Result<Step, GitError>) -> Result<Report, GitError> {
        let (repo, lock) = self.open_cache(&dest.remote)?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let guard = self.lock(&repo, &lock)?;
            let tip_id = self.fetch(&repo, dest)?;
            self.check_history(&repo, dest, tip_id)?;
            let tip = repo.find_commit(tip_id).map_err(|e| self.cache_err(&repo, e))?;
            let (tree, message, mut written) = match decide(&repo, &tip)? {
                Step::Done(outcome) => return Ok(Report { outcome, attempts: attempt, warnings: Vec::new() }),
                Step::Write { text, message, written } => {
                    let base = tip.tree().map_err(|e| self.cache_err(&repo, e))?;
                    (commit::replace_file(&repo, &base, &dest.file, text.as_bytes()).map_err(|e| self.cache_err(&repo, e))?, message, written)
                }
                Step::Tree { tree, message, written } => (tree, message, written),
            };
            let id = commit::create(&repo, &tip, tree, &message, &self.config.author, &self.config.committer, self.config.signing.as_ref())?;
            let local = local_path(dest.remote.url());
            // libgit2 pushes a ref, not an object id: name the commit while it travels.
            let out = format!("refs/promote/out/{id}");
            if local.is_none() {
                repo.reference(&out, id, true, "promote: to push").map_err(|e| self.cache_err(&repo, e))?;
            }
            drop(guard);

            let pushed = match &local {
                Some(path) => self.push_local(&repo, dest, path, id, tip_id),
                None => self.push(&repo, dest, &out),
            };

            let _guard = self.lock(&repo, &lock)?;
            if local.is_none()
                && let Ok(mut r) = repo.find_reference(&out)
            {
                let _ = r.delete();
            }
            match pushed {
                Ok(()) => {
                    // Move the last-seen head forward only: a faster racer may have moved it past us.
                    let seen = repo.refname_to_id(&seen_ref(&dest.branch)).ok();
                    if seen.is_none_or(|s| repo.graph_descendant_of(id, s).unwrap_or(false)) {
                        repo.reference(&seen_ref(&dest.branch), id, true, "promote: pushed").map_err(|e| self.cache_err(&repo, e))?;
                    }
                    written.commit = id;
                    return Ok(Report { outcome: Outcome::Committed(written), attempts: attempt, warnings: Vec::new() });
                }
                Err(PushError::Rejected(last)) if attempt >= self.config.max_attempts => {
                    return Err(GitError::Rejected { remote: dest.remote.to_string(), branch: dest.branch.clone(), attempts: attempt, last });
                }
                Err(PushError::Rejected(_)) => {
                    drop(_guard);
                    std::thread::sleep(backoff(attempt));
                }
                Err(PushError::Fatal(e)) => return Err(e),
            }
        }
    }

    /// Whether `c` carries the seal `want(blob)` of the destination file's blob in its tree and,
    /// when `value` is given, that file holds it.
    fn sealed_file(&self, repo: &Repository, dest: &Destination, c: &git2::Commit<'_>, want: impl Fn(Oid) -> String, value: Option<&str>) -> bool {
        let Some(given) = trailer_values(c.message().unwrap_or(""), "Promote-Seal").first().map(|s| s.to_string()) else { return false };
        let Ok(blob) = c.tree().and_then(|t| t.get_path(Path::new(&dest.file))).map(|e| e.id()) else { return false };
        constant_eq(&want(blob), &given) && value.is_none_or(|v| self.read_value(repo, dest, c).ok().flatten().as_deref() == Some(v))
    }

    fn read_file(&self, repo: &Repository, dest: &Destination, commit: &git2::Commit<'_>) -> Result<String, GitError> {
        let missing = |why| GitError::FileMissing { remote: dest.remote.to_string(), branch: dest.branch.clone(), file: dest.file.clone(), why };
        let tree = commit.tree().map_err(|e| self.cache_err(repo, e))?;
        let entry = tree.get_path(Path::new(&dest.file)).map_err(|_| missing("does not exist"))?;
        let blob = entry.to_object(repo).ok().and_then(|o| o.into_blob().ok()).ok_or_else(|| missing("is not a file"))?;
        String::from_utf8(blob.content().to_vec()).map_err(|_| missing("is not UTF-8 text"))
    }

    fn read_value(&self, repo: &Repository, dest: &Destination, commit: &git2::Commit<'_>) -> Result<Option<String>, GitError> {
        let text = self.read_file(repo, dest, commit)?;
        Ok(edit::read(&dest.file, &text, dest.target.as_target())?)
    }

    fn conflict(&self, dest: &Destination, why: String) -> GitError {
        GitError::Conflict { remote: dest.remote.to_string(), branch: dest.branch.clone(), file: dest.file.clone(), path: dest.target.describe(), why }
    }
}

/// The id git gives `text` as a blob.
fn blob_id(text: &str) -> Oid {
    Oid::hash_object(git2::ObjectType::Blob, text.as_bytes()).unwrap_or(Oid::ZERO_SHA1)
}

/// The seal of a rollback commit.
fn rollback_seal(key: &Key, pipeline: &str, undoes: Option<&str>, to: Option<&str>, file: &str, blob: Oid) -> String {
    let blob = blob.to_string();
    key.mac("rollback", &[Some(pipeline.as_bytes()), undoes.map(str::as_bytes), to.map(str::as_bytes), Some(file.as_bytes()), Some(blob.as_bytes())])
}

/// Equal, in a time that does not depend on where they differ.
fn constant_eq(a: &str, b: &str) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

fn short(id: Oid) -> String {
    id.to_string()[..10].to_string()
}

fn shown(v: &Option<String>) -> String {
    match v {
        Some(v) => format!("`{v}`"),
        None => "absent".into(),
    }
}

/// (path, text) of every `.yaml`/`.yml` file of a tree that is UTF-8 and at most 1 MiB, at most
/// [`MAX_MANIFESTS`] of them, in path order.
fn yaml_files(repo: &Repository, tree: &git2::Tree<'_>) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let _ = tree.walk(git2::TreeWalkMode::PreOrder, |dir, entry| {
        let name = entry.name().unwrap_or("");
        if entry.kind() == Some(git2::ObjectType::Blob)
            && (name.ends_with(".yaml") || name.ends_with(".yml"))
            && let Ok(blob) = repo.find_blob(entry.id())
            && blob.size() <= MAX_MANIFEST_BYTES
            && let Ok(text) = std::str::from_utf8(blob.content())
        {
            out.push((format!("{dir}{name}"), text.to_string()));
            if out.len() >= MAX_MANIFESTS {
                return git2::TreeWalkResult::Abort;
            }
        }
        git2::TreeWalkResult::Ok
    });
    out
}

/// The seal of a promotion commit: the run's stage, its version and the file's blob, under the key.
fn promotion_seal(key: &Key, dest: &Destination, p: &Promotion<'_>, blob: Oid) -> String {
    let blob = blob.to_string();
    key.mac(
        "promotion",
        &[
            Some(p.pipeline.as_bytes()),
            Some(p.run.as_bytes()),
            Some(p.stage.as_bytes()),
            Some(p.version.as_bytes()),
            Some(dest.file.as_bytes()),
            Some(blob.as_bytes()),
        ],
    )
}
