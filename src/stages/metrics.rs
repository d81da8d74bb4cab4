//! `metrics`: measures each check `count` times every `interval` (all checks at once), judges the
//! measurements like Argo Rollouts and comparisons like Kayenta; an inconclusive result waits for
//! a person. The verdict carries every value and the condition behind it.

pub use settings::MetricsStage;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::json;

use super::{StageContext, StageError, Step, Wait, Wake};
use crate::analysis::kayenta::{self, Class, Classification, CompareSettings, Scored};
use crate::analysis::{Conditions, Limits, Phase, Tally, fmt_f64};
use crate::clock::now_ms;
use crate::model::MetricCheck;
use crate::providers::{AnyProvider, MetricProvider};

/// One check's outcome.
struct CheckResult {
    name: String,
    dry_run: bool,
    phase: Phase,
    why: String,
    tally: Tally,
    measurements: Vec<serde_json::Value>,
    last: Option<Classification>,
    group: String,
    weight: f64,
}

/// A check ready to measure.
struct Prepared {
    check: MetricCheck,
    query: String,
    baseline_query: Option<String>,
    provider: Arc<AnyProvider>,
    conditions: Conditions,
    limits: Limits,
    interval: Duration,
}

fn to_system(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64)
}

/// Runs the analysis.
pub async fn run(m: &MetricsStage, ctx: &StageContext) -> Result<Step, StageError> {
    let stage = ctx.stage().name.value.clone();
    // An inconclusive analysis this attempt already made: only a person's decision is awaited.
    let kept = ctx.memo.lock().unwrap_or_else(|e| e.into_inner()).clone();
    if let Some(kept) = kept {
        let summary = kept["summary"].as_str().unwrap_or_default().to_string();
        return decide(m, ctx, &stage, summary, kept["evidence"].clone()).await;
    }
    let prepared = prepare(m, &ctx.variables_with_previous().await?, None)?;
    // The deploy this analysis judges: the latest upstream deploy's end, else this stage's start.
    let deployed_at = ctx.deployed_at().await?;
    let delay_left = ctx.started_at + m.initial_delay.0.as_millis() as i64 - now_ms();
    if delay_left > 0 {
        tokio::time::sleep(Duration::from_millis(delay_left as u64)).await;
    }

    let (verdict, summary, evidence) = analyse(m, prepared, deployed_at).await?;
    match verdict {
        Phase::Successful => Ok(Step::Done(evidence)),
        Phase::Failed | Phase::Error => Err(StageError::Verdict { message: summary, evidence }),
        Phase::Inconclusive => {
            *ctx.memo.lock().unwrap_or_else(|e| e.into_inner()) = Some(json!({"summary": summary, "evidence": evidence}));
            decide(m, ctx, &stage, summary, evidence).await
        }
    }
}

/// The checks of `m` ready to measure with `vars` (each measured `count` times, or its own or
/// the stage's count).
fn prepare(m: &MetricsStage, vars: &crate::providers::Vars, count: Option<u32>) -> Result<Vec<Prepared>, StageError> {
    let lookup = |n: &str| vars.get(n).map(String::as_str);
    let fail = |why: String| StageError::Terminal(why);
    let stage_provider = Arc::new(AnyProvider::new(&m.provider, vars).map_err(|e| fail(e.to_string()))?);
    let cel_vars: Vec<(&str, &str)> = ["version", "pipeline", "run", "image"].iter().filter_map(|k| vars.get(k).map(|v| (*k, v.as_str()))).collect();
    let cel_root = Conditions::context(&cel_vars);
    let mut prepared = Vec::new();
    for c in &m.checks {
        let provider = match &c.provider {
            Some(p) => Arc::new(AnyProvider::new(p, vars).map_err(|e| fail(format!("check `{}`: {e}", c.name.value)))?),
            None => stage_provider.clone(),
        };
        let query = crate::model::interpolate(&c.query.value, lookup).map_err(|v| fail(format!("check `{}`: `${{{v}}}` has no value here", c.name.value)))?;
        let baseline_query = match c.compare.as_ref().and_then(|x| x.baseline_query.as_ref()) {
            Some(q) => Some(crate::model::interpolate(&q.value, lookup).map_err(|v| fail(format!("check `{}`: `${{{v}}}` has no value here", c.name.value)))?),
            None => None,
        };
        let conditions =
            Conditions::new(c.success_condition.as_ref().map(|s| s.value.as_str()), c.failure_condition.as_ref().map(|s| s.value.as_str()), cel_root.clone())
                .map_err(|e| fail(format!("check `{}`: {e}", c.name.value)))?;
        let limits = Limits {
            count: count.unwrap_or(c.count.unwrap_or(m.count)).max(1),
            failure: c.failure_limit,
            inconclusive: c.inconclusive_limit,
            consecutive_errors: c.consecutive_error_limit,
        };
        prepared.push(Prepared { check: c.clone(), query, baseline_query, provider, conditions, limits, interval: c.interval.unwrap_or(m.interval).0 });
    }

    Ok(prepared)
}

