//! The trail's words: what the entry of each write says, the same from every backend.

use super::{DriftRecord, RunRecord, RunState, WatchRecord};

/// A run's first entry.
pub fn run_started(run: &RunRecord) -> String {
    format!("run started: {} {} by {}", run.pipeline, run.version, run.triggered_by)
}

/// A run's end.
pub fn run_finished(state: RunState, message: Option<&str>) -> String {
    format!("run {state}{}", message.map(|m| format!(": {m}")).unwrap_or_default())
}

/// A decision on a stage, by kind (`decision`, `break-glass`, `callback`).
pub fn decided(kind: &str, approve: bool, user: &str, comment: Option<&str>) -> String {
    let what = match (kind, approve) {
        ("break-glass", _) => "freeze overridden (break-glass)",
        ("callback", true) => "passed",
        ("callback", false) => "failed",
        (_, true) => "approved",
        (_, false) => "rejected",
    };
    format!("{what} by {user}{}", comment.map(|c| format!(": {c}")).unwrap_or_default())
}

/// A log template marked not a risk.
pub fn exempted(template: &str, user: &str, reason: &str) -> String {
    format!("`{template}` marked not a risk by {user}: {reason}")
}

/// A drift recorded.
pub fn drift_recorded(d: &DriftRecord) -> String {
    if d.state == super::DriftState::Accepted && d.commits.is_empty() && !d.rewritten {
        let why = d.reason.as_deref().unwrap_or("adopted");
        return format!("{}: {} at head {} recorded as approved ({}): {why}", d.pipeline, d.environment, &d.head[..d.head.len().min(10)], d.id);
    }
    let what = if d.rewritten {
        "its history was rewritten".to_string()
    } else {
        let authors: Vec<&str> = d.commits.iter().map(|c| c.author.as_str()).collect::<std::collections::BTreeSet<_>>().into_iter().collect();
        format!("{} commit(s) promote did not make, by {}", d.commits.len(), authors.join(", "))
    };
    let on = d.baseline.as_deref().map(|b| format!(" on top of {}", &b[..b.len().min(10)])).unwrap_or_default();
    format!("{}: drift {} in {}: {what}{on}, head {}", d.pipeline, d.id, d.environment, &d.head[..d.head.len().min(10)])
}

/// A drift decided.
pub fn drift_decided(pipeline: &str, id: &str, environment: &str, state: &str, user: &str, reason: Option<&str>) -> String {
    format!("{pipeline}: drift {id} in {environment} {state} by {user}{}", reason.map(|r| format!(": {r}")).unwrap_or_default())
}

/// A compliance violation recorded.
pub fn violation_recorded(v: &super::ViolationRecord) -> String {
    format!("{}: compliance violation {} in {}", v.pipeline, v.id, v.describe())
}

/// A compliance violation decided.
pub fn violation_decided(pipeline: &str, id: &str, environment: &str, state: &str, user: &str, until: Option<i64>, reason: Option<&str>) -> String {
    let until = until.map(|u| format!(" until {}", crate::clock::rfc3339(u))).unwrap_or_default();
    format!("{pipeline}: compliance violation {id} in {environment} {state} by {user}{until}{}", reason.map(|r| format!(": {r}")).unwrap_or_default())
}

/// A watch begun.
pub fn watch_begun(w: &WatchRecord) -> String {
    format!(
        "{}: watching {} in {} ({}, commit {}) until {} (watch {})",
        w.pipeline,
        w.version,
        w.environment,
        w.value,
        &w.commit[..w.commit.len().min(10)],
        crate::clock::rfc3339(w.ends_at),
        w.id
    )
}

/// A watch ended (or reverting).
pub fn watch_ended(w: &WatchRecord, state: &str, message: &str) -> String {
    format!("{}: watch {} of {} in {} {state}: {message}", w.pipeline, w.id, w.version, w.environment)
}

/// A held version cleared.
pub fn watch_cleared(w: &WatchRecord, user: &str, reason: &str) -> String {
    format!("{}: {} may be promoted again: the hold of watch {} ({}) cleared by {user}: {reason}", w.pipeline, w.version, w.id, w.environment)
}

/// A watch superseded: its message, and its entry.
pub fn watch_superseded(w: &WatchRecord, by: &str) -> (String, String) {
    let message = format!("superseded by {by}");
    let detail = format!("{}: watch {} of {} in {} superseded: {message}", w.pipeline, w.id, w.version, w.environment);
    (message, detail)
}

/// An environment lock taken over from a run whose lease lapsed.
pub fn lock_taken_over(environment: &str, holder: &str, until: i64) -> String {
    format!("environment `{environment}` taken over from run {holder}: its lease lapsed at {} (its driver stopped)", crate::clock::rfc3339(until))
}

/// A run's driving taken over from a driver whose lease lapsed.
pub fn driver_taken_over(other: &str, until: i64) -> String {
    format!("driven by a new process: the previous driver {other} stopped (its lease ran until {})", crate::clock::rfc3339(until))
}

/// An entry's text with who vouched for the person acting (the server's identity source).
pub fn vouched(detail: String, via: Option<&str>) -> String {
    match via {
        Some(v) => format!("{detail} (vouched for by {v})"),
        None => detail,
    }
}

/// A queued run superseded by a newer one of its pipeline.
pub fn superseded_in_queue(environment: &str, by: &str) -> String {
    format!("superseded by run {by}, a newer run of the pipeline, while queued for `{environment}`")
}

/// An environment given back before its run's end.
pub fn released(environment: &str) -> String {
    format!("`{environment}` released: the stages that judge it are done")
}
