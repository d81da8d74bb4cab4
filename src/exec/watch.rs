//! Watches: a promoted release judged after its run for `watch.for` by the metrics and logs
//! judges, one look per `interval`; a failed look beyond `failureLimit` reverts the environment
//! to its last compliant state, marks the run `reverted` and holds the version.
//!
//! Durable: a watch is a row ([`WatchRecord`]) begun at its run's end; each look is claimed
//! (a conditional update of its due time, so two processes never make the same look), made and
//! recorded; a revert is recorded as `reverting` before its commit, so that one interrupted is
//! finished at the next look. A watch never reverts over a newer promotion or a rollback (the
//! revert is refused unless the file still holds the watched value), and nothing watches a
//! rollback.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::{ExecError, Executor};
use crate::analysis::Phase;
use crate::clock::{humanize, now_ms};
use crate::git::{Destination, GitError, Outcome, RollbackRequest, RollbackTarget};
use crate::governance::notify::{Note, Notifier};
use crate::model::Watch;
use crate::plan::Plan;
use crate::stages::DeployOutput;
use crate::stages::{self, StageError};
use crate::store::{EntryKind, RunRecord, RunState, StageState, Transition, WatchFilter, WatchRecord, WatchState};

/// Looks made at once at most.
const PARALLEL: usize = 32;
/// Looks in a row that could not judge (a provider down) before a watch gives up (`error`).
const ERRORS: i64 = 5;

/// What one look did.
#[derive(Debug, Clone)]
pub struct Looked {
    /// The watch.
    pub watch: String,
    /// Its pipeline.
    pub pipeline: String,
    /// Its environment.
    pub environment: String,
    /// Its version.
    pub version: String,
    /// How it stands after the look.
    pub state: WatchState,
    /// What the look found, or how the watch ended.
    pub message: String,
}

/// The watched runs and the plans of their stored pipelines, read and made once (a thousand
/// watches of one run share them; a look would otherwise read the run, verify its seal and parse
/// its pipeline again). What a look takes from a run (its id, version, file, source) never
/// changes.
#[derive(Default)]
pub struct Plans(std::sync::Mutex<std::collections::HashMap<String, RunAndPlan>>);

/// A run and the plan of its stored pipeline (`None`: it does not load any more).
type RunAndPlan = (Arc<RunRecord>, Option<Arc<Plan>>);

impl Plans {
    async fn of(&self, store: &crate::store::Store, id: &str) -> Result<RunAndPlan, ExecError> {
        if let Some(found) = self.0.lock().unwrap_or_else(|e| e.into_inner()).get(id) {
            return Ok(found.clone());
        }
        let run = Arc::new(store.run(id).await?);
        let plan = stages::plan_of(&run).map(Arc::new);
        let mut all = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if all.len() >= 4096 {
            all.clear();
        }
        all.insert(id.to_string(), (run.clone(), plan.clone()));
        Ok((run, plan))
    }
}

/// The deploy stage a watch watches and its `watch`, from the run's stored pipeline.
struct Watched {
    run: Arc<RunRecord>,
    plan: Arc<Plan>,
    index: usize,
    spec: Watch,
    base_dir: PathBuf,
}

