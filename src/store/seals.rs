//! What the state's records are sealed with: the key's MAC over the fields promote acts on, one
//! domain per record kind. Every backend writes these beside the records; [`super::Store`]
//! refuses a record whose seal does not match, so that a row inserted or changed outside promote
//! (a `sqlite3` shell, a SQL client) is never acted on.

use crate::seal::Key;

/// A run: what it was started with (its source decides who may approve).
#[allow(clippy::too_many_arguments)]
pub fn run(key: &Key, id: &str, pipeline: &str, file: &str, source: &str, version: &str, triggered_by: &str, authenticated: bool, created_at: i64) -> String {
    let at = created_at.to_string();
    let auth: &[u8] = if authenticated { b"1" } else { b"0" };
    key.mac(
        "run",
        &[
            Some(id.as_bytes()),
            Some(pipeline.as_bytes()),
            Some(file.as_bytes()),
            Some(source.as_bytes()),
            Some(version.as_bytes()),
            Some(triggered_by.as_bytes()),
            Some(auth),
            Some(at.as_bytes()),
        ],
    )
}

/// A stage's state (a resumed run skips what succeeded).
pub fn stage(key: &Key, run: &str, stage: &str, state: &str) -> String {
    key.mac("stage", &[Some(run.as_bytes()), Some(stage.as_bytes()), Some(state.as_bytes())])
}

/// A person's decision on a stage.
pub fn decision(key: &Key, run: &str, stage: &str, user: &str, approve: bool, comment: Option<&str>, at: i64) -> String {
    let at = at.to_string();
    let approve: &[u8] = if approve { b"1" } else { b"0" };
    key.mac("decision", &[Some(run.as_bytes()), Some(stage.as_bytes()), Some(user.as_bytes()), Some(approve), comment.map(str::as_bytes), Some(at.as_bytes())])
}

/// A log template marked "not a risk".
pub fn exemption(key: &Key, pipeline: &str, template: &str, user: &str, reason: &str, at: i64) -> String {
    let at = at.to_string();
    key.mac("exemption", &[Some(pipeline.as_bytes()), Some(template.as_bytes()), Some(user.as_bytes()), Some(reason.as_bytes()), Some(at.as_bytes())])
}

/// A drift's seal: what was seen (pipeline, environment, head, baseline) and its decision.
#[allow(clippy::too_many_arguments)]
pub fn drift(key: &Key, id: &str, pipeline: &str, environment: &str, head: &str, baseline: Option<&str>, state: &str, decided_by: Option<&str>) -> String {
    key.mac(
        "drift",
        &[
            Some(id.as_bytes()),
            Some(pipeline.as_bytes()),
            Some(environment.as_bytes()),
            Some(head.as_bytes()),
            baseline.map(str::as_bytes),
            Some(state.as_bytes()),
            decided_by.map(str::as_bytes),
        ],
    )
}

/// A compliance violation's seal: what was judged (pipeline, environment, head, policies) and
/// its decision (state, who, an exception's end, a revert's target).
pub fn violation(key: &Key, v: &super::ViolationRecord) -> String {
    let until = v.until.map(|u| u.to_string());
    key.mac(
        "violation",
        &[
            Some(v.id.as_bytes()),
            Some(v.pipeline.as_bytes()),
            Some(v.environment.as_bytes()),
            Some(v.head.as_bytes()),
            Some(v.policies.as_bytes()),
            Some(v.state.as_str().as_bytes()),
            v.decided_by.as_deref().map(str::as_bytes),
            until.as_deref().map(str::as_bytes),
            v.revert_to.as_deref().map(str::as_bytes),
        ],
    )
}

/// A watch's seal: what it watches (run, stage, environment, version, commit), how it stands
/// (state, failures) and who cleared its hold.
#[allow(clippy::too_many_arguments)]
pub fn watch(key: &Key, w: &super::WatchRecord) -> String {
    let failures = w.failures.to_string();
    key.mac(
        "watch",
        &[
            Some(w.id.as_bytes()),
            Some(w.run.as_bytes()),
            Some(w.stage.as_bytes()),
            Some(w.pipeline.as_bytes()),
            Some(w.environment.as_bytes()),
            Some(w.version.as_bytes()),
            Some(w.commit.as_bytes()),
            Some(w.value.as_bytes()),
            Some(w.state.as_str().as_bytes()),
            Some(failures.as_bytes()),
            w.cleared_by.as_deref().map(str::as_bytes),
        ],
    )
}
