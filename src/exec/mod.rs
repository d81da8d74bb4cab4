//! The executor: starts runs, walks a run's DAG on tokio (independent stages at once), records
//! each transition durably before reporting it, retries, cancels, skips and rolls back.

mod head;
mod metrics;
mod watch;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

pub use head::{head_remote, settle_heads};
pub use metrics::Metrics;
pub use watch::{Looked, Plans};

use crate::clock::{humanize, now_ms};
use crate::diag::Diagnostics;
use crate::git::{Destination, Outcome, RollbackRequest, RollbackTarget, Writer};
use crate::governance::notify::{Note, Notifier};
use crate::plan::Plan;
use crate::stages::{self, StageContext, StageError, Step};
use crate::store::{RunRecord, RunState, StageState, StageWrite, Store, StoreError, Transition};

/// Why a run could not be started or walked.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The state store failed; the run can be resumed once it works again.
    #[error(transparent)]
    Store(StoreError),
    /// Another process took the run over while this one was paused or cut off (its lease
    /// lapsed), or the run ended: this process stopped driving it, and its writes were refused.
    #[error("run {id}: another process drives it now (this one lost its lease): stopped here, nothing more written")]
    LeaseLost {
        /// The run.
        id: String,
    },
    /// The run already ended.
    #[error("run {id} already {state}: nothing to resume (`promote status {id}` shows it)")]
    Finished {
        /// The run.
        id: String,
        /// How it ended.
        state: RunState,
    },
    /// Another process drives the run (its lease is alive).
    #[error(
        "run {id} is being driven by another process ({holder}, its lease runs until {until}): refused, so that no stage runs twice; if that process is gone, its lease lapses and `promote resume {id}` takes the run over then"
    )]
    Driven {
        /// The run.
        id: String,
        /// The process that drives it.
        holder: String,
        /// Its lease's end, RFC 3339.
        until: String,
    },
    /// The walk was stopped (the process is shutting down): the run stays `running`.
    #[error("run {id} stopped before its end: `promote resume {id}` carries it on")]
    Stopped {
        /// The run.
        id: String,
    },
    /// The version is held: a watch of it failed and nobody cleared it.
    #[error("{0}")]
    Held(String),
    /// The pipeline stored with the run no longer loads (a newer promote changed a rule).
    #[error("the pipeline stored with run {id} does not load any more:\n{errors}")]
    Invalid {
        /// The run.
        id: String,
        /// Every problem.
        errors: String,
    },
}

/// A store error, except a fenced write, which is this process losing the run to another.
impl From<StoreError> for ExecError {
    fn from(e: StoreError) -> ExecError {
        match e {
            StoreError::Fenced { run } => ExecError::LeaseLost { id: run },
            other => ExecError::Store(other),
        }
    }
}

/// One line of progress: a stage changed state.
#[derive(Debug, Clone)]
pub struct Progress {
    /// The stage.
    pub stage: String,
    /// Its new state.
    pub state: StageState,
    /// What it waits for, why it failed, what it did.
    pub message: String,
}

/// A plan a caller already holds (a server's loaded pipeline), handed to the driver so that a
/// run of that exact text is not planned again ([`Executor::drive_planned`]).
#[derive(Clone)]
pub struct Planned {
    /// The text the plan was made from (the run's stored source must be exactly this).
    pub source: Arc<str>,
    /// Its plan.
    pub plan: Arc<Plan>,
    /// Its users file as read with it (`None`: it names none, or it does not load).
    pub users: Option<Arc<crate::governance::users::Users>>,
}

/// Runs pipelines: the store, the git writer, the metrics, and how often to poll for people.
pub struct Executor {
    /// Durable state.
    pub store: Store,
    /// The git writer.
    pub writer: Arc<Writer>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// How often a deploy's health checks look again (people, locks and freezes wake their stages
    /// through the change feed).
    pub poll: Duration,
    /// Where `promote serve` is reached from outside (`--public-url`, `PROMOTE_PUBLIC_URL`): the
    /// base of the one-time URLs a `webhook` stage with `callback: true` gives the called system.
    pub public_url: Option<String>,
    /// The server's directory of people, when a server runs this executor: approval stages count
    /// the decisions of its people by it instead of the pipeline's own users file.
    pub directory: Option<crate::governance::SharedDirectory>,
}

/// What became of each stage, and the run.
#[derive(Debug, Clone)]
pub struct Summary {
    /// The run.
    pub run: RunRecord,
    /// The stages, in file order.
    pub stages: Vec<crate::store::StageRecord>,
}

impl Executor {
    /// Who email notes can reach: the pipeline's users file's people, then the server
    /// directory's.
    pub fn people(&self, pipeline: &crate::model::Pipeline, base_dir: &Path) -> crate::governance::notify::People {
        let own = crate::governance::users_of(pipeline, base_dir).ok().flatten();
        self.people_of(own.as_ref())
    }

    /// [`people`](Self::people) from a users file already read (`None`: the pipeline has none).
    fn people_of(&self, own: Option<&crate::governance::users::Users>) -> crate::governance::notify::People {
        use crate::governance::notify::People;
        let own = own.map(People::of).unwrap_or_default();
        let server = self.directory.as_ref().map(|d| People::of(&d.read().unwrap_or_else(|e| e.into_inner()).users)).unwrap_or_default();
        own.or(server)
    }

