//! `approval`: done when enough allowed people approved (`promote approve`), failed on a
//! rejection or at its timeout, else waiting for the next decision. People and groups come from
//! the pipeline's users file.

pub use settings::ApprovalStage;

use super::{StageContext, StageError, Step, Wait, Wake};
use crate::clock::now_ms;
use crate::governance::notify::Note;
use crate::governance::{Users, is_listed};
use crate::store::{EntryKind, RunRecord};

/// Whether `user` may decide this approval of `run`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApprovalCheck {
    /// Allowed.
    Allowed,
    /// Not among the approvers (nor in a group that is), or not in the users file, or disabled.
    NotAnApprover(String),
    /// Triggered the run, and the stage does not allow self-approval.
    SelfApproval(String),
}

/// Checks a person against the stage's approvers: listed by name or through a `group:` of the
/// users file (`group:*` is anyone); with a users file, only its enabled users decide.
pub fn check_approver(a: &ApprovalStage, run: &RunRecord, users: Option<&Users>, user: &str) -> ApprovalCheck {
    let names: Vec<&str> = a.approvers.iter().map(|x| x.value.as_str()).collect();
    if let Some(u) = users {
        match u.users.get(user) {
            None => return ApprovalCheck::NotAnApprover(format!("`{user}` is not in the users file (approvers: {})", names.join(", "))),
            Some(x) if x.disabled => return ApprovalCheck::NotAnApprover(format!("`{user}` is disabled in the users file")),
            Some(_) => {}
        }
    }
    if !is_listed(&a.approvers, users, user) {
        return ApprovalCheck::NotAnApprover(format!("`{user}` is not an approver of this stage, nor in one of its groups (approvers: {})", names.join(", ")));
    }
    // Where people prove who they are, a run whose starter did not can be anyone's: separation
    // of duties cannot be shown, so it is not met.
    if !a.allow_self_approval && !run.authenticated && users.is_some_and(Users::uses_tokens) {
        return ApprovalCheck::SelfApproval(format!(
            "run {} was started without proof of who started it (`{}` gave no token), so separation of duties cannot be met: start runs with PROMOTE_TOKEN (or `allowSelfApproval: true`)",
            run.id, run.triggered_by
        ));
    }
    if user == run.triggered_by && !a.allow_self_approval {
        return ApprovalCheck::SelfApproval(format!(
            "`{user}` started this run and may not approve it (separation of duties; `allowSelfApproval: true` allows it)"
        ));
    }
    ApprovalCheck::Allowed
}

/// Whether a recorded decision by `user` counts now. Without a server, by every rule over the
/// pipeline's users file. Under a server, the decision was judged by the same rules when it was
/// made (its seal proves it went through promote), with the groups the person had then, an
/// identity provider's included: it counts unless the person is now disabled in the directory
/// or it breaks separation of duties.
pub fn counts(a: &ApprovalStage, ctx: &StageContext, users: Option<&Users>, user: &str) -> bool {
    if ctx.directory.is_none() {
        return check_approver(a, &ctx.run, users, user) == ApprovalCheck::Allowed;
    }
    let disabled = users.is_some_and(|u| u.users.get(user).is_some_and(|x| x.disabled));
    !disabled && (a.allow_self_approval || user != ctx.run.triggered_by)
}

