//! Governance around a pipeline: the users file, freeze windows, notifications, and the checks
//! that need the files a pipeline names (users file, policies), made at `validate` and `run`.

pub mod freeze;
pub mod notify;
pub mod users;

use std::path::Path;

use crate::diag::{Diagnostics, Pos, did_you_mean};
use crate::model::{Spanned, StageKind};
use crate::plan::Plan;

pub use users::{Directory, User, Users};

/// A directory swapped whole at each reload, shared by the server and its executor.
pub type SharedDirectory = std::sync::Arc<std::sync::RwLock<std::sync::Arc<Directory>>>;

/// Why a governance file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum GovernanceError {
    /// The file could not be read.
    #[error("{file}: cannot read: {why}")]
    Unreadable {
        /// The file.
        file: String,
        /// What the OS said.
        why: String,
    },
    /// The file's content is wrong.
    #[error("{file}:{line}:{col}: {why}")]
    Invalid {
        /// The file.
        file: String,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        col: usize,
        /// What is wrong and what to do.
        why: String,
    },
}

/// The users file of a pipeline, if it names one (relative to `base_dir`).
pub fn users_of(pipeline: &crate::model::Pipeline, base_dir: &Path) -> Result<Option<Users>, GovernanceError> {
    match &pipeline.users {
        Some(p) => Users::load(&base_dir.join(&p.value)).map(Some),
        None => Ok(None),
    }
}

/// Who may decide, given a list of approvers (`alice`, `group:NAME`).
pub fn is_listed(approvers: &[Spanned<String>], users: Option<&Users>, login: &str) -> bool {
    approvers.iter().any(|a| match a.value.strip_prefix("group:") {
        Some(g) => g == "*" || users.is_some_and(|u| u.in_group(login, g)),
        None => a.value == login,
    })
}

/// Who may act where a list of people may be empty (drift decisions, clearing a held version):
/// those listed; none listed, any user of the users file (anyone, without one).
pub fn may_act(approvers: &[Spanned<String>], users: Option<&Users>, login: &str) -> bool {
    if approvers.is_empty() { users.is_none_or(|u| u.login(login).is_some()) } else { is_listed(approvers, users, login) }
}

/// How people a kind lists are checked against the users file (`list`, what they are, where to say it).
type PeopleCheck<'a> = &'a dyn Fn(&[Spanned<String>], &str, &mut Diagnostics);

/// What a kind's own check against the files its pipeline names is given ([`Govern`]).
pub struct Governed<'a> {
    /// The pipeline.
    pub pipeline: &'a crate::model::Pipeline,
    /// Its users file, when it names one that loaded.
    pub users: Option<&'a Users>,
    /// The pipeline file's folder: the files it names are relative to it.
    pub base_dir: &'a Path,
    people: PeopleCheck<'a>,
}

impl Governed<'_> {
    /// Checks people and groups a kind lists as `what` (`approver`) against the users file.
    pub fn people(&self, list: &[Spanned<String>], what: &str, diags: &mut Diagnostics) {
        (self.people)(list, what, diags)
    }
}

/// A kind's checks against the files its pipeline names (the users file, policies), in the kind's
/// own file; nothing by default.
pub trait Govern {
    /// Records every problem in `diags`.
    fn govern(&self, _g: &Governed<'_>, _diags: &mut Diagnostics) {}
}

macro_rules! govern_dispatch {
    ($($(#[$doc:meta])* $module:ident => $variant:ident($ty:ty),)*) => {
        /// The kind's own checks against the files its pipeline names.
        fn govern_kind(kind: &StageKind, g: &Governed<'_>, diags: &mut Diagnostics) {
            match kind { $(StageKind::$variant(k) => <$ty as Govern>::govern(k, g, diags),)* }
        }
    };
}
crate::model::with_kinds!(govern_dispatch);

/// Checks what needs the files a pipeline names: the users file and every approver and group in
/// it, the freeze windows, the policies (compiled), the notification targets. Every problem is
/// recorded; policy errors are reported at the policy's own file and line.
pub fn check(plan: &Plan, base_dir: &Path, diags: &mut Diagnostics) {
    let p = &plan.pipeline;
    let users = match &p.users {
        Some(path) => match Users::load(&base_dir.join(&path.value)) {
            Ok(u) => Some(u),
            Err(GovernanceError::Invalid { file, line, col, why }) => {
                diags.error_in(file, Pos::new(line, col), why);
                None
            }
            Err(e @ GovernanceError::Unreadable { .. }) => {
                diags.error(path.pos, format!("users file: {e}; `users` is relative to the pipeline file"));
                None
            }
        },
        None => None,
    };
    let users_broken = p.users.is_some() && users.is_none();
    let check_people = |list: &[Spanned<String>], what: &str, diags: &mut Diagnostics| {
        for a in list {
            match a.value.strip_prefix("group:") {
                Some("*") => {}
                Some(g) => match (&users, users_broken) {
                    (Some(u), _) if !u.groups().any(|x| x == g) => {
                        let groups: Vec<&str> = u.groups().collect();
                        diags.error(a.pos, format!("{what}: nobody in the users file is in group `{g}`{}", did_you_mean(g, groups)));
                    }
                    // Under `promote serve` the server's directory or the identity provider says who
                    // is in it; without a server nobody is.
                    (None, false) => diags.warning(
                        a.pos,
                        format!(
                            "{what}: `{}`: no users file says who is in it, so only `promote serve`'s directory or identity provider can (add `users: users.yaml` for runs without a server)",
                            a.value
                        ),
                    ),
                    _ => {}
                },
                None => {
                    if let Some(u) = &users
                        && !u.users.contains_key(&a.value)
                    {
                        let names: Vec<&str> = u.users.keys().map(String::as_str).collect();
                        diags.error(a.pos, format!("{what}: `{}` is not in the users file{}", a.value, did_you_mean(&a.value, names)));
                    }
                }
            }
        }
    };
    // `access:` names people of the server's directory; a login the pipeline's users file does
    // not know is likely a typo (groups may be the identity provider's: not checked).
    if let (Some(access), Some(u)) = (&p.access, &users) {
        let lists = [access.view.as_deref().unwrap_or(&[]), &access.run, &access.rollback, &access.admin];
        let envs = p.environments.iter().filter_map(|e| e.spec.access.as_ref()).map(|a| a.rollback.as_slice());
        for person in lists.into_iter().chain(envs).flatten().filter(|x| !x.value.starts_with("group:")) {
            if !u.users.contains_key(&person.value) {
                let names: Vec<&str> = u.users.keys().map(String::as_str).collect();
                diags.warning(person.pos, format!("access: `{}` is not in the users file{}", person.value, did_you_mean(&person.value, names)));
            }
        }
    }
    let governed = Governed { pipeline: p, users: users.as_ref(), base_dir, people: &check_people };
    for s in &p.stages {
        govern_kind(&s.kind, &governed, diags);
    }
    for env in &p.environments {
        if let Some(f) = &env.spec.freeze {
            freeze::Windows::parse(f, diags);
            check_people(&f.break_glass, "break-glass", diags);
        }
    }
    notify::check(&p.notifications, diags);
    // Email recipients: people and groups as approvers are; addresses as written.
    for n in &p.notifications {
        if let Some(e) = &n.email {
            let people: Vec<Spanned<String>> = e.value.to.iter().filter(|t| !t.value.contains('@') || t.value.starts_with("group:")).cloned().collect();
            check_people(&people, "email recipient", diags);
        }
    }
}