/// Measures every check at once until each is decided, and judges them: (verdict, summary,
/// evidence).
async fn analyse(m: &MetricsStage, prepared: Vec<Prepared>, deployed_at: i64) -> Result<(Phase, String, serde_json::Value), StageError> {
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = tokio::task::JoinSet::new();
    for (i, p) in prepared.into_iter().enumerate() {
        let stop = stop.clone();
        tasks.spawn(async move { (i, measure(p, deployed_at, stop).await) });
    }
    let mut results: Vec<Option<CheckResult>> = (0..m.checks.len()).map(|_| None).collect();
    while let Some(joined) = tasks.join_next().await {
        let (i, r) = joined.map_err(|e| StageError::Transient(format!("a check stopped: {e}")))?;
        results[i] = Some(r);
    }
    let results: Vec<CheckResult> = results.into_iter().map(|r| r.expect("every check reports")).collect();
    Ok(judge(m, results))
}

/// One look of a watch: each check of `m` measured once (a comparison over the time since
/// `deployed_at`), judged as the stage would: (verdict, summary, evidence).
pub async fn look(m: &MetricsStage, vars: &crate::providers::Vars, deployed_at: i64) -> Result<(Phase, String, serde_json::Value), StageError> {
    let prepared = prepare(m, vars, Some(1))?;
    analyse(m, prepared, deployed_at).await
}

/// Measures one check until its limits decide it or `count` is reached.
async fn measure(p: Prepared, deployed_at: i64, stop: Arc<AtomicBool>) -> CheckResult {
    let c = &p.check;
    let mut tally = Tally::default();
    let mut measurements = Vec::new();
    let mut last = None;
    let mut prev_why: Option<String> = None;
    let (phase, why) = loop {
        let started = now_ms();
        let (phase, why, value, waited) = one(&p, deployed_at, &mut last).await;
        tally.add(phase);
        // `queryMs`: how long the provider took to answer (the rest of the time is promote's).
        let mut entry = json!({"at": started, "phase": phase, "queryMs": (waited.as_secs_f64() * 1e4).round() / 10.0});
        if let Some(v) = value {
            entry["value"] = v;
        }
        // The reason is kept whenever it changes (a long run of the same judgment says it once).
        if prev_why.as_deref() != Some(why.as_str()) {
            entry["why"] = json!(why);
            prev_why = Some(why);
        }
        measurements.push(entry);
        if let Some(decided) = tally.assess(&p.limits) {
            break decided;
        }
        if stop.load(Ordering::Relaxed) {
            break stopped(&tally);
        }
        // (A zero sleep would still wait for the timer's next 1 ms tick.)
        let rest = p.interval.saturating_sub(Duration::from_millis((now_ms() - started).max(0) as u64));
        if !rest.is_zero() {
            tokio::time::sleep(rest).await;
        }
        if stop.load(Ordering::Relaxed) {
            break stopped(&tally);
        }
    };
    // As in Argo Rollouts, a check that decides the analysis (failed, error, inconclusive) stops
    // the others; a dry run decides nothing.
    if matches!(phase, Phase::Failed | Phase::Error | Phase::Inconclusive) && !c.dry_run {
        stop.store(true, Ordering::Relaxed);
    }
    let (group, weight) = c.compare.as_ref().map_or((c.name.value.clone(), 1.0), |x| (x.group.clone().unwrap_or_else(|| c.name.value.clone()), x.weight));
    CheckResult { name: c.name.value.clone(), dry_run: c.dry_run, phase, why, tally, measurements, last, group, weight }
}

/// A check stopped because another decided the analysis: Successful, as in Argo Rollouts, since
/// it passed no limit (it would have been decided otherwise).
fn stopped(t: &Tally) -> (Phase, String) {
    (
        Phase::Successful,
        format!(
            "stopped when another check decided the analysis, having passed no limit ({} measured: {} successful, {} failed, {} inconclusive, {} errors)",
            t.count, t.successful, t.failed, t.inconclusive, t.error
        ),
    )
}

