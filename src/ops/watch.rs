//! Watches as people see them: the list, one watch with its last look, and clearing the hold a
//! failed watch puts on its version (by the watch's `approvers`, with the person's proof).

use super::OpsError;
use crate::store::{Store, WatchFilter, WatchRecord};

/// One line for a person on a watch.
pub fn describe(w: &WatchRecord) -> String {
    let clock = |ms: i64| crate::clock::rfc3339(ms);
    let how = match w.state.as_str() {
        "watching" => format!("until {}, {} looks so far ({} failed)", clock(w.ends_at), w.looks, w.failures),
        "reverting" => "a look failed: reverting".to_string(),
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

/// Whether `user` may clear the hold of a watch with `approvers` (none: any user of the users
/// file, or anyone without one).
pub fn may_clear(approvers: &[crate::model::Spanned<String>], users: Option<&crate::governance::users::Users>, user: &str, env: &str) -> Result<(), String> {
    if crate::governance::may_act(approvers, users, user) {
        return Ok(());
    }
    let who: Vec<&str> = approvers.iter().map(|a| a.value.as_str()).collect();
    Err(format!(
        "{user} may not clear a held version of `{env}` (watch.approvers: {})",
        if who.is_empty() { "any user of the users file".to_string() } else { who.join(", ") }
    ))
}

/// Whether `user` may clear the hold of `w`, by the rules of the pipeline stored with its run (its
/// watch's `approvers`, its users file): `Ok(users file)` or why not.
pub async fn may_clear_watch(store: &Store, w: &WatchRecord, user: &str) -> Result<Result<Option<crate::governance::users::Users>, String>, OpsError> {
    let run = store.run(&w.run).await?;
    let Some(plan) = crate::stages::plan_of(&run) else {
        return Ok(Err(format!("the pipeline stored with run {} does not load any more", run.id)));
    };
    let base = std::path::Path::new(&run.file).parent().map(std::path::Path::to_path_buf).unwrap_or_else(|| ".".into());
    let env = plan.pipeline.environments.iter().find(|e| e.name.value == w.environment);
    let approvers = plan
        .pipeline
        .stages
        .iter()
        .find(|s| s.name.value == w.stage)
        .and_then(|s| match (&s.kind, env) {
            (crate::model::StageKind::Deploy(d), Some(env)) => d.watch_in(env).map(|x| x.approvers.clone()),
            _ => None,
        })
        .unwrap_or_default();
    let users = match crate::governance::users_of(&plan.pipeline, &base) {
        Ok(u) => u,
        Err(e) => return Ok(Err(format!("the users file: {e}"))),
    };
    Ok(may_clear(&approvers, users.as_ref(), user, &w.environment).map(|()| users))
}

/// The failed watches whose hold `user` may clear, newest first.
pub async fn held_for(store: &Store, user: &str) -> Result<Vec<WatchRecord>, OpsError> {
    let mut out = Vec::new();
    for w in store.watches(WatchFilter { state: Some("failed"), ..Default::default() }).await?.into_iter().filter(WatchRecord::holds) {
        if may_clear_watch(store, &w, user).await?.is_ok() {
            out.push(w);
        }
    }
    Ok(out)
}

/// A person clearing a held version.
pub struct Clear<'a> {
    /// The watch (`w-...`).
    pub id: &'a str,
    /// Who.
    pub user: &'a str,
    /// Why (required).
    pub reason: &'a str,
    /// Their proof.
    pub proof: super::decide::Proof<'a>,
}

/// Clears the hold of a failed watch: its version may be promoted again. The rules come from the
/// pipeline stored with the watch's run (its watch's `approvers`, its users file).
pub async fn clear(store: &Store, c: &Clear<'_>) -> Result<String, OpsError> {
    let refuse = |m: String| Err(OpsError::Refused(m));
    let Some(w) = store.watch(c.id).await? else {
        return refuse(format!("no watch `{}` (promote watch list shows them)", crate::diag::printable(c.id)));
    };
    if w.state != "failed" {
        return refuse(format!("watch {} is {}: only a failed watch holds its version", w.id, w.state));
    }
    if let Some(by) = &w.cleared_by {
        return refuse(format!("the hold of watch {} was cleared already (by {by})", w.id));
    }
    if c.reason.trim().is_empty() {
        return refuse("clearing a held version needs a reason (--reason TEXT)".into());
    }
    let users = match may_clear_watch(store, &w, c.user).await? {
        Ok(users) => users,
        Err(why) => return refuse(why),
    };
    if let Some(u) = &users {
        let proven = match c.proof {
            super::decide::Proof::Token(t) => u.authenticate(c.user, t),
            super::decide::Proof::Session => u.authenticate_session(c.user),
        };
        if let Err(why) = proven {
            return refuse(why);
        }
    }
    store.clear_watch(&w.id, c.user, c.reason).await?;
    Ok(format!("{} {} may be promoted again: the hold of watch {} cleared by {}", w.pipeline, w.version, w.id, c.user))
}

/// The watches, newest first (at most 1,000), of one pipeline or all.
pub async fn list(store: &Store, pipeline: Option<&str>) -> Result<Vec<WatchRecord>, OpsError> {
    Ok(store.watches(WatchFilter { pipeline, ..Default::default() }).await?)
}
