//! The stage kinds: one file per kind, holding its settings, what it says of itself, its checks
//! and its runner (a function of (stage, context) that returns the stage's output or why it
//! failed). Adding a kind: its file here and its line in `model::with_kinds!`, which declares
//! its module below.

/// Declares each kind's module, from the one list.
macro_rules! kind_modules {
    ($($(#[$doc:meta])* $module:ident => $variant:ident($ty:ty),)*) => {
        $(pub mod $module;)*
    };
}
crate::model::with_kinds!(kind_modules);

pub use approval::ApprovalStage;
pub use deploy::{BreakGlass, DeployOutcome, DeployOutput, DeployStage, HealthSeen};
pub use logs::LogsStage;
pub use metrics::MetricsStage;
pub use policy::PolicyStage;
pub use wait::WaitStage;
pub use webhook::WebhookStage;
pub mod policies;
pub mod pull_request;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::git::Writer;
use crate::model::{Stage, StageKind};
use crate::plan::Plan;
use crate::store::{EntryKind, RunRecord, StageState, Store, Transition};

pub use approval::{ApprovalCheck, check_approver};
pub use deploy::held;

/// Why a stage attempt failed, and so whether another attempt may help: the engine retries a
/// [`Transient`](StageError::Transient) failure (if `retry` allows) and never any other.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    /// Worth another attempt: the network, a push race lost too often, a provider down, an
    /// attempt's `timeout`.
    #[error("{0}")]
    Transient(String),
    /// Another attempt would end the same: a person's rejection, a policy refusal, a rewritten
    /// history, a conflict, a setting that cannot work. Never retried.
    #[error("{0}")]
    Terminal(String),
    /// The stage judged evidence and said no: the message names the values and conditions, the
    /// evidence is kept with the stage. Never retried.
    #[error("{message}")]
    Verdict {
        /// What decided it, in words.
        message: String,
        /// Every value measured and how it was judged.
        evidence: serde_json::Value,
    },
    /// A newer run of the pipeline promoted (or will promote) the environment: the run ends
    /// `superseded`, nothing rolled back. Never retried.
    #[error("{0}")]
    Superseded(String),
    /// The state store failed: the run stops here and can be resumed.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// What one look at a stage found: it is done, or it waits. A stage that waits is looked at again
/// by the engine when what it names wakes it (or at `until`), and must then decide afresh from
/// what is durable (the decisions, the locks, the clock) and from what its attempt kept
/// ([`StageContext::memo`]).
#[derive(Debug)]
pub enum Step {
    /// Finished: the stage's output.
    Done(serde_json::Value),
    /// Not yet.
    Wait(Wait),
}

/// Why a stage waits, and what wakes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wait {
    /// What it waits for, in words (recorded, shown by `promote status`).
    pub why: String,
    /// What wakes it.
    pub wake: Wake,
    /// When to look again anyway (Unix ms): a deadline, a freeze window's end.
    pub until: Option<i64>,
    /// A notification the pipeline's channels get when this wait begins (`approval-pending`).
    pub notify: Option<crate::store::EntryKind>,
}

/// What wakes a waiting stage, as the change feed announces it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wake {
    /// A person's decision (or a break-glass) on this stage of this run.
    Decision,
    /// Its turn for an environment: the run that goes before it (named) lets the environment go
    /// or ends, or this run is superseded while queued.
    Turn(String),
    /// A drift decided (accepted, rejected or reverted).
    DriftDecided,
    /// A webhook's event about this pull request (`owner/name#12`, [`pull_request::request_key`]),
    /// or the wait's `until` (the host polled with backoff): other requests' events wake nobody.
    PullRequest(String),
}

impl Wake {
    /// Whether `change` is one this wait is woken by, for stage `stage` of run `run`.
    pub fn by(&self, change: &crate::store::Change, run: &str, stage: &str) -> bool {
        match self {
            Wake::Decision => change.is_decision_on(run, stage),
            Wake::Turn(next) => {
                (change.run == *next && [EntryKind::Run.as_str(), EntryKind::Release.as_str()].contains(&change.kind.as_str()))
                    || (change.run == run && change.kind == EntryKind::Superseded.as_str())
            }
            Wake::DriftDecided => change.kind == EntryKind::DriftDecision.as_str(),
            Wake::PullRequest(key) => change.kind == EntryKind::PullRequestEvent.as_str() && change.stage.as_deref() == Some(key.as_str()),
        }
    }
}