    /// Records a new run of `plan` for `version` (stages pending) and returns it. `file` should be
    /// absolute: a resumed run finds relative repos from it. `authenticated`: the starter proved
    /// who they are.
    pub async fn start(&self, file: &Path, source: &str, plan: &Plan, version: &str, triggered_by: &str, authenticated: bool) -> Result<RunRecord, ExecError> {
        match self.start_delivered(file, source, plan, version, triggered_by, authenticated, None, false).await? {
            Ok(run) => Ok(run),
            Err(_) => unreachable!("only a delivery can be a duplicate"),
        }
    }

    /// [`start`](Self::start) for a webhook `delivery`, recorded with the run in one transaction:
    /// `Err(run)` (inside `Ok`) when the delivery, or a run of this pipeline and version, was
    /// recorded before (`run`: the run it started), and nothing was started. `driven`: this
    /// process drives the run at once ([`drive_started`](Self::drive_started)), its lease taken
    /// with it.
    #[allow(clippy::too_many_arguments)]
    pub async fn start_delivered(
        &self,
        file: &Path,
        source: &str,
        plan: &Plan,
        version: &str,
        triggered_by: &str,
        authenticated: bool,
        delivery: Option<crate::store::Delivery>,
        driven: bool,
    ) -> Result<Result<RunRecord, Option<String>>, ExecError> {
        if let Some(w) = self.store.held(&plan.pipeline.name.value, version).await? {
            return Err(ExecError::Held(stages::held(&w)));
        }
        self.record_start(file, source, plan, version, triggered_by, authenticated, delivery, driven).await
    }

    /// [`start_delivered`](Self::start_delivered) for a caller that has just asked whether the
    /// version is held ([`Store::held`]) itself: records the run (one write, group-committed).
    #[allow(clippy::too_many_arguments)]
    pub async fn record_start(
        &self,
        file: &Path,
        source: &str,
        plan: &Plan,
        version: &str,
        triggered_by: &str,
        authenticated: bool,
        delivery: Option<crate::store::Delivery>,
        driven: bool,
    ) -> Result<Result<RunRecord, Option<String>>, ExecError> {
        let run = RunRecord {
            id: next_run_id(),
            pipeline: plan.pipeline.name.value.clone(),
            file: file.display().to_string(),
            source: source.to_string(),
            version: version.to_string(),
            state: RunState::Running,
            triggered_by: triggered_by.to_string(),
            authenticated,
            created_at: now_ms(),
            finished_at: None,
            message: None,
            seal: None,
        };
        let stages: Vec<(&str, &str)> = plan.pipeline.stages.iter().map(|s| (s.name.value.as_str(), s.kind.name())).collect();
        if let Some(first) = self.store.create_delivered_run(&run, &stages, delivery, driven).await? {
            return Ok(Err(first));
        }
        tracing::info!(run = %run.id, pipeline = %run.pipeline, version, "run started");
        Ok(Ok(run))
    }

    /// Walks run `id` from its last durable state to its end. `progress` hears every transition.
    pub async fn drive(&self, id: &str, progress: Arc<dyn Fn(Progress) + Send + Sync>) -> Result<Summary, ExecError> {
        self.drive_until(id, progress, CancellationToken::new()).await
    }

    /// [`drive`](Self::drive), until `stop` is cancelled: then no stage starts, the running ones
    /// are stopped where they are (every stage is idempotent from its last durable step, as after
    /// a crash) and [`ExecError::Stopped`] says so; the run stays `running` for a later resume.
    ///
    /// One process drives a run at a time: it takes the run's lease first (refused with
    /// [`ExecError::Driven`] while another process's lease is alive; taken over, audited, once it
    /// lapsed), renews it and the run's environment locks every third of the lease, and gives it
    /// back at the end. A driver that finds its lease taken stops as if cancelled.
    pub async fn drive_until(&self, id: &str, progress: Arc<dyn Fn(Progress) + Send + Sync>, stop: CancellationToken) -> Result<Summary, ExecError> {
        self.drive_planned(id, None, progress, stop).await?;
        self.summary(id).await
    }

    /// Run `id` and its stages, as stored.
    pub async fn summary(&self, id: &str) -> Result<Summary, ExecError> {
        Ok(Summary { run: self.store.run(id).await?, stages: self.store.stages(id).await? })
    }

    /// [`drive_until`](Self::drive_until) with the plan the caller already holds for the run's
    /// pipeline (a server's loaded one): used instead of planning the stored text again when that
    /// text is exactly the one `planned` was made from; otherwise the stored text is planned.
    /// Says how the run ended; [`summary`](Self::summary) reads it back (a server, which drives
    /// thousands, does not).
    pub async fn drive_planned(
        &self,
        id: &str,
        planned: Option<Planned>,
        progress: Arc<dyn Fn(Progress) + Send + Sync>,
        stop: CancellationToken,
    ) -> Result<RunState, ExecError> {
        if let Some((holder, until)) = self.store.take_drive(id).await? {
            return Err(ExecError::Driven { id: id.into(), holder, until: crate::clock::rfc3339(until) });
        }
        self.drive_held(id, None, planned, progress, stop).await
    }

