//! A run's report: what happened to a failed or reverted release, and what else changed around
//! it. What changed (each environment's diff between the state before the run and the one it
//! wrote), what the evidence saw (each check's values over its analysis, each new or grown log
//! template with samples), every promotion, rollback, drift, compliance and watch event of every
//! pipeline promote knows within the window (by default the hour before the failure and a
//! quarter of an hour after it, when rollbacks land), on one timeline, and what was decided and
//! by whom. One view model, rendered by the CLI (text, Markdown, JSON), the API and the run page.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use utoipa::ToSchema;

use super::OpsError;
use crate::git::{Destination, Writer};
use crate::store::{RunState, StageState, Store, WatchFilter};

/// How far before the failure the timeline looks by default.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(3600);
/// The longest window a report may ask for.
pub const MAX_WINDOW: Duration = Duration::from_secs(7 * 24 * 3600);
/// The most timeline entries a report shows.
const MAX_TIMELINE: i64 = 2000;

/// A run's report.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// The run.
    pub run: String,
    /// Its pipeline.
    pub pipeline: String,
    /// The release.
    pub version: String,
    /// How the run stands.
    pub state: RunState,
    /// What ended it, in words.
    pub message: Option<String>,
    /// When it failed (its first failed stage, its watch's failure, or its end; Unix ms).
    pub failed_at: i64,
    /// What failed it: the stage (or watch) and its message.
    pub cause: Option<String>,
    /// The timeline's start and end (Unix ms).
    pub from: i64,
    /// The timeline's end.
    pub to: i64,
    /// What the run changed, environment by environment.
    pub changes: Vec<EnvChange>,
    /// Each metric check's values.
    pub checks: Vec<CheckEvidence>,
    /// New and grown log templates.
    pub templates: Vec<TemplateEvidence>,
    /// What else happened within the window, everywhere promote knows, oldest first.
    pub timeline: Vec<TimelineEntry>,
    /// What people decided in the run.
    pub decisions: Vec<DecisionEntry>,
}

/// One environment's change by the run.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EnvChange {
    /// The environment.
    pub environment: String,
    /// The deploy stage.
    pub stage: String,
    /// Where the stage stands (`succeeded`, `rolled-back`, ...).
    pub state: StageState,
    /// The value the environment held before.
    pub from: Option<String>,
    /// The value the run wrote.
    pub to: Option<String>,
    /// The commit that wrote it.
    pub commit: Option<String>,
    /// Its diff (capped; empty when it could not be read).
    pub diff: String,
}

/// One metric check's evidence: its measurements over the analysis.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CheckEvidence {
    /// The metrics stage (or `watch`).
    pub stage: String,
    /// The check.
    pub name: String,
    /// Its phase.
    pub phase: String,
    /// Why, in words.
    pub why: String,
    /// (Unix ms, value) of each measurement that had one.
    pub values: Vec<(i64, f64)>,
}

/// A log template that is new or grew after the release.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TemplateEvidence {
    /// The logs stage (or `watch`).
    pub stage: String,
    /// The template.
    pub template: String,
    /// `new` or `grown`.
    pub change: String,
    /// Lines before.
    pub before: u64,
    /// Lines after.
    pub after: u64,
    /// Whether it failed the check.
    pub fails: bool,
    /// Lines of it, after.
    pub samples: Vec<String>,
}

/// One thing that happened within the window.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TimelineEntry {
    /// Unix ms.
    pub at: i64,
    /// `promotion`, `rollback`, `drift`, `compliance`, `watch`, `run`, `decision`, ...
    pub kind: String,
    /// The run it belongs to (`-`: none).
    pub run: String,
    /// The pipeline it belongs to, when known.
    pub pipeline: Option<String>,
    /// Whether it is this run's own.
    pub own: bool,
    /// Who.
    pub actor: String,
    /// What, in words.
    pub detail: String,
}

/// A person's decision in the run.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DecisionEntry {
    /// Unix ms.
    pub at: i64,
    /// The stage.
    pub stage: String,
    /// Who.
    pub user: String,
    /// Approved (or rejected).
    pub approve: bool,
    /// What they said.
    pub comment: Option<String>,
}

