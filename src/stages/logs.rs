//! `logs`: reads the lines written after the deploy and a baseline, mines both into templates and
//! fails on new error templates (or ones matching `errorPatterns`) and on error templates grown
//! past a factor, as the sensitivity says. The verdict names each template with its counts and
//! three sample lines.

use std::time::Duration;

use serde_json::json;

use super::{StageContext, StageError};
use crate::clock::now_ms;
use crate::logs::verdict::{self, Level, Rules};
use crate::model::{LogBaseline, LogSource, LogsStage, Sensitivity};
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

/// Runs the check.
pub async fn run(l: &LogsStage, ctx: &StageContext) -> Result<serde_json::Value, StageError> {
    let fail = |e: String| StageError::Transient(e);
    let invalid = |e: String| StageError::Terminal(e);
    let window = l.window.0.as_millis() as i64;
    let deployed_at = ctx.deployed_at().await?;
    let vars = ctx.variables();
    // The baseline reads the previous version's lines where a query names `${version}`.
    let previous = ctx.last_deploy().await?.and_then(|(_, out)| out["oldValue"].as_str().map(String::from));
    let (before, after, source) = match &l.source {
        LogSource::Files(patterns) => {
            let patterns: Vec<String> = patterns.iter().map(|p| p.value.clone()).collect();
            let marks = FileMarks::open(&ctx.base_dir, &patterns).map_err(|e| fail(e.to_string()))?;
            sleep_until(ctx.started_at + window).await;
            // Reading files (up to 200,000 baseline lines) blocks: off the async threads.
            let (b, a) = tokio::task::spawn_blocking(move || marks.read())
                .await
                .map_err(|e| fail(format!("reading the log files stopped: {e}")))?
                .map_err(|e| fail(e.to_string()))?;
            (b, a, json!({"files": patterns}))
        }
        LogSource::Loki(src) => {
            let interpolate = |version: &str| {
                crate::model::interpolate(&src.query.value, |n| if n == "version" { Some(version) } else { vars.get(n).map(String::as_str) })
                    .map_err(|v| invalid(format!("loki query: `${{{v}}}` has no value here")))
            };
            let query = interpolate(&ctx.run.version)?;
            let base_query = interpolate(previous.as_deref().unwrap_or(&ctx.run.version))?;
            sleep_until(deployed_at + window).await;
            let timeout = Duration::from_secs(60);
            let after = logsource::loki(src, &query, deployed_at, deployed_at + window, timeout).await.map_err(|e| fail(e.to_string()))?;
            let (from, to) = match l.baseline {
                LogBaseline::Before => (deployed_at - window, deployed_at),
                LogBaseline::PreviousVersion => (deployed_at, deployed_at + window),
            };
            let before = logsource::loki(src, &base_query, from, to, timeout).await.map_err(|e| fail(e.to_string()))?;
            (before, after, json!({"loki": {"query": query, "baselineQuery": base_query}}))
        }
        LogSource::Kubernetes(k) => {
            sleep_until(deployed_at + window).await;
            let client = crate::providers::kubernetes::client().await.map_err(|e| fail(e.to_string()))?;
            let (b, a) = logsource::kubernetes(&client, k, deployed_at, window).await.map_err(|e| fail(e.to_string()))?;
            (b, a, json!({"kubernetes": {"namespace": k.namespace, "selector": k.selector}}))
        }
    };
    if after.is_empty() {
        return Err(fail(format!(
            "no log lines after the deploy (window {}): nothing to judge; check the source ({} baseline lines were read)",
            crate::clock::humanize(l.window.0),
            before.len()
        )));
    }
    let mut rules = rules(l);
    rules.ignored = ctx.store.exempt_templates(&ctx.plan.pipeline.name.value).await?;
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
        let run = &ctx.run.id;
        let stage = &ctx.stage().name.value;
        Err(StageError::Verdict {
            message: format!(
                "{} of {} templates after the deploy fail: {} (not a risk? promote logs not-a-risk {run} {stage} N --as USER --reason ...)",
                failing.len(),
                v.templates,
                failing.join(" | ")
            ),
            evidence,
        })
    }
}

impl super::Run for crate::model::LogsStage {
    // The explicit form promises `Send`, which the engine's tasks need.
    #[allow(clippy::manual_async_fn)]
    fn run<'a>(&'a self, ctx: &'a StageContext) -> impl std::future::Future<Output = Result<super::Step, StageError>> + Send + 'a {
        async move { run(self, ctx).await.map(super::Step::Done) }
    }
    fn describe(&self, output: &serde_json::Value) -> String {
        let v = &output["logs"]["verdict"];
        let findings = v["findings"].as_array().map_or(0, Vec::len);
        format!("{} lines after the deploy, {} templates, {findings} new or grown (none failing)", v["linesAfter"], v["templates"])
    }
}