    /// [`drive_planned`](Self::drive_planned) for a run this process has just recorded with its
    /// lease ([`start_delivered`](Self::start_delivered) with `driven`): no claim, and neither the
    /// run nor its stages (all pending, none started) read back. A record without that lease is
    /// driven as any other run (claimed, then read).
    pub async fn drive_started(
        &self,
        run: RunRecord,
        planned: Option<Planned>,
        progress: Arc<dyn Fn(Progress) + Send + Sync>,
        stop: CancellationToken,
    ) -> Result<RunState, ExecError> {
        if !self.store.holds_drive(&run.id) {
            return self.drive_planned(&run.id, planned, progress, stop).await;
        }
        let id = run.id.clone();
        self.drive_held(&id, Some(run), planned, progress, stop).await
    }

    /// Drives run `id` whose lease this process holds: `fresh` is its record when it was just
    /// recorded (its stages all pending).
    async fn drive_held(
        &self,
        id: &str,
        fresh: Option<RunRecord>,
        planned: Option<Planned>,
        progress: Arc<dyn Fn(Progress) + Send + Sync>,
        stop: CancellationToken,
    ) -> Result<RunState, ExecError> {
        let span = tracing::info_span!("run", run = %id);
        let stop = stop.child_token();
        let lost = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let heartbeat = {
            let (store, run, stop, lost) = (self.store.clone(), id.to_string(), stop.clone(), lost.clone());
            tokio::spawn(async move {
                let every = store.lease() / 3;
                // A state file removed under a driver (its folder deleted) is the end of it: a
                // detached driver must not live on over a state nobody can see.
                let file = std::path::PathBuf::from(store.path());
                let was_file = file.is_file();
                loop {
                    tokio::time::sleep(every).await;
                    if was_file && !file.exists() {
                        tracing::warn!(run = %run, state = %file.display(), "the state file was removed: stopping");
                        stop.cancel();
                        return;
                    }
                    match store.renew(&run).await {
                        Ok(true) => {}
                        Ok(false) => {
                            // Ended meanwhile (its end and this renewal in one batch, the end first):
                            // nothing was lost, and nothing is left to stop.
                            if store.run(&run).await.is_ok_and(|r| r.state != RunState::Running) {
                                return;
                            }
                            tracing::warn!(run = %run, "the lease on this run was taken by another process: stopping");
                            lost.store(true, std::sync::atomic::Ordering::SeqCst);
                            stop.cancel();
                            return;
                        }
                        Err(e) => tracing::warn!(run = %run, error = %e, "could not renew the lease on this run"),
                    }
                }
            })
        };
        let mut done = self.walk(id, fresh, planned, progress, stop).instrument(span).await;
        heartbeat.abort();
        if matches!(done, Err(ExecError::Stopped { .. })) && lost.load(std::sync::atomic::Ordering::SeqCst) {
            done = Err(ExecError::LeaseLost { id: id.into() });
        }
        if let Err(e) = self.store.release_drive(id).await {
            tracing::warn!(run = %id, error = %e, "could not give back the lease on this run");
        }
        done
    }