/// Makes the report of `run`, its timeline reaching `window` before the failure.
pub async fn report(store: &Store, writer: &Arc<Writer>, run: &str, window: Duration) -> Result<Report, OpsError> {
    if window > MAX_WINDOW {
        return Err(OpsError::Refused("a report's window is at most 7 days".into()));
    }
    let run = match store.run(run).await {
        Ok(r) => r,
        Err(e @ crate::store::StoreError::UnknownRun { .. }) => return Err(OpsError::Refused(e.to_string())),
        Err(e) => return Err(e.into()),
    };
    let stages = store.stages(&run.id).await?;
    let watches = store.watches(WatchFilter { run: Some(&run.id), ..Default::default() }).await?;
    // The failure: the first failed stage, else a failed watch's end, else the run's end.
    let failed_stage = stages.iter().filter(|s| s.state == StageState::Failed).min_by_key(|s| s.finished_at.unwrap_or(i64::MAX));
    let failed_watch = watches.iter().filter(|w| w.state == crate::store::WatchState::Failed).min_by_key(|w| w.ended_at.unwrap_or(i64::MAX));
    let (failed_at, cause) = match (failed_stage, failed_watch) {
        (Some(s), _) => (s.finished_at.unwrap_or(run.created_at), Some(format!("{}: {}", s.name, s.message.as_deref().unwrap_or("failed")))),
        (None, Some(w)) => (
            w.ended_at.unwrap_or(run.created_at),
            Some(format!("the watch of {} in {}: {}", w.version, w.environment, w.message.as_deref().unwrap_or("failed"))),
        ),
        (None, None) => (run.finished_at.unwrap_or_else(crate::clock::now_ms), None),
    };
    let from = failed_at - window.as_millis() as i64;
    let to = failed_at + (window.as_millis() as i64 / 4).max(60_000);
    // What changed: each deploy's commit and its diff.
    let plan = crate::stages::plan_of(&run);
    let base: PathBuf = Path::new(&run.file).parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("."));
    let mut changes = Vec::new();
    for s in stages.iter().filter(|s| s.kind == "deploy") {
        let Some(out) = crate::stages::DeployOutput::of(s.output.as_ref()) else { continue };
        let commit = out.commit;
        let mut diff = String::new();
        if let (Some(c), Some(env)) = (&commit, plan.as_ref().and_then(|p| p.environment(&out.environment))) {
            let (w, dest, c) = (writer.clone(), Destination::of(env, &base), c.clone());
            if let Ok(Ok(d)) = tokio::task::spawn_blocking(move || w.commit_diff(&dest, &c)).await {
                diff = crate::redact::text(&d).into_owned();
            }
        }
        changes.push(EnvChange {
            environment: out.environment,
            stage: s.name.clone(),
            state: s.state,
            from: out.old_value,
            to: Some(out.new_value),
            commit,
            diff,
        });
    }
    // What the evidence saw: the stages' and the watches' last looks.
    let mut checks = Vec::new();
    let mut templates = Vec::new();
    let outputs = stages
        .iter()
        .filter_map(|s| s.output.as_ref().map(|o| (s.name.clone(), o)))
        .chain(watches.iter().filter_map(|w| w.evidence.as_ref().map(|e| (format!("watch of {}", w.environment), e))));
    for (stage, out) in outputs {
        for c in out["metrics"]["checks"].as_array().into_iter().flatten() {
            let values = c["measurements"].as_array().into_iter().flatten().filter_map(|m| Some((m["at"].as_i64()?, number(&m["value"])?))).collect();
            checks.push(CheckEvidence {
                stage: stage.clone(),
                name: c["name"].as_str().unwrap_or("").to_string(),
                phase: c["phase"].as_str().unwrap_or("").to_string(),
                why: c["why"].as_str().unwrap_or("").to_string(),
                values,
            });
        }
        for f in out["logs"]["verdict"]["findings"].as_array().into_iter().flatten() {
            templates.push(TemplateEvidence {
                stage: stage.clone(),
                template: f["template"].as_str().unwrap_or("").to_string(),
                change: f["change"].as_str().unwrap_or("").to_string(),
                before: f["before"].as_u64().unwrap_or(0),
                after: f["after"].as_u64().unwrap_or(0),
                fails: f["fails"].as_bool().unwrap_or(false),
                samples: f["samples"].as_array().into_iter().flatten().filter_map(|s| s.as_str().map(|s| crate::redact::text(s).into_owned())).collect(),
            });
        }
    }
    // What else changed, everywhere promote knows.
    let mut timeline: Vec<TimelineEntry> = store
        .promotions_between(from, to, MAX_TIMELINE)
        .await?
        .into_iter()
        .map(|p| TimelineEntry {
            at: p.at,
            kind: "promotion".into(),
            own: p.run_id == run.id,
            detail: format!("{} {} promoted to {}{}", p.pipeline, p.version, p.environment, if p.rolled_back { " (rolled back since)" } else { "" }),
            pipeline: Some(p.pipeline),
            run: p.run_id,
            actor: "promote".into(),
        })
        .collect();
    // Each entry's pipeline: its run's, or (entries of no run: drifts, compliance, rollbacks by
    // hand) the name its text begins with.
    let mut pipelines: std::collections::HashMap<String, Option<String>> = std::collections::HashMap::from([(run.id.clone(), Some(run.pipeline.clone()))]);
    for h in store.happenings(from, to, MAX_TIMELINE).await? {
        let pipeline = if h.run_id == crate::store::NO_RUN {
            h.detail.split_once(": ").map(|(p, _)| p.to_string())
        } else {
            if !pipelines.contains_key(&h.run_id) {
                let p = store.run(&h.run_id).await.ok().map(|r| r.pipeline);
                pipelines.insert(h.run_id.clone(), p);
            }
            pipelines[&h.run_id].clone()
        };
        // Whose it is, said first when its text does not (a run's end names neither).
        let mut detail = crate::redact::text(&h.detail).into_owned();
        if let Some(p) = &pipeline
            && !detail.starts_with(&format!("{p}: "))
        {
            let of = if h.run_id == crate::store::NO_RUN { String::new() } else { format!(" run {}", &h.run_id[..h.run_id.len().min(10)]) };
            detail = format!("{p}{of}: {detail}");
        }
        timeline.push(TimelineEntry { at: h.at, own: h.run_id == run.id, kind: h.kind, run: h.run_id, pipeline, actor: h.actor, detail });
    }
    timeline.sort_by_key(|t| t.at);
    timeline.truncate(MAX_TIMELINE as usize);
    let mut decisions = Vec::new();
    for s in stages.iter().filter(|s| matches!(s.kind.as_str(), "approval" | "metrics" | "logs")) {
        for d in store.decisions(&run.id, &s.name).await? {
            decisions.push(DecisionEntry { at: d.at, stage: s.name.clone(), user: d.user, approve: d.approve, comment: d.comment });
        }
    }
    decisions.sort_by_key(|d| d.at);
    Ok(Report {
        run: run.id,
        pipeline: run.pipeline,
        version: run.version,
        state: run.state,
        message: run.message,
        failed_at,
        cause,
        from,
        to,
        changes,
        checks,
        templates,
        timeline,
        decisions,
    })
}

