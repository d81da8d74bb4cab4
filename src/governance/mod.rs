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
    for s in &p.stages {
        match &s.kind {
            StageKind::Approval(a) => {
                check_people(&a.approvers, "approver", diags);
                let people: Vec<Spanned<String>> = a.escalate_to.iter().filter(|t| !t.value.contains('@') || t.value.starts_with("group:")).cloned().collect();
                check_people(&people, "escalateTo", diags);
                // A reminder or an escalation nobody would be sent is likely a forgotten channel.
                for (field, d, event) in [("remindEvery", &a.remind_every, "approval-reminder"), ("escalateAfter", &a.escalate_after, "approval-escalation")] {
                    if let Some(d) = d
                        && !p.notifications.iter().any(|n| notify::carries(n.events.iter().map(|e| e.value.as_str()), event))
                    {
                        diags.warning(
                            d.pos,
                            format!("`{field}`: no notification carries `{event}` (add a channel under `notifications` whose `events` list it or `approval-pending`)"),
                        );
                    }
                }
                if a.min_approvals.value == 0 {
                    diags.error(a.min_approvals.pos, "`minApprovals` is at least 1");
                }
                // With the users file, the people who may approve are known: too few is an error.
                if let Some(u) = &users
                    && !a.approvers.iter().any(|x| x.value == "group:*")
                {
                    let eligible: Vec<&str> =
                        u.users.iter().filter(|(login, x)| !x.disabled && is_listed(&a.approvers, Some(u), login)).map(|(l, _)| l.as_str()).collect();
                    if eligible.len() < a.min_approvals.value as usize {
                        diags.error(
                            a.min_approvals.pos,
                            format!(
                                "`minApprovals: {}` but only {} in the users file may approve ({}): it could never be met",
                                a.min_approvals.value,
                                if eligible.len() == 1 { "1 person".to_string() } else { format!("{} people", eligible.len()) },
                                if eligible.is_empty() { "nobody".to_string() } else { eligible.join(", ") }
                            ),
                        );
                    }
                }
            }
            StageKind::Metrics(m) => check_people(&m.approvers, "approver", diags),
            StageKind::Policy(pol) => {
                let _ = crate::providers::policy::PolicySet::load(base_dir, &pol.policies, &pol.data, diags);
                if let Some(env) = &pol.environment
                    && !p.environments.iter().any(|e| e.name.value == env.value)
                {
                    let names = p.environments.iter().map(|e| e.name.value.as_str());
                    diags.error(env.pos, format!("unknown environment `{}`{}", env.value, did_you_mean(&env.value, names)));
                }
            }
            _ => {}
        }
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