    async fn walk(
        &self,
        id: &str,
        fresh: Option<RunRecord>,
        planned: Option<Planned>,
        progress: Arc<dyn Fn(Progress) + Send + Sync>,
        stop: CancellationToken,
    ) -> Result<RunState, ExecError> {
        // A run just recorded by this process is as it was written; any other is read (and its
        // seal checked).
        let just_recorded = fresh.is_some();
        let run = Arc::new(match fresh {
            Some(run) => run,
            None => self.store.run(id).await?,
        });
        if run.state != RunState::Running {
            return Err(ExecError::Finished { id: id.into(), state: run.state });
        }
        // The plan of exactly the stored text: the caller's when it was made from that text.
        let planned = planned.filter(|p| *p.source == run.source);
        let (plan, users) = match planned {
            Some(p) => (p.plan, Some(p.users)),
            None => {
                let mut diags = Diagnostics::new(run.file.clone());
                match crate::plan::compile(&run.source, &mut diags) {
                    Some(p) => (Arc::new(p), None),
                    None => {
                        let errors = diags.into_sorted().iter().map(|d| d.to_string()).collect::<Vec<_>>().join("\n");
                        return Err(ExecError::Invalid { id: id.into(), errors });
                    }
                }
            }
        };
        let base_dir = Path::new(&run.file).parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("."));
        let people = match users {
            Some(users) => self.people_of(users.as_deref()),
            None => self.people(&plan.pipeline, &base_dir),
        };
        let notifier = match Notifier::new(&plan.pipeline.notifications, self.writer.config().credentials.secrets()) {
            Ok(n) => Arc::new(n.linked(self.public_url.as_deref()).addressed(people)),
            Err(e) => {
                self.store.audit(Some(id), None, crate::store::EntryKind::Notification, "promote", &format!("notifications are off for this run: {e}")).await?;
                Arc::new(Notifier::default())
            }
        };
        let note = |event: &str, stage: Option<&str>, message: &str| notifier.send(Note::for_run(&run, event, stage, message));
        let policies = Arc::new(tokio::sync::OnceCell::new());
        let names: HashMap<String, usize> = plan.pipeline.stages.iter().enumerate().map(|(i, s)| (s.name.value.clone(), i)).collect();
        let n = plan.pipeline.stages.len();
        let mut state = vec![StageState::Pending; n];
        let mut record = vec![None; n];
        let stored = if just_recorded { Vec::new() } else { self.store.stages(id).await? };
        for s in stored {
            if let Some(&i) = names.get(&s.name) {
                state[i] = s.state;
                record[i] = Some(s);
            }
        }
        // Every transition goes through here: the caller's progress, and the approvals-waiting gauge.
        let progress: Arc<dyn Fn(Progress) + Send + Sync> = {
            let metrics = self.metrics.clone();
            let waiting = std::sync::Mutex::new(std::collections::HashSet::new());
            let approvals: std::collections::HashSet<String> =
                plan.pipeline.stages.iter().filter(|s| s.kind.is_sign_off()).map(|s| s.name.value.clone()).collect();
            Arc::new(move |mut p: Progress| {
                // What the caller shows passes the same redaction as what is stored.
                crate::redact::string(&mut p.message);
                let mut w = waiting.lock().unwrap_or_else(|e| e.into_inner());
                if p.state == StageState::Waiting && approvals.contains(&p.stage) {
                    if w.insert(p.stage.clone()) {
                        metrics.approval_waiting(1);
                    }
                } else if w.remove(&p.stage) {
                    metrics.approval_waiting(-1);
                }
                drop(w);
                progress(p)
            })
        };
        let report: stages::Report = {
            let progress = progress.clone();
            Arc::new(move |stage: &str, s: StageState, m: &str| progress(Progress { stage: stage.into(), state: s, message: m.into() }))
        };
        // When each stage's current attempt started (for its duration when it ends).
        let mut starts: Vec<Option<i64>> = record.iter().map(|r| r.as_ref().and_then(|r| r.started_at)).collect();
        let mut tasks: JoinSet<(usize, i64, Result<serde_json::Value, StageError>)> = JoinSet::new();
        let mut handles: HashMap<usize, tokio::task::AbortHandle> = HashMap::new();
        let mut failure: Option<String> = state.iter().position(|s| *s == StageState::Failed).map(|i| plan.pipeline.stages[i].name.value.clone());
        // Why a newer run made this one moot (see `StageError::Superseded`).
        let mut superseded: Option<String> = None;
        // The stages that judge each environment: it is let go (before the run's end) once they
        // are all done, so that other runs use it while this one waits for people or other
        // environments.
        let mut judged: Vec<(String, Vec<usize>)> = Vec::new();
        for i in 0..n {
            if let Some(e) = stages::judges(&plan, i) {
                match judged.iter_mut().find(|(x, _)| x == e) {
                    Some((_, v)) => v.push(i),
                    None => judged.push((e.to_string(), vec![i])),
                }
            }
        }

