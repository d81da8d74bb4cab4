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

/// How the writer commits and where it keeps its caches.
#[derive(Debug, Clone)]
pub struct WriterConfig {
    /// Folder of the bare clones (one per remote), beside the state file.
    pub cache_dir: PathBuf,
    /// Author of promotion commits.
    pub author: Identity,
    /// Committer of promotion commits.
    pub committer: Identity,
    /// Signs promotion commits when set.
    pub signing: Option<SigningKey>,
    /// Tokens and keys for remotes.
    pub credentials: Credentials,
    /// Push attempts in all when the branch keeps moving (default 10).
    pub max_attempts: u32,
    /// How many commits back to look for a promotion already made (default 1,000).
    pub history_depth: usize,
}

impl WriterConfig {
    /// Defaults: author and committer `promote <promote@localhost>`, no signing, no credentials.
    pub fn new(cache_dir: impl Into<PathBuf>) -> WriterConfig {
        WriterConfig {
            cache_dir: cache_dir.into(),
            author: Identity::default(),
            committer: Identity::default(),
            signing: None,
            credentials: Credentials::default(),
            max_attempts: 10,
            history_depth: 1000,
        }
    }

    /// Reads the `PROMOTE_GIT_*` environment variables (docs/git.md) over the defaults.
    pub fn from_env(cache_dir: impl Into<PathBuf>) -> Result<WriterConfig, String> {
        let mut c = WriterConfig::new(cache_dir);
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        if let Some(a) = var("PROMOTE_GIT_AUTHOR") {
            c.author = Identity::parse(&a).ok_or_else(|| format!("PROMOTE_GIT_AUTHOR=`{a}`: write it as `Name <email>`"))?;
        }
        c.committer = c.author.clone();
        if let Some(a) = var("PROMOTE_GIT_COMMITTER") {
            c.committer = Identity::parse(&a).ok_or_else(|| format!("PROMOTE_GIT_COMMITTER=`{a}`: write it as `Name <email>`"))?;
        }
        if let Some(k) = var("PROMOTE_GIT_SIGNING_KEY") {
            c.signing = Some(SigningKey::parse(&k).ok_or_else(|| format!("PROMOTE_GIT_SIGNING_KEY=`{k}`: write `ssh:PATH-TO-PRIVATE-KEY` or `gpg:KEYID`"))?);
        }
        if let Some(t) = var("PROMOTE_GIT_TOKEN") {
            c.credentials.token = Some(Secret::new(t));
        } else if let Some(f) = var("PROMOTE_GIT_TOKEN_FILE") {
            let t = std::fs::read_to_string(&f).map_err(|e| format!("PROMOTE_GIT_TOKEN_FILE: cannot read {f}: {e}"))?;
            c.credentials.token = Some(Secret::new(t));
        }
        c.credentials.ssh_key = var("PROMOTE_GIT_SSH_KEY").map(PathBuf::from);
        Ok(c)
    }
}

/// Which value of which file of which branch an environment's promotions change.
#[derive(Debug, Clone)]
pub struct Destination {
    /// The environment repo.
    pub remote: Remote,
    /// The branch.
    pub branch: String,
    /// The file, relative to the repo's root.
    pub file: String,
    /// The value in the file.
    pub target: EditTarget,
}

/// An owned [`edit::Target`].
#[derive(Debug, Clone)]
pub enum EditTarget {
    /// A kustomization's `images:` entry by name; its `newTag`, or `digest`.
    KustomizeImage {
        /// The entry's `name`.
        name: String,
        /// Write `digest`.
        digest: bool,
    },
    /// A YAML path (also Helm values paths).
    Path(String),
}

impl EditTarget {
    /// The borrowed form that `edit::apply` takes.
    pub fn as_target(&self) -> Target<'_> {
        match self {
            EditTarget::KustomizeImage { name, digest } => Target::KustomizeImage { name, digest: *digest },
            EditTarget::Path(p) => Target::Path(p),
        }
    }

    /// How the target is named in messages.
    pub fn describe(&self) -> String {
        match self {
            EditTarget::KustomizeImage { name, digest } => format!("images[name={name}].{}", if *digest { "digest" } else { "newTag" }),
            EditTarget::Path(p) => p.clone(),
        }
    }
}

impl Destination {
    /// The destination of an environment of a pipeline file that lives in `base_dir`.
    pub fn of(env: &Environment, base_dir: &Path) -> Destination {
        let spec = &env.spec;
        let u = &spec.update.value;
        let target = match (&u.kustomize_image, &u.yaml_path, &u.helm_values) {
            (Some(name), _, _) => EditTarget::KustomizeImage { name: name.clone(), digest: u.digest },
            (None, Some(p), _) | (None, None, Some(p)) => EditTarget::Path(p.value.clone()),
            (None, None, None) => unreachable!("validated: an update names one target"),
        };
        Destination {
            remote: Remote::resolve(&spec.repo.value, base_dir),
            branch: spec.branch.value.clone(),
            file: spec.file.value.trim_start_matches("./").to_string(),
            target,
        }
    }

