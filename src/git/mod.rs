//! What promote writes into environment repos: format-preserving edits, promotion and rollback
//! commits built in memory in a kept bare clone, pushed with retries, history rewrites detected.

mod commit;
pub mod edit;
mod remote;
mod writer;

pub use commit::{Identity, SigningKey, create as create_commit, message, replace_file, trailer_values};
pub use remote::{Credentials, Remote, Secret};
pub use writer::{
    CheckInput, CommitCheck, Destination, DriftCommit, EditTarget, HEAD_REF, KeptHead, LostCommit, Outcome, Promotion, Report, RevertFor, RollbackRequest,
    RollbackTarget, Scan, Writer, WriterConfig, Written,
};

/// Why a promotion or rollback did not land. Nothing is half-written: the remote branch either has
/// the whole commit or is untouched. Messages never contain tokens or passwords.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    /// libgit2 failed talking to the remote (unreachable, refused credentials, not a repository).
    #[error("{remote}: {action} failed: {message}")]
    Remote {
        /// The remote, without user info.
        remote: String,
        /// `fetch` or `push`.
        action: &'static str,
        /// What libgit2 said, secrets redacted.
        message: String,
    },
    /// The local cache (bare clone under the state folder) could not be used.
    #[error("cache {path}: {message}")]
    Cache {
        /// The cache folder.
        path: String,
        /// What failed.
        message: String,
    },
    /// The branch does not exist on the remote.
    #[error("{remote}: branch `{branch}` does not exist (check the environment's `branch`)")]
    BranchMissing {
        /// The remote.
        remote: String,
        /// The branch.
        branch: String,
    },
    /// The file to edit is not in the branch (or is not a text file).
    #[error("{remote} {branch}: `{file}` {why} (check the environment's `file`)")]
    FileMissing {
        /// The remote.
        remote: String,
        /// The branch.
        branch: String,
        /// The file.
        file: String,
        /// `does not exist`, `is not a file`, `is not UTF-8 text`.
        why: &'static str,
    },
    /// The edit was refused (not YAML, missing path, not a scalar): nothing was committed.
    #[error(transparent)]
    Edit(#[from] edit::EditError),
    /// The value promote was about to change was changed by someone else meanwhile.
    #[error("{remote} {branch}: {file} `{path}` changed under us: {why}; nothing was committed")]
    Conflict {
        /// The remote.
        remote: String,
        /// The branch.
        branch: String,
        /// The file.
        file: String,
        /// The value's path.
        path: String,
        /// What was expected and what was found.
        why: String,
    },
    /// The remote kept refusing the push (the branch kept moving, or a hook refused it).
    #[error("{remote}: push to `{branch}` refused {attempts} times; last: {last}")]
    Rejected {
        /// The remote.
        remote: String,
        /// The branch.
        branch: String,
        /// Attempts made.
        attempts: u32,
        /// The last reason the remote gave.
        last: String,
    },
    /// The branch's history was rewritten since promote last saw it (a force push): promote refuses
    /// to write on top until a person accepts the new history.
    #[error("{0}")]
    HistoryRewritten(Box<Rewrite>),
    /// Signing the commit failed.
    #[error("signing with {key}: {message}")]
    Signing {
        /// `ssh:PATH` or `gpg:KEYID`.
        key: String,
        /// What the signer said.
        message: String,
    },
    /// A rollback found nothing to undo, or a commit named is not a promotion on this branch.
    #[error("{0}")]
    Rollback(String),
    /// The repo is a clone with a work tree that has the branch checked out: moving it would leave
    /// the work tree out of step (as `git push` refuses).
    #[error(
        "{remote}: `{branch}` is checked out in this repo's work tree: promote pushes to a bare repo (`git clone --bare`, or point `repo` at the remote it pushes to); nothing was committed"
    )]
    CheckedOut {
        /// The repo.
        remote: String,
        /// The branch.
        branch: String,
    },
    /// A text meant for the commit message is not one line: nothing was committed.
    #[error("{0}; nothing was committed")]
    NotOneLine(String),
    /// The commit check (policy) refused the commit: nothing was pushed.
    #[error("the commit was refused by policy, nothing was pushed: {0}")]
    Refused(String),
}

impl GitError {
    /// Whether another attempt may land: the remote unreachable, the cache busy, a push race lost
    /// too often, a signer that failed. A policy refusal, a rewritten history, a conflict, a missing
    /// branch or file and a refused edit end the same every time.
    pub fn is_transient(&self) -> bool {
        match self {
            GitError::Remote { .. } | GitError::Cache { .. } | GitError::Rejected { .. } | GitError::Signing { .. } => true,
            GitError::BranchMissing { .. }
            | GitError::FileMissing { .. }
            | GitError::Edit(_)
            | GitError::Conflict { .. }
            | GitError::HistoryRewritten(_)
            | GitError::Rollback(_)
            | GitError::NotOneLine(_)
            | GitError::CheckedOut { .. }
            | GitError::Refused(_) => false,
        }
    }
}

/// A history rewrite found on a branch: what promote saw last, what is there now, what vanished.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{remote} `{branch}` was rewritten: its head {head} does not descend from {seen}, which promote saw last; {} vanished ({}); kept at {kept_at}. \
     Nothing was committed: restore the branch, or accept the new history",
    crate::diag::plural(lost.len(), "commit"),
    lost.iter().take(5).map(|c| format!("{} {}", &c.id[..c.id.len().min(10)], c.summary)).collect::<Vec<_>>().join("; ")
)]
pub struct Rewrite {
    /// The remote.
    pub remote: String,
    /// The branch.
    pub branch: String,
    /// The head promote saw last.
    pub seen: String,
    /// The head now.
    pub head: String,
    /// Commits reachable from `seen` and not from `head`, newest first.
    pub lost: Vec<LostCommit>,
    /// The ref in the cache that keeps them.
    pub kept_at: String,
}
