//! Watches as people see them: the list, one watch with its last look, and clearing the hold a
//! failed watch puts on its version (by the watch's `approvers`, with the person's proof).

use super::OpsError;
use super::access::Caller;
use crate::store::{Store, WatchFilter, WatchRecord, WatchState};

/// One line for a person on a watch.
pub fn describe(w: &WatchRecord) -> String {
    let clock = |ms: i64| crate::clock::rfc3339(ms);
    let how = match w.state {
        WatchState::Watching => format!("until {}, {} looks so far ({} failed)", clock(w.ends_at), w.looks, w.failures),
        WatchState::Reverting => "a look failed: reverting".to_string(),
        _ => w.message.clone().unwrap_or_default(),
    };
    let held = if w.holds() {
        " [held]"
    } else if w.cleared_by.is_some() {
        " [cleared]"
    } else {
        ""
    };
    format!("{} {}/{} {}{held}: {how}", w.version, w.pipeline, w.environment, w.state)
}

/// Whether `caller` may clear the hold of `w`, by the rules of the pipeline stored with its run:
/// its watch's `approvers` or the pipeline's admins (a local caller: the approvers, none listed
/// meaning any user of the users file); `Ok(users file)` or why not.
pub async fn may_clear_watch(
    store: &Store,
    w: &WatchRecord,
    caller: &Caller<'_>,
) -> Result<Result<Option<crate::governance::users::Users>, OpsError>, OpsError> {
    let run = store.run(&w.run).await?;
    let Some(plan) = crate::stages::plan_of(&run) else {
        return Ok(Err(OpsError::Refused(format!("the pipeline stored with run {} does not load any more", run.id))));
    };
    let base = std::path::Path::new(&run.file).parent().map(std::path::Path::to_path_buf).unwrap_or_else(|| ".".into());
    let env = plan.pipeline.environments.iter().find(|e| e.name.value == w.environment);
    let approvers = plan
        .pipeline
        .stages
        .iter()
        .find(|s| s.name.value == w.stage)
        .and_then(|s| match (s.kind.promotes(), env) {
            (Some(d), Some(env)) => d.watch_in(env).map(|x| x.approvers.clone()),
            _ => None,
        })
        .unwrap_or_default();
    let users = match crate::governance::users_of(&plan.pipeline, &base) {
        Ok(u) => u,
        Err(e) => return Ok(Err(OpsError::Refused(format!("the users file: {e}")))),
    };
    let what = format!("clear a held version of `{}`", w.environment);
    match caller {
        Caller::Person(_) => Ok(super::access::allow_listed(&plan.pipeline, &approvers, "watch.approvers", &what, caller).map(|()| users)),
        Caller::Local { user, .. } => {
            if crate::governance::may_act(&approvers, users.as_ref(), user) {
                return Ok(Ok(users));
            }
            let who: Vec<&str> = approvers.iter().map(|a| a.value.as_str()).collect();
            Ok(Err(OpsError::Refused(format!(
                "{user} may not {what} (watch.approvers: {})",
                if who.is_empty() { "any user of the users file".to_string() } else { who.join(", ") }
            ))))
        }
    }
}

/// The failed watches whose hold `caller` may clear, newest first.
pub async fn held_for(store: &Store, caller: &Caller<'_>) -> Result<Vec<WatchRecord>, OpsError> {
    let mut out = Vec::new();
    for w in store.watches(WatchFilter { state: Some(WatchState::Failed), ..Default::default() }).await?.into_iter().filter(WatchRecord::holds) {
        if may_clear_watch(store, &w, caller).await?.is_ok() {
            out.push(w);
        }
    }
    Ok(out)
}

/// A person clearing a held version.
pub struct Clear<'a> {
    /// The watch (`w-...`).
    pub id: &'a str,
    /// Why (required).
    pub reason: &'a str,
    /// Who.
    pub caller: Caller<'a>,
}

/// Clears the hold of a failed watch: its version may be promoted again. The rules come from the
/// pipeline stored with the watch's run (its watch's `approvers`, its users file).
pub async fn clear(store: &Store, c: &Clear<'_>) -> Result<String, OpsError> {
    let refuse = |m: String| Err(OpsError::Refused(m));
    let Some(w) = store.watch(c.id).await? else {
        return refuse(format!("no watch `{}` (promote watch list shows them)", crate::diag::printable(c.id)));
    };
    if w.state != WatchState::Failed {
        return refuse(format!("watch {} is {}: only a failed watch holds its version", w.id, w.state));
    }
    if let Some(by) = &w.cleared_by {
        return refuse(format!("the hold of watch {} was cleared already (by {by})", w.id));
    }
    if c.reason.trim().is_empty() {
        return refuse("clearing a held version needs a reason".into());
    }
    if c.reason.len() > super::decide::MAX_REASON {
        return refuse(format!("the reason is at most {} bytes", super::decide::MAX_REASON));
    }
    let users = may_clear_watch(store, &w, &c.caller).await??;
    super::decide::prove(&c.caller, users.as_ref())?;
    let user = c.caller.login();
    if let Some(by) = store.clear_watch(&w.id, user, c.reason, super::decide::vouched(&c.caller).as_deref()).await? {
        return Err(OpsError::Conflict(format!("the hold of watch {} was cleared already (by {by})", w.id)));
    }
    Ok(format!("{} {} may be promoted again: the hold of watch {} cleared by {user}", w.pipeline, w.version, w.id))
}

/// The watches, newest first (at most 1,000), of one pipeline or all.
pub async fn list(store: &Store, pipeline: Option<&str>) -> Result<Vec<WatchRecord>, OpsError> {
    Ok(store.watches(WatchFilter { pipeline, ..Default::default() }).await?)
}