        // Transitions waiting to be written: a finished stage's result, then the starts and skips
        // it allows, all in one transaction, before any of them is reported or acted on.
        let mut pending: Vec<Write> = Vec::new();
        loop {
            // Start or skip every stage whose needs are settled.
            if failure.is_none() && superseded.is_none() {
                for i in 0..n {
                    if !matches!(state[i], StageState::Pending | StageState::Running | StageState::Waiting) || handles.contains_key(&i) {
                        continue;
                    }
                    let needs = &plan.needs[i];
                    if let Some(&blocked) = needs.iter().find(|&&m| matches!(state[m], StageState::Skipped | StageState::Failed | StageState::Cancelled)) {
                        let why = format!("`{}` {}", plan.pipeline.stages[blocked].name.value, state[blocked]);
                        pending.push(Write::end(i, StageState::Skipped, why, None));
                        state[i] = StageState::Skipped;
                        continue;
                    }
                    if !needs.iter().all(|&m| state[m] == StageState::Succeeded) {
                        continue;
                    }
                    let stage = &plan.pipeline.stages[i];
                    if let Some(cond) = &stage.condition
                        && state[i] == StageState::Pending
                    {
                        match evaluate_if(&cond.value, &run, &plan, &state) {
                            Ok(true) => {}
                            Ok(false) => {
                                pending.push(Write::end(i, StageState::Skipped, format!("`if: {}` is false", cond.value), None));
                                state[i] = StageState::Skipped;
                                continue;
                            }
                            Err(e) => {
                                pending.push(Write::end(i, StageState::Failed, format!("`if: {}`: {e}", cond.value), None));
                                state[i] = StageState::Failed;
                                failure = Some(stage.name.value.clone());
                                break;
                            }
                        }
                    }
                    // `running`, attempt counted (a resumed stage keeps its attempt and start time).
                    let resumed = state[i] != StageState::Pending;
                    let (attempt, started_at) = match (&record[i], resumed) {
                        (Some(r), true) => (r.attempt.max(1), r.started_at.unwrap_or_else(now_ms)),
                        (r, _) => (r.as_ref().map_or(0, |r| r.attempt) + 1, now_ms()),
                    };
                    pending.push(Write { i, state: StageState::Running, start: Some((attempt, started_at, resumed)), message: String::new(), output: None });
                    state[i] = StageState::Running;
                }
            }
            if !pending.is_empty() {
                let mut writes = std::mem::take(&mut pending);
                self.record(&run, &plan, &mut writes, &mut starts, &progress).await?;
                if failure.is_none() && superseded.is_none() {
                    self.let_go(&run, &plan, &state, &mut judged).await?;
                }
                for w in &writes {
                    if let Some((attempt, started_at, _)) = w.start {
                        let ctx = StageContext {
                            run: run.clone(),
                            plan: plan.clone(),
                            index: w.i,
                            store: self.store.clone(),
                            writer: self.writer.clone(),
                            base_dir: base_dir.clone(),
                            started_at,
                            poll: self.poll,
                            public_url: self.public_url.clone(),
                            directory: self.directory.clone(),
                            report: report.clone(),
                            notifier: notifier.clone(),
                            policies: policies.clone(),
                            memo: Arc::default(),
                            is_waiting: Arc::default(),
                        };
                        let stage = &plan.pipeline.stages[w.i];
                        let span = tracing::info_span!("stage", run = %run.id, stage = %stage.name.value, kind = stage.kind.name());
                        handles.insert(w.i, tasks.spawn(attempt_loop(ctx, attempt).instrument(span)));
                    }
                }
            }
            if failure.is_some() || superseded.is_some() {
                let why = match &failure {
                    Some(f) => format!("`{f}` failed"),
                    None => "the run was superseded".to_string(),
                };
                // Cancel what runs; skip what has not started.
                for (i, h) in handles.drain() {
                    h.abort();
                    self.set(&run, &plan, i, StageState::Cancelled, &why, &mut starts, &progress).await?;
                    state[i] = StageState::Cancelled;
                }
                while tasks.join_next().await.is_some() {}
                #[allow(clippy::needless_range_loop)]
                for i in 0..n {
                    if !state[i].is_final() {
                        self.set(&run, &plan, i, StageState::Skipped, &why, &mut starts, &progress).await?;
                        state[i] = StageState::Skipped;
                    }
                }
                break;
            }
            let joined = tokio::select! {
                biased;
                () = stop.cancelled() => {
                    for (_, h) in handles.drain() {
                        h.abort();
                    }
                    while tasks.join_next().await.is_some() {}
                    notifier.finish_audited(&self.store, Some(id)).await?;
                    tracing::info!(run = %run.id, "run stopped; it resumes from its last durable step");
                    return Err(ExecError::Stopped { id: id.into() });
                }
                j = tasks.join_next() => j,
            };
            let Some(joined) = joined else { break };
            let Ok((i, started_at, result)) = joined else { continue };
            starts[i] = Some(started_at);
            handles.remove(&i);
            let stage = &plan.pipeline.stages[i];
            match result {
                Ok(output) => {
                    if let Some(d) = stages::deployed(&stage.kind, &output)
                        && d.outcome.landed_now()
                    {
                        self.metrics.promoted(&d.environment);
                    }
                    pending.push(Write::end(i, StageState::Succeeded, stages::describe(&stage.kind, &output), Some(output)));
                    state[i] = StageState::Succeeded;
                }
                Err(StageError::Store(e)) => return Err(e.into()),
                Err(StageError::Superseded(why)) => {
                    pending.push(Write::end(i, StageState::Skipped, format!("superseded: {why}"), None));
                    state[i] = StageState::Skipped;
                    superseded = Some(why);
                }
                Err(e @ (StageError::Transient(_) | StageError::Terminal(_) | StageError::Verdict { .. })) => {
                    let (why, evidence) = match e {
                        StageError::Verdict { message, evidence } => (message, Some(evidence)),
                        other => (other.to_string(), None),
                    };
                    note("stage-failed", Some(&stage.name.value), &why);
                    pending.push(Write::end(i, StageState::Failed, why, evidence));
                    state[i] = StageState::Failed;
                    failure = Some(stage.name.value.clone());
                }
            }
        }