/// One measurement: the instant value judged by the conditions, and the comparison if any; the
/// worse phase wins.
async fn one(p: &Prepared, deployed_at: i64, last: &mut Option<Classification>) -> (Phase, String, Option<serde_json::Value>, Duration) {
    let c = &p.check;
    let mut parts = Vec::new();
    let mut phase = None::<Phase>;
    let mut value = None;
    let mut waited = Duration::ZERO;
    let mut worse = |ph: Phase, why: String, parts: &mut Vec<String>| {
        phase = Some(phase.map_or(ph, |p: Phase| p.max(ph)));
        parts.push(why);
    };
    if c.success_condition.is_some() || c.failure_condition.is_some() || c.compare.is_none() {
        let t = std::time::Instant::now();
        let answer = p.provider.instant(&p.query).await;
        waited += t.elapsed();
        match answer {
            Ok(sample) => {
                let (ph, why) = p.conditions.judge(&sample);
                value = Some(sample.to_json());
                worse(ph, why, &mut parts);
            }
            Err(e) => worse(Phase::Error, e.to_string(), &mut parts),
        }
    }
    if let Some(cmp) = &c.compare {
        let now = now_ms();
        let start = cmp.window.map_or(deployed_at, |w| now - w.0.as_millis() as i64).min(now - cmp.step.0.as_millis() as i64);
        let new = p.provider.range(&p.query, to_system(start), to_system(now), cmp.step.0);
        let base = async {
            match (&p.baseline_query, cmp.baseline_window) {
                (Some(q), _) => p.provider.range(q, to_system(start), to_system(now), cmp.step.0).await,
                (None, Some(w)) => p.provider.range(&p.query, to_system(start - w.0.as_millis() as i64), to_system(start), cmp.step.0).await,
                (None, None) => Ok(Vec::new()),
            }
        };
        let t = std::time::Instant::now();
        let (new, base) = tokio::join!(new, base);
        waited += t.elapsed();
        match (new, base) {
            (Ok(new), Ok(base)) => {
                let settings = CompareSettings {
                    direction: cmp.direction,
                    confidence: cmp.confidence,
                    min_effect: cmp.min_effect,
                    allowed_increase: cmp.effect_size.allowed_increase,
                    allowed_decrease: cmp.effect_size.allowed_decrease,
                    critical_increase: cmp.effect_size.critical_increase,
                    critical_decrease: cmp.effect_size.critical_decrease,
                    critical: cmp.critical,
                    require_data: cmp.require_data,
                };
                let cl = kayenta::classify(&new, &base, &settings);
                let ph = match cl.class {
                    Class::Pass => Phase::Successful,
                    Class::High | Class::Low | Class::NoDataFail => Phase::Failed,
                    Class::NoData => Phase::Inconclusive,
                };
                worse(ph, format!("compared with the baseline: {}", cl.reason), &mut parts);
                *last = Some(cl);
            }
            (Err(e), _) | (_, Err(e)) => worse(Phase::Error, e.to_string(), &mut parts),
        }
    }
    (phase.unwrap_or(Phase::Successful), parts.join("; "), value, waited)
}

