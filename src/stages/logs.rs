//! `logs`: reads the lines written after the deploy and a baseline, mines both into templates and
//! fails on new error templates (or ones matching `errorPatterns`) and on error templates grown
//! past a factor, as the sensitivity says. The verdict names each template with its counts and
//! three sample lines.

pub use settings::LogsStage;

use std::time::Duration;

use serde_json::json;

use super::{StageContext, StageError};
use crate::clock::now_ms;
use crate::logs::verdict::{self, Level, Rules};
use crate::model::{LogBaseline, LogSource, Sensitivity};
use crate::providers::logsource::{self, FileMarks};

/// The rules a sensitivity stands for (`rateFactor` replaces its factor).
pub fn rules(l: &LogsStage) -> Rules {
    let factor = l.rate_factor.as_ref().map(|f| f.value);
    let (new_at, grown_at) = match l.sensitivity {
        Sensitivity::Low => (Level::Error, factor.map(|f| (Level::Error, f))),
        Sensitivity::Medium => (Level::Error, Some((Level::Error, factor.unwrap_or(5.0)))),
        Sensitivity::High => (Level::Warning, Some((Level::Warning, factor.unwrap_or(2.0)))),
    };
    let patterns = l.error_patterns.iter().filter_map(|p| regex::Regex::new(&p.value).ok()).collect();
    Rules { new_at, grown_at, patterns, ignored: Vec::new() }
}

async fn sleep_until(ms: i64) {
    let left = ms - now_ms();
    if left > 0 {
        tokio::time::sleep(Duration::from_millis(left as u64)).await;
    }
}

/// The lines judged: those after the deploy, the baseline's, and where they came from.
pub struct Lines {
    /// The baseline's lines.
    pub before: Vec<String>,
    /// The lines after the deploy.
    pub after: Vec<String>,
    /// Where they came from (evidence).
    pub source: serde_json::Value,
}

/// What a read of the lines needs beside the stage's settings.
pub struct Reading<'a> {
    /// The values `${name}` takes in a Loki query.
    pub vars: &'a crate::providers::Vars,
    /// The version the environment held before (a `previousVersion` baseline's `${version}`).
    pub previous: Option<&'a str>,
    /// The version judged.
    pub version: &'a str,
    /// For `files`: the lengths noted when the window opened.
    pub marks: Option<FileMarks>,
    /// When the release was deployed (Unix ms).
    pub deployed_at: i64,
    /// How long after it to read.
    pub window: i64,
    /// Where relative files are (the pipeline file's folder).
    pub base: &'a std::path::Path,
}

/// Reads the lines after the deploy and the baseline's, from the stage's source.
pub async fn read(l: &LogsStage, r: Reading<'_>) -> Result<Lines, StageError> {
    let fail = |e: String| StageError::Transient(e);
    let invalid = |e: String| StageError::Terminal(e);
    let Reading { vars, previous, version, marks, deployed_at, window, base } = r;
    match &l.source {
        LogSource::Files(patterns) => {
            let patterns: Vec<String> = patterns.iter().map(|p| p.value.clone()).collect();
            let marks = marks.ok_or_else(|| invalid("log files: no lengths were noted when the window opened".into()))?;
            let noted = marks.to_json();
            let baseline: Vec<String> = l.baseline_files.iter().map(|p| p.value.clone()).collect();
            let base = base.to_path_buf();
            // Reading files (up to 200,000 baseline lines) blocks: off the async threads.
            let (before, after) = tokio::task::spawn_blocking(move || {
                let (before, after) = marks.read()?;
                if baseline.is_empty() {
                    return Ok((before, after));
                }
                // The baseline files as they are now, whole (their last 200,000 lines).
                let (then, _) = FileMarks::open(&base, &baseline)?.read()?;
                Ok::<_, crate::providers::ProviderError>((then, after))
            })
            .await
            .map_err(|e| fail(format!("reading the log files stopped: {e}")))?
            .map_err(|e| fail(e.to_string()))?;
            let mut source = json!({"files": patterns, "lengthsNoted": noted});
            if !l.baseline_files.is_empty() {
                source["baselineFiles"] = json!(l.baseline_files.iter().map(|p| p.value.clone()).collect::<Vec<_>>());
            }
            Ok(Lines { before, after, source })
        }
        LogSource::Loki(src) => {
            let interpolate = |version: &str| {
                crate::model::interpolate(&src.query.value, |n| if n == "version" { Some(version) } else { vars.get(n).map(String::as_str) })
                    .map_err(|v| invalid(format!("loki query: `${{{v}}}` has no value here")))
            };
            let query = interpolate(version)?;
            let base_query = interpolate(previous.unwrap_or(version))?;
            let timeout = Duration::from_secs(60);
            let after = logsource::loki(src, &query, deployed_at, deployed_at + window, timeout).await.map_err(|e| fail(e.to_string()))?;
            let (from, to) = match l.baseline {
                LogBaseline::Before => (deployed_at - window, deployed_at),
                LogBaseline::PreviousVersion => (deployed_at, deployed_at + window),
            };
            let before = logsource::loki(src, &base_query, from, to, timeout).await.map_err(|e| fail(e.to_string()))?;
            Ok(Lines { before, after, source: json!({"loki": {"query": query, "baselineQuery": base_query}}) })
        }
        LogSource::Kubernetes(k) => {
            let client = crate::providers::kubernetes::client().await.map_err(|e| fail(e.to_string()))?;
            let (before, after) = logsource::kubernetes(&client, k, deployed_at, window).await.map_err(|e| fail(e.to_string()))?;
            Ok(Lines { before, after, source: json!({"kubernetes": {"namespace": k.namespace, "selector": k.selector}}) })
        }
    }
}