        let outcome = if let Some(why) = &superseded {
            // Nothing to undo: what it promoted before stays until a newer run replaces it.
            self.store.finish_run(id, RunState::Superseded, Some(why)).await?;
            note("run-finished", None, &format!("superseded: {why}"));
            RunState::Superseded
        } else if let Some(failed) = &failure {
            let why = self.store.stages(id).await?.into_iter().find(|s| s.name == *failed).and_then(|s| s.message).unwrap_or_default();
            if plan.pipeline.on_failure.rollback {
                self.roll_back(&run, &plan, &base_dir, &mut state, &mut starts, &progress).await?;
                for (i, s) in state.iter().enumerate() {
                    if *s == StageState::RolledBack {
                        let name = &plan.pipeline.stages[i].name.value;
                        note("rollback", Some(name), &format!("`{name}` rolled back: `{failed}` failed"));
                    }
                }
            }
            self.store.finish_run(id, RunState::Failed, Some(&format!("`{failed}` failed: {why}"))).await?;
            note("run-finished", None, &format!("failed: `{failed}` failed: {why}"));
            RunState::Failed
        } else {
            // The releases it promoted keep being judged where a `watch` says so.
            self.begin_watches(&run, &plan, &base_dir).await?;
            self.store.finish_run(id, RunState::Succeeded, None).await?;
            note("run-finished", None, "succeeded");
            RunState::Succeeded
        };
        // The run waits for its notifications; those not delivered go into the audit trail.
        notifier.finish_audited(&self.store, Some(id)).await?;
        self.keep_head(&plan.pipeline, &base_dir);
        self.metrics.run_finished(outcome.as_str());
        tracing::info!(run = %run.id, outcome = %outcome, "run finished");
        Ok(outcome)
    }

    /// Lets go of each environment whose judging stages are all done (succeeded, or skipped by
    /// their `if`): the runs queued for it are woken. Each environment once per walk.
    async fn let_go(&self, run: &RunRecord, plan: &Plan, state: &[StageState], judged: &mut Vec<(String, Vec<usize>)>) -> Result<(), ExecError> {
        // At the run's end the end lets every environment go (no entry of its own).
        if state.iter().all(|s| s.is_final()) {
            return Ok(());
        }
        let done = |i: &usize| matches!(state[*i], StageState::Succeeded | StageState::Skipped);
        let mut k = 0;
        while k < judged.len() {
            let (environment, stages) = &judged[k];
            if stages.iter().all(done) && stages.iter().any(|&i| state[i] == StageState::Succeeded) {
                let last = stages.iter().rev().find(|&&i| state[i] == StageState::Succeeded).copied().unwrap_or(stages[0]);
                self.store.unlock_environment(environment, &run.id, &plan.pipeline.stages[last].name.value).await?;
                judged.swap_remove(k);
            } else {
                k += 1;
            }
        }
        Ok(())
    }

    /// Reverts every deploy this run committed, newest first.
    async fn roll_back(
        &self,
        run: &Arc<RunRecord>,
        plan: &Arc<Plan>,
        base_dir: &Path,
        state: &mut [StageState],
        starts: &mut [Option<i64>],
        progress: &Arc<dyn Fn(Progress) + Send + Sync>,
    ) -> Result<(), ExecError> {
        // (when it ended, the stage, its commit, why it failed after the commit, the value it wrote)
        type Committed = (i64, usize, String, Option<String>, Option<String>);
        let mut deploys: Vec<Committed> = Vec::new();
        for (i, s) in self.store.stages(&run.id).await?.into_iter().enumerate() {
            // A deploy that committed and then failed its health check is reverted too.
            if let (StageState::Succeeded | StageState::Failed, Some(out)) = (s.state, &s.output)
                && let Some(out) = stages::deployed(&plan.pipeline.stages[i].kind, out)
                && out.outcome.holds_commit()
                && let Some(commit) = out.commit
            {
                let failed = (s.state == StageState::Failed).then(|| s.message.clone().unwrap_or_default());
                deploys.push((s.finished_at.unwrap_or(0), i, commit, failed, Some(out.new_value)));
            }
        }
        deploys.sort_by(|a, b| b.cmp(a));
        for (_, i, commit, failed, promoted) in deploys {
            let stage = &plan.pipeline.stages[i];
            let Some(env) = plan.deploy_environment(i) else { continue };
            let dest = Destination::of(env, base_dir);
            let writer = self.writer.clone();
            let (pipeline, environment, run_id, stage_name) =
                (plan.pipeline.name.value.clone(), env.name.value.clone(), run.id.clone(), stage.name.value.clone());
            let key = self.store.key().clone();
            // A protected environment is rolled back through a request too.
            let request = match &env.spec.pull_request {
                Some(spec) => {
                    match crate::stages::pull_request::Request::of(spec, &pipeline, &environment, &dest.branch, base_dir, &format!("rollback-{}", run.id)) {
                        Ok(r) => Some(r),
                        Err(e) => {
                            self.remark(run, &stage.name.value, state[i], format!("rollback failed: {e}"), progress).await?;
                            continue;
                        }
                    }
                }
                None => None,
            };
            let via = request.as_ref().map(|r| r.branch.clone());
            let result = tokio::task::spawn_blocking(move || {
                let r = RollbackRequest {
                    pipeline: &pipeline,
                    environment: &environment,
                    target: RollbackTarget::Of(commit),
                    run: Some(&run_id),
                    stage: Some(&stage_name),
                    seal: Some(&key),
                    // Only what this run put there: a newer run may have promoted the
                    // environment since this run let it go.
                    only_if: promoted.as_deref(),
                    forbidden: &[],
                };
                match &via {
                    Some(branch) => writer.rollback_via_branch(&dest, branch, &r),
                    None => writer.rollback(&dest, &r),
                }
            })
            .await;
            match result {
                Ok(Ok(report)) if request.is_some() && !matches!(report.outcome, Outcome::Unchanged { .. }) => {
                    let r = request.as_ref().expect("checked");
                    let restore = match &report.outcome {
                        Outcome::Committed(w) => format!("rolled back to {}", w.new_value),
                        _ => "rolled back".to_string(),
                    };
                    match crate::stages::pull_request::propose_rollback(r, &env.name.value, &restore).await {
                        Ok((Some(_), line)) => {
                            let message = match &failed {
                                Some(why) => format!("{why}; {line}"),
                                None => line,
                            };
                            self.set(run, plan, i, StageState::RolledBack, &message, starts, progress).await?;
                            state[i] = StageState::RolledBack;
                        }
                        Ok((None, line)) => self.remark(run, &stage.name.value, state[i], line, progress).await?,
                        Err(e) => self.remark(run, &stage.name.value, state[i], format!("rollback failed: {e}"), progress).await?,
                    }
                }
                Ok(Ok(report)) => {
                    let message = match &report.outcome {
                        Outcome::Committed(w) => format!("rolled back to {} in {}", w.new_value, crate::stages::short(&w.commit.to_string())),
                        Outcome::AlreadyDone { commit } => format!("already rolled back in {}", crate::stages::short(&commit.to_string())),
                        Outcome::Unchanged { value } => format!("already at {value}"),
                    };
                    // A deploy that failed after its commit (health) keeps why it failed.
                    let message = match &failed {
                        Some(why) => format!("{why}; {message}"),
                        None => message,
                    };
                    self.set(run, plan, i, StageState::RolledBack, &message, starts, progress).await?;
                    state[i] = StageState::RolledBack;
                    self.store.promoted(&run.pipeline, &env.name.value, &run.id, &run.version, true).await?;
                }
                // A newer run promoted the environment since this one let it go: its release stays.
                Ok(Err(e @ crate::git::GitError::Conflict { .. })) => {
                    self.remark(run, &stage.name.value, state[i], format!("left as it is, not rolled back: {e}"), progress).await?
                }
                Ok(Err(e)) => self.remark(run, &stage.name.value, state[i], format!("rollback failed: {e}"), progress).await?,
                Err(e) => tracing::error!(error = %e, "rollback task stopped"),
            }
        }
        Ok(())
    }

    /// Records `line` as what stage `stage` (in `state`, unchanged) says now, and reports it.
    async fn remark(
        &self,
        run: &RunRecord,
        stage: &str,
        state: StageState,
        line: String,
        progress: &Arc<dyn Fn(Progress) + Send + Sync>,
    ) -> Result<(), ExecError> {
        let t = Transition { message: Some(line.clone()), ..Default::default() };
        self.store.transition(&run.id, stage, t, &line).await?;
        progress(Progress { stage: stage.to_string(), state, message: line });
        Ok(())
    }

    /// Records a final transition (with its end time) and reports it.
    #[allow(clippy::too_many_arguments)]
    async fn set(
        &self,
        run: &RunRecord,
        plan: &Plan,
        i: usize,
        to: StageState,
        message: &str,
        starts: &mut [Option<i64>],
        progress: &Arc<dyn Fn(Progress) + Send + Sync>,
    ) -> Result<(), ExecError> {
        self.record(run, plan, &mut [Write::end(i, to, message.to_string(), None)], starts, progress).await
    }

    /// Writes transitions in one transaction, then reports each (progress, logs, metrics). Nothing
    /// is reported before it is durable.
    async fn record(
        &self,
        run: &RunRecord,
        plan: &Plan,
        writes: &mut [Write],
        starts: &mut [Option<i64>],
        progress: &Arc<dyn Fn(Progress) + Send + Sync>,
    ) -> Result<(), ExecError> {
        let at = now_ms();
        // A stage starting in this batch starts when its needs' ends are written, never a
        // millisecond before them.
        for w in writes.iter_mut() {
            if let Some((_, started_at, false)) = &mut w.start {
                *started_at = (*started_at).max(at);
            }
        }
        let items: Vec<StageWrite> = writes
            .iter_mut()
            .map(|w| StageWrite { stage: plan.pipeline.stages[w.i].name.value.clone(), transition: w.transition(at), event: w.event() })
            .collect();
        self.store.transitions(&run.id, items).await?;
        for w in writes {
            let stage = &plan.pipeline.stages[w.i];
            let message = match w.start {
                Some((_, started_at, resumed)) => {
                    starts[w.i] = Some(started_at);
                    if resumed { "resumed".to_string() } else { String::new() }
                }
                None => {
                    if let Some(started) = starts[w.i] {
                        self.metrics.stage_finished(stage.kind.name(), w.state.as_str(), (at - started).max(0) as f64 / 1000.0);
                    }
                    w.message.clone()
                }
            };
            tracing::info!(run = %run.id, stage = %stage.name.value, state = %w.state, detail = %message, "stage");
            progress(Progress { stage: stage.name.value.clone(), state: w.state, message });
        }
        Ok(())
    }
}