/// The stage's verdict from its checks and the score: (phase, a summary naming each deciding
/// value and condition, the evidence as JSON).
fn judge(m: &MetricsStage, results: Vec<CheckResult>) -> (Phase, String, serde_json::Value) {
    let mut verdict = Phase::Successful;
    let mut lines = Vec::new();
    for r in &results {
        let last_why = r.measurements.iter().rev().find_map(|x| x["why"].as_str()).unwrap_or("");
        let tag = if r.dry_run { " (dry run: does not decide)" } else { "" };
        lines.push(format!("{}: {}{tag}: {}; last: {last_why}", r.name, r.phase, r.why));
        if !r.dry_run {
            verdict = verdict.max(r.phase);
        }
    }
    let compared: Vec<(&str, Scored<'_>)> = results
        .iter()
        .filter(|r| !r.dry_run)
        .filter_map(|r| r.last.as_ref().map(|cl| (r.name.as_str(), Scored { group: &r.group, weight: r.weight, classification: cl })))
        .collect();
    let mut score_json = serde_json::Value::Null;
    if !compared.is_empty() {
        let (pass, marginal) = m.score.as_ref().map_or((95.0, 75.0), |s| (s.pass, s.marginal));
        let s = kayenta::score(&compared);
        let (phase, words) = match (s.score, &s.critical) {
            (_, Some(c)) => (Phase::Failed, format!("score 0: {c}")),
            (None, _) => (Phase::Inconclusive, "no score: no compared metric had data".to_string()),
            (Some(v), _) if v >= pass => (Phase::Successful, format!("score {} >= pass {}", fmt_f64(v), fmt_f64(pass))),
            (Some(v), _) if v >= marginal => {
                (Phase::Inconclusive, format!("score {} is marginal (>= {} but < pass {})", fmt_f64(v), fmt_f64(marginal), fmt_f64(pass)))
            }
            (Some(v), _) => (Phase::Failed, format!("score {} < marginal {}", fmt_f64(v), fmt_f64(marginal))),
        };
        verdict = verdict.max(phase);
        lines.push(words.clone());
        score_json = json!({"score": s.score, "pass": pass, "marginal": marginal, "groups": s.groups, "critical": s.critical, "verdict": phase, "why": words});
    }
    let checks: Vec<serde_json::Value> = results
        .into_iter()
        .map(|r| {
            let mut c = serde_json::Map::new();
            c.insert("name".into(), json!(r.name));
            c.insert("phase".into(), json!(r.phase));
            c.insert("why".into(), json!(r.why));
            c.insert("dryRun".into(), json!(r.dry_run));
            c.insert("tally".into(), json!(r.tally));
            c.insert("comparison".into(), json!(r.last));
            // Moved, not copied: an analysis can hold thousands of measurements.
            c.insert("measurements".into(), serde_json::Value::Array(r.measurements));
            serde_json::Value::Object(c)
        })
        .collect();
    let summary = lines.join(" | ");
    (verdict, summary.clone(), json!({"metrics": {"verdict": verdict, "summary": summary, "checks": checks, "score": score_json}}))
}

/// Inconclusive: waits for a person to approve (the stage succeeds) or reject (it fails).
async fn decide(m: &MetricsStage, ctx: &StageContext, stage: &str, summary: String, mut evidence: serde_json::Value) -> Result<Step, StageError> {
    let who = crate::model::DecidedBy::Inconclusive(&m.approvers).rules().into_owned();
    let decisions = ctx.store.decisions(&ctx.run.id, stage).await?;
    let users = ctx.people()?;
    let allowed = |u: &str| super::approval::counts(&who, ctx, users.as_ref(), u);
    if let Some(d) = decisions.iter().find(|d| allowed(&d.user)) {
        evidence["metrics"]["decidedBy"] = json!({"user": d.user, "approve": d.approve, "comment": d.comment, "at": d.at});
        if d.approve {
            return Ok(Step::Done(evidence));
        }
        let reason = d.comment.as_deref().unwrap_or("no reason given");
        return Err(StageError::Verdict { message: format!("inconclusive, rejected by {}: {reason} | {summary}", d.user), evidence });
    }
    let why = format!("inconclusive, a person decides: promote approve {} {stage} --as USER (or promote reject ... --reason) | {summary}", ctx.run.id);
    Ok(Step::Wait(Wait { why, wake: Wake::Decision, until: None, notify: None }))
}

impl super::Run for crate::model::MetricsStage {
    // The explicit form promises `Send`, which the engine's tasks need.
    #[allow(clippy::manual_async_fn)]
    fn run<'a>(&'a self, ctx: &'a StageContext) -> impl std::future::Future<Output = Result<Step, StageError>> + Send + 'a {
        run(self, ctx)
    }
    fn describe(&self, output: &serde_json::Value) -> String {
        // What decided each check, pass or fail: its last measurement's reason (the values, the
        // condition or the comparison's means, effect and p-value), then the score.
        let m = &output["metrics"];
        let mut parts: Vec<String> = m["checks"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| {
                let last = c["measurements"].as_array().and_then(|ms| ms.iter().rev().find_map(|x| x["why"].as_str())).unwrap_or("");
                format!("{}: {}: {last}", c["name"].as_str().unwrap_or(""), c["phase"].as_str().unwrap_or(""))
            })
            .collect();
        if let Some(why) = m["score"]["why"].as_str() {
            parts.push(why.to_string());
        }
        if let Some(u) = m["decidedBy"]["user"].as_str() {
            parts.push(format!("inconclusive: approved by {u}"));
        }
        parts.join(" | ")
    }
}

/// The kind's settings as the pipeline file writes them under `metrics:`, what the kind says of itself
/// (`model::Kind`) and its own checks (`plan::Checks`): with its runner above, the kind in one place.
mod settings {
    use std::collections::HashSet;

    use serde::{Deserialize, Serialize};

    use crate::diag::{Diagnostics, plural};
    use crate::model::kinds::*;
    use crate::model::*;
    use crate::plan::Checks;
    use crate::plan::checks::*;

    /// `metrics`: measures queries over time and judges them (Argo Rollouts and Kayenta semantics).
    #[derive(Debug, Clone, Serialize, Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    pub struct MetricsStage {
        /// Where the checks' queries go unless a check names its own.
        pub provider: Provider,
        /// Time between measurements (default 1m).
        #[serde(default = "default_interval")]
        pub interval: Duration,
        /// Measurements per check (default 1).
        #[serde(default = "default_count")]
        pub count: u32,
        /// Wait before the first measurement (default 0s).
        #[serde(default)]
        pub initial_delay: Duration,
        /// The checks; at least one.
        pub checks: Vec<MetricCheck>,
        /// Pass and marginal thresholds of the comparison score out of 100.
        #[serde(default)]
        pub score: Option<Score>,
        /// Who may decide an inconclusive result (users and `group:` entries; default: anyone but
        /// whoever triggered the run).
        #[serde(default)]
        pub approvers: Vec<Spanned<String>>,
    }

    impl Kind for MetricsStage {
        const NAME: &'static str = "metrics";
        fn summary(&self) -> String {
            format!("metrics ({})", plural(self.checks.len(), "check"))
        }
        fn decided_by(&self) -> Option<DecidedBy<'_>> {
            Some(DecidedBy::Inconclusive(&self.approvers))
        }
    }

    impl Checks for MetricsStage {
        fn expressions(&self) -> Vec<(&Spanned<String>, &'static str, &'static [&'static str])> {
            let mut out = Vec::new();
            for c in &self.checks {
                for (field, e) in [("successCondition", &c.success_condition), ("failureCondition", &c.failure_condition)] {
                    if let Some(e) = e {
                        out.push((e, field, RESULT_VARIABLES));
                    }
                }
            }
            out
        }

        #[allow(clippy::neg_cmp_op_on_partial_ord)]
        fn check(&self, stage: &Stage, diags: &mut Diagnostics) {
            let m = self;
            let name = &stage.name.value;
            if m.checks.is_empty() {
                diags.error(stage.kind_pos, format!("metrics stage `{name}` has no `checks`"));
            }
            let mut seen = HashSet::new();
            for c in &m.checks {
                if !seen.insert(c.name.value.as_str()) {
                    diags.error(c.name.pos, format!("two checks are named `{}` in stage `{name}`", c.name.value));
                }
                // Argo Rollouts' own rule: a limit larger than the measurements can never be passed.
                let count = c.count.unwrap_or(m.count);
                for (field, limit) in [("failureLimit", c.failure_limit), ("inconclusiveLimit", c.inconclusive_limit)] {
                    if count > 0 && count < limit {
                        diags.error(
                            c.name.pos,
                            format!("check `{}`: `count: {count}` is less than `{field}: {limit}`, which could then never be passed (Argo Rollouts refuses it too): raise `count` or lower the limit", c.name.value),
                        );
                    }
                }
                if c.success_condition.is_none() && c.failure_condition.is_none() && c.compare.is_none() {
                    diags
                        .warning(c.name.pos, format!("check `{}` has no `successCondition`, `failureCondition` or `compare`: it can never fail", c.name.value));
                }
                if matches!(c.provider.as_ref().unwrap_or(&m.provider), Provider::Prometheus(_)) {
                    for e in [&c.success_condition, &c.failure_condition].into_iter().flatten() {
                        if compares_result_directly(&e.value) {
                            diags.warning(
                                e.pos,
                                format!(
                                    "`{}` compares `result` itself: a Prometheus vector is a list (one number per series), so write `result[0]` (a `scalar(...)` query is a number and is fine)",
                                    e.value
                                ),
                            );
                        }
                    }
                }
                if let Some(cmp) = &c.compare {
                    check_compare(cmp, &c.name, diags);
                    if matches!(c.provider.as_ref().unwrap_or(&m.provider), Provider::Web(_)) {
                        diags.error(
                            c.name.pos,
                            format!("check `{}`: `compare` needs a `prometheus` provider (a web endpoint has no time ranges to compare)", c.name.value),
                        );
                    }
                }
                for provider in std::iter::once(&m.provider).chain(&c.provider) {
                    check_provider(provider, diags);
                }
            }
        }
    }

    impl crate::governance::Govern for MetricsStage {
        fn govern(&self, g: &crate::governance::Governed<'_>, diags: &mut Diagnostics) {
            g.people(&self.approvers, "approver", diags);
        }
    }
}