/// A measurement's value as a number (a vector's first element).
fn number(v: &serde_json::Value) -> Option<f64> {
    match v {
        serde_json::Value::Number(n) => n.as_f64(),
        serde_json::Value::Array(a) => a.first().and_then(number),
        serde_json::Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

impl CheckEvidence {
    /// (first value, last value, lowest, highest), when it has values.
    pub fn range(&self) -> Option<(f64, f64, f64, f64)> {
        let first = self.values.first()?.1;
        let last = self.values.last()?.1;
        let lo = self.values.iter().map(|v| v.1).fold(f64::INFINITY, f64::min);
        let hi = self.values.iter().map(|v| v.1).fold(f64::NEG_INFINITY, f64::max);
        Some((first, last, lo, hi))
    }
}

impl Report {
    /// Keeps only the timeline's entries of pipelines `may_view` allows (the server shows a
    /// person only what their pipelines' `access.view` lets them see).
    pub fn only_visible(&mut self, may_view: impl Fn(&str) -> bool) {
        self.timeline.retain(|e| e.pipeline.as_deref().is_some_and(&may_view));
    }

    /// The report in Markdown, for a ticket.
    pub fn markdown(&self) -> String {
        use std::fmt::Write;
        let t = crate::clock::rfc3339;
        let mut m = String::new();
        let _ = writeln!(m, "# {} {}: {}\n", self.pipeline, self.version, self.state);
        let _ = writeln!(
            m,
            "Run `{}` failed at {}{}.\n",
            self.run,
            t(self.failed_at),
            self.cause.as_deref().map(|c| format!(": {}", one_line(c))).unwrap_or_default()
        );
        let _ = writeln!(m, "## What changed\n");
        if self.changes.is_empty() {
            let _ = writeln!(m, "The run changed no environment.\n");
        }
        for c in &self.changes {
            let _ = writeln!(
                m,
                "- **{}** ({}, {}): {} → {}{}",
                c.environment,
                c.stage,
                c.state,
                c.from.as_deref().unwrap_or("?"),
                c.to.as_deref().unwrap_or("?"),
                c.commit.as_deref().map(|x| format!(", commit `{}`", &x[..x.len().min(10)])).unwrap_or_default()
            );
            if !c.diff.is_empty() {
                let diff: Vec<_> = c.diff.lines().map(crate::diag::printable).collect();
                // A fence longer than any run of backticks a diff line could start with.
                let _ = writeln!(m, "\n````diff\n{}\n````\n", diff.join("\n"));
            }
        }
        let _ = writeln!(m, "\n## What the evidence saw\n");
        if self.checks.is_empty() && self.templates.is_empty() {
            let _ = writeln!(m, "No metric or log evidence was gathered.\n");
        }
        if !self.checks.is_empty() {
            let _ = writeln!(m, "| stage | check | phase | first | last | range | why |\n| --- | --- | --- | --- | --- | --- | --- |");
            for c in &self.checks {
                let (first, last, range) = match c.range() {
                    Some((f, l, lo, hi)) => (fmt(f), fmt(l), format!("{}–{}", fmt(lo), fmt(hi))),
                    None => ("-".into(), "-".into(), "-".into()),
                };
                let _ = writeln!(m, "| {} | {} | {} | {first} | {last} | {range} | {} |", cell(&c.stage), cell(&c.name), c.phase, cell(&c.why));
            }
            m.push('\n');
        }
        for tpl in &self.templates {
            let _ = writeln!(
                m,
                "- {} template ({}, {} → {} lines{}): `{}`",
                tpl.change,
                tpl.stage,
                tpl.before,
                tpl.after,
                if tpl.fails { ", failed the check" } else { "" },
                one_line(&tpl.template)
            );
            for s in tpl.samples.iter().take(2) {
                let _ = writeln!(m, "  - `{}`", one_line(s));
            }
        }
        let _ = writeln!(m, "\n## What else changed ({} to {})\n", t(self.from), t(self.to));
        if self.timeline.is_empty() {
            let _ = writeln!(m, "Nothing else happened in any environment promote knows.");
        } else {
            // The same timeline as a picture (Mermaid, which Markdown viewers draw).
            let _ = writeln!(m, "```mermaid\ntimeline\n    title {} {} and what changed around it", self.pipeline, self.version);
            for e in self.timeline.iter().take(60) {
                let clock = t(e.at);
                let _ = writeln!(
                    m,
                    "    {} : {} {}",
                    clock.get(11..19).unwrap_or(&clock),
                    e.kind,
                    one_line(&e.detail).replace([':', '#', ';'], " ").chars().take(80).collect::<String>()
                );
            }
            let _ = writeln!(m, "```\n");
        }
        for e in &self.timeline {
            let _ = writeln!(m, "- {} {}{} — {} (by {})", t(e.at), e.kind, if e.own { " (this run)" } else { "" }, one_line(&e.detail), e.actor);
        }
        let _ = writeln!(m, "\n## What was decided\n");
        if self.decisions.is_empty() {
            let _ = writeln!(m, "No person decided anything in this run.");
        }
        for d in &self.decisions {
            let _ = writeln!(
                m,
                "- {} {} {} `{}`{}",
                t(d.at),
                d.user,
                if d.approve { "approved" } else { "rejected" },
                d.stage,
                d.comment.as_deref().map(|c| format!(": {}", one_line(c))).unwrap_or_default()
            );
        }
        m
    }
}

fn fmt(v: f64) -> String {
    if v.abs() >= 100.0 || v == v.trunc() { format!("{v:.0}") } else { format!("{v:.4}").trim_end_matches('0').trim_end_matches('.').to_string() }
}

/// Text from the state for one line of Markdown: control characters escaped, and nothing a
/// Markdown viewer would take for HTML or code (`<`, `>`, backticks).
fn one_line(s: &str) -> String {
    crate::diag::printable(&s.replace('\n', " ")).replace('<', "&lt;").replace('>', "&gt;").replace('`', "'")
}

fn cell(s: &str) -> String {
    one_line(s).replace('|', "\\|")
}
