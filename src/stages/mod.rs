//! The stage kinds that run: one file per kind, each a function of (stage, context) that returns
//! the stage's output or why it failed. Adding a kind: a file here, an arm in [`execute`].

mod approval;
mod deploy;
mod metrics;
mod wait;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::git::Writer;
use crate::model::{Stage, StageKind};
use crate::plan::Plan;
use crate::store::{RunRecord, StageState, Store, Transition};

pub use approval::{ApprovalCheck, check_approver};
pub use metrics::deciders;

/// Why a stage attempt failed.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    /// The stage's own verdict (rejected, timed out, git refused): retried if `retry` allows.
    #[error("{0}")]
    Failed(String),
    /// The stage judged evidence and said no: the message names the values and conditions, the
    /// evidence is kept with the stage.
    #[error("{message}")]
    Verdict {
        /// What decided it, in words.
        message: String,
        /// Every value measured and how it was judged.
        evidence: serde_json::Value,
    },
    /// The state store failed: the run stops here and can be resumed.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// How a stage says it waits (for a person or a lock) and runs again: (stage, state, why).
pub type Report = Arc<dyn Fn(&str, StageState, &str) + Send + Sync>;

/// What a stage gets to do its work.
#[derive(Clone)]
pub struct StageContext {
    /// The run.
    pub run: Arc<RunRecord>,
    /// The plan of the run's pipeline (from the source stored with the run).
    pub plan: Arc<Plan>,
    /// The stage's index in the plan.
    pub index: usize,
    /// The state store.
    pub store: Store,
    /// The git writer.
    pub writer: Arc<Writer>,
    /// The pipeline file's folder (relative repo paths start here).
    pub base_dir: PathBuf,
    /// When the stage's first attempt started (Unix ms): a resumed `wait` only waits the rest.
    pub started_at: i64,
    /// How often to look for decisions and locks.
    pub poll: Duration,
    /// Reports `waiting` (with what for) and back to `running`.
    pub report: Report,
}

impl StageContext {
    /// The stage being run.
    pub fn stage(&self) -> &Stage {
        &self.plan.pipeline.stages[self.index]
    }

    /// Marks the stage waiting (for a person or a lock), durably, and says what for.
    pub async fn waiting(&self, why: &str) -> Result<(), StageError> {
        let name = &self.stage().name.value;
        let t = Transition { state: Some(StageState::Waiting), message: Some(why), ..Default::default() };
        self.store.transition(&self.run.id, name, &t, &format!("waiting: {why}")).await?;
        (self.report)(name, StageState::Waiting, why);
        Ok(())
    }

    /// Back to running after a wait.
    pub async fn resumed(&self) -> Result<(), StageError> {
        let name = &self.stage().name.value;
        let t = Transition { state: Some(StageState::Running), message: Some(""), ..Default::default() };
        self.store.transition(&self.run.id, name, &t, "running again").await?;
        (self.report)(name, StageState::Running, "");
        Ok(())
    }
}

/// Whether this version of promote can run a kind (the others are validated and drawn only).
pub fn runnable(kind: &StageKind) -> Result<(), &'static str> {
    match kind {
        StageKind::Wait(_) | StageKind::Approval(_) | StageKind::Deploy(_) | StageKind::Metrics(_) => Ok(()),
        StageKind::Logs(_) | StageKind::Policy(_) | StageKind::Webhook(_) => Err("this kind is not run yet"),
    }
}

/// Runs one attempt of the stage.
pub async fn execute(ctx: &StageContext) -> Result<serde_json::Value, StageError> {
    match &ctx.stage().kind {
        StageKind::Wait(w) => wait::run(w, ctx).await,
        StageKind::Deploy(d) => deploy::run(d, ctx).await,
        StageKind::Approval(a) => approval::run(a, ctx).await,
        StageKind::Metrics(m) => metrics::run(m, ctx).await,
        other => Err(StageError::Failed(format!("kind `{}` is not run by this version of promote", other.name()))),
    }
}