    /// The value a promotion writes: the version for a kustomize image, else the update's `value`
    /// (default `${version}`) with its variables filled by `vars`.
    pub fn value<'a>(update: &'a Update, vars: impl Fn(&str) -> Option<&'a str>) -> Result<String, String> {
        match (&update.kustomize_image, &update.value) {
            (None, Some(v)) => crate::model::interpolate(&v.value, vars),
            _ => crate::model::interpolate("${version}", vars),
        }
    }
}

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
}

enum PushError {
    Rejected(String),
    Fatal(GitError),
}

/// Writes promotion and rollback commits. Safe to share between threads and processes: each
/// remote's cache is guarded by a file lock; the remote's own ref update decides who wins a race.
pub struct Writer {
    config: WriterConfig,
}

impl Writer {
    /// A writer with its configuration.
    pub fn new(config: WriterConfig) -> Writer {
        Writer { config }
    }

    /// The configuration.
    pub fn config(&self) -> &WriterConfig {
        &self.config
    }

    /// Promotes: commits `p.value` into the destination's file on top of the branch's tip, unless
    /// the run's stage already stands on the branch or the file already holds the value.
    pub fn promote(&self, dest: &Destination, p: &Promotion<'_>) -> Result<Report, GitError> {
        let subject = format!("promote {} {} to {}", p.pipeline, p.version, p.environment);
        let mut trailers = vec![("Promote-Pipeline", p.pipeline), ("Promote-Run", p.run), ("Promote-Stage", p.stage), ("Promote-Version", p.version)];
        trailers.extend(p.approved_by.iter().map(|a| ("Approved-By", a.as_str())));
        let message = commit::message(&subject, &trailers);
        let mut first_seen: Option<Option<String>> = None;
        let mut warnings = Vec::new();
        self.write(dest, |repo, tip| {
            let found = self.find_in_history(repo, tip.id(), |c| {
                let m = c.message().unwrap_or("");
                m.contains(p.run) && trailer_values(m, "Promote-Run").contains(&p.run) && trailer_values(m, "Promote-Stage").contains(&p.stage)
            })?;
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
            Ok(Step::Write { text: edited.text, message: message.clone(), written })
        })
        .map(|mut r| {
            r.warnings = std::mem::take(&mut warnings);
            r
        })
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
                    if let Some(commit) =
                        self.find_in_history(repo, tip.id(), |c| trailer_values(c.message().unwrap_or(""), "Promote-Rollback-Of").contains(&full.as_str()))?
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
            if current.as_deref() == Some(restore.as_str()) {
                return Ok(Step::Done(Outcome::Unchanged { value: restore }));
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
            let written = Written { commit: Oid::ZERO_SHA1, old_value: edited.old_value, new_value: restore, undoes };
            Ok(Step::Write { text: edited.text, message: commit::message(&subject, &trailers), written })
        })
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

