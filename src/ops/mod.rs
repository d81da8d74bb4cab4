//! The operations people and programs ask of promote, with every domain rule they carry: check a
//! pipeline file, start a run, decide (approve, reject, break-glass, not-a-risk), roll back, verify
//! and read the trail. The CLI (`cli/`) and the server call these and only parse and print around
//! them.

pub mod access;
pub mod audit;
pub mod compliance;
pub mod decide;
pub mod drift;
pub mod environments;
pub mod figures;
pub mod report;
pub mod rollback;
pub mod runs;
pub mod start;
pub mod watch;

use std::path::Path;

use crate::diag::{Diagnostic, Diagnostics};
use crate::plan::{self, Plan};

/// Why an operation did not happen.
#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    /// The request is not allowed or makes no sense (who, what, when): nothing was written. The
    /// CLI exits 2 with it; the server answers 4xx.
    #[error("{0}")]
    Refused(String),
    /// The person may not do this: the message names the rule that would allow it. Nothing was
    /// written but the refusal's trail entry. The server answers 403, the CLI exits 2.
    #[error("{0}")]
    Forbidden(String),
    /// A decision that happens once was already made (by a concurrent or an earlier request):
    /// nothing was written. The server answers 409.
    #[error("{0}")]
    Conflict(String),
    /// The state failed.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// The executor failed.
    #[error(transparent)]
    Exec(#[from] crate::exec::ExecError),
    /// The git writer failed.
    #[error(transparent)]
    Git(#[from] crate::git::GitError),
    /// A task doing the work stopped.
    #[error("{0}")]
    Stopped(String),
}

/// One pipeline file's outcome: its diagnostics and, when valid, its plan.
pub struct Checked {
    /// The file as the user named it.
    pub file: String,
    /// Every problem found, sorted by position.
    pub diagnostics: Vec<Diagnostic>,
    /// The plan, when there were no errors.
    pub plan: Option<Plan>,
    /// The text the plan was made from (empty when unreadable): what a run started from this
    /// check stores, read once, so that the stored source and the plan never differ.
    pub source: String,
}

/// Reads, loads and plans one file, and checks the files it names (users, policies), collecting
/// every problem.
pub fn check_file(path: &Path) -> Checked {
    let file = path.display().to_string();
    let mut diags = Diagnostics::new(file.clone());
    let (plan, source) = match crate::files::read_text(path, crate::files::MAX_TEXT) {
        Ok(src) => {
            let plan = plan::compile(&src, &mut diags).inspect(|plan| {
                let base = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
                crate::governance::check(plan, base, &mut diags);
            });
            (plan, src)
        }
        Err(e) => {
            diags.error(e.pos.unwrap_or(crate::diag::Pos::new(1, 1)), format!("cannot read the file: {}", e.why));
            (None, String::new())
        }
    };
    let plan = if diags.has_errors() { None } else { plan };
    Checked { file, diagnostics: diags.into_sorted(), plan, source }
}
