//! `approval`: waits until enough allowed people approve (`promote approve`), fails on a
//! rejection or at its timeout.

use super::{StageContext, StageError};
use crate::model::ApprovalStage;
use crate::store::{RunRecord, now_ms};

/// Whether `user` may decide this approval of `run`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApprovalCheck {
    /// Allowed.
    Allowed,
    /// Not among the approvers.
    NotAnApprover(String),
    /// Triggered the run, and the stage does not allow self-approval.
    SelfApproval(String),
}

/// Checks a person against the stage's approvers. `group:NAME` entries accept any user until the
/// users file of the governance issue gives groups their members (`group:*` is anyone).
pub fn check_approver(a: &ApprovalStage, run: &RunRecord, user: &str) -> ApprovalCheck {
    let listed = a.approvers.iter().any(|x| x.value == user || x.value.starts_with("group:"));
    if !listed {
        let names: Vec<&str> = a.approvers.iter().map(|x| x.value.as_str()).collect();
        return ApprovalCheck::NotAnApprover(format!("`{user}` is not an approver of this stage (approvers: {})", names.join(", ")));
    }
    if user == run.triggered_by && !a.allow_self_approval {
        return ApprovalCheck::SelfApproval(format!(
            "`{user}` started this run and may not approve it (separation of duties; `allowSelfApproval: true` allows it)"
        ));
    }
    ApprovalCheck::Allowed
}

/// Waits for the decisions.
pub async fn run(a: &ApprovalStage, ctx: &StageContext) -> Result<serde_json::Value, StageError> {
    let name = &ctx.stage().name.value;
    let need = a.min_approvals.value as usize;
    let deadline = a.timeout.map(|t| ctx.started_at + t.0.as_millis() as i64);
    let mut said_waiting = false;
    loop {
        let decisions = ctx.store.decisions(&ctx.run.id, name).await?;
        if let Some(r) = decisions.iter().find(|d| !d.approve && check_approver(a, &ctx.run, &d.user) == ApprovalCheck::Allowed) {
            return Err(StageError::Failed(format!("rejected by {}: {}", r.user, r.comment.as_deref().unwrap_or("no reason given"))));
        }
        let approvers: Vec<&str> =
            decisions.iter().filter(|d| d.approve && check_approver(a, &ctx.run, &d.user) == ApprovalCheck::Allowed).map(|d| d.user.as_str()).collect();
        if approvers.len() >= need {
            if said_waiting {
                ctx.resumed().await?;
            }
            return Ok(serde_json::json!({"approvedBy": approvers}));
        }
        if let Some(d) = deadline
            && now_ms() >= d
        {
            return Err(StageError::Failed(format!("timed out waiting for approval ({} of {need})", approvers.len())));
        }
        if !said_waiting {
            let who: Vec<&str> = a.approvers.iter().map(|x| x.value.as_str()).collect();
            let why = format!("{} of {need} approvals from {}: promote approve {} {name} --as USER", approvers.len(), who.join(", "), ctx.run.id);
            ctx.waiting(&why).await?;
            said_waiting = true;
        }
        tokio::time::sleep(ctx.poll).await;
    }
}
