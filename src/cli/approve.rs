//! `promote approve RUN STAGE --as USER [--comment TEXT]` and `promote reject ... --reason TEXT`.

use std::process::ExitCode;

use super::EXIT_BAD_INPUT;
use crate::diag::did_you_mean;
use crate::model::StageKind;
use crate::stages::{ApprovalCheck, check_approver};
use crate::store::{RunState, StageState};

/// Arguments of `approve`.
#[derive(Debug, clap::Args)]
pub struct ApproveArgs {
    /// The run id.
    pub run: String,
    /// The approval stage.
    pub stage: String,
    /// Who approves.
    #[arg(long = "as", value_name = "USER")]
    pub user: String,
    /// A comment for the record.
    #[arg(long)]
    pub comment: Option<String>,
}

/// Arguments of `reject`.
#[derive(Debug, clap::Args)]
pub struct RejectArgs {
    /// The run id.
    pub run: String,
    /// The approval stage.
    pub stage: String,
    /// Who rejects.
    #[arg(long = "as", value_name = "USER")]
    pub user: String,
    /// Why (required).
    #[arg(long)]
    pub reason: String,
}

/// Runs `approve`.
pub fn approve(a: ApproveArgs, state: &std::path::Path) -> anyhow::Result<ExitCode> {
    decide(&a.run, &a.stage, &a.user, true, a.comment.as_deref(), state)
}

/// Runs `reject`.
pub fn reject(a: RejectArgs, state: &std::path::Path) -> anyhow::Result<ExitCode> {
    if a.reason.trim().is_empty() {
        eprintln!("promote: error: a rejection needs a reason (--reason TEXT)");
        return Ok(ExitCode::from(EXIT_BAD_INPUT));
    }
    decide(&a.run, &a.stage, &a.user, false, Some(&a.reason), state)
}

fn decide(run_id: &str, stage: &str, user: &str, approve: bool, comment: Option<&str>, state: &std::path::Path) -> anyhow::Result<ExitCode> {
    let rt = super::runtime()?;
    rt.block_on(async {
        let store = super::open_store(state).await?;
        let refuse = |msg: String| {
            eprintln!("promote: error: {msg}");
            Ok(ExitCode::from(EXIT_BAD_INPUT))
        };
        let run = match store.run(run_id).await {
            Ok(r) => r,
            Err(e @ crate::store::StoreError::UnknownRun { .. }) => return refuse(e.to_string()),
            Err(e) => return Err(e.into()),
        };
        if run.state != RunState::Running {
            return refuse(format!("run {run_id} already {}: nothing to decide", run.state));
        }
        let mut diags = crate::diag::Diagnostics::new(run.file.clone());
        let Some(pipeline) = crate::model::load(&run.source, &mut diags) else { return refuse(format!("the pipeline stored with run {run_id} does not load")) };
        let Some(s) = pipeline.stages.iter().find(|s| s.name.value == stage) else {
            let names = pipeline.stages.iter().filter(|s| matches!(s.kind, StageKind::Approval(_))).map(|s| s.name.value.as_str());
            return refuse(format!("run {run_id} has no stage `{stage}`{}", did_you_mean(stage, names)));
        };
        let current = store.stages(run_id).await?.into_iter().find(|r| r.name == stage).map(|r| r.state).unwrap_or(StageState::Pending);
        let deciders;
        let a = match &s.kind {
            StageKind::Approval(a) => a,
            // An inconclusive analysis waits for a person, with the same checks.
            StageKind::Metrics(m) if current == StageState::Waiting => {
                deciders = crate::stages::deciders(m);
                &deciders
            }
            StageKind::Metrics(_) => {
                return refuse(format!("stage `{stage}` is a metrics stage that is {current}: only an inconclusive analysis (waiting) is decided by a person"));
            }
            other => return refuse(format!("stage `{stage}` is a {} stage, not an approval", other.name())),
        };
        if current.is_final() {
            return refuse(format!("stage `{stage}` is already {current}"));
        }
        match check_approver(a, &run, user) {
            ApprovalCheck::Allowed => {}
            ApprovalCheck::NotAnApprover(m) | ApprovalCheck::SelfApproval(m) => return refuse(m),
        }
        store.decide(run_id, stage, user, approve, comment).await?;
        println!("{} `{stage}` of run {run_id} as {user}", if approve { "approved" } else { "rejected" });
        Ok(ExitCode::SUCCESS)
    })
}