    /// The cache folder (bare clone) of a remote.
    pub fn cache_path(&self, remote: &Remote) -> PathBuf {
        self.config.cache_dir.join(remote.cache_name())
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
            let (text, message, mut written) = match decide(&repo, &tip)? {
                Step::Done(outcome) => return Ok(Report { outcome, attempts: attempt, warnings: Vec::new() }),
                Step::Write { text, message, written } => (text, message, written),
            };
            let base = tip.tree().map_err(|e| self.cache_err(&repo, e))?;
            let tree = commit::replace_file(&repo, &base, &dest.file, text.as_bytes()).map_err(|e| self.cache_err(&repo, e))?;
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

    fn open_cache(&self, remote: &Remote) -> Result<(Repository, PathBuf), GitError> {
        let dir = self.cache_path(remote);
        let lock = dir.with_extension("lock");
        let err = |e: &dyn std::fmt::Display| GitError::Cache { path: dir.display().to_string(), message: e.to_string() };
        if let Ok(repo) = Repository::open_bare(&dir) {
            return Ok((repo, lock));
        }
        std::fs::create_dir_all(&self.config.cache_dir).map_err(|e| err(&e))?;
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
    fn lock(&self, repo: &Repository, path: &Path) -> Result<File, GitError> {
        let file = File::options().create(true).truncate(false).write(true).open(path).map_err(|e| self.cache_err(repo, e))?;
        file.lock().map_err(|e| self.cache_err(repo, e))?;
        remove_stale_locks(repo.path());
        Ok(file)
    }

    fn callbacks(&self) -> RemoteCallbacks<'_> {
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

    /// Fetches the branch into `refs/promote/fetched/BRANCH`; returns its head.
    fn fetch(&self, repo: &Repository, dest: &Destination) -> Result<Oid, GitError> {
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

    fn push(&self, repo: &Repository, dest: &Destination, out: &str) -> Result<(), PushError> {
        let mut remote = repo.remote_anonymous(dest.remote.url()).map_err(|e| PushError::Fatal(self.remote_err(dest, "push", e)))?;
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
            remote.push(&[format!("{out}:refs/heads/{}", dest.branch)], Some(&mut opts))
        };
        match result {
            Ok(()) => match refused.take() {
                None => Ok(()),
                Some(why) => Err(PushError::Rejected(why)),
            },
            Err(e) if is_race(&e) => Err(PushError::Rejected(self.config.credentials.redact(&dest.remote, e.message()))),
            Err(e) => Err(PushError::Fatal(self.remote_err(dest, "push", e))),
        }
    }

    /// Pushes to a repo on this machine by writing the new objects into it and moving its branch
    /// with a compare-and-swap from `expected`. (libgit2's local transport checks fast-forward
    /// against the heads it listed at connect time, then overwrites the ref: two racing pushes
    /// both "succeed" and one commit is lost. Seen here with 20 concurrent writers.)
    fn push_local(&self, repo: &Repository, dest: &Destination, path: &Path, id: Oid, expected: Oid) -> Result<(), PushError> {
        let fatal = |e: git2::Error| PushError::Fatal(self.remote_err(dest, "push", e));
        let remote = Repository::open(path).map_err(fatal)?;
        let (src, dst) = (repo.odb().map_err(fatal)?, remote.odb().map_err(fatal)?);
        copy_missing(&src, &dst, id).map_err(fatal)?;
        match remote.reference_matching(&format!("refs/heads/{}", dest.branch), id, true, expected, "promote: push") {
            Ok(_) => Ok(()),
            Err(e) if is_race(&e) => Err(PushError::Rejected(format!("the branch moved: {}", e.message()))),
            Err(e) => Err(fatal(e)),
        }
    }

    /// Refuses when the branch's head does not descend from the head seen last (a force push).
    fn check_history(&self, repo: &Repository, dest: &Destination, tip: Oid) -> Result<(), GitError> {
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
    fn find_in_history(&self, repo: &Repository, tip: Oid, mut pred: impl FnMut(&git2::Commit<'_>) -> bool) -> Result<Option<Oid>, GitError> {
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
    fn latest_promotion(&self, repo: &Repository, dest: &Destination, pipeline: &str, tip: Oid, after: Option<Oid>) -> Result<Option<Oid>, GitError> {
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
    fn resolve_on_branch(&self, repo: &Repository, dest: &Destination, tip: Oid, sha: &str) -> Result<Oid, GitError> {
        let not_on = || GitError::Rollback(format!("commit `{sha}` is not on {} `{}` (give a SHA from `git log {}`)", dest.remote, dest.branch, dest.branch));
        let id = repo.revparse_single(sha).and_then(|o| o.peel_to_commit()).map_err(|_| not_on())?.id();
        if id == tip || repo.graph_descendant_of(tip, id).unwrap_or(false) { Ok(id) } else { Err(not_on()) }
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

    fn remote_err(&self, dest: &Destination, action: &'static str, e: git2::Error) -> GitError {
        GitError::Remote { remote: dest.remote.to_string(), action, message: self.config.credentials.redact(&dest.remote, e.message()) }
    }

    fn cache_err(&self, repo: &Repository, e: impl std::fmt::Display) -> GitError {
        GitError::Cache { path: repo.path().display().to_string(), message: e.to_string() }
    }
}

/// Removes `*.lock` files at the top of a bare repo and under `refs/` (left by a killed process).
fn remove_stale_locks(git_dir: &Path) {
    fn walk(dir: &Path, deep: bool) {
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

/// The folder of a remote that is a path or a `file://` URL.
fn local_path(url: &str) -> Option<PathBuf> {
    if let Some(p) = url.strip_prefix("file://") {
        return Some(PathBuf::from(p));
    }
    (!url.contains("://") && !url.split(':').next().is_some_and(|h| h.contains('@'))).then(|| PathBuf::from(url))
}

/// Writes `id` and what it points to into `dst`, children first, stopping at objects `dst` has:
/// for a promotion that is the commit, the trees on the changed path and the blob.
fn copy_missing(src: &git2::Odb<'_>, dst: &git2::Odb<'_>, id: Oid) -> Result<(), git2::Error> {
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

fn seen_ref(branch: &str) -> String {
    format!("refs/promote/seen/{branch}")
}

/// Whether a push failed because someone else updated the branch (or held its lock) first.
fn is_race(e: &git2::Error) -> bool {
    matches!(e.code(), git2::ErrorCode::NotFastForward | git2::ErrorCode::Locked | git2::ErrorCode::Modified) || {
        let m = e.message();
        m.contains("fast-forward") || m.contains("fetch first") || m.contains("lock")
    }
}

/// Whether `c` changed `file` relative to its first parent.
fn touches(c: &git2::Commit<'_>, file: &str) -> bool {
    let path = Path::new(file);
    let here = c.tree().ok().and_then(|t| t.get_path(path).ok()).map(|e| e.id());
    let before = c.parent(0).ok().and_then(|p| p.tree().ok()).and_then(|t| t.get_path(path).ok()).map(|e| e.id());
    here.is_some() && here != before
}

/// 20 ms doubled per attempt (at most 1 s), times a random factor in [0.5, 1.5).
fn backoff(attempt: u32) -> Duration {
    let base = 20u64.saturating_mul(1 << attempt.min(6)).min(1000);
    let r = RandomState::new().hash_one(std::time::Instant::now()) % 1000;
    Duration::from_micros(base * (500 + r))
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