/// The variables stage `index` of `run` interpolates with: `version`, `image`, `pipeline`, `run`,
/// `stage`, and `environment` (its own deploy's, else the nearest upstream deploy's).
pub fn variables_of(run: &RunRecord, plan: &Plan, index: usize) -> crate::providers::Vars {
    let mut v = crate::providers::Vars::new();
    v.insert("version", run.version.clone());
    v.insert("image", plan.pipeline.artifact.image.value.clone());
    v.insert("pipeline", plan.pipeline.name.value.clone());
    v.insert("run", run.id.clone());
    v.insert("stage", plan.pipeline.stages[index].name.value.clone());
    if let Some(e) = environment_of(plan, index) {
        v.insert("environment", e.to_string());
    }
    v
}

/// The environment stage `index` is about: its own deploy's, else the nearest upstream deploy's
/// (following each stage's first need).
pub fn environment_of(plan: &Plan, index: usize) -> Option<&str> {
    let mut at = index;
    loop {
        if let StageKind::Deploy(d) = &plan.pipeline.stages[at].kind {
            return Some(&d.environment.value);
        }
        at = *plan.needs[at].first()?;
    }
}

/// The environment stage `index` judges, if its kind judges one: a run holds an environment
/// while the stages that judge it run, and lets it go when they are done.
pub fn judges(plan: &Plan, index: usize) -> Option<&str> {
    if judging(&plan.pipeline.stages[index].kind) { environment_of(plan, index) } else { None }
}

/// The plan of the pipeline stored with `run` (what the run runs, whatever the file says now).
pub fn plan_of(run: &RunRecord) -> Option<Plan> {
    let mut diags = crate::diag::Diagnostics::new(run.file.clone());
    crate::plan::compile(&run.source, &mut diags)
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
    /// How often a deploy's health checks look again.
    pub poll: Duration,
    /// The server's public URL (see [`crate::exec::Executor::public_url`]).
    pub public_url: Option<String>,
    /// The server's directory of people, when a server drives the run.
    pub directory: Option<crate::governance::SharedDirectory>,
    /// Reports `waiting` (with what for) and back to `running`.
    pub report: Report,
    /// The run's notification channels.
    pub notifier: Arc<crate::governance::notify::Notifier>,
    /// The pipeline's policy sets by stage index, compiled once per run on first use (policy
    /// stages and every deploy's commit check share them).
    pub policies: Arc<tokio::sync::OnceCell<policies::Compiled>>,
    /// What an attempt keeps between its looks (an inconclusive analysis' evidence while a person
    /// decides); empty at each attempt's start.
    pub memo: Arc<std::sync::Mutex<Option<serde_json::Value>>>,
    /// Whether the stage is recorded `waiting` now (so that `resumed` records the way back once).
    pub is_waiting: Arc<std::sync::atomic::AtomicBool>,
}

impl StageContext {
    /// The stage being run.
    pub fn stage(&self) -> &Stage {
        &self.plan.pipeline.stages[self.index]
    }

    /// Marks the stage waiting (for a person or a lock), durably, and says what for.
    pub async fn waiting(&self, why: &str) -> Result<(), StageError> {
        let name = &self.stage().name.value;
        let t = Transition { state: Some(StageState::Waiting), message: Some(why.to_string()), ..Default::default() };
        self.store.transition(&self.run.id, name, t, &format!("waiting: {why}")).await?;
        self.is_waiting.store(true, std::sync::atomic::Ordering::SeqCst);
        (self.report)(name, StageState::Waiting, why);
        Ok(())
    }

    /// The values `${name}` takes in queries and URLs: version, image, pipeline, run, stage, and
    /// the environment of the nearest upstream deploy.
    pub fn variables(&self) -> crate::providers::Vars {
        variables_of(&self.run, &self.plan, self.index)
    }

    /// [`variables`](Self::variables) and `previousVersion`: the value the environment held
    /// before the latest upstream deploy (absent when it had none, or the deploy changed nothing).
    pub async fn variables_with_previous(&self) -> Result<crate::providers::Vars, StageError> {
        let mut v = self.variables();
        if let Some(previous) = self.last_deploy().await?.and_then(|(_, out)| out.and_then(|o| o.old_value)) {
            v.insert("previousVersion", previous);
        }
        Ok(v)
    }