impl Executor {
    /// Begins the watches of a run that has succeeded: one per deploy that committed (now or on
    /// an earlier attempt) whose stage or environment has a `watch`. Idempotent.
    pub(super) async fn begin_watches(&self, run: &RunRecord, plan: &Plan, base_dir: &Path) -> Result<(), ExecError> {
        // (stage, its environment, the watch) of each deploy that has one.
        let watched: Vec<_> = plan
            .pipeline
            .stages
            .iter()
            .enumerate()
            .filter_map(|(i, s)| {
                let (d, env) = s.kind.promotes().zip(plan.deploy_environment(i))?;
                Some((s, env, d.watch_in(env)?))
            })
            .collect();
        // Most pipelines watch nothing: their stages are not read back at every run's end.
        if watched.is_empty() {
            return Ok(());
        }
        let records = self.store.stages(&run.id).await?;
        let now = now_ms();
        for (s, env, spec) in watched {
            let Some(r) = records.iter().find(|r| r.name == s.name.value && r.state == StageState::Succeeded) else { continue };
            let Some(out) = DeployOutput::of(r.output.as_ref()).filter(|o| o.outcome.holds_commit()) else { continue };
            let (Some(commit), value) = (out.commit.as_deref(), out.new_value.as_str()) else { continue };
            // A `files` source: the lines appended from now on are the release's.
            let marks = match spec.logs.as_ref().map(|l| stages::logs::marks(l, base_dir)) {
                Some(Ok(m)) => m.map(|m| m.to_json()),
                Some(Err(e)) => {
                    self.store
                        .audit(Some(&run.id), Some(&s.name.value), EntryKind::Watch, "promote", &format!("the watch's log files cannot be read: {e}"))
                        .await?;
                    None
                }
                None => None,
            };
            let interval = spec.interval.0.as_millis() as i64;
            let deployed_at = out.committed_at.or(r.finished_at).unwrap_or(now);
            let ends_at = now + spec.duration.0.as_millis() as i64;
            let w = WatchRecord {
                id: format!("w-{}", ulid::Ulid::new()),
                run: run.id.clone(),
                stage: s.name.value.clone(),
                pipeline: plan.pipeline.name.value.clone(),
                environment: env.name.value.clone(),
                version: run.version.clone(),
                commit: commit.to_string(),
                value: value.to_string(),
                deployed_at,
                previous: out.old_value.clone(),
                started_at: now,
                ends_at,
                interval_ms: interval,
                next_at: (now + interval).min(ends_at),
                state: WatchState::Watching,
                looks: 0,
                failures: 0,
                errors: 0,
                passes: 0,
                message: None,
                evidence: None,
                marks,
                reverted_to: None,
                ended_at: None,
                cleared_by: None,
                cleared_at: None,
                clear_reason: None,
                seal: None,
            };
            self.store.begin_watch(w).await?;
        }
        Ok(())
    }

    /// Makes one look at every watch due now (at most 32 at once) and says what each did. A look
    /// another process claimed first is not made here.
    pub async fn watch_due(&self, plans: &Plans) -> Result<Vec<Looked>, ExecError> {
        let due = self.store.watches(WatchFilter { due: Some(now_ms()), ..Default::default() }).await?;
        let looks = futures_util::stream::iter(due).map(|w| self.look(w, plans)).buffer_unordered(PARALLEL);
        let done: Vec<Result<Option<Looked>, ExecError>> = looks.collect().await;
        let mut out = Vec::new();
        for r in done {
            match r {
                Ok(Some(l)) => out.push(l),
                Ok(None) => {}
                Err(ExecError::Store(e)) => return Err(ExecError::Store(e)),
                Err(e) => tracing::warn!(error = %e, "a watch's look failed"),
            }
        }
        Ok(out)
    }

    /// Looks at the due watches every `tick` until `stop`; `looked` hears each look.
    pub async fn watch_until(&self, stop: CancellationToken, tick: Duration, looked: impl Fn(&Looked)) {
        let plans = Plans::default();
        loop {
            // A look cut short by the stop is made again at its next time (a revert under way
            // is recorded `reverting` and finished then).
            let done = tokio::select! {
                () = stop.cancelled() => return,
                done = self.watch_due(&plans) => done,
            };
            match done {
                Ok(done) => done.iter().for_each(&looked),
                Err(e) => tracing::warn!(error = %e, "could not look at the watches"),
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(tick) => {}
            }
        }
    }

    /// Whether any watch still looks.
    pub async fn watching(&self) -> Result<bool, ExecError> {
        // Active ones, due at any time.
        Ok(!self.store.watches(WatchFilter { due: Some(i64::MAX), ..Default::default() }).await?.is_empty())
    }