/// A transition the walker is about to write.
struct Write {
    i: usize,
    state: StageState,
    /// For a start: (attempt, start time, whether it resumes an interrupted attempt).
    start: Option<(i64, i64, bool)>,
    message: String,
    output: Option<serde_json::Value>,
}

impl Write {
    /// A final state.
    fn end(i: usize, state: StageState, message: String, output: Option<serde_json::Value>) -> Write {
        Write { i, state, start: None, message, output }
    }

    /// The transition to write; a result's output moves into it.
    fn transition(&mut self, at: i64) -> Transition {
        match self.start {
            Some((attempt, started_at, _)) => {
                Transition { state: Some(self.state), attempt: Some(attempt), started_at: Some(started_at), message: Some(String::new()), ..Default::default() }
            }
            None => Transition {
                state: Some(self.state),
                finished_at: Some(at),
                message: Some(self.message.clone()),
                output: self.output.take(),
                ..Default::default()
            },
        }
    }

    fn event(&self) -> String {
        match self.start {
            Some((attempt, _, true)) => format!("resumed (attempt {attempt})"),
            Some((attempt, _, false)) => format!("started (attempt {attempt})"),
            None if self.message.is_empty() => self.state.to_string(),
            None => format!("{}: {}", self.state, self.message),
        }
    }
}