    /// The latest upstream deploy that finished: (its end in Unix ms, its output).
    pub async fn last_deploy(&self) -> Result<Option<(i64, Option<deploy::DeployOutput>)>, StageError> {
        let records = self.store.stages(&self.run.id).await?;
        let mut last: Option<(i64, Option<deploy::DeployOutput>)> = None;
        for i in 0..self.plan.pipeline.stages.len() {
            let s = &self.plan.pipeline.stages[i];
            if self.plan.deploy_environment(i).is_some()
                && self.plan.is_upstream(i, self.index)
                && let Some(r) = records.iter().find(|r| r.name == s.name.value)
                && let Some(end) = r.finished_at
                && last.as_ref().is_none_or(|(t, _)| end > *t)
            {
                last = Some((end, deploy::DeployOutput::of(r.output.as_ref())));
            }
        }
        Ok(last)
    }

    /// When the release being judged was deployed: the end of the latest upstream deploy, else
    /// this stage's start.
    pub async fn deployed_at(&self) -> Result<i64, StageError> {
        Ok(self.last_deploy().await?.map_or(self.started_at, |(t, _)| t))
    }

    /// Sends a notification about this run (in the background).
    pub fn notify(&self, event: &str, stage: Option<&str>, message: &str) {
        let mut note = crate::governance::notify::Note::for_run(&self.run, event, stage, message);
        if let Some(s) = stage {
            match event {
                "approval-pending" => note = note.headed(self.question(s)),
                "freeze" => note = note.on_page(format!("/ui/runs/{}", self.run.id)),
                _ => {}
            }
        }
        self.notifier.send(note);
    }

    /// What a person is asked at stage `stage`, in a business person's words: "Approve deploying
    /// checkout 1.7.0 to prod?" (the environments of the deploys that wait for it), else
    /// "Approve checkout 1.7.0 at STAGE?".
    pub fn question(&self, stage: &str) -> String {
        let stages = &self.plan.pipeline.stages;
        // Every stage downstream of `stage`, breadth first; the environments of the deploys
        // among them, nearest first.
        let mut seen = vec![stage.to_string()];
        let mut envs: Vec<String> = Vec::new();
        let mut i = 0;
        while i < seen.len() {
            let at = seen[i].clone();
            for s in stages.iter().filter(|s| s.needs.iter().any(|n| n.value == at)) {
                if seen.contains(&s.name.value) {
                    continue;
                }
                seen.push(s.name.value.clone());
                if let crate::model::StageKind::Deploy(d) = &s.kind
                    && !envs.contains(&d.environment.value)
                {
                    envs.push(d.environment.value.clone());
                }
            }
            i += 1;
        }
        let (p, v) = (&self.run.pipeline, &self.run.version);
        match envs.as_slice() {
            [] => format!("Approve {p} {v} at {stage}?"),
            [one] => format!("Approve deploying {p} {v} to {one}?"),
            [first, ..] => format!("Approve deploying {p} {v} to {first} (then {})?", envs[1..].join(", ")),
        }
    }

    /// [`variables`](Self::variables) with `environment` set to a deploy's environment.
    pub fn variables_for(&self, environment: &str) -> crate::providers::Vars {
        let mut v = self.variables();
        v.insert("environment", environment.to_string());
        v
    }

    /// The value a deploy into `env` writes (its `update.value`, interpolated).
    pub fn deploy_value(&self, env: &crate::model::Environment) -> Result<String, StageError> {
        let vars = self.variables_for(&env.name.value);
        crate::git::Destination::value(&env.spec.update.value, |n| vars.get(n).map(String::as_str))
            .map_err(|v| StageError::Terminal(format!("`${{{v}}}` has no value here")))
    }

    /// The pipeline's users file, if it names one (read anew: changes count at once).
    pub fn users(&self) -> Result<Option<crate::governance::Users>, StageError> {
        crate::governance::users_of(&self.plan.pipeline, &self.base_dir).map_err(|e| StageError::Terminal(e.to_string()))
    }

    /// Who people are for the decisions on this run: the server's directory when a server drives
    /// it (one person per login for every pipeline), else the pipeline's users file.
    pub fn people(&self) -> Result<Option<crate::governance::Users>, StageError> {
        match &self.directory {
            Some(d) => Ok(Some(d.read().unwrap_or_else(|e| e.into_inner()).users.clone())),
            None => self.users(),
        }
    }

    /// Back to running after a wait; nothing when the stage is not recorded waiting.
    pub async fn resumed(&self) -> Result<(), StageError> {
        if !self.is_waiting.swap(false, std::sync::atomic::Ordering::SeqCst) {
            return Ok(());
        }
        let name = &self.stage().name.value;
        let t = Transition { state: Some(StageState::Running), message: Some(String::new()), ..Default::default() };
        self.store.transition(&self.run.id, name, t, "running again").await?;
        (self.report)(name, StageState::Running, "");
        Ok(())
    }
}