/// Notes the length of every file of a `files` source (the window opens now); `None` for the
/// other sources.
pub fn marks(l: &LogsStage, base: &std::path::Path) -> Result<Option<FileMarks>, StageError> {
    match &l.source {
        LogSource::Files(patterns) => {
            let patterns: Vec<String> = patterns.iter().map(|p| p.value.clone()).collect();
            FileMarks::open(base, &patterns).map(Some).map_err(|e| StageError::Transient(e.to_string()))
        }
        _ => Ok(None),
    }
}

/// Mines the lines and judges them by the stage's rules (`ignored`: templates marked not a
/// risk): the evidence, or the verdict naming each failing template (`hint`: how to exempt one).
pub async fn judge(l: &LogsStage, lines: Lines, ignored: Vec<String>, window: Duration, hint: &str) -> Result<serde_json::Value, StageError> {
    let fail = |e: String| StageError::Transient(e);
    let Lines { before, after, source } = lines;
    if after.is_empty() {
        return Err(fail(format!(
            "no log lines after the deploy (window {}): nothing to judge; check the source ({} baseline lines were read)",
            crate::clock::humanize(window),
            before.len()
        )));
    }
    let mut rules = rules(l);
    rules.ignored = ignored;
    // Mining is CPU work proportional to the lines: off the async threads too.
    let v = tokio::task::spawn_blocking(move || verdict::judge(&before, &after, &rules)).await.map_err(|e| fail(format!("judging the logs stopped: {e}")))?;
    let failing: Vec<String> = v
        .findings
        .iter()
        .enumerate()
        .filter(|(_, f)| f.fails)
        .map(|(i, f)| {
            format!("#{} `{}` {} ({} before, {} after; e.g. {})", i + 1, f.template, f.why, f.before, f.after, f.samples.first().map_or("", String::as_str))
        })
        .collect();
    let evidence = json!({"logs": {"source": source, "baseline": format!("{:?}", l.baseline), "sensitivity": format!("{:?}", l.sensitivity).to_lowercase(), "verdict": v}});
    if v.passed {
        Ok(evidence)
    } else {
        Err(StageError::Verdict {
            message: format!("{} of {} templates after the deploy fail: {} ({hint})", failing.len(), v.templates, failing.join(" | ")),
            evidence,
        })
    }
}

/// Runs the check.
pub async fn run(l: &LogsStage, ctx: &StageContext) -> Result<serde_json::Value, StageError> {
    let window = l.window.0.as_millis() as i64;
    let deployed_at = ctx.deployed_at().await?;
    let vars = ctx.variables_with_previous().await?;
    // The baseline reads the previous version's lines where a query names `${version}`.
    let previous = ctx.last_deploy().await?.and_then(|(_, out)| out.and_then(|o| o.old_value));
    // Files: the window opens at the stage's start; the others read after the deploy.
    let marks = marks(l, &ctx.base_dir)?;
    let opens = if marks.is_some() { ctx.started_at } else { deployed_at };
    if let Some(m) = &marks {
        // Said where people look (the run's history): from when the lines are the release's.
        let files: Vec<String> = m.to_json().as_array().into_iter().flatten().map(|f| format!("{} at {} bytes", f[0].as_str().unwrap_or(""), f[1])).collect();
        let what = format!(
            "the lines appended from {} until {} are judged: noted {}",
            crate::clock::rfc3339(crate::clock::now_ms()),
            crate::clock::rfc3339(opens + window),
            files.join(", ")
        );
        ctx.store.audit(Some(&ctx.run.id), Some(&ctx.stage().name.value), crate::store::EntryKind::Logs, "promote", &what).await?;
    }
    sleep_until(opens + window).await;
    let reading = Reading { vars: &vars, previous: previous.as_deref(), version: &ctx.run.version, marks, deployed_at, window, base: &ctx.base_dir };
    let lines = read(l, reading).await?;
    let ignored = ctx.store.exempt_templates(&ctx.plan.pipeline.name.value).await?;
    let hint = format!("not a risk? promote logs not-a-risk {} {} N --as USER --reason ...", ctx.run.id, ctx.stage().name.value);
    judge(l, lines, ignored, l.window.0, &hint).await
}