/// One look at the decisions: enough approvals, a rejection, the deadline passed, or a wait for
/// the next decision.
pub async fn run(a: &ApprovalStage, ctx: &StageContext) -> Result<Step, StageError> {
    let name = &ctx.stage().name.value;
    let need = a.min_approvals.value as usize;
    let deadline = a.deadline(ctx.started_at);
    let users = ctx.people()?;
    let allowed = |u: &str| counts(a, ctx, users.as_ref(), u);
    let decisions = ctx.store.decisions(&ctx.run.id, name).await?;
    if let Some(r) = decisions.iter().find(|d| !d.approve && allowed(&d.user)) {
        return Err(StageError::Terminal(format!("rejected by {}: {}", r.user, r.comment.as_deref().unwrap_or("no reason given"))));
    }
    let approvers: Vec<&str> = decisions.iter().filter(|d| d.approve && allowed(&d.user)).map(|d| d.user.as_str()).collect();
    if approvers.len() >= need {
        let signed: Vec<String> = approvers.iter().map(|u| users.as_ref().map_or(u.to_string(), |x| x.signature(u))).collect();
        return Ok(Step::Done(serde_json::json!({"approvedBy": approvers, "signatures": signed})));
    }
    if let Some(d) = deadline
        && now_ms() >= d
    {
        let t = a.timeout.map(|t| crate::clock::humanize(t.0)).unwrap_or_default();
        return Err(StageError::Terminal(format!("rejected: no decision within {t} ({} of {need} approvals)", approvers.len())));
    }
    let who: Vec<&str> = a.approvers.iter().map(|x| x.value.as_str()).collect();
    let msg = a.message.as_deref().map(|m| format!(" — {m}")).unwrap_or_default();
    let why = format!("{} of {need} approvals from {}: promote approve {} {name} --as USER{msg}", approvers.len(), who.join(", "), ctx.run.id);
    let decided: Vec<String> = decisions.iter().map(|d| d.user.clone()).collect();
    let next = remind(a, ctx, &decided, approvers.len()).await?;
    let until = match (deadline, next) {
        (Some(d), Some(n)) => Some(d.min(n)),
        (d, n) => d.or(n),
    };
    Ok(Step::Wait(Wait { why, wake: Wake::Decision, until, notify: Some(EntryKind::ApprovalPending) }))
}

/// The notes due while the approval waits: the latest reminder (`remindEvery`: to the approvers
/// who have not decided) and the escalation (`escalateAfter`: to `escalateTo`, once). Each is
/// first taken in the state by a conditional write, which is its trail entry: a replica, or this
/// process restarted, never sends it again; a reminder due while no process ran is sent once
/// when one is back (never a burst of them). Returns when the next note is due (Unix ms).
async fn remind(a: &ApprovalStage, ctx: &StageContext, decided: &[String], approved: usize) -> Result<Option<i64>, StageError> {
    let name = &ctx.stage().name.value;
    let (now, since) = (now_ms(), ctx.started_at);
    let waited = crate::clock::humanize(std::time::Duration::from_millis((now - since).max(0) as u64));
    let need = a.min_approvals.value;
    let question = ctx.question(name);
    let mut next: Option<i64> = None;
    if let Some(every) = a.remind_every.as_ref().map(|e| e.value.0.as_millis() as i64).filter(|e| *e > 0) {
        let n = (now - since) / every;
        let pending: Vec<String> = a.approvers.iter().map(|x| x.value.clone()).filter(|x| !decided.contains(x)).collect();
        if n >= 1 && !pending.is_empty() {
            let detail = format!("reminder {n} sent to {} ({approved} of {need} approvals after {waited})", pending.join(", "));
            if ctx.store.claim_note(&ctx.run.id, name, since, EntryKind::ApprovalReminder, n, &detail).await? {
                let message = format!(
                    "Still waiting for your decision after {waited}: {approved} of {need} approvals; not yet decided: {} (reminder {n}).{}",
                    pending.join(", "),
                    a.message.as_deref().map(|m| format!(" {m}")).unwrap_or_default()
                );
                let note = Note::for_run(&ctx.run, "approval-reminder", Some(name), &message)
                    .headed(format!("Reminder: {question}"))
                    .for_people(pending, decided.to_vec());
                ctx.notifier.send(note);
            }
        }
        next = Some(since + (n + 1) * every);
    }
    if let Some(written) = a.escalate_after.as_ref().map(|e| e.value)
        && !a.escalate_to.is_empty()
    {
        let due = since + written.0.as_millis() as i64;
        if now < due {
            next = Some(next.map_or(due, |n| n.min(due)));
        } else {
            let to: Vec<String> = a.escalate_to.iter().map(|x| x.value.clone()).collect();
            let after = written.to_string();
            let who: Vec<&str> = a.approvers.iter().map(|x| x.value.as_str()).collect();
            let detail = format!("escalated to {} after {after} without a decision ({approved} of {need} approvals)", to.join(", "));
            if ctx.store.claim_note(&ctx.run.id, name, since, EntryKind::ApprovalEscalation, 1, &detail).await? {
                let message = format!(
                    "Nobody has decided in {after}: {approved} of {need} approvals from {}. You hear of it as the escalation of step `{name}`; please see that it is decided.",
                    who.join(", ")
                );
                let note =
                    Note::for_run(&ctx.run, "approval-escalation", Some(name), &message).headed(format!("Escalated: {question}")).for_people(to, Vec::new());
                ctx.notifier.send(note);
            }
        }
    }
    Ok(next)
}