/// How a kind runs. Every kind implements it in its own file; the dispatch below is made from the
/// model's one list of kinds, so a kind without a runner does not compile.
pub trait Run: Sync {
    /// Whether this version of promote runs the kind (`Err`: why not; it is validated and drawn
    /// only, and `promote run` refuses the file).
    const RUNNABLE: Result<(), &'static str> = Ok(());

    /// One look at an attempt: done (its output), waiting (why, and what wakes it), or why it
    /// failed (transient: retried; terminal: not).
    fn run<'a>(&'a self, ctx: &'a StageContext) -> impl Future<Output = Result<Step, StageError>> + Send + 'a;

    /// One line for a person on what the stage did, from its output.
    fn describe(&self, _output: &serde_json::Value) -> String {
        String::new()
    }

    /// The promotion a stage of this kind wrote, read from its output (a deploy's; `None` for
    /// every kind that never writes to an environment).
    fn deployed(&self, _output: &serde_json::Value) -> Option<deploy::DeployOutput> {
        None
    }

    /// Whether the kind judges the environment it is about (a deploy, the evidence read from it):
    /// the run holds that environment until every stage that judges it is done. People's
    /// sign-offs and waits do not judge: other runs may use the environment meanwhile.
    const JUDGES: bool = true;
}

macro_rules! run_dispatch {
    ($($(#[$doc:meta])* $module:ident => $variant:ident($ty:ty),)*) => {
        /// Whether this version of promote can run a kind (the others are validated and drawn only).
        pub fn runnable(kind: &StageKind) -> Result<(), &'static str> {
            match kind { $(StageKind::$variant(_) => <$ty as Run>::RUNNABLE,)* }
        }

        /// One look at the stage's current attempt.
        pub async fn execute(ctx: &StageContext) -> Result<Step, StageError> {
            match &ctx.stage().kind { $(StageKind::$variant(k) => k.run(ctx).await,)* }
        }

        /// Whether a stage of this kind judges its environment ([`Run::JUDGES`]).
        pub fn judging(kind: &StageKind) -> bool {
            match kind { $(StageKind::$variant(_) => <$ty as Run>::JUDGES,)* }
        }

        /// One line on what a stage of this kind did, from its output.
        pub fn describe(kind: &StageKind, output: &serde_json::Value) -> String {
            match kind { $(StageKind::$variant(k) => k.describe(output),)* }
        }

        /// The promotion a stage of this kind wrote, from its output ([`Run::deployed`]).
        pub fn deployed(kind: &StageKind, output: &serde_json::Value) -> Option<deploy::DeployOutput> {
            match kind { $(StageKind::$variant(k) => k.deployed(output),)* }
        }
    };
}
crate::model::with_kinds!(run_dispatch);

/// The first 10 characters of a commit id.
pub fn short(sha: &str) -> &str {
    &sha[..sha.len().min(10)]
}

#[cfg(test)]
mod wake_tests {
    use super::Wake;
    use crate::store::Change;

    fn change(run: &str, stage: Option<&str>, kind: &str) -> Change {
        Change { id: 1, run: run.into(), stage: stage.map(Into::into), kind: kind.into() }
    }

    #[test]
    fn a_pull_request_event_wakes_only_the_deploy_waiting_on_that_request() {
        let wait = Wake::PullRequest(super::pull_request::request_key("Acme/Checkout-Env", 12));
        assert!(wait.by(&change("-", Some("acme/checkout-env#12"), "pull-request-event"), "r", "deploy"));
        assert!(!wait.by(&change("-", Some("acme/checkout-env#13"), "pull-request-event"), "r", "deploy"), "another request");
        assert!(!wait.by(&change("-", Some("acme/other#12"), "pull-request-event"), "r", "deploy"), "another repository");
    }

    #[test]
    fn a_queued_deploy_wakes_when_the_run_before_it_lets_go_or_ends_or_when_it_is_superseded() {
        let wait = Wake::Turn("a".into());
        assert!(wait.by(&change("a", Some("deploy-qa"), "release"), "b", "deploy-qa"));
        assert!(wait.by(&change("a", None, "run"), "b", "deploy-qa"));
        assert!(wait.by(&change("b", None, "superseded"), "b", "deploy-qa"));
        assert!(!wait.by(&change("c", None, "run"), "b", "deploy-qa"), "another run's end");
        assert!(!wait.by(&change("a", Some("soak"), "stage"), "b", "deploy-qa"), "the run before it still working");
    }
}