/// Runs a stage's attempts: `timeout` per attempt, `retry: {attempts, backoff}` between them
/// (backoff doubled each time). Each new attempt is recorded before it starts.
async fn attempt_loop(ctx: StageContext, first_attempt: i64) -> (usize, i64, Result<serde_json::Value, StageError>) {
    let stage = ctx.stage().clone();
    let max = stage.retry.as_ref().map_or(1, |r| i64::from(r.attempts.value.max(1)));
    let backoff = stage.retry.as_ref().map_or(Duration::from_secs(10), |r| r.backoff.0);
    let mut attempt = first_attempt;
    let mut ctx = ctx;
    loop {
        let result = match stage.timeout {
            Some(t) => match tokio::time::timeout(t.0, one_attempt(&ctx)).await {
                Ok(r) => r,
                Err(_) => Err(StageError::Transient(format!("timed out after {}", humanize(t.0)))),
            },
            None => one_attempt(&ctx).await,
        };
        match result {
            // Only a transient failure is worth another attempt; a terminal one ends the stage now.
            Err(StageError::Transient(why)) if attempt < max => {
                let wait = backoff.saturating_mul(1 << (attempt - 1).clamp(0, 16) as u32);
                let event = format!("attempt {attempt} failed: {why}; retrying in {}", humanize(wait));
                tokio::time::sleep(wait).await;
                attempt += 1;
                let now = now_ms();
                let t = Transition { state: Some(StageState::Running), attempt: Some(attempt), started_at: Some(now), ..Default::default() };
                if let Err(e) = ctx.store.transition(&ctx.run.id, &stage.name.value, t, &event).await {
                    return (ctx.index, ctx.started_at, Err(e.into()));
                }
                (ctx.report)(&stage.name.value, StageState::Running, &format!("attempt {attempt} (the last failed: {why})"));
                ctx.started_at = now;
                ctx.memo = Arc::default();
                ctx.is_waiting = Arc::default();
            }
            other => return (ctx.index, ctx.started_at, other),
        }
    }
}

/// One attempt of a stage: looks at it until it is done or fails. While it waits, the engine
/// records why (again when the reason changes), sends the wait's notification once (taken in the
/// state before it is sent, so once across restarts and replicas), and sleeps
/// until the change feed announces what wakes it, or its `until`: no stage polls.
async fn one_attempt(ctx: &StageContext) -> Result<serde_json::Value, StageError> {
    let name = ctx.stage().name.value.as_str();
    let mut recorded: Option<String> = None;
    let mut feed: Option<crate::store::Subscription> = None;
    loop {
        match stages::execute(ctx).await? {
            Step::Done(output) => {
                ctx.resumed().await?;
                return Ok(output);
            }
            Step::Wait(w) => {
                // Subscribe, then look once more: what happened in between is seen either way.
                let Some(sub) = feed.as_mut() else {
                    feed = Some(ctx.store.subscribe().await?);
                    continue;
                };
                if recorded.as_deref() != Some(w.why.as_str()) {
                    ctx.waiting(&w.why).await?;
                    // The wait's note, taken in the state first: a process that takes the run
                    // over (a restart, another replica) does not send it again.
                    if recorded.is_none()
                        && let Some(event) = w.notify
                        && ctx.store.claim_note(&ctx.run.id, name, ctx.started_at, event, 1, &format!("`{event}` note sent: {}", w.why)).await?
                    {
                        ctx.notify(event.as_str(), Some(name), &w.why);
                    }
                    recorded = Some(w.why.clone());
                }
                sub.wait(|c| w.wake.by(c, &ctx.run.id, name), w.until).await;
            }
        }
    }
}

/// A new run's id: a ULID, increasing within this process even for runs started in the same
/// millisecond, so that the order of ids is the order promote heard the triggers in (runs of
/// several replicas in one millisecond are ordered by the ids' random part).
fn next_run_id() -> String {
    static IDS: std::sync::Mutex<Option<ulid::Generator>> = std::sync::Mutex::new(None);
    let mut g = IDS.lock().unwrap_or_else(|e| e.into_inner());
    let id = g.get_or_insert_with(ulid::Generator::new).generate();
    // Past 2^80 ids in one millisecond the generator refuses: a fresh id is then still unique.
    id.unwrap_or_else(|_| ulid::Ulid::new()).to_string()
}

/// Evaluates a stage's `if` over the run's context.
fn evaluate_if(expr: &str, run: &RunRecord, plan: &Plan, state: &[StageState]) -> Result<bool, String> {
    let program = cel::Program::compile(expr).map_err(|e| e.to_string())?;
    let mut ctx = cel::Context::default();
    let stages: HashMap<String, serde_json::Value> =
        plan.pipeline.stages.iter().zip(state).map(|(s, st)| (s.name.value.clone(), serde_json::json!({"state": st.as_str()}))).collect();
    let vars = [
        ("version", serde_json::json!(run.version)),
        ("pipeline", serde_json::json!(run.pipeline)),
        ("run", serde_json::json!(run.id)),
        ("image", serde_json::json!(plan.pipeline.artifact.image.value)),
        ("trigger", serde_json::json!({"by": run.triggered_by})),
        ("stages", serde_json::json!(stages)),
    ];
    for (k, v) in vars {
        ctx.add_variable(k, v).map_err(|e| e.to_string())?;
    }
    match program.execute(&ctx).map_err(|e| e.to_string())? {
        cel::Value::Bool(b) => Ok(b),
        other => Err(format!("it gave {other:?}, not true or false")),
    }
}