impl super::Run for crate::model::ApprovalStage {
    // A sign-off holds no environment: other runs use it while people decide.
    const JUDGES: bool = false;

    // The explicit form promises `Send`, which the engine's tasks need.
    #[allow(clippy::manual_async_fn)]
    fn run<'a>(&'a self, ctx: &'a StageContext) -> impl std::future::Future<Output = Result<Step, StageError>> + Send + 'a {
        run(self, ctx)
    }
    fn describe(&self, output: &serde_json::Value) -> String {
        let by = output["approvedBy"].as_array().map(|a| a.iter().filter_map(|v| v.as_str()).collect::<Vec<_>>()).unwrap_or_default();
        format!("approved by {}", by.join(", "))
    }
}

/// The kind's settings as the pipeline file writes them under `approval:`, what the kind says of itself
/// (`model::Kind`) and its own checks (`plan::Checks`): with its runner above, the kind in one place.
mod settings {
    use serde::{Deserialize, Serialize};

    use crate::diag::Diagnostics;
    use crate::model::kinds::*;
    use crate::model::*;
    use crate::plan::Checks;

    /// `approval`: waits until enough allowed people approve (or one rejects).
    #[derive(Debug, Clone, Serialize, Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    pub struct ApprovalStage {
        /// Users (`alice`) and groups (`group:release-managers`) who may decide.
        pub approvers: Vec<Spanned<String>>,
        /// How many distinct approvals are needed (default 1).
        #[serde(default = "default_min_approvals")]
        pub min_approvals: Spanned<u32>,
        /// After this long with no decision, the approval is rejected.
        #[serde(default)]
        pub timeout: Option<Duration>,
        /// Whoever triggered the run may approve it too (default false).
        #[serde(default)]
        pub allow_self_approval: bool,
        /// Shown to approvers.
        #[serde(default)]
        pub message: Option<String>,
        /// While it waits, the approvers who have not decided are reminded this often
        /// (`approval-reminder` notes).
        #[serde(default)]
        pub remind_every: Option<Spanned<Duration>>,
        /// After this long with no decision, one note goes to `escalateTo` (`approval-escalation`).
        #[serde(default)]
        pub escalate_after: Option<Spanned<Duration>>,
        /// Who hears of an approval waiting past `escalateAfter`: logins, `group:NAME`, addresses.
        #[serde(default)]
        pub escalate_to: Vec<Spanned<String>>,
    }

    impl Kind for ApprovalStage {
        const NAME: &'static str = "approval";
        const SHAPE: (&'static str, &'static str) = ("{{\"", "\"}}");
        fn summary(&self) -> String {
            format!("approval ({} needed)", self.min_approvals.value)
        }
        const SIGN_OFF: bool = true;
        fn decided_by(&self) -> Option<DecidedBy<'_>> {
            Some(DecidedBy::SignOff(self))
        }
    }

    impl ApprovalStage {
        /// One approval by any of `approvers`, not the run's trigger, with no deadline.
        pub fn of(approvers: Vec<Spanned<String>>) -> ApprovalStage {
            ApprovalStage {
                approvers,
                min_approvals: Spanned::new(Default::default(), 1),
                timeout: None,
                allow_self_approval: false,
                message: None,
                remind_every: None,
                escalate_after: None,
                escalate_to: Vec::new(),
            }
        }

        /// When a sign-off that began waiting at `since` (Unix ms) times out, if it has a
        /// `timeout`: the stage fails then, and the pages show it.
        pub fn deadline(&self, since: i64) -> Option<i64> {
            self.timeout.map(|t| since.saturating_add(t.0.as_millis() as i64))
        }
    }

    impl Checks for ApprovalStage {
        #[allow(clippy::neg_cmp_op_on_partial_ord)]
        fn check(&self, stage: &Stage, diags: &mut Diagnostics) {
            let a = self;
            let name = &stage.name.value;
            if a.approvers.is_empty() {
                diags.error(stage.kind_pos, format!("approval stage `{name}` lists no `approvers`: name users (`alice`) or groups (`group:release-managers`)"));
            }
            for who in &a.approvers {
                if who.value.strip_prefix("group:").is_some_and(str::is_empty) || who.value.trim().is_empty() {
                    diags.error(who.pos, format!("empty approver `{}`", who.value));
                }
            }
            let min = &a.min_approvals;
            let min_pos = if min.pos.line == 0 { stage.kind_pos } else { min.pos };
            let has_group = a.approvers.iter().any(|w| w.value.starts_with("group:"));
            if a.approvers.is_empty() {
                // reported above
            } else if min.value == 0 {
                diags.error(min_pos, "`minApprovals` must be at least 1 (an approval nobody has to give is not an approval)");
            } else if !has_group && min.value as usize > a.approvers.len() {
                diags.error(min_pos, format!("`minApprovals: {}` but only {} approvers are listed: it could never be met", min.value, a.approvers.len()));
            }
            for (field, d) in [("remindEvery", &a.remind_every), ("escalateAfter", &a.escalate_after)] {
                if let Some(d) = d
                    && d.value.0.is_zero()
                {
                    diags.error(d.pos, format!("`{field}` must be longer than 0s"));
                }
            }
            if let (Some(after), Some(t)) = (&a.escalate_after, a.timeout)
                && after.value >= t
            {
                diags.warning(
                    after.pos,
                    format!("`escalateAfter: {}` is not before the approval's `timeout: {}`: the escalation would never be sent", after.value, t),
                );
            }
            match (&a.escalate_after, a.escalate_to.is_empty()) {
                (Some(after), true) => {
                    diags.error(after.pos, "`escalateAfter` needs `escalateTo`: the people (`alice`), groups (`group:NAME`) or addresses told")
                }
                (None, false) => diags.error(a.escalate_to[0].pos, "`escalateTo` needs `escalateAfter`: how long the approval may wait before they are told"),
                _ => {}
            }
            for t in &a.escalate_to {
                let v = t.value.as_str();
                if v.trim().is_empty() || v == "group:" || v == "group:*" || v.contains(char::is_whitespace) && !v.contains('<') {
                    diags.error(t.pos, format!("`{v}` in `escalateTo` is not a person, `group:NAME` or an email address"));
                } else if v.contains('@') && !v.starts_with("group:") && v.parse::<lettre::message::Mailbox>().is_err() {
                    diags.error(t.pos, format!("`{v}` in `escalateTo` is not an email address"));
                }
            }
        }
    }

    impl crate::governance::Govern for ApprovalStage {
        fn govern(&self, g: &crate::governance::Governed<'_>, diags: &mut Diagnostics) {
            let a = self;
            g.people(&a.approvers, "approver", diags);
            let people: Vec<Spanned<String>> = a.escalate_to.iter().filter(|t| !t.value.contains('@') || t.value.starts_with("group:")).cloned().collect();
            g.people(&people, "escalateTo", diags);
            // A reminder or an escalation nobody would be sent is likely a forgotten channel.
            for (field, d, event) in [("remindEvery", &a.remind_every, "approval-reminder"), ("escalateAfter", &a.escalate_after, "approval-escalation")] {
                if let Some(d) = d
                    && !g.pipeline.notifications.iter().any(|n| crate::governance::notify::carries(n.events.iter().map(|e| e.value.as_str()), event))
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
            if let Some(u) = g.users
                && !a.approvers.iter().any(|x| x.value == "group:*")
            {
                let eligible: Vec<&str> = u
                    .users
                    .iter()
                    .filter(|(login, x)| !x.disabled && crate::governance::is_listed(&a.approvers, Some(u), login))
                    .map(|(l, _)| l.as_str())
                    .collect();
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
    }
}