impl super::Run for crate::model::LogsStage {
    // The explicit form promises `Send`, which the engine's tasks need.
    #[allow(clippy::manual_async_fn)]
    fn run<'a>(&'a self, ctx: &'a StageContext) -> impl std::future::Future<Output = Result<super::Step, StageError>> + Send + 'a {
        async move { run(self, ctx).await.map(super::Step::Done) }
    }
    fn describe(&self, output: &serde_json::Value) -> String {
        // The numbers it passed on: the lines and templates, and the new or grown templates that
        // came closest, with their counts and why they did not fail.
        let v = &output["logs"]["verdict"];
        let findings = v["findings"].as_array().map_or(&[][..], Vec::as_slice);
        let mut line = format!(
            "{} lines after the deploy ({} before), {} templates, {} new or grown, none failing",
            v["linesAfter"],
            v["linesBefore"],
            v["templates"],
            findings.len()
        );
        let shown: Vec<String> = findings
            .iter()
            .take(3)
            .map(|f| format!("`{}` {} ({} before, {} after)", f["template"].as_str().unwrap_or(""), f["why"].as_str().unwrap_or(""), f["before"], f["after"]))
            .collect();
        if !shown.is_empty() {
            line.push_str(": ");
            line.push_str(&shown.join("; "));
        }
        line
    }
}

/// The kind's settings as the pipeline file writes them under `logs:`, what the kind says of itself
/// (`model::Kind`) and its own checks (`plan::Checks`): with its runner above, the kind in one place.
mod settings {
    use serde::{Deserialize, Serialize};

    use crate::diag::Diagnostics;
    use crate::model::kinds::*;
    use crate::model::*;
    use crate::plan::Checks;
    use crate::plan::checks::*;

    /// `logs`: mines log lines into templates and compares the window after the deploy with a baseline.
    #[derive(Debug, Clone, Serialize, Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    pub struct LogsStage {
        /// Where the lines come from.
        pub source: LogSource,
        /// How long after the deploy to read (default 10m).
        #[serde(default = "default_log_window")]
        pub window: Duration,
        /// What to compare with (default `before`: the same length of time before the deploy).
        #[serde(default)]
        pub baseline: LogBaseline,
        /// How easily a change fails the stage (default `medium`).
        #[serde(default)]
        pub sensitivity: Sensitivity,
        /// Regular expressions: a new template matching one fails the stage whatever its level.
        #[serde(default)]
        pub error_patterns: Vec<Spanned<String>>,
        /// An error template whose rate grows by more than this factor fails the stage.
        #[serde(default)]
        pub rate_factor: Option<Spanned<f64>>,
        /// With a `files` source: files (globs) whose lines are the baseline, instead of what the
        /// watched files held before the window.
        #[serde(default)]
        pub baseline_files: Vec<Spanned<String>>,
    }

    impl Kind for LogsStage {
        const NAME: &'static str = "logs";
        fn summary(&self) -> String {
            format!("logs ({})", self.sensitivity_name())
        }
    }

    impl LogsStage {
        /// The sensitivity as written.
        pub fn sensitivity_name(&self) -> &'static str {
            match self.sensitivity {
                Sensitivity::Low => "low",
                Sensitivity::Medium => "medium",
                Sensitivity::High => "high",
            }
        }
    }

    impl Checks for LogsStage {
        #[allow(clippy::neg_cmp_op_on_partial_ord)]
        fn check(&self, stage: &Stage, diags: &mut Diagnostics) {
            let l = self;
            let name = &stage.name.value;
            for pat in &l.error_patterns {
                if let Err(e) = regex::Regex::new(&pat.value) {
                    let msg = e.to_string();
                    let last = msg.lines().last().unwrap_or_default().trim().trim_start_matches("error: ").to_string();
                    diags.error(pat.pos, format!("`errorPatterns` entry is not a valid regular expression: {last}"));
                }
            }
            if let Some(f) = &l.rate_factor
                && !(f.value > 1.0)
            {
                diags.error(f.pos, format!("`rateFactor: {}` must be greater than 1", f.value));
            }
            if l.baseline == crate::model::LogBaseline::PreviousVersion && !matches!(l.source, LogSource::Loki(_)) {
                diags.error(
                    stage.kind_pos,
                    format!("logs stage `{name}`: `baseline: previousVersion` needs a `loki` source (its query reads the previous version through `${{version}}`); use `before` with files or Kubernetes"),
                );
            }
            if !l.baseline_files.is_empty() && !matches!(l.source, LogSource::Files(_)) {
                diags.error(
                    l.baseline_files[0].pos,
                    format!("logs stage `{name}`: `baselineFiles` goes with a `files` source (Loki and Kubernetes read their baseline by time)"),
                );
            }
            match &l.source {
                LogSource::Files(files) if files.is_empty() => diags.error(stage.kind_pos, "`source.files` lists no files"),
                LogSource::Loki(loki) => check_http_url(&loki.address, "address", diags),
                _ => {}
            }
        }
    }

    impl crate::governance::Govern for LogsStage {}
}