    /// One look at `w`, if this process claims it.
    async fn look(&self, w: WatchRecord, plans: &Plans) -> Result<Option<Looked>, ExecError> {
        let now = now_ms();
        if !self.store.claim_watch(&w.id, w.next_at, (now + w.interval_ms).min(w.ends_at.max(now + 1))).await? {
            return Ok(None);
        }
        let watched = match self.watched(&w, plans).await? {
            Ok(x) => x,
            Err(why) => return self.end(&w, WatchState::Error, &why).await,
        };
        if w.state == WatchState::Reverting {
            let why = w.message.clone().unwrap_or_else(|| "a look failed".into());
            return self.revert(&w, &watched, &why).await;
        }
        let (phase, message, evidence) = self.judge(&w, &watched).await?;
        let (failed, errored, passed) = (phase == Phase::Failed, phase == Phase::Error, phase == Phase::Successful);
        self.store.watch_looked(&w.id, failed, errored, passed, &message, evidence).await?;
        let failures = w.failures + i64::from(failed);
        if failed && failures > i64::from(watched.spec.failure_limit) {
            let why = format!("look {} of the watch failed ({} of {} allowed): {message}", w.looks + 1, failures, watched.spec.failure_limit);
            self.store.end_watch(&w.id, WatchState::Reverting, &why, None, false).await?;
            return self.revert(&w, &watched, &why).await;
        }
        if errored && w.errors + 1 >= ERRORS {
            let why = format!("{ERRORS} looks in a row could not judge the release: {message}");
            self.notify(&w, &watched, "watch-failed", &format!("{} {} in {}: {why}; nothing was reverted", w.pipeline, w.version, w.environment)).await?;
            return self.end(&w, WatchState::Error, &why).await;
        }
        if now_ms() >= w.ends_at {
            let passes = w.passes + i64::from(passed);
            let (state, why) = if passes == 0 {
                (WatchState::Inconclusive, format!("no look of {} had data to judge: {message}", w.looks + 1))
            } else {
                (
                    WatchState::Passed,
                    format!(
                        "{} looks over {}, {passes} passed, {failures} failed (limit {})",
                        w.looks + 1,
                        humanize(Duration::from_millis((w.ends_at - w.started_at).max(0) as u64)),
                        watched.spec.failure_limit
                    ),
                )
            };
            return self.end(&w, state, &why).await;
        }
        Ok(Some(looked(&w, WatchState::Watching, message)))
    }

    /// The run, plan, deploy stage and watch settings behind `w` (`Err`: why it cannot be had).
    async fn watched(&self, w: &WatchRecord, plans: &Plans) -> Result<Result<Watched, String>, ExecError> {
        let (run, plan) = plans.of(&self.store, &w.run).await?;
        let Some(plan) = plan else { return Ok(Err(format!("the pipeline stored with run {} does not load any more", run.id))) };
        let Some(index) = plan.pipeline.stages.iter().position(|s| s.name.value == w.stage) else {
            return Ok(Err(format!("run {} has no stage `{}`", run.id, w.stage)));
        };
        let Some(d) = plan.pipeline.stages[index].kind.promotes() else { return Ok(Err(format!("`{}` is not a deploy", w.stage))) };
        let Some(env) = plan.deploy_environment(index) else { return Ok(Err(format!("`{}` deploys to no environment of its pipeline", w.stage))) };
        let Some(spec) = d.watch_in(env).cloned() else { return Ok(Err(format!("`{}` has no watch", w.stage))) };
        let base_dir = Path::new(&run.file).parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("."));
        Ok(Ok(Watched { run, plan, index, spec, base_dir }))
    }

    /// One look's verdict: each metric check measured once, the logs since the promotion judged;
    /// the worse phase wins. (phase, summary, evidence.)
    async fn judge(&self, w: &WatchRecord, x: &Watched) -> Result<(Phase, String, serde_json::Value), ExecError> {
        let deployed_at = w.deployed_at;
        let mut vars = stages::variables_of(&x.run, &x.plan, x.index);
        if let Some(p) = &w.previous {
            vars.insert("previousVersion", p.clone());
        }
        let mut phase = Phase::Successful;
        let mut parts = Vec::new();
        let mut evidence = json!({});
        let mut worse = |ph: Phase, why: String, parts: &mut Vec<String>| {
            phase = phase.max(ph);
            parts.push(why);
        };
        if let Some(m) = &x.spec.metrics {
            match stages::metrics::look(m, &vars, deployed_at).await {
                Ok((ph, summary, ev)) => {
                    // Per check: its phase and what its one measurement said (the stage's summary
                    // speaks of counts and limits, which a single look does not have).
                    let checks: Vec<String> = ev["metrics"]["checks"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|c| {
                            let said = c["measurements"].as_array().and_then(|m| m.iter().rev().find_map(|x| x["why"].as_str())).unwrap_or("");
                            format!("{} {}: {said}", c["name"].as_str().unwrap_or(""), c["phase"].as_str().unwrap_or(""))
                        })
                        .collect();
                    let score = ev["metrics"]["score"]["why"].as_str().map(|w| format!("; {w}")).unwrap_or_default();
                    let line = if checks.is_empty() { summary } else { format!("{}{score}", checks.join("; ")) };
                    worse(ph, format!("metrics {ph}: {line}"), &mut parts);
                    evidence["metrics"] = ev["metrics"].clone();
                }
                Err(e) => worse(Phase::Error, format!("metrics: {e}"), &mut parts),
            }
        }
        if let Some(l) = &x.spec.logs {
            let now = now_ms();
            let reading = stages::logs::Reading {
                vars: &vars,
                previous: w.previous.as_deref(),
                version: &x.run.version,
                marks: w.marks.as_ref().and_then(crate::providers::logsource::FileMarks::from_json),
                deployed_at,
                window: (now - deployed_at).max(1),
                base: &x.base_dir,
            };
            match stages::logs::read(l, reading).await {
                // A quiet service: nothing new to judge is no evidence either way.
                Ok(lines) if lines.after.is_empty() => worse(Phase::Inconclusive, "logs: no new lines since the promotion".into(), &mut parts),
                Ok(lines) => {
                    let ignored = self.store.exempt_templates(&w.pipeline).await?;
                    let hint = format!("not a risk? promote logs not-a-risk {} {} N --as USER --reason ...", w.run, w.stage);
                    let window = Duration::from_millis((now - deployed_at).max(0) as u64);
                    match stages::logs::judge(l, lines, ignored, window, &hint).await {
                        Ok(ev) => {
                            let v = &ev["logs"]["verdict"];
                            worse(
                                Phase::Successful,
                                format!("logs: {} lines since the promotion, {} templates, none failing", v["linesAfter"], v["templates"]),
                                &mut parts,
                            );
                            evidence["logs"] = ev["logs"].clone();
                        }
                        Err(StageError::Verdict { message, evidence: ev }) => {
                            worse(Phase::Failed, format!("logs: {message}"), &mut parts);
                            evidence["logs"] = ev["logs"].clone();
                        }
                        Err(StageError::Store(e)) => return Err(e.into()),
                        Err(e) => worse(Phase::Error, format!("logs: {e}"), &mut parts),
                    }
                }
                Err(StageError::Store(e)) => return Err(e.into()),
                Err(e) => worse(Phase::Error, format!("logs: {e}"), &mut parts),
            }
        }
        let mut message = parts.join(" | ");
        crate::redact::string(&mut message);
        Ok((phase, message, evidence))
    }

    /// Reverts the environment to its last compliant state (only while it still holds the
    /// watched value), marks the deploy rolled back and the run reverted, holds the version and
    /// tells the pipeline's channels.
    async fn revert(&self, w: &WatchRecord, x: &Watched, why: &str) -> Result<Option<Looked>, ExecError> {
        let Some(env) = x.plan.environment(&w.environment) else {
            return Err(ExecError::Invalid { id: w.run.clone(), errors: format!("its pipeline has no environment `{}` any more", w.environment) });
        };
        let dest = Destination::of(env, &x.base_dir);
        let compliant = self.last_compliant(w).await?;
        let target = match &compliant {
            Some((commit, _, _)) => RollbackTarget::To(commit.clone()),
            None => RollbackTarget::Of(w.commit.clone()),
        };
        // A protected environment is reverted through a request (merged at once with
        // `merge: auto`; until someone merges it, the watch stays `reverting`).
        let request = match &env.spec.pull_request {
            Some(spec) => match stages::pull_request::Request::of(spec, &w.pipeline, &w.environment, &dest.branch, &x.base_dir, &format!("revert-{}", w.id)) {
                Ok(r) => Some(r),
                Err(e) => return Ok(Some(looked(w, WatchState::Reverting, format!("reverting: {e}")))),
            },
            None => None,
        };
        let via = request.as_ref().map(|r| r.branch.clone());
        let (writer, key, w2) = (self.writer.clone(), self.store.key().clone(), w.clone());
        let result = tokio::task::spawn_blocking(move || {
            let r = RollbackRequest {
                pipeline: &w2.pipeline,
                environment: &w2.environment,
                target,
                run: Some(&w2.run),
                stage: Some(&w2.stage),
                seal: Some(&key),
                only_if: Some(&w2.value),
                forbidden: &[],
            };
            match &via {
                Some(branch) => writer.rollback_via_branch(&dest, branch, &r),
                None => writer.rollback(&dest, &r),
            }
        })
        .await;
        let report = match result {
            Ok(Ok(r)) => r,
            Ok(Err(e @ GitError::Conflict { .. })) => {
                return self.end(w, WatchState::Superseded, &format!("a look failed ({why}), but nothing was reverted: {e}")).await;
            }
            Ok(Err(e)) if e.is_transient() => {
                // Still `reverting`: the next look tries again.
                tracing::warn!(watch = %w.id, error = %e, "could not revert yet");
                return Ok(Some(looked(w, WatchState::Reverting, format!("reverting: {e}"))));
            }
            Ok(Err(e)) => {
                let message = format!("a look failed ({why}), and the revert failed: {e}");
                self.notify(w, x, "watch-failed", &format!("{} {} in {}: {message}", w.pipeline, w.version, w.environment)).await?;
                return self.end(w, WatchState::Error, &message).await;
            }
            Err(e) => return Ok(Some(looked(w, WatchState::Reverting, format!("the git writer stopped: {e}")))),
        };
        let to = match &compliant {
            Some((_, run, version)) => format!("{version}, the last compliant release (run {run})"),
            None => "the state before this promotion".to_string(),
        };
        let (done, commit) = match (&report.outcome, &request) {
            (Outcome::Committed(_) | Outcome::AlreadyDone { .. }, Some(r)) => {
                let value = match &report.outcome {
                    Outcome::Committed(c) => c.new_value.clone(),
                    _ => "its last compliant value".to_string(),
                };
                match stages::pull_request::propose_rollback(r, &w.environment, &format!("revert {} to {value}", w.environment)).await {
                    Ok((Some(sha), line)) => (format!("{line}: {to}"), Some(sha)),
                    Ok((None, line)) => return Ok(Some(looked(w, WatchState::Reverting, format!("reverting: {line}")))),
                    Err(e) => return Ok(Some(looked(w, WatchState::Reverting, format!("reverting: the revert's request could not be opened: {e}")))),
                }
            }
            (Outcome::Committed(c), None) => {
                (format!("reverted {} to {} in {}: {to}", w.environment, c.new_value, stages::short(&c.commit.to_string())), Some(c.commit.to_string()))
            }
            (Outcome::AlreadyDone { commit }, None) => {
                (format!("{} already reverted in {}", w.environment, stages::short(&commit.to_string())), Some(commit.to_string()))
            }
            (Outcome::Unchanged { value }, _) => (format!("{} already holds {value}", w.environment), None),
        };
        let message = format!("{why}; {done}");
        let t =
            Transition { state: Some(StageState::RolledBack), finished_at: Some(now_ms()), message: Some(format!("watch: {message}")), ..Default::default() };
        self.store.transition(&w.run, &w.stage, t, &format!("rolled back by its watch: {done}")).await?;
        self.store.end_watch(&w.id, WatchState::Failed, &message, commit.as_deref(), true).await?;
        self.notify(
            w,
            x,
            "watch-failed",
            &format!("{} {} reverted in {}: {message}; held until `promote watch clear {}`", w.pipeline, w.version, w.environment, w.id),
        )
        .await?;
        Ok(Some(looked(w, WatchState::Failed, message)))
    }

    /// The newest earlier promotion into `w`'s environment whose run passed (and was not
    /// reverted) and whose watch, if it had one, passed: (its commit, its run, its version).
    async fn last_compliant(&self, w: &WatchRecord) -> Result<Option<(String, String, String)>, ExecError> {
        let mut candidates: Vec<(i64, String, String, String, String)> = Vec::new();
        for row in self.store.stages_where(Some("deploy"), Some(StageState::Succeeded)).await? {
            let Some(out) = DeployOutput::of(row.stage.output.as_ref()) else { continue };
            if row.pipeline != w.pipeline || row.run == w.run || out.environment != w.environment {
                continue;
            }
            let (Some(commit), value) = (out.commit.as_deref(), out.new_value.as_str()) else { continue };
            if value == w.value || !out.outcome.holds_commit() {
                continue;
            }
            let at = out.committed_at.or(row.stage.finished_at).unwrap_or(row.run_created_at);
            if at < w.started_at {
                candidates.push((at, row.run.clone(), row.stage.name.clone(), commit.to_string(), row.version.clone()));
            }
        }
        candidates.sort_by_key(|c| std::cmp::Reverse(c.0));
        for (_, run, stage, commit, version) in candidates {
            if self.store.run(&run).await?.state != RunState::Succeeded {
                continue;
            }
            let watches = self.store.watches(WatchFilter { run: Some(&run), ..Default::default() }).await?;
            if watches.iter().filter(|x| x.stage == stage).all(|x| x.state == WatchState::Passed) {
                return Ok(Some((commit, run, version)));
            }
        }
        Ok(None)
    }

    /// Ends `w` as `state` and says so.
    async fn end(&self, w: &WatchRecord, state: WatchState, why: &str) -> Result<Option<Looked>, ExecError> {
        self.store.end_watch(&w.id, state, why, None, false).await?;
        Ok(Some(looked(w, state, why.to_string())))
    }

    /// Tells the pipeline's channels and waits for the delivery (an undelivered note goes into
    /// the trail), so that `promote watch run` does not exit before it is sent.
    async fn notify(&self, w: &WatchRecord, x: &Watched, event: &str, message: &str) -> Result<(), ExecError> {
        let n = match Notifier::new(&x.plan.pipeline.notifications, self.writer.config().credentials.secrets()) {
            Ok(n) => {
                let base = std::path::Path::new(&x.run.file).parent().map(std::path::Path::to_path_buf).unwrap_or_default();
                Arc::new(n.linked(self.public_url.as_deref()).addressed(self.people(&x.plan.pipeline, &base)))
            }
            Err(e) => {
                return Ok(self.store.audit(Some(&w.run), Some(&w.stage), EntryKind::Notification, "promote", &format!("notifications are off: {e}")).await?);
            }
        };
        // A hold is cleared in the inbox, where its card is.
        n.send(Note::for_run(&x.run, event, Some(&w.stage), message).on_page(format!("/ui/#held-{}", w.id)));
        n.finish_audited(&self.store, Some(&w.run)).await?;
        Ok(())
    }
}

fn looked(w: &WatchRecord, state: WatchState, message: String) -> Looked {
    Looked { watch: w.id.clone(), pipeline: w.pipeline.clone(), environment: w.environment.clone(), version: w.version.clone(), state, message }
}
